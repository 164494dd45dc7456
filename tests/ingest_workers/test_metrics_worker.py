"""A Celery worker in a host the portal cannot see serves its own counters (PROMETHEUS_WORKER_PORT):
a real ingest worker reads known records and its endpoint counts them (docs/metrics.md)."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.ingest_workers import test_celery_workers
from tests.ingest_workers.conftest import _free_port
from tests.ingest_workers.test_celery_workers import start_worker, stop, wait_for
from tests.ingest_workers.test_quarantine_pages import message_payload, put_on_stream

pytestmark = pytest.mark.django_db(transaction=True)
worker_env = test_celery_workers.worker_env  # the seeded demo, its stream and warehouse, as the worker sees them


def worker_counts(port: int) -> dict[tuple[str, tuple], float]:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()  # noqa: S310
    except (urllib.error.URLError, ConnectionError):
        return {}
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_an_ingest_worker_serves_the_counts_of_what_it_read(worker_env, tmp_path):
    port = _free_port()
    folder = tmp_path / "prometheus"
    folder.mkdir()
    env = {**worker_env, "PROMETHEUS_WORKER_PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    put_on_stream([("web-chat", message_payload()) for _ in range(8)]
                  + [("web-chat", message_payload(role="robot")) for _ in range(2)])
    log = tmp_path / "metrics-worker.log"
    proc = start_worker(env, "metrics", log)
    records = ("chatorbit_pipeline_records_total", (("source", "web-chat"),))
    try:
        wait_for(lambda: worker_counts(port).get(records) == 10, timeout=120,
                 what="the worker's endpoint to count the 10 records", logs=[log])
        counts = worker_counts(port)
    finally:
        stop(proc)
    quarantined = sum(v for (name, labels), v in counts.items()
                      if name == "chatorbit_pipeline_quarantined_total" and ("reason", "schema_violation") in labels)
    valid = sum(v for (name, _), v in counts.items() if name == "chatorbit_pipeline_valid_records_total")
    assert (valid, quarantined) == (8, 2)
    assert {f.name for f in folder.iterdir()}, "the worker counted through the shared folder"
