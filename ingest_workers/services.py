"""The shell around the pure pipeline: shard leases, reading Kinesis, archive, landing, checkpoints.

Order of effects for every batch (the checkpoint moves last, so a crash anywhere re-reads the batch):
  1. read records after the checkpoint;
  2. write the raw batch to the archive (object keys derived from shard + sequence range: a retry
     overwrites);
  3. run the pure pipeline (decode → route → validate → normalize → event ids → lineage);
  4. land valid events and quarantine rows in the warehouse in one transaction, keyed by batch id
     (a retried batch with the same range lands once);
  5. move the checkpoint, conditional on still holding the lease.
A MERGE (`warehouse_merge`) moves landed rows into CANONICAL.EVENTS, one row per event_id.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from obstore.exceptions import BaseError as ObstoreError

from ingest_workers import archive
from ingest_workers.models import ShardLease
from ingest_workers.pipeline import BatchResult, ContractIndex, RawRecord, process_batch

log = logging.getLogger(__name__)

MERGE_MAX_BATCHES = 500
BATCH_MAX_RECORDS = 1000  # process_batch is fastest per record around 1,000 (CPU cache)
THROTTLE_RETRIES = 6
THROTTLE_CODES = frozenset({"ProvisionedThroughputExceededException", "LimitExceededException",
                            "ThrottlingException"})
DEDUP_WINDOW_SECONDS = 24 * 3600


class TransientError(Exception):
    """Worth retrying: the stream, the archive or the warehouse is unavailable for now."""


class LeaseLost(Exception):
    """Another worker took the shard over; this worker must stop without moving the checkpoint."""


# --- contract routing, rebuilt when approvals change ------------------------------------------------

_index_lock = threading.Lock()
_index_cache: dict[str, object] = {"fingerprint": None, "index": None, "checked": 0.0}
INDEX_RECHECK_SECONDS = 5.0


def contract_index_current(*, force: bool = False) -> ContractIndex:
    """The compiled routing table for approved contracts; recompiled only when approvals change."""
    from contracts.selectors import ingest_routing_fingerprint, ingest_routing_sources

    with _index_lock:
        now = time.monotonic()
        if not force and _index_cache["index"] is not None and now - _index_cache["checked"] < INDEX_RECHECK_SECONDS:
            return _index_cache["index"]  # type: ignore[return-value]
        fingerprint = ingest_routing_fingerprint()
        if force or fingerprint != _index_cache["fingerprint"]:
            _index_cache["index"] = ContractIndex.build(ingest_routing_sources(), previous=_index_cache["index"])
            _index_cache["fingerprint"] = fingerprint
        _index_cache["checked"] = now
        return _index_cache["index"]  # type: ignore[return-value]


# --- leases -----------------------------------------------------------------------------------------

def shard_sync(*, kinesis, stream: str) -> list[ShardLease]:
    """Make sure every shard of the stream (including children after a reshard) has a lease row."""
    shards, token = [], None
    while True:
        page = kinesis.list_shards(NextToken=token) if token else kinesis.list_shards(StreamName=stream)
        shards.extend(page["Shards"])
        token = page.get("NextToken")
        if not token:
            break
    for shard in shards:
        ending = shard.get("SequenceNumberRange", {}).get("EndingSequenceNumber", "")
        lease, created = ShardLease.objects.get_or_create(
            stream=stream, shard_id=shard["ShardId"],
            defaults={"parent_shard_id": shard.get("ParentShardId", ""),
                      "adjacent_parent_shard_id": shard.get("AdjacentParentShardId", ""),
                      "ending_sequence_number": ending},
        )
        if not created and ending and not lease.ending_sequence_number:
            ShardLease.objects.filter(pk=lease.pk).update(ending_sequence_number=ending)
    return list(ShardLease.objects.filter(stream=stream))


def _parents_finished(lease: ShardLease) -> bool:
    """Children of a split/merge are read only after their parents, to keep each key in order."""
    parents = [p for p in (lease.parent_shard_id, lease.adjacent_parent_shard_id) if p]
    if not parents:
        return True
    tracked = ShardLease.objects.filter(stream=lease.stream, shard_id__in=parents)
    return all(p.finished_at is not None for p in tracked)


def lease_seconds() -> int:
    return int(getattr(settings, "INGEST_LEASE_SECONDS", 30))


def shard_lease_acquire(*, stream: str, shard_id: str, owner: str, seconds: int | None = None) -> ShardLease | None:
    """Take (or renew) the lease if it is free, expired or already ours. Returns it, or None."""
    seconds = seconds or lease_seconds()
    now = timezone.now()
    lease = ShardLease.objects.filter(stream=stream, shard_id=shard_id).first()
    if lease is None or lease.finished_at is not None or not _parents_finished(lease):
        return None
    free = Q(owner="") | Q(lease_expires_at__lt=now) | Q(owner=owner)
    claimed = ShardLease.objects.filter(Q(pk=lease.pk) & free).update(
        owner=owner, lease_expires_at=now + timedelta(seconds=seconds),
        lease_counter=lease.lease_counter + 1 if lease.owner != owner else lease.lease_counter,
    )
    if not claimed:
        return None
    lease.refresh_from_db()
    return lease if lease.owner == owner else None


def shard_lease_release(lease: ShardLease) -> None:
    ShardLease.objects.filter(pk=lease.pk, owner=lease.owner, lease_counter=lease.lease_counter).update(
        owner="", lease_expires_at=None)


def _checkpoint(lease: ShardLease, *, sequence: str, records: int, behind: int | None, finished: bool) -> None:
    now = timezone.now()
    updates = {"checkpoint": sequence, "lease_expires_at": now + timedelta(seconds=lease_seconds()),
               "last_batch_at": now, "millis_behind_latest": behind}
    if finished:
        updates["finished_at"] = now
    with transaction.atomic():
        moved = ShardLease.objects.filter(pk=lease.pk, owner=lease.owner, lease_counter=lease.lease_counter)
        if not moved.update(**updates):
            raise LeaseLost(f"{lease} was taken over; checkpoint not moved")
        ShardLease.objects.filter(pk=lease.pk).update(records_read=lease.records_read + records)
    lease.checkpoint = sequence or lease.checkpoint
    lease.records_read += records
    if finished:
        lease.finished_at = now


# --- one batch ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class BatchOutcome:
    read: int = 0
    valid: int = 0
    quarantined: int = 0
    skipped: int = 0
    in_batch_duplicates: int = 0
    window_duplicates: int = 0
    already_landed: bool = False
    finished_shard: bool = False
    millis_behind_latest: int | None = None

    def add(self, other: BatchOutcome) -> None:
        for field in ("read", "valid", "quarantined", "skipped", "in_batch_duplicates", "window_duplicates"):
            setattr(self, field, getattr(self, field) + getattr(other, field))


def _kinesis_call(call: Callable[..., dict], sleep: Callable[[float], None] = time.sleep, **kwargs) -> dict:
    """One Kinesis read, retried with backoff while the shard is throttled; TransientError if it stays so."""
    from botocore.exceptions import BotoCoreError, ClientError

    delay = 0.1
    for attempt in range(THROTTLE_RETRIES):
        try:
            return call(**kwargs)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code not in THROTTLE_CODES:
                raise TransientError(f"Kinesis refused the read: {code or err}") from err
            if attempt == THROTTLE_RETRIES - 1:
                raise TransientError(f"Kinesis kept throttling reads ({code})") from err
            log.info("kinesis throttled (%s); retrying in %.1fs", code, delay)
        except BotoCoreError as err:
            raise TransientError(f"Kinesis is unreachable: {err}") from err
        sleep(delay)
        delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


def _read_records(kinesis, lease: ShardLease, max_records: int) -> tuple[list[dict], int | None, bool]:
    if lease.checkpoint:
        start = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": lease.checkpoint}
    else:
        start = {"ShardIteratorType": "TRIM_HORIZON"}
    iterator = _kinesis_call(kinesis.get_shard_iterator, StreamName=lease.stream, ShardId=lease.shard_id,
                             **start)["ShardIterator"]
    records: list[dict] = []
    behind, closed = None, False
    while iterator and len(records) < max_records:
        response = _kinesis_call(kinesis.get_records, ShardIterator=iterator,
                                 Limit=min(10_000, max_records - len(records)))
        records.extend(response["Records"])
        behind = response.get("MillisBehindLatest")
        iterator = response.get("NextShardIterator")
        if not response["Records"]:
            break
    if iterator is None:
        closed = True
    return records, behind, closed


def _dedup_window_hits(event_ids: list[str], batch_id: str) -> int:
    """How many event ids were already seen in the recent window by another batch (Redis)."""
    if not settings.REDIS_URL or not event_ids:
        return 0
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    pipe = client.pipeline(transaction=False)
    for event_id in event_ids:
        pipe.set(f"dedup:{event_id}", batch_id, nx=True, ex=DEDUP_WINDOW_SECONDS, get=True)
    previous = pipe.execute()
    return sum(1 for value in previous if value is not None and value.decode() != batch_id)


def shard_batch_process(*, kinesis, warehouse, lease: ShardLease, max_records: int = BATCH_MAX_RECORDS,
                        now_micros: Callable[[], int] | None = None,
                        after_archive: Callable[[], None] | None = None) -> BatchOutcome:
    """Read one batch after the checkpoint and carry it through archive → landing → checkpoint."""
    from warehouse.connection import WarehouseUnavailable
    from warehouse.load import landing_insert

    clock = now_micros or (lambda: time.time_ns() // 1000)
    raw, behind, closed = _read_records(kinesis, lease, max_records)
    outcome = BatchOutcome(millis_behind_latest=behind)
    if not raw:
        # A closed shard gets no new records: an empty read after the checkpoint means it is done.
        closed = closed or bool(lease.ending_sequence_number)
        _checkpoint(lease, sequence=lease.checkpoint, records=0, behind=behind, finished=closed)
        outcome.finished_shard = closed
        return outcome
    records = [
        RawRecord(shard_id=lease.shard_id, sequence_number=r["SequenceNumber"], data=r["Data"],
                  arrival_micros=int(r["ApproximateArrivalTimestamp"].timestamp() * 1_000_000))
        for r in raw
    ]
    batch_id = f"{lease.stream}/{lease.shard_id}/{records[0].sequence_number}-{records[-1].sequence_number}"
    plan = archive.archive_plan(records, base_uri=settings.RAW_ARCHIVE_URL)
    try:
        archive.archive_write(plan)
    except (OSError, ObstoreError) as err:  # network, permissions, a full disk
        raise TransientError(f"could not write the raw archive: {err}") from err
    if after_archive is not None:
        after_archive()  # fault-injection point for tests: "killed between archive and checkpoint"
    result: BatchResult = process_batch(records, contract_index_current(), stream=lease.stream, batch_id=batch_id,
                                        archive_locations=plan.locations, now_micros=clock())
    try:
        landed = landing_insert(warehouse, batch_id=batch_id, rows=result.landing_json(),
                                quarantine_rows=result.quarantine_json(),
                                meta={"kind": "live", "stream": lease.stream, "shard_id": lease.shard_id,
                                      "first_sequence": records[0].sequence_number,
                                      "last_sequence": records[-1].sequence_number})
    except WarehouseUnavailable as err:
        # Lag grows, nothing is lost: the checkpoint stays, and the batch is read again later.
        raise TransientError(f"warehouse unavailable: {err}") from err
    outcome.read = len(records)
    outcome.valid = len(result.events)
    outcome.quarantined = len(result.quarantine)
    outcome.skipped = result.skipped
    outcome.in_batch_duplicates = result.in_batch_duplicates
    outcome.already_landed = bool(getattr(landed, "already_landed", False))
    outcome.window_duplicates = _dedup_window_hits(result.event_ids, batch_id)
    _checkpoint(lease, sequence=records[-1].sequence_number, records=len(records), behind=behind,
                finished=False)
    return outcome


# --- a consumer session and the drain ----------------------------------------------------------------

_ensured_databases: set[str] = set()


def warehouse_ready(warehouse) -> None:
    """Create the warehouse tables once per process and database (idempotent DDL, so races are fine)."""
    from warehouse.ddl import warehouse_ensure

    database = settings.SNOWFLAKE["database"]
    if database not in _ensured_databases:
        warehouse_ensure(warehouse)
        _ensured_databases.add(database)


def new_owner_token() -> str:
    return uuid.uuid4().hex


def shard_consume(*, stream: str, shard_id: str, owner: str, budget_seconds: float = 10.0,
                  max_records: int = BATCH_MAX_RECORDS) -> tuple[BatchOutcome, bool]:
    """Consume batches for up to `budget_seconds`. Returns (counts, still_owned) so the task can
    re-enqueue itself while it holds the lease."""
    from ingest_workers.aws import kinesis_client
    from warehouse.connection import warehouse_connect

    lease = shard_lease_acquire(stream=stream, shard_id=shard_id, owner=owner)
    total = BatchOutcome()
    if lease is None:
        return total, False
    kinesis = kinesis_client()
    deadline = time.monotonic() + budget_seconds
    with warehouse_connect() as warehouse:
        warehouse_ready(warehouse)
        while time.monotonic() < deadline:
            outcome = shard_batch_process(kinesis=kinesis, warehouse=warehouse, lease=lease, max_records=max_records)
            total.add(outcome)
            if outcome.finished_shard:
                return total, False
            if outcome.read == 0:
                break
    return total, True


@dataclasses.dataclass
class DrainReport:
    read: int = 0
    valid: int = 0
    quarantined: int = 0
    duplicates: int = 0
    merged: int = 0
    skipped: int = 0
    batches: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def pipeline_drain(*, stream: str | None = None, max_records: int = BATCH_MAX_RECORDS,
                   max_seconds: float = 600.0, progress: Callable[[str], None] | None = None) -> DrainReport:
    """Consume every shard until the stream is empty, then merge. In-process: no Celery needed."""
    from ingest_workers.aws import kinesis_client
    from warehouse.connection import warehouse_connect
    from warehouse.ddl import warehouse_ensure
    from warehouse.load import merge_landing

    stream = stream or settings.KINESIS_STREAM_NAME
    kinesis = kinesis_client()
    owner = f"drain-{new_owner_token()}"
    report = DrainReport()
    deadline = time.monotonic() + max_seconds
    with warehouse_connect() as warehouse:
        warehouse_ensure(warehouse)
        while time.monotonic() < deadline:
            progressed = False
            for lease in shard_sync(kinesis=kinesis, stream=stream):
                held = shard_lease_acquire(stream=stream, shard_id=lease.shard_id, owner=owner)
                if held is None:
                    continue
                try:
                    while time.monotonic() < deadline:
                        outcome = shard_batch_process(kinesis=kinesis, warehouse=warehouse, lease=held,
                                                      max_records=max_records)
                        if outcome.read:
                            progressed = True
                            report.batches += 1
                            report.read += outcome.read
                            report.valid += outcome.valid
                            report.quarantined += outcome.quarantined
                            report.skipped += outcome.skipped
                            if progress:
                                progress(f"{held.shard_id}: {report.read} read, {report.valid} valid, "
                                         f"{report.quarantined} quarantined")
                        if outcome.finished_shard:
                            progressed = True
                        if outcome.read == 0 or outcome.finished_shard:
                            break
                finally:
                    shard_lease_release(held)
            if not progressed:
                break
        merged = merge_landing(warehouse)
    report.merged = merged.events_inserted
    report.duplicates = merged.duplicates_counted
    return report


def ingest_supervise(*, stream: str | None, enqueue: Callable[[str, str], object]) -> int:
    """Enqueue a consumer for every unfinished shard whose lease is free or expired."""
    from ingest_workers.aws import kinesis_client

    stream = stream or settings.KINESIS_STREAM_NAME
    now = timezone.now()
    started = 0
    for lease in shard_sync(kinesis=kinesis_client(), stream=stream):
        if lease.finished_at is not None or not _parents_finished(lease):
            continue
        if lease.owner and lease.lease_expires_at and lease.lease_expires_at > now:
            continue
        enqueue(stream, lease.shard_id)
        started += 1
    return started


def warehouse_merge_run() -> dict:
    from warehouse.connection import warehouse_connect
    from warehouse.load import merge_landing

    with warehouse_connect() as warehouse:
        warehouse_ready(warehouse)
        # Bounded, so one MERGE stays well inside the connector's per-statement network timeout.
        return dataclasses.asdict(merge_landing(warehouse, max_batches=MERGE_MAX_BATCHES))
