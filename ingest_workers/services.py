"""The shell around the pure pipeline: shard leases, reading Kinesis, archive, landing, checkpoints,
retries and parking, and the merger.

One *unit* of a shard (``ShardReader.process_unit``), effects in this order:
  1. read records after the position: on opening, the PostgreSQL checkpoint (everything up to it is
     archived and landed); empty pages are followed, and a shard is finished only on Kinesis's own
     end-of-shard signals (``NextShardIterator`` null, or the checkpoint at the shard's
     ``EndingSequenceNumber``);
  2. place the records in the shard's open raw-archive object (``archive.ShardArchive``: rolled by
     size or age; every record's object and line is known before it is parsed);
  3. run the pure pipeline on the records the landing channel has not committed yet (a new owner
     re-reads from the checkpoint to rebuild the archive object its predecessor had open, and skips
     the landing of what the channel's committed offset token says is landed); every per-record step
     is guarded (a bad record is quarantined);
  4. add the lines to the object; write the objects that rolled (create-only);
  5. append the landing rows (events and quarantine rows) to the shard's channel with the unit's
     last sequence number as the offset token, and wait for the commit (or settle it later);
  6. move the checkpoint to the last record both archived and landed, fenced by the lease's token
     (``lease_counter``), on the database's clock.
A unit that fails is retried with exponential backoff and jitter; after ``INGEST_RETRY_BUDGET``
failures the shard is parked (shown on the pipeline page, retried after
``INGEST_PARKED_RETRY_SECONDS`` or at once with ``manage.py shard_unpark``), never spun on.

The merger (``warehouse_merge_run``) holds the ``merger`` lease, renewed by a heartbeat thread, and
MERGEs what the channels committed (``warehouse.landing``): one merger at a time, idempotent if two
ever overlap.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, timedelta
from typing import Any

import orjson
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Now
from django.utils import timezone
from obstore.exceptions import BaseError as ObstoreError

from ingest_workers import archive
from ingest_workers.models import ShardLease, WorkerLease
from ingest_workers.pipeline import (
    BATCH_RECORDS,
    NO_SOURCE,
    BatchResult,
    ContractIndex,
    QuarantineRow,
    RawRecord,
    batch_results_concat,
    batch_suppress,
    process_batch,
    raw_record,
)
from ingest_workers.pipeline_stats import (
    pipeline_lag_record,
    pipeline_merge_record,
    pipeline_minutes_flush,
    pipeline_unit_record,
)
from warehouse.channels import ChannelError, ChannelInvalidated, LandingChannel, LandingClient, offset_max

log = logging.getLogger(__name__)

#: records per ``process_batch`` call (``pipeline.BATCH_RECORDS``: a batch's events are freed while
#: they are still in the CPU caches)
BATCH_MAX_RECORDS = BATCH_RECORDS
#: records per unit: one GetRecords read, one archive append, one landing transaction, one checkpoint.
#: Each unit costs ~9 ms of consumer CPU whatever its size (round trips to Kinesis, the warehouse and
#: the database: bench/bench_consumer.py), so a unit is ten pipeline batches; a production shard at
#: peak gathers about this many records per tip interval (docs/capacity.md)
UNIT_MAX_RECORDS = 2000
THROTTLE_RETRIES = 6
THROTTLE_CODES = frozenset({"ProvisionedThroughputExceededException", "LimitExceededException",
                            "ThrottlingException"})
#: Empty GetRecords pages followed within one read while the shard is behind its tip (Kinesis: "it
#: might take multiple calls to get to a portion that contains records").
EMPTY_PAGES_PER_READ = 5
RETRY_BASE_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0
COMMIT_TIMEOUT_SECONDS = 60.0


class TransientError(Exception):
    """Worth retrying: the stream, the archive or the warehouse is unavailable for now."""


class LeaseLost(Exception):
    """Another worker took the shard over; this worker must stop without moving the checkpoint."""


def lease_seconds() -> int:
    return int(getattr(settings, "INGEST_LEASE_SECONDS", 30))


def retry_budget() -> int:
    return int(getattr(settings, "INGEST_RETRY_BUDGET", 8))


def parked_retry_seconds() -> int:
    return int(getattr(settings, "INGEST_PARKED_RETRY_SECONDS", 600))


def dedup_window_days() -> int:
    from warehouse.ddl import DEDUP_WINDOW_DAYS_DEFAULT

    return int(getattr(settings, "INGEST_DEDUP_WINDOW_DAYS", DEDUP_WINDOW_DAYS_DEFAULT))


def backoff_seconds(failures: int, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: about 1, 2, 4 … s, at most ``RETRY_MAX_SECONDS``, each drawn
    from [half, full] so shards that failed together do not retry together."""
    ceiling = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** max(0, failures - 1))
    return ceiling * (rng or random).uniform(0.5, 1.0)


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

def shard_channel_name(stream: str, shard_id: str) -> str:
    """The landing channel of a shard (Snowpipe Streaming channel names: letters, digits, - and _)."""
    return f"{stream}-{shard_id}"


def shard_sync(*, kinesis, stream: str) -> list[ShardLease]:
    """Make sure every shard of the stream (including children after a reshard) has a lease row."""
    shards, token = [], None
    while True:
        page = kinesis.list_shards(NextToken=token) if token else kinesis.list_shards(StreamName=stream)
        shards.extend(page["Shards"])
        token = page.get("NextToken")
        if not token:
            break
    known = {lease.shard_id: lease for lease in ShardLease.objects.filter(stream=stream)}
    for shard in shards:
        ending = shard.get("SequenceNumberRange", {}).get("EndingSequenceNumber", "")
        lease = known.get(shard["ShardId"])
        if lease is None:
            ShardLease.objects.get_or_create(
                stream=stream, shard_id=shard["ShardId"],
                defaults={"parent_shard_id": shard.get("ParentShardId", ""),
                          "adjacent_parent_shard_id": shard.get("AdjacentParentShardId", ""),
                          "ending_sequence_number": ending},
            )
        elif ending and not lease.ending_sequence_number:
            ShardLease.objects.filter(pk=lease.pk).update(ending_sequence_number=ending)
    return list(ShardLease.objects.filter(stream=stream))


def _parents_finished(lease: ShardLease, leases: dict[str, ShardLease] | None = None) -> bool:
    """Children of a split/merge are read only after their parents, to keep each key in order."""
    parents = [p for p in (lease.parent_shard_id, lease.adjacent_parent_shard_id) if p]
    if not parents:
        return True
    if leases is not None:
        return all(leases[p].finished_at is not None for p in parents if p in leases)
    tracked = ShardLease.objects.filter(stream=lease.stream, shard_id__in=parents)
    return all(p.finished_at is not None for p in tracked)


