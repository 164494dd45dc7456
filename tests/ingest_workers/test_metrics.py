"""Pipeline metrics: the per-minute rows per source, contract version and reason, and /metrics in the
Prometheus text format after known traffic through the collectors and the pipeline (docs/metrics.md)."""

from __future__ import annotations

import datetime as dt
import io
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest
from django.core.management import call_command
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from ingest_workers import collector_stats, pipeline_stats, services
from tests.ingest_workers.test_quarantine_pages import message_payload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("collector_cache")]

ROOT = Path(__file__).resolve().parents[2]
BATCH = "/collect/v1/batch"
OLD = "2026-03-01T09:30:15.250+00:00"  # months before any merge: late


@pytest.fixture(autouse=True)
def buffers_empty():
    """Counts buffered by an earlier test would be written into this test's database: start with none."""
    for buffer in (pipeline_stats._minutes, pipeline_stats._sums, pipeline_stats._maxima):
        buffer.pending.clear()
    yield
    for buffer in (pipeline_stats._minutes, pipeline_stats._sums, pipeline_stats._maxima):
        buffer.pending.clear()


@pytest.fixture
def demo(settings, platform_user, engineer, warehouse_server, tmp_path, stream):
    """The demo sources and contracts, this test's own warehouse database, archive folder and stream; the
    web-chat source's write key and its approved contract version."""
    from contracts.models import Contract, Source
    from contracts.selectors import latest_approved_version
    from contracts.services import source_write_key_rotate
    from portal.roles import SYSTEM

    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "database": f"T_{uuid.uuid4().hex[:12].upper()}"}
    settings.RAW_ARCHIVE_URL = f"file://{tmp_path}/archive"
    settings.COLLECTOR_RATE_LIMIT_PER_SOURCE = 1_000_000
    call_command("seed_demo", quiet_keys=True, force=True, stdout=io.StringIO())
    services.contract_index_current(force=True)
    key = source_write_key_rotate(actor=SYSTEM, source=Source.objects.get(name="web-chat"))
    version = latest_approved_version(Contract.objects.get(subject="web-chat.chat_event")).version
    return {"key": key, "version": version}


def web_message(*, role="user", timestamp=None) -> dict:
    """A web-chat `message` event as the widget SDK sends it; sent now unless ``timestamp``."""
    return message_payload(role=role, timestamp=timestamp or timezone.now().isoformat())


