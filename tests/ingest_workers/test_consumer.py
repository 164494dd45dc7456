"""The consumer end to end on real parts: moto's Kinesis, the fakesnow warehouse server, PostgreSQL
leases, Redis. After every failure case: each accepted event is in CANONICAL.EVENTS exactly once,
or in quarantine with a reason; none lost."""

from __future__ import annotations

import io
import time
import uuid

import pytest
from botocore.exceptions import ClientError
from django.core.management import call_command

from contracts import presets
from ingest_workers import services
from ingest_workers.management.commands.generate_traffic import StreamSender
from ingest_workers.models import ShardLease
from ingest_workers.pipeline import RawRecord, process_batch
from ingest_workers.traffic import TrafficGenerator, templates_from_preset

pytestmark = pytest.mark.django_db


@pytest.fixture
def ingest_env(settings, stream, warehouse_server, tmp_path):
    """Seeded demo contracts, a fresh stream, this test's own warehouse database and archive folder."""
    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "database": f"T_{uuid.uuid4().hex[:12].upper()}"}
    settings.RAW_ARCHIVE_URL = f"file://{tmp_path}/archive"
    settings.REDIS_URL = "redis://127.0.0.1:6379/7"
    call_command("seed_demo", quiet_keys=True, force=True, stdout=io.StringIO())
    services.contract_index_current(force=True)
    return settings


def warehouse_rows(sql: str) -> list[dict]:
    from warehouse.connection import warehouse_connect
    from warehouse.load import warehouse_query

    with warehouse_connect() as conn:
        return warehouse_query(conn, sql)


def counts() -> dict:
    from warehouse.connection import warehouse_connect
    from warehouse.load import pipeline_counts

    with warehouse_connect() as conn:
        return pipeline_counts(conn)


