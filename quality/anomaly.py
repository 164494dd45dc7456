"""Anomalies against a robust, seasonal baseline (pure: plain numbers in, verdicts out; no clock).

A figure of one hour (a source's volume, its quarantine rate, its latency) is compared with the same hour of
the same weekday over the past weeks: traffic has a weekly shape (a Monday-morning peak, a quiet Sunday), so
"the same hour last week(s)" is what normal looks like, not the last hour. The baseline is the median of
those hours and their spread the MAD (median absolute deviation, scaled by 1.4826 to read like a standard
deviation): one odd week (a holiday, an outage) moves neither, where a mean and a standard deviation would
follow it. A figure is anomalous when it is far from the median in spread units *and* by a margin a person
cares about (a relative change for volumes, percentage points for rates), so tiny, perfectly regular series
(MAD 0) do not alert on noise. Too little history (under ``min_weeks`` comparable hours) gives no verdict.

See docs/quality.md, "Anomalies", for the method and its measured false-positive rate.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "MAD_SCALE",
    "Baseline",
    "Verdict",
    "robust_baseline",
    "same_hour_history",
    "hour_floor",
    "volume_verdict",
    "rate_jump_verdict",
    "latency_verdict",
    "hour_latency_ms",
]

#: makes the MAD of normally distributed data estimate its standard deviation
MAD_SCALE = 1.4826
WEEK = dt.timedelta(days=7)


@dataclasses.dataclass(frozen=True)
class Baseline:
    median: float
    spread: float   # 1.4826 × MAD: a robust standard deviation
    samples: int


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What one hour's figure says against its baseline."""

    metric: str                 # "volume" | "quarantine_rate" | "latency_ms"
    value: float
    baseline: Baseline
    score: float                # (value − median) / spread used, signed
    change: float               # relative to the median (volume, latency) or in points (rates)
    anomalous: bool

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "median": self.baseline.median,
                "spread": round(self.baseline.spread, 6), "weeks": self.baseline.samples,
                "score": round(self.score, 2), "change": round(self.change, 4), "anomalous": self.anomalous}


def robust_baseline(values: Iterable[float]) -> Baseline | None:
    """Median and scaled MAD of ``values``; None for none."""
    data = [float(v) for v in values]
    if not data:
        return None
    median = statistics.median(data)
    mad = statistics.median(abs(v - median) for v in data)
    return Baseline(median=median, spread=MAD_SCALE * mad, samples=len(data))


def hour_floor(value: dt.datetime) -> dt.datetime:
    return value.replace(minute=0, second=0, microsecond=0)


def same_hour_history(series: Mapping[dt.datetime, float | None] | Any, hour: dt.datetime, *, weeks: int
                      ) -> list[float]:
    """The values at ``hour`` − 1…``weeks`` weeks that ``series`` has (hours without a row are skipped:
    a source that did not exist yet is not a source that sent nothing)."""
    hour = hour_floor(hour)
    out = []
    for k in range(1, weeks + 1):
        value = series.get(hour - k * WEEK)
        if value is not None:
            out.append(float(value))
    return out


def _score(value: float, base: Baseline, floor: float) -> tuple[float, float]:
    spread = max(base.spread, floor, 1e-9)
    return (value - base.median) / spread, spread


def volume_verdict(value: float, history: Sequence[float], *, z: float = 4.0, min_change: float = 0.4,
                   min_weeks: int = 3, min_median: float = 20.0) -> Verdict | None:
    """A volume far from its usual same-hour level, up or down. Compared on a log scale: traffic varies by a
    factor from week to week (a 20% busier Monday), not by a fixed number of events, so a drop to 40% is as
    far below as 250% is above. The spread is floored at the Poisson noise of the median (1/√median on that
    scale) and at 0.05, so a very regular series does not alert on a few events. None without ``min_weeks``
    of history or when the usual volume is below ``min_median`` (too few events to tell a drop from chance)."""
    base = robust_baseline(history)
    if base is None or base.samples < min_weeks or base.median < min_median:
        return None
    logs = robust_baseline(math.log1p(max(v, 0.0)) for v in history)
    assert logs is not None
    score, _ = _score(math.log1p(max(value, 0.0)), logs, max(1 / math.sqrt(base.median), 0.05))
    change = (value - base.median) / base.median
    return Verdict("volume", float(value), base, score, change, abs(score) >= z and abs(change) >= min_change)


def rate_jump_verdict(quarantined: int, records: int, history: Sequence[float], *, z: float = 4.0,
                      min_jump: float = 0.02, min_weeks: int = 3, min_quarantined: int = 5) -> Verdict | None:
    """A quarantine rate (``quarantined`` / ``records`` this hour) well above its usual same-hour rate
    (``history``: past rates): at least ``min_jump`` (percentage points, as a fraction) and ``z`` spreads
    above, the spread floored at the binomial noise of this hour's count. Only jumps up alert."""
    base = robust_baseline(history)
    if base is None or base.samples < min_weeks or records <= 0:
        return None
    rate = quarantined / records
    p = min(max(base.median, 1.0 / records), 1.0)
    score, _ = _score(rate, base, math.sqrt(p * (1 - p) / records))
    jump = rate - base.median
    return Verdict("quarantine_rate", rate, base, score, jump,
                   score >= z and jump >= min_jump and quarantined >= min_quarantined)


def latency_verdict(value_ms: float, history_ms: Sequence[float], *, z: float = 4.0, min_change: float = 1.0,
                    min_weeks: int = 3, min_ms: float = 5_000.0) -> Verdict | None:
    """A latency well above its usual same-hour level: ``z`` spreads, at least double (``min_change`` 1.0)
    and at least ``min_ms`` (seconds of lag on an idle stream are noise)."""
    base = robust_baseline(history_ms)
    if base is None or base.samples < min_weeks:
        return None
    score, _ = _score(value_ms, base, 0.1 * base.median)
    change = (value_ms - base.median) / base.median if base.median else math.inf
    return Verdict("latency_ms", float(value_ms), base, score, change,
                   score >= z and change >= min_change and value_ms >= min_ms)


def hour_latency_ms(row: Mapping[str, Any]) -> float | None:
    """The latency figure of an hourly row. For now the largest shard lag read in the hour (what the
    per-minute sample has); when the pipeline records end-to-end latency per source, read it here."""
    value = row.get("max_lag_ms")
    return None if value is None else float(value)
