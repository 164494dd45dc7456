"""The pipeline's and the checks' alert rules (``rule(now) -> list[Condition]``, quality.alert_types), wired
in ``QUALITY_ALERT_RULES``: shard lag, end-to-end latency, a parked shard, freshness, a failing check, a
failed model run, a source quarantining over the red limit (its scorecard red for its quarantine).

Each rule is a small data-access step (what the platform stores: shard leases, the per-minute pipeline
metrics, CANONICAL.EVENTS, the collectors' answers, the quality check results, the model runs, the
scorecards) followed by a pure decision (``*_conditions``) on plain data, testable without a database. A
store that cannot be read raises: the engine records it and keeps the rule's alerts open.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from quality.alert_types import Condition, Severity

__all__ = [
    "shard_lag", "shard_lag_conditions",
    "e2e_latency", "e2e_latency_p99_ms", "e2e_latency_conditions",
    "parked_shard", "parked_shard_conditions",
    "freshness", "canonical_freshness_conditions", "curated_freshness_conditions",
    "failing_check", "failing_check_conditions",
    "model_run_failed", "model_run_failed_conditions",
    "quarantine_over_limit", "quarantine_over_limit_conditions", "SCORECARDS_STALE_AFTER",
]


def _seconds(ms: float) -> str:
    return f"{ms / 1000:.0f} s" if ms < 120_000 else f"{ms / 60_000:.1f} min"


# --- shard lag and parked shards --------------------------------------------------------------------

def _shards() -> list[dict[str, Any]]:
    """The live (not finished) shards of the configured stream, as plain data."""
    from ingest_workers.page_selectors import lease_seconds, shard_rows

    rows = []
    for row in shard_rows():
        lease = row["lease"]
        if lease.finished_at is not None:
            continue
        rows.append({"shard_id": lease.shard_id, "stream": lease.stream, "lag_current": row["lag_current"],
                     "millis_behind_latest": lease.millis_behind_latest, "last_batch_at": lease.last_batch_at,
                     "created_at": lease.created_at, "parked_at": lease.parked_at, "park_reason": lease.park_reason,
                     "state": row["state"], "lease_seconds": lease_seconds()})
    return rows


def shard_lag_conditions(shards: Iterable[Mapping[str, Any]], *, now: dt.datetime, target_ms: int) -> list[Condition]:
    """A shard whose read lag is over ``target_ms``; or one nobody is reading (its lease is stale, it waits,
    it keeps failing) for longer than ``target_ms``: its figure is old and the stream piles up behind it.
    Parked shards are the parked-shard rule's."""
    conditions = []
    for shard in shards:
        if shard.get("parked_at") is not None:
            continue
        sid = shard["shard_id"]
        lag = shard.get("millis_behind_latest")
        if shard["lag_current"]:
            if lag is not None and lag > target_ms:
                conditions.append(Condition(
                    rule="shard_lag", key=f"shard_lag:{sid}", subject=sid, severity=Severity.WARNING,
                    summary=f"Shard {sid} is {_seconds(lag)} behind the stream (target {_seconds(target_ms)})",
                    runbook="shard-lag", link="/pipeline/",
                    details={"millis_behind_latest": lag, "target_ms": target_ms, "state": shard["state"]}))
            continue
        since = shard.get("last_batch_at") or shard.get("created_at")
        unread_ms = (now - since).total_seconds() * 1000 if since else None
        if unread_ms is not None and unread_ms > target_ms:
            conditions.append(Condition(
                rule="shard_lag", key=f"shard_lag:{sid}", subject=sid, severity=Severity.CRITICAL,
                summary=f"Shard {sid} has not been read for {_seconds(unread_ms)} ({shard['state']})",
                runbook="shard-lag", link="/pipeline/",
                details={"unread_ms": int(unread_ms), "target_ms": target_ms, "state": shard["state"][:300],
                         "last_figure_ms": lag}))
    return conditions


def shard_lag(now: dt.datetime) -> list[Condition]:
    from django.conf import settings

    return shard_lag_conditions(_shards(), now=now, target_ms=settings.QUALITY_ALERT_SHARD_LAG_MS)


def parked_shard_conditions(shards: Iterable[Mapping[str, Any]]) -> list[Condition]:
    return [Condition(
        rule="parked_shard", key=f"parked_shard:{s['shard_id']}", subject=s["shard_id"], severity=Severity.CRITICAL,
        summary=f"Shard {s['shard_id']} is parked: nobody reads it until it is unparked ({s['park_reason'][:200]})",
        runbook="parked-shard", link="/pipeline/",
        details={"parked_at": s["parked_at"].isoformat(), "reason": s["park_reason"][:1000]})
        for s in shards if s.get("parked_at") is not None]


