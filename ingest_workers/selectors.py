"""Reads of the pipeline's per-minute metrics and state (``/metrics``, charts, scorecards, baselines)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from django.db.models import Max, Sum


def pipeline_state(*, now: dt.datetime) -> dict[str, Any]:
    """What ``/metrics`` reads at scrape time: each unfinished shard's lag and parking, the last successful
    merge, the newest receipt merged per source, each curated model's last success and failure, and the
    failing checks per table."""
    from ingest_workers import pipeline_stats
    from ingest_workers.models import PipelineMetricMinute, ShardLease
    from quality.selectors import table_overview
    from warehouse.selectors import model_runs_latest_by_model

    pipeline_stats.pipeline_minutes_flush()  # this process's latest figures too
    shards = [{"stream": s["stream"], "shard_id": s["shard_id"], "millis_behind_latest": s["millis_behind_latest"],
               "parked": s["parked_at"] is not None, "last_batch_at": s["last_batch_at"]}
              for s in ShardLease.objects.filter(finished_at__isnull=True).values(
                  "stream", "shard_id", "millis_behind_latest", "parked_at", "last_batch_at")]
    since = now - dt.timedelta(hours=pipeline_stats.metrics_keep_hours())
    recent = PipelineMetricMinute.objects.filter(minute__gte=since)
    last_merge_ms = recent.filter(metric=pipeline_stats.LAST_MERGE_MS).aggregate(at=Max("value"))["at"]
    newest = {row["source"]: _from_ms(row["at"]) for row in recent.filter(metric=pipeline_stats.NEWEST_MERGED_MS)
              .values("source").annotate(at=Max("value"))}
    checks_failing: dict[str, int] = {}
    for row in table_overview():
        latest = row["latest"]
        if latest is not None:
            checks_failing[row["table"]] = latest.failed + latest.errors + (1 if latest.status == "error" else 0)
    return {"shards": shards, "last_merge_at": _from_ms(last_merge_ms) if last_merge_ms else None,
            "newest_merged": newest, "models": model_runs_latest_by_model(), "checks_failing": checks_failing}


def pipeline_metric_minutes(*, since: dt.datetime, until: dt.datetime | None = None,
                            metrics: Iterable[str] | None = None, source: str | None = None) -> list[dict[str, Any]]:
    """Per-minute metric rows (oldest first): ``{"minute", "source", "contract", "version", "metric", "label",
    "value"}`` with the values of every process added up. ``metrics``: only these (``pipeline_stats.METRICS``)."""
    from ingest_workers import pipeline_stats
    from ingest_workers.models import PipelineMetricMinute

    pipeline_stats.pipeline_minutes_flush()
    rows = PipelineMetricMinute.objects.filter(minute__gte=since)
    if until is not None:
        rows = rows.filter(minute__lt=until)
    if metrics is not None:
        rows = rows.filter(metric__in=list(metrics))
    if source is not None:
        rows = rows.filter(source=source)
    return list(rows.order_by("minute", "source", "contract", "version", "metric", "label").values(
        "minute", "source", "contract", "version", "metric", "label", "value"))


def pipeline_metric_totals(*, since: dt.datetime, until: dt.datetime | None = None) -> dict[tuple, int]:
    """Sums of the counted metrics over a span: (source, contract, version, metric, label) -> value."""
    from ingest_workers import pipeline_stats
    from ingest_workers.models import PipelineMetricMinute

    pipeline_stats.pipeline_minutes_flush()
    rows = PipelineMetricMinute.objects.filter(minute__gte=since, metric__in=pipeline_stats.SUMMED)
    if until is not None:
        rows = rows.filter(minute__lt=until)
    return {(r["source"], r["contract"], r["version"], r["metric"], r["label"]): r["total"]
            for r in rows.values("source", "contract", "version", "metric", "label").annotate(total=Sum("value"))}


def _from_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
