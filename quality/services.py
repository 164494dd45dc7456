"""Writes of the quality app: asking for a run, running the generated Soda contracts against the
warehouse and storing every check's result, and the retention purge.

A check that cannot run is stored as an ``error`` with its reason, never as passed: the warehouse
cannot be reached (every check of every table), a table is missing (every check of that table), or
Soda could not evaluate it (that check, with Soda's error).
"""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ingest_workers.archive_crypto import subject_hash_key
from quality.models import CheckResult, QualityRun
from quality.samples import sample_row_subjects, subject_columns_of
from quality.selectors import generation_settings, table_labels
from quality.soda_contracts import GeneratedContract, quality_table, sample_sql, soda_contract, table_label
from quality.soda_run import CheckOutcome, contract_verify, outcomes_all_error

__all__ = [
    "QualityRunForbidden",
    "quality_run_request",
    "quality_run_execute",
    "quality_run",
    "quality_run_scheduled",
    "quality_results_purge",
    "quality_runs_stale_sweep",
    "row_mask",
    "source_hours_rollup",
    "scorecards_evaluate",
]

logger = logging.getLogger("quality")


class QualityRunForbidden(PermissionError):
    """Only data engineers and admins may ask for a run from the portal."""


def _tables(tables: Sequence[str] | None) -> list[str]:
    return [table_label(quality_table(t)) for t in tables] if tables else table_labels()


def quality_run_request(*, actor: Any, tables: Sequence[str] | None = None) -> uuid.UUID:
    """Queue a run of ``tables`` (default: every covered table) on the quality queue; the rows show
    "queued" until a worker takes them. Returns the run id."""
    from portal.roles import is_data_engineer

    if not is_data_engineer(actor):
        raise QualityRunForbidden("Only data engineers and admins may run the quality checks.")
    labels = _tables(tables)
    run_id = uuid.uuid4()
    with transaction.atomic():
        for label in labels:
            QualityRun.objects.create(run_id=run_id, table=label, status=QualityRun.Status.QUEUED,
                                      trigger=QualityRun.Trigger.MANUAL,
                                      requested_by=actor if getattr(actor, "pk", None) else None)
        from quality.tasks import quality_run_queued

        transaction.on_commit(lambda: quality_run_queued.delay(str(run_id)))
    return run_id


def quality_run_execute(*, run_id: str | uuid.UUID) -> list[QualityRun]:
    """Run the queued tables of ``run_id`` (a worker's part of a portal request), then grade the scorecards.
    Rows another worker already took are left to it."""
    claimed = []
    for run in QualityRun.objects.filter(run_id=run_id, status=QualityRun.Status.QUEUED).order_by("id"):
        taken = QualityRun.objects.filter(pk=run.pk, status=QualityRun.Status.QUEUED).update(
            status=QualityRun.Status.RUNNING, started_at=timezone.now())
        if taken:
            run.refresh_from_db()
            claimed.append(run)
    _runs_execute(claimed)
    if claimed:
        scorecards_evaluate()  # the scorecards show what the person asked to check
    return claimed


def quality_run(*, tables: Sequence[str] | None = None, trigger: str = QualityRun.Trigger.COMMAND,
                actor: Any = None) -> list[QualityRun]:
    """Check ``tables`` (default: every covered table) now, in this process, and store the results."""
    labels = _tables(tables)
    run_id = uuid.uuid4()
    now = timezone.now()
    runs = [QualityRun.objects.create(run_id=run_id, table=label, status=QualityRun.Status.RUNNING, trigger=trigger,
                                      queued_at=now, started_at=now,
                                      requested_by=actor if getattr(actor, "pk", None) else None)
            for label in labels]
    _runs_execute(runs)
    return runs


def quality_run_scheduled() -> dict:
    """The beat's run: end runs no worker finished, purge results past retention, check every table, then
    grade the scorecards from the results."""
    swept = quality_runs_stale_sweep()
    purged = quality_results_purge()
    runs = quality_run(trigger=QualityRun.Trigger.SCHEDULE)
    scorecards = scorecards_evaluate()  # the cycle's grades, from the results just stored
    return {"swept": swept, "purged": purged, "tables": len(runs),
            "errors": sum(1 for r in runs if r.status == QualityRun.Status.ERROR), "scorecards": scorecards}


