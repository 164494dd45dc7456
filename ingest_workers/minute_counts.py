"""Counts kept in memory per process and written in one go every few seconds: the pattern behind
``collector_stats``, ``pipeline_stats`` and the per-minute metrics.

The hot path (a collector request, a shard reader's unit) adds to a dictionary under a lock; at most
every ``flush_seconds`` the buffer is taken and handed to ``write`` (one upsert per key that changed),
so a flood of requests costs the database a few rows a minute, not a write per request. Each value is
a list whose positions combine as ``folds`` say ("sum" adds, "max" keeps the larger, "last" keeps
the newest; None is "nothing yet"). What a process counted in its last seconds before it died is
lost: these figures are for people and alerts watching trends, not for accounting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Literal

from django.db import DatabaseError

logger = logging.getLogger(__name__)

Fold = Literal["sum", "max", "last"]


class MinuteCounts:
    """A buffer of counts keyed by (minute, …); ``write`` stores what was taken (adding to what other
    processes stored)."""

    def __init__(self, *, name: str, folds: Sequence[Fold], write: Callable[[list[tuple[Hashable, list]]], None],
                 flush_seconds: float = 5.0) -> None:
        self.name = name
        self.folds = tuple(folds)
        self.write = write
        self.flush_seconds = flush_seconds
        self.pending: dict[Hashable, list] = {}
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()

    def add(self, items: Iterable[tuple[Hashable, Sequence]]) -> None:
        """Fold each (key, values) into the buffer, then flush if the last flush is old enough."""
        folds, pending = self.folds, self.pending
        with self._lock:
            for key, values in items:
                entry = pending.get(key)
                if entry is None:
                    pending[key] = list(values)
                    continue
                for i, value in enumerate(values):
                    if value is None:
                        continue
                    fold = folds[i]
                    if fold == "sum":
                        entry[i] += value
                    elif fold == "max":
                        entry[i] = value if entry[i] is None or value > entry[i] else entry[i]
                    else:
                        entry[i] = value
            due = time.monotonic() - self._last_flush >= self.flush_seconds
            if due:
                self._last_flush = time.monotonic()
        if due:
            self.flush()

    def flush(self) -> int:
        """Write what is buffered. Returns the rows written (0 when the database refused: dropped, logged)."""
        with self._lock:
            taken = list(self.pending.items())
            self.pending.clear()
        if not taken:
            return 0
        try:
            self.write(taken)
        except DatabaseError:
            logger.warning("%s: could not write %d rows; dropped", self.name, len(taken), exc_info=True)
            return 0
        return len(taken)


def minute_of(epoch: float) -> int:
    """The start of the minute ``epoch`` falls in (epoch seconds)."""
    return int(epoch // 60) * 60
