"""Real Celery worker processes of the ingest pool (``--shard-consumer``) share the shards while records
flow: one killed with SIGKILL loses its shards to the others once their leases expire, one that joins
takes its fair share, and one frozen past its lease (two consumers on one shard) cannot land twice.
Every event still lands exactly once."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest
from django.core.management import call_command
from django.db import connection

from tests.ingest_workers.test_consumer import counts, expected_outcome, send_traffic

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def worker_env(settings, stream, warehouse_server, tmp_path, moto_server):
    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "database": f"T_{uuid.uuid4().hex[:12].upper()}"}
    settings.RAW_ARCHIVE_URL = f"file://{tmp_path}/archive"
    call_command("seed_demo", quiet_keys=True, force=True, stdout=io.StringIO())
    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_ALLOW")}
    env.update({
        "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/"
                        f"{db['NAME']}",
        # the broker this run was given (the workers take no task here; they only need to start)
        "CELERY_BROKER_URL": os.environ.get("CELERY_BROKER_URL") or settings.CELERY_BROKER_URL,
        "AWS_ENDPOINT_URL": moto_server, "KINESIS_STREAM_NAME": stream,
        "SNOWFLAKE_PORT": str(settings.SNOWFLAKE["port"]), "SNOWFLAKE_HOST": "127.0.0.1",
        "SNOWFLAKE_DATABASE": settings.SNOWFLAKE["database"], "RAW_ARCHIVE_URL": settings.RAW_ARCHIVE_URL,
        "INGEST_LEASE_SECONDS": "4", "DEBUG": "1",
        # archive objects roll every 3 s: a killed worker dies with objects open, and its heir rebuilds them
        "RAW_ARCHIVE_ROLL_SECONDS": "3",
    })
    return env


def start_worker(env: dict, name: str, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "portal", "worker", "-Q", f"ingest-{name}", "--pool=solo",
             "--shard-consumer", "-n", f"{name}@%h", "--without-heartbeat", "--without-gossip", "--without-mingle",
             "-l", "INFO"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(predicate, *, timeout: float, what: str, logs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}: {owners()}\n"
                         + "\n".join(p.read_text()[-3000:] for p in logs))


def owners() -> Counter:
    """Live lease holders (by worker name prefix) and how many shards each holds."""
    from django.db.models.functions import Now

    from ingest_workers.models import ShardLease

    held = ShardLease.objects.filter(lease_expires_at__gt=Now(), finished_at__isnull=True).exclude(owner="")
    return Counter(owner.split("@")[0] for owner in held.values_list("owner", flat=True))


def records_read() -> int:
    from ingest_workers.models import ShardLease

    return sum(ShardLease.objects.values_list("records_read", flat=True))


class Producer(threading.Thread):
    """Sends traffic while the workers come and go (bounded: ``batches`` sends, then it stops)."""

    def __init__(self, batches: int, size: int):
        super().__init__(daemon=True)
        self.batches, self.size, self.sent, self.error = batches, size, [], None

    def run(self) -> None:
        from django.db import connection as thread_connection

        try:
            for i in range(self.batches):
                self.sent.extend(send_traffic(self.size, seed=100 + i))
                time.sleep(0.3)
        except Exception as err:  # noqa: BLE001 - kept, and the test asserts there was none
            self.error = err
        finally:
            thread_connection.close()


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGCONT)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_consumers_share_shards_survive_sigkill_rebalance_and_never_land_twice(worker_env, tmp_path, kinesis, stream):
    first_records = send_traffic(400, seed=11)
    logs = {name: tmp_path / f"{name}.log" for name in ("w1", "w2", "w3")}
    procs: dict[str, subprocess.Popen] = {}
    producer = Producer(batches=12, size=50)
    try:
        procs["w1"] = start_worker(worker_env, "w1", logs["w1"])
        procs["w2"] = start_worker(worker_env, "w2", logs["w2"])
        wait_for(lambda: owners() == Counter(w1=2, w2=2), timeout=90, what="two workers to split four shards",
                 logs=logs.values())
        producer.start()                                       # records flow from here on
        wait_for(lambda: records_read() > 0, timeout=60, what="a first unit to land", logs=logs.values())

        os.killpg(procs["w1"].pid, signal.SIGKILL)             # dies holding two leases
        procs["w1"].wait(timeout=10)
        wait_for(lambda: owners() == Counter(w2=4), timeout=60, what="w2 to take the dead worker's shards",
                 logs=logs.values())

        procs["w3"] = start_worker(worker_env, "w3", logs["w3"])  # a new worker joins: it takes its share
        wait_for(lambda: owners() == Counter(w2=2, w3=2), timeout=90, what="w3 to take its fair share",
                 logs=logs.values())

        os.killpg(procs["w3"].pid, signal.SIGSTOP)             # frozen past its leases: w2 takes them over
        wait_for(lambda: owners() == Counter(w2=4), timeout=60, what="w2 to take the frozen worker's shards",
                 logs=logs.values())
        os.killpg(procs["w3"].pid, signal.SIGCONT)             # it wakes up on shards that are no longer its own
        wait_for(lambda: owners() == Counter(w2=2, w3=2), timeout=90, what="the woken worker to rebalance",
                 logs=logs.values())

        producer.join(timeout=120)
        assert producer.error is None and not producer.is_alive()
        expected = expected_outcome(first_records + producer.sent)
        wait_for(lambda: merged_counts() == expected_counts(expected), timeout=120,
                 what="every event to be landed and merged", logs=logs.values())
    finally:
        for proc in procs.values():
            stop(proc)
    # the frozen worker could not checkpoint what its successor read: no record is counted twice
    assert records_read() <= len(first_records) + len(producer.sent)
    assert "shard consumer" in logs["w3"].read_text()
    # every record of the stream is in the raw archive, the killed worker's open objects included
    from ingest_workers.archive import archive_decompress
    from tests.ingest_workers.conftest import read_stream

    archived = Counter()
    for path in (tmp_path / "archive").rglob("*.jsonl.zst"):
        archived.update((line["shard"], line["seq"])
                        for line in map(orjson.loads, archive_decompress(path.read_bytes())))
    sent = {(r["shard"], r["sequence"]) for r in read_stream(kinesis, stream)}
    assert sent and set(archived) == sent


def merged_counts() -> tuple[int, int, int, int]:
    from ingest_workers.services import warehouse_merge_run

    warehouse_merge_run(max_seconds=10)
    got = counts()
    from tests.ingest_workers.test_consumer import warehouse_rows

    distinct = warehouse_rows("SELECT COUNT(DISTINCT EVENT_ID) AS N FROM CANONICAL.EVENTS")[0]["N"]
    return got["events"], distinct, got["duplicates"], got["quarantined"]


def expected_counts(expected: dict) -> tuple[int, int, int, int]:
    return expected["events"], expected["events"], expected["duplicates"], expected["quarantined"]


_FROZEN_BEFORE_LANDING = """
import os, signal, sys
sys.path.insert(0, os.getcwd())
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
import django
django.setup()
from django.core.management import call_command
from ingest_workers import services

