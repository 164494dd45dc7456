"""Runs the curated models, in dependency order, incrementally or from scratch.

A run: find the merges into ``CANONICAL.EVENTS`` no run has processed (``changes``), copy the price
catalog in (``prices``), re-stitch the identity link groups the new events touch (``identity``),
then recompute exactly the sessions, hours, feedback, persons and days those events touch (the
curated models), and finally record the merges as processed. Each model's delete-and-insert is one
transaction; when a model fails, the models after it are skipped and the merges stay unprocessed,
so the next run redoes the work (every step is idempotent).

Why our own runner and not dbt or SQLMesh: docs/decisions.md. It takes an open warehouse
connection and plain data (prices, recompute requests); the portal side (lease, run records) is
``warehouse.modeling.service``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from graphlib import TopologicalSorter
from typing import Any

import orjson

from warehouse.analytics_ddl import (
    ANALYTICS_TABLES,
    CURATED_TABLES,
    EVENT_FACTS,
    IDENTITY_IDENTIFIERS,
    IDENTITY_MERGES,
    IDENTITY_OBSERVATIONS,
    IDENTITY_PERSONS,
    MODEL_PRICES,
    MODEL_STATE,
    UNKNOWN,
    WORK_TABLES,
    analytics_ensure,
    analytics_recreate,
)
from warehouse.ddl import Table, check_identifier
from warehouse.modeling import identity as ident
from warehouse.modeling import sql

log = logging.getLogger(__name__)

#: model name -> the models it reads
DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "changes": (),
    "prices": (),
    "event_facts": ("changes",),
    "identity": ("changes",),
    "conversation_sessions": ("event_facts", "identity", "prices"),
    "token_cost_usage": ("conversation_sessions",),
    "user_feedback": ("conversation_sessions",),
    "user_journeys": ("conversation_sessions",),
    "platform_engagement_daily": ("conversation_sessions",),
}
#: the order a run takes (a topological order of DEPENDENCIES, stable)
MODEL_ORDER: tuple[str, ...] = tuple(TopologicalSorter(DEPENDENCIES).static_order())
#: the order shown to people: the DAG is small enough that this is also a valid run order
DISPLAY_ORDER: tuple[str, ...] = (
    "changes", "prices", "event_facts", "identity", "conversation_sessions", "token_cost_usage", "user_feedback",
    "user_journeys", "platform_engagement_daily",
)
TOKEN_KINDS = ("input", "cached_input", "output")
JSON_CHUNK_BYTES = 4_000_000


@dataclass
class ModelResult:
    name: str
    status: str = "pending"          # succeeded | failed | skipped
    rows_changed: int = 0
    duration_ms: int = 0
    detail: dict[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass
class RunReport:
    run_id: str
    full_refresh: bool
    models: list[ModelResult]

    @property
    def ok(self) -> bool:
        return all(m.status in ("succeeded", "skipped") for m in self.models)

    def model(self, name: str) -> ModelResult:
        return next(m for m in self.models if m.name == name)

    @property
    def rows_changed(self) -> int:
        return sum(m.rows_changed for m in self.models if m.name not in ("changes",))


class ModelError(Exception):
    """A model's SQL failed; carries the model name."""


def price_intervals(prices: Iterable[dict]) -> list[dict]:
    """Catalog rows with ``effective_to`` = the next price of the same model and kind (pure).

    Rows with the same ``effective_from`` are ordered by version: the later version wins and the
    earlier one gets an empty interval."""
    rows = sorted(
        ({"model": str(p["model"]), "token_kind": str(p["token_kind"]),
          "usd_per_million": Decimal(str(p["usd_per_million"])), "effective_from": _naive_utc(p["effective_from"]),
          "version": int(p["version"])} for p in prices),
        key=lambda r: (r["model"], r["token_kind"], r["effective_from"], r["version"]),
    )
    for i, row in enumerate(rows):
        if row["token_kind"] not in TOKEN_KINDS:
            raise ValueError(f"price version {row['version']}: unknown token kind {row['token_kind']!r}")
        nxt = rows[i + 1] if i + 1 < len(rows) else None
        same = nxt is not None and (nxt["model"], nxt["token_kind"]) == (row["model"], row["token_kind"])
        row["effective_to"] = nxt["effective_from"] if same else None
    return rows


