"""The consumer end to end on real parts: moto's Kinesis, the fakesnow warehouse server, PostgreSQL
leases. After every failure case: each accepted event is in CANONICAL.EVENTS exactly once, or in
quarantine with a reason; none lost. The pipeline review's experiments E1-E4 are here as regression
tests (E5 is in tests/warehouse/test_landing.py)."""

from __future__ import annotations

import io
import time
import uuid

import orjson
import pytest
from botocore.exceptions import ClientError
from django.core.management import call_command

from contracts import presets
from ingest_workers import services
from ingest_workers.management.commands.generate_traffic import StreamSender
from ingest_workers.models import ShardLease
from ingest_workers.pipeline import RawRecord, process_batch
from ingest_workers.traffic import TrafficGenerator, templates_from_preset
from tests.ingest_workers.conftest import read_stream

pytestmark = pytest.mark.django_db


@pytest.fixture
def ingest_env(settings, stream, warehouse_server, tmp_path):
    """Seeded demo contracts, a fresh stream, this test's own warehouse database and archive folder."""
    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "database": f"T_{uuid.uuid4().hex[:12].upper()}"}
    settings.RAW_ARCHIVE_URL = f"file://{tmp_path}/archive"
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
    ids_by_record, quarantined, quarantine_ids = [], 0, set()
    for i, record in enumerate(records):
        data = (record.payload if isinstance(record.payload, bytes) else
                StreamSender.encode(record, received_at=1_767_225_600_000_000))
        result = process_batch([RawRecord("s", str(i), data, 1)], index, stream="x", batch_id="b",
                               archive_locations=[("u", 0)], now_micros=2)
        ids_by_record.append(result.event_ids)
        quarantined += len(result.quarantine)
        quarantine_ids.update(row.quarantine_id for row in result.quarantine)
    unique = {event_id for ids in ids_by_record for event_id in ids}
    copies = sum(len(ids) for ids in ids_by_record)
    # copies of one rejected payload are one quarantine row (hostile-input sweep D6)
    return {"events": len(unique), "duplicates": copies - len(unique), "quarantined": len(quarantine_ids),
            "quarantined_records": quarantined, "records": len(records)}


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
    assert report.quarantined == expected["quarantined_records"]
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


class Killed(BaseException):
    """The process dies here (not an Exception: nothing in the consumer may catch it)."""


def _die():
    raise Killed


def test_a_worker_killed_between_archive_and_landing_loses_nothing(ingest_env, kinesis):
    records = send_traffic(200, seed=2)
    expected = expected_outcome(records)
    lease = services.shard_sync(kinesis=kinesis, stream=ingest_env.KINESIS_STREAM_NAME)[0]
    held = services.shard_lease_acquire(stream=lease.stream, shard_id=lease.shard_id, owner="doomed")
    with pytest.raises(Killed):
        services.shard_batch_process(kinesis=kinesis, lease=held, after_archive=_die)
    held.refresh_from_db()
    assert held.checkpoint == ""                       # nothing was acknowledged
    ShardLease.objects.filter(pk=held.pk).update(lease_expires_at=None, owner="")  # its lease lapses
    services.pipeline_drain()
    assert_exactly_once(expected)


def _crash_after_landing_once(monkeypatch):
    """The first unit that lands anything dies before its checkpoint."""
    real = services.ShardReader.process_unit
    state = {"crashed": False}

    def process_unit(self, **kwargs):
        if not state["crashed"]:
            def die():
                state["crashed"] = True
                raise Killed
            kwargs["before_checkpoint"] = die
        return real(self, **kwargs)

    monkeypatch.setattr(services.ShardReader, "process_unit", process_unit)
    return state


def test_a_crash_after_landing_before_the_checkpoint_lands_the_batch_once(ingest_env, monkeypatch):
    records = send_traffic(200, seed=3)
    expected = expected_outcome(records)
    state = _crash_after_landing_once(monkeypatch)
    with pytest.raises(Killed):
        services.pipeline_drain()
    assert state["crashed"]
    ShardLease.objects.update(owner="", lease_expires_at=None)
    services.pipeline_drain()
    assert_exactly_once(expected)


def test_E1_a_crash_before_the_checkpoint_with_records_still_arriving_lands_everything_once(ingest_env, monkeypatch):
    # review E1/E1b: the retry read a LONGER range (new records had arrived), got a new batch id, re-landed
    # the overlap (22 false duplicates) and stalled for ever on a quarantined record's duplicate key
    sender = StreamSender()
    first = send_traffic(150, seed=13, duplicate_fraction=0)
    sender.producer.put([("poison", b"\xff not json")])     # a quarantined record inside the overlap
    state = _crash_after_landing_once(monkeypatch)
    with pytest.raises(Killed):
        services.pipeline_drain(max_records=10_000)
    assert state["crashed"]
    later = send_traffic(150, seed=14, duplicate_fraction=0)  # the producer goes on meanwhile
    ShardLease.objects.update(owner="", lease_expires_at=None)  # the dead worker's leases lapse
    services.pipeline_drain()
    expected = expected_outcome(first + later)
    assert_exactly_once({**expected, "quarantined": expected["quarantined"] + 1})
    assert counts()["duplicates"] == 0                        # no copy was sent, none is counted
    assert counts()["landed_rows"] == expected["events"]      # the landed unit was not landed again


