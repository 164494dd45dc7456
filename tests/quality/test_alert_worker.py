"""The alert cycle as it runs in production: the task on the quality queue, taken by a real Celery worker
process (the beat sends the same task every QUALITY_ALERT_INTERVAL_S), opening an alert from stored state
and notifying a real webhook receiver; the next cycle after the fix resolves it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from quality.alerts import notification_channel_save
from quality.models import Alert
from tests.quality.webhook_receiver import webhook_receiver  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def quality_worker(settings, tmp_path):
    """A Celery worker of the quality queue on this run's broker and test database, evaluating one rule."""
    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_ALLOW")}
    env.update({
        "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/"
                        f"{db['NAME']}",
        "CELERY_BROKER_URL": os.environ.get("CELERY_BROKER_URL") or settings.CELERY_BROKER_URL,
        "KINESIS_STREAM_NAME": "alerts-worker-stream", "QUALITY_ALERT_RULES": "quality.alert_rules.parked_shard",
        "DEBUG": "1",
    })
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "portal", "worker", "-Q", "quality", "--pool=solo",
             "-n", "alerts-test@%h", "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "INFO"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    yield log
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def wait_for(predicate, *, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}\n{log.read_text()[-3000:]}")


def test_the_beat_task_runs_on_the_quality_queue_and_a_worker_opens_and_resolves(
        quality_worker, admin_user, webhook_receiver):  # noqa: F811
    from ingest_workers.models import ShardLease
    from portal.celery import app
    from quality.tasks import alerts_evaluate

    assert app.conf.beat_schedule["alerts-evaluate"]["task"] == "quality.tasks.alerts_evaluate"
    assert app.conf.task_routes["quality.tasks.alerts_evaluate"] == {"queue": "quality"}
    notification_channel_save(actor=admin_user, name="ops", kind="webhook", target=webhook_receiver.url,
                              allow_private_address=True)
    shard = ShardLease.objects.create(stream="alerts-worker-stream", shard_id="shardId-000000000003",
                                      parked_at=timezone.now(), park_reason="warehouse could not be reached")
    alerts_evaluate.delay()
    wait_for(lambda: len(webhook_receiver.received) == 1, timeout=90, what="the opened message", log=quality_worker)
    alert = Alert.objects.get()
    assert alert.key == "parked_shard:shardId-000000000003" and alert.resolved_at is None
    assert "[CRITICAL] Shard shardId-000000000003 is parked" in webhook_receiver.texts()[0]

    ShardLease.objects.filter(pk=shard.pk).update(parked_at=None, park_reason="")  # shard_unpark
    alerts_evaluate.delay()
    alerts_evaluate.delay()
    wait_for(lambda: len(webhook_receiver.received) == 2, timeout=90, what="the resolve message", log=quality_worker)
    alert.refresh_from_db()
    assert alert.resolved_at is not None and webhook_receiver.texts()[1].startswith("[RESOLVED]")
