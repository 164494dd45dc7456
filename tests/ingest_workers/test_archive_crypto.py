"""The pure part of the raw archive's per-subject encryption (ingest_workers.archive_crypto)."""

from __future__ import annotations

import os

import orjson
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ingest_workers.archive import archive_line, archive_line_parse
from ingest_workers.archive_crypto import (
    ArchiveRecordShredded,
    LineSealer,
    combined_key,
    event_subjects,
    line_open,
    records_subjects,
)
from ingest_workers.pipeline import RawRecord

RECORD = RawRecord("shardId-000000000001", "4960001", b'{"source":"web-chat","payload":{"text":"my secret"}}',
                   1_772_400_000_000_000)


def _sealer(keys: dict[str, bytes], seq: str = RECORD.sequence_number, suppressed=()) -> LineSealer:
    kids = tuple(sorted(keys))
    return LineSealer({seq: (kids, AESGCM(combined_key(list(keys.items()))))}, suppressed)


def test_an_encrypted_line_hides_the_record_and_opens_to_the_clear_line():
    key = os.urandom(32)
    line = _sealer({"k1": key}).line(RECORD.sequence_number, RECORD.shard_id, RECORD.arrival_micros, RECORD.data,
                                     is_json=True)
    assert b"my secret" not in line and b"web-chat" not in line
    stored = orjson.loads(line)
    assert stored["seq"] == RECORD.sequence_number and stored["kids"] == ["k1"]
    opened = line_open(stored, {"k1": key})
    assert opened == archive_line(RECORD, is_json=True)
    assert archive_line_parse(opened)["record"]["payload"]["text"] == "my secret"


def test_bytes_that_are_not_json_round_trip_as_record_b64():
    raw = RawRecord("s", "7", b"\xff\x00not json", 1)
    key = os.urandom(32)
    line = _sealer({"k": key}, seq="7").line("7", "s", 1, raw.data, is_json=False)
    assert line_open(orjson.loads(line), {"k": key}) == archive_line(raw, is_json=False)


def test_a_line_of_several_subjects_needs_every_key():
    a, b = os.urandom(32), os.urandom(32)
    stored = orjson.loads(_sealer({"ka": a, "kb": b}).line(
        RECORD.sequence_number, RECORD.shard_id, RECORD.arrival_micros, RECORD.data, is_json=True))
    assert archive_line_parse(line_open(stored, {"ka": a, "kb": b}))["record"]["source"] == "web-chat"
    for keys in ({"ka": a, "kb": None}, {"ka": None, "kb": b}, {}):
        with pytest.raises(ArchiveRecordShredded):
            line_open(stored, keys)


def test_a_line_moved_to_another_position_does_not_open():
    key = os.urandom(32)
    stored = orjson.loads(_sealer({"k": key}).line(
        RECORD.sequence_number, RECORD.shard_id, RECORD.arrival_micros, RECORD.data, is_json=True))
    stored["seq"] = "4960002"  # the AAD binds shard and sequence number
    with pytest.raises(ArchiveRecordShredded, match="does not open"):
        line_open(stored, {"k": key})


def test_a_suppressed_record_is_a_line_without_its_record():
    line = _sealer({"k": os.urandom(32)}, suppressed={RECORD.sequence_number}).line(
        RECORD.sequence_number, RECORD.shard_id, RECORD.arrival_micros, RECORD.data, is_json=True)
    stored = orjson.loads(line)
    assert stored == {"seq": RECORD.sequence_number, "shard": RECORD.shard_id, "arrival": RECORD.arrival_micros,
                      "suppressed": True}
    with pytest.raises(ArchiveRecordShredded):
        line_open(stored, {})


def test_the_subjects_of_a_record_are_every_identifier_of_its_events():
    events = [
        {"identifiers": {"anonymous_id": "anon-1", "platform_user_id": "u-1", "tenant_id": "acme",
                         "person_id": None, "email_sha256": None, "device_id": ""},
         "lineage": {"sequence_number": "1"}},
        {"identifiers": {"anonymous_id": "anon-1", "device_id": "dev-9"}, "lineage": {"sequence_number": "1"}},
        {"identifiers": {"tenant_id": "acme"}, "lineage": {"sequence_number": "2"}},
    ]
    assert records_subjects(events) == {"1": ("anonymous_id:anon-1", "device_id:dev-9", "platform_user_id:u-1")}


def _event(seq: str, *, source: str = "slack-9", session: str | None = None, conversation: str | None = None,
           **identifiers: str) -> dict:
    return {"source_id": source, "session_id": session, "conversation_id": conversation,
            "identifiers": {"tenant_id": "T1", "person_id": None, **identifiers}, "lineage": {"sequence_number": seq}}


def test_a_record_without_identifiers_is_keyed_to_its_conversation_not_its_day():
    events = [
        # the user's message and the bot's reply in her Slack DM thread (the reply names nobody)
        _event("1", conversation="D0ALICE:1772.01", platform_user_id="T1:U0ALICE"),
        _event("2", conversation="D0ALICE:1772.01"),
        # an assistant reply in a web session: the session wins over the conversation, as in the warehouse
        _event("3", source="web-17", session="ws-1", conversation="wc-1"),
        # the same conversation id in another source is another conversation
        _event("4", source="api-4", conversation="D0ALICE:1772.01"),
        # a record of two identifier-less events in two conversations: both keys, sorted
        _event("5", conversation="c-b"), _event("5", conversation="c-a"),
        # an identified event and an identifier-less one in one record: only the identifier keys it
        _event("6", conversation="c-x", anonymous_id="anon-6"), _event("6", conversation="c-y"),
        # neither an identifier nor a session or conversation (an empty id is none): the day key
        _event("7"), _event("8", session="", conversation=""),
    ]
    assert records_subjects(events) == {
        "1": ("platform_user_id:T1:U0ALICE",),
        "2": ("conversation:slack-9:conversation:D0ALICE:1772.01",),
        "3": ("conversation:web-17:ws-1",),
        "4": ("conversation:api-4:conversation:D0ALICE:1772.01",),
        "5": ("conversation:slack-9:conversation:c-a", "conversation:slack-9:conversation:c-b"),
        "6": ("anonymous_id:anon-6",),
    }
    # what suppression checks per event (re-drives, replays): the same subjects
    assert [event_subjects(e) for e in events[1:3]] == [["conversation:slack-9:conversation:D0ALICE:1772.01"],
                                                        ["conversation:web-17:ws-1"]]
    assert event_subjects(events[0]) == ["platform_user_id:T1:U0ALICE"] and event_subjects(events[-1]) == []


def test_with_encryption_off_lines_are_clear_but_a_suppressed_record_still_leaves_nothing():
    other = RawRecord("s", "8", b'{"source":"web-chat","payload":{}}', 2)
    sealer = LineSealer({}, {RECORD.sequence_number}, clear=True)
    assert orjson.loads(sealer.line(RECORD.sequence_number, RECORD.shard_id, RECORD.arrival_micros, RECORD.data,
                                    is_json=True)).get("suppressed") is True
    assert sealer.line("8", "s", 2, other.data, is_json=True) == archive_line(other, is_json=True)
