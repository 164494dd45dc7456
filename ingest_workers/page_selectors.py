"""Reads for the quarantine and pipeline pages: quarantine rows (scoped to what the viewer may see),
counts by reason, one record, live pipeline numbers and the shard leases.

Warehouse reads take an open connection (``warehouse.connection``) and run plain Snowflake SQL, the
same on Snowflake and on the embedded server. SQL text holds only table names (``qualified``) and
fixed clauses; every value is bound (hence the ``noqa: S608`` marks). Who sees what:

* data engineers (and admins) see every quarantined record;
* a platform team member sees the records of their teams' sources only (matched by source name or id);
* anyone else sees none (the view refuses).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Any

import orjson
from django.conf import settings
from django.utils import timezone

from ingest_workers.models import ShardLease
from portal.roles import is_data_engineer, may_see_quarantine
from warehouse.ddl import (
    CANONICAL_EVENTS,
    CHANNEL_OFFSETS,
    MERGE_LOG,
    QUARANTINE,
    QUARANTINE_STATUSES,
    check_identifier,
    qualified,
)
from warehouse.load import pipeline_counts, warehouse_query

PAGE_SIZE = 50
#: the "since" choices the list offers (any ISO date or date-time works in a link too)
SINCE_CHOICES: tuple[tuple[str, str, dt.timedelta], ...] = (
    ("1h", "Last hour", dt.timedelta(hours=1)),
    ("24h", "Last 24 hours", dt.timedelta(hours=24)),
    ("7d", "Last 7 days", dt.timedelta(days=7)),
    ("30d", "Last 30 days", dt.timedelta(days=30)),
)
LIST_COLUMNS = (
    "QUARANTINE_ID", "SOURCE", "SOURCE_ID", "CONTRACT_SUBJECT", "CONTRACT_VERSION", "REASON_CODE", "ERROR_PATH",
    "SHARD_ID", "SEQUENCE_NUMBER", "RECEIVED_AT", "QUARANTINED_AT", "STATUS", "REDRIVEN_AT", "REDRIVE_RESULT",
)
_TIMESTAMP_KEYS = ("received_at", "quarantined_at", "redriven_at")
_IDS_FROM_JSON = "SELECT value::VARCHAR FROM TABLE(FLATTEN(INPUT => PARSE_JSON(%({name})s)))"


@dataclasses.dataclass(frozen=True)
class QuarantineScope:
    """Which quarantined records a person may see: all, or those of some sources."""

    everything: bool
    source_names: tuple[str, ...] = ()
    source_ids: tuple[str, ...] = ()

    def allows(self, row: dict) -> bool:
        return self.everything or row.get("source") in self.source_names or row.get("source_id") in self.source_ids


def quarantine_scope(user: Any) -> QuarantineScope | None:
    """What ``user`` may see in quarantine, or None when the page is not for them."""
    from contracts.page_selectors import sources_user_may_edit

    if not may_see_quarantine(user):  # the same rule hides the links to the quarantine
        return None
    if is_data_engineer(user):
        return QuarantineScope(everything=True)
    sources = list(sources_user_may_edit(user).values_list("name", "pk"))
    return QuarantineScope(False, tuple(name for name, _ in sources), tuple(str(pk) for _, pk in sources))


def quarantine_source_choices(user: Any, scope: QuarantineScope) -> list[str]:
    """Source names the source filter offers."""
    from contracts.page_selectors import sources_user_may_edit
    from contracts.selectors import source_list

    if scope.everything:
        return list(source_list().values_list("name", flat=True))
    return list(sources_user_may_edit(user).values_list("name", flat=True))


@dataclasses.dataclass(frozen=True)
class QuarantineFilters:
    source: str = ""
    reason: str = ""
    status: str = ""
    since: str = ""  # what the person chose ("24h", "2026-11-20"); ``since_at`` is the instant

    @property
    def since_at(self) -> dt.datetime | None:
        return since_parse(self.since)

    def as_query(self, **changes: str) -> dict[str, str]:
        values = {**dataclasses.asdict(self), **changes}
        return {k: v for k, v in values.items() if v}


def quarantine_filters_from(params: Any) -> QuarantineFilters:
    """Filters from a query string; unknown statuses and unreadable dates are dropped, not errors."""
    status = (params.get("status") or "").strip()
    since = (params.get("since") or "").strip()
    return QuarantineFilters(
        source=(params.get("source") or "").strip()[:200],
        reason=(params.get("reason") or "").strip()[:64],
        status=status if status in QUARANTINE_STATUSES else "",
        since=since if since_parse(since) is not None else "",
    )


def since_parse(value: str, *, now: dt.datetime | None = None) -> dt.datetime | None:
    """"1h"/"24h"/"7d"/"30d" (relative to now), or an ISO date / date-time (UTC unless it says)."""
    if not value:
        return None
    now = now or timezone.now()
    for key, _, delta in SINCE_CHOICES:
        if value == key:
            return now - delta
    match = re.fullmatch(r"(\d{1,4})([hd])", value)
    if match:
        amount = int(match.group(1))
        return now - (dt.timedelta(hours=amount) if match.group(2) == "h" else dt.timedelta(days=amount))
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _database(conn: Any) -> str:
    return check_identifier(conn.database)


def _utc_text(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _where(scope: QuarantineScope, filters: QuarantineFilters, *, with_reason: bool = True) -> tuple[str, dict]:
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if not scope.everything:
        clauses.append(f"(SOURCE IN ({_IDS_FROM_JSON.format(name='scope_names')})"
                       f" OR SOURCE_ID IN ({_IDS_FROM_JSON.format(name='scope_ids')}))")
        params["scope_names"] = orjson.dumps(list(scope.source_names)).decode()
        params["scope_ids"] = orjson.dumps(list(scope.source_ids)).decode()
    if filters.source:
        clauses.append("SOURCE = %(source)s")
        params["source"] = filters.source
    if with_reason and filters.reason:
        clauses.append("REASON_CODE = %(reason)s")
        params["reason"] = filters.reason
    if filters.status:
        clauses.append("STATUS = %(status)s")
        params["status"] = filters.status
    since = filters.since_at
    if since is not None:
        clauses.append("QUARANTINED_AT >= %(since)s::TIMESTAMP_NTZ(6)")
        params["since"] = _utc_text(since)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _timestamps(row: dict, keys: tuple[str, ...] = _TIMESTAMP_KEYS) -> dict:
    for key in keys:
        value = row.get(key)
        if isinstance(value, str):
            try:
                row[key] = dt.datetime.fromisoformat(value)
            except ValueError:
                pass
    return row


def _rows(conn: Any, sql: str, params: dict) -> list[dict]:
    return [_timestamps({k.lower(): v for k, v in row.items()}) for row in warehouse_query(conn, sql, params)]


def quarantine_page(
    conn: Any, *, scope: QuarantineScope, filters: QuarantineFilters, page: int = 1, page_size: int = PAGE_SIZE,
) -> tuple[list[dict], int]:
    """One page of quarantined records, newest first (no payloads), and how many match in all."""
    table = qualified(_database(conn), QUARANTINE)
    where, params = _where(scope, filters)
    total = int(warehouse_query(conn, f"SELECT COUNT(*) AS N FROM {table}{where}", params)[0]["N"])  # noqa: S608
    page = max(1, int(page))
    params.update(limit=int(page_size), offset=(page - 1) * int(page_size))
    rows = _rows(conn, f"SELECT {', '.join(LIST_COLUMNS)} FROM {table}{where}"  # noqa: S608
                       " ORDER BY QUARANTINED_AT DESC, QUARANTINE_ID LIMIT %(limit)s OFFSET %(offset)s", params)
    return rows, total


def quarantine_reason_counts(conn: Any, *, scope: QuarantineScope, filters: QuarantineFilters) -> dict[str, int]:
    """Records per reason code under every filter but the reason itself (so every reason can be picked)."""
    from ingest_workers.pipeline import REASON_CODES

    table = qualified(_database(conn), QUARANTINE)
    where, params = _where(scope, filters, with_reason=False)
    counts = dict.fromkeys(REASON_CODES, 0)
    for row in warehouse_query(conn, f"SELECT REASON_CODE, COUNT(*) AS N FROM {table}{where} GROUP BY REASON_CODE",  # noqa: S608
                               params):
        counts[row["REASON_CODE"] or "unknown"] = int(row["N"])
    return counts


def quarantine_overview(conn: Any, *, scope: QuarantineScope, filters: QuarantineFilters) -> dict[str, Any]:
    """What the list's stat cards say, under every filter but the reason: how many records, how many still
    wait for a re-drive (status new), and when the oldest waiting one was quarantined."""
    table = qualified(_database(conn), QUARANTINE)
    where, params = _where(scope, filters, with_reason=False)
    row = warehouse_query(conn, "SELECT COUNT(*) AS N, SUM(CASE WHEN STATUS = 'new' THEN 1 ELSE 0 END) AS WAITING,"  # noqa: S608
                                " MIN(CASE WHEN STATUS = 'new' THEN QUARANTINED_AT END) AS OLDEST_WAITING,"
                                f" MIN(QUARANTINED_AT) AS OLDEST FROM {table}{where}", params)[0]
    return _timestamps({"total": int(row["N"] or 0), "waiting": int(row["WAITING"] or 0),
                        "oldest_waiting_at": row["OLDEST_WAITING"], "oldest_at": row["OLDEST"]},
                       keys=("oldest_waiting_at", "oldest_at"))


def quarantine_ids_matching(conn: Any, *, scope: QuarantineScope, filters: QuarantineFilters, limit: int) -> list[str]:
    """Ids of the records that match the filters (at most ``limit``, newest first)."""
    table = qualified(_database(conn), QUARANTINE)
    where, params = _where(scope, filters)
    params["limit"] = int(limit)
    rows = warehouse_query(conn, f"SELECT QUARANTINE_ID FROM {table}{where}"  # noqa: S608
                                 " ORDER BY QUARANTINED_AT DESC, QUARANTINE_ID LIMIT %(limit)s", params)
    return [row["QUARANTINE_ID"] for row in rows]


def quarantine_record(conn: Any, *, scope: QuarantineScope, quarantine_id: str) -> dict | None:
    """One quarantined record with its payload, or None when it does not exist or is not theirs to see."""
    rows = _rows(conn, f"SELECT * FROM {qualified(_database(conn), QUARANTINE)} WHERE QUARANTINE_ID = %(id)s",  # noqa: S608
                 {"id": str(quarantine_id)[:200]})
    if not rows or not scope.allows(rows[0]):
        return None
    return rows[0]


def source_personal_paths(source_name: str | None) -> set[str]:
    """Source payload paths that the source's contracts (any version) map into personal canonical fields."""
    from contracts.selectors import contract_list, contract_versions
    from ingest_workers.masking import canonical_personal_targets, personal_source_paths

    if not source_name:
        return set()
    targets = canonical_personal_targets()
    paths: set[str] = set()
    for contract in contract_list(source=source_name):
        for version in contract_versions(contract):
            paths |= personal_source_paths(version.mapping, targets)
    return paths


