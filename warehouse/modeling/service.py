"""The portal side of a model run: one run at a time (a lease), the price catalog and pending
recompute requests as input, and a ``ModelRun`` row per model as the record people read.

The Celery task and the ``models_run`` command are thin wrappers over ``models_run_recorded``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from ingest_workers.services import LeaseHeartbeat
from warehouse.modeling.runner import DISPLAY_ORDER, ModelResult, RunReport, models_run
from warehouse.models import ModelRun, PriceRecompute, RunnerLease
from warehouse.selectors import price_catalog_rows

LEASE_NAME = "curated-models"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordedRun:
    run_id: str
    report: RunReport | None          # None when the warehouse could not be reached
    busy_holder: str | None = None    # set when another run holds the lease (nothing ran)
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.report is not None and self.report.ok and not self.busy_holder


def _holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lease_acquire(holder: str, seconds: float) -> str | None:
    """Take the run lease (free, expired on the database's clock, or ours); returns None when taken, else
    the current holder's name.

    Taking it closes the records of a run that stopped without finishing (its process died, so its
    lease expired, or it failed past its own bookkeeping): only the holder runs, so a model still
    "running" now belongs to a run that is gone."""
    with transaction.atomic():
        RunnerLease.objects.get_or_create(name=LEASE_NAME)
        lease = RunnerLease.objects.select_for_update().get(name=LEASE_NAME)
        takeable = Q(holder="") | Q(holder=holder) | Q(expires_at__isnull=True) | Q(expires_at__lt=Now())
        claimed = RunnerLease.objects.filter(Q(name=LEASE_NAME) & takeable).update(
            holder=holder, expires_at=Now() + dt.timedelta(seconds=seconds))
        if not claimed:
            return lease.holder
        _abandoned_runs_close(lease.holder if lease.holder != holder else "", lease.expires_at, timezone.now())
    return None


def _abandoned_runs_close(previous: str, expired_at: dt.datetime | None, now: dt.datetime) -> int:
    why = (f"abandoned: the run stopped without finishing (its lease, held by {previous}, expired at "
           f"{expired_at:%Y-%m-%d %H:%M:%S} UTC) and the next run took over" if previous and expired_at
           else "abandoned: the run stopped without finishing and the next run took over")
    closed = ModelRun.objects.filter(status=ModelRun.Status.RUNNING).update(
        status=ModelRun.Status.FAILED, finished_at=now, error=why)
    if closed:
        logger.warning("models: closed %d model record(s) of a run that stopped without finishing (%s)", closed,
                       previous or "lease already released")
    return closed


def lease_renew(holder: str, seconds: float) -> bool:
    """Extend the lease (on the database's clock); False when this holder no longer has it."""
    return bool(RunnerLease.objects.filter(name=LEASE_NAME, holder=holder).update(
        expires_at=Now() + dt.timedelta(seconds=seconds)))


def lease_release(holder: str) -> None:
    RunnerLease.objects.filter(name=LEASE_NAME, holder=holder).update(holder="", expires_at=None)


def models_run_recorded(
    *, trigger: str = ModelRun.Trigger.MANUAL, full_refresh: bool = False,
    progress: Callable[[ModelResult], None] | None = None,
) -> RecordedRun:
    """Run the curated models once, recording each model's part; a no-op when another run holds
    the lease. Warehouse errors are recorded on the run, not raised."""
    if full_refresh:
        trigger = ModelRun.Trigger.FULL_REFRESH
    run_id = uuid.uuid4()
    holder = _holder_name()
    lease_seconds = float(getattr(settings, "MODELS_RUN_LEASE_SECONDS", 60))
    busy = lease_acquire(holder, lease_seconds)
    if busy:
        return RecordedRun(str(run_id), None, busy_holder=busy)
    rows: dict[str, ModelRun] = {}

    def record(result: ModelResult) -> None:
        lease_renew(holder, lease_seconds)
        row = rows.get(result.name)
        now = timezone.now()
        if row is None:
            row = rows[result.name] = ModelRun(run_id=run_id, model=result.name, trigger=trigger, started_at=now)
        row.status = result.status if result.status in ModelRun.Status.values else ModelRun.Status.RUNNING
        if result.status != "running":
            row.finished_at = now
            row.duration_ms = result.duration_ms
            row.rows_changed = result.rows_changed
            row.detail = result.detail
            row.error = result.error
        row.save()
        if progress is not None:
            progress(result)

    try:
        # renewed every third of the lease while this process is alive (a dead run's lease lapses at once)
        with LeaseHeartbeat(lambda: lease_renew(holder, lease_seconds), lease_seconds):
            return _run_holding_lease(run_id, trigger, full_refresh, record, rows)
    finally:
        lease_release(holder)


def _run_holding_lease(run_id: uuid.UUID, trigger: str, full_refresh: bool, record: Callable[[ModelResult], None],
                       rows: dict[str, ModelRun]) -> RecordedRun:
    from warehouse.connection import WarehouseError, warehouse_connect

    pending = list(PriceRecompute.objects.filter(status=PriceRecompute.Status.PENDING).order_by("id"))
    recomputes = [(r.model or None, r.from_time) for r in pending]
    try:
        conn = warehouse_connect(workload="models")
    except WarehouseError as exc:
        return _record_unreachable(run_id, trigger, exc)
    try:
        report = models_run(conn, full_refresh=full_refresh, prices=price_catalog_rows(), recomputes=recomputes,
                            run_id=run_id.hex, on_model=record, session_gaps=settings.ANALYTICS_SESSION_GAP_S)
    except WarehouseError as exc:
        return _record_unreachable(run_id, trigger, exc, rows)
    finally:
        conn.close()
    if report.ok and pending:
        PriceRecompute.objects.filter(id__in=[r.id for r in pending]).update(
            status=PriceRecompute.Status.DONE, done_run_id=run_id, done_at=timezone.now())
    return RecordedRun(str(run_id), report)


def _record_unreachable(run_id: uuid.UUID, trigger: str, exc: Exception,
                        rows: dict[str, ModelRun] | None = None) -> RecordedRun:
    """The warehouse went away: the model that was running failed, the rest were skipped (the
    first model fails when nothing had started yet)."""
    now = timezone.now()
    message = f"warehouse unavailable: {' '.join(str(exc).split())[:1000]}"
    rows = rows or {}
    failed_one = False
    for name in DISPLAY_ORDER:
        row = rows.get(name)
        if row is not None and row.status in (ModelRun.Status.SUCCEEDED, ModelRun.Status.SKIPPED,
                                              ModelRun.Status.FAILED):
            continue
        if row is None:
            row = ModelRun(run_id=run_id, model=name, trigger=trigger, started_at=now)
        if not failed_one and (row.pk is not None or not rows):
            row.status, row.error, failed_one = ModelRun.Status.FAILED, message, True
        else:
            row.status, row.error = ModelRun.Status.SKIPPED, "the warehouse could not be reached"
        row.finished_at = now
        row.save()
    return RecordedRun(str(run_id), None, error=message)