def parked_shard(now: dt.datetime) -> list[Condition]:
    return parked_shard_conditions(_shards())


# --- end-to-end latency -----------------------------------------------------------------------------

def e2e_latency_p99_ms(*, now: dt.datetime, window_minutes: int) -> float | None:
    """The end-to-end p99 (collector receipt → merged into CANONICAL.EVENTS) of the event copies merged in the
    last ``window_minutes`` whole minutes and the running one; None when none were. Read from the latency
    buckets the merger counts per minute (``ingest_workers.latency``, ``PipelineMetricMinute``: every process,
    source and contract version added up) instead of scanning CANONICAL.EVENTS each cycle: a few hundred rows in
    PostgreSQL, and the same figure ``/metrics`` gives Prometheus. Interpolated within a bucket like
    ``histogram_quantile``, so it is exact at the bucket bounds, and the 60 s target is one."""
    from ingest_workers.latency import latency_quantile
    from ingest_workers.pipeline_stats import LATENCY
    from ingest_workers.selectors import pipeline_metric_minutes

    since = (now - dt.timedelta(minutes=window_minutes)).replace(second=0, microsecond=0)
    counts: dict[str, int] = {}
    for row in pipeline_metric_minutes(since=since, metrics=[LATENCY]):
        counts[row["label"]] = counts.get(row["label"], 0) + row["value"]
    p99_s = latency_quantile(counts, 0.99)
    return None if p99_s is None else p99_s * 1000


def e2e_latency_conditions(p99_ms: float | None, *, target_ms: int, window_minutes: int) -> list[Condition]:
    if p99_ms is None or p99_ms <= target_ms:
        return []
    return [Condition(
        rule="e2e_latency", key="e2e_latency:CANONICAL.EVENTS", subject="CANONICAL.EVENTS", severity=Severity.WARNING,
        summary=f"End-to-end p99 latency is {_seconds(p99_ms)} over the last {window_minutes} min "
                f"(target {_seconds(target_ms)})",
        runbook="e2e-latency", link="/pipeline/",
        details={"p99_ms": round(p99_ms), "target_ms": target_ms, "window_minutes": window_minutes})]


def e2e_latency(now: dt.datetime) -> list[Condition]:
    from django.conf import settings

    window = settings.QUALITY_ALERT_E2E_WINDOW_MINUTES
    return e2e_latency_conditions(e2e_latency_p99_ms(now=now, window_minutes=window),
                                  target_ms=settings.QUALITY_ALERT_E2E_P99_MS, window_minutes=window)


# --- freshness --------------------------------------------------------------------------------------