def test_the_same_records_landed_again_change_nothing(ingest_env, monkeypatch):
    # a zombie writer (or a replay) lands the whole stream a second time on another channel
    records = send_traffic(200, seed=4)
    expected = expected_outcome(records)
    services.pipeline_drain()
    before = warehouse_rows("SELECT EVENT_ID, DUPLICATE_COUNT, MERGED_AT FROM CANONICAL.EVENTS ORDER BY EVENT_ID")
    real_name = services.shard_channel_name
    monkeypatch.setattr(services, "shard_channel_name", lambda stream, shard: "zombie-" + real_name(stream, shard))
    ShardLease.objects.update(checkpoint="", finished_at=None)   # read the shards from the start again
    again = services.pipeline_drain()
    assert again.read == len(records) and again.merged == 0
    assert_exactly_once(expected)
    after = warehouse_rows("SELECT EVENT_ID, DUPLICATE_COUNT, MERGED_AT FROM CANONICAL.EVENTS ORDER BY EVENT_ID")
    assert after == before                                    # not one row rewritten


def test_the_warehouse_unreachable_backs_off_parks_the_shards_and_catches_up_after_unpark(ingest_env):
    records = send_traffic(150, seed=5)
    expected = expected_outcome(records)
    reachable = dict(ingest_env.SNOWFLAKE)
    from warehouse.embedded import free_port

    ingest_env.SNOWFLAKE = {**reachable, "port": free_port()}   # nothing listens there
    ingest_env.INGEST_RETRY_BUDGET = 3
    waits: list[float] = []
    with pytest.raises(services.TransientError) as err:
        services.pipeline_drain(max_seconds=60, sleep=waits.append)
    assert "warehouse" in str(err.value).lower() or "connect" in str(err.value).lower()
    assert not ShardLease.objects.exclude(checkpoint="").exists()   # lag grows, nothing acknowledged
    parked = list(ShardLease.objects.filter(parked_at__isnull=False))
    assert len(parked) == ShardLease.objects.count() == 4              # every shard spent its budget
    assert all("3 failed attempts" in lease.park_reason for lease in parked)
    assert len(waits) == 4 * 2 and all(0 < w <= services.RETRY_MAX_SECONDS for w in waits)  # backed off
    assert max(waits) > min(waits)                                     # exponentially
    ingest_env.SNOWFLAKE = reachable
    assert services.pipeline_drain().read == 0                        # parked shards are not read...
    assert services.shard_unpark(stream=ingest_env.KINESIS_STREAM_NAME) == 4
    services.pipeline_drain()                                          # ...until an operator unparks them
    assert_exactly_once(expected)
    assert not ShardLease.objects.filter(failures__gt=0).exists()


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
        assert lineage["raw_archive_uri"].startswith("s3://raw-archive-test/chatorbit/raw/dt=")
        assert "/shard=shardId-" in lineage["raw_archive_uri"]
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
    assert printed["quarantined"] == expected["quarantined_records"]
    assert printed["merged"] == expected["events"] and printed["duplicates"] == expected["duplicates"]
    text = io.StringIO()
    call_command("pipeline_drain", stdout=text)      # nothing left: zeros, in the readable form
    assert [line.split()[0] for line in text.getvalue().splitlines()] == [
        "read", "valid", "quarantined", "duplicates", "merged"]
    assert all(line.split()[1] == "0" for line in text.getvalue().splitlines())


def _direct_write(records: list[tuple[str, bytes]]) -> None:
    StreamSender().producer.put(records)


def test_E2_a_received_at_in_nanoseconds_is_quarantined_and_the_shard_goes_on(ingest_env):
    # review E2/C4: `ValueError: year 58890 is out of range` in the archive plan, on every attempt
    import orjson

    good = send_traffic(40, seed=15, duplicate_fraction=0, malformed_fraction=0)
    payload = orjson.loads(StreamSender.encode(good[0], received_at=1_767_225_600_000_000))["payload"]
    poison = orjson.dumps({"v": 1, "source": "web-chat", "received_at": time.time_ns(), "channel": "direct",
                           "payload": payload})
    _direct_write([(f"k{i}", poison) for i in range(3)])
    more = send_traffic(40, seed=16, duplicate_fraction=0, malformed_fraction=0)
    report = services.pipeline_drain()
    assert report.read == 83 and report.retries == 0 and report.quarantined == 3
    rows = warehouse_rows("SELECT REASON_CODE, REASON_DETAIL FROM RAW.QUARANTINE")
    assert len(rows) == 1 and rows[0]["REASON_CODE"] == "invalid_envelope"   # three copies of one record
    assert "looks like nanoseconds" in rows[0]["REASON_DETAIL"]
    assert counts()["events"] == expected_outcome(good + more)["events"]