def _registered_sources(names: list[str]) -> set[str]:
    from contracts.models import Source

    return set(Source.objects.filter(name__in=names).values_list("name", flat=True))


def source_for_link(source_name: str | None) -> Any:
    """The registered source of that name (for a link to its page), or None."""
    from contracts.models import Source

    if not source_name:
        return None
    return Source.objects.filter(name=source_name).only("pk", "name").first()


# --- the pipeline page ------------------------------------------------------------------------------

def pipeline_numbers(conn: Any) -> dict:
    """Warehouse totals and freshness: events, duplicates, quarantine, unmerged rows, newest event."""
    db = _database(conn)
    numbers: dict[str, Any] = dict(pipeline_counts(conn))
    events, offsets, merges = qualified(db, CANONICAL_EVENTS), qualified(db, CHANNEL_OFFSETS), qualified(db, MERGE_LOG)
    sql = (
        f"SELECT (SELECT MAX(RECEIVED_AT) FROM {events}) AS NEWEST_RECEIVED_AT,"  # noqa: S608
        f" (SELECT MAX(MERGED_AT) FROM {merges}) AS LAST_MERGED_AT,"
        f" (SELECT MAX(COMMITTED_AT) FROM {offsets} WHERE OFFSET_TOKEN IS NOT NULL) AS LAST_LANDED_AT"
    )
    fresh = warehouse_query(conn, sql)[0]
    now = timezone.now()
    for key, value in fresh.items():
        when = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
        numbers[key.lower()] = when
        numbers[key.lower().removesuffix("_at") + "_age_s"] = (
            max(0.0, (now - when).total_seconds()) if when is not None else None)
    return numbers


