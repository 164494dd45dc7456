# ruff: noqa: S608 - every interpolated name is a checked identifier or a constant of this module; values are bound
"""Erasure from the warehouse: one idempotent step per store (``warehouse_steps()``).

Order, and why:

1. ``RAW.LANDING_EVENTS``: every landed copy (event rows by identifier, quarantine rows by the raw payload),
   so a re-merge (the merger reads only landing rows) has nothing to bring back.
2. ``RAW.QUARANTINE``: rejected records whose raw payload or reason holds one of the identifiers.
3. ``IDENTITY.*``: the subject's identifiers, observations, merges and persons; the rest of each touched
   link group is re-stitched from its remaining observations (as a model run would). Before the curated
   step, so that the sessions it recomputes get the re-stitched persons: an identifier the officer removed
   from the ticket (wrongly linked) leaves the subject's person and its sessions get a person of their own.
4. ``ANALYTICS.*`` (curated): the subject's EVENT_FACTS, sessions, journeys and feedback are deleted and
   the aggregates that counted them (sessions shared with others, TOKEN_COST_USAGE hours,
   PLATFORM_ENGAGEMENT_DAILY days and their retention cohorts) are recomputed with the model runner's
   own SQL, in ONE transaction, holding the model runner's lease (the work tables are shared). It runs
   before step 5 because it finds the subject's events through ``CANONICAL.EVENTS``.
5. ``CANONICAL.EVENTS`` (and ``RAW.LATE_COPIES`` and ``RAW.EVENT_COPIES`` of those events).

Matching: an event row matches when one of its identifier columns (EMAIL_SHA256, PLATFORM_USER_ID,
DEVICE_ID, ANONYMOUS_ID) holds one of the subject's values of that kind, or PERSON_ID one of its persons.
A raw payload (VARIANT) matches when its JSON text holds one of the values as a JSON string (``"U1"``),
anywhere as text when the value is at least ``BARE_MATCH_MIN`` characters long (long ids, hashes, e-mail
addresses: unique enough to match inside free text), an e-mail address in any letter case, and a Slack
``team:user`` id when both parts appear as JSON strings (Slack sends them as separate fields).
Values that identify nobody (``warehouse.modeling.identity.BLOCKED_VALUES``) never match: erasing by
``"0"`` would erase everyone.

The subject must carry the person ids of the confirmed expansion (``ErasureSubject.person_ids``): once the
identity step has run, the curated step finds the subject's sessions, journeys and feedback by them.

Each step returns a ``StoreResult``: rows removed, the verification query it ran afterwards (with
placeholders, never a personal value) and what it found (0). Warehouse errors that are worth retrying
(``WarehouseError.transient``) and a busy model runner raise ``TransientStoreError``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson

from deletion.erasure_types import (
    ErasureStep,
    ErasureSubject,
    IdentifierKind,
    StoreResult,
    TransientStoreError,
)
from deletion.identity_expansion import ID_COLUMNS, in_list
from warehouse.modeling.identity import is_blocked

#: a value this long also matches inside free text of a raw payload (shorter ones only as a whole JSON string)
BARE_MATCH_MIN = 8
_KINDS = tuple(ID_COLUMNS)   # email_sha256, platform_user_id, device_id, anonymous_id


# --------------------------------------------------------------------------------------------
# what to match (pure)
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class MatchTerms:
    """The bind values of a subject: identifier values by kind (usable ones only), person ids, and the
    needles searched for in raw payloads (each a tuple of strings that must all appear; ``lower``: compare
    the payload lower-cased)."""

    values: Mapping[str, tuple[str, ...]]
    person_ids: tuple[str, ...]
    needles: tuple[tuple[tuple[str, ...], bool], ...]
    skipped_default_values: int = 0

    @property
    def id_keys(self) -> tuple[str, ...]:
        return tuple(sorted(f"{k}:{v}" for k, vs in self.values.items() for v in vs))

    @property
    def empty(self) -> bool:
        return not (any(self.values.values()) or self.person_ids or self.needles)

    def binds(self) -> dict[str, str]:
        params = {kind: _json(self.values.get(kind, ())) for kind in _KINDS}
        params["person_ids"] = _json(self.person_ids)
        params["id_keys"] = _json(self.id_keys)
        for i, (parts, _lower) in enumerate(self.needles):
            for j, part in enumerate(parts):
                params[f"needle_{i}_{j}"] = part
        return params


def _json(values: Any) -> str:
    return orjson.dumps(sorted(set(values))).decode()


def _json_string(value: str) -> str:
    return orjson.dumps(value).decode()


def match_terms(subject: ErasureSubject) -> MatchTerms:
    """What the steps look for (pure)."""
    values: dict[str, set[str]] = {kind: set() for kind in _KINDS}
    needles: dict[tuple[tuple[str, ...], bool], None] = {}
    skipped = 0
    for ident in subject.identifiers:
        if is_blocked(ident.value):
            skipped += 1
            continue
        value = ident.value
        if ident.kind == IdentifierKind.EMAIL:
            text = _json_string(value.strip().lower())
            needles[((text[1:-1] if len(value) >= BARE_MATCH_MIN else text,), True)] = None
            continue
        values[ident.kind.value].add(value)
        text = _json_string(value)
        needles[((text[1:-1] if len(value) >= BARE_MATCH_MIN else text,), False)] = None
        if ident.kind == IdentifierKind.PLATFORM_USER_ID and value.count(":") == 1:
            team, user = value.split(":")
            if team and user and not is_blocked(team) and not is_blocked(user):
                needles[((_json_string(team), _json_string(user)), False)] = None
    persons = tuple(sorted({p for p in subject.person_ids if p}))
    return MatchTerms({k: tuple(sorted(v)) for k, v in values.items()}, persons, tuple(needles), skipped)


def event_match_sql(alias: str) -> str:
    """SQL on an event row (``CANONICAL.EVENTS``, ``RAW.LANDING_EVENTS``): one of the subject's identifiers
    or persons (binds from ``MatchTerms.binds``)."""
    parts = [f"{alias}.{col} IN {in_list(kind.value)}" for kind, col in ID_COLUMNS.items()]
    parts.append(f"{alias}.PERSON_ID IN {in_list('person_ids')}")
    return "(" + " OR ".join(parts) + ")"


def subject_events_sql(table: str, alias: str) -> str:
    """SQL on an event row of ``table``: the subject's, either by identifier (``event_match_sql``) or as an
    event that carries no identifier at all (an assistant reply, a tool call from the API) in a session or
    conversation where the subject's identified events are. One statement, so a retry after a crash
    still finds those sessions (they are found before the identified events go)."""
    from warehouse.modeling.sql import usable

    anonymous = " AND ".join(f"{usable(f'{alias}.{col}')} IS NULL" for col in (*ID_COLUMNS.values(), "PERSON_ID"))
    return (f"({event_match_sql(alias)} OR ({anonymous} AND {erasure_session_key(alias)} IN "
            f"(SELECT {erasure_session_key('s')} FROM {table} s WHERE {event_match_sql('s')})))")


def erasure_session_key(alias: str) -> str:
    """SQL: the event's session key (``warehouse.modeling.sql.session_key``) with placeholder ids (``null``,
    ``0``, ``guest``...: ``usable``) counted as none, NULL when nothing usable is left. The same rule as the
    archive's ``conversation_subject``: an SDK that sends one placeholder session id on every reply must not
    make one person's erasure take every user's replies."""
    from warehouse.modeling.sql import usable

    return (f"COALESCE({usable(f'{alias}.SESSION_ID')}, "
            f"'conversation:' || {usable(f'{alias}.CONVERSATION_ID')})")


def payload_match_sql(expr: str, terms: MatchTerms) -> str:
    """SQL: the VARIANT ``expr`` holds one of the needles in its JSON text (FALSE without needles)."""
    if not terms.needles:
        return "FALSE"
    clauses = []
    for i, (parts, lower) in enumerate(terms.needles):
        text = f"LOWER(TO_JSON({expr}))" if lower else f"TO_JSON({expr})"
        clauses.append("(" + " AND ".join(
            f"CONTAINS({text}, %(needle_{i}_{j})s)" for j in range(len(parts))) + ")")
    return f"({expr} IS NOT NULL AND ({' OR '.join(clauses)}))"


def placeholders(sql: str) -> str:
    """The verification text as evidence: binds shown as ``:name`` (never their values)."""
    import re

    return " ".join(re.sub(r"%\((\w+)\)s", r":\1", sql).split())


# --------------------------------------------------------------------------------------------
# plumbing
# --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _cursor(database: str | None) -> Iterator[tuple[Any, str]]:
    from warehouse.analytics_ddl import analytics_ensure
    from warehouse.connection import WarehouseError, warehouse_connect
    from warehouse.ddl import check_identifier

    try:
        conn = warehouse_connect(**({"database": database} if database else {}))
    except WarehouseError as exc:
        raise _translated(exc) from exc
    cur = None
    try:
        # a warehouse no models run has reached yet has no IDENTITY/ANALYTICS tables (one query when it has)
        analytics_ensure(conn)
        cur = conn.cursor()
        yield cur, check_identifier(conn.database)
    except WarehouseError as exc:
        raise _translated(exc) from exc
    finally:
        if cur is not None:
            with contextlib.suppress(Exception):
                cur.close()
        with contextlib.suppress(Exception):
            conn.close()


def _translated(exc: Exception) -> Exception:
    if getattr(exc, "transient", False):
        return TransientStoreError(str(exc))
    return exc


def _execute(cur: Any, sql: str, params: Mapping[str, Any] | None = None) -> int:
    from warehouse.connection import warehouse_errors
    from warehouse.load import execute_bound

    with warehouse_errors():
        if params:
            execute_bound(cur, sql, _used(sql, params))
        else:
            cur.execute(sql)
        count = cur.rowcount
    return int(count) if count is not None and count >= 0 else 0


def _used(sql: str, params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if f"%({k})s" in sql}


def _scalar(cur: Any, sql: str, params: Mapping[str, Any]) -> int:
    _execute(cur, sql, params)
    row = cur.fetchone()
    return int(row[0] or 0) if row else 0


def _transaction(cur: Any, steps: Callable[[], Any]) -> Any:
    _execute(cur, "BEGIN")
    try:
        result = steps()
    except BaseException:
        with contextlib.suppress(Exception):
            cur.execute("ROLLBACK")
        raise
    _execute(cur, "COMMIT")
    return result


def _delete_and_verify(store: str, database: str | None, subject: ErasureSubject,
                       statements: Callable[[str, MatchTerms], list[tuple[str, str]]]) -> StoreResult:
    """Run ``(table, where)`` deletes in one transaction, then count what each WHERE still finds."""
    terms = match_terms(subject)
    with _cursor(database) as (cur, db):
        plan = statements(db, terms)
        params = terms.binds()

        def steps() -> dict[str, int]:
            return {table: _execute(cur, f"DELETE FROM {table} t WHERE {where}", params) for table, where in plan}
        removed = _transaction(cur, steps) if not terms.empty else {table: 0 for table, _ in plan}
        verification = " UNION ALL ".join(
            f"SELECT COUNT(*) AS N FROM {table} t WHERE {where}" for table, where in plan)
        verify_sql = f"SELECT SUM(N) FROM ({verification}) v"
        remaining = _scalar(cur, verify_sql, params) if not terms.empty else 0
    return StoreResult(store=store, removed=sum(removed.values()), verification=placeholders(verify_sql),
                       remaining=remaining, detail={"rows_removed": removed,
                                                    "default_values_skipped": terms.skipped_default_values})


# --------------------------------------------------------------------------------------------
# the stores
# --------------------------------------------------------------------------------------------

def landing_erase(subject: ErasureSubject, *, database: str | None = None) -> StoreResult:
    def plan(db: str, terms: MatchTerms) -> list[tuple[str, str]]:
        return [(f"{db}.RAW.LANDING_EVENTS",
                 f"((t.ROW_KIND = 'event' AND {subject_events_sql(f'{db}.RAW.LANDING_EVENTS', 't')}) OR "
                 f"(t.ROW_KIND = 'quarantine' AND {payload_match_sql('t.QUARANTINE_ROW', terms)}))")]
    return _delete_and_verify("warehouse: RAW.LANDING_EVENTS", database, subject, plan)


def quarantine_erase(subject: ErasureSubject, *, database: str | None = None) -> StoreResult:
    def plan(db: str, terms: MatchTerms) -> list[tuple[str, str]]:
        return [(f"{db}.RAW.QUARANTINE",
                 f"({payload_match_sql('t.PAYLOAD', terms)} OR "
                 f"{payload_match_sql('TO_VARIANT(t.REASON_DETAIL)', terms)})")]
    return _delete_and_verify("warehouse: RAW.QUARANTINE", database, subject, plan)


def canonical_erase(subject: ErasureSubject, *, database: str | None = None) -> StoreResult:
    def plan(db: str, terms: MatchTerms) -> list[tuple[str, str]]:
        return [
            # the copies' side tables first: they are found through the events, by the events' key (an id reused
            # on another day is another event, maybe somebody else's); in the merge's order of tables
            # (EVENT_COPIES, LATE_COPIES, EVENTS), so the two transactions cannot wait on each other in a cycle
            *((f"{db}.RAW.{side}", f"EXISTS (SELECT 1 FROM {db}.CANONICAL.EVENTS e WHERE e.EVENT_DATE = t.EVENT_DATE "
                                   f"AND e.EVENT_ID = t.EVENT_ID AND "
                                   f"{subject_events_sql(f'{db}.CANONICAL.EVENTS', 'e')})")
              for side in ("EVENT_COPIES", "LATE_COPIES")),
            (f"{db}.CANONICAL.EVENTS", subject_events_sql(f"{db}.CANONICAL.EVENTS", "t")),
        ]
    return _delete_and_verify("warehouse: CANONICAL.EVENTS", database, subject, plan)


def subject_conversations(subject: ErasureSubject, *, database: str | None = None) -> set[tuple[Any, Any, Any]]:
    """``(SOURCE_ID, SESSION_ID, CONVERSATION_ID)`` of every event the warehouse erasure deletes as the
    subject's (``subject_events_sql``: the identified events and the identifier-less ones in their sessions or
    conversations), in ``CANONICAL.EVENTS`` and, for rows not merged yet, ``RAW.LANDING_EVENTS``. Read only:
    the archive's conversation step (``deletion.shredding``) turns them into conversation subjects before the
    warehouse steps delete the rows."""
    terms = match_terms(subject)
    if terms.empty:
        return set()
    with _cursor(database) as (cur, db):
        # a warehouse nothing has landed in yet has no ingest tables (an erasure before the first event)
        _execute(cur, f"SELECT TABLE_SCHEMA || '.' || TABLE_NAME FROM {db}.INFORMATION_SCHEMA.TABLES "
                      f"WHERE TABLE_SCHEMA IN ('CANONICAL', 'RAW') AND TABLE_NAME IN ('EVENTS', 'LANDING_EVENTS')")
        present = {str(row[0]).upper() for row in cur.fetchall()}
        selects = [f"SELECT DISTINCT t.SOURCE_ID, t.SESSION_ID, t.CONVERSATION_ID FROM {db}.{table} t "
                   f"WHERE {kind}{subject_events_sql(f'{db}.{table}', 't')}"
                   for table, kind in (("CANONICAL.EVENTS", ""), ("RAW.LANDING_EVENTS", "t.ROW_KIND = 'event' AND "))
                   if table in present]
        if not selects:
            return set()
        _execute(cur, " UNION ".join(selects), terms.binds())
        return {tuple(row) for row in cur.fetchall()}


def subject_conversations_shared(subject: ErasureSubject, *,
                                 database: str | None = None) -> set[tuple[Any, Any, Any]]:
    """The rows of ``subject_conversations`` whose session or conversation (``erasure_session_key``) also holds
    an identified event of somebody else: an event with a usable identifier or person that matches none of
    the subject's (in ``CANONICAL.EVENTS`` or ``RAW.LANDING_EVENTS``). A shared Slack thread, a reused session
    id: the archive's conversation step leaves those keys alone and lists them (its evidence), rather than
    shredding and suppressing other people's replies for good."""
    from warehouse.modeling.sql import usable

    terms = match_terms(subject)
    if terms.empty:
        return set()
    identified = "(" + " OR ".join(f"{usable(f'o.{col}')} IS NOT NULL"
                                   for col in (*ID_COLUMNS.values(), "PERSON_ID")) + ")"
    with _cursor(database) as (cur, db):
        _execute(cur, f"SELECT TABLE_SCHEMA || '.' || TABLE_NAME FROM {db}.INFORMATION_SCHEMA.TABLES "
                      f"WHERE TABLE_SCHEMA IN ('CANONICAL', 'RAW') AND TABLE_NAME IN ('EVENTS', 'LANDING_EVENTS')")
        present = {str(row[0]).upper() for row in cur.fetchall()}
        tables = [t for t in ("CANONICAL.EVENTS", "RAW.LANDING_EVENTS") if t in present]
        if not tables:
            return set()

        def events_only(table: str, alias: str) -> str:
            return f"{alias}.ROW_KIND = 'event' AND " if table == "RAW.LANDING_EVENTS" else ""

        others = " UNION ".join(
            f"SELECT {erasure_session_key('o')} FROM {db}.{table} o WHERE {events_only(table, 'o')}{identified} "
            f"AND NOT COALESCE({event_match_sql('o')}, FALSE)" for table in tables)
        selects = [f"SELECT DISTINCT t.SOURCE_ID, t.SESSION_ID, t.CONVERSATION_ID FROM {db}.{table} t "
                   f"WHERE {events_only(table, 't')}{subject_events_sql(f'{db}.{table}', 't')} "
                   f"AND {erasure_session_key('t')} IN ({others})" for table in tables]
        _execute(cur, " UNION ".join(selects), terms.binds())
        return {tuple(row) for row in cur.fetchall()}


