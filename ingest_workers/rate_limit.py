"""Per-source rate limit for the collectors: a fixed one-second window counted in Django's cache.

The limit is `settings.COLLECTOR_RATE_LIMIT_PER_SOURCE` events per second per source. Each request
adds its event count to the counter of the current second (`cache.add` + `cache.incr`, atomic on
Redis, which the production and test deployments use; LocMem in the embedded default counts per
process). A request that would take the window over the limit is refused with the seconds until the
next window, and its events are given back so a refused request costs nothing. The first request of
a window is always admitted, so a single batch larger than the per-second limit is throttled to one
per second instead of being refused forever.

If the cache itself fails the limiter lets the request through (and logs it): losing the rate limit
for a moment is better than refusing every event because Redis is restarting.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 1
_clock = time.time  # tests replace it to pin the window


@dataclasses.dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    count: int
    retry_after: int  # seconds until the next window (0 when allowed)


def _window_key(source_key: str, window: int) -> str:
    return f"collect:rate:{source_key}:{window}"


def _count_add(key: str, events: int) -> int:
    if cache.add(key, events, timeout=WINDOW_SECONDS + 1):
        return events
    try:
        return int(cache.incr(key, events))
    except ValueError:  # the window's key expired between add and incr
        cache.add(key, 0, timeout=WINDOW_SECONDS + 1)
        return int(cache.incr(key, events))


def rate_limit_take(*, source_key: str, events: int, now: float | None = None) -> RateDecision:
    """Count `events` against the source's window; refuse if the window would go over the limit."""
    limit = int(settings.COLLECTOR_RATE_LIMIT_PER_SOURCE)
    if limit <= 0 or events <= 0:
        return RateDecision(True, limit, 0, 0)
    now = _clock() if now is None else now
    window = int(now // WINDOW_SECONDS)
    key = _window_key(source_key, window)
    try:
        count = _count_add(key, events)
        if count <= limit or count == events:
            return RateDecision(True, limit, count, 0)
        try:
            cache.decr(key, events)
        except ValueError:  # the window ended meanwhile; nothing to give back
            pass
    except Exception:  # noqa: BLE001 (any cache failure: fail open, see the module docstring)
        logger.warning("rate limit cache unavailable; admitting %d events of %s", events, source_key, exc_info=True)
        return RateDecision(True, limit, 0, 0)
    retry_after = max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))
    return RateDecision(False, limit, count - events, retry_after)
