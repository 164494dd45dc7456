"""The sample generator: deterministic by seed, covers every event type and platform, and its events are
valid canonical events (the Avro model itself is the judge), so the sample can't drift from the model."""

from __future__ import annotations

import types
from collections import defaultdict
from decimal import Decimal

import fastavro
import orjson
import pytest

from contracts.canonical_model import (
    EVENT_TYPES,
    PLATFORMS,
    canonical_avro_schema,
    load_canonical_model,
    to_avro_datum,
)
from warehouse.analytics_sample import (
    CHANGING_PRICE_MODEL,
    DAY,
    HOUR,
    MINUTE,
    MODELS,
    UNPRICED_MODEL,
    cross_platform_scenario,
    micros_to_datetime,
    sample_events,
    sample_prices,
)

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
KINDS = ("email_sha256", "platform_user_id", "device_id", "anonymous_id")
LIMITS = {"email_sha256": 1, "platform_user_id": 3, "device_id": 10, "anonymous_id": 50}


@pytest.fixture(scope="module")
def events():
    return list(sample_events(people=80, days=7, seed=5, start_us=T0))


def test_same_seed_same_events_other_seed_other_events():
    def sample(seed: int) -> bytes:
        return orjson.dumps(list(sample_events(people=25, days=4, seed=seed, start_us=T0)))

    assert sample(9) == sample(9)
    assert sample(9) != sample(10)
    assert orjson.dumps(cross_platform_scenario(T0).events) == orjson.dumps(cross_platform_scenario(T0).events)


def test_events_come_lazily_one_person_at_a_time():
    stream = sample_events(people=10**9, days=30, seed=1, start_us=T0)
    assert isinstance(stream, types.GeneratorType)
    first = [next(stream) for _ in range(5)]
    assert len({e["event_id"] for e in first}) == 5


def test_every_event_type_and_platform_appears(events):
    assert {e["event_type"] for e in events} == set(EVENT_TYPES)
    assert {e["platform"] for e in events} == set(PLATFORMS)
    assert {e["attributes"]["request_model"] for e in events if e["event_type"] == "message.sent"} >= {
        m[0] for m in MODELS}
    completed = [e["attributes"]["status"] for e in events if e["event_type"] == "tool_call.completed"]
    assert {"ok", "error"} <= set(completed)
    assert {e["attributes"]["kind"] for e in events if e["event_type"] == "feedback.submitted"} == {
        "thumbs", "stars", "text"}
    assert len({e["identifiers"]["tenant_id"] for e in events}) >= 3
    assert len({e["product"] for e in events}) >= 4


def test_gateway_replies_carry_the_session_they_served_and_their_usage(events):
    replies = [e for e in events if e["event_type"] == "message.sent" and e["attributes"]["role"] == "assistant"]
    assert replies and all(e["platform"] == "api" for e in replies)
    client_sessions = {e["session_id"] for e in events if e["platform"] != "api" and e["session_id"]}
    assert {e["session_id"] for e in replies if e["session_id"]} & client_sessions
    usage = [e["attributes"] for e in replies if e["attributes"]["input_tokens"] is not None]
    assert usage and all(a["cache_read_input_tokens"] <= a["input_tokens"] for a in usage)
    assert all(a["reasoning_output_tokens"] <= a["output_tokens"] for a in usage)
    assert any(a["reasoning_output_tokens"] for a in usage) and any(a["cache_read_input_tokens"] for a in usage)


def test_events_are_valid_canonical_events(events):
    model = load_canonical_model()
    parsed = fastavro.parse_schema(canonical_avro_schema())
    envelope = {f.name for f in model.envelope} | {"attributes"}
    identifiers = {f.name for f in model.envelope_field("identifiers").fields}
    lineage = {f.name for f in model.envelope_field("lineage").fields}
    for event in [*events, *cross_platform_scenario(T0).events]:
        assert set(event) == envelope, event["event_id"]
        assert set(event["identifiers"]) == identifiers and event["identifiers"]["person_id"] is None
        assert set(event["lineage"]) == lineage
        assert set(event["attributes"]) == {f.name for f in model.event_types[event["event_type"]].fields}
        assert fastavro.validation.validate(to_avro_datum(event), parsed, raise_errors=True, strict=True)
        assert event["event_time"] % 1000 == 0 and event["received_at"] >= event["event_time"]
        assert -1 <= event["attributes"].get("score", 0) <= 1


def test_event_ids_are_unique(events):
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids))
    scenario = [e["event_id"] for e in cross_platform_scenario(T0).events]
    assert len(scenario) == len(set(scenario)) and not set(scenario) & set(ids)


def _person_index(event_id: str) -> int:
    # the generator's event ids carry the person: <seed>-<index high>-5<index low>-…
    parts = event_id.split("-")
    return int(parts[1], 16) << 12 | int(parts[2][1:], 16)


def test_the_identifiers_of_one_simulated_person_link_only_to_each_other(events):
    """So the stitched persons of a sample are exactly the simulated people (no limit is ever hit)."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    ids_of_person = defaultdict(set)
    for e in events:
        ids = e["identifiers"]
        keys = [f"{k}:{ids[k]}" for k in KINDS if ids[k]]
        if e["event_type"] == "user.identified" and e["attributes"]["previous_anonymous_id"]:
            keys.append(f"anonymous_id:{e['attributes']['previous_anonymous_id']}")
        ids_of_person[_person_index(e["event_id"])].update(keys)
        for key in keys:
            parent[root(key)] = root(keys[0])
    components = defaultdict(set)
    for key in parent:
        components[root(key)].add(key)
    assert sorted(map(sorted, components.values())) == sorted(map(sorted, ids_of_person.values()))
    for keys in components.values():
        for kind, limit in LIMITS.items():
            assert sum(1 for key in keys if key.startswith(f"{kind}:")) <= limit


def test_the_scenario_has_every_kind_of_session_and_decoy():
    s = cross_platform_scenario(T0)
    by_id = {e["event_id"]: e for e in s.events}
    assert {p for _, p in s.dana_sessions} == {"web", "ios", "slack"}
    assert all(event_id in by_id for event_id in (*s.dana_linking_events, s.shared_device_refusing_event,
                                                  s.kiosk_refusing_event))
    slack = by_id["dana-slack-identify"]["identifiers"]
    assert (slack["platform_user_id"], slack["email_sha256"]) == ("T123:U456", s.dana_email_sha256)
    first_web = by_id["dana-web1-start"]["identifiers"]
    assert first_web["anonymous_id"] and not (first_web["platform_user_id"] or first_web["email_sha256"])
    assert {by_id[f"decoy-{w}-start"]["identifiers"]["platform_user_id"] for w in "ab"} == {"0"}


def test_sample_prices_change_one_model_half_way_and_leave_one_unpriced():
    prices = sample_prices(T0, 8)
    models = {p["model"] for p in prices}
    assert models == {m[0] for m in MODELS} - {UNPRICED_MODEL}
    changing = sorted((p for p in prices if p["model"] == CHANGING_PRICE_MODEL and p["token_kind"] == "input"),
                      key=lambda p: p["effective_from"])
    assert [p["usd_per_million"] for p in changing] == [Decimal("0.40"), Decimal("0.50")]
    assert changing[0]["effective_from"] == micros_to_datetime(T0)
    assert changing[1]["effective_from"] == micros_to_datetime(T0 + 4 * DAY + 12 * HOUR + 30 * MINUTE)
