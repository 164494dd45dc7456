"""End-to-end latency buckets and their percentiles (pure: counts in, seconds out).

The merger counts each merged copy into one bucket of (merge time − collector receipt); per-minute rows
and processes add bucket counts, and p50/p99 are read from the sum, as Prometheus's
``histogram_quantile`` reads a histogram: linear within the bucket the rank falls in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

#: upper bounds (seconds) of the latency buckets; the goal is p99 under 60 s, freshness under 180 s
BUCKETS_S: tuple[float, ...] = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1800, 3600, math.inf)


def bucket_label(bound: float) -> str:
    """The label a bucket is stored under: "5", "0.5", "+Inf"."""
    return "+Inf" if math.isinf(bound) else f"{bound:g}"


BUCKET_LABELS: tuple[str, ...] = tuple(bucket_label(b) for b in BUCKETS_S)
_BOUND_OF = {bucket_label(b): b for b in BUCKETS_S}


def latency_quantile(counts: Mapping[str, int], q: float) -> float | None:
    """The ``q`` quantile (0 < q ≤ 1) in seconds of copies counted per bucket label (non-cumulative);
    None without any. A rank in the last (unbounded) bucket reads as the largest finite bound."""
    if not 0 < q <= 1:
        raise ValueError(f"a quantile is in (0, 1], not {q}")
    total = sum(counts.get(label, 0) for label in BUCKET_LABELS)
    if total <= 0:
        return None
    rank = q * total
    below, lower = 0, 0.0
    for bound, label in zip(BUCKETS_S, BUCKET_LABELS, strict=True):
        n = counts.get(label, 0)
        if n and below + n >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / n
        below += n
        if not math.isinf(bound):
            lower = bound
    return lower


def bound_of(label: str) -> float:
    """The upper bound (seconds) of a bucket label; KeyError for a label that is not a bucket."""
    return _BOUND_OF[label]
