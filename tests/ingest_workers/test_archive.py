"""The raw archive: objects per shard rolled by age or size on rules the records themselves decide
(pure), the line format, and create-only writes through a file:// store and moto's S3."""

from __future__ import annotations

import base64

import orjson
import pytest

from ingest_workers import archive
from ingest_workers.pipeline import RawRecord

ARRIVAL = 1_767_225_600_000_000 + 3 * 3600 * 1_000_000  # 2026-01-01T03:00Z
SHARD = "shardId-000000000001"


def records() -> list[RawRecord]:
    good = orjson.dumps({"v": 1, "source": "web-chat", "received_at": ARRIVAL, "payload": {"text": "hé"}})
    nanos = orjson.dumps({"v": 1, "source": "web-chat", "received_at": 1_767_225_600_000_000_000, "payload": {}})
    return [
        RawRecord(SHARD, "100", good, ARRIVAL),
        RawRecord(SHARD, "101", b"\xff\xfe not json", ARRIVAL + 1),
        RawRecord(SHARD, "102", nanos, ARRIVAL + 2),  # review E2: once a ValueError here
        RawRecord(SHARD, "103", b"  [1, 2]\n", ARRIVAL + 3),
    ]


def stream_of(n: int, *, seconds_apart: float, size: int = 100, start: int = 1000) -> list[RawRecord]:
    return [RawRecord(SHARD, str(start + i), b'{"x":"' + b"a" * size + b'"}',
                      ARRIVAL + int(i * seconds_apart * 1_000_000)) for i in range(n)]


def shard_archive(*, roll_seconds=60.0, roll_bytes=1 << 30, stored=None):
    stored = stored if stored is not None else {}
    return archive.ShardArchive(base_uri="s3://bucket/prefix/", roll_seconds=roll_seconds, roll_bytes=roll_bytes,
                                existing=stored.get)


def run_units(arch, recs, unit_sizes, not_json=None):
    """Place, append and take the sealed objects unit by unit, as ShardReader does."""
    locations, sealed, start = [], [], 0
    for size in unit_sizes:
        unit = recs[start:start + size]
        start += size
        locations += arch.place(unit)
        arch.append(not_json)
        sealed += arch.take_sealed()
    return locations, sealed


def test_objects_roll_where_a_record_arrives_in_a_later_window():
    recs = stream_of(10, seconds_apart=25)  # windows of 60 s: records 0-2 | 3-4 | 5-7 | 8-9 (from 03:00:00)
    arch = shard_archive(roll_seconds=60)
    locations, sealed = run_units(arch, recs, [4, 6])
    firsts = ["1000", "1003", "1005", "1008"]
    key = "raw/dt=2026-01-01/hour=03/shard=shardId-000000000001/{}.jsonl.zst"
    assert [uri for uri, _ in locations] == [f"s3://bucket/prefix/{key.format(f)}"
                                             for f, n in zip(firsts, [3, 2, 3, 2], strict=True) for _ in range(n)]
    assert [line for _, line in locations] == [0, 1, 2, 0, 1, 0, 1, 2, 0, 1]
    # the last object is still open: only the three before it are handed over, oldest first
    assert [(s.key, s.last_seq, s.records) for s in sealed] == [
        (key.format("1000"), "1002", 3), (key.format("1003"), "1004", 2), (key.format("1005"), "1007", 3)]
    assert arch.holds_records
    arch.roll()
    last = arch.take_sealed()
    assert [(s.key, s.last_seq) for s in last] == [(key.format("1008"), "1009")]
    lines = archive.archive_decompress(last[0].blob)
    assert [orjson.loads(line)["seq"] for line in lines] == ["1008", "1009"]


def test_objects_roll_by_size_of_the_records_whatever_the_pipeline_found():
    recs = stream_of(10, seconds_apart=0, size=200)  # 208 bytes + LINE_OVERHEAD each
    per_record = 208 + archive.LINE_OVERHEAD
    arch = shard_archive(roll_bytes=3 * per_record)
    locations, sealed = run_units(arch, recs, [10], not_json={"1001"})
    assert [line for _, line in locations] == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert [s.records for s in sealed] == [3, 3, 3]


