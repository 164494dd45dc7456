"""`make test` runs the suite in two pytest-xdist workers; each must get its own Redis database before Django
reads its settings, or a real Celery worker started by one test would take the other worker's tasks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = '''
import json, os
from django.conf import settings

def test_probe_a(): record()
def test_probe_b(): record()

def record():
    from celery import current_app
    out = os.path.join(os.environ["PROBE_DIR"], os.environ.get("PYTEST_XDIST_WORKER", "main") + ".json")
    with open(out, "w") as f:
        json.dump({"env": os.environ["REDIS_URL"], "settings": settings.REDIS_URL,
                   "broker": settings.CELERY_BROKER_URL, "celery": current_app.conf.broker_url}, f)
'''


def run_probe(tmp_path: Path, urls: str, workers: int) -> subprocess.CompletedProcess:
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    env = {**os.environ, "TEST_REDIS_URLS": urls, "PROBE_DIR": str(tmp_path),
           "REDIS_URL": "redis://127.0.0.1:6379/15", "CELERY_BROKER_URL": "redis://127.0.0.1:6379/15"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml"), "--rootdir", str(REPO), "-p",
         "no:cacheprovider", "-q", "-n", str(workers), "--dist", "each", "-o", "addopts=-p tests.xdist_slots",
         str(probe)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_each_xdist_worker_reads_its_own_redis_url_in_settings_and_celery(tmp_path):
    first, second = "redis://127.0.0.1:6379/11", "redis://127.0.0.1:6379/12"
    done = run_probe(tmp_path, f"{first} {second}", workers=2)
    assert done.returncode == 0, done.stdout + done.stderr
    seen = {p.stem: json.loads(p.read_text()) for p in tmp_path.glob("gw*.json")}
    assert seen == {"gw0": dict.fromkeys(("env", "settings", "broker", "celery"), first),
                    "gw1": dict.fromkeys(("env", "settings", "broker", "celery"), second)}


def test_fewer_urls_than_workers_stops_with_a_message_naming_the_setting(tmp_path):
    done = run_probe(tmp_path, "redis://127.0.0.1:6379/11", workers=2)
    assert done.returncode != 0
    assert "TEST_REDIS_URLS names 1 Redis URL(s) but pytest-xdist started worker gw1" in done.stdout + done.stderr
