"""Scrape-time gauges other apps provide to ``/metrics`` (the deletion app's requests at risk), registered from
their ``AppConfig.ready()``.

Kept apart from ``ingest_workers.metrics`` on purpose: that module imports prometheus_client, which picks single-
or multiprocess mode from ``PROMETHEUS_MULTIPROC_DIR`` when first imported, and ``run_embedded`` sets that
variable in its handle(), after every app's ready() has run. An app that imported prometheus_client from its
ready() put the portal process in single-process mode, and its own counters (the collectors') vanished from
the summed scrape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

StateRead = Callable[[], Iterable[tuple[tuple[str, ...], float]]]
#: providers of scrape-time gauges other apps own: name -> (help, label names, read() -> [(labels, value)])
_STATE_PROVIDERS: dict[str, tuple[str, tuple[str, ...], StateRead | None]] = {
    # the deletion app registers its reader (deletion_requests_at_risk_provide); until then the series
    # is declared without samples
    "chatorbit_deletion_requests_at_risk": (
        "Deletion requests open past the share of their 72-hour SLA that puts them at risk.", (), None),
}


def state_gauge_provide(name: str, documentation: str, labelnames: tuple[str, ...],
                        read: StateRead) -> None:
    """Expose a gauge another app reads from its own store at scrape time (e.g. the deletion app's
    requests at risk: ``state_gauge_provide("chatorbit_deletion_requests_at_risk", …)`` in its ready())."""
    _STATE_PROVIDERS[name] = (documentation, labelnames, read)