def quality_results_purge(*, now: dt.datetime | None = None, keep_days: int | None = None) -> int:
    """Delete runs (and their check results) older than ``QUALITY_RESULTS_RETENTION_DAYS`` (13 months)."""
    now = now or timezone.now()
    keep = keep_days if keep_days is not None else settings.QUALITY_RESULTS_RETENTION_DAYS
    old = QualityRun.objects.filter(queued_at__lt=now - dt.timedelta(days=keep))
    deleted, _ = old.delete()
    return deleted


def quality_runs_stale_sweep(*, now: dt.datetime | None = None) -> int:
    """Mark queued or running rows older than ``QUALITY_RUN_STALE_MINUTES`` as errors (a worker died or
    none serves the quality queue), so the page does not say "queued" for ever."""
    now = now or timezone.now()
    limit = now - dt.timedelta(minutes=settings.QUALITY_RUN_STALE_MINUTES)
    return QualityRun.objects.filter(
        status__in=(QualityRun.Status.QUEUED, QualityRun.Status.RUNNING), queued_at__lt=limit,
    ).update(status=QualityRun.Status.ERROR, finished_at=now,
             error=f"No worker finished this run within {settings.QUALITY_RUN_STALE_MINUTES} minutes "
                   "(is a worker serving the quality queue?).")


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------

def _runs_execute(runs: list[QualityRun]) -> None:
    if not runs:
        return
    from warehouse.connection import WarehouseError, warehouse_connect

    database = settings.SNOWFLAKE["database"]
    gen = generation_settings(database=database)
    contracts = {run.pk: soda_contract(quality_table(run.table), gen) for run in runs}
    try:
        conn = warehouse_connect()
    except WarehouseError as err:
        reason = f"The warehouse could not be reached: {err}"
        for run in runs:
            _store(run, contracts[run.pk], database, outcomes_all_error(contracts[run.pk], reason), {}, 0.0, reason)
        return
    try:
        for run in runs:
            _table_check(conn, run, contracts[run.pk], database)
    finally:
        try:
            conn.close()
        except Exception:  # noqa: BLE001, S110 - a dead session is the server's to reap
            pass


def _table_exists(conn: Any, database: str, contract: GeneratedContract) -> bool:
    from warehouse.connection import warehouse_errors

    schema, name = contract.table.split(".", 1)
    with warehouse_errors():
        cur = conn.cursor()
        try:
            cur.execute(f"SELECT COUNT(*) FROM {database}.INFORMATION_SCHEMA.TABLES "  # noqa: S608 - checked identifier
                        "WHERE TABLE_SCHEMA = %(schema)s AND TABLE_NAME = %(name)s", {"schema": schema, "name": name})
            return bool(cur.fetchone()[0])
        finally:
            cur.close()


def _table_check(conn: Any, run: QualityRun, contract: GeneratedContract, database: str) -> None:
    from warehouse.connection import WarehouseError

    started = time.monotonic()
    qualified_name = f"{database}.{contract.table}"
    run_error = ""
    try:
        if not _table_exists(conn, database, contract):
            run_error = f"Table {qualified_name} does not exist in the warehouse."
            outcomes = outcomes_all_error(contract, run_error)
        else:
            outcomes = contract_verify(conn, contract, warehouse=settings.SNOWFLAKE.get("warehouse"))
    except WarehouseError as err:
        run_error = f"The warehouse could not run the checks: {err}"
        outcomes = outcomes_all_error(contract, run_error)
    except Exception as err:  # noqa: BLE001 - any failure of Soda is stored as the checks' error, not lost
        logger.exception("Soda failed on %s", qualified_name)
        run_error = f"Soda could not run the contract: {type(err).__name__}: {err}"
        outcomes = outcomes_all_error(contract, run_error)
    samples: dict[str, tuple[list, str]] = {}
    table = quality_table(contract.table)
    for outcome in outcomes:
        if outcome.outcome in ("failed", "warned"):
            samples[outcome.spec.key] = _sample(conn, outcome, qualified_name, "SOURCE_ID" in table.column_index,
                                                subject_columns_of(table.column_index))
    _store(run, contract, database, outcomes, samples, time.monotonic() - started, run_error)