def send_traffic(count: int, *, seed: int, duplicate_fraction=0.1, malformed_fraction=0.02):
    templates = [t for p in presets.demo_presets() for t in templates_from_preset(p)]
    generator = TrafficGenerator(templates, seed=seed, duplicate_fraction=duplicate_fraction,
                                 malformed_fraction=malformed_fraction, out_of_order_fraction=0.2, late_fraction=0.05)
    records = list(generator.records(count, now_micros=time.time_ns() // 1000))
    sender = StreamSender()
    for start in range(0, len(records), 250):
        sender.send(records[start:start + 250])
    return records


def expected_outcome(records) -> dict:
    """What the warehouse must hold, computed per record through the pure pipeline (no warehouse)."""
    index = services.contract_index_current()
    ids_by_record, quarantined = [], 0
    for i, record in enumerate(records):
        data = (record.payload if isinstance(record.payload, bytes) else
                StreamSender.encode(record, received_at=1))
        result = process_batch([RawRecord("s", str(i), data, 1)], index, stream="x", batch_id="b",
                               archive_locations=[("u", 0)], now_micros=2)
        ids_by_record.append(result.event_ids)
        quarantined += len(result.quarantine)
    unique = {event_id for ids in ids_by_record for event_id in ids}
    copies = sum(len(ids) for ids in ids_by_record)
    return {"events": len(unique), "duplicates": copies - len(unique), "quarantined": quarantined,
            "records": len(records)}


def assert_exactly_once(expected: dict) -> None:
    got = counts()
    assert got["events"] == expected["events"]
    assert got["duplicates"] == expected["duplicates"]
    assert got["quarantined"] == expected["quarantined"]
    distinct = warehouse_rows("SELECT COUNT(DISTINCT EVENT_ID) AS N FROM CANONICAL.EVENTS")[0]["N"]
    assert distinct == expected["events"]


def test_drain_lands_every_event_once_with_lineage_and_quarantines_the_bad(ingest_env):
    records = send_traffic(400, seed=1)
    expected = expected_outcome(records)
    assert expected["duplicates"] > 0 and expected["quarantined"] > 0

    report = services.pipeline_drain()
    assert report.read == len(records)
    assert report.quarantined == expected["quarantined"]
    assert report.merged == expected["events"] and report.duplicates == expected["duplicates"]
    assert_exactly_once(expected)

    row = warehouse_rows("SELECT * FROM CANONICAL.EVENTS LIMIT 1")[0]
    lineage = row["LINEAGE"]
    assert lineage["raw_archive_uri"].startswith(ingest_env.RAW_ARCHIVE_URL)
    from ingest_workers.archive import archive_read_line

    archived = archive_read_line(lineage["raw_archive_uri"], lineage["raw_offset"])
    assert archived["seq"] == lineage["sequence_number"] and archived["shard"] == lineage["shard_id"]
    reasons = {r["REASON_CODE"] for r in warehouse_rows("SELECT REASON_CODE FROM RAW.QUARANTINE")}
    assert reasons <= {"schema_violation", "undecodable"} and reasons


def test_a_worker_killed_between_archive_and_checkpoint_loses_nothing(ingest_env, kinesis):
    records = send_traffic(200, seed=2)
    expected = expected_outcome(records)
    lease = services.shard_sync(kinesis=kinesis, stream=ingest_env.KINESIS_STREAM_NAME)[0]
    held = services.shard_lease_acquire(stream=lease.stream, shard_id=lease.shard_id, owner="doomed")

    class Killed(Exception):
        pass

    def die():
        raise Killed

    from warehouse.connection import warehouse_connect

    with warehouse_connect() as conn, pytest.raises(Killed):
        services.shard_batch_process(kinesis=kinesis, warehouse=conn, lease=held, after_archive=die)
    held.refresh_from_db()
    assert held.checkpoint == ""                       # nothing was acknowledged
    ShardLease.objects.filter(pk=held.pk).update(lease_expires_at=None, owner="")  # its lease lapses
    services.pipeline_drain()
    assert_exactly_once(expected)


def test_a_crash_after_landing_before_the_checkpoint_lands_the_batch_once(ingest_env, monkeypatch):
    records = send_traffic(200, seed=3)
    expected = expected_outcome(records)
    real_checkpoint = services._checkpoint
    calls = {"n": 0}

    def crash_once(lease, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1 and kwargs["records"]:
            raise RuntimeError("worker died after landing")
        return real_checkpoint(lease, **kwargs)

    monkeypatch.setattr(services, "_checkpoint", crash_once)
    with pytest.raises(RuntimeError):
        services.pipeline_drain()
    ShardLease.objects.update(owner="", lease_expires_at=None)
    services.pipeline_drain()
    assert_exactly_once(expected)


def test_the_same_batches_processed_twice_change_nothing(ingest_env):
    records = send_traffic(200, seed=4)
    expected = expected_outcome(records)
    services.pipeline_drain()
    ShardLease.objects.update(checkpoint="", finished_at=None)   # replay the shard from the start
    again = services.pipeline_drain()
    assert again.read == len(records) and again.merged == 0
    assert_exactly_once(expected)


def test_the_warehouse_unreachable_for_a_while_grows_lag_and_catches_up(ingest_env):
    records = send_traffic(150, seed=5)
    expected = expected_outcome(records)
    reachable = dict(ingest_env.SNOWFLAKE)
    from warehouse.embedded import free_port

    ingest_env.SNOWFLAKE = {**reachable, "port": free_port()}   # nothing listens there
    with pytest.raises(Exception) as err:
        services.pipeline_drain(max_seconds=30)
    assert "unavailable" in str(err.value).lower() or "connect" in str(err.value).lower()
    assert not ShardLease.objects.exclude(checkpoint="").exists()   # lag grows, nothing acknowledged
    ingest_env.SNOWFLAKE = reachable
    ShardLease.objects.update(owner="", lease_expires_at=None)
    services.pipeline_drain()
    assert_exactly_once(expected)


def test_kinesis_throttling_is_retried(ingest_env, monkeypatch):
    records = send_traffic(150, seed=6)
    expected = expected_outcome(records)
    from ingest_workers import aws

    real_client = aws.kinesis_client()
    throttled = {"n": 0}

    class ThrottlingKinesis:
        def __getattr__(self, name):
            return getattr(real_client, name)

        def get_records(self, **kwargs):
            if throttled["n"] < 4:
                throttled["n"] += 1
                raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException",
                                             "Message": "Rate exceeded for shard"}}, "GetRecords")
            return real_client.get_records(**kwargs)

    monkeypatch.setattr(aws, "kinesis_client", lambda: ThrottlingKinesis())
    monkeypatch.setattr(services.time, "sleep", lambda seconds: None)
    services.pipeline_drain()
    assert throttled["n"] == 4
    assert_exactly_once(expected)