def _persons_of(cur: Any, db: str, terms: MatchTerms) -> tuple[str, ...]:
    """The subject's persons: those the ticket names and those its identifiers belong to."""
    _execute(cur, f"SELECT DISTINCT PERSON_ID FROM {db}.IDENTITY.IDENTIFIERS WHERE ID_KEY IN {in_list('id_keys')}",
             terms.binds())
    return tuple(sorted({*terms.person_ids, *(r[0] for r in cur.fetchall() if r[0])}))


def _obs_match_sql(alias: str) -> str:
    parts = [f"{alias}.{col} IN {in_list(kind.value)}" for kind, col in ID_COLUMNS.items()]
    parts.append(f"{alias}.PREVIOUS_ANONYMOUS_ID IN {in_list('anonymous_id')}")
    return "(" + " OR ".join(parts) + ")"


def identity_erase(subject: ErasureSubject, *, database: str | None = None) -> StoreResult:
    """Delete the subject's identity rows and re-stitch what is left of each link group they were in."""
    from warehouse.analytics_ddl import IDENTITY_IDENTIFIERS, IDENTITY_MERGES, IDENTITY_OBSERVATIONS, IDENTITY_PERSONS
    from warehouse.modeling import identity as ident

    terms = match_terms(subject)
    with _cursor(database) as (cur, db):
        params = terms.binds()
        persons = _persons_of(cur, db, terms)
        params["person_ids"] = _json(persons)
        i = f"{db}.IDENTITY"
        where = {
            "OBSERVATIONS": _obs_match_sql("t"),
            "IDENTIFIERS": f"(t.ID_KEY IN {in_list('id_keys')} OR t.PERSON_ID IN {in_list('person_ids')})",
            "PERSONS": f"t.PERSON_ID IN {in_list('person_ids')}",
            "MERGES": (f"(t.PERSON_ANCHOR IN {in_list('id_keys')} OR t.MERGED_ANCHOR IN {in_list('id_keys')} OR "
                       f"t.OBSERVATION_KEY IN (SELECT o.OBSERVATION_KEY FROM {i}.OBSERVATIONS o "
                       f"WHERE {_obs_match_sql('o')}))"),
        }
        groups_sql = (f"SELECT DISTINCT t.LINK_GROUP FROM {i}.IDENTIFIERS t WHERE {where['IDENTIFIERS']} "
                      f"UNION SELECT DISTINCT t.LINK_GROUP FROM {i}.OBSERVATIONS t WHERE {where['OBSERVATIONS']}")
        _execute(cur, groups_sql, params)
        groups = sorted({r[0] for r in cur.fetchall() if r[0]})
        params["groups"] = _json(groups)
        in_groups = f"t.LINK_GROUP IN {in_list('groups')}"
        # what is left of the groups once the subject's observations are gone, re-stitched
        # COALESCE: an observation's empty columns make the match NULL, and NOT NULL would drop it
        _execute(cur, f"SELECT * FROM {i}.OBSERVATIONS t WHERE {in_groups} "
                      f"AND NOT COALESCE({where['OBSERVATIONS']}, FALSE)", params)
        names = [d.name.lower() for d in cur.description]
        left = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        restitched = ident.stitch(left)

        def steps() -> dict[str, int]:
            removed = {}
            # MERGES first: it finds the subject's merges through their observations
            for name in ("MERGES", "OBSERVATIONS", "IDENTIFIERS", "PERSONS"):
                removed[name] = _execute(cur, f"DELETE FROM {i}.{name} t WHERE {where[name]}", params)
            for name in ("MERGES", "OBSERVATIONS", "IDENTIFIERS", "PERSONS"):
                _execute(cur, f"DELETE FROM {i}.{name} t WHERE {in_groups}", params)
            for table, rows in ((IDENTITY_OBSERVATIONS, restitched.observations),
                                (IDENTITY_IDENTIFIERS, restitched.identifiers),
                                (IDENTITY_PERSONS, restitched.persons), (IDENTITY_MERGES, restitched.merges)):
                _rows_insert(cur, db, table, rows)
            return removed
        removed = _transaction(cur, steps) if groups or persons else {n: 0 for n in where}
        verify_sql = "SELECT SUM(N) FROM (" + " UNION ALL ".join(
            f"SELECT COUNT(*) AS N FROM {i}.{name} t WHERE {where[name]}" for name in where) + ") v"
        remaining = _scalar(cur, verify_sql, params)
    return StoreResult(store="warehouse: IDENTITY.*", removed=sum(removed.values()),
                       verification=placeholders(verify_sql), remaining=remaining,
                       detail={"rows_removed": removed, "link_groups_restitched": len(groups),
                               "identifiers_left_in_groups": len(restitched.identifiers)})