def scrape(client, **headers) -> dict[tuple[str, tuple], float]:
    """/metrics as {(sample name, sorted labels): value}."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.content.decode()) for s in family.samples}


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def send_known_traffic(client, key: str) -> None:
    """Through the collector: 3 fresh messages, 2 old (late) ones, one of them twice in the request (a
    duplicate copy), 1 with a role the contract refuses; and one request with a key nobody has."""
    repeated = web_message(timestamp=OLD)
    events = [web_message() for _ in range(3)] + [repeated, repeated, web_message(timestamp=OLD),
                                                  web_message(role="robot")]
    answer = client.post(BATCH, data=orjson.dumps(events), content_type="application/json",
                         headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 202, answer.content
    refused = client.post(BATCH, data=orjson.dumps([web_message()]), content_type="application/json",
                          headers={"Authorization": "Bearer wk_nobody_has_this_key"})
    assert refused.status_code == 401


def test_metrics_expose_the_known_traffic_per_source_contract_and_reason(client, demo):
    before = scrape(client)
    send_known_traffic(client, demo["key"])
    services.pipeline_drain()
    after = scrape(client)

    def delta(name: str, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    contract = {"source": "web-chat", "contract": "web-chat.chat_event", "version": str(demo["version"])}
    assert delta("chatorbit_collector_requests_total", source="web-chat", code="accepted") == 1
    assert delta("chatorbit_collector_events_total", source="web-chat", code="accepted") == 7
    assert delta("chatorbit_collector_requests_total", source="", code="invalid_write_key") == 1
    assert delta("chatorbit_pipeline_records_total", source="web-chat") == 7
    assert delta("chatorbit_pipeline_valid_records_total", **contract) == 6
    assert delta("chatorbit_pipeline_events_total", **contract) == 6
    assert delta("chatorbit_pipeline_duplicates_total", **contract) == 1
    assert delta("chatorbit_pipeline_quarantined_total", **contract, reason="schema_violation") == 1
    assert delta("chatorbit_merge_events_inserted_total") == 5
    # the merger measured each of the 6 copies it merged: 3 old ones are late; all within the hour
    assert delta("chatorbit_pipeline_e2e_latency_seconds_count", **contract) == 6
    assert delta("chatorbit_pipeline_e2e_latency_seconds_bucket", **contract, le="3600.0") == 6
    assert 0 < delta("chatorbit_pipeline_e2e_latency_seconds_sum", **contract) < 6 * 3600
    assert delta("chatorbit_pipeline_late_total", **contract) == 3
    # read from the database when scraped
    shards = [labels for (name, labels) in after if name == "chatorbit_shard_parked"]
    assert len(shards) == 4 and all(after[("chatorbit_shard_parked", s)] == 0 for s in shards)
    # (a shard's lag is exposed only while a reader holds it: the drain has let go; the minute rows keep it)
    now = timezone.now().timestamp()
    assert now - 120 < value(after, "chatorbit_merge_last_success_timestamp_seconds") <= now
    assert now - 120 < value(after, "chatorbit_canonical_newest_received_timestamp_seconds", source="web-chat") <= now


def test_per_minute_rows_count_per_source_contract_and_reason(client, demo, engineer):
    from ingest_workers.latency import latency_quantile
    from ingest_workers.selectors import pipeline_metric_minutes, pipeline_metric_totals

    started = timezone.now() - dt.timedelta(minutes=1)
    send_known_traffic(client, demo["key"])
    services.pipeline_drain()
    totals = pipeline_metric_totals(since=started)
    chat = ("web-chat", "web-chat.chat_event", demo["version"])
    counted = {(metric, label): n for (*key, metric, label), n in totals.items() if tuple(key) == chat}
    latency = {label: n for (metric, label), n in counted.items() if metric == pipeline_stats.LATENCY}
    assert {k: n for k, n in counted.items() if k[0] != pipeline_stats.LATENCY} == {
        ("valid", ""): 6, ("events", ""): 6, ("duplicates", ""): 1, ("quarantined", "schema_violation"): 1,
        ("merged", ""): 6, ("late", ""): 3}
    assert sum(latency.values()) == 6
    p50, p99 = latency_quantile(latency, 0.5), latency_quantile(latency, 0.99)
    assert 0 <= p50 <= p99 <= 3600
    assert totals[("web-chat", "", 0, "records", "")] == 7
    # the collectors' side: received and accepted per source (CollectorAnswer), and the shard lag rows
    collector_stats.collector_answers_flush()
    from ingest_workers.models import CollectorAnswer

    accepted = CollectorAnswer.objects.get(source="web-chat", code="accepted")
    assert (accepted.requests, accepted.events) == (1, 7)
    lags = pipeline_metric_minutes(since=started, metrics=[pipeline_stats.SHARD_LAG_MS])
    assert {row["label"] for row in lags} == {f"shardId-00000000000{i}" for i in range(4)}
    assert [row for row in pipeline_metric_minutes(since=started, metrics=[pipeline_stats.LAST_MERGE_MS])]
    # the Pipeline page draws them: latency p50/p99, late and duplicate copies per minute
    client.force_login(engineer)
    html = client.get("/pipeline/").content.decode()
    series = orjson.loads(re.search(r'<script id="pipeline-trend-data" type="application/json">(.*?)</script>',
                                    html, re.S).group(1))
    assert 'id="trend-latency"' in html and 'id="trend-copies"' in html
    assert sum(series["late"]) == 3 and sum(series["duplicates"]) >= 1
    # (the minute of the merge: the last one, or the one before when a minute turned since)
    p50s = [v for v in series["latency_p50_s"] if v is not None]
    p99s = [v for v in series["latency_p99_s"] if v is not None]
    assert p50s and p99s and 0 <= max(p50s) <= max(p99s) <= 3600


def test_rows_from_two_processes_add_up_and_maxima_keep_the_larger():
    minute = int(timezone.now().timestamp()) // 60 * 60
    key = (minute, "web-chat", "web-chat.chat_event", 2)
    pipeline_stats._sums.add((((*key, "valid", ""), [3]),))
    pipeline_stats._maxima.add((((minute, "", "", 0, "shard_lag_ms", "shardId-0"), [500]),))
    pipeline_stats.pipeline_minutes_flush()
    # another process wrote the same minute
    pipeline_stats._sums.add((((*key, "valid", ""), [4]),))
    pipeline_stats._maxima.add((((minute, "", "", 0, "shard_lag_ms", "shardId-0"), [200]),))
    pipeline_stats.pipeline_minutes_flush()
    from ingest_workers.models import PipelineMetricMinute

    rows = {(r.metric, r.label): r.value for r in PipelineMetricMinute.objects.all()}
    assert rows == {("valid", ""): 7, ("shard_lag_ms", "shardId-0"): 500}


def test_metrics_refuse_clients_off_the_loopback_without_the_token(client, settings):
    settings.METRICS_TOKEN = "s3cret-metrics-token"
    far = client.get("/metrics", REMOTE_ADDR="203.0.113.7")
    assert far.status_code == 403 and far.json()["error"] == "metrics_forbidden"
    wrong = client.get("/metrics", REMOTE_ADDR="203.0.113.7", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.7",
                      headers={"Authorization": "Bearer s3cret-metrics-token"}).status_code == 200
    # with a token set the loopback alone is not enough (behind a reverse proxy every client is the loopback)
    assert client.get("/metrics").status_code == 403
    assert client.post("/metrics").status_code == 405
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 200  # no token: the loopback (the embedded default)


# --- the documentation and the alert rules name exactly what /metrics exposes -----------------------

def exposed_families(client) -> dict[str, str]:
    """Family name -> type, from the # TYPE lines (every family is declared, samples or not)."""
    text = client.get("/metrics").content.decode()
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


