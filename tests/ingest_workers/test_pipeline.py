"""The pure ingest pipeline: raw envelopes in, canonical events and quarantine rows out.

Literal inputs built from the demo presets' samples; no database.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import uuid

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.mapping import NORMALIZER_VERSION, derive_event_id
from contracts.presets import DEMO_SOURCES, preset_load
from ingest_workers.envelope import EnvelopeError, envelope_decode, envelope_encode
from ingest_workers.pipeline import (
    QUARANTINE_ID_NAMESPACE,
    REASON_CODES,
    CompiledVersion,
    ContractIndex,
    QuarantineRow,
    RawRecord,
    SourceRoute,
    batch_results_concat,
    batch_suppress,
    process_batch,
    quarantine_id,
    raw_record,
)

NOW = 1_772_400_060_000_000
RECEIVED = 1_772_400_000_000_000
ARRIVAL = 1_772_400_000_500_000
SHARD = "shardId-000000000003"
STREAM = "raw-events"

PRESETS = {name: preset_load(name) for name in DEMO_SOURCES}


def sample(source: str, event: str, version: int, index: int) -> dict:
    contract = next(c for c in PRESETS[source]["contracts"] if c["subject"] == f"{source}.{event}")
    return copy.deepcopy(contract["versions"][version - 1]["samples"][index])


def source_input(name: str, *, active: bool = True, versions: dict[str, list[int]] | None = None) -> dict:
    """ContractIndex.build input for a preset source; `versions` picks the approved versions per event."""
    preset = PRESETS[name]
    contracts = []
    for c in preset["contracts"]:
        event = c["subject"].split(".", 1)[1]
        wanted = versions.get(event, []) if versions is not None else range(1, len(c["versions"]) + 1)
        contracts.append({
            "subject": c["subject"], "event": event,
            "versions": [{"version": v, "schema": c["versions"][v - 1]["schema"],
                          "mapping": c["versions"][v - 1]["mapping"]} for v in wanted],
        })
    return {"source_id": f"src-{name}", "name": name, "platform": preset["platform"],
            "product": preset.get("product"), "active": active, "contracts": contracts}


def all_sources() -> list[dict]:
    return [source_input(name) for name in DEMO_SOURCES] + [
        {**source_input("web-chat"), "source_id": "src-retired", "name": "retired-widget", "active": False},
        {"source_id": "src-empty", "name": "no-contracts", "platform": "web", "product": None, "active": True,
         "contracts": []},
    ]


@pytest.fixture(scope="module")
def index() -> ContractIndex:
    return ContractIndex.build(all_sources())


def envelope(source: str, payload, *, contract: str | None = None, received_at: int = RECEIVED) -> bytes:
    return envelope_encode(source=source, payload=payload, received_at=received_at, request_id="req-1",
                           channel="batch", contract=contract)


def records_of(*datas: bytes, start: int = 100) -> list[RawRecord]:
    return [RawRecord(SHARD, str(start + i), d, ARRIVAL + i) for i, d in enumerate(datas)]


def run(index: ContractIndex, *datas: bytes, batch_id: str = "batch-1", now: int = NOW, start: int = 100):
    recs = records_of(*datas, start=start)
    locations = [(f"file:///archive/{SHARD}/{start}.jsonl.zst", 512 * i) for i in range(len(recs))]
    return process_batch(recs, index, stream=STREAM, batch_id=batch_id, archive_locations=locations,
                         now_micros=now)


def only_row(result) -> QuarantineRow:
    assert result.events == [] and len(result.quarantine) == 1
    return result.quarantine[0]


def assert_accounted(result) -> None:
    """Every record has exactly one outcome and the counts agree."""
    assert result.records == result.mapped_records + result.skipped + len(result.quarantine)
    assert sum(c.records for c in result.per_source.values()) == result.records
    assert sum(c.events for c in result.per_source.values()) == len(result.events)
    assert sum(c.quarantined for c in result.per_source.values()) == len(result.quarantine)
    assert sum(c.skipped for c in result.per_source.values()) == result.skipped
    assert len(result.event_ids) == len(result.events)
    assert orjson.loads(result.landing_json()) == result.events
    assert len(orjson.loads(result.quarantine_json())) == len(result.quarantine)
    assert {r.reason_code for r in result.quarantine} <= set(REASON_CODES)


# ---------------------------------------------------------------------------------------------
# The happy path
# ---------------------------------------------------------------------------------------------


def test_a_raw_record_built_the_consumers_fast_way_is_the_same_frozen_record():
    import dataclasses

    fast = raw_record(SHARD, "49650000000000000001", b'{"a":1}', ARRIVAL)
    usual = RawRecord(SHARD, "49650000000000000001", b'{"a":1}', ARRIVAL)
    assert fast == usual and hash(fast) == hash(usual) and repr(fast) == repr(usual)
    assert fast != raw_record(SHARD, "49650000000000000002", b'{"a":1}', ARRIVAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.data = b"{}"  # type: ignore[misc]


def test_every_preset_sample_becomes_canonical_events(index):
    datas, expected = [], 0
    for name in DEMO_SOURCES:
        for c in PRESETS[name]["contracts"]:
            for v in c["versions"]:
                for s in v["samples"]:
                    datas.append(envelope(name, s))
                    expected += 1
    result = run(index, *datas)
    assert result.quarantine == []
    assert result.records == expected
    assert result.mapped_records + result.skipped == expected
    assert len(result.events) >= result.mapped_records
    assert_accounted(result)
    for ev in result.events:
        assert ev["ingested_at"] == NOW and ev["received_at"] == RECEIVED
        assert ev["lineage"]["batch_id"] == "batch-1" and ev["lineage"]["stream"] == STREAM


def test_lineage_and_envelope_fields_are_filled(index):
    payload = sample("web-chat", "chat_event", 2, 1)
    result = run(index, envelope("web-chat", payload, received_at=RECEIVED + 7), start=4200)
    (ev,) = result.events
    assert ev["lineage"] == {
        "raw_archive_uri": f"file:///archive/{SHARD}/4200.jsonl.zst",
        "raw_offset": 0,
        "stream": STREAM,
        "shard_id": SHARD,
        "sequence_number": "4200",
        "batch_id": "batch-1",
        "contract_version": 2,
        "normalizer_version": NORMALIZER_VERSION,
    }
    assert ev["event_id"] == derive_event_id("web-chat", "message.sent", [payload["messageId"]])
    assert result.event_ids == [ev["event_id"]]
    assert ev["source_id"] == "src-web-chat" and ev["platform"] == "web"
    assert ev["product"] == "storefront-assistant"
    assert ev["contract"] == {"name": "web-chat.chat_event", "version": 2}
    assert ev["received_at"] == RECEIVED + 7 and ev["ingested_at"] == NOW
    assert ev["attributes"]["content"] == payload["message"]["text"]


def test_each_record_keeps_its_own_offset_and_received_at(index):
    a, b = sample("ios-app", "app_event", 1, 1), sample("ios-app", "app_event", 1, 2)
    result = run(index, envelope("ios-app", a, received_at=RECEIVED + 1),
                 envelope("ios-app", b, received_at=RECEIVED + 2))
    assert [e["received_at"] for e in result.events] == [RECEIVED + 1, RECEIVED + 2]
    assert [e["lineage"]["raw_offset"] for e in result.events] == [0, 512]
    assert [e["lineage"]["sequence_number"] for e in result.events] == ["100", "101"]


def test_one_payload_can_make_several_events(index):
    result = run(index, envelope("web-chat", sample("web-chat", "chat_event", 2, 0)))  # chat_opened
    assert [e["event_type"] for e in result.events] == ["session.started", "conversation.started"]
    assert result.mapped_records == 1 and result.in_batch_duplicates == 0  # same key, different types
    assert len(set(result.event_ids)) == 2
    assert all(e["lineage"]["sequence_number"] == "100" for e in result.events)


def test_landing_json_is_one_array_of_the_events(index):
    result = run(index, envelope("slack-bot", sample("slack-bot", "message_event", 1, 0)),
                 envelope("voice-assistant", sample("voice-assistant", "alexa_request", 1, 1)))
    landed = orjson.loads(result.landing_json())
    assert isinstance(landed, list) and landed == result.events and len(landed) == 2
    result.events[0]["identifiers"]["person_id"] = "p-1"
    assert orjson.loads(result.landing_json(refresh=True))[0]["identifiers"]["person_id"] == "p-1"


# ---------------------------------------------------------------------------------------------
# Every reason code
# ---------------------------------------------------------------------------------------------


def test_undecodable_text_keeps_the_raw_text(index):
    row = only_row(run(index, b"source=web-chat&payload=hello"))
    assert row.reason_code == "undecodable" and row.error_path is None
    assert row.payload == {"raw_text": "source=web-chat&payload=hello"}
    assert row.source is None and row.source_id is None and row.contract_subject is None
    assert row.received_at == ARRIVAL  # no envelope: the stream's arrival time


def test_undecodable_binary_keeps_base64(index):
    result = run(index, b"\xff\xfe\x00garbage")
    row = only_row(result)
    assert row.reason_code == "undecodable"
    assert row.payload == {"raw_base64": "//4AZ2FyYmFnZQ=="}
    assert result.per_source["(none)"].quarantined == 1


@pytest.mark.parametrize(
    "record, why",
    [
        (b"[1, 2, 3]", "not a JSON object"),
        (b'{"received_at": 1772400000000000, "payload": {}}', "'source'"),
        (b'{"source": "web-chat", "received_at": "yesterday", "payload": {}}', "received_at"),
        (b'{"source": "web-chat", "received_at": true, "payload": {}}', "received_at"),
        (b'{"source": "web-chat", "received_at": 1772400000000000, "payload": [1]}', "payload"),
    ],
)
def test_invalid_envelope_keeps_the_decoded_record(index, record, why):
    row = only_row(run(index, record))
    assert row.reason_code == "invalid_envelope" and why in row.reason_detail
    assert row.payload == orjson.loads(record)


def test_oversize_payload(index):
    payload = sample("web-chat", "chat_event", 2, 1)
    payload["message"]["text"] = "x" * (70 * 1024)
    row = only_row(run(index, envelope("web-chat", payload)))
    assert row.reason_code == "oversize" and row.source == "web-chat"
    assert "65,536" in row.reason_detail
    assert row.received_at == RECEIVED


def test_a_large_record_under_the_payload_limit_is_fine(index):
    payload = sample("web-chat", "chat_event", 2, 1)
    payload["message"]["text"] = "x" * (60 * 1024)
    result = run(index, envelope("web-chat", payload))
    assert result.quarantine == [] and len(result.events) == 1


def test_unknown_source(index):
    result = run(index, envelope("web-chatt", sample("web-chat", "chat_event", 2, 1)))
    row = only_row(result)
    assert row.reason_code == "unknown_source" and row.source == "web-chatt" and row.source_id is None
    assert "web-chatt" in row.reason_detail
    assert result.per_source["web-chatt"].reasons == {"unknown_source": 1}


def test_disabled_source(index):
    row = only_row(run(index, envelope("retired-widget", sample("web-chat", "chat_event", 2, 1))))
    assert row.reason_code == "source_disabled" and row.source_id == "src-retired"


def test_source_without_an_approved_contract(index):
    row = only_row(run(index, envelope("no-contracts", {"hello": "world"})))
    assert row.reason_code == "no_approved_contract" and row.source_id == "src-empty"


def test_envelope_names_a_contract_the_source_does_not_have(index):
    row = only_row(run(index, envelope("llm-gateway", sample("llm-gateway", "llm_call", 1, 0), contract="embeddings")))
    assert row.reason_code == "no_approved_contract"
    assert row.contract_subject == "llm-gateway.embeddings"
    assert "llm_call" in row.reason_detail and "tool_call" in row.reason_detail


def test_schema_violation_points_at_the_first_error(index):
    payload = sample("web-chat", "chat_event", 2, 1)
    payload["type"] = "mesage"
    del payload["sessionId"]
    row = only_row(run(index, envelope("web-chat", payload)))
    assert row.reason_code == "schema_violation"
    assert row.error_path == "/type"
    assert row.contract_subject == "web-chat.chat_event" and row.contract_version == 2
    assert '"mesage" is not a symbol' in row.reason_detail and 'did you mean "message"' in row.reason_detail
    assert "/sessionId: required field is missing" in row.reason_detail
    assert row.reason_detail.startswith("2 schema errors against web-chat.chat_event v2")
    assert "older approved versions 1 reject it too" in row.reason_detail
    assert row.payload == payload


def test_schema_violation_lists_at_most_fifty_errors(index):
    payload = sample("android-app", "app_event", 1, 1)
    payload["deviceInfo"] = 5
    payload["id"] = 1
    payload["name"] = 2
    for k in [k for k in payload if k not in ("deviceInfo", "id", "name")]:
        payload[k] = {"nope": list(range(3))}
    row = only_row(run(index, envelope("android-app", payload)))
    assert row.reason_code == "schema_violation" and row.error_path == "/id"
    assert row.reason_detail.count("; ") <= 50


def test_mapping_failure_keeps_the_payload_path(index):
    payload = sample("web-chat", "chat_event", 2, 1)
    payload["timestamp"] = "yesterday"  # a string, as the schema says, but not a timestamp
    row = only_row(run(index, envelope("web-chat", payload)))
    assert row.reason_code == "mapping_failure"
    assert row.error_path == "/timestamp"
    assert "not an ISO-8601 timestamp" in row.reason_detail
    assert row.contract_subject == "web-chat.chat_event" and row.contract_version == 2


def test_a_payload_the_mapping_skips_on_purpose_is_counted_not_quarantined(index):
    edited = sample("slack-bot", "message_event", 1, 0)
    edited["event"]["subtype"] = "message_changed"
    plain = sample("slack-bot", "message_event", 1, 0)
    result = run(index, envelope("slack-bot", edited), envelope("slack-bot", plain))
    assert result.skipped == 1 and result.quarantine == [] and len(result.events) == 1
    assert result.per_source["slack-bot"].skipped == 1
    assert_accounted(result)


def test_events_that_cannot_be_serialized_are_quarantined_not_the_batch(index):
    deep: object = "bottom"
    for _ in range(300):  # orjson reads 1,024 levels but writes only 255
        deep = [deep]
    payload = sample("web-chat", "chat_event", 2, 1)
    payload["debug"] = deep  # an undeclared field: allowed, and kept in platform_metadata
    good = sample("web-chat", "chat_event", 2, 2)
    deep_record = json.dumps({"source": "web-chat", "received_at": RECEIVED, "payload": payload}).encode()
    result = run(index, envelope("web-chat", good), deep_record, envelope("web-chat", good))
    (row,) = result.quarantine
    assert row.reason_code == "mapping_failure" and "cannot be serialized" in row.reason_detail
    assert row.sequence_number == "101" and row.contract_version == 2
    assert set(row.payload) == {"raw_text"}  # the decoded payload cannot be written either
    assert len(result.events) == 2 and result.in_batch_duplicates == 1
    assert result.per_source["web-chat"].events == 2 and result.per_source["web-chat"].duplicates == 1
    assert_accounted(result)


def _exploding_index() -> ContractIndex:
    base = ContractIndex.build([source_input("web-chat")])
    good = base.route("web-chat").contracts["chat_event"][0]

    def explode(payload, ctx):
        raise ZeroDivisionError("division by zero")

    broken = CompiledVersion(good.subject, good.event, good.version, good.validator, explode)
    route = SourceRoute("src-web-chat", "web-chat", "web", None, True, {"chat_event": (broken,)})
    return ContractIndex({"web-chat": route}, "test")


def test_an_unexpected_exception_becomes_an_internal_error_row():
    result = run(_exploding_index(), envelope("web-chat", sample("web-chat", "chat_event", 2, 1)), b"nope")
    assert [r.reason_code for r in result.quarantine] == ["internal_error", "undecodable"]
    assert result.quarantine[0].reason_detail == "ZeroDivisionError: division by zero"
    assert_accounted(result)


def test_quarantine_json_has_the_warehouse_columns(index):
    result = run(index, b"\x00", envelope("nobody", {}))
    rows = orjson.loads(result.quarantine_json())
    assert list(rows[0]) == [
        "quarantine_id", "source", "source_id", "contract_subject", "contract_version", "reason_code",
        "reason_detail", "error_path", "raw_archive_uri", "raw_offset", "stream", "shard_id", "sequence_number",
        "batch_id", "received_at", "quarantined_at", "payload", "status",
    ]
    assert rows[1]["raw_offset"] == 512 and rows[1]["quarantined_at"] == NOW and rows[1]["status"] == "new"
    assert rows[1]["payload"] == {}


def test_quarantine_json_survives_a_row_orjson_cannot_write(index):
    result = run(index, b"junk")
    result.quarantine[0].reason_detail = "bad \ud800 text"  # a lone surrogate: not UTF-8
    (row,) = orjson.loads(result.quarantine_json())
    assert row["reason_detail"] == "bad ? text" and row["quarantine_id"] == result.quarantine[0].quarantine_id


# ---------------------------------------------------------------------------------------------
# Choosing the contract version
# ---------------------------------------------------------------------------------------------


def test_falls_back_to_an_older_approved_version(index):
    payload = sample("web-chat", "chat_event", 1, 1)
    payload["experiment"] = 7  # v2 declared `experiment` as a string; v1 ignores the extra field
    result = run(index, envelope("web-chat", payload))
    (ev,) = result.events
    assert ev["contract"] == {"name": "web-chat.chat_event", "version": 1}
    assert ev["lineage"]["contract_version"] == 1
    assert ev["platform_metadata"]["experiment"] == 7


def test_without_the_older_version_approved_the_same_payload_is_quarantined():
    index = ContractIndex.build([source_input("web-chat", versions={"chat_event": [2]})])
    payload = sample("web-chat", "chat_event", 1, 1)
    payload["experiment"] = 7
    row = only_row(run(index, envelope("web-chat", payload)))
    assert row.reason_code == "schema_violation" and row.error_path == "/experiment"
    assert "older approved" not in row.reason_detail


def test_newest_version_wins_when_both_accept(index):
    (ev,) = run(index, envelope("llm-gateway", sample("llm-gateway", "llm_call", 1, 0))).events
    assert ev["contract"]["version"] == 2


@pytest.mark.parametrize("contract", [None, "llm_call", "llm-gateway.llm_call"])
def test_multi_contract_source_llm_calls(index, contract):
    (ev,) = run(index, envelope("llm-gateway", sample("llm-gateway", "llm_call", 2, 0), contract=contract)).events
    assert ev["contract"]["name"] == "llm-gateway.llm_call" and ev["event_type"] == "message.sent"


@pytest.mark.parametrize("contract", [None, "tool_call", "llm-gateway.tool_call"])
def test_multi_contract_source_tool_calls(index, contract):
    payload = sample("llm-gateway", "tool_call", 1, 1)
    (ev,) = run(index, envelope("llm-gateway", payload, contract=contract)).events
    assert ev["contract"] == {"name": "llm-gateway.tool_call", "version": 1}
    assert ev["event_type"] == "tool_call.completed"
    assert ev["event_id"] == derive_event_id(
        "llm-gateway", "tool_call.completed", [payload["call_id"], payload["tool_call_id"]]
    )


def test_a_named_contract_is_not_second_guessed(index):
    row = only_row(run(index, envelope("llm-gateway", sample("llm-gateway", "tool_call", 1, 0), contract="llm_call")))
    assert row.reason_code == "schema_violation"
    assert row.contract_subject == "llm-gateway.llm_call" and row.contract_version == 2


def test_a_payload_matching_no_contract_is_reported_against_the_closest(index):
    payload = sample("llm-gateway", "tool_call", 1, 0)
    payload["phase"] = "finished"  # an enum typo: otherwise a fine tool call
    row = only_row(run(index, envelope("llm-gateway", payload)))
    assert row.reason_code == "schema_violation"
    assert row.contract_subject == "llm-gateway.tool_call" and row.error_path == "/phase"
    assert row.reason_detail.startswith("Matches none of the source's contracts (closest: llm-gateway.tool_call")


# ---------------------------------------------------------------------------------------------
# Duplicates and stable ids
# ---------------------------------------------------------------------------------------------


def test_in_batch_duplicates_are_counted_and_every_copy_kept(index):
    a = envelope("android-app", sample("android-app", "app_event", 1, 1))
    b = envelope("android-app", sample("android-app", "app_event", 1, 2))
    redelivered = envelope("android-app", sample("android-app", "app_event", 1, 1), received_at=RECEIVED + 99)
    result = run(index, a, b, a, redelivered)
    assert len(result.events) == 4 and result.in_batch_duplicates == 2
    assert result.event_ids[0] == result.event_ids[2] == result.event_ids[3] != result.event_ids[1]
    assert [e["lineage"]["sequence_number"] for e in result.events] == ["100", "101", "102", "103"]
    assert result.per_source["android-app"].duplicates == 2
    assert_accounted(result)


def _mixed_unit(n: int) -> list[bytes]:
    """``n`` records cycling through every preset sample, a duplicate, a broken record and an unknown source."""
    samples = [envelope(name, s) for name in DEMO_SOURCES for c in PRESETS[name]["contracts"]
               for v in c["versions"] for s in v["samples"]]
    odd = [b"\x00junk", envelope("nobody", {}), samples[0]]
    pool = samples + odd
    return [pool[i % len(pool)] for i in range(n)]


def _in_batches(index, recs, size: int):
    locations = [("file:///archive/o.jsonl.zst", i) for i in range(len(recs))]
    return [process_batch(recs[a:a + size], index, stream=STREAM, batch_id="u", archive_locations=locations[a:a + size],
                          now_micros=NOW) for a in range(0, len(recs), size)]


def test_a_unit_of_several_batches_counts_what_one_batch_of_the_same_records_counts(index):
    recs = records_of(*_mixed_unit(53))
    (whole,) = _in_batches(index, recs, 53)
    parts = _in_batches(index, recs, 10)
    split = batch_results_concat(parts)
    assert len(parts) == 6
    assert split.events == whole.events and split.event_ids == whole.event_ids
    assert [r.quarantine_id for r in split.quarantine] == [r.quarantine_id for r in whole.quarantine]
    assert (split.records, split.mapped_records, split.skipped) == (whole.records, whole.mapped_records, whole.skipped)
    for name, counts in whole.per_source.items():
        got = split.per_source[name]
        assert (got.records, got.events, got.quarantined, got.reasons) == (
            counts.records, counts.events, counts.quarantined, counts.reasons), name
        # per contract version: the same records and events (duplicates only within each batch)
        assert {k: v[:2] for k, v in got.versions.items()} == {k: v[:2] for k, v in counts.versions.items()}
    # the batches' own landing arrays together are the whole batch's array
    assert [ev for part in parts for ev in orjson.loads(part.landing_json())] == orjson.loads(whole.landing_json())
    assert split.landing_json() == whole.landing_json()
    assert_accounted(split)


def test_copies_of_one_event_in_two_batches_of_a_unit_are_events_not_in_batch_duplicates(index):
    a = envelope("android-app", sample("android-app", "app_event", 1, 1))
    b = envelope("android-app", sample("android-app", "app_event", 1, 2))
    split = batch_results_concat(_in_batches(index, records_of(a, b, a, b, a), 2))
    # batches [a, b] [a, b] [a]: no batch holds two copies; the merge deduplicates them, as across units
    assert len(split.events) == 5 and split.in_batch_duplicates == 0
    assert split.per_source["android-app"].duplicates == 0 and split.per_source["android-app"].events == 5


def test_suppressing_records_of_one_batch_of_a_unit_leaves_the_other_batches_counts_alone(index):
    recs = records_of(*_mixed_unit(25))
    parts = _in_batches(index, recs, 10)
    gone = {ev["lineage"]["sequence_number"] for ev in parts[1].events[:4]}
    assert len(gone) >= 3
    source = parts[1].events[0]["source_id"].removeprefix("src-")
    kept = batch_suppress(parts[1], {seq: source for seq in gone})
    unit = batch_results_concat([parts[0], kept, parts[2]])
    assert unit.events == [ev for ev in batch_results_concat(parts).events
                           if ev["lineage"]["sequence_number"] not in gone]
    assert unit.per_source[source].suppressed == len(gone)
    assert unit.records == 25 == unit.mapped_records + len(gone) + unit.skipped + len(unit.quarantine)


def test_quarantine_ids_are_stable_across_reprocessing(index):
    datas = [b"\x00junk", envelope("nobody", {}), envelope("web-chat", {"type": "message"})]
    first = run(index, *datas, batch_id="b-1", now=NOW)
    retry = run(index, *datas, batch_id="b-2", now=NOW + 60_000_000)
    assert [r.quarantine_id for r in first.quarantine] == [r.quarantine_id for r in retry.quarantine]
    assert len({r.quarantine_id for r in first.quarantine}) == 3
    digest = hashlib.sha256(b"\x00junk").hexdigest()
    assert first.quarantine[0].quarantine_id == str(uuid.uuid5(QUARANTINE_ID_NAMESPACE, f"undecodable/{digest}"))
    assert quarantine_id("undecodable", digest) != quarantine_id("oversize", digest)
    assert QUARANTINE_ID_NAMESPACE == uuid.uuid5(uuid.NAMESPACE_URL, "https://chatorbit.io/ns/quarantine-id")


def test_copies_of_one_payload_share_one_quarantine_id_and_other_payloads_do_not(index):
    # hostile-input sweep D6: the same invalid events sent again (a client retry, a put written twice)
    # made one quarantine row per copy
    bad = {"type": "message", "role": "robot"}
    first = envelope("web-chat", bad, received_at=RECEIVED)
    again = envelope("web-chat", dict(reversed(list(bad.items()))), received_at=RECEIVED + 5_000_000)  # keys reordered
    other = envelope("web-chat", {**bad, "role": "alien"}, received_at=RECEIVED)
    elsewhere = envelope("nobody", bad, received_at=RECEIVED)
    result = run(index, first, again, other, elsewhere)
    ids = [row.quarantine_id for row in result.quarantine]
    assert len(ids) == 4 and ids[0] == ids[1]
    assert len({ids[0], ids[2], ids[3]}) == 3


def test_event_ids_are_stable_across_reprocessing(index):
    pairs = (("ios-app", "app_event"), ("voice-assistant", "alexa_request"))
    datas = [envelope(n, sample(n, e, 1, 0)) for n, e in pairs]
    assert run(index, *datas, batch_id="b-1").event_ids == run(index, *datas, batch_id="b-9", now=NOW + 1).event_ids


def test_a_poison_record_does_not_stop_the_batch(index):
    good = [envelope("web-chat", sample("web-chat", "chat_event", 2, i)) for i in (1, 2)]
    result = run(index, good[0], b"{", envelope("web-chat", {"boom": True}), good[1])
    assert [r.sequence_number for r in result.quarantine] == ["101", "102"]
    assert [e["lineage"]["sequence_number"] for e in result.events] == ["100", "103"]
    assert_accounted(result)


# ---------------------------------------------------------------------------------------------
# The index and the batch contract
# ---------------------------------------------------------------------------------------------


def test_index_routes_by_name_and_compiles_each_version_once(index):
    route = index.route("llm-gateway")
    assert route.source_id == "src-llm-gateway" and route.platform == "api" and route.active
    assert [cv.version for cv in route.contracts["llm_call"]] == [2, 1]  # newest first
    assert [vs[0].subject for vs in route.ordered] == ["llm-gateway.llm_call", "llm-gateway.tool_call"]
    assert index.route("nope") is None
    assert index.route("retired-widget").active is False
    # the retired widget shares web-chat's schemas and mappings: compiled once, shared
    assert index.route("retired-widget").contracts["chat_event"][0].mapping is route_mapping(index, "web-chat")


def route_mapping(index, name):
    return index.route(name).contracts["chat_event"][0].mapping


def test_rebuild_reuses_compiled_versions_and_the_fingerprint_tracks_approvals(index):
    sources = all_sources()
    again = ContractIndex.build(sources, previous=index)
    assert again.fingerprint == index.fingerprint == ContractIndex.fingerprint_of(sources)
    assert route_mapping(again, "web-chat") is route_mapping(index, "web-chat")
    fewer = [source_input("web-chat", versions={"chat_event": [1]})]
    assert ContractIndex.fingerprint_of(fewer) != index.fingerprint
    assert ContractIndex.build(fewer).route("web-chat").contracts["chat_event"][0].version == 1


def test_index_accepts_schema_and_mapping_as_json_text():
    src = source_input("voice-assistant")
    for v in src["contracts"][0]["versions"]:
        v["schema"] = orjson.dumps(v["schema"]).decode()
        v["mapping"] = orjson.dumps(v["mapping"]).decode()
    index = ContractIndex.build([src])
    result = run(index, envelope("voice-assistant", sample("voice-assistant", "alexa_request", 1, 0)))
    assert result.quarantine == [] and result.events[0]["event_type"] == "session.started"


def test_a_version_that_does_not_compile_is_left_out_and_reported():
    src = source_input("web-chat")
    src["contracts"][0]["versions"][1]["mapping"] = {"events": [{"type": "message.sentt"}]}
    index = ContractIndex.build([src])
    assert len(index.build_errors) == 1 and "web-chat.chat_event v2" in index.build_errors[0]
    assert [cv.version for cv in index.route("web-chat").contracts["chat_event"]] == [1]


def test_archive_locations_must_match_the_records(index):
    with pytest.raises(ValueError, match="archive locations"):
        process_batch(records_of(b"{}"), index, stream=STREAM, batch_id="b", archive_locations=[], now_micros=NOW)


@pytest.mark.parametrize("enabled", [True, False])
def test_the_garbage_collector_state_is_restored(index, enabled):
    (gc.enable if enabled else gc.disable)()
    try:
        run(index, envelope("web-chat", sample("web-chat", "chat_event", 2, 1)), b"junk")
        assert gc.isenabled() is enabled
    finally:
        gc.enable()


# ---------------------------------------------------------------------------------------------
# Hostile records: never raise, exactly one outcome per record
# ---------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
HYPO = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@HYPO
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=8))
def test_random_bytes_never_raise(index, blobs):
    result = run(index, *blobs)
    assert_accounted(result)


@HYPO
@given(st.lists(json_values, min_size=1, max_size=6))
def test_random_json_records_never_raise(index, values):
    result = run(index, *[orjson.dumps(v) for v in values])
    assert_accounted(result)
    assert result.events == []  # none of these can be an envelope around a valid payload


@HYPO
@given(
    st.lists(
        st.tuples(
            st.sampled_from(DEMO_SOURCES + ("nobody", "retired-widget", "no-contracts")),
            st.integers(min_value=0, max_value=5),
            st.one_of(st.none(), st.sampled_from(["llm_call", "tool_call", "chat_event", "bogus", ""])),
            st.one_of(st.none(), st.tuples(st.text(max_size=10), json_values)),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_random_envelopes_around_real_and_mangled_payloads_never_raise(index, specs):
    datas = []
    for name, k, contract, mutation in specs:
        preset = PRESETS.get(name) or PRESETS["web-chat"]
        samples = [s for c in preset["contracts"] for v in c["versions"] for s in v["samples"]]
        payload = copy.deepcopy(samples[k % len(samples)])
        if mutation is not None:
            key = mutation[0] or next(iter(payload))
            payload[key] = mutation[1]
        datas.append(envelope(name, payload, contract=contract))
    result = run(index, *datas)
    assert_accounted(result)


@HYPO
@given(st.dictionaries(st.sampled_from(["source", "received_at", "payload", "contract", "channel", "v"]),
                       json_values, max_size=6))
def test_envelope_reasons_agree_with_envelope_decode(index, record):
    data = orjson.dumps(record)
    result = run(index, data)
    assert_accounted(result)
    try:
        envelope_decode(data)
    except EnvelopeError as e:
        assert [r.reason_code for r in result.quarantine] == [e.reason]
    else:
        assert all(r.reason_code not in ("undecodable", "invalid_envelope") for r in result.quarantine)


@pytest.mark.parametrize("depth", [100, 254, 256, 600, 1023, 1100])
@pytest.mark.parametrize("where", ["record", "payload", "extra_field", "mapped_field"])
def test_huge_nesting_never_raises(index, depth, where):
    deep_list = b"[" * depth + b"]" * depth
    deep_obj = b'{"a":' * depth + b"1" + b"}" * depth
    base = sample("web-chat", "chat_event", 2, 1)
    datas = []
    for deep in (deep_list, deep_obj):
        if where == "record":
            datas.append(deep)
            continue
        head = orjson.dumps({"v": 1, "source": "web-chat", "received_at": RECEIVED})[:-1]
        if where == "payload":
            payload = deep
        else:
            key = "debug" if where == "extra_field" else "message"
            p = orjson.dumps({k: v for k, v in base.items() if k != key})
            payload = p[:-1] + b',"' + key.encode() + b'":' + deep + b"}"
        datas.append(head + b',"payload":' + payload + b"}")
    result = run(index, *datas, envelope("web-chat", base))
    assert_accounted(result)
    assert result.records == 3 and result.events[-1]["lineage"]["sequence_number"] == "102"


@HYPO
@given(st.integers(min_value=2**63, max_value=2**80) | st.integers(min_value=-(2**80), max_value=-(2**63) - 1))
def test_numbers_beyond_64_bits_never_raise(index, big):
    text = orjson.dumps(sample("ios-app", "app_event", 1, 1))
    text = text.replace(b'"client_ts_ms":', b'"client_ts_ms":' + str(big).encode() + b',"was":', 1)
    data = envelope("ios-app", {}).replace(b'"payload":{}', b'"payload":' + text)
    result = run(index, data)
    assert_accounted(result)
    assert result.quarantine[0].reason_code == "schema_violation"  # a long holds 64 bits


def direct_record(source: str, payload_json: bytes) -> bytes:
    """A record as a backend service writes it straight to the stream (channel "direct")."""
    return (b'{"v":1,"source":"' + source.encode() + b'","received_at":' + str(RECEIVED).encode()
            + b',"request_id":"svc-1","channel":"direct","payload":' + payload_json + b"}")


def test_a_direct_record_with_an_integer_beyond_64_bits_is_quarantined_not_rounded(index):
    # hostile-input sweep D8: orjson reads 18446744073709551616 as the float 1.8446744073709552e+19
    payload = orjson.dumps(sample("web-chat", "chat_event", 2, 1))
    big = payload[:-1] + b',"big":18446744073709551616}'
    small = payload[:-1] + b',"nested":{"n":[1,-9223372036854775809]}}'
    fine = payload[:-1] + b',"big":18446744073709551615,"text":"123456789012345678901234567890"}'
    result = run(index, direct_record("web-chat", big), direct_record("web-chat", small),
                 direct_record("web-chat", fine))
    assert_accounted(result)
    assert [(r.reason_code, r.error_path, r.sequence_number) for r in result.quarantine] == [
        ("number_out_of_range", "/big", "100"), ("number_out_of_range", "/nested/n/1", "101")]
    assert "outside the 64-bit range" in result.quarantine[0].reason_detail
    (event,) = result.events
    assert event["platform_metadata"]["big"] == 18446744073709551615  # exact, not a float
    assert orjson.loads(result.landing_json())[0]["platform_metadata"]["big"] == 18446744073709551615


def test_a_redrive_of_such_a_record_sees_the_exact_number_again(index):
    # the quarantine path and the worker agree: the stored payload and the archived line keep the digits,
    # so a re-drive is refused for the same reason instead of landing the rounded float
    from ingest_workers.archive import archive_line, archive_line_parse
    from ingest_workers.redrive import _line_bytes, _stored_bytes

    payload = orjson.dumps(sample("web-chat", "chat_event", 2, 1))[:-1] + b',"big":18446744073709551616}'
    record = direct_record("web-chat", payload)
    (row,) = run(index, record).quarantine
    assert "18446744073709551616" in row.payload["raw_text"]
    stored = _stored_bytes({"payload": row.payload, "source": "web-chat", "reason_code": row.reason_code},
                           RECEIVED)
    archived = _line_bytes(archive_line_parse(archive_line(records_of(record)[0], is_json=True)))
    for again in (stored, archived):
        assert b"18446744073709551616" in again
        (row_again,) = run(index, again).quarantine
        assert (row_again.reason_code, row_again.error_path) == ("number_out_of_range", "/big")