real_land = services.ShardReader._land
frozen = []

def land_after_a_freeze(self, rows, **kwargs):
    # its first unit is read and placed in its archive object: the process stops here (a long pause)
    if not frozen:
        frozen.append(1)
        os.kill(os.getpid(), signal.SIGSTOP)
    return real_land(self, rows, **kwargs)

services.ShardReader._land = land_after_a_freeze
call_command("ingest_consume", "--until-idle", "--json")
"""


def _consume(env: dict, log: Path, script: str | None = None) -> subprocess.Popen:
    command = ["-c", script] if script else ["manage.py", "ingest_consume", "--until-idle", "--json"]
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, *command], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=out, text=True, start_new_session=True)


def _stopped(proc: subprocess.Popen) -> bool:
    try:
        return Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except FileNotFoundError:  # it has exited
        return False


def test_a_consumer_frozen_past_its_lease_is_refused_by_the_channel_when_it_wakes(worker_env, tmp_path):
    # the pipeline review's "two consumers on one shard": one process stops between reading a unit and
    # landing it, its lease expires, a second process takes the shard and lands everything; when the
    # first wakes up it lands its stale unit, and the channel (reopened by its heir) must refuse it
    records = send_traffic(160, seed=61)
    expected = expected_outcome(records)
    logs = {name: tmp_path / f"{name}.log" for name in ("frozen", "heir")}
    frozen = _consume(worker_env, logs["frozen"], _FROZEN_BEFORE_LANDING)
    heir = None
    try:
        wait_for(lambda: frozen.poll() is None and _stopped(frozen), timeout=90,
                 what="the first consumer to stop before landing its first unit", logs=logs.values())
        wait_for(lambda: not owners(), timeout=60, what="the frozen consumer's leases to expire", logs=logs.values())
        heir = _consume(worker_env, logs["heir"])
        heir_out, _ = heir.communicate(timeout=180)
        assert heir.returncode == 0, logs["heir"].read_text()[-3000:]
        heir_stats = orjson.loads(heir_out.strip().splitlines()[-1])
        assert heir_stats["read"] == len(records)
        os.killpg(frozen.pid, signal.SIGCONT)                  # it wakes up holding a unit it read long ago
        frozen_out, _ = frozen.communicate(timeout=180)
        assert frozen.returncode == 0, logs["frozen"].read_text()[-3000:]
    finally:
        stop(frozen)
        stop(heir)
    frozen_stats = orjson.loads(frozen_out.strip().splitlines()[-1])
    assert frozen_stats["lost"] >= 1          # its append was refused: the shard was no longer its own
    assert "its unit was not landed" in logs["frozen"].read_text()
    assert "was reopened by another writer" in logs["frozen"].read_text()   # by the channel's fence
    assert merged_counts() == expected_counts(expected)        # every event once, none from the stale unit
    assert records_read() == len(records)     # and it checkpointed nothing the heir had counted
