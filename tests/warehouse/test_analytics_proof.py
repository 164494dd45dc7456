"""Proof that the curated models follow docs/analytics.md, and that the queries in docs/queries.md answer
what they say, on the embedded warehouse.

Every expected number is computed here, in Python, from the events themselves, by the rules of
docs/analytics.md (the "reference" section below): never by running the models' SQL, and never copied
from what the models produced. Tables are compared row by row; persons are compared by their anchor
identifier (IDENTITY.PERSONS), since the docs fix the anchor but not the hash that names a person.

The main dataset (the named cross-platform scenario, price probes around a price change, a session
across midnight whose halves land in different batches, microsecond-stamped sessions, and a seeded
simulation) lands in three batches with a model run after each, one of them out of order (earlier
days after later ones) and one of pure duplicates; the tests read that state, and the last ones check
that a run without new data changes nothing, that a full rebuild gives the same rows, and finally what
a batch of late events changes. Model runs dominate the time on the embedded warehouse, so the
module shares one database and runs as few of them as the checks need.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
import statistics
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest

from warehouse.analytics_ddl import ANALYTICS_TABLES
from warehouse.analytics_sample import (
    CHANGING_PRICE_MODEL,
    DAY,
    HOUR,
    MINUTE,
    SECOND,
    UNPRICED_MODEL,
    cross_platform_scenario,
    sample_events,
    sample_prices,
)
from warehouse.modeling.sql import DEFAULT_SESSION_GAP_S, SESSION_GAP_S

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
DAYS = 8
PRICES = sample_prices(T0, DAYS)
QUERIES_MD = Path(__file__).resolve().parents[2] / "docs" / "queries.md"
EPOCH = dt.datetime(1970, 1, 1)


def naive(us: int) -> dt.datetime:
    """UTC micros as the naive UTC datetime a TIMESTAMP_NTZ column returns."""
    return EPOCH + dt.timedelta(microseconds=us)


def micros(value: dt.datetime) -> int:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return (value - EPOCH) // dt.timedelta(microseconds=1)


# =============================================================================================
# reference: the rules of docs/analytics.md, computed from the events
# =============================================================================================

# kept apart from the code on purpose (the reference must not share a bug with it); the parity test
# below keeps the two lists the same
BLOCKED = frozenset({"", "null", "none", "undefined", "0", "-1", "anonymous", "unknown", "guest", "n/a", "nil",
                     "nan"})
KINDS = ("email_sha256", "platform_user_id", "device_id", "anonymous_id")  # priority order
RANK = {kind: n for n, kind in enumerate(KINDS)}
LIMITS = {"email_sha256": 1, "platform_user_id": 3, "device_id": 10, "anonymous_id": 50}
USER_FACING = frozenset({"web", "ios", "android", "slack", "voice"})
ESCALATION = frozenset({"escalated", "handoff", "human_handoff"})
UNKNOWN = "unknown"


def usable(value) -> str | None:
    # spaces only: a tab or newline in an identifier is kept, as the code and the SQL TRIM keep it
    return value if isinstance(value, str) and value.strip(" ").lower() not in BLOCKED else None


def test_the_reference_blocklist_matches_the_code():
    # the pipeline review (M10) found the reference had drifted from identity.BLOCKED_VALUES
    from warehouse.modeling import identity

    assert BLOCKED == identity.BLOCKED_VALUES
    for value in [" NaN ", "nil", "\tnull", "Guest", "x", " 0 ", None, 7]:
        assert (usable(value) is None) == identity.is_blocked(value), value


def order(event: dict) -> tuple:
    return event["event_time"], event["event_id"]


def envelope_ids(event: dict) -> list[str]:
    """kind:value of the event's usable identifiers, highest priority first."""
    ids = event["identifiers"]
    found = [(RANK[k], ids[k]) for k in KINDS if usable(ids.get(k))]
    return [f"{KINDS[rank]}:{value}" for rank, value in sorted(found)]


def observed_ids(event: dict) -> list[str]:
    """An observation: the envelope identifiers plus a user.identified event's previous anonymous id."""
    keys = set(envelope_ids(event))
    if event["event_type"] == "user.identified" and usable(event["attributes"].get("previous_anonymous_id")):
        keys.add(f"anonymous_id:{event['attributes']['previous_anonymous_id']}")
    return by_priority(keys)


@dataclass
class Identity:
    anchor_of: dict[str, str]  # id key -> the anchor id key of its person
    decisions: list[tuple[str, str, str | None]]  # (event id, merged | refused, kind of the broken limit)

    def person(self, event: dict) -> str | None:
        """Anchor of the person of the event's highest-priority usable identifier."""
        keys = envelope_ids(event)
        return self.anchor_of[keys[0]] if keys else None


def by_priority(keys) -> list[str]:
    return sorted(keys, key=lambda key: (RANK[key.partition(":")[0]], key.partition(":")[2]))


def sightings_of(events: list[dict]) -> tuple[dict[frozenset, tuple], dict[str, tuple]]:
    """First sighting (event time, event id) of each observation and of each identifier."""
    sightings: dict[frozenset, tuple] = {}
    first_seen: dict[str, tuple] = {}
    for event in events:
        keys = frozenset(observed_ids(event))
        if keys:
            seen = order(event)
            sightings[keys] = min(sightings.get(keys, seen), seen)
            for key in keys:
                first_seen[key] = min(first_seen.get(key, seen), seen)
    return sightings, first_seen


def stitch(events: list[dict]) -> Identity:
    """Identity stitching as docs/analytics.md states it."""
    sightings, first_seen = sightings_of(events)
    person: dict[str, dict[str, set]] = {}  # id key -> the person's identifiers by kind (shared dicts)
    decisions: list[tuple[str, str, str | None]] = []
    for ids, (_, event_id) in sorted(sightings.items(), key=lambda item: item[1]):
        keys = by_priority(ids)
        for key in keys:
            if key not in person:
                kind, _, value = key.partition(":")
                person[key] = {k: set() for k in KINDS} | {kind: {value}}
        persons = []
        for key in keys:
            if all(person[key] is not p for p in persons):
                persons.append(person[key])
        base = persons[0]
        for other in persons[1:]:
            broken = [k for k in KINDS if len(base[k] | other[k]) > LIMITS[k]]
            if broken:
                decisions.append((event_id, "refused", broken[0]))
                continue
            decisions.append((event_id, "merged", None))
            for kind in KINDS:
                base[kind] |= other[kind]
            for key, p in person.items():
                if p is other:
                    person[key] = base
    anchor_of = {}
    for key, p in person.items():
        members = [f"{kind}:{value}" for kind in KINDS for value in p[kind]]
        anchor_of[key] = min(members, key=lambda m: (first_seen[m][0], RANK[m.partition(":")[0]],
                                                     m.partition(":")[2]))
    return Identity(anchor_of, decisions)


def session_key(event: dict) -> str | None:
    """The source key: what the events carry (a session is a part of it, split at inactivity gaps)."""
    if event["session_id"]:
        return event["session_id"]
    return f"conversation:{event['conversation_id']}" if event["conversation_id"] else None


