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


def test_with_encryption_off_lines_are_clear_but_a_suppressed_record_still_leaves_nothing():
    other = RawRecord("s", "8", b'{"source":"web-chat","payload":{}}', 2)
    sealer = LineSealer({}, {RECORD.sequence_number}, clear=True)
    assert orjson.loads(sealer.line(RECORD.sequence_number, RECORD.shard_id, RECORD.arrival_micros, RECORD.data,
                                    is_json=True)).get("suppressed") is True
    assert sealer.line("8", "s", 2, other.data, is_json=True) == archive_line(other, is_json=True)
