"""The pipeline's per-minute figures, written to PostgreSQL for the portal's charts, the scorecards and
the anomaly baselines, and counted for ``/metrics`` (docs/metrics.md).

Two tables, both filled from in-memory counts flushed at most every ``FLUSH_SECONDS`` (``minute_counts``:
the hot path costs a dictionary update per unit, not a write):

- ``PipelineMinute``: the Pipeline page's small sample per source (records, events, quarantined), and on
  the stream-wide row (source "") the events merged and the largest shard lag. Kept ``KEEP_HOURS``.
- ``PipelineMetricMinute``: one value per minute, source, contract version, metric and label (a
  quarantine reason, a latency bucket, a shard): the metrics of ``METRICS``. Kept
  ``PIPELINE_METRICS_KEEP_HOURS`` (default 8 days: the same weekday a week back).

Several processes count the same minute: the upserts add counts and keep the larger of maxima. The
figures of the last seconds before a process dies are lost (the warehouse has the exact counts).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Hashable, Iterable, Mapping

from django.conf import settings
from django.db import connection, transaction

from ingest_workers.minute_counts import MinuteCounts, minute_of

FLUSH_SECONDS = 5.0
KEEP_HOURS = 24
STREAM = ""  # the stream-wide row: merged events and the largest lag

# --- PipelineMetricMinute.metric values (docs/metrics.md lists them with their meaning) ----------------
RECORDS = "records"            # per source: stream records read
VALID = "valid"                # per contract version: records that validated and mapped
EVENTS = "events"              # per contract version: canonical events landed (every copy)
QUARANTINED = "quarantined"    # per contract version when known (else per source); label: reason
DUPLICATES = "duplicates"      # per contract version: copies of an event already in the same unit
SUPPRESSED = "suppressed"      # per source: records of erased subjects dropped at ingest (never landed)
MERGED = "merged"              # per contract version: event copies merged into CANONICAL.EVENTS
LATE = "late"                  # per contract version: merged copies whose event time was older than the lateness
LATENCY = "latency"            # per contract version; label: bucket upper bound (s) of merge time − receipt
MERGE_DUPLICATES = "merge_duplicates"  # stream-wide: stored events a merge found a new copy of
LATE_COPIES = "late_copies"    # stream-wide: copies that arrived after the dedup window
SHARD_LAG_MS = "shard_lag_ms"  # per shard (label), largest MillisBehindLatest read (max)
LAST_MERGE_MS = "last_merge_ms"  # stream-wide: epoch ms of the last successful merge round (max)
NEWEST_MERGED_MS = "newest_merged_received_ms"  # per contract version: newest receipt merged, epoch ms (max)
SUMMED = (RECORDS, VALID, EVENTS, QUARANTINED, DUPLICATES, SUPPRESSED, MERGED, LATE, LATENCY, MERGE_DUPLICATES,
          LATE_COPIES)
MAXED = (SHARD_LAG_MS, LAST_MERGE_MS, NEWEST_MERGED_MS)
METRICS = SUMMED + MAXED


def metrics_keep_hours() -> float:
    return float(getattr(settings, "PIPELINE_METRICS_KEEP_HOURS", 192))


def late_after_seconds() -> float:
    return float(getattr(settings, "PIPELINE_LATE_AFTER_S", 900))


def _upsert_minutes(rows: list[tuple[Hashable, list]]) -> None:
    from ingest_workers.models import PipelineMinute

    table = connection.ops.quote_name(PipelineMinute._meta.db_table)
    # several processes count the same minute: add the counts, keep the larger lag (CASE, not GREATEST,
    # which SQLite lacks); the model's own table name, every value bound
    sql = (
        f"INSERT INTO {table} (minute, source, records, events, quarantined, merged, max_lag_ms) "  # noqa: S608
        "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (minute, source) DO UPDATE SET "
        "records = {t}.records + EXCLUDED.records, events = {t}.events + EXCLUDED.events, "
        "quarantined = {t}.quarantined + EXCLUDED.quarantined, merged = {t}.merged + EXCLUDED.merged, "
        "max_lag_ms = CASE WHEN {t}.max_lag_ms IS NULL OR EXCLUDED.max_lag_ms > {t}.max_lag_ms "
        "THEN COALESCE(EXCLUDED.max_lag_ms, {t}.max_lag_ms) ELSE {t}.max_lag_ms END").replace("{t}", table)
    params = [(_utc(minute), source, *counts) for (minute, source), counts in rows]  # type: ignore[misc]
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)
        PipelineMinute.objects.filter(minute__lt=_utc(time.time() - KEEP_HOURS * 3600)).delete()


def _upsert_metrics(rows: list[tuple[Hashable, list]]) -> None:
    from ingest_workers.models import PipelineMetricMinute

    table = connection.ops.quote_name(PipelineMetricMinute._meta.db_table)
    maxed = ", ".join(f"'{m}'" for m in MAXED)
    # counts add up; the maxima (MAXED: lags, timestamps) keep the larger; the model's own table name,
    # every value bound
    sql = (
        f"INSERT INTO {table} (minute, source, contract, version, metric, label, value) "  # noqa: S608
        "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (minute, source, contract, version, metric, label) "
        f"DO UPDATE SET value = CASE WHEN EXCLUDED.metric IN ({maxed}) THEN "
        "CASE WHEN EXCLUDED.value > {t}.value THEN EXCLUDED.value ELSE {t}.value END "
        "ELSE {t}.value + EXCLUDED.value END").replace("{t}", table)
    params = [(_utc(minute), source, contract, version, metric, label, value)
              for (minute, source, contract, version, metric, label), (value,) in rows]  # type: ignore[misc]
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)
        PipelineMetricMinute.objects.filter(minute__lt=_utc(time.time() - metrics_keep_hours() * 3600)).delete()


#: (minute epoch seconds, source) -> [records, events, quarantined, merged, max lag ms or None]
_minutes = MinuteCounts(name="pipeline minutes", folds=("sum", "sum", "sum", "sum", "max"),
                        write=_upsert_minutes, flush_seconds=FLUSH_SECONDS)
_pending = _minutes.pending
#: (minute, source, contract, version, metric, label) -> [value]; one buffer per fold
_sums = MinuteCounts(name="pipeline metrics", folds=("sum",), write=_upsert_metrics, flush_seconds=FLUSH_SECONDS)
_maxima = MinuteCounts(name="pipeline maxima", folds=("max",), write=_upsert_metrics, flush_seconds=FLUSH_SECONDS)


def pipeline_minute_record(*, per_source: Mapping[str, tuple[int, int, int]] | None = None, merged: int = 0,
                           lag_ms: int | None = None, now: float | None = None) -> None:
    """Count a unit's (records, events, quarantined) per source, events merged, and a lag read (the
    Pipeline page's sample); flushes when the buffer is old enough."""
    minute = minute_of(time.time() if now is None else now)
    items: list[tuple[Hashable, list]] = [
        ((minute, source[:64] or "(none)"), [records, events, quarantined, 0, None])
        for source, (records, events, quarantined) in (per_source or {}).items()]
    if merged or lag_ms is not None:
        items.append(((minute, STREAM), [0, 0, 0, merged, lag_ms]))
    _minutes.add(items)


