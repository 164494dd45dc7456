"""Real Celery worker processes consume the stream; a worker killed mid-way loses its shards to
another once the leases expire, and every event still lands exactly once."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from django.core.management import call_command
from django.db import connection

from tests.ingest_workers.test_consumer import counts, expected_outcome, send_traffic

ROOT = Path(__file__).resolve().parents[2]
BROKER = "redis://127.0.0.1:6379/8"
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def worker_env(settings, stream, warehouse_server, tmp_path, moto_server):
    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "database": f"T_{uuid.uuid4().hex[:12].upper()}"}
    settings.RAW_ARCHIVE_URL = f"file://{tmp_path}/archive"
    settings.REDIS_URL = "redis://127.0.0.1:6379/7"
    redis.Redis.from_url(BROKER).flushdb()
    call_command("seed_demo", quiet_keys=True, force=True, stdout=io.StringIO())
    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_ALLOW")}
    env.update({
        "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/"
                        f"{db['NAME']}",
        "CELERY_BROKER_URL": BROKER, "REDIS_URL": settings.REDIS_URL, "AWS_ENDPOINT_URL": moto_server,
        "KINESIS_STREAM_NAME": stream, "SNOWFLAKE_PORT": str(settings.SNOWFLAKE["port"]),
        "SNOWFLAKE_HOST": "127.0.0.1", "SNOWFLAKE_DATABASE": settings.SNOWFLAKE["database"],
        "RAW_ARCHIVE_URL": settings.RAW_ARCHIVE_URL, "INGEST_LEASE_SECONDS": "4", "DEBUG": "1",
    })
    return env


def start_worker(env: dict, name: str, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "portal", "worker", "-Q", "ingest,default", "--pool=solo",
             "-n", f"{name}@%h", "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "INFO"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def supervise(env: dict) -> None:
    subprocess.run([sys.executable, "-m", "celery", "-A", "portal", "call", "ingest_workers.tasks.ingest_supervise"],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=60)


def wait_for(predicate, *, timeout: float, what: str, logs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n" + "\n".join(p.read_text()[-3000:] for p in logs))


def landed_records() -> int:
    from ingest_workers.models import ShardLease

    return sum(ShardLease.objects.values_list("records_read", flat=True))


def test_workers_consume_and_a_dead_workers_shards_are_taken_over(worker_env, tmp_path):
    records = send_traffic(1200, seed=11)
    expected = expected_outcome(records)
    first_log, second_log = tmp_path / "w1.log", tmp_path / "w2.log"
    first = start_worker(worker_env, "w1", first_log)
    second = None
    try:
        supervise(worker_env)
        wait_for(lambda: landed_records() > 0, timeout=90, what="the first worker to land a batch",
                 logs=[first_log])
        os.killpg(first.pid, signal.SIGKILL)          # the worker dies holding its leases
        first.wait(timeout=10)
        assert landed_records() < len(records), "the first worker finished before it could be killed"
        second = start_worker(worker_env, "w2", second_log)
        time.sleep(4.5)                               # the dead worker's leases expire
        supervise(worker_env)
        wait_for(lambda: landed_records() >= len(records), timeout=120, what="the second worker to catch up",
                 logs=[second_log])
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
    from ingest_workers.services import warehouse_merge_run

    warehouse_merge_run()
    got = counts()
    assert got["events"] == expected["events"]
    assert got["duplicates"] == expected["duplicates"]
    assert got["quarantined"] == expected["quarantined"]
    assert "w2@" in second_log.read_text() and "shard_consume" in second_log.read_text()
