"""The Pipeline page's trends from the per-minute samples (pure: plain rows in, plain data out; no clock).

Rates are events per second over each minute; the minute still running is divided by the seconds it
has run so far, so the last point moves with every poll instead of every minute.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from ingest_workers.latency import latency_quantile


@dataclasses.dataclass
class SourceHour:
    source: str
    accepted: int = 0       # events the collectors accepted (put on the stream)
    refused: int = 0        # requests the collectors refused
    records: int = 0        # records the shard readers read
    events: int = 0         # canonical events landed (every copy)
    quarantined: int = 0    # records quarantined
    registered: bool = False  # a source the portal knows (its page can be linked)


def _minute(value: dt.datetime) -> dt.datetime:
    return value.replace(second=0, microsecond=0)


def minute_series(samples: Iterable[Mapping[str, Any]], accepted: Iterable[Mapping[str, Any]], *,
                  now: dt.datetime, minutes: int, metrics: Iterable[Mapping[str, Any]] = ()) -> dict[str, list]:
    """Per minute of the last ``minutes`` (oldest first, the current one last): labels ("HH:MM"), events/s
    accepted by the collectors, landed by the readers and merged into CANONICAL.EVENTS, and the largest
    lag read in seconds (None for a minute without a read).

    ``samples``: PipelineMinute rows as dicts (minute, source, events, merged, max_lag_ms);
    ``accepted``: (minute, events) of the collectors' accepted answers; ``metrics``: PipelineMetricMinute rows
    (minute, metric, label, value) of the latency buckets, late and duplicate copies, for the end-to-end
    latency p50/p99 (seconds, None for a minute that merged nothing) and the late and duplicate copies per
    minute."""
    current = _minute(now)
    starts = [current - dt.timedelta(minutes=minutes - 1 - i) for i in range(minutes)]
    index = {start: i for i, start in enumerate(starts)}
    landed, merged, taken = [0] * minutes, [0] * minutes, [0] * minutes
    lag: list[float | None] = [None] * minutes
    for row in samples:
        i = index.get(_minute(row["minute"]))
        if i is None:
            continue
        landed[i] += row.get("events") or 0
        merged[i] += row.get("merged") or 0
        if row.get("max_lag_ms") is not None:
            seconds = row["max_lag_ms"] / 1000
            lag[i] = seconds if lag[i] is None else max(lag[i], seconds)
    for row in accepted:
        i = index.get(_minute(row["minute"]))
        if i is not None:
            taken[i] += row.get("events") or 0
    buckets: list[dict[str, int]] = [{} for _ in range(minutes)]
    late, duplicates = [0] * minutes, [0] * minutes
    for row in metrics:
        i = index.get(_minute(row["minute"]))
        if i is None:
            continue
        if row["metric"] == "latency":
            buckets[i][row["label"]] = buckets[i].get(row["label"], 0) + row["value"]
        elif row["metric"] == "late":
            late[i] += row["value"]
        elif row["metric"] in ("duplicates", "merge_duplicates"):
            duplicates[i] += row["value"]
    p50 = [latency_quantile(b, 0.5) for b in buckets]
    p99 = [latency_quantile(b, 0.99) for b in buckets]
    # the running minute counts only the seconds it has had (at least one, so a rate stays finite)
    spans = [60.0] * (minutes - 1) + [max(1.0, (now - current).total_seconds())]
    return {
        "labels": [start.strftime("%H:%M") for start in starts],
        "accepted": [round(n / s, 2) for n, s in zip(taken, spans, strict=True)],
        "landed": [round(n / s, 2) for n, s in zip(landed, spans, strict=True)],
        "merged": [round(n / s, 2) for n, s in zip(merged, spans, strict=True)],
        "lag_s": [round(v, 1) if v is not None else None for v in lag],
        "latency_p50_s": [round(v, 1) if v is not None else None for v in p50],
        "latency_p99_s": [round(v, 1) if v is not None else None for v in p99],
        "late": late,
        "duplicates": duplicates,
    }


def source_breakdown(samples: Iterable[Mapping[str, Any]], answers: Iterable[Mapping[str, Any]],
                     *, accepted_code: str) -> list[SourceHour]:
    """Per source over the samples given (the last hour): collector answers and what the readers made of
    it; the busiest source first. ``answers``: (source, code, requests, events) summed per source and code."""
    by_source: dict[str, SourceHour] = {}
    for row in samples:
        if not row["source"]:
            continue  # the stream-wide row
        hour = by_source.setdefault(row["source"], SourceHour(row["source"]))
        hour.records += row.get("records") or 0
        hour.events += row.get("events") or 0
        hour.quarantined += row.get("quarantined") or 0
    for row in answers:
        hour = by_source.setdefault(row["source"] or "(none)", SourceHour(row["source"] or "(none)"))
        if row["code"] == accepted_code:
            hour.accepted += row.get("events") or 0
        else:
            hour.refused += row.get("requests") or 0
    return sorted(by_source.values(), key=lambda h: (-(h.accepted + h.records), h.source))
