"""The per-minute pipeline sample (``PipelineMinute``) behind the Pipeline page's trends: what the shard readers
read, landed and quarantined per source, what the merger put into CANONICAL.EVENTS, and the largest shard lag.

Like ``collector_stats``: counted in memory per process and written to PostgreSQL at most every
``FLUSH_SECONDS`` (one upsert per minute and source that changed), so the hot path costs a dictionary
update, not a write. Kept ``KEEP_HOURS``; the figures of the last seconds before a process dies are lost
(they are for a person watching trends, not for accounting: the warehouse has the exact counts).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterable, Mapping

from django.db import DatabaseError, connection, transaction

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 5.0
KEEP_HOURS = 24
STREAM = ""  # the stream-wide row: merged events and the largest lag

_lock = threading.Lock()
#: (minute epoch seconds, source) -> [records, events, quarantined, merged, max lag ms or None]
_pending: dict[tuple[int, str], list] = {}
_last_flush = time.monotonic()


def pipeline_minute_record(*, per_source: Mapping[str, tuple[int, int, int]] | None = None, merged: int = 0,
                           lag_ms: int | None = None, now: float | None = None) -> None:
    """Count a unit's (records, events, quarantined) per source, events merged, and a lag read; flushes
    when the buffer is old enough."""
    global _last_flush
    minute = int((time.time() if now is None else now) // 60) * 60
    with _lock:
        for source, (records, events, quarantined) in (per_source or {}).items():
            entry = _pending.setdefault((minute, source[:64] or "(none)"), [0, 0, 0, 0, None])
            entry[0] += records
            entry[1] += events
            entry[2] += quarantined
        if merged or lag_ms is not None:
            entry = _pending.setdefault((minute, STREAM), [0, 0, 0, 0, None])
            entry[3] += merged
            if lag_ms is not None:
                entry[4] = lag_ms if entry[4] is None else max(entry[4], lag_ms)
        due = time.monotonic() - _last_flush >= FLUSH_SECONDS
        if due:
            _last_flush = time.monotonic()
    if due:
        pipeline_minutes_flush()


def pipeline_minutes_flush() -> int:
    """Write the counted minutes (adding to what other processes wrote). Returns rows written."""
    with _lock:
        taken = list(_pending.items())
        _pending.clear()
    if not taken:
        return 0
    try:
        _upsert(taken)
    except DatabaseError:
        logger.warning("pipeline minutes: could not write %d rows; dropped", len(taken), exc_info=True)
        return 0
    return len(taken)


def _upsert(rows: Iterable[tuple[tuple[int, str], list]]) -> None:
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
    params = [(_utc(minute), source, *counts) for (minute, source), counts in rows]
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)
        PipelineMinute.objects.filter(minute__lt=_utc(time.time() - KEEP_HOURS * 3600)).delete()


def _utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC)