def session_parts(key: str, events: list[dict], platform: str) -> dict[str, list[dict]]:
    """The source key's events split where they pause longer than the platform's inactivity gap
    (docs/analytics.md, Sessions): the first part keeps the key, later ones get #2, #3…"""
    gap_us = SESSION_GAP_S.get(platform, DEFAULT_SESSION_GAP_S) * SECOND
    parts: list[list[dict]] = []
    for e in sorted(events, key=order):
        if not parts or e["event_time"] - parts[-1][-1]["event_time"] > gap_us:
            parts.append([])
        parts[-1].append(e)
    return {key if n == 1 else f"{key}#{n}": part for n, part in enumerate(parts, 1)}


def is_message(event: dict, role: str) -> bool:
    return event["event_type"] == "message.sent" and event["attributes"]["role"] == role


def model_of(event: dict) -> str | None:
    return event["attributes"].get("request_model") or event["attributes"].get("response_model")


def price_in_force(model: str, kind: str, hour: int) -> Decimal | None:
    candidates = [p for p in PRICES if p["model"] == model and p["token_kind"] == kind
                  and micros(p["effective_from"]) <= hour]
    if not candidates:
        return None
    latest = max(candidates, key=lambda p: (p["effective_from"], p["version"]))
    return Decimal(str(latest["usd_per_million"]))


@dataclass
class Request:
    event: dict
    hour: int
    model: str | None
    input: int
    cached: int
    output: int
    reasoning: int
    cost: Decimal
    priced: bool


def request_of(event: dict) -> Request | None:
    """An assistant message.sent that reports tokens, costed at the prices in force at its hour."""
    if not is_message(event, "assistant"):
        return None
    a = event["attributes"]
    token_fields = ("input_tokens", "cache_read_input_tokens", "output_tokens", "reasoning_output_tokens")
    if all(a.get(f) is None for f in token_fields):
        return None
    model = model_of(event)
    hour = event["event_time"] - event["event_time"] % HOUR
    tokens_in, cached, out, reasoning = (int(a.get(f) or 0) for f in token_fields)
    prices = {kind: price_in_force(model, kind, hour) for kind in ("input", "cached_input", "output")}
    cost = ((tokens_in - cached) * (prices["input"] or 0) + cached * (prices["cached_input"] or 0)
            + out * (prices["output"] or 0)) / Decimal(1_000_000)
    return Request(event, hour, model, tokens_in, cached, out, reasoning, cost,
                   any(p is not None for p in prices.values()))