def _available() -> Q:
    """Leases nobody reads right now: free, or expired on the database's clock."""
    return Q(owner="") | Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=Now())


def shard_lease_acquire(*, stream: str, shard_id: str, owner: str, seconds: int | None = None,
                        steal_from: str | None = None) -> ShardLease | None:
    """Take the lease if it is free, expired, ours, or (``steal_from``) held by that worker.
    EVERY acquisition takes a new fencing token, so an earlier holder (even one with the same owner
    name, a redelivered task) can no longer renew or checkpoint. Returns the lease, or None."""
    seconds = seconds or lease_seconds()
    lease = ShardLease.objects.filter(stream=stream, shard_id=shard_id).first()
    if lease is None or lease.finished_at is not None or not _parents_finished(lease):
        return None
    takeable = _available() | Q(owner=owner)
    if steal_from:
        takeable |= Q(owner=steal_from)
    parked_ok = Q(parked_at__isnull=True) | Q(parked_at__lt=Now() - timedelta(seconds=parked_retry_seconds()))
    claimed = ShardLease.objects.filter(Q(pk=lease.pk) & takeable & parked_ok, finished_at__isnull=True).update(
        owner=owner, lease_expires_at=Now() + timedelta(seconds=seconds), lease_counter=F("lease_counter") + 1)
    if not claimed:
        return None
    lease.refresh_from_db()
    return lease if lease.owner == owner else None


def shard_lease_renew(lease: ShardLease, seconds: int | None = None) -> None:
    """Extend the lease (heartbeat); ``LeaseLost`` when another worker holds it now."""
    renewed = ShardLease.objects.filter(pk=lease.pk, owner=lease.owner, lease_counter=lease.lease_counter).update(
        lease_expires_at=Now() + timedelta(seconds=seconds or lease_seconds()))
    if not renewed:
        raise LeaseLost(f"{lease} was taken over")


def shard_lease_release(lease: ShardLease) -> None:
    ShardLease.objects.filter(pk=lease.pk, owner=lease.owner, lease_counter=lease.lease_counter).update(
        owner="", lease_expires_at=None)


def _checkpoint(lease: ShardLease, *, sequence: str, records: int, behind: int | None, finished: bool) -> None:
    updates: dict[str, Any] = {
        "checkpoint": sequence, "lease_expires_at": Now() + timedelta(seconds=lease_seconds()),
        "last_batch_at": Now(), "millis_behind_latest": behind, "records_read": F("records_read") + records,
        "failures": 0, "retry_at": None, "last_error": "", "parked_at": None, "park_reason": "",
    }
    if finished:
        updates["finished_at"] = Now()
    moved = ShardLease.objects.filter(pk=lease.pk, owner=lease.owner, lease_counter=lease.lease_counter)
    if not moved.update(**updates):
        raise LeaseLost(f"{lease} was taken over; checkpoint not moved")
    lease.checkpoint = sequence or lease.checkpoint
    lease.records_read += records
    lease.failures = 0
    if finished:
        lease.finished_at = timezone.now()


def shard_failure_record(lease: ShardLease, *, error: BaseException, unit: str,
                         rng: random.Random | None = None) -> float | None:
    """Count a failed attempt at ``unit``: returns the backoff before the next attempt, or None
    when the retry budget is spent and the shard is now parked (its lease released)."""
    failures = lease.failures + 1
    text = f"{type(error).__name__}: {error}"[:2000]
    if failures >= retry_budget():
        ShardLease.objects.filter(pk=lease.pk, owner=lease.owner, lease_counter=lease.lease_counter).update(
            failures=failures, last_error=text, parked_at=Now(), retry_at=None,
            park_reason=f"{failures} failed attempts at {unit}; last: {text}"[:2000], owner="", lease_expires_at=None)
        log.error("shard %s parked after %d failed attempts at %s: %s", lease, failures, unit, text)
        lease.failures = failures
        return None
    delay = backoff_seconds(failures, rng)
    ShardLease.objects.filter(pk=lease.pk, owner=lease.owner, lease_counter=lease.lease_counter).update(
        failures=failures, last_error=text, retry_at=Now() + timedelta(seconds=delay))
    lease.failures = failures
    log.warning("shard %s: attempt %d at %s failed, retrying in %.1fs: %s", lease, failures, unit, delay, text)
    return delay


def shard_unpark(*, stream: str, shard_id: str | None = None) -> int:
    """Let parked shards (all of the stream's, or one) be read again now. Returns how many."""
    parked = ShardLease.objects.filter(stream=stream, parked_at__isnull=False)
    if shard_id:
        parked = parked.filter(shard_id=shard_id)
    return parked.update(parked_at=None, park_reason="", failures=0, retry_at=None)


# --- reading a unit ----------------------------------------------------------------------------------

@dataclasses.dataclass
class BatchOutcome:
    read: int = 0
    valid: int = 0
    quarantined: int = 0
    skipped: int = 0
    in_batch_duplicates: int = 0
    landed_rows: int = 0
    #: records dropped because they carry an erased subject's identifier (deletion.suppression), and per source
    suppressed: int = 0
    suppressed_per_source: dict[str, int] = dataclasses.field(default_factory=dict)
    finished_shard: bool = False
    millis_behind_latest: int | None = None
    #: this thread's CPU seconds per step of the unit (read, pipeline, archive, land, checkpoint)
    cpu: dict[str, float] = dataclasses.field(default_factory=dict)

    def add(self, other: BatchOutcome) -> None:
        for field in ("read", "valid", "quarantined", "skipped", "in_batch_duplicates", "landed_rows", "suppressed"):
            setattr(self, field, getattr(self, field) + getattr(other, field))
        for step, seconds in other.cpu.items():
            self.cpu[step] = self.cpu.get(step, 0.0) + seconds
        for source, n in other.suppressed_per_source.items():
            self.suppressed_per_source[source] = self.suppressed_per_source.get(source, 0) + n


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


def _iterator_expired(err: TransientError) -> bool:
    return "ExpiredIteratorException" in str(err)


