"""Long-lived shard consumers that share the shards fairly, like the Kinesis Client Library's workers.

Each consumer process (a Celery worker of the ingest pool started with ``--shard-consumer``, see
``portal/celery.py``, or ``manage.py ingest_consume``):

* registers in ``IngestWorker`` and heartbeats there; the live workers are those whose heartbeat
  is younger than a lease (the database's clock);
* takes its fair share of the readable shards, ``ceil(shards / live workers)``: free or expired
  leases first and, when none is left, ONE lease per pass from the worker holding the most, if
  that worker holds more than the fair share (the KCL lease taker's rule), so a worker that joins
  gets its share within a few passes and one that dies gives its shards back when they expire;
* renews its leases from a heartbeat thread (a slow unit cannot let them lapse), each acquisition
  taking a new fencing token; a lease found lost is dropped at once;
* consumes its shards in turn, one unit each (``ShardReader``), with one pooled warehouse session
  or Snowpipe Streaming client per process; a failing shard waits out its backoff without holding
  up the others, and is parked after the retry budget.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.db.models import Count, Q
from django.db.models.functions import Now

from ingest_workers import services
from ingest_workers.models import IngestWorker, ShardLease
from warehouse.channels import ChannelError

log = logging.getLogger(__name__)

IDLE_SLEEP_SECONDS = 0.5
#: units a shard may have appended and not yet seen committed before it waits (bounds what a lost
#: lease makes the next owner read again: 20,000 records, units of ``services.UNIT_MAX_RECORDS``)
MAX_PENDING_UNITS = 10


#: the collector's youngest-generation threshold once a consumer is in steady state (Python's default: 700)
GC_YOUNG_THRESHOLD = 20_000


def gc_settle_for_steady_state() -> None:
    """After a consumer process's start-up: what it loaded (modules, the contract index, connections,
    caches) leaves the cyclic collector's generations for good (``gc.freeze``), and the youngest
    generation is collected every 20,000 allocations instead of 700. A unit allocates hundreds of
    thousands of short-lived containers that reference counting frees anyway; with the defaults the
    collector ran several hundred times per 40,000 records and rescanned the long-lived heap in its
    older generations: about 6 us of CPU per event, against about 2 with this (bench/bench_consumer.py).
    Only for a process whose work is consuming (``ingest_consume``, the ingest pool's worker)."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def worker_id_new() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class _Owned:
    reader: services.ShardReader
    retry_after: float = 0.0  # monotonic time before which the shard is not read (backoff, or caught up)
    lost: bool = False


@dataclass
class ConsumerStats:
    read: int = 0
    units: int = 0
    failures: int = 0
    taken: int = 0
    stolen: int = 0
    lost: int = 0
    shards: list[str] = field(default_factory=list)
    # this process's CPU seconds and records read at the end of its first and of its last unit: the
    # steady-state CPU per record, without start-up (imports, logins, channel openings)
    steady_cpu_seconds: float = 0.0
    steady_records: int = 0
    cpu_by_step: dict[str, float] = field(default_factory=dict)  # the consuming thread's, per unit step
    _first: tuple[float, int] | None = None


class ShardConsumer:
    def __init__(self, *, stream: str | None = None, worker_id: str | None = None, kinesis: Any = None,
                 landing: Any = None, max_records: int = services.UNIT_MAX_RECORDS,
                 sleep: Callable[[float], None] | None = None, gc_settle: bool = False):
        from ingest_workers.aws import kinesis_client

        self.stream = stream or settings.KINESIS_STREAM_NAME
        self.worker_id = worker_id or worker_id_new()
        self.kinesis = kinesis or kinesis_client()
        self.landing = landing or services.landing_client()
        self.max_records = max_records
        self.lease_seconds = services.lease_seconds()
        self.tip_interval = float(getattr(settings, "INGEST_TIP_INTERVAL_SECONDS", 1.0))
        self.owned: dict[str, _Owned] = {}
        self.stats = ConsumerStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._heartbeat: threading.Thread | None = None
        self._next_balance = 0.0
        #: settle the collector after the first unit that read records (``gc_settle_for_steady_state``)
        self._gc_settle = gc_settle

    # --- membership and leases -------------------------------------------------------------------

    def _register(self) -> None:
        IngestWorker.objects.update_or_create(worker_id=self.worker_id,
                                              defaults={"stream": self.stream, "heartbeat_at": Now()})

    def _live_workers(self) -> int:
        alive = IngestWorker.objects.filter(
            stream=self.stream, heartbeat_at__gt=Now() - timedelta(seconds=self.lease_seconds))
        return max(1, alive.count())

    def _renew_all(self) -> None:
        """The heartbeat: this worker is alive, and every lease it holds is extended (or dropped)."""
        IngestWorker.objects.filter(worker_id=self.worker_id).update(heartbeat_at=Now())
        with self._lock:
            owned = list(self.owned.items())
        for _shard_id, entry in owned:
            try:
                services.shard_lease_renew(entry.reader.lease, self.lease_seconds)
            except services.LeaseLost:
                entry.lost = True

    def _heartbeat_loop(self) -> None:
        from django.db import connection

        interval = max(0.2, self.lease_seconds / 3)
        try:
            while not self._stop.wait(interval):
                try:
                    self._renew_all()
                except Exception:  # noqa: BLE001 - the database is away: the leases will lapse, others take over
                    log.warning("consumer %s could not renew its leases", self.worker_id, exc_info=True)
                    # a connection the server dropped never recovers by itself: the next beat reconnects
                    connection.close()
        finally:
            close_old_connections()

    def balance(self) -> None:
        """Take this worker's fair share: free and expired leases first, else steal one."""
        leases = {lease.shard_id: lease for lease in services.shard_sync(kinesis=self.kinesis, stream=self.stream)}
        parked = self._parked_now()
        readable = [lease for lease in leases.values() if lease.finished_at is None
                    and services._parents_finished(lease, leases) and lease.shard_id not in parked]
        target = math.ceil(len(readable) / self._live_workers()) if readable else 0
        need = target - len(self.owned)
        if need <= 0:
            return
        free = [lease for lease in readable if lease.shard_id not in self.owned and self._takeable(lease)]
        for lease in free[:need]:
            if self._take(lease.shard_id):
                self.stats.taken += 1
                need -= 1
        if need > 0:
            self._steal_one(target)

    def _parked_now(self) -> set[str]:
        """Shards parked less than ``INGEST_PARKED_RETRY_SECONDS`` ago, on the database's clock (as
        ``shard_lease_acquire`` judges them), not this process's."""
        since = Now() - timedelta(seconds=services.parked_retry_seconds())
        return set(ShardLease.objects.filter(stream=self.stream, parked_at__gte=since)
                   .values_list("shard_id", flat=True))

    @staticmethod
    def _takeable(lease: ShardLease) -> bool:
        return ShardLease.objects.filter(Q(pk=lease.pk) & services._available()).exists()

    def _steal_one(self, target: int) -> None:
        busiest = (ShardLease.objects.filter(stream=self.stream, finished_at__isnull=True,
                                             lease_expires_at__gt=Now())
                   .exclude(owner__in=["", self.worker_id]).values("owner").annotate(n=Count("id")).order_by("-n")
                   .first())
        if not busiest or busiest["n"] <= target:
            return
        victim = (ShardLease.objects.filter(stream=self.stream, owner=busiest["owner"], finished_at__isnull=True)
                  .order_by("?").values_list("shard_id", flat=True).first())
        if victim and self._take(victim, steal_from=busiest["owner"]):
            self.stats.stolen += 1
            log.info("consumer %s took %s from %s (fair share %d)", self.worker_id, victim, busiest["owner"], target)

    def _take(self, shard_id: str, *, steal_from: str | None = None) -> bool:
        lease = services.shard_lease_acquire(stream=self.stream, shard_id=shard_id, owner=self.worker_id,
                                             seconds=self.lease_seconds, steal_from=steal_from)
        if lease is None:
            return False
        reader = services.ShardReader(kinesis=self.kinesis, landing=self.landing, lease=lease)
        with self._lock:
            self.owned[shard_id] = _Owned(reader)
        return True

    def _drop(self, shard_id: str, *, release: bool) -> None:
        """Stop reading a shard. ``release``: the lease is still ours, so the open archive object is
        written and checkpointed first (its records are not read again by the next owner)."""
        with self._lock:
            entry = self.owned.pop(shard_id, None)
        if entry is None:
            return
        try:
            if release:
                try:
                    entry.reader.flush()
                except services.LeaseLost:
                    return
                except services.TransientError:
                    log.warning("could not write %s's open archive object; the next owner rebuilds it",
                                shard_id, exc_info=True)
            if release:
                services.shard_lease_release(entry.reader.lease)
        finally:
            entry.reader.close()

    # --- consuming ---------------------------------------------------------------------------------

    def step(self) -> int:
        """One pass: rebalance (every third of a lease: ListShards and the lease table are not read
        on every pass), then one unit of each owned shard that is due. Returns records read."""
        if time.monotonic() >= self._next_balance:
            self._next_balance = time.monotonic() + max(0.2, self.lease_seconds / 3)
            self.balance()
        read = 0
        now = time.monotonic()
        with self._lock:
            due = [(shard_id, entry) for shard_id, entry in self.owned.items()]
        for shard_id, entry in due:
            if self._stop.is_set():
                break
            if entry.lost:
                self.stats.lost += 1
                self._drop(shard_id, release=False)
                continue
            if entry.retry_after > now:
                continue
            read += self._unit(shard_id, entry)
        self._settle()
        self.stats.shards = sorted(self.owned)
        return read

    def _settle(self) -> None:
        """Checkpoint what the channels committed: one status call for every shard with units in
        flight (Snowpipe Streaming commits seconds after an append; the embedded writer never
        leaves any)."""
        with self._lock:
            waiting = {entry.reader.channel.name: (shard_id, entry) for shard_id, entry in self.owned.items()
                       if entry.reader.pending and entry.reader.channel is not None}
        if not waiting:
            return
        try:
            committed = self.landing.latest_committed_offset_tokens(list(waiting))
        except ChannelError:
            log.warning("consumer %s could not read its channels' committed tokens", self.worker_id, exc_info=True)
            return
        for name, (shard_id, entry) in waiting.items():
            try:
                if entry.reader.settle(committed.get(name)):
                    self._drop(shard_id, release=True)
            except services.LeaseLost:
                self.stats.lost += 1
                self._drop(shard_id, release=False)

    def _unit(self, shard_id: str, entry: _Owned) -> int:
        if len(entry.reader.pending) >= MAX_PENDING_UNITS:
            return 0  # the channel is behind committing this shard's units: let it catch up first
        try:
            outcome = entry.reader.process_unit(max_records=self.max_records, defer_commit=True)
        except services.LeaseLost as err:
            # its unit is dropped unlanded: the shard's new owner reads it again from the checkpoint
            log.warning("shard %s is no longer this consumer's; its unit was not landed: %s", shard_id, err)
            self.stats.lost += 1
            self._drop(shard_id, release=False)
            return 0
        except Exception as err:  # noqa: BLE001 - counted, backed off, parked after the budget
            self.stats.failures += 1
            delay = services.shard_failure_record(entry.reader.lease, error=err, unit=entry.reader.unit_label)
            if delay is None:
                self._drop(shard_id, release=False)  # parked: the failure record released it
            else:
                entry.retry_after = time.monotonic() + delay
                entry.reader.close()
                entry.reader = services.ShardReader(kinesis=self.kinesis, landing=self.landing,
                                                    lease=entry.reader.lease)
            return 0
        self.stats.units += 1
        self.stats.read += outcome.read
        if outcome.read < self.max_records:
            # caught up with the shard: let records gather before the next unit (bigger units mean
            # fewer archive objects, appends and per-unit costs, for a few seconds of latency)
            entry.retry_after = time.monotonic() + self.tip_interval
        for step, seconds in outcome.cpu.items():
            self.stats.cpu_by_step[step] = self.stats.cpu_by_step.get(step, 0.0) + seconds
        if outcome.read:
            now_cpu = time.process_time()
            if self.stats._first is None:
                self.stats._first = (now_cpu, self.stats.read)
                if self._gc_settle:
                    gc_settle_for_steady_state()
            else:
                self.stats.steady_cpu_seconds = now_cpu - self.stats._first[0]
                self.stats.steady_records = self.stats.read - self.stats._first[1]
        if outcome.finished_shard:
            self._drop(shard_id, release=True)
        return outcome.read

    def run(self, *, max_seconds: float | None = None, until_idle: bool = False) -> ConsumerStats:
        """Consume until ``stop()`` (or ``max_seconds``, or with ``until_idle`` once the stream is read to
        its tip: three passes in a row read nothing); leaves the worker table and frees its leases."""
        deadline = time.monotonic() + max_seconds if max_seconds else None
        idle_passes = 0
        self._register()
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, name=f"heartbeat-{self.worker_id}",
                                           daemon=True)
        self._heartbeat.start()
        log.info("shard consumer %s started on %s", self.worker_id, self.stream)
        try:
            while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
                try:
                    if self.step() == 0:
                        idle_passes += 1
                        if until_idle and idle_passes >= 3 and self.owned and not any(
                                entry.reader.pending for entry in self.owned.values()):
                            break
                        self._sleep(IDLE_SLEEP_SECONDS)
                    else:
                        idle_passes = 0
                except Exception:  # noqa: BLE001 - PostgreSQL or Kinesis away: keep the process, retry
                    log.warning("consumer %s pass failed", self.worker_id, exc_info=True)
                    close_old_connections()
                    self._sleep(min(services.RETRY_MAX_SECONDS, 2 * IDLE_SLEEP_SECONDS))
        finally:
            self._stop.set()
            if self._heartbeat is not None:
                self._heartbeat.join(timeout=10)
            self._leave()
        return self.stats

    def stop(self) -> None:
        self._stop.set()

    def _leave(self) -> None:
        for shard_id in list(self.owned):
            try:
                self._drop(shard_id, release=True)
            except Exception:  # noqa: BLE001 - best effort: unreleased leases expire
                log.warning("could not release %s", shard_id, exc_info=True)
        try:
            IngestWorker.objects.filter(worker_id=self.worker_id).delete()
        except Exception:  # noqa: BLE001 - best effort: a stale row stops counting after a lease
            log.warning("consumer %s could not leave the worker table", self.worker_id, exc_info=True)
        close_old_connections()
        log.info("shard consumer %s stopped: %s", self.worker_id, self.stats)