@dataclass
class Session:
    key: str
    events: list[dict]
    identity: Identity
    source: str = ""
    requests: list[Request] = field(init=False)

    def __post_init__(self) -> None:
        self.events.sort(key=order)
        self.requests = [r for r in map(request_of, self.events) if r is not None]

    def first(self, predicate):
        return next((e for e in self.events if predicate(e)), None)

    @property
    def platform(self) -> str:
        event = self.first(lambda e: e["platform"] in USER_FACING)
        return event["platform"] if event else "api"

    @property
    def person(self) -> str | None:
        event = self.first(lambda e: self.identity.person(e) is not None)
        return self.identity.person(event) if event else None

    @property
    def started(self) -> int:
        return self.events[0]["event_time"]

    @property
    def ended(self) -> int:
        return self.events[-1]["event_time"]

    def messages(self, role: str) -> int:
        return len({e["message_id"] or e["event_id"] for e in self.events if is_message(e, role)})

    def latencies(self) -> list[int]:
        """Per assistant message: ms since the latest user message before it (when there is one)."""
        out, last_user = [], None
        for e in self.events:
            if is_message(e, "user"):
                last_user = e["event_time"]
            elif is_message(e, "assistant") and last_user is not None:
                out.append((e["event_time"] - last_user) // 1000)
        return out

    @property
    def outcome(self) -> str:
        ends = [e for e in self.events if e["event_type"] in ("session.ended", "conversation.ended")]
        replies = [e for e in self.events if is_message(e, "assistant")]
        users = [e for e in self.events if is_message(e, "user")]
        if any(e["event_type"] == "session.ended" and (e["attributes"]["error_type"] or
               (e["attributes"]["reason"] or "").lower() == "error") for e in ends) \
                or (replies and replies[-1]["attributes"]["error_type"]):
            return "error"
        if any(e["event_type"] == "conversation.ended" and e["attributes"]["handoff"] for e in ends) \
                or any((e["attributes"]["reason"] or "").lower() in ESCALATION for e in ends):
            return "escalated"
        if (users and any(r["event_time"] > users[-1]["event_time"] for r in replies)) \
                or any(e["event_type"] == "conversation.ended" and e["attributes"]["resolved"] for e in ends):
            return "completed"
        return "abandoned"

    def row(self, anchor_to_person: dict[str, str]) -> dict:
        """The CONVERSATION_SESSIONS row this session should have."""
        tools = [e for e in self.events if e["event_type"].startswith("tool_call.")]
        feedback = [e for e in self.events if e["event_type"] == "feedback.submitted"]
        latencies = self.latencies()
        named = self.first(lambda e: e["product"])
        tenant = self.first(lambda e: e["identifiers"]["tenant_id"])
        return {
            "SESSION_KEY": self.key,
            "SOURCE_SESSION_KEY": self.source or self.key,
            "SESSION_ID": next((e["session_id"] for e in self.events if e["session_id"]), None),
            "PERSON_ID": anchor_to_person.get(self.person),
            "PLATFORM": self.platform,
            "PRODUCT": named["product"] if named else None,
            "TENANT_ID": tenant["identifiers"]["tenant_id"] if tenant else None,
            "STARTED_AT": naive(self.started),
            "ENDED_AT": naive(self.ended),
            "DURATION_S": (self.ended - self.started) / SECOND,
            "EVENT_COUNT": len(self.events),
            "CONVERSATION_COUNT": len({e["conversation_id"] for e in self.events if e["conversation_id"]}),
            "USER_MESSAGES": self.messages("user"),
            "ASSISTANT_MESSAGES": self.messages("assistant"),
            "TOOL_CALLS": len({e["attributes"]["tool_call_id"] or e["event_id"] for e in tools}),
            "TOOL_FAILURES": len({e["attributes"]["tool_call_id"] or e["event_id"] for e in tools
                                  if e["event_type"] == "tool_call.completed"
                                  and e["attributes"]["status"] in ("error", "timeout")}),
            "INPUT_TOKENS": sum(r.input for r in self.requests),
            "CACHED_INPUT_TOKENS": sum(r.cached for r in self.requests),
            "OUTPUT_TOKENS": sum(r.output for r in self.requests),
            "REASONING_TOKENS": sum(r.reasoning for r in self.requests),
            "COST_USD": sum((r.cost for r in self.requests), Decimal(0)),
            "UNPRICED_REQUESTS": sum(1 for r in self.requests if not r.priced),
            "FIRST_RESPONSE_LATENCY_MS": latencies[0] if latencies else None,
            "MEDIAN_RESPONSE_LATENCY_MS": float(statistics.median(latencies)) if latencies else None,
            "OUTCOME": self.outcome,
            "FEEDBACK_COUNT": len(feedback),
            "LATEST_FEEDBACK_SCORE": feedback[-1]["attributes"]["score"] if feedback else None,
            "LATEST_FEEDBACK_KIND": feedback[-1]["attributes"]["kind"] if feedback else None,
        }


@dataclass
class Reference:
    """Everything docs/analytics.md says the models should produce from these events."""

    events: list[dict]
    identity: Identity = field(init=False)
    sessions: dict[str, Session] = field(init=False)

    def __post_init__(self) -> None:
        self.identity = stitch(self.events)
        grouped = defaultdict(list)
        for e in self.events:
            if session_key(e):
                grouped[session_key(e)].append(e)
        self.by_source = grouped
        self.sessions: dict[str, Session] = {}
        self.part_of: dict[str, str] = {}     # event id -> the session (part) it belongs to
        for source, evs in grouped.items():
            platform = Session(source, list(evs), self.identity).platform
            for key, part in session_parts(source, evs, platform).items():
                self.sessions[key] = Session(key, part, self.identity, source)
                self.part_of.update((e["event_id"], key) for e in part)
        self.by_message = {e["message_id"]: e for e in self.events if e["event_type"] == "message.sent"
                           and e["message_id"]}

    def requests(self) -> list[tuple[Request, Session | None]]:
        out = []
        for e in self.events:
            r = request_of(e)
            if r is not None:
                out.append((r, self.sessions.get(self.part_of.get(e["event_id"], ""))))
        return out

    def token_cost_rows(self) -> dict[tuple, dict]:
        rows: dict[tuple, dict] = {}
        for r, s in self.requests():
            ids = r.event["identifiers"]
            key = (naive(r.hour), ids["tenant_id"] or UNKNOWN, r.event["product"] or UNKNOWN,
                   s.platform if s else r.event["platform"], r.model or UNKNOWN)
            row = rows.setdefault(key, {"REQUESTS": 0, "INPUT_TOKENS": 0, "CACHED_INPUT_TOKENS": 0,
                                        "OUTPUT_TOKENS": 0, "REASONING_TOKENS": 0, "COST_USD": Decimal(0),
                                        "PRICED": True})
            row["REQUESTS"] += 1
            row["INPUT_TOKENS"] += r.input
            row["CACHED_INPUT_TOKENS"] += r.cached
            row["OUTPUT_TOKENS"] += r.output
            row["REASONING_TOKENS"] += r.reasoning
            row["COST_USD"] += r.cost
            row["PRICED"] = row["PRICED"] and r.priced
        return rows

    def feedback_model(self, feedback: dict) -> str | None:
        rated = self.by_message.get(feedback["message_id"])
        if rated is not None and model_of(rated):
            return model_of(rated)
        # the latest reply before it under the same session id (any part: what the model's SQL reads)
        source = sorted(self.by_source.get(session_key(feedback), []), key=order)
        before = [e for e in source if is_message(e, "assistant") and order(e) <= order(feedback) and model_of(e)]
        return model_of(before[-1]) if before else None

    def journeys(self) -> dict[str, list[dict]]:
        """Per person anchor: its sessions in order, as USER_JOURNEYS rows (without PERSON_ID)."""
        by_person = defaultdict(list)
        for s in self.sessions.values():
            if s.person:
                by_person[s.person].append(s)
        out = {}
        for anchor, sessions in by_person.items():
            sessions.sort(key=lambda s: (s.started, s.key))
            rows, seen, previous = [], set(), None
            for seq, s in enumerate(sessions, 1):
                seen.add(s.platform)
                rows.append({
                    "SESSION_SEQ": seq, "SESSION_KEY": s.key, "PLATFORM": s.platform,
                    "PRODUCT": s.row({})["PRODUCT"], "STARTED_AT": naive(s.started), "ENDED_AT": naive(s.ended),
                    "OUTCOME": s.outcome, "PREVIOUS_PLATFORM": previous.platform if previous else None,
                    "PLATFORM_SWITCH": previous is not None and previous.platform != s.platform,
                    "PLATFORMS_SO_FAR": len(seen),
                    "GAP_FROM_PREVIOUS_S": (s.started - previous.ended) / SECOND if previous else None,
                })
                previous = s
            out[anchor] = rows
        return out

    def engagement_rows(self) -> dict[tuple, dict]:
        """PLATFORM_ENGAGEMENT_DAILY: per (day, platform, product)."""
        def day_of(s: Session) -> dt.date:
            return naive(s.started).date()

        groups = defaultdict(list)
        for s in self.sessions.values():
            groups[(day_of(s), s.platform, s.row({})["PRODUCT"] or UNKNOWN)].append(s)
        active = {(key, s.person) for key, sessions in groups.items() for s in sessions if s.person}
        first_day: dict[tuple, dt.date] = {}
        for (day, platform, product), person in active:
            k = (person, platform, product)
            first_day[k] = min(first_day.get(k, day), day)
        rows = {}
        for (day, platform, product), sessions in groups.items():
            cohort = [p for (p, pl, pr), d in first_day.items() if (d, pl, pr) == (day, platform, product)]

            def retained(n: int, platform=platform, product=product, day=day, cohort=cohort) -> int:
                return sum(1 for p in cohort if ((day + dt.timedelta(days=n), platform, product), p) in active)

            new = len(cohort)
            counts = {n: retained(n) for n in (1, 7, 30)}
            rows[(day, platform, product)] = {
                "ACTIVE_PEOPLE": len({s.person for s in sessions if s.person}),
                "SESSIONS": len(sessions),
                "MESSAGES": sum(s.messages("user") + s.messages("assistant") for s in sessions),
                "AVG_SESSION_S": sum((s.ended - s.started) / SECOND for s in sessions) / len(sessions),
                "NEW_PEOPLE": new,
                **{f"D{n}_RETAINED": counts[n] for n in (1, 7, 30)},
                **{f"D{n}_RETENTION": counts[n] / new if new else None for n in (1, 7, 30)},
            }
        return rows


def percentile_cont(values: list[float], fraction: float) -> float | None:
    """PERCENTILE_CONT: linear interpolation between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# =============================================================================================
# the warehouse side
# =============================================================================================


def fetch(conn, sql: str, params: dict | None = None) -> list[dict]:
    """Rows as dicts with the warehouse's own values (Decimal stays Decimal, timestamps naive UTC)."""
    from snowflake.connector import DictCursor

    cur = conn.cursor(DictCursor)
    try:
        cur.execute(sql, params)
        return list(cur.fetchall())
    finally:
        cur.close()


def table(conn, name: str) -> list[dict]:
    return fetch(conn, f"SELECT * FROM {conn.database}.{name}")  # noqa: S608 - test-made names


def land(conn, events: list[dict], batch_id: str) -> None:
    from tests.warehouse.factories import land_and_merge

    land_and_merge(conn, events, batch_id)


def run_models(conn, **kwargs):
    from warehouse.modeling.runner import models_run

    report = models_run(conn, prices=PRICES, **kwargs)
    failed = [(m.name, m.error) for m in report.models if m.status not in ("succeeded", "skipped")]
    assert not failed, failed
    return report


def person_anchors(conn) -> dict[str, str]:
    """PERSON_ID -> its anchor id key (IDENTITY.PERSONS)."""
    return {r["PERSON_ID"]: r["ANCHOR_ID_KEY"] for r in table(conn, "IDENTITY.PERSONS")}


SNAPSHOT_TABLES = (
    "ANALYTICS.CONVERSATION_SESSIONS", "ANALYTICS.PLATFORM_ENGAGEMENT_DAILY", "ANALYTICS.TOKEN_COST_USAGE",
    "ANALYTICS.USER_FEEDBACK", "ANALYTICS.USER_JOURNEYS", "IDENTITY.IDENTIFIERS", "IDENTITY.PERSONS",
    "IDENTITY.MERGES", "IDENTITY.OBSERVATIONS",
)
KEYS = {
    "ANALYTICS.CONVERSATION_SESSIONS": ("SESSION_KEY",),
    "ANALYTICS.PLATFORM_ENGAGEMENT_DAILY": ("DAY", "PLATFORM", "PRODUCT"),
    "ANALYTICS.TOKEN_COST_USAGE": ("HOUR", "TENANT_ID", "PRODUCT", "PLATFORM", "MODEL"),
    "ANALYTICS.USER_FEEDBACK": ("FEEDBACK_EVENT_ID",),
    "ANALYTICS.USER_JOURNEYS": ("PERSON_ID", "SESSION_KEY"),
    "IDENTITY.IDENTIFIERS": ("ID_KEY",),
    "IDENTITY.PERSONS": ("PERSON_ID",),
    "IDENTITY.MERGES": ("MERGE_KEY",),
    "IDENTITY.OBSERVATIONS": ("OBSERVATION_KEY",),
}


def comparable(value):
    # averages may be summed in another order by another plan: compare floats to 9 places
    return round(value, 9) if isinstance(value, float) else value


def keyed(conn, name: str) -> dict[tuple, dict]:
    rows = {}
    for row in table(conn, name):
        key = tuple(row[k] for k in KEYS[name])
        assert key not in rows, f"{name}: two rows for {key}"
        rows[key] = {k: comparable(v) for k, v in row.items()}
    return rows


def snapshot(conn) -> dict[str, dict[tuple, dict]]:
    return {name: keyed(conn, name) for name in SNAPSHOT_TABLES}


def changed_keys(before: dict[tuple, dict], after: dict[tuple, dict]) -> set[tuple]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def queries() -> dict[str, str]:
    """heading -> SQL of each ```sql block in docs/queries.md."""
    found = re.findall(r"^## (.+?)\n.*?```sql\n(.*?)```", QUERIES_MD.read_text(), re.S | re.M)
    return dict(found)


def run_query(conn, heading: str, **params) -> list[dict]:
    return fetch(conn, queries()[heading], params)


PERIOD = {"since": naive(T0).isoformat(), "until": naive(T0 + (DAYS + 1) * DAY).isoformat()}


def assert_rows_equal(got: dict, want: dict, where: str) -> None:
    """Column by column; numbers compared as numbers (Decimal, int and float alike)."""
    diffs = {}
    for column, expected in want.items():
        actual = got.get(column)
        if isinstance(expected, (int, float, Decimal)) and not isinstance(expected, bool) and actual is not None:
            same = abs(Decimal(str(actual)) - Decimal(str(expected))) <= Decimal("0.000001")
        else:
            same = actual == expected
        if not same:
            diffs[column] = {"expected": expected, "got": actual}
    assert not diffs, f"{where}: {diffs}"


# =============================================================================================
# the datasets
# =============================================================================================


def variant(template_id: str, event_id: str, at: int, *, identifiers: dict | None = None,
            attributes: dict | None = None, **fields) -> dict:
    """A copy of one of the scenario's events with a new id and time (and whatever else changes)."""
    template = next(e for e in cross_platform_scenario(T0).events if e["event_id"] == template_id)
    event = copy.deepcopy(template)
    event.update(event_id=event_id, event_time=at, received_at=at + SECOND, **fields)
    event["identifiers"].update(identifiers or {})
    event["attributes"].update(attributes or {})
    return event


def person_ids(anonymous_id: str, account_id: str) -> dict:
    # every identifier replaced: the templates' own (Dana's phone, say) must not leak into the copies
    return {"anonymous_id": anonymous_id, "platform_user_id": account_id, "device_id": None, "email_sha256": None}


def price_probes() -> list[dict]:
    """Requests of the model whose price changes, in the hour of the change (effective 12:30: the whole
    hour still costs the old price) and the hours around it, in a web session of their own."""
    change = min(micros(p["effective_from"]) for p in PRICES if p["version"] == 2)
    probes = []
    for n, at in enumerate((change - 40 * MINUTE, change + 10 * MINUTE, change + 40 * MINUTE)):
        probe = variant("dana-web2-a-reply", f"price-probe-{n}", at, session_id="ws_probe",
                        conversation_id="conv_probe", message_id=f"probe-m{n}", parent_event_id=None,
                        identifiers=person_ids("anon-probe", "acct_probe"))
        probe["attributes"]["request_model"] = CHANGING_PRICE_MODEL
        probes.append(probe)
    return probes


def midnight_session() -> list[dict]:
    """A web session from 23:59 on day 1 to 00:01 on day 2, ended by a hand-off to a human. Its feedback
    (day 2) rates a reply sent on day 1, so the feedback lands a batch before the message it rates, and
    the session moves from day 2 to day 1 when its first half arrives."""
    midnight = T0 + 2 * DAY
    common = {"session_id": "ws_night", "identifiers": person_ids("anon-night-owl", "acct_night_owl")}
    talk = {**common, "conversation_id": "conv_night"}
    return [
        variant("dana-web2-start", "night-start", midnight - MINUTE, **common),
        variant("dana-web2-a-user", "night-user-1", midnight - 30 * SECOND, message_id="night-m1", **talk),
        variant("dana-web2-a-reply", "night-reply-1", midnight - 2 * SECOND, message_id="night-m2",
                parent_event_id="night-user-1", **talk),
        variant("dana-ios-feedback", "night-feedback", midnight + 10 * SECOND, message_id="night-m2",
                platform="web", source_id="src-web-chat", contract={"name": "web-chat.chat_event", "version": 1},
                **talk),
        variant("dana-web2-a-user", "night-user-2", midnight + 30 * SECOND, message_id="night-m3", **talk),
        variant("dana-web2-a-reply", "night-reply-2", midnight + 33 * SECOND, message_id="night-m4",
                parent_event_id="night-user-2", **talk),
        variant("dana-web1-end", "night-end", midnight + MINUTE, attributes={"reason": "human_handoff"}, **common),
    ]


def microsecond_sessions() -> list[dict]:
    """Two web sessions of an anonymous visitor stamped to the microsecond, with no product or tenant:
    durations, gaps and latencies are differences of microsecond times (a reply 2,499.2 ms after the
    question waited 2,499 whole milliseconds, though the clock crossed 2,500 millisecond marks). The
    second reply names no model at all; a feedback rates the person's own question (so its model is
    that of the reply before it)."""
    ids = {"anonymous_id": "anon-micro", "platform_user_id": None, "device_id": None, "email_sha256": None,
           "tenant_id": None}
    first, second = T0 + 3 * DAY + 8 * HOUR + 900, T0 + 3 * DAY + 9 * HOUR + 100
    out = []
    for n, (start, wait, end) in enumerate(((first, 2_499_200, 20_000_300), (second, 1_999_500, 9_999_950))):
        common = {"session_id": f"ws_micro_{n}", "identifiers": ids, "product": None}
        talk = {**common, "conversation_id": f"conv_micro_{n}"}
        question = start + 10 * SECOND
        out += [
            variant("dana-web1-start", f"micro-{n}-start", start, **common),
            variant("dana-web1-a-user", f"micro-{n}-user", question, message_id=f"micro-{n}-m1", **talk),
            variant("dana-web1-a-reply", f"micro-{n}-reply", question + wait, message_id=f"micro-{n}-m2", **talk),
            variant("dana-web1-end", f"micro-{n}-end", start + end, **common),
        ]
    out[6]["attributes"].update(request_model=None, response_model=None)
    out.append(variant("dana-ios-feedback", "micro-0-feedback", first + 15 * SECOND, message_id="micro-0-m1",
                       platform="web", source_id="src-web-chat", contract={"name": "web-chat.chat_event",
                                                                          "version": 1},
                       session_id="ws_micro_0", conversation_id="conv_micro_0", identifiers=ids, product=None))
    return out


def main_dataset() -> list[dict]:
    return [*cross_platform_scenario(T0).events, *price_probes(), *midnight_session(), *microsecond_sessions(),
            *sample_events(people=40, days=DAYS, seed=11, start_us=T0)]


def incremental_batches(events: list[dict]) -> list[tuple[str, list[dict]]]:
    """Days 2 on, then days 0-1 (late: out of order, so earlier first sightings re-anchor persons and
    sessions already modeled change person), then duplicate copies of every fifteenth event, received
    later (at-least-once delivery)."""
    def days(first: int, last: int) -> list[dict]:
        return [e for e in events if first * DAY <= e["event_time"] - T0 < last * DAY]

    duplicates = [dict(e, received_at=e["received_at"] + HOUR) for e in events[::15]]
    return [("days-2-on", days(2, 10**6)), ("days-0-1-late", days(-10**6, 2)), ("duplicates", duplicates)]


@dataclass
class Modeled:
    conn: object
    reference: Reference
    incremental: dict  # snapshot after the incremental sequence
    reports: list


@pytest.fixture(scope="module")
def modeled(warehouse_server):
    """The main dataset landed in three batches with a model run after each (this module's tests read it)."""
    from warehouse.connection import warehouse_connect
    from warehouse.ddl import warehouse_ensure

    conn = warehouse_connect(database=f"T_PROOF_{uuid.uuid4().hex[:10].upper()}")
    warehouse_ensure(conn)
    try:
        events = main_dataset()
        reports = []
        for batch_id, batch in incremental_batches(events):
            land(conn, batch, batch_id)
            reports.append(run_models(conn))
        yield Modeled(conn, Reference(events), snapshot(conn), reports)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def scenario():
    return cross_platform_scenario(T0)


# =============================================================================================
# the named scenario: one person on web, iOS and Slack; decoys stay apart
# =============================================================================================


def test_the_scenario_person_is_one_person_across_web_ios_and_slack(modeled, scenario):
    conn = modeled.conn
    identifiers = {r["ID_KEY"]: r["PERSON_ID"] for r in table(conn, "IDENTITY.IDENTIFIERS")}
    dana = {identifiers[key] for key in scenario.dana_identifiers}
    assert len(dana) == 1, {key: identifiers.get(key) for key in scenario.dana_identifiers}
    (dana_id,) = dana
    assert dana_id.startswith("p_")
    # the anchor is her first anonymous web identifier, so she keeps the person id her first visit had
    assert person_anchors(conn)[dana_id] == scenario.dana_anchor == modeled.reference.identity.anchor_of[
        scenario.dana_anchor]

    sessions = {r["SESSION_KEY"]: r for r in table(conn, "ANALYTICS.CONVERSATION_SESSIONS")}
    for key, platform in scenario.dana_sessions:
        assert sessions[key]["PERSON_ID"] == dana_id, key
        assert sessions[key]["PLATFORM"] == platform, key


def test_user_journeys_shows_the_scenario_persons_three_platforms_in_order(modeled, scenario):
    conn = modeled.conn
    dana_id = next(r["PERSON_ID"] for r in table(conn, "IDENTITY.IDENTIFIERS")
                   if r["ID_KEY"] == scenario.dana_anchor)
    journey = sorted((r for r in table(conn, "ANALYTICS.USER_JOURNEYS") if r["PERSON_ID"] == dana_id),
                     key=lambda r: r["SESSION_SEQ"])
    platforms = [platform for _, platform in scenario.dana_sessions]
    assert [r["SESSION_KEY"] for r in journey] == [key for key, _ in scenario.dana_sessions]
    assert [r["SESSION_SEQ"] for r in journey] == list(range(1, len(platforms) + 1))
    assert [r["PLATFORM"] for r in journey] == platforms == ["web", "ios", "slack", "web"]
    assert [r["PREVIOUS_PLATFORM"] for r in journey] == [None, *platforms[:-1]]
    assert [r["PLATFORM_SWITCH"] for r in journey] == [False, True, True, True]
    assert [r["PLATFORMS_SO_FAR"] for r in journey] == [1, 2, 3, 3]
    assert journey[-1]["PLATFORMS_SO_FAR"] == len(set(platforms)) == 3


def test_merges_record_the_events_that_linked_the_scenario_person(modeled, scenario):
    conn = modeled.conn
    group = next(r["LINK_GROUP"] for r in table(conn, "IDENTITY.IDENTIFIERS") if r["ID_KEY"] == scenario.dana_anchor)
    merges = [r for r in table(conn, "IDENTITY.MERGES") if r["LINK_GROUP"] == group]
    assert {r["EVENT_ID"] for r in merges if r["DECISION"] == "merged"} == set(scenario.dana_linking_events)
    assert not [r for r in merges if r["DECISION"] != "merged"]
    by_event = {r["EVENT_ID"]: r for r in merges}
    assert by_event["dana-web-identify"]["RULE"] == "identified"
    assert by_event["dana-ios-start"]["RULE"] == "co_occurrence"
    assert by_event["dana-slack-identify"]["RULE"] == "identified"
    # every merge joined two persons made of her identifiers
    assert {r["PERSON_ANCHOR"] for r in merges} | {r["MERGED_ANCHOR"] for r in merges} <= set(
        scenario.dana_identifiers)
    events = {e["event_id"]: e for e in scenario.events}
    for r in merges:
        assert r["DECIDED_AT"] == naive(events[r["EVENT_ID"]]["event_time"])


def test_blocked_identifier_values_link_nobody(modeled, scenario):
    conn = modeled.conn
    identifiers = table(conn, "IDENTITY.IDENTIFIERS")
    assert all(usable(r["ID_VALUE"]) for r in identifiers), [r["ID_KEY"] for r in identifiers
                                                              if not usable(r["ID_VALUE"])]
    person = {r["ID_KEY"]: r["PERSON_ID"] for r in identifiers}
    a, b = (person[f"anonymous_id:{anon}"] for anon in scenario.blocked_decoy_anonymous_ids)
    assert a != b
    sessions = {r["SESSION_KEY"]: r["PERSON_ID"] for r in table(conn, "ANALYTICS.CONVERSATION_SESSIONS")}
    assert (sessions["ws_decoy_a"], sessions["ws_decoy_b"]) == (a, b)


def test_a_shared_device_does_not_merge_two_people_with_their_own_email(modeled, scenario):
    conn = modeled.conn
    person = {r["ID_KEY"]: r["PERSON_ID"] for r in table(conn, "IDENTITY.IDENTIFIERS")}
    kim, lee = (person[f"email_sha256:{h}"] for h in scenario.shared_device_people)
    assert kim != lee
    assert person[f"device_id:{scenario.shared_device_id}"] == kim  # the first to sign in keeps it
    sessions = {r["SESSION_KEY"]: r["PERSON_ID"] for r in table(conn, "ANALYTICS.CONVERSATION_SESSIONS")}
    assert (sessions["is_ipad_kim"], sessions["is_ipad_lee"]) == (kim, lee)

    expected = {(event_id, kind) for event_id, decision, kind in modeled.reference.identity.decisions
                if decision == "refused" and event_id.startswith("ipad-")}
    assert scenario.shared_device_refusing_event in {event_id for event_id, _ in expected}
    refused = [r for r in table(conn, "IDENTITY.MERGES") if r["DECISION"] == "refused"
               and r["EVENT_ID"].startswith("ipad-")]
    assert {(r["EVENT_ID"], "email_sha256") for r in refused} == expected
    assert all("email_sha256" in r["REASON"] and "1" in r["REASON"] for r in refused)


def test_a_kiosk_device_gathers_at_most_three_accounts(modeled, scenario):
    conn = modeled.conn
    person = {r["ID_KEY"]: r["PERSON_ID"] for r in table(conn, "IDENTITY.IDENTIFIERS")}
    first_three = {person[f"platform_user_id:{a}"] for a in scenario.kiosk_accounts[:3]}
    assert first_three == {person[f"device_id:{scenario.kiosk_device_id}"]}
    assert person[f"platform_user_id:{scenario.kiosk_accounts[3]}"] not in first_three
    refused = [r for r in table(conn, "IDENTITY.MERGES") if r["DECISION"] == "refused"
               and r["EVENT_ID"].startswith("kiosk-")]
    assert [r["EVENT_ID"] for r in refused] == [scenario.kiosk_refusing_event]
    assert "platform_user_id" in refused[0]["REASON"] and "3" in refused[0]["REASON"]


def test_identifiers_and_merge_decisions_follow_the_stitching_rules(modeled):
    conn = modeled.conn
    anchors = person_anchors(conn)
    got = {r["ID_KEY"]: anchors[r["PERSON_ID"]] for r in table(conn, "IDENTITY.IDENTIFIERS")}
    want = modeled.reference.identity.anchor_of
    assert got.keys() == want.keys()
    wrong = {key: {"expected": want[key], "got": got[key]} for key in want if got[key] != want[key]}
    assert not wrong
    merges = table(conn, "IDENTITY.MERGES")
    expected = modeled.reference.identity.decisions
    for decision in ("merged", "refused"):
        assert {r["EVENT_ID"] for r in merges if r["DECISION"] == decision} == \
            {event_id for event_id, d, _ in expected if d == decision}, decision


# =============================================================================================
# the curated tables, row by row
# =============================================================================================


def test_every_session_row_follows_the_session_rules(modeled):
    conn = modeled.conn
    person_of_anchor = {anchor: pid for pid, anchor in person_anchors(conn).items()}
    got = {r["SESSION_KEY"]: r for r in table(conn, "ANALYTICS.CONVERSATION_SESSIONS")}
    want = {key: s.row(person_of_anchor) for key, s in modeled.reference.sessions.items()}
    assert got.keys() == want.keys()
    for key in sorted(want):
        assert_rows_equal(got[key], want[key], key)


def test_user_journeys_rows_follow_the_sessions_of_each_person(modeled):
    conn = modeled.conn
    anchors = person_anchors(conn)
    got = defaultdict(list)
    for r in table(conn, "ANALYTICS.USER_JOURNEYS"):
        got[anchors[r["PERSON_ID"]]].append({k: v for k, v in r.items() if k != "PERSON_ID"})
    want = modeled.reference.journeys()
    assert got.keys() == want.keys()
    for anchor, rows in want.items():
        mine = sorted(got[anchor], key=lambda r: r["SESSION_SEQ"])
        assert len(mine) == len(rows), anchor
        for g, w in zip(mine, rows, strict=True):
            assert_rows_equal(g, w, f"{anchor} #{w['SESSION_SEQ']}")


def test_platform_engagement_daily_follows_the_sessions(modeled):
    got = keyed(modeled.conn, "ANALYTICS.PLATFORM_ENGAGEMENT_DAILY")
    want = modeled.reference.engagement_rows()
    assert got.keys() == want.keys()
    for key in sorted(want):
        assert_rows_equal(got[key], want[key], str(key))


def test_user_feedback_names_the_rated_message_and_its_model(modeled):
    ref = modeled.reference
    person_of_anchor = {anchor: pid for pid, anchor in person_anchors(modeled.conn).items()}
    got = {r["FEEDBACK_EVENT_ID"]: r for r in table(modeled.conn, "ANALYTICS.USER_FEEDBACK")}
    feedback = [e for e in ref.events if e["event_type"] == "feedback.submitted"]
    assert got.keys() == {e["event_id"] for e in feedback}
    for e in feedback:
        rated = ref.by_message.get(e["message_id"])
        assert_rows_equal(got[e["event_id"]], {
            "FEEDBACK_AT": naive(e["event_time"]), "PERSON_ID": person_of_anchor.get(ref.identity.person(e)),
            "PLATFORM": e["platform"], "SESSION_KEY": ref.part_of[e["event_id"]], "MESSAGE_ID": e["message_id"],
            "SCORE": e["attributes"]["score"], "KIND": e["attributes"]["kind"],
            "RATED_MESSAGE_EVENT_ID": rated["event_id"] if rated else None,
            "RATED_MESSAGE_ROLE": rated["attributes"]["role"] if rated else None,
            "MODEL": ref.feedback_model(e),
        }, e["event_id"])


# =============================================================================================
# cost: tokens x the price in force at each request's hour
# =============================================================================================


def test_the_dataset_straddles_a_price_change():
    requests = [r for r in map(request_of, main_dataset()) if r and r.model == CHANGING_PRICE_MODEL]
    change = min(micros(p["effective_from"]) for p in PRICES if p["version"] == 2)
    before = {price_in_force(CHANGING_PRICE_MODEL, "input", r.hour) for r in requests if r.hour < change}
    after = {price_in_force(CHANGING_PRICE_MODEL, "input", r.hour) for r in requests if r.hour >= change}
    assert before == {Decimal("0.40")} and after == {Decimal("0.50")}
    # the request 10 minutes after the change is in an hour that began before it: old price
    probe = request_of(price_probes()[1])
    assert probe.event["event_time"] > change
    assert price_in_force(CHANGING_PRICE_MODEL, "input", probe.hour) == Decimal("0.40")
    assert any(r.model == UNPRICED_MODEL for r in map(request_of, main_dataset()) if r)


def test_token_cost_usage_is_tokens_times_the_price_in_force_at_each_hour(modeled):
    got = keyed(modeled.conn, "ANALYTICS.TOKEN_COST_USAGE")
    want = modeled.reference.token_cost_rows()
    assert got.keys() == want.keys()
    for key in sorted(want):
        assert_rows_equal(got[key], want[key], str(key))
        assert round(got[key]["COST_USD"], 6) == round(want[key]["COST_USD"], 6), key


def test_cost_per_tenant_from_the_cost_attribution_query_and_the_table(modeled):
    tenants = defaultdict(Decimal)
    lines: dict[tuple, dict] = defaultdict(lambda: {"REQUESTS": 0, "COST_USD": Decimal(0), "UNPRICED_REQUESTS": 0})
    for r, _ in modeled.reference.requests():
        tenant = r.event["identifiers"]["tenant_id"] or UNKNOWN
        tenants[tenant] += r.cost
        line = lines[(tenant, r.event["product"] or UNKNOWN, r.model or UNKNOWN)]
        line["REQUESTS"] += 1
        line["COST_USD"] += r.cost
        line["UNPRICED_REQUESTS"] += 0 if r.priced else 1
    assert len(tenants) >= 3

    table_totals = defaultdict(Decimal)
    for row in table(modeled.conn, "ANALYTICS.TOKEN_COST_USAGE"):
        table_totals[row["TENANT_ID"]] += row["COST_USD"]
    assert {t: round(c, 6) for t, c in table_totals.items()} == {t: round(c, 6) for t, c in tenants.items()}

    rows = run_query(modeled.conn, "Cost attribution", **PERIOD)
    got = {(r["TENANT_ID"], r["PRODUCT"], r["MODEL"]): r for r in rows}
    assert got.keys() == lines.keys()
    query_totals = defaultdict(Decimal)
    for key, line in lines.items():
        assert_rows_equal(got[key], line, str(key))
        query_totals[key[0]] += Decimal(str(got[key]["COST_USD"]))
        share = got[key]["SHARE_OF_TENANT_COST"]
        if tenants[key[0]]:
            assert abs(Decimal(str(share)) - line["COST_USD"] / tenants[key[0]]) < Decimal("0.000001"), key
    assert {t: round(c, 6) for t, c in query_totals.items()} == {t: round(c, 6) for t, c in tenants.items()}


# =============================================================================================
# the queries of docs/queries.md
# =============================================================================================


def test_queries_md_has_the_four_named_queries():
    assert list(queries()) == ["Session reconstruction", "Cross-platform user journeys",
                               "Prompt and response metrics", "Cost attribution"]


def test_cross_platform_journeys_query_returns_the_scenario_person_and_everyone_else(modeled, scenario):
    conn = modeled.conn
    rows = run_query(conn, "Cross-platform user journeys", min_platforms=2, **PERIOD)
    anchors = person_anchors(conn)
    by_anchor = {anchors[r["PERSON_ID"]]: r for r in rows}
    dana = by_anchor[scenario.dana_anchor]
    assert (dana["PLATFORMS"], dana["SESSIONS"], dana["PLATFORM_SWITCHES"], dana["PATH"]) == \
        (3, 4, 3, "web > ios > slack > web")

    want = {}
    for anchor, journey in modeled.reference.journeys().items():
        platforms = {j["PLATFORM"] for j in journey}
        if len(platforms) >= 2:
            want[anchor] = {
                "SESSIONS": len(journey), "PLATFORMS": len(platforms),
                "PLATFORM_SWITCHES": sum(j["PLATFORM_SWITCH"] for j in journey),
                "PATH": " > ".join(j["PLATFORM"] for j in journey), "FIRST_SESSION_AT": journey[0]["STARTED_AT"],
                "LAST_SESSION_ENDED_AT": max(j["ENDED_AT"] for j in journey),
                "COMPLETED_SESSIONS": sum(j["OUTCOME"] == "completed" for j in journey),
            }
    assert len(want) > 5
    assert by_anchor.keys() == want.keys()
    for anchor, expected in want.items():
        assert_rows_equal(by_anchor[anchor], expected, anchor)


def test_session_reconstruction_query_returns_the_events_of_a_session_in_order(modeled, scenario):
    ref = modeled.reference
    person_of_anchor = {anchor: pid for pid, anchor in person_anchors(modeled.conn).items()}
    with_tools = next(s for s in ref.sessions.values() if any(e["event_type"] == "tool_call.completed"
                                                              for e in s.events))
    slack = dict(scenario.dana_sessions)
    slack_key = next(key for key, platform in slack.items() if platform == "slack")
    for key in ("is_dana_1", slack_key, with_tools.key, "ws_micro_0"):
        session = ref.sessions[key]
        rows = run_query(modeled.conn, "Session reconstruction", session_key=key)
        assert [r["EVENT_ID"] for r in rows] == [e["event_id"] for e in session.events], key
        assert [r["STEP"] for r in rows] == list(range(1, len(session.events) + 1))
        assert [r["EVENT_TYPE"] for r in rows] == [e["event_type"] for e in session.events]
        assert [r["ROLE"] for r in rows] == [e["attributes"].get("role") for e in session.events]
        summary = session.row(person_of_anchor)
        for r in rows:
            assert_rows_equal(r, {
                "EVENT_COUNT": len(session.events), "USER_MESSAGES": summary["USER_MESSAGES"],
                "ASSISTANT_MESSAGES": summary["ASSISTANT_MESSAGES"], "TOOL_CALLS": summary["TOOL_CALLS"],
                "OUTCOME": summary["OUTCOME"], "SESSION_PLATFORM": summary["PLATFORM"],
                "PERSON_ID": summary["PERSON_ID"], "SESSION_COST_USD": summary["COST_USD"],
            }, f"{key} step {r['STEP']}")
        for r, e in zip(rows, session.events, strict=True):
            assert_rows_equal(r, {"SECONDS_IN": (e["event_time"] - session.started) / SECOND,
                                  "EVENT_TIME": naive(e["event_time"]), "EVENT_PLATFORM": e["platform"]}, e["event_id"])
    assert run_query(modeled.conn, "Session reconstruction", session_key="no-such-session") == []


def test_prompt_and_response_metrics_query_matches_the_events(modeled):
    ref = modeled.reference
    requests = defaultdict(list)
    for r, s in ref.requests():
        requests[(s.platform if s else r.event["platform"], r.model or UNKNOWN)].append(r)
    feedback = defaultdict(list)
    for e in ref.events:
        if e["event_type"] == "feedback.submitted":
            feedback[(e["platform"], ref.feedback_model(e))].append(e["attributes"]["score"])
    sessions = defaultdict(list)
    for s in ref.sessions.values():
        sessions[s.platform].append(s)

    rows = run_query(modeled.conn, "Prompt and response metrics", **PERIOD)
    got = {(r["PLATFORM"], r["MODEL"]): r for r in rows}
    assert got.keys() == requests.keys()
    for (platform, model), reqs in requests.items():
        n = len(reqs)
        scores = feedback.get((platform, model), [])
        latencies = [s.latencies()[0] for s in sessions[platform] if s.latencies()]
        assert_rows_equal(got[(platform, model)], {
            "REQUESTS": n,
            "AVG_INPUT_TOKENS": sum(r.input for r in reqs) / n,
            "AVG_CACHED_INPUT_TOKENS": sum(r.cached for r in reqs) / n,
            "AVG_OUTPUT_TOKENS": sum(r.output for r in reqs) / n,
            "AVG_REASONING_TOKENS": sum(r.reasoning for r in reqs) / n,
            "COST_USD_PER_REQUEST": sum(r.cost for r in reqs) / n,
            "FEEDBACK": len(scores),
            "AVG_FEEDBACK_SCORE": sum(scores) / len(scores) if scores else None,
            "POSITIVE_FEEDBACK_SHARE": sum(1 for x in scores if x > 0) / len(scores) if scores else None,
            "PLATFORM_SESSIONS": len(sessions[platform]),
            "PLATFORM_USER_MESSAGES": sum(s.messages("user") for s in sessions[platform]),
            "PLATFORM_ASSISTANT_MESSAGES": sum(s.messages("assistant") for s in sessions[platform]),
            "MEDIAN_FIRST_RESPONSE_MS": percentile_cont(latencies, 0.5),
            "P90_FIRST_RESPONSE_MS": percentile_cont(latencies, 0.9),
        }, f"{platform} x {model}")
    assert sum(len(v) for v in feedback.values()) > 10


# =============================================================================================
# incremental runs
# =============================================================================================


def test_each_incremental_run_did_work_and_a_run_without_new_data_changes_nothing(modeled):
    for report in modeled.reports[:2]:  # the last batch held only duplicates: no work is needed
        assert report.model("conversation_sessions").rows_changed > 0
    report = run_models(modeled.conn)
    assert {m.name: m.rows_changed for m in report.models} == {m.name: 0 for m in report.models}
    assert snapshot(modeled.conn) == modeled.incremental


def test_a_full_rebuild_gives_the_same_rows_as_the_incremental_runs(modeled):
    run_models(modeled.conn, full_refresh=True)
    rebuilt = snapshot(modeled.conn)
    for name in SNAPSHOT_TABLES:
        before, after = modeled.incremental[name], rebuilt[name]
        differing = sorted(changed_keys(before, after), key=str)[:5]
        assert not differing, {name: [{"incremental": before.get(k), "rebuilt": after.get(k)} for k in differing]}


def test_every_model_table_has_one_row_per_key(modeled):
    # the embedded warehouse no longer enforces these keys (Snowflake never does): the models must
    keyed_tables = [t for t in ANALYTICS_TABLES if t.primary_key]
    assert len(keyed_tables) >= 11
    for table_def in keyed_tables:
        name = f"{table_def.schema}.{table_def.name}"
        if name in KEYS:
            assert KEYS[name] == table_def.primary_key, name
        key = ", ".join(table_def.primary_key)
        duplicated = fetch(modeled.conn, f"SELECT {key}, COUNT(*) AS N FROM {modeled.conn.database}.{name} "  # noqa: S608 - table constants
                           f"GROUP BY {key} HAVING COUNT(*) > 1 LIMIT 3")
        assert duplicated == [], name
    db = modeled.conn.database
    [facts] = fetch(modeled.conn, f"SELECT COUNT(*) AS N FROM {db}.ANALYTICS.EVENT_FACTS")  # noqa: S608 - the test's own database
    [events] = fetch(modeled.conn, f"SELECT COUNT(*) AS N FROM {db}.CANONICAL.EVENTS")  # noqa: S608 - the test's own database
    assert facts["N"] == events["N"] == len({e["event_id"] for e in modeled.reference.events})


def test_late_events_change_exactly_the_sessions_and_days_they_belong_to(modeled):
    # last in this module: it lands more events in the shared dataset (a run of its own would cost as much
    # as the rest of the file on the embedded warehouse)
    conn, ref = modeled.conn, modeled.reference
    before = snapshot(conn)

    # a phone comes back online: events of the two latest sessions it had at least two days before "now"
    now = T0 + DAYS * DAY
    candidates = sorted((s for s in ref.sessions.values() if s.requests and s.messages("user")
                         and s.started < now - 2 * DAY),
                        key=lambda s: (s.platform not in ("ios", "android"), -s.started))
    chosen = [candidates[0], next(s for s in candidates if s.started // DAY != candidates[0].started // DAY)]
    assert {s.platform for s in chosen} <= {"ios", "android"}
    late = [e for s in chosen for e in late_events(s, received_at=now)]
    land(conn, late, "back-online")
    run_models(conn)
    after = snapshot(conn)
    updated = Reference(ref.events + late)

    sessions = "ANALYTICS.CONVERSATION_SESSIONS"
    assert after[sessions].keys() == before[sessions].keys()  # no new sessions
    assert changed_keys(before[sessions], after[sessions]) == {(s.key,) for s in chosen}
    person_of_anchor = {anchor: pid for pid, anchor in person_anchors(conn).items()}
    for s in chosen:
        assert_rows_equal(after[sessions][(s.key,)], updated.sessions[s.key].row(person_of_anchor), s.key)
        assert after[sessions][(s.key,)]["EVENT_COUNT"] == before[sessions][(s.key,)]["EVENT_COUNT"] + 3

    daily = "ANALYTICS.PLATFORM_ENGAGEMENT_DAILY"
    touched_days = {(naive(s.started).date(), s.platform, s.row({})["PRODUCT"]) for s in chosen}
    assert after[daily].keys() == before[daily].keys()
    assert changed_keys(before[daily], after[daily]) == touched_days
    for key in touched_days:
        assert_rows_equal(after[daily][key], updated.engagement_rows()[key], str(key))

    costs = "ANALYTICS.TOKEN_COST_USAGE"
    late_requests = [(r, updated.sessions[updated.part_of[r.event["event_id"]]]) for r in map(request_of, late) if r]
    touched_hours = {(naive(r.hour), r.event["identifiers"]["tenant_id"], r.event["product"], s.platform, r.model)
                     for r, s in late_requests}
    assert changed_keys(before[costs], after[costs]) == touched_hours
    for key in touched_hours:
        assert_rows_equal(after[costs][key], updated.token_cost_rows()[key], str(key))

    feedback = "ANALYTICS.USER_FEEDBACK"
    assert changed_keys(before[feedback], after[feedback]) == {(e["event_id"],) for e in late
                                                              if e["event_type"] == "feedback.submitted"}
    journeys = "ANALYTICS.USER_JOURNEYS"
    assert changed_keys(before[journeys], after[journeys]) <= {
        (after[sessions][(s.key,)]["PERSON_ID"], s.key) for s in chosen}
    for name in ("IDENTITY.IDENTIFIERS", "IDENTITY.PERSONS", "IDENTITY.MERGES"):
        assert after[name] == before[name], name


def late_events(session: Session, *, received_at: int) -> list[dict]:
    """A question, the gateway's answer and a thumbs-up, in the middle of the session, received late."""
    user = next(e for e in session.events if is_message(e, "user"))
    reply = next(e for e in session.events if request_of(e))
    middle = (session.started + (session.ended - session.started) // 2) // 1000 * 1000
    question = copy.deepcopy(user)
    question.update(event_id=f"late-q-{session.key}", event_time=middle, received_at=received_at,
                    message_id=f"late-m1-{session.key}")
    answer = copy.deepcopy(reply)
    answer.update(event_id=f"late-a-{session.key}", event_time=middle + 1500 * 1000, received_at=received_at,
                  message_id=f"late-m2-{session.key}", parent_event_id=question["event_id"])
    thumbs = copy.deepcopy(user)
    thumbs.update(event_id=f"late-f-{session.key}", event_type="feedback.submitted", event_time=middle + 3000 * 1000,
                  received_at=received_at, message_id=answer["message_id"],
                  attributes={"score": 1.0, "kind": "thumbs", "comment": None, "raw_value": "thumbs_up"})
    return [question, answer, thumbs]
