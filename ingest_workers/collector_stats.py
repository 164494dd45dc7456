"""What the collectors answered, per source, minute and answer code, for the source and pipeline pages
and for ``/metrics`` (docs/metrics.md).

Counted in memory per process and written to PostgreSQL at most every ``FLUSH_SECONDS`` (one upsert per
source, minute and code: ``minute_counts``), so a flood of refused requests (a sender with a rotated key,
a scanner) costs the database a few rows a minute, not a write per request. Counts of the last seconds
before a process dies are lost; the pages are for seeing a sender being turned away, not billing.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Hashable

from django.db import connection, transaction

from ingest_workers.minute_counts import MinuteCounts, minute_of

FLUSH_SECONDS = 5.0
KEEP_HOURS = 48
ACCEPTED = "accepted"


def _upsert(rows: list[tuple[Hashable, list]]) -> None:
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
              for (source, minute, code), (status, requests, events, last) in rows]  # type: ignore[misc]
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)
        CollectorAnswer.objects.filter(minute__lt=_utc(time.time() - KEEP_HOURS * 3600)).delete()


#: (source, minute epoch seconds, code) -> [status, requests, events, last epoch seconds]
_counts = MinuteCounts(name="collector answers", folds=("last", "sum", "sum", "max"), write=_upsert,
                       flush_seconds=FLUSH_SECONDS)
_pending = _counts.pending


def collector_answer_record(*, source: str, status: int, code: str, events: int = 0,
                            now: float | None = None) -> None:
    """Count one answer (called by every collector request); flushes when the buffer is old enough."""
    from ingest_workers import metrics

    stamp = time.time() if now is None else now
    metrics.collector_answer_count(source=source, code=code, events=events)
    _counts.add((((source or "", minute_of(stamp), code), (status, 1, events, stamp)),))


def collector_answers_flush() -> int:
    """Write the counted answers (adding to what other processes wrote). Returns rows written."""
    return _counts.flush()


def _utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC)
