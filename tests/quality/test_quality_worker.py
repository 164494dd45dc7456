"""A real Celery worker process on the ``quality`` queue takes a run asked for with "Run checks now": the
button queues it after commit, the worker (another process, on the Redis broker, the test's PostgreSQL and
the embedded warehouse) runs Soda and stores the results, and the table's page shows them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from quality.models import QualityRun
from tests.quality.conftest import clean_events, load

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)


def quality_worker_start(settings, log: Path) -> subprocess.Popen:
    db = connection.settings_dict
    # the test command always runs on the Redis broker: anything else fails here, never skips
    assert settings.CELERY_BROKER_URL.startswith("redis"), "needs the Redis broker (CELERY_BROKER_URL=redis://…)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_ALLOW")}
    env.update({
        "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/"
                        f"{db['NAME']}",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL, "DEBUG": "1",
        "SNOWFLAKE_HOST": "127.0.0.1", "SNOWFLAKE_PORT": str(settings.SNOWFLAKE["port"]),
        "SNOWFLAKE_DATABASE": settings.SNOWFLAKE["database"],
    })
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "portal", "worker", "-Q", "quality", "--pool=solo",
             "-n", "quality-test@%h", "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "INFO"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def worker_stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_run_checks_now_is_taken_by_a_real_quality_worker_and_shown(quality_db, settings, chat_contract, engineer,
                                                                     client, tmp_path):
    from tests.warehouse.factories import canonical_event

    source_id = str(chat_contract.source_id)
    events = clean_events(source_id)
    fax = canonical_event("fax-1", template=0, source_id=source_id, platform="fax",
                          received_at=events[0]["received_at"])
    load(quality_db, [*events, fax])
    log = tmp_path / "quality-worker.log"
    worker = quality_worker_start(settings, log)
    try:
        client.force_login(engineer)
        response = client.post("/quality/run/", {"table": "CANONICAL.EVENTS"})
        assert response.status_code == 302
        run = QualityRun.objects.get(table="CANONICAL.EVENTS", trigger="manual")
        assert run.requested_by == engineer
        deadline = time.monotonic() + 180  # a cold worker imports Django and Soda first (tens of seconds here)
        while run.status not in ("done", "error") and time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.5)
            run.refresh_from_db()
        assert run.status == "done", f"run {run.status}: {run.error}\n{log.read_text()[-4000:]}"
        assert run.failed == 1 and run.errors == 0 and run.passed > 30
        assert set(run.results.exclude(outcome="passed").values_list("check_key", flat=True)) == {"invalid:PLATFORM:"}
        assert "quality.tasks.quality_run_queued" in log.read_text()

        page = client.get("/quality/tables/CANONICAL.EVENTS/").content.decode()
        assert f"run <code>{run.run_id}</code>" in page and "(manual," in page
        assert 'data-check="invalid:PLATFORM:" data-outcome="failed"' in page
        assert 'data-testid="pending"' not in page  # nothing left queued
    finally:
        worker_stop(worker)