def _naive_utc(value: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if not isinstance(value, dt.datetime):
        raise ValueError(f"not a datetime: {value!r}")
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


class _Run:
    def __init__(self, conn: Any, *, run_id: str, full_refresh: bool, prices: Sequence[dict],
                 recomputes: Sequence[tuple[str | None, Any]], session_gaps: Mapping[str, Any] | None = None):
        self.conn = conn
        self.db = check_identifier(conn.database)
        self.run_id = run_id
        self.full_refresh = full_refresh
        self.prices = price_intervals(prices)
        self.recomputes = [(model or None, _naive_utc(at)) for model, at in recomputes]
        self.session_gaps = sql.session_gaps_clean(session_gaps)
        self.cur = conn.cursor()
        self.events = 0
        self.persons = 0

    # -- plumbing ---------------------------------------------------------------------------

    def execute(self, statement: str, params: dict | None = None) -> int:
        from warehouse.load import execute_bound

        started = time.perf_counter()
        if params:
            execute_bound(self.cur, statement, params)
        else:
            self.cur.execute(statement)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%6.0f ms  %s", (time.perf_counter() - started) * 1000, " ".join(statement.split())[:160])
        count = self.cur.rowcount
        return int(count) if count is not None and count >= 0 else 0

    def fetch(self, statement: str, params: dict | None = None) -> list[dict]:
        self.execute(statement, params)
        names = [d.name.lower() for d in self.cur.description]
        return [dict(zip(names, row, strict=True)) for row in self.cur.fetchall()]

    def scalar(self, statement: str) -> Any:
        self.execute(statement)
        row = self.cur.fetchone()
        return row[0] if row else None

    def insert_rows(self, table: Table, rows: list[dict], *, overwrite: bool = False) -> int:
        """Insert dict rows (lower-case keys; a missing key is NULL) as bound JSON arrays of
        positional values, about 4 MB each; ``overwrite`` replaces what the table held (the first
        chunk overwrites, the rest append)."""
        if not rows:
            return 0
        cols = table.columns
        keys = [c.name.lower() for c in cols]
        select = ", ".join(f"v.value[{i}]::{c.sql_type}" for i, c in enumerate(cols))
        into = f"INTO {self.db}.{table.schema}.{table.name} ({', '.join(c.name for c in cols)}) "
        tail = f"SELECT {select} FROM TABLE(FLATTEN(INPUT => PARSE_JSON(%(rows)s))) v"  # noqa: S608
        values = [[row.get(k) for k in keys] for row in rows]
        payload = orjson.dumps(values, default=_json_default)
        # positional values, not objects: the column names are not repeated in every row sent
        chunks = max(1, -(-len(payload) // JSON_CHUNK_BYTES))
        size = -(-len(values) // chunks)
        for n, start in enumerate(range(0, len(values), size)):
            part = payload if chunks == 1 else orjson.dumps(values[start:start + size], default=_json_default)
            verb = "INSERT OVERWRITE " if overwrite and n == 0 else "INSERT "
            self.execute(f"{verb}{into}{tail}", {"rows": part.decode()})
        return len(values)

    def transaction(self, steps: Callable[[], Any]) -> Any:
        self.execute("BEGIN")
        try:
            result = steps()
        except BaseException:
            try:
                self.cur.execute("ROLLBACK")
            except Exception:  # noqa: BLE001,S110 - the original error matters more
                pass
            raise
        self.execute("COMMIT")
        return result

    def replace_units(self, delete_sql: str, insert_sql: str, params: dict | None = None) -> tuple[int, int]:
        def steps() -> tuple[int, int]:
            deleted = self.execute(delete_sql)
            inserted = self.execute(insert_sql, params)
            return deleted, inserted
        return self.transaction(steps)

    # -- models -----------------------------------------------------------------------------

    def changes(self) -> tuple[int, dict]:
        db = self.db
        if self.full_refresh:
            analytics_recreate(self.conn, (*CURATED_TABLES, EVENT_FACTS, IDENTITY_OBSERVATIONS, IDENTITY_IDENTIFIERS,
                                           IDENTITY_PERSONS, IDENTITY_MERGES, MODEL_STATE))
        merges = self.execute(sql.new_merges_sql(db))
        params: dict[str, Any] = {}
        for i, (model, at) in enumerate(self.recomputes):
            params[f"recompute_from_{i}"] = at.isoformat(sep=" ")
            if model:
                params[f"recompute_model_{i}"] = model
        recompute = sql.recompute_filter_sql(db, self.recomputes) if self.recomputes else None
        self.events = self.execute(sql.work_events_sql(db, everything=self.full_refresh, recompute_filter=recompute),
                                   params or None)
        return self.events, {"merges": merges, "events": self.events, "full_refresh": self.full_refresh,
                             "recompute_requests": len(self.recomputes)}

    def event_facts(self) -> tuple[int, dict]:
        db = self.db
        # price recompute events are in WORK_EVENTS too, but their facts have not changed
        deleted, inserted = self.replace_units(
            f"DELETE FROM {db}.ANALYTICS.EVENT_FACTS "  # noqa: S608
            f"WHERE EVENT_ID IN (SELECT e.EVENT_ID FROM {db}.CANONICAL.EVENTS e "
            f"WHERE {sql.merged_filter(db, everything=self.full_refresh)})",
            sql.event_facts_insert_sql(db, everything=self.full_refresh))
        return max(deleted, inserted), {"deleted": deleted, "inserted": inserted}

    def prices_model(self) -> tuple[int, dict]:
        table = f"{self.db}.ANALYTICS.MODEL_PRICES"
        have = self.fetch(f"SELECT MODEL, TOKEN_KIND, USD_PER_MILLION, EFFECTIVE_FROM, EFFECTIVE_TO, VERSION "  # noqa: S608
                          f"FROM {table}")
        current = {(r["model"], r["token_kind"], Decimal(str(r["usd_per_million"])), r["effective_from"],
                    r["effective_to"], int(r["version"])) for r in have}
        wanted = {(r["model"], r["token_kind"], r["usd_per_million"], r["effective_from"], r["effective_to"],
                   r["version"]) for r in self.prices}
        if current == wanted:
            return 0, {"prices": len(wanted), "changed": False}

        def steps() -> int:
            self.execute(f"DELETE FROM {table}")  # noqa: S608
            return self.insert_rows(MODEL_PRICES, self.prices)
        self.transaction(steps)
        return len(current ^ wanted), {"prices": len(wanted), "changed": True}

    def identity(self) -> tuple[int, dict]:
        db = self.db
        new_obs = ident.combine_observations(self.fetch(sql.observations_sql(db, everything=self.full_refresh)))
        if not new_obs:
            return 0, {"observations": 0}
        id_keys = sorted({ident.id_key(k, v) for o in new_obs for k, v in ident.observation_ids(o)})
        self.insert_rows(_WORK_IDS, [{"id_key": k} for k in id_keys], overwrite=True)
        groups = self.execute(f"INSERT OVERWRITE INTO {db}.ANALYTICS.WORK_GROUPS (LINK_GROUP) "
                              f"{sql.identity_groups_sql(db)}")
        in_groups = f"LINK_GROUP IN (SELECT g.LINK_GROUP FROM {db}.ANALYTICS.WORK_GROUPS g)"  # noqa: S608
        old_obs: list[dict] = []
        old_ids: dict[str, str] = {}
        if groups:  # none when every identifier is new: nothing to read back or delete
            old_obs = self.fetch(f"SELECT * FROM {db}.IDENTITY.OBSERVATIONS WHERE {in_groups}")  # noqa: S608
            old_ids = {r["id_key"]: r["person_id"] for r in self.fetch(
                f"SELECT ID_KEY, PERSON_ID FROM {db}.IDENTITY.IDENTIFIERS WHERE {in_groups}")}  # noqa: S608
        old_obs_keys = {o["observation_key"] for o in old_obs}
        result = ident.stitch([*old_obs, *new_obs])
        moved = [r for r in result.identifiers if r["id_key"] in old_ids and old_ids[r["id_key"]] != r["person_id"]]

        def steps() -> None:
            if groups:
                for table in (IDENTITY_OBSERVATIONS, IDENTITY_IDENTIFIERS, IDENTITY_PERSONS, IDENTITY_MERGES):
                    self.execute(f"DELETE FROM {db}.{table.schema}.{table.name} WHERE {in_groups}")  # noqa: S608
            self.insert_rows(IDENTITY_OBSERVATIONS, result.observations)
            self.insert_rows(IDENTITY_IDENTIFIERS, result.identifiers)
            self.insert_rows(IDENTITY_PERSONS, result.persons)
            self.insert_rows(IDENTITY_MERGES, result.merges)
        self.transaction(steps)

        touched_events = 0
        if moved:
            # events that arrived before the link was known: their sessions get the new person
            self.insert_rows(_WORK_CHANGED_IDS, [{"id_kind": r["id_kind"], "id_value": r["id_value"]} for r in moved],
                             overwrite=True)
            touched_events = self.execute(sql.changed_id_sessions_sql(db))
        new_observations = sum(1 for o in result.observations if o["observation_key"] not in old_obs_keys)
        new_identifiers = sum(1 for r in result.identifiers if r["id_key"] not in old_ids)
        detail = {
            "link_groups_restitched": len({r["link_group"] for r in result.identifiers}),
            "observations_new": new_observations,
            "identifiers_new": new_identifiers,
            "identifiers_moved": len(moved),
            "merges": sum(1 for m in result.merges if m["decision"] == "merged"),
            "merges_refused": sum(1 for m in result.merges if m["decision"] == "refused"),
            "persons": len(result.persons),
            "older_events_touched": touched_events,
        }
        return new_observations + new_identifiers + len(moved), detail

    def conversation_sessions(self) -> tuple[int, dict]:
        db = self.db
        w = f"{db}.ANALYTICS"
        sessions = self.execute(f"INSERT OVERWRITE INTO {w}.WORK_SESSIONS (SESSION_KEY) SELECT DISTINCT SESSION_KEY "  # noqa: S608
                                f"FROM {w}.WORK_EVENTS WHERE SESSION_KEY IS NOT NULL")
        # WORK_SESSIONS holds session ids (source keys): every part of a touched one is recomputed
        in_sessions = f"SOURCE_SESSION_KEY IN (SELECT s.SESSION_KEY FROM {w}.WORK_SESSIONS s)"  # noqa: S608
        self.execute(f"INSERT OVERWRITE INTO {w}.WORK_OLD_SESSIONS (SESSION_KEY, PERSON_ID, DAY) "  # noqa: S608
                     f"SELECT SESSION_KEY, PERSON_ID, TO_DATE(STARTED_AT) FROM {w}.CONVERSATION_SESSIONS "
                     f"WHERE {in_sessions}")
        deleted, inserted = self.replace_units(
            f"DELETE FROM {w}.CONVERSATION_SESSIONS WHERE {in_sessions}",  # noqa: S608
            sql.sessions_insert_sql(db, self.session_gaps))
        self.persons = self.execute(f"INSERT OVERWRITE INTO {w}.WORK_PERSONS (PERSON_ID) "  # noqa: S608
                     f"SELECT PERSON_ID FROM {w}.WORK_OLD_SESSIONS WHERE PERSON_ID IS NOT NULL "
                     f"UNION SELECT PERSON_ID FROM {w}.CONVERSATION_SESSIONS WHERE {in_sessions} "
                     f"AND PERSON_ID IS NOT NULL")
        return max(deleted, inserted), {"sessions_recomputed": sessions, "deleted": deleted, "inserted": inserted}

    def token_cost_usage(self) -> tuple[int, dict]:
        db = self.db
        hours = self.execute(sql.hours_sql(db))
        deleted, inserted = self.replace_units(
            f"DELETE FROM {db}.ANALYTICS.TOKEN_COST_USAGE "  # noqa: S608
            f"WHERE HOUR IN (SELECT h.HOUR FROM {db}.ANALYTICS.WORK_HOURS h)",
            sql.token_cost_insert_sql(db, UNKNOWN))
        return max(deleted, inserted), {"hours_recomputed": hours, "deleted": deleted,
                                        "inserted": inserted}

    def user_feedback(self) -> tuple[int, dict]:
        db = self.db
        feedback = self.execute(sql.feedback_units_sql(db))
        deleted, inserted = self.replace_units(
            f"DELETE FROM {db}.ANALYTICS.USER_FEEDBACK "  # noqa: S608
            f"WHERE FEEDBACK_EVENT_ID IN (SELECT f.EVENT_ID FROM {db}.ANALYTICS.WORK_FEEDBACK f)",
            sql.feedback_insert_sql(db))
        return max(deleted, inserted), {"feedback_recomputed": feedback, "deleted": deleted,
                                        "inserted": inserted}

    def user_journeys(self) -> tuple[int, dict]:
        db = self.db
        deleted, inserted = self.replace_units(
            f"DELETE FROM {db}.ANALYTICS.USER_JOURNEYS "  # noqa: S608
            f"WHERE PERSON_ID IN (SELECT p.PERSON_ID FROM {db}.ANALYTICS.WORK_PERSONS p)",
            sql.journeys_insert_sql(db))
        return max(deleted, inserted), {"persons_recomputed": self.persons, "deleted": deleted,
                                        "inserted": inserted}

    def platform_engagement_daily(self) -> tuple[int, dict]:
        db = self.db
        days = self.execute(sql.days_sql(db, UNKNOWN))
        deleted, inserted = self.replace_units(
            f"DELETE FROM {db}.ANALYTICS.PLATFORM_ENGAGEMENT_DAILY "  # noqa: S608
            f"WHERE DAY IN (SELECT d.DAY FROM {db}.ANALYTICS.WORK_DAYS d)",
            sql.engagement_insert_sql(db, UNKNOWN))
        return max(deleted, inserted), {"days_recomputed": days, "deleted": deleted,
                                        "inserted": inserted}

    def commit_state(self) -> None:
        db = self.db
        self.execute(f"INSERT INTO {db}.ANALYTICS.MODEL_STATE (MERGE_ID, MERGED_AT, RUN_ID) "  # noqa: S608
                     f"SELECT MERGE_ID, MERGED_AT, %(run_id)s FROM {db}.ANALYTICS.WORK_MERGES", {"run_id": self.run_id})


_WORK_IDS = next(t for t in WORK_TABLES if t.name == "WORK_IDS")
_WORK_CHANGED_IDS = next(t for t in WORK_TABLES if t.name == "WORK_CHANGED_IDS")


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


_STEPS: dict[str, str] = {
    "changes": "changes", "prices": "prices_model", "event_facts": "event_facts", "identity": "identity",
    "conversation_sessions": "conversation_sessions", "token_cost_usage": "token_cost_usage",
    "user_feedback": "user_feedback", "user_journeys": "user_journeys",
    "platform_engagement_daily": "platform_engagement_daily",
}


def models_run(
    conn: Any, *, full_refresh: bool = False, prices: Sequence[dict] = (),
    recomputes: Sequence[tuple[str | None, Any]] = (), run_id: str | None = None,
    on_model: Callable[[ModelResult], None] | None = None, session_gaps: Mapping[str, Any] | None = None,
) -> RunReport:
    """Run every model, in dependency order, and return what each did.

    ``prices``: the catalog rows (model, token_kind, usd_per_million, effective_from, version);
    ``recomputes``: (model or None, from) price recompute requests to apply in this run;
    ``on_model`` is called when a model starts (status ``running``) and when it ends.
    ``session_gaps``: inactivity gap in seconds per platform (``sql.SESSION_GAP_S`` for the others);
    ValueError when one is not a plain platform name or a sensible number of seconds.
    Raises nothing for a model failure (see the report); raises ``WarehouseError`` if the warehouse
    cannot be reached at all.
    """
    run_id = run_id or uuid.uuid4().hex
    analytics_ensure(conn)
    run = _Run(conn, run_id=run_id, full_refresh=full_refresh, prices=prices, recomputes=recomputes,
               session_gaps=session_gaps)
    results = [ModelResult(name) for name in DISPLAY_ORDER]
    failed: set[str] = set()
    try:
        for result in results:
            if any(dep in failed for dep in DEPENDENCIES[result.name]):
                result.status, result.error = "skipped", "an upstream model failed"
                failed.add(result.name)
                _notify(on_model, result)
                continue
            if result.name not in ("changes", "prices") and run.events == 0:
                result.status, result.detail = "skipped", {"reason": "no new or changed events"}
                _notify(on_model, result)
                continue
            result.status = "running"
            _notify(on_model, result)
            started = time.perf_counter()
            try:
                rows, detail = getattr(run, _STEPS[result.name])()
                result.status, result.rows_changed, result.detail = "succeeded", int(rows), detail
            except Exception as exc:  # noqa: BLE001 - recorded on the run; the rest is skipped
                result.status, result.error = "failed", _error_text(exc)
                failed.add(result.name)
            result.duration_ms = int((time.perf_counter() - started) * 1000)
            _notify(on_model, result)
        if not failed:
            run.commit_state()
    finally:
        run.cur.close()
    return RunReport(run_id, full_refresh, results)


def _notify(callback: Callable[[ModelResult], None] | None, result: ModelResult) -> None:
    if callback is not None:
        callback(result)


def _error_text(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:2000]}"


__all__ = ["models_run", "RunReport", "ModelResult", "DEPENDENCIES", "DISPLAY_ORDER", "price_intervals",
           "ANALYTICS_TABLES"]