def shard_rows(*, stream: str | None = None) -> list[dict]:
    """The shard leases of the stream (default: the configured one) with a state a person can read."""
    stream = stream or settings.KINESIS_STREAM_NAME
    now = timezone.now()
    rows = []
    for lease in ShardLease.objects.filter(stream=stream).order_by("shard_id"):
        if lease.finished_at is not None:
            state = "finished"
        elif lease.parked_at is not None:
            state = f"parked: {lease.park_reason}"[:300]
        elif lease.failures:
            state = f"retrying ({lease.failures} failed): {lease.last_error}"[:300]
        elif lease.owner and lease.lease_expires_at and lease.lease_expires_at > now:
            state = "owned"
        elif lease.owner:
            state = "lease expired"
        else:
            state = "waiting"
        age = (now - lease.last_batch_at).total_seconds() if lease.last_batch_at else None
        rows.append({"lease": lease, "state": state, "last_batch_age_s": age,
                     "lag_current": lag_is_current(state=state, figure_age_s=age, lease_seconds=lease_seconds())})
    return rows


def lag_is_current(*, state: str, figure_age_s: float | None, lease_seconds: float) -> bool:
    """Whether a shard's lag figure says how far behind it is NOW: only while a worker owns the shard and
    has read it within a lease period. Otherwise (lease expired, waiting, retrying, parked) the figure is
    from the last read and the shard is not being read (hostile-input review: "Stale lag while the worker
    was down")."""
    return state == "owned" and figure_age_s is not None and figure_age_s <= lease_seconds