class _EmptyPageKinesis:
    """The real (moto) client, except that the first GetRecords of the chosen shards answers an empty
    page that is not the end of the shard, as Kinesis may anywhere in a shard (moto never does)."""

    def __init__(self, real, shards: set[str] | None = None):
        self.real, self.shards, self.empty_pages = real, shards, 0
        self._iterators: dict[str, str] = {}
        self._served: set[str] = set()

    def __getattr__(self, name):
        return getattr(self.real, name)

    def get_shard_iterator(self, **kwargs):
        response = self.real.get_shard_iterator(**kwargs)
        self._iterators[response["ShardIterator"]] = kwargs["ShardId"]
        return response

    def get_records(self, **kwargs):
        shard = self._iterators.get(kwargs["ShardIterator"])
        if shard is not None and shard not in self._served and (self.shards is None or shard in self.shards):
            self._served.add(shard)
            self.empty_pages += 1
            return {"Records": [], "NextShardIterator": kwargs["ShardIterator"], "MillisBehindLatest": 5000}
        return self.real.get_records(**kwargs)


def test_an_empty_page_in_the_middle_of_a_live_shard_loses_nothing(ingest_env, monkeypatch):
    from ingest_workers import aws

    records = send_traffic(200, seed=17)
    wrapper = _EmptyPageKinesis(aws.kinesis_client())
    monkeypatch.setattr(aws, "kinesis_client", lambda: wrapper)
    services.pipeline_drain()
    assert wrapper.empty_pages == 4
    assert_exactly_once(expected_outcome(records))
    assert not ShardLease.objects.filter(finished_at__isnull=False).exists()


