"""The alert rules on what the platform really stores: shard leases in PostgreSQL, CANONICAL.EVENTS on the
embedded warehouse server, check results and model runs; and, end to end through the collectors, the
stream, the pipeline and the merge: stopping the consumers breaches freshness and opens exactly one alert
however many cycles pass, and restarting them resolves it with one message."""

from __future__ import annotations

import datetime as dt
import io
import time
import uuid

import pytest
from django.core.management import call_command
from django.utils import timezone

from quality import alert_rules
from quality.alerts import alerts_evaluate, notification_channel_save
from quality.models import Alert, AlertNotification, CheckResult, QualityRun
from tests.ingest_workers.conftest import aws_settings, kinesis, moto_server, stream  # noqa: F401 - fixtures
from tests.quality.webhook_receiver import webhook_receiver  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db


def lease(shard_id: str, **fields):
    from ingest_workers.models import ShardLease

    lease = ShardLease.objects.create(stream="raw-events", shard_id=shard_id, **fields)
    if "created_at" in fields:  # auto_now_add ignores it on create
        ShardLease.objects.filter(pk=lease.pk).update(created_at=fields["created_at"])
    return lease


def test_shard_lag_and_parked_shards_from_the_leases(settings):
    settings.KINESIS_STREAM_NAME = "raw-events"
    settings.QUALITY_ALERT_SHARD_LAG_MS = 60_000
    now = timezone.now()
    long_ago = now - dt.timedelta(minutes=10)
    lease("shard-ok", owner="w1", lease_expires_at=now + dt.timedelta(seconds=20), last_batch_at=now,
          millis_behind_latest=1_000)
    lease("shard-behind", owner="w1", lease_expires_at=now + dt.timedelta(seconds=20), last_batch_at=now,
          millis_behind_latest=120_000)
    # its lease expired 10 minutes ago with a lag of 0: the figure is stale, nobody reads it
    lease("shard-stale", owner="w-dead", lease_expires_at=long_ago, last_batch_at=long_ago, millis_behind_latest=0)
    lease("shard-parked", parked_at=long_ago, park_reason="warehouse could not be reached", created_at=long_ago)
    lease("shard-done", finished_at=long_ago, created_at=long_ago)

    lagging = {c.subject: c for c in alert_rules.shard_lag(now)}
    assert set(lagging) == {"shard-behind", "shard-stale"}
    assert lagging["shard-behind"].details["millis_behind_latest"] == 120_000
    assert "has not been read for 10.0 min (lease expired)" in lagging["shard-stale"].summary
    (parked,) = alert_rules.parked_shard(now)
    assert parked.key == "parked_shard:shard-parked" and "warehouse could not be reached" in parked.summary


def test_a_failing_check_per_table_from_the_latest_run_only(db):
    now = timezone.now()
    old = QualityRun.objects.create(run_id=uuid.uuid4(), table="CANONICAL.EVENTS", status="done",
                                    finished_at=now - dt.timedelta(minutes=10))
    CheckResult.objects.create(run=old, table=old.table, check_key="duplicate:EVENT_ID:", check_type="duplicate",
                               check_name="No duplicate EVENT_ID", outcome="failed", measured_value=1)
    run = QualityRun.objects.create(run_id=uuid.uuid4(), table="ANALYTICS.USER_FEEDBACK", status="done",
                                    finished_at=now)
    CheckResult.objects.create(run=run, table=run.table, check_key="invalid:SCORE:", check_type="invalid",
                               check_name="SCORE in [-1, 1]", outcome="failed", measured_value=3)
    CheckResult.objects.create(run=run, table=run.table, check_key="freshness:", check_type="freshness",
                               check_name="fresh", outcome="failed", measured_value=5, threshold="must be < 2")
    assert [c.key for c in alert_rules.failing_check(now)] == ["failing_check:ANALYTICS.USER_FEEDBACK",
                                                               "failing_check:CANONICAL.EVENTS"]
    fixed = QualityRun.objects.create(run_id=uuid.uuid4(), table="CANONICAL.EVENTS", status="done", finished_at=now)
    CheckResult.objects.create(run=fixed, table=fixed.table, check_key="duplicate:EVENT_ID:", check_type="duplicate",
                               check_name="No duplicate EVENT_ID", outcome="passed", measured_value=0)
    (feedback,) = alert_rules.failing_check(now)
    assert feedback.severity == "critical" and "SCORE in [-1, 1]" in feedback.summary
    (stale,) = alert_rules.curated_freshness_conditions(alert_rules._latest_results(check_types={"freshness"}))
    assert stale.key == "freshness:ANALYTICS.USER_FEEDBACK" and stale.runbook == "freshness"


def test_a_failed_model_run_alerts_until_the_model_succeeds(db):
    from warehouse.models import ModelRun

    now = timezone.now()
    ModelRun.objects.create(model="user_feedback", status="failed", started_at=now - dt.timedelta(minutes=2),
                            finished_at=now, error="Table ANALYTICS.USER_FEEDBACK does not exist")
    ModelRun.objects.create(model="conversation_sessions", status="succeeded", started_at=now - dt.timedelta(minutes=2),
                            finished_at=now)
    (failed,) = alert_rules.model_run_failed(now)
    assert failed.key == "model_run_failed:user_feedback" and "does not exist" in failed.summary
    ModelRun.objects.create(model="user_feedback", status="succeeded", started_at=now, finished_at=now)
    assert alert_rules.model_run_failed(now) == []