def canonical_newest_received_at() -> dt.datetime | None:
    """When the newest event in CANONICAL.EVENTS reached the collectors (UTC)."""
    from django.conf import settings

    from warehouse.connection import pooled_connection
    from warehouse.ddl import CANONICAL_EVENTS, qualified
    from warehouse.load import warehouse_query

    table = qualified(settings.SNOWFLAKE["database"], CANONICAL_EVENTS)
    with pooled_connection(workload="dashboards", login_timeout=10) as conn:
        value = warehouse_query(conn, f"SELECT MAX(RECEIVED_AT) AS NEWEST FROM {table}")[0]["NEWEST"]  # noqa: S608
    if not value:
        return None
    parsed = dt.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def collector_accepted_minutes(*, since: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
    """(minute, last accepted at) of each minute since ``since`` in which the collectors accepted events.
    Read straight from the collectors' per-minute answers (ingest_workers has no selector for this)."""
    from ingest_workers.collector_stats import ACCEPTED, collector_answers_flush
    from ingest_workers.models import CollectorAnswer

    collector_answers_flush()  # this process's latest counts too (a portal process evaluating on demand)
    minute = since.replace(second=0, microsecond=0)
    rows = (CollectorAnswer.objects.filter(code=ACCEPTED, events__gt=0, minute__gte=minute)
            .values_list("minute", "last_at").order_by("minute"))
    return list(rows)


def canonical_freshness_conditions(*, newest: dt.datetime | None, accepted: Sequence[tuple[dt.datetime, dt.datetime]],
                                   now: dt.datetime, target_minutes: float) -> list[Condition]:
    """CANONICAL.EVENTS is stale while traffic flows: the collectors accepted events after the newest
    merged one, and the oldest of those has waited longer than the target. No traffic, no breach (a quiet
    source is the volume rule's business). ``accepted`` comes per minute, so "waiting since" is at most a
    minute early."""
    slack = dt.timedelta(seconds=1)  # a request's last_at is stamped after its events' received_at
    waiting = [(minute, last) for minute, last in accepted if newest is None or last > newest + slack]
    if not waiting:
        return []
    waiting_since = waiting[0][0] if newest is None else max(waiting[0][0], newest)
    age_s = (now - waiting_since).total_seconds()
    if age_s <= target_minutes * 60:
        return []
    return [Condition(
        rule="freshness", key="freshness:CANONICAL.EVENTS", subject="CANONICAL.EVENTS", severity=Severity.CRITICAL,
        summary=f"CANONICAL.EVENTS is stale: events accepted by the collectors have waited {age_s / 60:.1f} min "
                f"(target {target_minutes:g} min)",
        runbook="freshness", link="/pipeline/",
        details={"newest_received_at": newest.isoformat() if newest else None, "waiting_minutes": round(age_s / 60, 2),
                 "target_minutes": target_minutes, "last_accepted_at": waiting[-1][1].isoformat()})]


def curated_freshness_conditions(results: Iterable[Mapping[str, Any]]) -> list[Condition]:
    """A curated table whose latest freshness check failed (quality check results)."""
    return [Condition(
        rule="freshness", key=f"freshness:{r['table']}", subject=r["table"], severity=Severity.WARNING,
        summary=f"{r['table']} is stale: {r['check_name']} ({r['measured_value']}; {r['threshold']})",
        runbook="freshness", link=f"/quality/tables/{r['table']}/",
        details={"measured_value": r["measured_value"], "threshold": r["threshold"], "checked_at": r["checked_at"]})
        for r in results if r["outcome"] == "failed" and r["table"] != "CANONICAL.EVENTS"]


def _latest_results(*, check_types: set[str] | None = None, exclude_types: set[str] = frozenset()) -> list[dict]:
    """The check results of the latest finished run of each covered table, as plain data."""
    from quality.models import CheckResult, QualityRun
    from quality.selectors import table_labels

    rows = []
    for label in table_labels():
        latest = (QualityRun.objects.filter(table=label, status__in=(QualityRun.Status.DONE, QualityRun.Status.ERROR))
                  .order_by("-finished_at", "-id").first())
        if latest is None:
            continue
        results = CheckResult.objects.filter(run=latest).exclude(check_type__in=exclude_types)
        if check_types is not None:
            results = results.filter(check_type__in=check_types)
        for r in results.order_by("id"):
            rows.append({"table": label, "run_error": latest.error, "check_key": r.check_key,
                         "check_type": r.check_type, "check_name": r.check_name, "outcome": r.outcome,
                         "measured_value": r.measured_value, "threshold": r.threshold, "error": r.error,
                         "checked_at": r.checked_at.isoformat()})
    return rows


def freshness(now: dt.datetime) -> list[Condition]:
    from django.conf import settings

    newest = canonical_newest_received_at()
    accepted = collector_accepted_minutes(since=now - dt.timedelta(hours=1))
    return [*canonical_freshness_conditions(newest=newest, accepted=accepted, now=now,
                                            target_minutes=settings.QUALITY_CANONICAL_FRESHNESS_MINUTES),
            *curated_freshness_conditions(_latest_results(check_types={"freshness"}))]


# --- failing checks ---------------------------------------------------------------------------------

def failing_check_conditions(results: Iterable[Mapping[str, Any]]) -> list[Condition]:
    """One alert per table whose latest run has checks that failed or could not run (an error is never a
    pass). Freshness is the freshness rule's."""
    by_table: dict[str, list[Mapping[str, Any]]] = {}
    for r in results:
        if r["outcome"] in ("failed", "error") and r["check_type"] != "freshness":
            by_table.setdefault(r["table"], []).append(r)
    conditions = []
    for table, bad in sorted(by_table.items()):
        failed = [r for r in bad if r["outcome"] == "failed"]
        errors = [r for r in bad if r["outcome"] == "error"]
        names = ", ".join(r["check_name"] for r in (failed or errors)[:3])
        parts = [f"{len(failed)} failed" if failed else "", f"{len(errors)} could not run" if errors else ""]
        reason = f" ({bad[0]['run_error'][:160]})" if errors and not failed and bad[0]["run_error"] else ""
        conditions.append(Condition(
            rule="failing_check", key=f"failing_check:{table}", subject=table,
            severity=Severity.CRITICAL if failed else Severity.WARNING,
            summary=f"{table}: {' and '.join(p for p in parts if p)} checks: {names}{reason}"[:500],
            runbook="failing-check", link=f"/quality/tables/{table}/",
            details={"failed": [r["check_key"] for r in failed][:50], "errors": [r["check_key"] for r in errors][:50]}))
    return conditions


def failing_check(now: dt.datetime) -> list[Condition]:
    return failing_check_conditions(_latest_results(exclude_types={"freshness"}))


# --- failed model runs ------------------------------------------------------------------------------

def model_run_failed_conditions(runs: Sequence[Mapping[str, Any]]) -> list[Condition]:
    """A curated model whose latest finished run (newest first in ``runs``) failed; it resolves when the
    model next succeeds."""
    latest: dict[str, Mapping[str, Any]] = {}
    for run in runs:
        for model in run["models"]:
            if model["status"] in ("succeeded", "failed"):
                latest.setdefault(model["model"], model)
    return [Condition(
        rule="model_run_failed", key=f"model_run_failed:{name}", subject=name, severity=Severity.WARNING,
        summary=f"Model {name} failed at {m['started_at']:%Y-%m-%d %H:%M} UTC: {m['error'][:200]}",
        runbook="model-run-failed", link="/analytics/runs/",
        details={"run_id": str(m["run_id"]), "error": m["error"][:1000]})
        for name, m in sorted(latest.items()) if m["status"] == "failed"]


def model_run_failed(now: dt.datetime) -> list[Condition]:
    from warehouse.selectors import model_runs_recent

    runs = [{"models": [{"model": m.model, "status": m.status, "error": m.error, "started_at": m.started_at,
                         "run_id": m.run_id} for m in sorted(run["models"], key=lambda m: m.started_at, reverse=True)]}
            for run in model_runs_recent(50)]
    return model_run_failed_conditions(runs)


# --- a source quarantining over the limit (its scorecard) -------------------------------------------

#: scorecards older than this are not read as "all fine": the rule raises and its alerts stay open (the check
#: cycle, which grades them, runs every QUALITY_RUN_INTERVAL_S: 300 s by default)
SCORECARDS_STALE_AFTER = dt.timedelta(minutes=30)


def quarantine_over_limit_conditions(cards: Iterable[Mapping[str, Any]]) -> list[Condition]:
    """A source whose latest scorecard is red for its quarantine: over ``QUALITY_SCORECARD_QUARANTINE_RED`` of its
    records in the last check cycle's window were quarantined. An absolute limit, so it needs no history (a fresh
    install, a new source); ``quarantine_rate_jump`` covers the rates under it that are unusual for the hour.
    ``cards``: {"subject", "evaluated_at", "reasons"} of each source's latest snapshot. The alert follows the
    scorecard: it opens with the card turning red and resolves with the first card that is not red for this."""
    conditions = []
    for card in cards:
        worst = [r for r in card["reasons"] if r.get("code") == "quarantine_rate" and r.get("severity") == "critical"]
        if not worst:
            continue
        source, top, details = card["subject"], worst[0], worst[0].get("details") or {}
        paths = sorted({r["details"]["path"] for r in worst if (r.get("details") or {}).get("path")})
        rate = details.get("rate")
        share = f"{rate * 100:.0f}% of its records" if isinstance(rate, (int, float)) else "its records"
        conditions.append(Condition(
            rule="quarantine_rate", key=f"quarantine_rate:{source}", subject=source, severity=Severity.CRITICAL,
            summary=f"{source} is red: {share} quarantined; {top['summary']}"[:500],
            runbook="quarantine-rate", link=f"/quality/scorecards/source/{source}/",
            details={"rate": rate, "records": details.get("records"), "paths": paths[:20],
                     "reason_codes": sorted({(r.get("details") or {}).get("reason_code") or "" for r in worst} - {""}),
                     "threshold": details.get("threshold"), "since": top.get("since"),
                     "evaluated_at": card["evaluated_at"]}))
    return conditions


def quarantine_over_limit(now: dt.datetime) -> list[Condition]:
    """Alert rule: sources whose latest scorecard is red for their quarantine rate (see the pure part)."""
    from quality.models import ScorecardSnapshot

    latest = (ScorecardSnapshot.objects.filter(kind=ScorecardSnapshot.Kind.PLATFORM, evaluated_at__lte=now)
              .order_by("-evaluated_at").values_list("evaluated_at", flat=True).first())
    if latest is None:
        return []  # never graded (a fresh install): nothing to say yet
    if now - latest > SCORECARDS_STALE_AFTER:
        raise RuntimeError(f"the scorecards were last graded at {latest:%Y-%m-%d %H:%M} UTC: is a worker serving "
                           "the quality queue and the beat running?")
    cards = (ScorecardSnapshot.objects.filter(kind=ScorecardSnapshot.Kind.SOURCE, evaluated_at=latest)
             .order_by("subject").values("subject", "evaluated_at", "reasons"))
    return quarantine_over_limit_conditions(
        {**card, "evaluated_at": card["evaluated_at"].isoformat()} for card in cards)
