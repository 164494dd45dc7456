"""The Prometheus series of the pipeline (``/metrics``; every series is documented in docs/metrics.md).

Two kinds:

- **Counted by the process that does the work** (collectors, shard readers, the merger): counters and a
  latency histogram, added to per request or per unit (never per event). With ``PROMETHEUS_MULTIPROC_DIR``
  set before prometheus_client is imported, each process writes its own file there and a scrape sums
  every process's files (prometheus_client's multiprocess mode): correct with several portal and worker
  processes on one host. Counters of a process that died keep counting in the sum, as counters must.
- **Read from the database at scrape time** (``PipelineStateCollector``): shard lag and parking, merge and
  model freshness, failing checks. They are the same whichever process answers the scrape, so they need
  no multiprocess file.

Labels are bounded by sources, contract versions, reasons, answer codes, shards, tables and models; never
by users, events or requests.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from django.db import DatabaseError
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ingest_workers.latency import BUCKET_LABELS, BUCKETS_S

logger = logging.getLogger(__name__)

# the *_created series exist only in single-process mode: one series set whatever the deployment
disable_created_metrics()
#: the process-counted series (not prometheus_client's default registry: its process_*/python_* series
#: vanish in multiprocess mode, so the exposed set would depend on the deployment)
REGISTRY = CollectorRegistry(auto_describe=True)
CONTRACT_LABELS = ("source", "contract", "version")

COLLECTOR_REQUESTS = Counter(
    "chatorbit_collector_requests",
    "Requests the collectors answered, by answer code (accepted or the refusal's code).",
    ("source", "code"), registry=REGISTRY)
COLLECTOR_EVENTS = Counter(
    "chatorbit_collector_events", "Events in the requests the collectors answered, by answer code "
    "(code=accepted: put on the stream).", ("source", "code"), registry=REGISTRY)
PIPELINE_RECORDS = Counter(
    "chatorbit_pipeline_records", "Stream records the shard readers read.", ("source",), registry=REGISTRY)
PIPELINE_VALID = Counter(
    "chatorbit_pipeline_valid_records", "Records that validated against a contract version and mapped.",
    CONTRACT_LABELS, registry=REGISTRY)
PIPELINE_EVENTS = Counter(
    "chatorbit_pipeline_events", "Canonical events landed (every copy).", CONTRACT_LABELS, registry=REGISTRY)
PIPELINE_QUARANTINED = Counter(
    "chatorbit_pipeline_quarantined", "Records quarantined, by reason (contract labels empty when the record "
    "never reached a contract).", (*CONTRACT_LABELS, "reason"), registry=REGISTRY)
PIPELINE_DUPLICATES = Counter(
    "chatorbit_pipeline_duplicates", "Event copies whose event id came earlier in the same unit.",
    CONTRACT_LABELS, registry=REGISTRY)
PIPELINE_SUPPRESSED = Counter(
    "chatorbit_pipeline_suppressed", "Records of erased subjects dropped at ingest (the suppression list): never "
    "landed.", ("source",), registry=REGISTRY)
PIPELINE_LATE = Counter(
    "chatorbit_pipeline_late", "Merged event copies whose event time was older than PIPELINE_LATE_AFTER_S.",
    CONTRACT_LABELS, registry=REGISTRY)
E2E_LATENCY = Histogram(
    "chatorbit_pipeline_e2e_latency_seconds", "Merge time minus collector receipt of each merged event copy.",
    CONTRACT_LABELS, buckets=BUCKETS_S, registry=REGISTRY)
MERGE_INSERTED = Counter(
    "chatorbit_merge_events_inserted", "New rows the merger put into CANONICAL.EVENTS.", registry=REGISTRY)
MERGE_DUPLICATES = Counter(
    "chatorbit_merge_duplicates", "Stored CANONICAL.EVENTS rows a merge found a new copy of.", registry=REGISTRY)
MERGE_LATE_COPIES = Counter(
    "chatorbit_merge_late_copies", "Copies that arrived after the dedup window (RAW.LATE_COPIES).",
    registry=REGISTRY)


def collector_answer_count(*, source: str, code: str, events: int) -> None:
    COLLECTOR_REQUESTS.labels(source or "", code).inc()
    if events:
        COLLECTOR_EVENTS.labels(source or "", code).inc(events)


def pipeline_unit_count(per_source: Mapping[str, Any], quarantined: Mapping[tuple[str, str, int, str], int]) -> None:
    """A unit's counts (``pipeline.SourceCounts`` per source; quarantined per source, contract, version, reason)."""
    for name, counts in per_source.items():
        source = (name or "(none)")[:64]
        PIPELINE_RECORDS.labels(source).inc(counts.records)
        if counts.suppressed:
            PIPELINE_SUPPRESSED.labels(source).inc(counts.suppressed)
        for (subject, version), (valid, events, duplicates) in counts.versions.items():
            labels = (source, subject, str(version))
            PIPELINE_VALID.labels(*labels).inc(valid)
            PIPELINE_EVENTS.labels(*labels).inc(events)
            if duplicates:
                PIPELINE_DUPLICATES.labels(*labels).inc(duplicates)
    for (source, subject, version, reason), n in quarantined.items():
        PIPELINE_QUARANTINED.labels(source, subject, str(version) if version else "", reason).inc(n)


