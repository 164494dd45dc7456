"""The raw archive's object layout and line format (pure), and a round trip through a file:// store."""

from __future__ import annotations

import base64

import orjson

from ingest_workers import archive
from ingest_workers.pipeline import RawRecord

ARRIVAL = 1_767_225_600_000_000 + 3 * 3600 * 1_000_000  # 2026-01-01T03:00Z


def records() -> list[RawRecord]:
    good = orjson.dumps({"v": 1, "source": "web-chat", "received_at": ARRIVAL, "payload": {"text": "hé"}})
    nanos = orjson.dumps({"v": 1, "source": "web-chat", "received_at": 1_767_225_600_000_000_000, "payload": {}})
    return [
        RawRecord("shardId-000000000001", "100", good, ARRIVAL),
        RawRecord("shardId-000000000001", "101", b"\xff\xfe not json", ARRIVAL + 1),
        RawRecord("shardId-000000000001", "102", nanos, ARRIVAL + 2),  # review E2: once a ValueError here
        RawRecord("shardId-000000000001", "103", b"  [1, 2]\n", ARRIVAL + 3),
    ]


def test_one_object_per_unit_and_every_location_known_before_parsing():
    recs = records()
    locations = archive.archive_locations(recs, base_uri="s3://bucket/prefix/")
    key = "raw/dt=2026-01-01/hour=03/shard=shardId-000000000001/100-103.jsonl.zst"
    assert locations == [(f"s3://bucket/prefix/{key}", i) for i in range(4)]
    plan = archive.archive_plan(recs, base_uri="s3://bucket/prefix", not_json={"101"})
    assert list(plan.objects) == [key] and plan.locations == locations


def test_lines_keep_each_record_as_sent_and_bytes_that_are_not_json_as_base64():
    recs = records()
    told = archive.archive_plan(recs, base_uri="file:///a", not_json={"101"})
    checked = archive.archive_plan(recs, base_uri="file:///a")  # no pipeline verdict: checked here
    assert told == checked
    lines = [orjson.loads(line) for line in told.objects[archive.archive_unit_key(recs)]]
    assert lines[0] == {"seq": "100", "shard": "shardId-000000000001", "arrival": ARRIVAL,
                        "record": orjson.loads(recs[0].data)}
    assert base64.b64decode(lines[1]["record_b64"]) == b"\xff\xfe not json" and "record" not in lines[1]
    assert lines[2]["record"]["received_at"] == 1_767_225_600_000_000_000   # kept as sent, nothing raised
    assert lines[3]["record"] == [1, 2]


def test_a_unit_round_trips_through_the_store(tmp_path, settings):
    settings.RAW_ARCHIVE_URL = f"file://{tmp_path}"
    recs = records()
    plan = archive.archive_plan(recs, base_uri=settings.RAW_ARCHIVE_URL, not_json={"101"})
    assert archive.archive_write(plan) > 0
    for (uri, offset), record in zip(plan.locations, recs, strict=True):
        line = archive.archive_read_line(uri, offset)
        assert line["seq"] == record.sequence_number
        if "record" in line:
            assert line["record"] == orjson.loads(record.data)
        else:
            assert base64.b64decode(line["record_b64"]) == record.data
    # a retried unit overwrites its object: still one object
    archive.archive_write(plan)
    assert len(list(tmp_path.rglob("*.jsonl.zst"))) == 1


def test_a_reader_fetches_each_object_once(tmp_path, settings):
    # review M5: a re-drive of 500 rows of one unit downloaded and decompressed its object 500 times
    settings.RAW_ARCHIVE_URL = f"file://{tmp_path}"
    recs = records()
    plan = archive.archive_plan(recs, base_uri=settings.RAW_ARCHIVE_URL)
    archive.archive_write(plan)
    reader = archive.ArchiveReader()
    lines = [reader.read_line(uri, offset) for uri, offset in plan.locations * 3]
    assert [line["seq"] for line in lines[:4]] == ["100", "101", "102", "103"]
    assert reader.fetched == 1