class _CpuTicks:
    """CPU seconds of this thread between calls, by step name (for the consumer's own figures)."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self._last = time.thread_time()

    def __call__(self, step: str) -> None:
        now = time.thread_time()
        self.cpu[step] = self.cpu.get(step, 0.0) + now - self._last
        self._last = now


@dataclasses.dataclass(frozen=True)
class _PendingUnit:
    token: str  # the unit's last sequence number, its offset token
    records: int
    rows: int  # landing rows appended (0: nothing for the channel to commit)
    behind: int | None


def archive_roll_seconds() -> float:
    return float(getattr(settings, "RAW_ARCHIVE_ROLL_SECONDS", 0))


def archive_roll_bytes() -> int:
    return int(float(getattr(settings, "RAW_ARCHIVE_ROLL_MB", 16)) * 1024 * 1024)


#: a shard read to its tip rolls its object this long after the object's window ended (records
#: stamped just before the window's end may still be on their way)
ROLL_GRACE_SECONDS = 2.0


class ShardReader:
    """One owned shard: its lease, its landing channel, its open archive object and where reading goes on.

    Positions: ``position`` (read up to here), ``landed_through`` (the channel committed up to here)
    and ``checkpointed`` (the PostgreSQL checkpoint). The checkpoint only ever moves to the end of a
    written archive object whose records are all landed, so the next owner always starts at an
    object's first record: it finds that object stored (and adopts it) or rebuilds it from the same
    first record by the same rules. While it re-reads what its predecessor landed (``replay_until``)
    a reader rolls objects only where the records say so (windows, size), never on the clock or when
    it stops, so the lineage its predecessor landed stays true.

    The GetRecords iterator is kept between units, so a run of empty pages in the middle of a shard
    is walked through instead of restarting at the checkpoint each time (Kinesis returns empty pages
    where a shard has no records for a while, and only ``NextShardIterator`` moves past them).
    """

    def __init__(self, *, kinesis: Any, landing: LandingClient, lease: ShardLease):
        self.kinesis = kinesis
        self.landing = landing
        self.lease = lease
        self.channel: LandingChannel | None = None
        self.position: str | None = None  # resume after this sequence number
        self.landed_through: str | None = None
        self.checkpointed: str | None = None
        self.replay_until: str | None = None
        self.archive: archive.ShardArchive | None = None
        self._iterator: str | None = None
        self._iterator_after: str | None = None  # the position the kept iterator continues from
        #: units appended but not yet seen committed (``defer_commit``), oldest first
        self.pending: list[_PendingUnit] = []
        self._finish_when_settled = False
        #: written objects the checkpoint has not passed yet: (last sequence number, records placed).
        #: The lease's ``records_read`` counts an object's records when the checkpoint passes it, so a
        #: record re-read by the next owner after a crash is counted once.
        self._written: list[tuple[str, int]] = []
        self._unit_after: str | None = None  # where the unit process_unit is on (or last was on) starts

    def open(self) -> None:
        """Open the channel (fencing its previous writer) and find the resume points."""
        from warehouse.channels import offset_after

        self.channel = self.landing.open_channel(shard_channel_name(self.lease.stream, self.lease.shard_id))
        committed = self.channel.latest_committed_offset_token()
        self.position = self.checkpointed = self.lease.checkpoint or None
        self.landed_through = offset_max(self.position, committed)
        self.replay_until = committed if offset_after(committed, self.position) else None
        self.archive = archive.ShardArchive(
            base_uri=settings.RAW_ARCHIVE_URL, roll_seconds=archive_roll_seconds(), roll_bytes=archive_roll_bytes(),
            existing=archive.archive_object_last_seq)
        if self.replay_until:
            log.info("shard %s resumes after its checkpoint %s; the channel committed up to %s: records up to "
                     "there are archived again, not landed again", self.lease, self.position or "none",
                     self.replay_until)

    @property
    def unit_label(self) -> str:
        """The unit ``process_unit`` is working on, for logs and park reasons: named by where it starts
        (``position`` when the unit began; a unit that fails after landing has moved it on)."""
        if self._unit_after:
            return f"the unit after sequence number {self._unit_after}"
        return "the unit at the shard's start (nothing checkpointed yet)"

    @property
    def replaying(self) -> bool:
        """Re-reading records the previous owner landed (their lineage names objects it had open)."""
        from warehouse.channels import offset_after

        return self.replay_until is not None and offset_after(self.replay_until, self.position)

    def settle(self, committed: str | None) -> bool:
        """Checkpoint the pending units the channel has committed (``committed``: its latest token).
        A unit that landed no rows has nothing to commit: it settles with the units before it.
        Returns True when the shard is now finished."""
        from warehouse.channels import offset_after

        settled: list[_PendingUnit] = []
        for unit in self.pending:
            if unit.rows and offset_after(unit.token, committed):
                break
            settled.append(unit)
        if not settled:
            return False
        self.pending = self.pending[len(settled):]
        self.landed_through = offset_max(self.landed_through, settled[-1].token)
        return self._checkpoint(behind=settled[-1].behind, finished=not self.pending and self._finish_when_settled)

    def _checkpoint(self, *, behind: int | None, finished: bool) -> bool:
        """Move the checkpoint to the last written object whose records are all landed (counting them);
        renews the lease either way. Returns True when the shard is finished."""
        from warehouse.channels import offset_after

        passed, records = 0, 0
        for last_seq, placed in self._written:
            if offset_after(last_seq, self.landed_through):
                break
            passed += 1
            records += placed
        position = self._written[passed - 1][0] if passed else self.checkpointed
        finished = finished and position == self.position
        _checkpoint(self.lease, sequence=position or "", records=records, behind=behind, finished=finished)
        del self._written[:passed]
        self.checkpointed = position
        return finished

    def flush(self) -> None:
        """Roll and write the open archive object and checkpoint (a reader that stops while it still
        holds its lease: shard given up, shutdown, the end of a drain pass). While replaying its
        predecessor's records it rolls nothing (the next owner replays them again). ``LeaseLost`` if
        the lease is no longer its own."""
        if self.archive is None:
            return
        if not self.replaying:
            self.archive.roll()
        self._archive_write()
        self._checkpoint(behind=self.lease.millis_behind_latest, finished=False)

    def _archive_write(self) -> None:
        """Write the objects that rolled, oldest first. An object leaves the reader's care only once
        it is stored, so a reader whose write failed still holds it."""
        assert self.archive is not None
        for sealed in self.archive.sealed():
            if sealed.blob is not None:
                try:
                    archive.archive_put_new(sealed.key, sealed.blob)
                except archive.ArchiveObjectExists as err:
                    # another reader of this shard wrote it after we looked (a lease taken over
                    # under us): start again from the checkpoint, adopting what it wrote
                    raise TransientError(f"archive object {sealed.key} was written by another reader") from err
                except (OSError, ObstoreError) as err:  # network, permissions, a full disk
                    raise TransientError(f"could not write the raw archive object {sealed.key}: {err}") from err
            self.archive.written()
            self._written.append((sealed.last_seq, sealed.records))

    def close(self) -> None:
        if self.channel is not None:
            try:
                self.channel.close()
            except ChannelError:  # pragma: no cover - closing is best effort
                pass

    @property
    def at_shard_end(self) -> bool:
        ending = self.lease.ending_sequence_number
        return bool(ending) and self.position == ending

    def _start_iterator(self) -> str | None:
        if self.position:
            start = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": self.position}
        else:
            start = {"ShardIteratorType": "TRIM_HORIZON"}
        return _kinesis_call(self.kinesis.get_shard_iterator, StreamName=self.lease.stream,
                             ShardId=self.lease.shard_id, **start)["ShardIterator"]

    def read(self, max_records: int) -> tuple[list[dict], int | None, bool]:
        """(records, millis behind the tip, shard ended): at most ``max_records`` after the position."""
        if self._iterator is None or self._iterator_after != self.position:
            self._iterator = self._start_iterator()
        records: list[dict] = []
        behind, ended, empty = None, False, 0
        iterator = self._iterator
        while iterator and len(records) < max_records:
            try:
                response = _kinesis_call(self.kinesis.get_records, ShardIterator=iterator,
                                         Limit=min(10_000, max_records - len(records)))
            except TransientError as err:
                if not _iterator_expired(err) or records:
                    raise
                iterator = self._start_iterator()  # iterators live 5 minutes
                continue
            records.extend(response["Records"])
            behind = response.get("MillisBehindLatest")
            iterator = response.get("NextShardIterator")
            if iterator is None:
                ended = True  # Kinesis's end-of-shard signal: a closed shard read to its end
                break
            if response["Records"]:
                empty = 0
                if behind == 0:
                    break  # at the tip: hand over what we have
            else:
                empty += 1
                if behind == 0 or empty >= EMPTY_PAGES_PER_READ:
                    break  # nothing more now; the kept iterator goes on from here next time
        self._iterator = iterator
        self._iterator_after = records[-1]["SequenceNumber"] if records else self.position
        return records, behind, ended

    def process_unit(self, *, max_records: int = UNIT_MAX_RECORDS, now_micros: Callable[[], int] | None = None,
                     after_archive: Callable[[], None] | None = None,
                     before_checkpoint: Callable[[], None] | None = None,
                     defer_commit: bool = False) -> BatchOutcome:
        """Read one unit and carry it through archive placement → pipeline → archive → channel → checkpoint.

        With ``defer_commit`` and a channel that commits after the append returns (Snowpipe
        Streaming), the unit is not waited for: it is remembered as pending, the next unit may be
        read at once, and ``settle`` checkpoints it when the channel's committed token reaches it."""
        from warehouse.channels import offset_after
        if self.channel is None:
            self.open()
        assert self.channel is not None and self.archive is not None
        clock = now_micros or (lambda: time.time_ns() // 1000)
        lease = self.lease
        self._unit_after = self.position
        tick = _CpuTicks()
        raw, behind, ended = self.read(max_records)
        outcome = BatchOutcome(millis_behind_latest=behind, cpu=tick.cpu)
        if not raw:
            self._idle(outcome, ended=ended, now_micros=clock())
            tick("archive")
            pipeline_lag_record(shard_id=lease.shard_id, lag_ms=behind)
            return outcome
        shard_id = lease.shard_id
        records = [raw_record(shard_id, r["SequenceNumber"], r["Data"],
                              int(r["ApproximateArrivalTimestamp"].timestamp() * 1_000_000))
                   for r in raw]
        first, last = records[0].sequence_number, records[-1].sequence_number
        unit = f"{shard_channel_name(lease.stream, lease.shard_id)}/{first}-{last}"
        tick("read")
        # every record's archive line is known before the pipeline runs (lineage points to it)
        locations = self.archive.place(records)
        # records the channel committed before this reader opened are archived again, not landed again
        fresh = 0
        if offset_after(self.landed_through, self.position):
            while fresh < len(records) and not offset_after(records[fresh].sequence_number, self.landed_through):
                fresh += 1
        index = contract_index_current()
        tick("archive")
        result, rows, sealer, not_json = _unit_pipeline(records, fresh, locations, index, stream=lease.stream,
                                                        batch_id=unit, now_micros=clock(), tick=tick)
        # records before ``fresh`` did not go through the pipeline: the archive checks them itself
        self.archive.append(not_json if fresh == 0 else _not_json_beyond(records, fresh, not_json), sealer)
        finished = ended or (bool(lease.ending_sequence_number) and last == lease.ending_sequence_number)
        if finished or archive_roll_seconds() <= 0:
            self.archive.roll()
        self._archive_write()
        if after_archive is not None:
            after_archive()  # fault-injection point for tests: "killed between archive and landing"
        tick("archive")
        deferred = defer_commit and not getattr(self.channel, "commits_on_append", False)
        appended_rows = self._land(rows, last=last, unit=unit, wait=not deferred) if fresh < len(records) else 0
        self.position = last
        tick("land")
        if deferred:
            self.pending.append(_PendingUnit(last, len(records), appended_rows, behind))
            self._finish_when_settled = self._finish_when_settled or finished
            finished = False
        else:
            self.landed_through = offset_max(self.landed_through, last)
            if before_checkpoint is not None:
                before_checkpoint()  # fault-injection point for tests: "killed between landing and checkpoint"
            finished = self._checkpoint(behind=behind, finished=finished)
        tick("checkpoint")
        # the per-minute metrics and /metrics counters (in memory; written every few seconds)
        pipeline_unit_record(result, shard_id=lease.shard_id, lag_ms=behind)
        outcome.read = len(records)
        outcome.valid = sum(counts.events for counts in result.per_source.values())  # its events were freed
        outcome.quarantined = len(result.quarantine)
        outcome.skipped = result.skipped
        outcome.in_batch_duplicates = result.in_batch_duplicates
        outcome.landed_rows = appended_rows
        outcome.suppressed_per_source = {name: c.suppressed for name, c in result.per_source.items() if c.suppressed}
        outcome.suppressed = sum(outcome.suppressed_per_source.values())
        outcome.finished_shard = finished
        return outcome


    def _idle(self, outcome: BatchOutcome, *, ended: bool, now_micros: int) -> None:
        """A read that found nothing new. At the shard's end the open object rolls; at its tip
        (``MillisBehindLatest`` 0, not on empty pages behind it) once the object's window has ended,
        unless this reader is still replaying its predecessor's records."""
        assert self.archive is not None
        finished = ended or self.at_shard_end
        at_tip = outcome.millis_behind_latest == 0
        if finished or (at_tip and not self.replaying and self.archive.roll_due(now_micros, ROLL_GRACE_SECONDS)):
            self.archive.roll()
        self._archive_write()
        if self.pending:  # earlier units are not committed yet: settle checkpoints and finishes
            self._finish_when_settled = self._finish_when_settled or finished
            return
        outcome.finished_shard = self._checkpoint(behind=outcome.millis_behind_latest, finished=finished)

    def _land(self, rows: list[bytes], *, last: str, unit: str, wait: bool) -> int:
        """Append the unit's landing rows under its offset token (and wait for the commit). Returns rows."""
        assert self.channel is not None
        try:
            appended = self.channel.append(rows, offset_token=last)
            if wait:
                self.channel.wait_for_commit(last, timeout_seconds=COMMIT_TIMEOUT_SECONDS)
        except ChannelInvalidated as err:
            raise LeaseLost(f"{self.lease}: {err}") from err
        except ChannelError as err:
            if err.transient:
                raise TransientError(f"could not land {unit}: {err}") from err
            raise
        return appended.rows

def _unit_pipeline(records: list[RawRecord], fresh: int, locations: list[tuple[str, int]], index: ContractIndex, *,
                   stream: str, batch_id: str, now_micros: int, tick: Callable[[str], None]):
    """A unit through the pipeline and the erasure rules one batch of ``BATCH_MAX_RECORDS`` at a time:
    (its counts, its landing rows, its archive line sealer, the sequence numbers that are not JSON).
    Each batch's events are checked for erased subjects, serialized, then freed while they are still in
    the CPU's caches (a batch of 200 records keeps its working set there; batches of 1,000 cost ~20%
    more CPU per record, bench/bench_hot_path.py): a unit is ten batches so that its fixed costs (a
    read, a key look-up, a landing transaction, a checkpoint) are paid once for all of them.

    Erasure: once per unit the keyring checks the erasure generation (dropping cached keys after a
    shred, loading new suppression entries); per batch, a record carrying an erased subject's identifier
    lands nothing and is archived without its record; so is a quarantined record one of whose string
    leaves is an erased identifier (``payload_leaf_subjects``: not kept in clear in RAW.QUARANTINE nor
    under the day key). The unit's archive keys come from one ``sealer`` call after its batches (one
    look-up of new subjects per unit); a subject it finds suppressed meanwhile (an erasure this process
    had not seen) takes its records, and the quarantined records naming it, out of their batches, which
    are run again for that (``_late_erasure_applied``). Records before
    ``fresh`` (re-read to rebuild an object, not landed again) go through the pipeline only to learn
    their subjects."""
    from deletion.subject_keys import archive_keyring
    from warehouse.landing import landing_rows_pieces

    keyring = archive_keyring()
    keyring.refresh()
    size = BATCH_MAX_RECORDS
    spans = [(a, min(a + size, fresh), False) for a in range(0, fresh, size)]
    spans += [(a, min(a + size, len(records)), True) for a in range(fresh, len(records), size)]
    needs_subjects = keyring.encrypting or keyring.suppressing
    landing: list[tuple[int, int, BatchResult, bytes]] = []  # (start, end, counts, events' JSON) per batch
    quarantined: list[list[QuarantineRow]] = []  # every batch's quarantine rows (a late erasure checks them)
    not_json: set[str] = set()
    subjects: dict[str, tuple[str, ...]] = {}
    suppressed: set[str] = set()
    for start, end, lands in spans:
        if not (lands or needs_subjects):
            continue
        result, batch_suppressed = _batch_erasure_checked(records[start:end], locations[start:end], index, keyring,
                                                          stream=stream, batch_id=batch_id, now_micros=now_micros,
                                                          tick=tick, subjects=subjects)
        suppressed |= batch_suppressed
        quarantined.append(result.quarantine)
        if lands:
            not_json.update(q.sequence_number for q in result.quarantine if q.reason_code == "undecodable")
            landing.append((start, end, *_batch_landed(result, records[start:end], batch_suppressed, batch_id)))
        tick("erasure")
    known = set(suppressed)
    sealer = keyring.sealer(records, subjects, suppressed)  # may add to ``suppressed``
    if len(suppressed) > len(known):
        sealer = _late_erasure_applied(sealer, records, locations, index, keyring, landing, quarantined, known,
                                       suppressed, stream=stream, batch_id=batch_id, now_micros=now_micros,
                                       tick=tick)
    tick("erasure")
    unit = batch_results_concat([counts for _, _, counts, _ in landing])
    rows = landing_rows_pieces([piece for _, _, _, piece in landing], unit.quarantine_json())
    return unit, rows, sealer, not_json


def _late_erasure_applied(sealer: Any, records: list[RawRecord], locations: list[tuple[str, int]],
                          index: ContractIndex, keyring: Any, landing: list[tuple[int, int, BatchResult, bytes]],
                          quarantined: list[list[QuarantineRow]], known: set[str], suppressed: set[str], *,
                          stream: str, batch_id: str, now_micros: int, tick: Callable[[str], None]) -> Any:
    """The unit's key look-up met a subject erased after this worker's refresh (its key was refused;
    the keyring holds its hash now). As a refreshed worker would have: the quarantined records naming
    it by a string leaf are suppressed too (in every batch: the unit's batches were checked before the
    keyring knew), the landing batches holding newly suppressed records run again without them, and
    the archive's sealer leaves no record in their lines. Returns that sealer."""
    from deletion.suppression import payload_leaf_subjects
    from ingest_workers.archive_crypto import LineSealer

    for rows in quarantined:
        suppressed.update(row.sequence_number for row in rows if row.sequence_number not in suppressed
                          and keyring.suppressed_uncached(payload_leaf_subjects(row.payload)))
    added = suppressed - known
    for k, (start, end, _, _) in enumerate(landing):
        batch = records[start:end]
        if any(r.sequence_number in added for r in batch):
            result = process_batch(batch, index, stream=stream, batch_id=batch_id,
                                   archive_locations=locations[start:end], now_micros=now_micros)
            tick("pipeline")
            mine = {r.sequence_number for r in batch} & suppressed
            landing[k] = (start, end, *_batch_landed(result, batch, mine, batch_id, logged=len(mine - added)))
    return LineSealer(sealer.keys_of, suppressed, clear=sealer.clear)


def _batch_erasure_checked(batch: list[RawRecord], locations: list[tuple[str, int]], index: ContractIndex,
                           keyring: Any, *, stream: str, batch_id: str, now_micros: int,
                           tick: Callable[[str], None], subjects: dict[str, tuple[str, ...]],
                           ) -> tuple[BatchResult, set[str]]:
    """One batch through the pipeline: its result and its records of erased subjects (its records'
    subjects are added to ``subjects``)."""
    from deletion.suppression import payload_leaf_subjects
    from ingest_workers.archive_crypto import records_subjects

    result = process_batch(batch, index, stream=stream, batch_id=batch_id, archive_locations=locations,
                           now_micros=now_micros)
    tick("pipeline")
    found = records_subjects(result.events)
    subjects.update(found)
    suppressed = keyring.suppressed_of(found)
    if keyring.suppressing:
        # a record no event was mapped from names nobody the keyring knows: its string leaves are checked
        suppressed.update(row.sequence_number for row in result.quarantine
                          if keyring.suppressed_uncached(payload_leaf_subjects(row.payload)))
    return result, suppressed


def _batch_landed(result: BatchResult, batch: list[RawRecord], suppressed: set[str],
                  batch_id: str, *, logged: int = 0) -> tuple[BatchResult, bytes]:
    """(the batch's counts, its events' landing JSON) without its suppressed records; its events are
    freed here, still in the caches (the JSON and the counts are all that the unit keeps). ``logged``:
    how many of ``suppressed`` an earlier pass over the batch already logged."""
    if suppressed:
        by_seq = {r.sequence_number: r for r in batch}
        result = batch_suppress(result, {seq: _source_name(by_seq[seq].data) for seq in suppressed})
        if len(suppressed) > logged:
            log.info("suppressed %d record(s) of erased subjects in %s", len(suppressed) - logged, batch_id)
    piece = result.landing_json() if result.events else b""
    result.events, result.event_ids = [], []
    return result, piece


def _source_name(data: bytes) -> str:
    try:
        name = orjson.loads(data).get("source")
    except (orjson.JSONDecodeError, AttributeError):
        name = None
    return name if isinstance(name, str) and name else NO_SOURCE


def _not_json_beyond(records: list[RawRecord], fresh: int, not_json: set[str]) -> set[str]:
    """``not_json`` for a unit whose first ``fresh`` records skipped the pipeline: checked here."""
    checked = set(not_json)
    for record in records[:fresh]:
        if not archive._is_json(record.data, record.sequence_number, None):
            checked.add(record.sequence_number)
    return checked


# --- pooled warehouse clients, per process -----------------------------------------------------------

_landing_clients: dict[str, LandingClient] = {}
_landing_lock = threading.Lock()


def landing_client() -> LandingClient:
    """This process's landing client (one pooled warehouse session, or one Snowpipe Streaming client),
    for the configured database and writer."""
    writer = getattr(settings, "WAREHOUSE_LANDING_WRITER", "embedded")
    key = f"{writer}:{settings.SNOWFLAKE.get('database')}:{settings.SNOWFLAKE.get('port')}"
    with _landing_lock:
        client = _landing_clients.get(key)
        if client is None:
            client = _landing_clients[key] = _landing_client_new(writer)
        return client


def _landing_client_new(writer: str) -> LandingClient:
    if writer == "snowpipe":
        from warehouse.snowpipe import snowpipe_client_from_settings

        return snowpipe_client_from_settings()
    from warehouse.connection import warehouse_connect
    from warehouse.landing import EmbeddedLandingClient

    def connect():
        conn = warehouse_connect(workload="ingest")
        warehouse_ready(conn)
        return conn

    return EmbeddedLandingClient(connect=connect)


def landing_clients_close() -> None:
    with _landing_lock:
        for client in _landing_clients.values():
            client.close()
        _landing_clients.clear()


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


def shard_batch_process(*, kinesis, landing: LandingClient | None = None, lease: ShardLease,
                        max_records: int = UNIT_MAX_RECORDS, **hooks) -> BatchOutcome:
    """One unit of one shard with a fresh reader, its archive object written before it returns (tests
    and one-off tools; consumers keep readers)."""
    reader = ShardReader(kinesis=kinesis, landing=landing or landing_client(), lease=lease)
    try:
        outcome = reader.process_unit(max_records=max_records, **hooks)
        reader.flush()
        return outcome
    finally:
        reader.close()


# --- the drain (one process, every shard, then merge) -------------------------------------------------

@dataclasses.dataclass
class DrainReport:
    read: int = 0
    valid: int = 0
    quarantined: int = 0
    duplicates: int = 0
    merged: int = 0
    skipped: int = 0
    batches: int = 0
    retries: int = 0
    parked: int = 0
    #: records of erased subjects dropped at the worker (deletion.suppression), and per source
    suppressed: int = 0
    suppressed_per_source: dict[str, int] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def pipeline_drain(*, stream: str | None = None, max_records: int = UNIT_MAX_RECORDS,
                   max_seconds: float = 600.0, progress: Callable[[str], None] | None = None,
                   sleep: Callable[[float], None] = time.sleep) -> DrainReport:
    """Consume every shard until the stream is empty, then merge everything landed. In-process: no
    Celery needed. A failing unit is retried with backoff (``sleep``) within ``max_seconds``; when the
    time is up with a shard still failing, the last error is raised (as ``TransientError``)."""
    from ingest_workers.aws import kinesis_client

    stream = stream or settings.KINESIS_STREAM_NAME
    drain = _Drain(kinesis=kinesis_client(), landing=landing_client(), owner=f"drain-{new_owner_token()}",
                   deadline=time.monotonic() + max_seconds, max_records=max_records, progress=progress, sleep=sleep)
    while time.monotonic() < drain.deadline:
        progressed, failing = False, False
        for lease in shard_sync(kinesis=drain.kinesis, stream=stream):
            held = shard_lease_acquire(stream=stream, shard_id=lease.shard_id, owner=drain.owner)
            if held is not None:
                shard_progressed, shard_failing = drain.shard(held)
                progressed, failing = progressed or shard_progressed, failing or shard_failing
        if not progressed and not failing:
            break
    if drain.errors:
        shard_id, error = next(reversed(drain.errors.items()))
        raise TransientError(f"the drain stopped with {len(drain.errors)} shard(s) still failing or parked, "
                             f"{shard_id}: {error}") from error
    merged = merge_until_caught_up(owner=drain.owner, deadline=drain.deadline, sleep=sleep)
    drain.report.merged = merged["events_inserted"]
    drain.report.duplicates = merged["duplicates"]
    return drain.report


@dataclasses.dataclass
class _Drain:
    kinesis: Any
    landing: LandingClient
    owner: str
    deadline: float
    max_records: int
    progress: Callable[[str], None] | None
    sleep: Callable[[float], None]
    report: DrainReport = dataclasses.field(default_factory=DrainReport)
    #: the last error of each shard still failing or parked; a shard that reads again leaves it (one
    #: healthy shard must not hide another's failure: the drain's outcome may not depend on shard order)
    errors: dict[str, BaseException] = dataclasses.field(default_factory=dict)
    #: one reader per shard for the whole drain: its GetRecords iterator goes on past a run of empty
    #: pages from one pass to the next instead of starting again at the checkpoint
    readers: dict[str, ShardReader] = dataclasses.field(default_factory=dict)

    def shard(self, held: ShardLease) -> tuple[bool, bool]:
        """Read one held shard until it is empty, finished, parked or the time is up: (progressed, failing).
        A shard that is still behind its tip (empty pages in its middle) counts as progressing."""
        progressed = failing = False
        reader = self.readers.get(held.shard_id)
        if reader is None or reader.lease.lease_counter != held.lease_counter - 1:
            reader = ShardReader(kinesis=self.kinesis, landing=self.landing, lease=held)
        else:
            reader.lease = held  # the same reader, under this pass's lease (a new fencing token)
        self.readers[held.shard_id] = reader
        try:
            while time.monotonic() < self.deadline:
                try:
                    outcome = reader.process_unit(max_records=self.max_records)
                except LeaseLost:
                    break
                except Exception as err:  # noqa: BLE001 - counted, backed off, parked after the budget
                    self.errors[held.shard_id], failing = err, True
                    self.report.retries += 1
                    delay = shard_failure_record(held, error=err, unit=reader.unit_label)
                    if delay is None:
                        self.report.parked += 1
                        reader.close()
                        self.readers.pop(held.shard_id, None)  # a failed reader is never reused
                        break
                    self.sleep(min(delay, max(0.0, self.deadline - time.monotonic())))
                    reader.close()
                    reader = self.readers[held.shard_id] = ShardReader(kinesis=self.kinesis, landing=self.landing,
                                                                       lease=held)
                    continue
                self.errors.pop(held.shard_id, None)
                failing = False
                self._count(held, outcome)
                behind = bool(outcome.millis_behind_latest) and not outcome.finished_shard
                progressed = progressed or bool(outcome.read) or outcome.finished_shard or behind
                if outcome.read == 0 or outcome.finished_shard:
                    # the drain reads the shard to its tip: write the archive object it holds
                    try:
                        reader.flush()
                    except TransientError as err:  # the object stays with the reader; the next pass retries
                        self.errors[held.shard_id], failing = err, True
                        self.report.retries += 1
                        shard_failure_record(held, error=err, unit=f"the write of the archive object ending at "
                                                                   f"sequence number {reader.position}")
                    break
        except LeaseLost:
            pass
        finally:
            shard_lease_release(held)
        return progressed, failing

    def _count(self, held: ShardLease, outcome: BatchOutcome) -> None:
        if not outcome.read:
            return
        report = self.report
        report.batches += 1
        report.read += outcome.read
        report.valid += outcome.valid
        report.quarantined += outcome.quarantined
        report.skipped += outcome.skipped
        report.suppressed += outcome.suppressed
        for source, n in outcome.suppressed_per_source.items():
            report.suppressed_per_source[source] = report.suppressed_per_source.get(source, 0) + n
        if self.progress:
            self.progress(f"{held.shard_id}: {report.read} read, {report.valid} valid, "
                          f"{report.quarantined} quarantined")


# --- the merger ---------------------------------------------------------------------------------------

MERGER_LEASE = "merger"


def worker_lease_acquire(name: str, owner: str, seconds: int) -> int | None:
    """Take the named singleton lease (free, expired on the database's clock, or ours); returns the
    new fencing token, or None when someone else holds it."""
    WorkerLease.objects.get_or_create(name=name)
    with transaction.atomic():
        claimed = WorkerLease.objects.filter(
            Q(name=name) & (Q(owner="") | Q(owner=owner) | Q(expires_at__isnull=True) | Q(expires_at__lt=Now()))
        ).update(owner=owner, fence=F("fence") + 1, expires_at=Now() + timedelta(seconds=seconds))
        if not claimed:
            return None
        return WorkerLease.objects.values_list("fence", flat=True).get(name=name)


def worker_lease_renew(name: str, owner: str, fence: int, seconds: int) -> bool:
    return bool(WorkerLease.objects.filter(name=name, owner=owner, fence=fence).update(
        expires_at=Now() + timedelta(seconds=seconds)))


def worker_lease_release(name: str, owner: str, fence: int) -> None:
    WorkerLease.objects.filter(name=name, owner=owner, fence=fence).update(owner="", expires_at=None)


class LeaseHeartbeat:
    """Renews a lease every third of its length from a thread. ``lost`` is set when a renewal finds
    the lease taken, or when no renewal has succeeded for two thirds of the lease (the database is
    away: the lease may lapse before it returns). A failed renewal closes the thread's database
    connection, so the next one reconnects."""

    def __init__(self, renew: Callable[[], bool], seconds: int):
        self._renew = renew
        self._seconds = seconds
        self._interval = max(0.2, seconds / 3)
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)

    def _run(self) -> None:
        from django.db import connection

        renewed = time.monotonic()
        try:
            while not self._stop.wait(self._interval):
                try:
                    if not self._renew():
                        self.lost.set()
                        return
                    renewed = time.monotonic()
                except Exception:  # noqa: BLE001 - the database is unreachable: reconnect next time
                    log.warning("could not renew a lease", exc_info=True)
                    connection.close()
                    if time.monotonic() - renewed > self._seconds * 2 / 3:
                        self.lost.set()
                        return
        finally:
            connection.close()

    def __enter__(self) -> LeaseHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def merger_lease_seconds() -> int:
    return int(getattr(settings, "INGEST_MERGER_LEASE_SECONDS", 60))