def pipeline_unit_record(result, *, shard_id: str, lag_ms: int | None, now: float | None = None) -> None:
    """What a shard reader's unit did (a ``pipeline.BatchResult``): the page's sample, the per-minute
    metrics per source, contract version and reason, and the ``/metrics`` counters. A few dictionary
    updates per source and contract version of the unit, none per event."""
    from ingest_workers import metrics

    stamp = time.time() if now is None else now
    minute = minute_of(stamp)
    per_source = result.per_source
    pipeline_minute_record(per_source={name: (c.records, c.events, c.quarantined) for name, c in per_source.items()},
                           lag_ms=lag_ms, now=stamp)
    sums: list[tuple[Hashable, list]] = []
    for name, counts in per_source.items():
        source = (name or "(none)")[:64]
        sums.append(((minute, source, "", 0, RECORDS, ""), [counts.records]))
        if counts.suppressed:  # dropped before any contract version's counts: the source's row
            sums.append(((minute, source, "", 0, SUPPRESSED, ""), [counts.suppressed]))
        for (subject, version), (valid, events, duplicates) in counts.versions.items():
            sums.append(((minute, source, subject[:128], version, VALID, ""), [valid]))
            sums.append(((minute, source, subject[:128], version, EVENTS, ""), [events]))
            if duplicates:
                sums.append(((minute, source, subject[:128], version, DUPLICATES, ""), [duplicates]))
    quarantined: dict[tuple[str, str, int, str], int] = {}
    for row in result.quarantine:  # one per quarantined record (few): its contract when it got that far
        key = ((row.source or "(none)")[:64], (row.contract_subject or "")[:128], row.contract_version or 0,
               row.reason_code)
        quarantined[key] = quarantined.get(key, 0) + 1
    for (source, subject, version, reason), n in quarantined.items():
        sums.append(((minute, source, subject, version, QUARANTINED, reason), [n]))
    _sums.add(sums)
    if lag_ms is not None:
        _maxima.add((((minute, STREAM, "", 0, SHARD_LAG_MS, shard_id[:64]), [lag_ms]),))
    metrics.pipeline_unit_count(per_source, quarantined)