def documented_series() -> dict[str, str]:
    """docs/metrics.md's table rows: | `name` | type | labels | meaning | unit |."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    return dict(re.findall(r"^\| `(chatorbit_[a-z0-9_]+)` \| (counter|gauge|histogram) \|", text, re.M))


def test_the_doc_lists_exactly_the_exposed_series_with_their_types(client):
    exposed = exposed_families(client)
    assert exposed, "nothing exposed"
    assert documented_series() == exposed


def test_every_alert_rule_names_exposed_series_and_links_its_runbook_section(client):
    import yaml

    exposed = exposed_families(client)
    suffixes = {"counter": ("",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    sample_names = {family + suffix for family, kind in exposed.items() for suffix in suffixes[kind]}
    rules = yaml.safe_load((ROOT / "docs" / "ops" / "prometheus-alerts.yml").read_text())
    anchors = set()
    for group in rules["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule
            names = set(re.findall(r"\bchatorbit_[a-z0-9_]+", rule["expr"]))
            assert names and names <= sample_names, (rule["alert"], names - sample_names)
            assert re.fullmatch(r"\d+[smh]", rule["for"]) and rule["labels"]["severity"] in ("warning", "critical")
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            runbook = re.fullmatch(r"docs/runbook\.md#([a-z0-9-]+)", rule["annotations"]["runbook_url"])
            assert runbook, rule["annotations"]["runbook_url"]
            anchors.add(runbook.group(1))
    assert anchors == {"shard-lag", "e2e-latency", "parked-shard", "freshness", "quarantine-rate", "volume-anomaly",
                       "failing-check", "model-run-failed", "deletion-sla"}


# --- several processes: two real portal servers sharing one multiprocess folder ----------------------

def _portal_process(port: int, folder: Path, var: Path) -> subprocess.Popen:
    from urllib.parse import urlsplit, urlunsplit

    from django.db import connection

    url = urlsplit(os.environ["DATABASE_URL"])
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder), "CHATORBIT_VAR_DIR": str(var),
           # this test's database (pytest-django's), not the one the URL names
           "DATABASE_URL": urlunsplit(url._replace(path="/" + connection.settings_dict["NAME"]))}
    return subprocess.Popen([sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload",  # noqa: S603
                             "--skip-checks"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _answering(port: int, proc: subprocess.Popen) -> None:
    import urllib.error
    import urllib.request

    for _ in range(600):  # polls every 0.1 s: a slow start on a busy machine is not a failure
        assert proc.poll() is None, f"the portal on {port} exited with {proc.returncode}"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()  # noqa: S310 - loopback
            return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise AssertionError(f"the portal on {port} never answered")


def _refused_requests(port: int) -> float:
    """What a scrape of that portal says about requests refused for a key nobody has."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()  # noqa: S310
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    return value(samples, "chatorbit_collector_requests_total", source="", code="invalid_write_key")


def _post_with_unknown_key(port: int) -> int:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}{BATCH}", data=b"[]", method="POST",
                                     headers={"Authorization": "Bearer wk_nobody_has_this_key",
                                              "Content-Type": "application/json"})
    try:
        return urllib.request.urlopen(request, timeout=10).status  # noqa: S310 - loopback
    except urllib.error.HTTPError as err:
        return err.code


def test_a_scrape_sums_the_counts_of_every_portal_process(tmp_path, client, settings, db):
    from tests.ingest_workers.conftest import _free_port

    folder = tmp_path / "prometheus"
    folder.mkdir()
    ports = [_free_port(), _free_port()]
    portals = [_portal_process(port, folder, tmp_path / "var") for port in ports]
    try:
        for port, proc in zip(ports, portals, strict=True):
            _answering(port, proc)
        assert [_post_with_unknown_key(ports[0]) for _ in range(3)] == [401] * 3
        assert [_post_with_unknown_key(ports[1]) for _ in range(2)] == [401] * 2
        # either process answers the scrape with the sum of both
        assert _refused_requests(ports[0]) == 5 and _refused_requests(ports[1]) == 5
        # a process that is gone: its counts still count (counters never go down)
        portals[1].terminate()
        portals[1].wait(timeout=30)
        assert _refused_requests(ports[0]) == 5
        # and any process scraping the folder reads the same (this test's own portal)
        settings.PROMETHEUS_MULTIPROC_DIR = str(folder)
        assert value(scrape(client), "chatorbit_collector_requests_total", source="", code="invalid_write_key") == 5
    finally:
        for proc in portals:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