_merge_connections: dict[str, Any] = {}
#: seconds a merge statement may run (the connector's network_timeout for the merge session)
MERGE_STATEMENT_TIMEOUT = 3600


def _merge_connection() -> Any:
    """This process's pooled merge session (logged in once, reopened after a failure)."""
    from warehouse.connection import warehouse_connect

    key = f"{settings.SNOWFLAKE.get('database')}:{settings.SNOWFLAKE.get('port')}"
    conn = _merge_connections.get(key)
    if conn is None or conn.is_closed():
        # a merge after a backlog may run long: the connector would cancel it at its default
        # statement timeout and every later merge would claim the same rows again
        conn = _merge_connections[key] = warehouse_connect(workload="merge", network_timeout=MERGE_STATEMENT_TIMEOUT)
        warehouse_ready(conn)
    return conn


def merge_connections_close() -> None:
    """Log this process's merge sessions out (at shutdown)."""
    _merge_connection_drop()


def _merge_connection_drop() -> None:
    for conn in _merge_connections.values():
        try:
            conn.close()
        except Exception:  # noqa: BLE001,S110 - it is broken already
            pass
    _merge_connections.clear()


def _committed_elsewhere() -> dict[str, str | None]:
    """Committed tokens of channels the embedded writer does not record (Snowpipe Streaming)."""
    if getattr(settings, "WAREHOUSE_LANDING_WRITER", "embedded") != "snowpipe":
        return {}
    names = [shard_channel_name(s, sid) for s, sid in ShardLease.objects.values_list("stream", "shard_id")]
    return landing_client().latest_committed_offset_tokens(names)


