"""Records of erased subjects dropped at ingest (the suppression list) are counted: per minute and source in
``PipelineMetricMinute`` (metric ``suppressed``) and at ``/metrics`` (``chatorbit_pipeline_suppressed_total``),
after real traffic through moto's Kinesis, the shard reader and the embedded warehouse."""

from __future__ import annotations

import pytest

from ingest_workers import pipeline_stats, services
from ingest_workers.models import PipelineMetricMinute
from tests.ingest_workers.test_archive_shredding import (
    PERSON_A,
    PERSON_B,
    erase,
    lineages,
    send,
)
from tests.ingest_workers.test_metrics import buffers_empty, scrape, value  # noqa: F401 - buffers_empty: fixture

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("keyrings_fresh")]


def test_suppressed_records_are_counted_per_source_per_minute_and_at_metrics(ingest_env, client):
    before = scrape(client)
    erase(PERSON_A)
    send([(PERSON_A, "x"), (PERSON_B, "z"), (PERSON_A, "y")])
    services.pipeline_drain()
    pipeline_stats.pipeline_minutes_flush()
    assert not lineages(PERSON_A["anon"]) and len(lineages(PERSON_B["anon"])) == 1
    rows = PipelineMetricMinute.objects.filter(metric=pipeline_stats.SUPPRESSED)
    assert [(r.source, r.contract, r.version, r.value) for r in rows] == [("web-chat", "", 0, 2)]
    records = PipelineMetricMinute.objects.filter(metric=pipeline_stats.RECORDS, source="web-chat")
    assert sum(r.value for r in records) == 3          # read, then dropped: still records read
    after = scrape(client)
    grown = value(after, "chatorbit_pipeline_suppressed_total", source="web-chat") - value(
        before, "chatorbit_pipeline_suppressed_total", source="web-chat")
    assert grown == 2