def test_a_re_read_from_the_same_checkpoint_rebuilds_the_same_objects_whatever_the_units():
    # a new owner re-reads the shard in other unit sizes: the objects and every lineage pointer are the same
    recs = stream_of(40, seconds_apart=7)
    first_locations, first_sealed = run_units(shard_archive(roll_seconds=60), recs, [40])
    again_locations, again_sealed = run_units(shard_archive(roll_seconds=60), recs, [3, 11, 1, 25])
    assert first_locations == again_locations
    def contents(sealed):
        return [(s.key, s.last_seq, archive.archive_decompress(s.blob)) for s in sealed]

    assert len(first_sealed) == 4 and contents(first_sealed) == contents(again_sealed)


def test_an_object_already_in_the_store_is_adopted_not_rewritten():
    # the previous owner wrote the object that starts at 1000 (through 1004) and died before its checkpoint
    recs = stream_of(8, seconds_apart=1)
    key = archive.archive_object_key(recs[0])
    arch = shard_archive(stored={key: "1004"})
    locations, sealed = run_units(arch, recs, [8])
    assert locations[:5] == [(f"s3://bucket/prefix/{key}", i) for i in range(5)]
    assert locations[5:] == [(f"s3://bucket/prefix/{archive.archive_object_key(recs[5])}", i) for i in range(3)]
    assert [(s.key, s.last_seq, s.blob) for s in sealed] == [(key, "1004", None)]  # nothing to write again
    arch.roll()
    (new,) = arch.take_sealed()
    assert [orjson.loads(line)["seq"] for line in archive.archive_decompress(new.blob)] == ["1005", "1006", "1007"]