def warehouse_merge_run(*, owner: str | None = None, max_seconds: float = 30.0,
                        sleep: Callable[[float], None] = time.sleep, count_duplicates: bool = False) -> dict:
    """Merge what is committed, as THE merger: returns the counts, or ``{"busy": holder}`` when another
    merger holds the lease. Transient warehouse errors are retried with backoff within ``max_seconds``."""
    owner = owner or f"merger-{new_owner_token()}"
    seconds = merger_lease_seconds()
    fence = worker_lease_acquire(MERGER_LEASE, owner, seconds)
    if fence is None:
        holder = WorkerLease.objects.filter(name=MERGER_LEASE).values_list("owner", flat=True).first()
        return {"busy": holder or "?", "events_inserted": 0, "duplicates": 0}
    try:
        with LeaseHeartbeat(lambda: worker_lease_renew(MERGER_LEASE, owner, fence, seconds), seconds) as beat:
            return _merge_rounds(fence=fence, lost=beat.lost, deadline=time.monotonic() + max_seconds, sleep=sleep,
                                 count_duplicates=count_duplicates)
    finally:
        worker_lease_release(MERGER_LEASE, owner, fence)
        pipeline_minutes_flush()


def merge_until_caught_up(*, owner: str, deadline: float, sleep: Callable[[float], None] = time.sleep) -> dict:
    """The drain's merge: wait for the merger lease (another merger may be finishing) and merge."""
    while True:
        result = warehouse_merge_run(owner=owner, max_seconds=max(1.0, deadline - time.monotonic()), sleep=sleep,
                                     count_duplicates=True)
        if "busy" not in result or time.monotonic() >= deadline:
            return result
        sleep(0.2)