def _rows_insert(cur: Any, db: str, table: Any, rows: list[dict]) -> None:
    """Insert dict rows (lower-case keys) as one bound JSON array (as the model runner does)."""
    from warehouse.modeling.runner import _json_default

    if not rows:
        return
    cols = table.columns
    select = ", ".join(f"v.value[{n}]::{c.sql_type}" for n, c in enumerate(cols))
    values = [[row.get(c.name.lower()) for c in cols] for row in rows]
    _execute(cur, f"INSERT INTO {db}.{table.schema}.{table.name} ({', '.join(c.name for c in cols)}) "
                  f"SELECT {select} FROM TABLE(FLATTEN(INPUT => PARSE_JSON(%(rows)s))) v",
             {"rows": orjson.dumps(values, default=_json_default).decode()})


# --------------------------------------------------------------------------------------------
# curated tables: delete the subject's rows, recompute what counted them
# --------------------------------------------------------------------------------------------

def _curated_statements(db: str, gaps: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """(name, SQL) in order; names ending in ``_removed`` count the subject's rows deleted."""
    from warehouse.analytics_ddl import UNKNOWN
    from warehouse.modeling import sql

    w = f"{db}.ANALYTICS"
    persons = in_list("person_ids")
    return [
        ("events", f"INSERT OVERWRITE INTO {w}.WORK_EVENTS (EVENT_ID, SESSION_KEY, EVENT_TYPE, EVENT_TIME, MESSAGE_ID) "
                   f"SELECT f.EVENT_ID, f.SESSION_KEY, f.EVENT_TYPE, f.EVENT_TIME, f.MESSAGE_ID FROM {w}.EVENT_FACTS f "
                   f"WHERE f.PRIMARY_ID_KEY IN {in_list('id_keys')} OR f.EVENT_ID IN (SELECT e.EVENT_ID "
                   f"FROM {db}.CANONICAL.EVENTS e WHERE {subject_events_sql(f'{db}.CANONICAL.EVENTS', 'e')})"),
        ("sessions", f"INSERT OVERWRITE INTO {w}.WORK_SESSIONS (SESSION_KEY) "
                     f"SELECT DISTINCT SESSION_KEY FROM {w}.WORK_EVENTS WHERE SESSION_KEY IS NOT NULL "
                     f"UNION SELECT SOURCE_SESSION_KEY FROM {w}.CONVERSATION_SESSIONS WHERE PERSON_ID IN {persons}"),
        ("old_sessions", f"INSERT OVERWRITE INTO {w}.WORK_OLD_SESSIONS (SESSION_KEY, PERSON_ID, DAY) "
                         f"SELECT SESSION_KEY, PERSON_ID, TO_DATE(STARTED_AT) FROM {w}.CONVERSATION_SESSIONS "
                         f"WHERE SOURCE_SESSION_KEY IN (SELECT s.SESSION_KEY FROM {w}.WORK_SESSIONS s)"),
        ("hours", sql.hours_sql(db)),   # read before the facts go: the hours their requests counted in
        ("USER_FEEDBACK_removed", f"DELETE FROM {w}.USER_FEEDBACK WHERE PERSON_ID IN {persons} OR "
                                  f"FEEDBACK_EVENT_ID IN (SELECT w.EVENT_ID FROM {w}.WORK_EVENTS w)"),
        ("USER_JOURNEYS_removed", f"DELETE FROM {w}.USER_JOURNEYS WHERE PERSON_ID IN {persons}"),
        ("EVENT_FACTS_removed", f"DELETE FROM {w}.EVENT_FACTS "
                                f"WHERE EVENT_ID IN (SELECT w.EVENT_ID FROM {w}.WORK_EVENTS w)"),
        ("CONVERSATION_SESSIONS_removed",
         f"DELETE FROM {w}.CONVERSATION_SESSIONS "
         f"WHERE SOURCE_SESSION_KEY IN (SELECT s.SESSION_KEY FROM {w}.WORK_SESSIONS s)"),
        ("sessions_recomputed", sql.sessions_insert_sql(db, gaps)),
        ("persons", f"INSERT OVERWRITE INTO {w}.WORK_PERSONS (PERSON_ID) "
                    f"SELECT PERSON_ID FROM {w}.WORK_OLD_SESSIONS WHERE PERSON_ID IS NOT NULL "
                    f"UNION SELECT PERSON_ID FROM {w}.CONVERSATION_SESSIONS WHERE SOURCE_SESSION_KEY IN "
                    f"(SELECT s.SESSION_KEY FROM {w}.WORK_SESSIONS s) AND PERSON_ID IS NOT NULL"),
        ("token_hours_deleted", f"DELETE FROM {w}.TOKEN_COST_USAGE "
                                f"WHERE HOUR IN (SELECT h.HOUR FROM {w}.WORK_HOURS h)"),
        ("token_hours_recomputed", sql.token_cost_insert_sql(db, UNKNOWN)),
        ("feedback_units", sql.feedback_units_sql(db)),
        ("feedback_deleted", f"DELETE FROM {w}.USER_FEEDBACK "
                             f"WHERE FEEDBACK_EVENT_ID IN (SELECT f.EVENT_ID FROM {w}.WORK_FEEDBACK f)"),
        ("feedback_recomputed", sql.feedback_insert_sql(db)),
        ("journeys_deleted", f"DELETE FROM {w}.USER_JOURNEYS "
                             f"WHERE PERSON_ID IN (SELECT p.PERSON_ID FROM {w}.WORK_PERSONS p)"),
        ("journeys_recomputed", sql.journeys_insert_sql(db)),
        ("days", sql.days_sql(db, UNKNOWN)),
        ("days_deleted", f"DELETE FROM {w}.PLATFORM_ENGAGEMENT_DAILY "
                         f"WHERE DAY IN (SELECT d.DAY FROM {w}.WORK_DAYS d)"),
        ("days_recomputed", sql.engagement_insert_sql(db, UNKNOWN)),
        # the runner's scratch keeps identifiers until its next run: not the subject's
        ("scratch_ids", f"DELETE FROM {w}.WORK_IDS WHERE ID_KEY IN {in_list('id_keys')}"),
        ("scratch_changed_ids", f"DELETE FROM {w}.WORK_CHANGED_IDS WHERE " + " OR ".join(
            f"(ID_KIND = '{kind.value}' AND ID_VALUE IN {in_list(kind.value)})" for kind in ID_COLUMNS)),
        ("scratch_persons", f"DELETE FROM {w}.WORK_PERSONS WHERE PERSON_ID IN {persons}"),
        ("scratch_old_sessions", f"DELETE FROM {w}.WORK_OLD_SESSIONS WHERE PERSON_ID IN {persons}"),
        # and this step's own work rows name the subject's events and sessions (session keys often carry an
        # install or anonymous id): emptied; the runner overwrites them at its next run anyway
        *((f"scratch_{t.lower()}", f"DELETE FROM {w}.{t}")
          for t in ("WORK_EVENTS", "WORK_SESSIONS", "WORK_OLD_SESSIONS", "WORK_FEEDBACK")),
    ]


def _curated_verification(db: str) -> str:
    w = f"{db}.ANALYTICS"
    persons = in_list("person_ids")
    checks = [
        f"SELECT COUNT(*) AS N FROM {w}.EVENT_FACTS t WHERE t.PRIMARY_ID_KEY IN {in_list('id_keys')}",
        f"SELECT COUNT(*) AS N FROM {w}.CONVERSATION_SESSIONS t WHERE t.PERSON_ID IN {persons}",
        f"SELECT COUNT(*) AS N FROM {w}.USER_FEEDBACK t WHERE t.PERSON_ID IN {persons}",
        f"SELECT COUNT(*) AS N FROM {w}.USER_JOURNEYS t WHERE t.PERSON_ID IN {persons}",
        f"SELECT COUNT(*) AS N FROM {w}.WORK_IDS t WHERE t.ID_KEY IN {in_list('id_keys')}",
    ]
    return "SELECT SUM(N) FROM (" + " UNION ALL ".join(checks) + ") v"


def _runner_lease(holder: str, seconds: float) -> Any:
    """The model runner's lease (the curated recompute shares its work tables): TransientStoreError when
    a model run holds it."""
    from warehouse.modeling.service import lease_acquire, lease_release

    busy = lease_acquire(holder, seconds)
    if busy:
        raise TransientStoreError(f"a model run holds the runner lease ({busy}); the curated step retries after it")
    return lease_release


def curated_erase(subject: ErasureSubject, *, database: str | None = None,
                  session_gaps: Mapping[str, Any] | None = None, use_lease: bool = True) -> StoreResult:
    """Delete the subject's curated rows and recompute every aggregate that counted them (one transaction)."""
    from django.conf import settings

    from ingest_workers.services import LeaseHeartbeat
    from warehouse.analytics_ddl import analytics_ensure
    from warehouse.modeling.service import lease_renew

    gaps = session_gaps if session_gaps is not None else getattr(settings, "ANALYTICS_SESSION_GAP_S", None)
    terms = match_terms(subject)
    holder = f"erasure:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    seconds = float(getattr(settings, "MODELS_RUN_LEASE_SECONDS", 60))
    release = _runner_lease(holder, seconds) if use_lease else None
    try:
        with contextlib.ExitStack() as stack:
            if release is not None:
                stack.enter_context(LeaseHeartbeat(lambda: lease_renew(holder, seconds), seconds))
            with _cursor(database) as (cur, db):
                from warehouse.connection import warehouse_errors

                with warehouse_errors():
                    analytics_ensure(cur.connection)
                params = terms.binds()
                params["person_ids"] = _json(_persons_of(cur, db, terms))
                statements = _curated_statements(db, gaps)

                def steps() -> dict[str, int]:
                    return {name: _execute(cur, statement, params) for name, statement in statements}
                counts = _transaction(cur, steps)
                verify_sql = _curated_verification(db)
                remaining = _scalar(cur, verify_sql, params)
    finally:
        if release is not None:
            release(holder)
    removed = {k.removesuffix("_removed"): v for k, v in counts.items() if k.endswith("_removed")}
    # sessions shared with others were deleted and rebuilt without the subject: only the net loss was theirs
    removed["CONVERSATION_SESSIONS"] = max(0, removed["CONVERSATION_SESSIONS"] - counts["sessions_recomputed"])
    recomputed = {"sessions": counts["sessions"], "hours": counts["hours"], "days": counts["days"],
                  "sessions_rebuilt": counts["sessions_recomputed"], "persons": counts["persons"]}
    return StoreResult(store="warehouse: ANALYTICS.* (curated)", removed=sum(removed.values()),
                       verification=placeholders(verify_sql), remaining=remaining,
                       detail={"rows_removed": removed, "recomputed": recomputed})


def warehouse_steps(*, database: str | None = None) -> list[ErasureStep]:
    """The warehouse's erasure steps, in the order they must run (module docstring)."""
    return [
        ErasureStep("warehouse.landing", "RAW.LANDING_EVENTS", lambda s: landing_erase(s, database=database)),
        ErasureStep("warehouse.quarantine", "RAW.QUARANTINE", lambda s: quarantine_erase(s, database=database)),
        ErasureStep("warehouse.identity", "IDENTITY.*", lambda s: identity_erase(s, database=database)),
        ErasureStep("warehouse.curated", "ANALYTICS.*", lambda s: curated_erase(s, database=database)),
        ErasureStep("warehouse.canonical", "CANONICAL.EVENTS", lambda s: canonical_erase(s, database=database)),
    ]