def test_an_object_rolls_at_the_tip_only_after_its_window_and_a_grace():
    arch = shard_archive(roll_seconds=60)
    arch.place(stream_of(2, seconds_apart=1))
    arch.append()
    window_end = (ARRIVAL // 60_000_000 + 1) * 60_000_000
    assert not arch.roll_due(window_end, grace_seconds=2)
    assert arch.roll_due(window_end + 2_000_000, grace_seconds=2)
    assert not shard_archive().roll_due(window_end + 10**9, grace_seconds=2)  # nothing open: nothing due


def test_lines_keep_each_record_as_sent_and_bytes_that_are_not_json_as_base64():
    recs = records()
    told = shard_archive()
    run_units(told, recs, [4], not_json={"101"})
    checked = shard_archive()
    run_units(checked, recs, [4])  # no pipeline verdict: checked here
    told.roll()
    checked.roll()
    (told_object,), (checked_object,) = told.take_sealed(), checked.take_sealed()
    assert told_object.blob == checked_object.blob
    lines = [orjson.loads(line) for line in archive.archive_decompress(told_object.blob)]
    assert lines[0] == {"seq": "100", "shard": SHARD, "arrival": ARRIVAL, "record": orjson.loads(recs[0].data)}
    assert base64.b64decode(lines[1]["record_b64"]) == b"\xff\xfe not json" and "record" not in lines[1]
    assert lines[2]["record"]["received_at"] == 1_767_225_600_000_000_000   # kept as sent, nothing raised
    assert lines[3]["record"] == [1, 2]


def _written(tmp_path, settings):
    settings.RAW_ARCHIVE_URL = f"file://{tmp_path}"
    arch = archive.ShardArchive(base_uri=settings.RAW_ARCHIVE_URL, roll_seconds=0, roll_bytes=1 << 30,
                                existing=archive.archive_object_last_seq)
    locations = arch.place(records())
    arch.append({"101"})
    arch.roll()
    (sealed,) = arch.take_sealed()
    assert archive.archive_put_new(sealed.key, sealed.blob) > 0
    return sealed, locations


def test_an_object_round_trips_through_the_store_and_is_never_overwritten(tmp_path, settings):
    sealed, locations = _written(tmp_path, settings)
    for (uri, offset), record in zip(locations, records(), strict=True):
        line = archive.archive_read_line(uri, offset)
        assert line["seq"] == record.sequence_number
        if "record" in line:
            assert line["record"] == orjson.loads(record.data)
        else:
            assert base64.b64decode(line["record_b64"]) == record.data
    with pytest.raises(archive.ArchiveObjectExists):
        archive.archive_put_new(sealed.key, b"something shorter")
    assert archive.archive_object_last_seq(sealed.key) == "103"
    assert archive.archive_object_last_seq("raw/no/such.jsonl.zst") is None


def test_s3_writes_are_create_only(settings, aws_settings):
    # moto honours If-None-Match: * as S3 does: a second writer of one key is refused, not last-wins
    from ingest_workers.aws import bucket_ensure

    bucket_ensure("raw-archive-create-only")
    settings.RAW_ARCHIVE_URL = "s3://raw-archive-create-only/t"
    key = f"raw/test/{ARRIVAL}.jsonl.zst"
    archive.archive_put_new(key, archive.archive_compress([b'{"seq":"7"}']))
    with pytest.raises(archive.ArchiveObjectExists):
        archive.archive_put_new(key, archive.archive_compress([b'{"seq":"1"}']))
    assert archive.archive_object_last_seq(key) == "7"
    assert archive.archive_object_last_seq("raw/test/missing.jsonl.zst") is None


def test_a_reader_fetches_each_object_once(tmp_path, settings):
    # review M5: a re-drive of 500 rows of one unit downloaded and decompressed its object 500 times
    _, locations = _written(tmp_path, settings)
    reader = archive.ArchiveReader()
    lines = [reader.read_line(uri, offset) for uri, offset in locations * 3]
    assert [line["seq"] for line in lines[:4]] == ["100", "101", "102", "103"]
    assert reader.fetched == 1


def test_an_adopted_object_stays_open_until_its_last_stored_record_is_placed():
    # review S3: closing it early put the rest of its records (and their lineage) in a new object
    recs = stream_of(8, seconds_apart=1)
    key = archive.archive_object_key(recs[0])
    arch = shard_archive(stored={key: "1004"})
    arch.place(recs[:3])
    arch.append()
    arch.roll()                                   # a reader stopping, or at its tip: not yet
    assert arch.take_sealed() == []
    locations = arch.place(recs[3:])
    arch.append()
    assert locations[:2] == [(f"s3://bucket/prefix/{key}", 3), (f"s3://bucket/prefix/{key}", 4)]
    assert [(s.key, s.last_seq, s.records) for s in arch.take_sealed()] == [(key, "1004", 5)]


def test_a_sealed_object_stays_with_the_archive_until_it_is_written():
    # review S6: objects were handed over before the write, so a failed write lost them from the reader
    arch = shard_archive(roll_seconds=60)
    arch.place(stream_of(5, seconds_apart=30))    # windows: 0-1 | 2-3 | 4
    arch.append()
    first = arch.sealed()
    assert [s.last_seq for s in first] == ["1001", "1003"]
    assert [s.blob for s in arch.sealed()] == [s.blob for s in first]   # the write failed: still there, same bytes
    arch.written()
    assert [s.last_seq for s in arch.sealed()] == ["1003"]


def test_json_with_line_breaks_between_tokens_stays_one_line():
    # review S7: a record with raw newlines between JSON tokens split into two lines, shifting every offset
    recs = [RawRecord(SHARD, "1", b'{"a":\n 1}', ARRIVAL), RawRecord(SHARD, "2", b'{"b":2}', ARRIVAL)]
    arch = shard_archive()
    arch.place(recs)
    arch.append()
    arch.roll()
    lines = archive.archive_decompress(arch.take_sealed()[0].blob)
    assert [orjson.loads(line)["seq"] for line in lines] == ["1", "2"]
    assert orjson.loads(lines[0])["record"] == {"a": 1}