def _duplicates_total(conn: Any) -> int:
    from warehouse.load import pipeline_counts

    counted = pipeline_counts(conn)
    return counted["duplicates"] + counted["late_copies"]


def _merge_measure(conn: Any, ranges: list, merged_at: Any, result: Any) -> None:
    """Record a merge round for the metrics: its counts, and the latency and lateness of the copies it
    merged (one read of the claim; when that read fails the counts are still recorded)."""
    from ingest_workers.latency import BUCKET_LABELS, BUCKETS_S
    from ingest_workers.pipeline_stats import late_after_seconds
    from warehouse.connection import WarehouseError
    from warehouse.landing import merge_latency

    try:
        rows = merge_latency(conn, ranges=ranges, now=merged_at, bounds=BUCKETS_S,
                             late_after_s=late_after_seconds(), window_days=dedup_window_days())
    except (WarehouseError, ValueError, TypeError):  # the merge is committed: its metrics never undo it
        log.warning("merge latency could not be read; the merge's counts are recorded without it", exc_info=True)
        rows = []
    index = contract_index_current()
    names = {route.source_id: name for name in index.sources if (route := index.route(name)) is not None}
    latency = [{"source": names.get(r["source_id"], r["source_id"] or "(none)"), "contract": r["contract"],
                "version": r["version"], "bucket": BUCKET_LABELS[r["bucket"]], "copies": r["copies"],
                "sum_s": r["sum_s"], "late": r["late"],
                "newest_received_ms": int(r["newest_received_at"].replace(tzinfo=UTC).timestamp() * 1000)
                if r["newest_received_at"] is not None else None}
               for r in rows]
    pipeline_merge_record(inserted=result.events_inserted, updated=result.events_updated,
                          late_copies=result.late_copies, latency=latency,
                          now=merged_at.replace(tzinfo=UTC).timestamp())