def pipeline_lag_record(*, shard_id: str, lag_ms: int | None, now: float | None = None) -> None:
    """A read that found nothing new: only the lag (the page's sample and the shard's maximum)."""
    stamp = time.time() if now is None else now
    pipeline_minute_record(lag_ms=lag_ms, now=stamp)
    if lag_ms is not None:
        _maxima.add((((minute_of(stamp), STREAM, "", 0, SHARD_LAG_MS, shard_id[:64]), [lag_ms]),))


def pipeline_merge_record(*, inserted: int, updated: int = 0, late_copies: int = 0,
                          latency: Iterable[Mapping] = (), now: float | None = None) -> None:
    """A successful merge round: events inserted, stored events given a new copy, copies past the dedup
    window, and ``latency`` rows (source, contract, version, bucket, copies, late, newest_received_ms) of
    the copies it merged (``warehouse.landing.merge_latency``)."""
    from ingest_workers import metrics

    stamp = time.time() if now is None else now
    minute = minute_of(stamp)
    pipeline_minute_record(merged=inserted, now=stamp)
    sums: list[tuple[Hashable, list]] = []
    maxima: list[tuple[Hashable, list]] = [((minute, STREAM, "", 0, LAST_MERGE_MS, ""), [int(stamp * 1000)])]
    if updated:
        sums.append(((minute, STREAM, "", 0, MERGE_DUPLICATES, ""), [updated]))
    if late_copies:
        sums.append(((minute, STREAM, "", 0, LATE_COPIES, ""), [late_copies]))
    rows = list(latency)
    for row in rows:
        key = (row["source"][:64], row["contract"][:128], row["version"])
        sums.append(((minute, *key, LATENCY, row["bucket"]), [row["copies"]]))
        sums.append(((minute, *key, MERGED, ""), [row["copies"]]))
        if row["late"]:
            sums.append(((minute, *key, LATE, ""), [row["late"]]))
        if row.get("newest_received_ms") is not None:
            maxima.append(((minute, *key, NEWEST_MERGED_MS, ""), [row["newest_received_ms"]]))
    _sums.add(sums)
    _maxima.add(maxima)
    metrics.pipeline_merge_count(inserted=inserted, updated=updated, late_copies=late_copies, latency=rows,
                                 at=stamp)


def pipeline_minutes_flush() -> int:
    """Write the counted minutes and metrics (adding to what other processes wrote). Returns rows written."""
    return _minutes.flush() + _sums.flush() + _maxima.flush()


def _utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC)