def lease_seconds() -> float:
    return float(getattr(settings, "INGEST_LEASE_SECONDS", 30))


# --- the pipeline's trends (per-minute samples) ----------------------------------------------------

TREND_MINUTES = 30


def pipeline_trends(*, minutes: int = TREND_MINUTES, now: dt.datetime | None = None) -> dict:
    """Events/s and lag per minute over the last ``minutes``, and per source over the last hour (what the
    collectors accepted and refused, what the readers read, landed and quarantined)."""
    from django.db.models import Sum

    from ingest_workers import collector_stats, pipeline_stats, pipeline_trends
    from ingest_workers.models import CollectorAnswer, PipelineMetricMinute, PipelineMinute

    collector_stats.collector_answers_flush()   # this process's latest counts too
    pipeline_stats.pipeline_minutes_flush()
    now = now or timezone.now()
    hour_ago = (now - dt.timedelta(hours=1)).replace(second=0, microsecond=0)
    samples = list(PipelineMinute.objects.filter(minute__gte=hour_ago).values(
        "minute", "source", "records", "events", "quarantined", "merged", "max_lag_ms"))
    metrics = PipelineMetricMinute.objects.filter(
        minute__gte=(now - dt.timedelta(minutes=minutes)).replace(second=0, microsecond=0),
        metric__in=(pipeline_stats.LATENCY, pipeline_stats.LATE, pipeline_stats.DUPLICATES,
                    pipeline_stats.MERGE_DUPLICATES)).values("minute", "metric", "label", "value")
    answers = CollectorAnswer.objects.filter(minute__gte=hour_ago)
    accepted = answers.filter(code=collector_stats.ACCEPTED).values("minute").annotate(events=Sum("events"))
    by_code = answers.values("source", "code").annotate(requests=Sum("requests"), events=Sum("events"))
    sources = pipeline_trends.source_breakdown(samples, by_code, accepted_code=collector_stats.ACCEPTED)
    known = _registered_sources([h.source for h in sources])
    for hour in sources:
        hour.registered = hour.source in known
    return {
        "series": pipeline_trends.minute_series(samples, accepted, now=now, minutes=minutes, metrics=metrics),
        "sources": sources,
        "minutes": minutes,
        "has_samples": bool(samples),
    }