def test_a_poison_record_is_quarantined_and_the_rest_go_on(ingest_env):
    sender = StreamSender()
    good = send_traffic(50, seed=7, duplicate_fraction=0, malformed_fraction=0)
    sender.producer.put([("poison", b"\xff\xfe not json at all"), ("poison2", b'{"source": "nobody"}')])
    expected = expected_outcome(good)
    report = services.pipeline_drain()
    assert report.quarantined == 2
    got = counts()
    assert got["events"] == expected["events"]
    reasons = sorted(r["REASON_CODE"] for r in warehouse_rows("SELECT REASON_CODE FROM RAW.QUARANTINE"))
    assert reasons == ["invalid_envelope", "undecodable"]


def test_resharding_is_followed_parents_first_and_nothing_is_lost(ingest_env, kinesis):
    first = send_traffic(120, seed=8, duplicate_fraction=0, malformed_fraction=0)
    stream = ingest_env.KINESIS_STREAM_NAME
    services.pipeline_drain()
    parent = kinesis.list_shards(StreamName=stream)["Shards"][0]
    low, high = (int(x) for x in (parent["HashKeyRange"]["StartingHashKey"], parent["HashKeyRange"]["EndingHashKey"]))
    kinesis.split_shard(StreamName=stream, ShardToSplit=parent["ShardId"], NewStartingHashKey=str((low + high) // 2))
    second = send_traffic(120, seed=9, duplicate_fraction=0, malformed_fraction=0)
    services.pipeline_drain()
    leases = {lease.shard_id: lease for lease in ShardLease.objects.filter(stream=stream)}
    children = [lease for lease in leases.values() if lease.parent_shard_id == parent["ShardId"]]
    assert len(children) == 2
    assert leases[parent["ShardId"]].finished_at is not None          # the closed parent was read to its end
    assert all(child.last_batch_at is None or child.last_batch_at >= leases[parent["ShardId"]].finished_at
               for child in children)
    assert_exactly_once(expected_outcome(first + second))


def test_the_raw_archive_on_s3_keeps_every_record(ingest_env, moto_server):
    from ingest_workers.archive import archive_read_line
    from ingest_workers.aws import bucket_ensure

    bucket_ensure("raw-archive-test")
    ingest_env.RAW_ARCHIVE_URL = "s3://raw-archive-test/chatorbit"
    records = send_traffic(60, seed=10, duplicate_fraction=0, malformed_fraction=0)
    services.pipeline_drain()
    rows = warehouse_rows("SELECT LINEAGE FROM CANONICAL.EVENTS")
    assert len(rows) == expected_outcome(records)["events"]
    for row in rows[:20]:
        lineage = row["LINEAGE"]
        assert lineage["raw_archive_uri"].startswith("s3://raw-archive-test/chatorbit/raw/source=")
        line = archive_read_line(lineage["raw_archive_uri"], lineage["raw_offset"])
        assert line["seq"] == lineage["sequence_number"] and line["record"]["source"]


def test_pipeline_drain_command_prints_the_counts(ingest_env):
    import json

    records = send_traffic(80, seed=12)
    expected = expected_outcome(records)
    out = io.StringIO()
    call_command("pipeline_drain", "--json", stdout=out)
    printed = json.loads(out.getvalue())
    assert printed["read"] == len(records)
    assert printed["quarantined"] == expected["quarantined"]
    assert printed["merged"] == expected["events"] and printed["duplicates"] == expected["duplicates"]
    text = io.StringIO()
    call_command("pipeline_drain", stdout=text)      # nothing left: zeros, in the readable form
    assert [line.split()[0] for line in text.getvalue().splitlines()] == [
        "read", "valid", "quarantined", "duplicates", "merged"]
    assert all(line.split()[1] == "0" for line in text.getvalue().splitlines())