def test_E4_a_closed_shard_is_finished_only_at_its_end_not_on_an_empty_page(ingest_env, kinesis, monkeypatch):
    # review E4/C3: a parent closed by a split, with unread records, was finished on its first empty page
    from ingest_workers import aws

    stream = ingest_env.KINESIS_STREAM_NAME
    first = send_traffic(120, seed=18, duplicate_fraction=0, malformed_fraction=0)   # unread when it splits
    parent = kinesis.list_shards(StreamName=stream)["Shards"][0]
    low, high = (int(x) for x in (parent["HashKeyRange"]["StartingHashKey"], parent["HashKeyRange"]["EndingHashKey"]))
    kinesis.split_shard(StreamName=stream, ShardToSplit=parent["ShardId"], NewStartingHashKey=str((low + high) // 2))
    second = send_traffic(60, seed=19, duplicate_fraction=0, malformed_fraction=0)
    wrapper = _EmptyPageKinesis(aws.kinesis_client(), shards={parent["ShardId"]})
    monkeypatch.setattr(aws, "kinesis_client", lambda: wrapper)
    services.pipeline_drain()
    assert wrapper.empty_pages == 1
    parent_lease = ShardLease.objects.get(stream=stream, shard_id=parent["ShardId"])
    assert parent_lease.finished_at is not None and parent_lease.records_read > 0
    assert_exactly_once(expected_outcome(first + second))


def test_E3_redis_down_while_records_flow_stops_nothing(ingest_env):
    # review E3/H2: a Redis error between landing and checkpoint stopped the shard; Redis is no longer
    # on the ingest path at all
    from warehouse.embedded import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"
    ingest_env.REDIS_URL = dead
    ingest_env.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": dead}}
    records = send_traffic(120, seed=20)
    report = services.pipeline_drain()
    assert report.retries == 0
    assert_exactly_once(expected_outcome(records))


def test_a_unit_that_keeps_failing_is_backed_off_then_parked_not_spun_on(ingest_env, monkeypatch, caplog):
    # review M2: a stuck shard was retried every second, without backoff, a log line or an alert
    import logging
    import re

    from ingest_workers import archive

    send_traffic(50, seed=21, duplicate_fraction=0, malformed_fraction=0)
    attempts = {"n": 0}

    def full_disk(key, blob, **kwargs):
        attempts["n"] += 1
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(archive, "archive_put_new", full_disk)
    ingest_env.INGEST_RETRY_BUDGET = 4
    waits: list[float] = []
    with caplog.at_level(logging.WARNING, logger="ingest_workers.services"), \
            pytest.raises(services.TransientError, match="No space left"):
        services.pipeline_drain(sleep=waits.append)
    shards_with_data = ShardLease.objects.filter(parked_at__isnull=False).count()
    assert shards_with_data >= 1 and attempts["n"] == 4 * shards_with_data
    lease = ShardLease.objects.filter(parked_at__isnull=False).first()
    assert "4 failed attempts" in lease.park_reason and "No space left" in lease.park_reason
    assert lease.owner == "" and lease.checkpoint == ""
    # each failed attempt is logged with its shard and the unit (where in the shard it starts), and backed
    # off exponentially with jitter: attempt k waits between half and all of 2^(k-1) s
    retried = [re.fullmatch(rf"shard {re.escape(str(lease))}: attempt (\d) at the unit at the shard's start "
                            r"\(nothing checkpointed yet\) failed, retrying in ([\d.]+)s: TransientError: could not "
                            r"write the raw archive object .*No space left on device", r.getMessage())
               for r in caplog.records if r.levelno == logging.WARNING]
    retried = [(int(m[1]), float(m[2])) for m in retried if m]
    assert [k for k, _ in retried] == [1, 2, 3]
    assert all(2 ** (k - 1) / 2 - 0.05 <= delay <= 2 ** (k - 1) + 0.05 for k, delay in retried)
    assert any(r.levelno == logging.ERROR and r.getMessage().startswith(f"shard {lease} parked after 4 failed attempts")
               for r in caplog.records)


def test_a_failing_unit_after_a_checkpoint_is_named_by_where_it_starts(ingest_env, monkeypatch):
    # the park reason and the log name the unit an operator would look for: the records after the
    # shard's checkpoint (not "after None", not the position a unit that failed after landing had reached)
    send_traffic(60, seed=25, duplicate_fraction=0, malformed_fraction=0)
    services.pipeline_drain()
    checkpoints = dict(ShardLease.objects.values_list("shard_id", "checkpoint"))
    assert all(checkpoints.values())
    send_traffic(60, seed=26, duplicate_fraction=0, malformed_fraction=0)

    def database_away(*args, **kwargs):   # the unit is read, archived and landed; its checkpoint fails
        raise services.TransientError("could not write the checkpoint: the database is away")

    monkeypatch.setattr(services, "_checkpoint", database_away)
    ingest_env.INGEST_RETRY_BUDGET = 1
    with pytest.raises(services.TransientError):
        services.pipeline_drain(sleep=lambda _s: None)
    parked = ShardLease.objects.filter(parked_at__isnull=False)
    assert parked.exists()
    for lease in parked:
        assert f"at the unit after sequence number {checkpoints[lease.shard_id]};" in lease.park_reason


def test_a_drain_reports_a_parked_shard_even_when_a_later_shard_reads_cleanly(ingest_env, monkeypatch):
    # a healthy shard read after a parked one reset the drain's only error slot, so whether the drain
    # raised depended on shard order (the test above failed about one run in three)
    from ingest_workers import archive

    send_traffic(80, seed=22, duplicate_fraction=0, malformed_fraction=0)
    real_put = archive.archive_put_new

    def first_shard_disk_full(key, blob, **kwargs):
        if "shard=shardId-000000000000/" in key:
            raise OSError(28, "No space left on device")
        return real_put(key, blob, **kwargs)

    monkeypatch.setattr(archive, "archive_put_new", first_shard_disk_full)
    ingest_env.INGEST_RETRY_BUDGET = 2
    with pytest.raises(services.TransientError, match="shardId-000000000000: .*No space left"):
        services.pipeline_drain(sleep=lambda _s: None)
    parked = set(ShardLease.objects.filter(parked_at__isnull=False).values_list("shard_id", flat=True))
    assert parked == {"shardId-000000000000"}
    assert ShardLease.objects.filter(parked_at__isnull=True, records_read__gt=0).exists()  # the others read on


def test_every_acquisition_takes_a_new_fencing_token_so_a_redelivered_task_cannot_checkpoint(ingest_env, kinesis):
    # review M7: the same owner re-acquiring kept its counter, so two copies of one task both checkpointed
    lease = services.shard_sync(kinesis=kinesis, stream=ingest_env.KINESIS_STREAM_NAME)[0]
    first = services.shard_lease_acquire(stream=lease.stream, shard_id=lease.shard_id, owner="task-1")
    second = services.shard_lease_acquire(stream=lease.stream, shard_id=lease.shard_id, owner="task-1")
    assert second.lease_counter == first.lease_counter + 1
    with pytest.raises(services.LeaseLost):
        services._checkpoint(first, sequence="1", records=1, behind=0, finished=False)
    services._checkpoint(second, sequence="1", records=1, behind=0, finished=False)
    with pytest.raises(services.LeaseLost):
        services.shard_lease_renew(first)


def test_leases_expire_on_the_databases_clock_not_the_workers(ingest_env, kinesis, monkeypatch):
    # review M7: a worker whose clock ran fast saw live leases as expired and stole them
    import datetime as dt

    from django.utils import timezone

    lease = services.shard_sync(kinesis=kinesis, stream=ingest_env.KINESIS_STREAM_NAME)[0]
    assert services.shard_lease_acquire(stream=lease.stream, shard_id=lease.shard_id, owner="alive") is not None
    fast = timezone.now() + dt.timedelta(hours=1)
    monkeypatch.setattr(timezone, "now", lambda: fast)
    assert services.shard_lease_acquire(stream=lease.stream, shard_id=lease.shard_id, owner="fast-clock") is None


def test_a_consumer_judges_parked_shards_on_the_databases_clock(ingest_env, kinesis, monkeypatch):
    # review follow-up: a consumer whose clock ran slow still saw a shard as parked after its park
    # time had passed on the database's clock, and never took it back
    import datetime as dt

    from django.db.models.functions import Now
    from django.utils import timezone

    from ingest_workers.consumer import ShardConsumer

    leases = services.shard_sync(kinesis=kinesis, stream=ingest_env.KINESIS_STREAM_NAME)
    done, still = leases[0], leases[1]
    ShardLease.objects.filter(pk=done.pk).update(
        parked_at=Now() - dt.timedelta(seconds=services.parked_retry_seconds() + 60), park_reason="x")
    ShardLease.objects.filter(pk=still.pk).update(parked_at=Now(), park_reason="y")
    slow = timezone.now() - dt.timedelta(hours=1)
    monkeypatch.setattr(timezone, "now", lambda: slow)
    consumer = ShardConsumer(landing=services.landing_client())
    consumer.balance()
    assert done.shard_id in consumer.owned and still.shard_id not in consumer.owned
    assert len(consumer.owned) == len(leases) - 1
    for shard_id in list(consumer.owned):
        consumer._drop(shard_id, release=True)


def test_one_merger_at_a_time_and_a_dead_mergers_lease_is_taken_over(ingest_env, kinesis):
    # review M8: beat started a merge every 5 s whether or not the last had finished
    import datetime as dt

    from django.db.models.functions import Now

    from ingest_workers.models import WorkerLease

    records = send_traffic(80, seed=22)
    held = services.worker_lease_acquire(services.MERGER_LEASE, "merger-elsewhere", 60)
    for lease in services.shard_sync(kinesis=kinesis, stream=ingest_env.KINESIS_STREAM_NAME):   # land it all
        mine = services.shard_lease_acquire(stream=lease.stream, shard_id=lease.shard_id, owner="lander")
        while services.shard_batch_process(kinesis=kinesis, lease=mine).read:
            pass
    assert services.warehouse_merge_run() == {"busy": "merger-elsewhere", "events_inserted": 0, "duplicates": 0}
    assert counts()["events"] == 0 and counts()["unmerged_rows"] > 0
    # the other merger died: its lease runs out on the database's clock, and the next run takes over
    WorkerLease.objects.filter(name=services.MERGER_LEASE).update(expires_at=Now() - dt.timedelta(seconds=1))
    merged = services.warehouse_merge_run()
    assert "busy" not in merged and merged["events_inserted"] == expected_outcome(records)["events"]
    assert WorkerLease.objects.get(name=services.MERGER_LEASE).fence > held


@pytest.mark.django_db(transaction=True)   # the heartbeat renews from its own thread and connection
def test_a_heartbeat_keeps_a_long_runs_lease(ingest_env):
    from ingest_workers.models import WorkerLease

    fence = services.worker_lease_acquire("long-run", "me", 1)
    first = WorkerLease.objects.get(name="long-run").expires_at
    deadline = time.monotonic() + 20
    with services.LeaseHeartbeat(lambda: services.worker_lease_renew("long-run", "me", fence, 1), 1) as beat:
        while WorkerLease.objects.get(name="long-run").expires_at <= first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not beat.lost.is_set()
    assert WorkerLease.objects.get(name="long-run").expires_at > first
    assert services.worker_lease_acquire("long-run", "someone-else", 1) is None   # still ours


def test_the_drain_walks_through_a_long_run_of_empty_pages(ingest_env, kinesis, monkeypatch):
    # review follow-up: the drain restarted every shard at its checkpoint on each pass, so a gap of
    # more empty pages than one read follows was never passed, and the drain reported success. The gap
    # here is where Kinesis puts it: at a position (every new iterator from the start meets it again)
    from ingest_workers import aws

    records = send_traffic(120, seed=23)
    real = aws.kinesis_client()
    gapped = kinesis.list_shards(StreamName=ingest_env.KINESIS_STREAM_NAME)["Shards"][0]["ShardId"]
    length = 3 * services.EMPTY_PAGES_PER_READ
    served = {"empty": 0}

    class GapAtTheStart:
        def __getattr__(self, name):
            return getattr(real, name)

        def get_shard_iterator(self, **kwargs):
            iterator = real.get_shard_iterator(**kwargs)["ShardIterator"]
            gap = length if kwargs["ShardId"] == gapped and kwargs["ShardIteratorType"] == "TRIM_HORIZON" else 0
            return {"ShardIterator": f"gap:{gap}:{iterator}"}

        def get_records(self, **kwargs):
            _, left, iterator = kwargs.pop("ShardIterator").split(":", 2)
            if int(left) > 0:
                served["empty"] += 1
                return {"Records": [], "NextShardIterator": f"gap:{int(left) - 1}:{iterator}",
                        "MillisBehindLatest": 9000}
            response = real.get_records(ShardIterator=iterator, **kwargs)
            following = response.get("NextShardIterator")
            return {**response, "NextShardIterator": f"gap:0:{following}" if following else None}

    monkeypatch.setattr(aws, "kinesis_client", lambda: GapAtTheStart())
    services.pipeline_drain()
    assert served["empty"] == length                    # walked through once, not met again each pass
    assert_exactly_once(expected_outcome(records))


class _LaterCommits:
    """The embedded landing client, told to behave as Snowpipe Streaming does: an append returns at
    once and the channel reports it committed only some status calls later."""

    def __init__(self, real, lag: int):
        self.real, self.lag, self.polls, self.appended, self.max_in_flight = real, lag, 0, [], 0
        self._seen: dict[str, list[tuple[int, str]]] = {}

    def open_channel(self, name):
        client, channel = self, self.real.open_channel(name)

        class Channel:
            commits_on_append = False

            def __getattr__(self, attr):
                return getattr(channel, attr)

            def append(self, rows, *, offset_token):
                result = channel.append(rows, offset_token=offset_token)
                client._seen.setdefault(name, []).append((client.polls, offset_token))
                in_flight = sum(1 for at, _ in client._seen[name] if at + client.lag > client.polls)
                client.max_in_flight = max(client.max_in_flight, in_flight)
                return result

            def wait_for_commit(self, offset_token, *, timeout_seconds):
                while client.latest_committed_offset_tokens([name])[name] != offset_token:
                    pass  # each status call is a tick of the clock: a waiting consumer waits `lag` ticks

        return Channel()

    def latest_committed_offset_tokens(self, names):
        self.polls += 1
        visible = {}
        for name in names:
            done = [token for at, token in self._seen.get(name, []) if at + self.lag <= self.polls]
            visible[name] = done[-1] if done else None
        return visible

    def close(self):
        self.real.close()


@pytest.mark.django_db(transaction=True)   # the consumer's heartbeat thread uses its own connection
def test_a_consumer_does_not_wait_for_each_commit_of_a_channel_that_commits_later(ingest_env):
    # review follow-up (H-C): with Snowpipe Streaming each unit waited seconds for its commit before
    # the next unit of any shard was read; now units are appended back to back and checkpointed as
    # the channel reports them committed
    from ingest_workers.consumer import ShardConsumer

    records = send_traffic(1200, seed=24, duplicate_fraction=0, malformed_fraction=0)
    landing = _LaterCommits(services.landing_client(), lag=3)
    consumer = ShardConsumer(landing=landing, max_records=100)
    consumer.run(max_seconds=120, until_idle=True)
    assert landing.max_in_flight > 1                          # appended without waiting for the commit
    assert ShardLease.objects.filter(records_read__gt=0).count() == 4
    assert sum(ShardLease.objects.values_list("records_read", flat=True)) == len(records)   # all settled
    services.warehouse_merge_run()
    assert_exactly_once(expected_outcome(records))


def test_a_unit_of_several_pipeline_batches_lands_in_one_transaction_under_its_last_sequence_number(
        ingest_env, kinesis, monkeypatch):
    records = send_traffic(400, seed=41)
    monkeypatch.setattr(services, "BATCH_MAX_RECORDS", 30)
    batch_sizes: list[int] = []
    real_process_batch = services.process_batch

    def process_batch_spy(batch, *args, **kwargs):
        batch_sizes.append(len(batch))
        return real_process_batch(batch, *args, **kwargs)

    monkeypatch.setattr(services, "process_batch", process_batch_spy)
    # the busiest of 4 shards holds at least 400 / 4 = 100 records whatever the partition keys hash to
    lease = _busiest_lease(kinesis, ingest_env.KINESIS_STREAM_NAME)
    reader = _reader(kinesis, lease, "unit")
    outcome = reader.process_unit(max_records=100)
    reader.flush()
    reader.close()
    services.shard_lease_release(reader.lease)
    assert outcome.read == 100 and batch_sizes == [30, 30, 30, 10]
    last = _shard_seqs(kinesis, ingest_env.KINESIS_STREAM_NAME, lease)[99]
    tokens = warehouse_rows("SELECT OFFSET_TOKEN, ROW_COUNT FROM RAW.CHANNEL_OFFSETS WHERE OFFSET_TOKEN IS NOT NULL")
    assert [(t["OFFSET_TOKEN"], t["ROW_COUNT"]) for t in tokens] == [(last, outcome.landed_rows)]
    landed = warehouse_rows("SELECT COUNT(*) AS N FROM RAW.LANDING_EVENTS")[0]["N"]
    assert landed == outcome.landed_rows == outcome.valid + outcome.quarantined
    monkeypatch.setattr(services, "process_batch", real_process_batch)
    services.pipeline_drain()
    assert_exactly_once(expected_outcome(records))


# --- rolled archive objects (RAW_ARCHIVE_ROLL_SECONDS > 0) --------------------------------------------

def _busiest_lease(kinesis, stream: str) -> ShardLease:
    leases = services.shard_sync(kinesis=kinesis, stream=stream)
    sizes = {lease.shard_id: 0 for lease in leases}
    for record in read_stream(kinesis, stream):
        sizes[record["shard"]] += 1
    return max(leases, key=lambda lease: sizes[lease.shard_id])


def _read_to_tip(reader: services.ShardReader) -> int:
    read = 0
    while (outcome := reader.process_unit(max_records=25)).read:
        read += outcome.read
    return read


def _archived_seqs_of(path) -> list[str]:
    from ingest_workers.archive import archive_decompress

    return [orjson.loads(line)["seq"] for line in archive_decompress(path.read_bytes())]


def _archived_seqs(root) -> list[str]:
    from ingest_workers.archive import archive_decompress

    seqs = []
    for path in sorted(root.rglob("*.jsonl.zst"), key=lambda p: int(p.name.split(".")[0])):
        seqs += [orjson.loads(line)["seq"] for line in archive_decompress(path.read_bytes())]
    return seqs


def test_a_consumer_killed_with_an_archive_object_open_loses_nothing_and_lands_nothing_twice(
        ingest_env, kinesis, tmp_path):
    ingest_env.RAW_ARCHIVE_ROLL_SECONDS = 3600   # the object stays open for the whole test
    records = send_traffic(240, seed=31)
    expected = expected_outcome(records)
    lease = _busiest_lease(kinesis, ingest_env.KINESIS_STREAM_NAME)
    doomed = services.ShardReader(kinesis=kinesis, landing=services.landing_client(),
                                  lease=services.shard_lease_acquire(stream=lease.stream, shard_id=lease.shard_id,
                                                                     owner="doomed"))
    read = _read_to_tip(doomed)
    landed = counts()["landed_rows"]
    assert read > 25 and landed > 0                    # several units landed ...
    lease.refresh_from_db()
    assert lease.checkpoint == "" and not list((tmp_path / "archive").rglob("*.zst"))  # ... none archived
    # the worker dies (no flush); its lease lapses and another consumer takes the shard
    ShardLease.objects.filter(pk=lease.pk).update(owner="", lease_expires_at=None)
    heir = services.ShardReader(kinesis=kinesis, landing=services.landing_client(),
                                lease=services.shard_lease_acquire(stream=lease.stream, shard_id=lease.shard_id,
                                                                   owner="heir"))
    assert _read_to_tip(heir) == read                  # re-read from the checkpoint to rebuild the object
    assert counts()["landed_rows"] == landed           # landed once: the channel's token was honoured
    heir.flush()                                       # the heir gives the shard up: the object is written
    heir.close()
    lease.refresh_from_db()
    seqs = [r["sequence"] for r in read_stream(kinesis, ingest_env.KINESIS_STREAM_NAME) if r["shard"] == lease.shard_id]
    assert lease.checkpoint == seqs[-1]
    assert _archived_seqs(tmp_path / "archive") == seqs  # every record of the shard, once, in order
    ShardLease.objects.filter(pk=lease.pk).update(owner="", lease_expires_at=None)
    services.pipeline_drain()                          # the other shards, and the merge
    assert_exactly_once(expected)
    assert_lineage_true()


def assert_lineage_true() -> None:
    """Every merged event's lineage names the archive line that holds its stream record."""
    from ingest_workers.archive import ArchiveReader

    services.warehouse_merge_run()
    reader = ArchiveReader()
    rows = warehouse_rows("SELECT LINEAGE FROM CANONICAL.EVENTS")
    assert rows
    for row in rows:
        lineage = row["LINEAGE"]
        line = reader.read_line(lineage["raw_archive_uri"], lineage["raw_offset"])
        assert (line["seq"], line["shard"]) == (lineage["sequence_number"], lineage["shard_id"])


def _reader(kinesis, lease, owner, landing=None) -> services.ShardReader:
    ShardLease.objects.filter(pk=lease.pk).update(owner="", lease_expires_at=None)   # the last owner's lapses
    held = services.shard_lease_acquire(stream=lease.stream, shard_id=lease.shard_id, owner=owner)
    return services.ShardReader(kinesis=kinesis, landing=landing or services.landing_client(), lease=held)


def _shard_seqs(kinesis, stream, lease) -> list[str]:
    return [r["sequence"] for r in read_stream(kinesis, stream) if r["shard"] == lease.shard_id]


def test_an_heir_stopped_while_replaying_rolls_nothing_and_the_lineage_stays_true(ingest_env, kinesis, tmp_path):
    # review of the rolled archive, S1b: an heir stopped (or meeting empty pages) while re-reading what its
    # predecessor landed wrote a shorter object than the one the landed lineage points into
    ingest_env.RAW_ARCHIVE_ROLL_SECONDS = 3600
    send_traffic(160, seed=34, duplicate_fraction=0, malformed_fraction=0)
    lease = _busiest_lease(kinesis, ingest_env.KINESIS_STREAM_NAME)
    _read_to_tip(_reader(kinesis, lease, "first"))                  # lands everything, archives nothing, dies
    heir = _reader(kinesis, lease, "heir")
    assert heir.process_unit(max_records=10).read == 10              # re-reading ...
    heir.flush()                                                      # ... and stopped (a deploy)
    heir.close()
    assert not list((tmp_path / "archive").rglob("*.zst"))            # nothing rolled while replaying
    last = _reader(kinesis, lease, "last")
    _read_to_tip(last)
    last.flush()
    seqs = _shard_seqs(kinesis, ingest_env.KINESIS_STREAM_NAME, lease)
    lease.refresh_from_db()
    assert lease.checkpoint == seqs[-1] and lease.records_read == len(seqs)   # each record counted once
    assert _archived_seqs(tmp_path / "archive") == seqs
    assert_lineage_true()


def test_with_deferred_commits_the_checkpoint_stays_on_object_boundaries(ingest_env, kinesis, tmp_path):
    # review of the rolled archive, S2: a checkpoint inside an object made the heir's size rolls fall
    # elsewhere, and the objects its predecessor's lineage named were never written
    ingest_env.RAW_ARCHIVE_ROLL_SECONDS = 3600
    ingest_env.RAW_ARCHIVE_ROLL_MB = 0.01     # ~10 KB of records: objects of a few records
    send_traffic(160, seed=35, duplicate_fraction=0, malformed_fraction=0)
    lease = _busiest_lease(kinesis, ingest_env.KINESIS_STREAM_NAME)
    later = _LaterCommits(services.landing_client(), lag=10_000)   # reports nothing committed by itself
    first = _reader(kinesis, lease, "first", landing=later)
    tokens = []
    while first.process_unit(max_records=7, defer_commit=True).read:
        tokens.append(first.position)
    first.settle(tokens[1])                   # the channel says two units are committed: 14 records
    lease.refresh_from_db()
    objects = sorted((tmp_path / "archive").rglob("*.zst"), key=lambda p: int(p.name.split(".")[0]))
    assert len(objects) > 3
    ends = {_archived_seqs_of(path)[-1] for path in objects}
    assert lease.checkpoint in ends           # the end of a written object, not the 14th record
    heir = _reader(kinesis, lease, "heir")    # the first consumer dies; the heir sees every append committed
    _read_to_tip(heir)
    heir.flush()
    seqs = _shard_seqs(kinesis, ingest_env.KINESIS_STREAM_NAME, lease)
    lease.refresh_from_db()
    assert lease.checkpoint == seqs[-1]
    assert set(_archived_seqs(tmp_path / "archive")) == set(seqs)
    assert_lineage_true()


def test_a_drain_whose_archive_write_fails_retries_it_and_loses_nothing(ingest_env, kinesis, tmp_path, monkeypatch):
    # review of the rolled archive, S5: the drain's end-of-pass flush let a transient archive error escape
    from ingest_workers import archive

    ingest_env.RAW_ARCHIVE_ROLL_SECONDS = 3600
    records = send_traffic(120, seed=36, duplicate_fraction=0, malformed_fraction=0)
    real, failures = archive.archive_put_new, {"left": 2}

    def flaky(key, blob, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise OSError(5, "Input/output error")
        return real(key, blob, **kwargs)

    monkeypatch.setattr(archive, "archive_put_new", flaky)
    report = services.pipeline_drain(sleep=lambda seconds: None)
    assert failures["left"] == 0 and report.retries == 2 and report.read == len(records)
    sent = {(r["shard"], r["sequence"]) for r in read_stream(kinesis, ingest_env.KINESIS_STREAM_NAME)}
    from ingest_workers.archive import archive_decompress

    archived = {(line["shard"], line["seq"]) for path in (tmp_path / "archive").rglob("*.zst")
                for line in map(orjson.loads, archive_decompress(path.read_bytes()))}
    assert archived == sent
    assert_exactly_once(expected_outcome(records))


def test_an_archive_object_written_before_a_crash_is_adopted_not_rewritten(ingest_env, kinesis, tmp_path, monkeypatch):
    ingest_env.RAW_ARCHIVE_ROLL_SECONDS = 3600
    send_traffic(120, seed=32, duplicate_fraction=0, malformed_fraction=0)
    lease = _busiest_lease(kinesis, ingest_env.KINESIS_STREAM_NAME)
    first = services.ShardReader(kinesis=kinesis, landing=services.landing_client(),
                                 lease=services.shard_lease_acquire(stream=lease.stream, shard_id=lease.shard_id,
                                                                    owner="first"))
    _read_to_tip(first)
    real_checkpoint = services._checkpoint
    monkeypatch.setattr(services, "_checkpoint", lambda *a, **k: _die())
    with pytest.raises(Killed):
        first.flush()                                  # written, then killed before the checkpoint
    monkeypatch.setattr(services, "_checkpoint", real_checkpoint)
    (written,) = list((tmp_path / "archive").rglob("*.zst"))
    before = (written.read_bytes(), written.stat().st_mtime_ns)
    send_traffic(40, seed=33, duplicate_fraction=0, malformed_fraction=0)   # the producer goes on
    ShardLease.objects.filter(pk=lease.pk).update(owner="", lease_expires_at=None)
    heir = services.ShardReader(kinesis=kinesis, landing=services.landing_client(),
                                lease=services.shard_lease_acquire(stream=lease.stream, shard_id=lease.shard_id,
                                                                   owner="heir"))
    _read_to_tip(heir)
    heir.flush()
    assert (written.read_bytes(), written.stat().st_mtime_ns) == before   # adopted, not overwritten
    seqs = [r["sequence"] for r in read_stream(kinesis, ingest_env.KINESIS_STREAM_NAME) if r["shard"] == lease.shard_id]
    assert _archived_seqs(tmp_path / "archive") == seqs
    lease.refresh_from_db()
    assert lease.checkpoint == seqs[-1]


def test_settling_the_collector_for_steady_state_still_collects_cycles_made_afterwards():
    # a consumer process freezes what its start-up loaded and collects its youngest generation less
    # often (CPU per event); garbage made afterwards, reference cycles included, is still collected
    import gc
    import weakref

    from ingest_workers.consumer import GC_YOUNG_THRESHOLD, gc_settle_for_steady_state

    before = gc.get_threshold()
    try:
        gc_settle_for_steady_state()
        assert gc.get_freeze_count() > 0 and gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])

        class Node:
            pass

        node = Node()
        node.me = node
        gone = weakref.ref(node)
        del node
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