@pytest.fixture
def demo_stream(settings, stream, warehouse_server, tmp_path):  # noqa: F811
    """Seeded demo sources and contracts, a fresh stream, this test's own warehouse database and archive."""
    from ingest_workers import pipeline_stats, services

    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "database": f"L_{uuid.uuid4().hex[:12].upper()}"}
    settings.RAW_ARCHIVE_URL = f"file://{tmp_path}/archive"
    call_command("seed_demo", quiet_keys=True, force=True, stdout=io.StringIO())
    services.contract_index_current(force=True)
    for buffer in (pipeline_stats._minutes, pipeline_stats._sums, pipeline_stats._maxima):
        buffer.pending.clear()  # an earlier test's counts are not this one's
    return settings


def test_e2e_latency_from_the_merged_copies_per_minute_latency(demo_stream, settings):
    """Records the collectors took 150 s ago, merged now: the merger's per-minute latency buckets give p99."""
    from contracts import presets
    from ingest_workers.management.commands.generate_traffic import StreamSender
    from ingest_workers.services import pipeline_drain
    from ingest_workers.traffic import TrafficGenerator, templates_from_preset

    settings.QUALITY_ALERT_E2E_P99_MS = 60_000
    assert alert_rules.e2e_latency(timezone.now()) == []               # nothing merged: nothing to say
    templates = [t for p in presets.demo_presets() for t in templates_from_preset(p) if t.source == "web-chat"]
    generator = TrafficGenerator(templates, seed=5, duplicate_fraction=0, malformed_fraction=0)
    received = time.time_ns() // 1000 - 150_000_000
    sender = StreamSender()
    records = list(generator.records(30, now_micros=received))
    sender.producer.put([(f"k{i}", sender.encode(r, received_at=received)) for i, r in enumerate(records)])
    assert pipeline_drain().merged > 0
    (slow,) = alert_rules.e2e_latency(timezone.now())
    assert 120_000 <= slow.details["p99_ms"] <= 180_000 and slow.runbook == "e2e-latency"
    settings.QUALITY_ALERT_E2E_P99_MS = 600_000
    assert alert_rules.e2e_latency(timezone.now()) == []
    # the window moves on: copies merged before it are not counted
    assert alert_rules.e2e_latency_p99_ms(now=timezone.now() + dt.timedelta(minutes=10), window_minutes=5) is None


def test_canonical_freshness_only_while_traffic_flows():
    now = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)
    newest = now - dt.timedelta(minutes=10)
    minute = now.replace(minute=55, hour=11)
    # no traffic since the newest event: a quiet night is not a breach
    assert alert_rules.canonical_freshness_conditions(newest=newest, accepted=[(newest, newest)], now=now,
                                                      target_minutes=3) == []
    # traffic resumed a few seconds ago: not late yet
    recent = (now.replace(second=0), now - dt.timedelta(seconds=5))
    assert alert_rules.canonical_freshness_conditions(newest=newest, accepted=[recent], now=now,
                                                      target_minutes=3) == []
    (stale,) = alert_rules.canonical_freshness_conditions(
        newest=newest, accepted=[(minute, minute + dt.timedelta(seconds=30)), recent], now=now, target_minutes=3)
    assert stale.key == "freshness:CANONICAL.EVENTS" and stale.details["waiting_minutes"] == 5.0


# --- end to end: stop the consumers, restart them --------------------------------------------------------

def preset_events(preset: dict, count: int) -> list[dict]:
    """The preset's own sample payloads with fresh message ids (so each send is new events)."""
    import copy

    samples = preset["contracts"][0]["versions"][0]["samples"]
    events = []
    for i in range(count):
        event = copy.deepcopy(samples[i % len(samples)])
        event["messageId"] = str(uuid.uuid4())
        events.append(event)
    return events