# --- what the collectors answered ------------------------------------------------------------------

#: what a refusal means to the person who reads the page (codes without an entry are shown as they are)
COLLECTOR_CODE_HINTS = {
    "rotated_write_key": "sent with the key this source had before its last rotation: give the sender the new key",
    "invalid_write_key": "a key no source has",
    "missing_write_key": "no write key sent",
    "source_disabled": "the source is disabled",
    "webhook_source": "a webhook source's old write key used on the batch endpoint",
    "invalid_signature": "the provider's signature does not match the signing secret",
    "missing_signature": "no provider signature",
    "invalid_timestamp": "a stale or malformed provider timestamp",
    "signing_secret_not_set": "the source has no signing secret yet",
    "rate_limited": "over the source's rate limit",
    "body_too_large": "the body is over the size limit",
    "event_too_large": "an event is over the size limit",
    "too_many_events": "too many events in one request",
    "invalid_json": "the body is not JSON",
    "unsupported_media_type": "a content type the collector does not read",
    "stream_unavailable": "the stream could not take the events (the sender retries)",
    "database_unavailable": "the portal database was down (the sender retries)",
}


@dataclasses.dataclass
class CollectorAnswers:
    source: str
    accepted_requests: int = 0
    accepted_events: int = 0
    refused: list[dict] = dataclasses.field(default_factory=list)   # code, status, requests, last_at, hint

    @property
    def refused_requests(self) -> int:
        return sum(r["requests"] for r in self.refused)


def collector_answers_last_hour(*, source: str | None = None, now: dt.datetime | None = None) -> list[CollectorAnswers]:
    """Per source (one, or every source that was answered; "" for requests that named none), the
    accepted requests and events and the refusals by code over the last hour, most refused first."""
    from django.db.models import Max, Sum

    from ingest_workers import collector_stats
    from ingest_workers.models import CollectorAnswer

    collector_stats.collector_answers_flush()  # this process's latest counts too
    since = (now or timezone.now()) - dt.timedelta(hours=1)
    rows = CollectorAnswer.objects.filter(minute__gte=since.replace(second=0, microsecond=0))
    if source is not None:
        rows = rows.filter(source=source)
    grouped = (rows.values("source", "code").annotate(requests=Sum("requests"), events=Sum("events"),
                                                      last_at=Max("last_at"), status=Max("status")))
    by_source: dict[str, CollectorAnswers] = {}
    for row in grouped:
        answers = by_source.setdefault(row["source"], CollectorAnswers(row["source"]))
        if row["code"] == collector_stats.ACCEPTED:
            answers.accepted_requests += row["requests"]
            answers.accepted_events += row["events"]
        else:
            answers.refused.append({"code": row["code"], "status": row["status"], "requests": row["requests"],
                                    "last_at": row["last_at"], "hint": COLLECTOR_CODE_HINTS.get(row["code"], "")})
    for answers in by_source.values():
        answers.refused.sort(key=lambda r: (-r["requests"], r["code"]))
    return sorted(by_source.values(), key=lambda a: (-a.refused_requests, a.source))