def _sample(conn: Any, outcome: CheckOutcome, qualified_name: str, has_source: bool,
            subject_columns: Sequence[str] = ()) -> tuple[list, str]:
    """Up to QUALITY_SAMPLE_ROWS_PER_SOURCE failing rows per source, masked, and an error text if the
    sample could not be read (the check's result stands either way)."""
    from warehouse.connection import WarehouseError, warehouse_errors

    sql = sample_sql(outcome.spec, qualified_name=qualified_name, has_source=has_source,
                     per_source=settings.QUALITY_SAMPLE_ROWS_PER_SOURCE, limit=settings.QUALITY_SAMPLE_ROWS_MAX,
                     subject_columns=subject_columns)
    if sql is None:
        return [], ""
    try:
        with warehouse_errors():
            cur = conn.cursor()
            try:
                cur.execute(sql)
                names = [d[0].upper() for d in cur.description]
                rows = cur.fetchall()
            finally:
                cur.close()
    except WarehouseError as err:
        return [], f"The failing rows could not be read: {err}"
    hash_key = subject_hash_key(settings.SUBJECT_HASH_SECRET)
    out = []
    for values in rows:
        row, subjects = sample_row_subjects(dict(zip(names, values, strict=True)), hash_key=hash_key)
        # "subjects": keyed hashes of the row's identifiers, for an erasure (deletion.platform_stores)
        out.append({"source_id": None if row.get("SOURCE_ID") is None else str(row["SOURCE_ID"]),
                    "row": row_mask(row), "subjects": subjects})
    return out, ""


def _json_ready(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, str) and value[:1] in "{[":  # a VARIANT comes back as its JSON text
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return value


def row_mask(row: dict) -> dict:
    """A warehouse row ready to show: JSON values parsed, every field the canonical model marks personal
    (and anything that looks personal) masked, as in the quarantine (ingest_workers.masking)."""
    from ingest_workers.masking import payload_mask

    return payload_mask({k: _json_ready(v) for k, v in row.items()}).value


def _store(run: QualityRun, contract: GeneratedContract, database: str, outcomes: list[CheckOutcome],
           samples: dict[str, tuple[list, str]], seconds: float, run_error: str) -> None:
    now = timezone.now()
    counts = {o: 0 for o in ("passed", "failed", "warned", "error", "not_evaluated")}
    results = []
    for item in outcomes:
        counts[item.outcome] = counts.get(item.outcome, 0) + 1
        sample, sample_error = samples.get(item.spec.key, ([], ""))
        results.append(CheckResult(
            run=run, table=run.table, check_key=item.spec.key[:200], check_type=item.spec.type,
            check_name=item.spec.name[:300], column=item.spec.column or "", outcome=item.outcome,
            measured_value=item.measured, threshold=item.threshold[:200], diagnostics=item.diagnostics,
            sample=sample, sample_error=sample_error, error=item.error, checked_at=now))
    with transaction.atomic():
        CheckResult.objects.bulk_create(results)
        run.status = QualityRun.Status.ERROR if run_error else QualityRun.Status.DONE
        run.error = run_error
        run.finished_at = now
        run.started_at = run.started_at or now
        run.duration_ms = int(seconds * 1000)
        run.database = database
        run.contract_yaml = contract.yaml
        run.contract_fingerprint = contract.fingerprint
        run.contract_versions = list(contract.derived_from)
        run.passed, run.failed, run.warned = counts["passed"], counts["failed"], counts["warned"]
        run.errors, run.not_evaluated = counts["error"], counts["not_evaluated"]
        run.save()


# --------------------------------------------------------------------------------------------
# scorecards
# --------------------------------------------------------------------------------------------