def pipeline_merge_count(*, inserted: int, updated: int, late_copies: int, latency: Iterable[Mapping],
                         at: float) -> None:
    MERGE_INSERTED.inc(inserted)
    if updated:
        MERGE_DUPLICATES.inc(updated)
    if late_copies:
        MERGE_LATE_COPIES.inc(late_copies)
    index = {label: i for i, label in enumerate(BUCKET_LABELS)}
    for row in latency:
        labels = (row["source"][:64], row["contract"][:128], str(row["version"]) if row["version"] else "")
        if row["late"]:
            PIPELINE_LATE.labels(*labels).inc(row["late"])
        child = E2E_LATENCY.labels(*labels)
        # the merger has a bucket's count at once, not each copy's value; Histogram has no observe-n, so
        # add to the bucket and the sum directly (prometheus_client is pinned: tests/ingest_workers/test_metrics.py)
        child._buckets[index[row["bucket"]]].inc(row["copies"])
        child._sum.inc(row["sum_s"])


# --- read at scrape time -----------------------------------------------------------------------------

# the providers of scrape-time gauges live in ingest_workers.metric_providers, which imports no
# prometheus_client: apps register there from their ready(), before a process knows its multiprocess mode
from ingest_workers.metric_providers import _STATE_PROVIDERS, StateRead, state_gauge_provide  # noqa: E402,F401


class PipelineStateCollector(Collector):
    """Gauges read from the database when scraped (``ingest_workers.selectors.pipeline_state``)."""

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self.now = now

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from ingest_workers.selectors import pipeline_state

        try:
            state = pipeline_state(now=dt.datetime.fromtimestamp(self.now(), tz=dt.UTC))
        except DatabaseError:  # the counters are still worth a scrape; these families go without samples
            logger.warning("metrics: the database could not be read; its gauges are left out", exc_info=True)
            state = {"shards": [], "last_merge_at": None, "newest_merged": {}, "models": {}, "checks_failing": {}}
        yield from _shard_families(state["shards"])
        yield from _freshness_families(state)
        checks = GaugeMetricFamily("chatorbit_quality_checks_failing",
                                   "Checks that failed or could not run in the table's latest finished quality run.",
                                   labels=("table",))
        for table, failing in sorted(state["checks_failing"].items()):
            checks.add_metric((table,), failing)
        yield checks
        yield from _provided_families()


def _shard_families(shards: list[dict]) -> Iterator[GaugeMetricFamily]:
    lag = GaugeMetricFamily("chatorbit_shard_lag_milliseconds",
                            "MillisBehindLatest at the shard's last read (unfinished shards).",
                            labels=("stream", "shard"))
    parked = GaugeMetricFamily("chatorbit_shard_parked", "1 when the shard is parked (nobody reads it).",
                               labels=("stream", "shard"))
    last_read = GaugeMetricFamily("chatorbit_shard_last_read_timestamp_seconds",
                                  "When the shard's last unit was read (Unix time).", labels=("stream", "shard"))
    for shard in shards:
        key = (shard["stream"], shard["shard_id"])
        if shard["millis_behind_latest"] is not None:
            lag.add_metric(key, shard["millis_behind_latest"])
        parked.add_metric(key, 1 if shard["parked"] else 0)
        if shard["last_batch_at"] is not None:
            last_read.add_metric(key, shard["last_batch_at"].timestamp())
    return iter((lag, parked, last_read))


def _freshness_families(state: dict) -> Iterator[GaugeMetricFamily]:
    merge = GaugeMetricFamily("chatorbit_merge_last_success_timestamp_seconds",
                              "When a merge round last succeeded (Unix time).")
    if state["last_merge_at"] is not None:
        merge.add_metric((), state["last_merge_at"].timestamp())
    newest = GaugeMetricFamily("chatorbit_canonical_newest_received_timestamp_seconds",
                               "Collector receipt of the newest event copy merged into CANONICAL.EVENTS (Unix time).",
                               labels=("source",))
    for source, at in sorted(state["newest_merged"].items()):
        newest.add_metric((source,), at.timestamp())
    model_ok = GaugeMetricFamily("chatorbit_model_last_success_timestamp_seconds",
                                 "When the curated model's last successful run finished (Unix time).",
                                 labels=("model",))
    model_failed = GaugeMetricFamily("chatorbit_model_last_run_failed",
                                     "1 when the curated model's latest finished run failed.", labels=("model",))
    for model, run in sorted(state["models"].items()):
        if run["last_success_at"] is not None:
            model_ok.add_metric((model,), run["last_success_at"].timestamp())
        model_failed.add_metric((model,), 1 if run["last_failed"] else 0)
    return iter((merge, newest, model_ok, model_failed))


def _provided_families() -> Iterator[GaugeMetricFamily]:
    for name, (documentation, labelnames, read) in sorted(_STATE_PROVIDERS.items()):
        family = GaugeMetricFamily(name, documentation, labels=labelnames)
        if read is not None:
            try:
                for labels, value in read():
                    family.add_metric(labels, value)
            except Exception:  # noqa: BLE001 - one app's store down must not take the whole scrape down
                logger.warning("metrics: %s could not be read", name, exc_info=True)
        yield family