@pytest.fixture
def live_pipeline(settings, stream, warehouse_server, tmp_path, client, platform_user, engineer, team):  # noqa: F811
    """The collectors, a fresh stream, this test's warehouse database and archive, and web-chat with its
    preset contract approved and a write key."""
    from contracts.presets import preset_load
    from contracts.services import preset_versions_load, source_create
    from ingest_workers import services

    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "database": f"T_{uuid.uuid4().hex[:12].upper()}"}
    settings.RAW_ARCHIVE_URL = f"file://{tmp_path}/archive"
    settings.COLLECTOR_RATE_LIMIT_PER_SOURCE = 1_000_000
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                                   "LOCATION": uuid.uuid4().hex}}
    preset = preset_load("web-chat")
    source, key = source_create(actor=platform_user, team=team, name="web-chat", platform=preset["platform"],
                                kind=preset["kind"], product=preset.get("product", ""))
    preset_versions_load(actor=platform_user, reviewer=engineer, source=source, contracts=preset["contracts"])
    services.contract_index_current(force=True)
    call_command("pipeline_drain", stdout=io.StringIO())  # creates the warehouse tables

    def send(count: int) -> float:
        response = client.post("/collect/v1/batch", data=preset_events(preset, count),
                               content_type="application/json", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 202, response.content
        return time.time()

    return send


def wait_until(moment: float) -> None:
    """Let wall time pass (what a stopped consumer leaves is time): poll the clock, no assertion on it."""
    while time.time() < moment:
        time.sleep(0.05)


def test_stopping_the_consumers_breaches_freshness_once_and_restarting_resolves_it(
        live_pipeline, settings, admin_user, webhook_receiver):  # noqa: F811
    from ingest_workers.collector_stats import collector_answers_flush
    from ingest_workers.services import pipeline_drain

    notification_channel_save(actor=admin_user, name="ops", kind="webhook", target=webhook_receiver.url,
                              allow_private_address=True)
    settings.QUALITY_CANONICAL_FRESHNESS_MINUTES = 3 / 60  # 3 s for the test (3 min by default)
    rules = ["quality.alert_rules.freshness"]

    first = live_pipeline(5)
    assert pipeline_drain().merged >= 5  # consumers running: it lands
    assert alerts_evaluate(rule_paths=rules)["opened"] == 0

    wait_until(first + 1.5)  # the consumers stop; traffic keeps coming
    second = live_pipeline(5)
    collector_answers_flush()
    assert alerts_evaluate(rule_paths=rules)["opened"] == 0  # waiting 1.5 s: not late yet
    wait_until(second + 3.5)
    for _ in range(4):  # however many cycles pass: one alert, one message
        alerts_evaluate(rule_paths=rules)
    alert = Alert.objects.get()
    assert alert.key == "freshness:CANONICAL.EVENTS" and alert.resolved_at is None and alert.runbook == "freshness"
    assert len(webhook_receiver.received) == 1 and "CANONICAL.EVENTS is stale" in webhook_receiver.texts()[0]

    assert pipeline_drain().merged >= 5  # the consumers restart and catch up
    for _ in range(2):
        alerts_evaluate(rule_paths=rules)
    alert.refresh_from_db()
    assert alert.resolved_at is not None and Alert.objects.count() == 1
    assert len(webhook_receiver.received) == 2 and webhook_receiver.texts()[1].startswith("[RESOLVED]")
    assert set(AlertNotification.objects.values_list("event", "status")) == {("opened", "sent"), ("resolved", "sent")}


# --- a source quarantining over the limit (from its scorecard) -------------------------------------------

def snapshot(kind: str, subject: str, at: dt.datetime, reasons: list | None = None, level: str = "green"):
    from quality.models import ScorecardSnapshot

    return ScorecardSnapshot.objects.create(kind=kind, subject=subject, evaluated_at=at, level=level, score=100,
                                            reasons=reasons or [])


def quarantine_reason(path: str, severity: str = "critical", rate: float = 0.4) -> dict:
    return {"key": f"quarantine:schema_violation:{path}", "code": "quarantine_rate", "severity": severity,
            "summary": f"8 of 20 records quarantined for schema_violation at {path}",
            "since": "2026-12-04T10:00:00+00:00",
            "details": {"reason_code": "schema_violation", "path": path, "rate": rate, "records": 20,
                        "threshold": "amber ≥ 1.0%, red ≥ 5.0%"}}


def test_a_source_red_for_its_quarantine_alerts_from_its_latest_scorecard_only(db):
    now = timezone.now()
    before = now - dt.timedelta(minutes=5)
    assert alert_rules.quarantine_over_limit(now) == []                      # never graded: nothing to say
    snapshot("platform", "platform", before, level="red")
    snapshot("source", "ios-app", before, [quarantine_reason("/client_ts_ms")], level="red")
    snapshot("source", "web-chat", before, [quarantine_reason("/timestamp", severity="warning", rate=0.02)],
             level="amber")                                                  # amber: the scorecard's business
    (condition,) = alert_rules.quarantine_over_limit(now)
    assert (condition.key, condition.rule, condition.runbook) == ("quarantine_rate:ios-app", "quarantine_rate",
                                                                  "quarantine-rate")
    assert condition.severity == "critical" and condition.details["paths"] == ["/client_ts_ms"]
    assert "ios-app is red: 40% of its records quarantined" in condition.summary
    assert "/client_ts_ms" in condition.summary
    assert condition.link == "/quality/scorecards/source/ios-app/"
    # the next evaluation's card is green: the condition is gone (the alert resolves)
    snapshot("platform", "platform", now, level="green")
    snapshot("source", "ios-app", now)
    assert alert_rules.quarantine_over_limit(now) == []
    # scorecards nobody graded for long are not "all fine": the rule raises, its alerts stay open
    with pytest.raises(RuntimeError, match="last graded"):
        alert_rules.quarantine_over_limit(now + alert_rules.SCORECARDS_STALE_AFTER + dt.timedelta(minutes=1))