def source_hours_rollup(*, now: dt.datetime | None = None) -> int:
    """Roll the per-minute pipeline sample up into ``SourceHour`` rows: the hours since the last rollup (at
    most those the sample still holds whole: it keeps 24 h) and the running hour, recomputed from the minutes
    (so repeating it is harmless);
    rows past ``QUALITY_SOURCE_HOURS_KEEP_DAYS`` are deleted. Returns the hours written."""
    from django.db.models import Count, Max, Sum
    from django.db.models.functions import TruncHour

    from ingest_workers.models import PipelineMinute  # read-only: the per-minute sample it rolls up
    from quality.models import SourceHour

    now = now or timezone.now()
    # the oldest hour the sample still holds whole (its oldest minutes are being trimmed)
    first = (now - dt.timedelta(hours=24)).replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    # hours rolled up before are final once the next has begun: redo from the hour before the newest only
    newest = SourceHour.objects.filter(hour__lte=now).order_by("-hour").values_list("hour", flat=True).first()
    if newest is not None:
        first = max(first, newest - dt.timedelta(hours=1))
    rows = (PipelineMinute.objects.filter(minute__gte=first, minute__lte=now)
            .annotate(h=TruncHour("minute", tzinfo=dt.UTC)).values("h", "source")
            .annotate(records=Sum("records"), events=Sum("events"), quarantined=Sum("quarantined"),
                      merged=Sum("merged"), max_lag_ms=Max("max_lag_ms"), minutes=Count("id")))
    written = 0
    with transaction.atomic():
        for row in rows:
            SourceHour.objects.update_or_create(
                hour=row["h"], source=row["source"],
                defaults={k: row[k] for k in ("records", "events", "quarantined", "merged", "max_lag_ms", "minutes")})
            written += 1
        SourceHour.objects.filter(hour__lt=now - dt.timedelta(days=settings.QUALITY_SOURCE_HOURS_KEEP_DAYS)).delete()
    return written


def scorecards_evaluate(*, now: dt.datetime | None = None) -> dict:
    """Grade the platform, every registered source and every contract version from the latest check results,
    the quarantine and pipeline figures since the previous evaluation, and the anomaly baselines; store one
    snapshot per scorecard (the history chart) and purge snapshots past retention. Runs after each check
    cycle. A warehouse that cannot be read leaves the quarantine figures empty (the checks' errors say why)."""
    from quality import scorecards
    from quality.models import ScorecardSnapshot
    from quality.selectors import (
        scorecard_facts,
        scorecard_previous_since,
        scorecard_thresholds,
        scorecard_window_start,
        warehouse_window,
    )
    from warehouse.connection import WarehouseError, warehouse_connection

    now = now or timezone.now()
    source_hours_rollup(now=now)
    start = scorecard_window_start(now)
    warehouse: dict[str, list[dict]] = {}
    try:
        with warehouse_connection() as conn:
            warehouse = warehouse_window(conn, start=start, end=now)
    except WarehouseError:
        logger.warning("scorecards: the warehouse could not be read; quarantine figures left out", exc_info=True)
    facts = scorecard_facts(now=now, start=start, warehouse=warehouse)
    thresholds = scorecard_thresholds()
    graded = [(ScorecardSnapshot.Kind.PLATFORM, "platform", scorecards.platform_grade, facts["platform"])]
    graded += [(ScorecardSnapshot.Kind.SOURCE, n, scorecards.source_grade, f) for n, f in facts["sources"].items()]
    graded += [(ScorecardSnapshot.Kind.CONTRACT, n, scorecards.contract_grade, f)
               for n, f in facts["contracts"].items()]
    snapshots = []
    for kind, subject, grade_of, subject_facts in graded:
        grade = grade_of(subject_facts, now=now, thresholds=thresholds)
        reasons = scorecards.reasons_since(grade.reasons, scorecard_previous_since(kind, subject, before=now), now)
        snapshots.append(ScorecardSnapshot(kind=kind, subject=subject[:200], evaluated_at=now, level=grade.level,
                                           score=grade.score, reasons=[r.as_dict() for r in reasons],
                                           facts=subject_facts.as_dict()))
    with transaction.atomic():
        ScorecardSnapshot.objects.bulk_create(snapshots)
        purged, _ = ScorecardSnapshot.objects.filter(
            evaluated_at__lt=now - dt.timedelta(days=settings.QUALITY_SCORECARD_RETENTION_DAYS)).delete()
    levels: dict[str, int] = {}
    for snap in snapshots:
        levels[snap.level] = levels.get(snap.level, 0) + 1
    return {"scorecards": len(snapshots), "levels": levels, "purged": purged,
            "platform": snapshots[0].level if snapshots else None}
