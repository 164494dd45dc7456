"""What the collectors answered, per source, minute and answer code, for the source and pipeline pages.

Counting is in memory per process and written to PostgreSQL at most every ``FLUSH_SECONDS`` (one
upsert per source, minute and code), so a flood of refused requests (a sender with a rotated key, a
scanner) costs the database a few rows a minute, not a write per request. Counts of the last seconds
before a process dies are lost; the pages are for seeing a sender being turned away, not billing.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterable

from django.db import DatabaseError, connection, transaction

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 5.0
KEEP_HOURS = 48
ACCEPTED = "accepted"

_lock = threading.Lock()
#: (source, minute epoch seconds, code) -> [status, requests, events, last epoch seconds]
_pending: dict[tuple[str, int, str], list] = {}
_last_flush = time.monotonic()


def collector_answer_record(*, source: str, status: int, code: str, events: int = 0,
                            now: float | None = None) -> None:
    """Count one answer (called by every collector request); flushes when the buffer is old enough."""
    global _last_flush
    stamp = time.time() if now is None else now
    key = (source or "", int(stamp // 60) * 60, code)
    with _lock:
        entry = _pending.get(key)
        if entry is None:
            _pending[key] = [status, 1, events, stamp]
        else:
            entry[1] += 1
            entry[2] += events
            entry[3] = max(entry[3], stamp)
        due = time.monotonic() - _last_flush >= FLUSH_SECONDS
        if due:
            _last_flush = time.monotonic()
    if due:
        collector_answers_flush()


def collector_answers_flush() -> int:
    """Write the counted answers (adding to what other processes wrote). Returns rows written."""
    with _lock:
        taken = list(_pending.items())
        _pending.clear()
    if not taken:
        return 0
    try:
        _upsert(taken)
    except DatabaseError:
        logger.warning("collector answers: could not write %d counts; dropped", len(taken), exc_info=True)
        return 0
    return len(taken)


def _upsert(rows: Iterable[tuple[tuple[str, int, str], list]]) -> None:
    from ingest_workers.models import CollectorAnswer

    table = connection.ops.quote_name(CollectorAnswer._meta.db_table)
    # ON CONFLICT … DO UPDATE adds to the stored counts (PostgreSQL and SQLite alike): several
    # processes count the same minute
    # the model's own table name; every value is bound
    sql = (
        f"INSERT INTO {table} (source, minute, code, status, requests, events, last_at) "  # noqa: S608
        "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (source, minute, code) DO UPDATE SET "
        "requests = {t}.requests + EXCLUDED.requests, events = {t}.events + EXCLUDED.events, "
        "status = EXCLUDED.status, last_at = CASE WHEN EXCLUDED.last_at > {t}.last_at "
        "THEN EXCLUDED.last_at ELSE {t}.last_at END").replace("{t}", table)
    params = [(source, _utc(minute), code, status, requests, events, _utc(last))
              for (source, minute, code), (status, requests, events, last) in rows]
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)
        CollectorAnswer.objects.filter(minute__lt=_utc(time.time() - KEEP_HOURS * 3600)).delete()


def _utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC)