def _merge_rounds(*, fence: int, lost: threading.Event, deadline: float, sleep: Callable[[float], None],
                  count_duplicates: bool) -> dict:
    """Merge until nothing is pending. ``count_duplicates`` adds the copies this call counted
    (two scans of the event table: for the drain's report, not for the merger's every round)."""
    from warehouse.connection import WarehouseError
    from warehouse.landing import MergerFenced, merge_channels, merge_ranges_pending

    before = _duplicates_total(_merge_connection()) if count_duplicates else 0
    totals = {"merges": 0, "rows_in": 0, "events_inserted": 0, "events_updated": 0, "late_copies": 0,
              "quarantined": 0, "retries": 0}
    failures = 0
    while not lost.is_set():
        try:
            conn = _merge_connection()
            ranges = merge_ranges_pending(conn, _committed_elsewhere())
            merged_at = timezone.now().replace(tzinfo=None)
            result = merge_channels(conn, ranges=ranges, window_days=dedup_window_days(), now=merged_at, fence=fence)
        except MergerFenced:
            log.warning("a newer merger has merged; this one (fence %s) stops", fence)
            break
        except WarehouseError as err:
            _merge_connection_drop()
            failures += 1
            delay = backoff_seconds(failures)
            if not err.transient or time.monotonic() + delay >= deadline:
                raise
            totals["retries"] += 1
            log.warning("merge attempt %d failed, retrying in %.1fs: %s", failures, delay, err)
            sleep(delay)
            continue
        failures = 0
        if not result.ranges:
            pipeline_merge_record(inserted=0)  # a successful round with nothing to merge: fresh as can be
            break
        _merge_measure(conn, ranges, merged_at, result)
        totals["merges"] += 1
        for key in ("rows_in", "events_inserted", "events_updated", "late_copies", "quarantined"):
            totals[key] += getattr(result, key)
        if time.monotonic() >= deadline:
            break
    if lost.is_set():
        log.warning("the merger lease was lost; stopping (fence %s)", fence)
    totals["duplicates"] = _duplicates_total(_merge_connection()) - before if count_duplicates else 0
    return totals
