# ruff: noqa: S608 - every interpolated name is a checked identifier or a constant of this module; values are bound
"""Retention: scheduled purges of data older than each store keeps it (docs/privacy.md, "Retention").

* ``archive`` keeps ``RAW_ARCHIVE_RETENTION_DAYS`` (180): whole objects of the ``dt=`` partitions before the
  cut-off day are deleted (by key; the objects' contents are never read), and the ``unattributed`` day keys
  of those days are destroyed (crypto-shredding what copies of the objects remain);
* ``landing`` keeps ``RETENTION_LANDING_DAYS`` (7): RAW.LANDING_EVENTS rows that are merged (their offset at or
  before the channel's MERGE_PROGRESS) and landed before the cut-off are deleted; unmerged rows stay;
* ``quarantine`` keeps ``RETENTION_QUARANTINE_PAYLOAD_DAYS`` (30): PAYLOAD and REASON_DETAIL of older
  RAW.QUARANTINE rows are cleared (the row, its reason code and raw pointer stay for the counts);
* ``curated`` keeps ``RETENTION_CURATED_DAYS`` (3 years): older rows of CANONICAL.EVENTS, the curated tables,
  RAW.QUARANTINE, RAW.LATE_COPIES and RAW.EVENT_COPIES are deleted, by each table's time column.

Every purge is idempotent (run again: removes nothing more) and records a ``RetentionRun`` per store. The
cut-offs are pure (``cutoff_for``, ``archive_partitions_expired``); the purges take a connection or a store.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

STORES: tuple[str, ...] = ("archive", "landing", "quarantine", "curated")
_PARTITION = re.compile(r"(?:^|/)dt=(\d{4}-\d{2}-\d{2})(?:/|$)")

#: (table, time column) purged by the ``curated`` store; the column's type decides the comparison. The
#: ingest tables come in the order the merge's transaction writes them (EVENT_COPIES, LATE_COPIES, EVENTS,
#: QUARANTINE): Snowflake's DML holds table locks to the end of a transaction, and the other order could
#: make this one and a merge wait on each other until one is aborted
CURATED_TIME_COLUMNS: tuple[tuple[str, str], ...] = (
    ("RAW.EVENT_COPIES", "EVENT_DATE"),
    ("RAW.LATE_COPIES", "EVENT_DATE"),
    ("CANONICAL.EVENTS", "EVENT_DATE"),
    ("RAW.QUARANTINE", "QUARANTINED_AT"),
    ("ANALYTICS.EVENT_FACTS", "EVENT_TIME"),
    ("ANALYTICS.CONVERSATION_SESSIONS", "STARTED_AT"),
    ("ANALYTICS.USER_JOURNEYS", "STARTED_AT"),
    ("ANALYTICS.USER_FEEDBACK", "FEEDBACK_AT"),
    ("ANALYTICS.TOKEN_COST_USAGE", "HOUR"),
    ("ANALYTICS.PLATFORM_ENGAGEMENT_DAILY", "DAY"),
)


@dataclasses.dataclass(frozen=True)
class RetentionPolicy:
    """Days each store keeps (settings; docs/privacy.md)."""

    archive: int = 180
    landing: int = 7
    quarantine: int = 30
    curated: int = 1096

    def days(self, store: str) -> int:
        return int(getattr(self, store))


def policy_from_settings() -> RetentionPolicy:
    from django.conf import settings

    return RetentionPolicy(
        archive=int(settings.RAW_ARCHIVE_RETENTION_DAYS), landing=int(settings.RETENTION_LANDING_DAYS),
        quarantine=int(settings.RETENTION_QUARANTINE_PAYLOAD_DAYS), curated=int(settings.RETENTION_CURATED_DAYS))


def cutoff_for(now: dt.datetime, days: int) -> dt.datetime:
    """The instant before which data goes: midnight UTC, ``days`` days before ``now``'s day (whole days, so
    a run at any hour of one day removes the same)."""
    if days < 1:
        raise ValueError(f"a retention of {days} days would remove data still in use: at least 1")
    day = now.astimezone(dt.UTC).date() - dt.timedelta(days=days)
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def archive_partitions_expired(prefixes: Iterable[str], cutoff: dt.datetime) -> list[str]:
    """The ``…/dt=YYYY-MM-DD/`` prefixes whose day is before the cut-off's day (others, and names that are
    not a partition, are kept)."""
    out = []
    for prefix in prefixes:
        match = _PARTITION.search(prefix)
        if match is None:
            continue
        try:
            day = dt.date.fromisoformat(match.group(1))
        except ValueError:
            continue
        if day < cutoff.date():
            out.append(prefix)
    return sorted(out)


# --------------------------------------------------------------------------------------------
# the purges
# --------------------------------------------------------------------------------------------

def _partition_prefixes(store: Any, root: str, depth: int = 3) -> list[str]:
    """Every ``dt=`` prefix under ``root`` (the current layout has it first; older ones under source=…)."""
    import obstore

    found: list[str] = []
    frontier = [root]
    for _ in range(depth):
        deeper: list[str] = []
        for prefix in frontier:
            listing = obstore.list_with_delimiter(store, prefix or None)
            for common in listing["common_prefixes"]:
                (found if _PARTITION.search(common + "/") else deeper).append(common)
        frontier = deeper
    return found


def archive_purge(cutoff: dt.datetime, *, url: str | None = None) -> tuple[int, dict]:
    """Delete every archive object of the expired ``dt=`` partitions (whole objects, by key)."""
    import obstore

    from ingest_workers.archive import archive_store

    store, prefix = archive_store(url)
    root = f"{prefix}/raw" if prefix else "raw"
    removed: dict[str, int] = {}
    for partition in archive_partitions_expired(_partition_prefixes(store, root), cutoff):
        paths = [meta["path"] for batch in obstore.list(store, prefix=partition + "/") for meta in batch]
        for start in range(0, len(paths), 1000):   # S3 DeleteObjects takes up to 1,000 keys
            obstore.delete(store, paths[start:start + 1000])
        removed[partition.removeprefix(f"{prefix}/" if prefix else "")] = len(paths)
    return sum(removed.values()), {"partitions": removed}


def archive_unattributed_keys_expire(cutoff: dt.datetime) -> int:
    """Destroy the per-day ``unattributed`` keys (archived records with no known identifier: quarantined
    ones, identifier-less events) of the days before the cut-off day: the same days whose objects the
    archive purge deletes, so copies of them elsewhere (S3 versions, replicas, backups) cannot be read either.
    Returns how many keys were destroyed."""
    from deletion.shredding import archive_unattributed_keys_shred

    return archive_unattributed_keys_shred(before_day=(cutoff.date() - dt.date(1970, 1, 1)).days)


def _execute(cur: Any, sql: str, params: dict | None = None) -> int:
    from warehouse.load import execute_bound

    if params:
        execute_bound(cur, sql, params)
    else:
        cur.execute(sql)
    count = cur.rowcount
    return int(count) if count is not None and count >= 0 else 0


def _ts(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")


def landing_purge(conn: Any, cutoff: dt.datetime) -> tuple[int, dict]:
    """Delete merged landing rows landed before the cut-off (unmerged rows stay, whatever their age)."""
    from warehouse.connection import warehouse_errors
    from warehouse.ddl import check_identifier
    from warehouse.landing import _offset_sql

    db = check_identifier(conn.database)
    with warehouse_errors():
        cur = conn.cursor()
        try:
            removed = _execute(
                cur, f"DELETE FROM {db}.RAW.LANDING_EVENTS t USING {db}.RAW.MERGE_PROGRESS p "
                     f"WHERE p.CHANNEL = t.CHANNEL AND {_offset_sql('t.OFFSET_TOKEN')} <= "
                     f"{_offset_sql('p.MERGED_THROUGH')} AND t.LANDED_AT < CAST(%(cutoff)s AS TIMESTAMP_NTZ(6))",
                {"cutoff": _ts(cutoff)})
        finally:
            cur.close()
    return removed, {"RAW.LANDING_EVENTS": removed}


def quarantine_purge(conn: Any, cutoff: dt.datetime) -> tuple[int, dict]:
    """Clear the raw payload (and the reason text, which may quote it) of quarantine rows older than the cut-off."""
    from warehouse.connection import warehouse_errors
    from warehouse.ddl import check_identifier

    db = check_identifier(conn.database)
    with warehouse_errors():
        cur = conn.cursor()
        try:
            removed = _execute(
                cur, f"UPDATE {db}.RAW.QUARANTINE SET PAYLOAD = NULL, REASON_DETAIL = NULL "
                     f"WHERE QUARANTINED_AT < CAST(%(cutoff)s AS TIMESTAMP_NTZ(6)) "
                     f"AND (PAYLOAD IS NOT NULL OR REASON_DETAIL IS NOT NULL)", {"cutoff": _ts(cutoff)})
        finally:
            cur.close()
    return removed, {"RAW.QUARANTINE payloads cleared": removed}


def curated_purge(conn: Any, cutoff: dt.datetime) -> tuple[int, dict]:
    """Delete rows older than the cut-off from the canonical and curated tables (one transaction)."""
    from warehouse.analytics_ddl import analytics_ensure
    from warehouse.connection import warehouse_errors
    from warehouse.ddl import check_identifier

    db = check_identifier(conn.database)
    removed: dict[str, int] = {}
    with warehouse_errors():
        analytics_ensure(conn)
        cur = conn.cursor()
        try:
            cur.execute("BEGIN")
            try:
                for table, column in CURATED_TIME_COLUMNS:
                    cast = "DATE" if column in ("EVENT_DATE", "DAY") else "TIMESTAMP_NTZ(6)"
                    removed[table] = _execute(cur, f"DELETE FROM {db}.{table} WHERE {column} < "
                                                   f"CAST(%(cutoff)s AS {cast})",
                                              {"cutoff": _ts(cutoff) if cast != "DATE" else cutoff.date().isoformat()})
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")
        finally:
            cur.close()
    return sum(removed.values()), removed


# --------------------------------------------------------------------------------------------
# the service: run and record
# --------------------------------------------------------------------------------------------

def retention_run(*, stores: Sequence[str] | None = None, trigger: str = "schedule",
                  now: dt.datetime | None = None, policy: RetentionPolicy | None = None) -> list[Any]:
    """Purge each store (all by default) and record a ``RetentionRun`` for each; a store that fails is recorded
    as failed with its error and the others still run. Returns the records."""
    from django.utils import timezone

    from deletion.models import RetentionRun
    from warehouse.connection import warehouse_connection

    stores = list(stores or STORES)
    unknown = [s for s in stores if s not in STORES]
    if unknown:
        raise ValueError(f"unknown retention store {unknown[0]!r}: one of {', '.join(STORES)}")
    policy = policy or policy_from_settings()
    now = now or timezone.now()
    run_id = uuid.uuid4()
    records = []
    for store in stores:
        days = policy.days(store)
        cutoff = cutoff_for(now, days)
        record = RetentionRun.objects.create(run_id=run_id, store=store, trigger=trigger, keep_days=days,
                                             cutoff=cutoff)
        try:
            if store == "archive":
                removed, detail = archive_purge(cutoff)
                detail["unattributed_keys_destroyed"] = archive_unattributed_keys_expire(cutoff)
            else:
                with warehouse_connection() as conn:
                    purge = {"landing": landing_purge, "quarantine": quarantine_purge, "curated": curated_purge}[store]
                    removed, detail = purge(conn, cutoff)
            record.status, record.removed, record.detail = RetentionRun.Status.SUCCEEDED, removed, detail
        except Exception as exc:  # noqa: BLE001 - recorded on the run; the next store still runs
            record.status, record.error = RetentionRun.Status.FAILED, f"{type(exc).__name__}: {exc}"[:4000]
        record.finished_at = timezone.now()
        record.save(update_fields=["status", "removed", "detail", "error", "finished_at"])
        records.append(record)
    return records


def retention_runs_recent(limit: int = 100) -> list[Any]:
    """The latest store purges, newest first (the runs page)."""
    from deletion.models import RetentionRun

    return list(RetentionRun.objects.all()[:limit])
