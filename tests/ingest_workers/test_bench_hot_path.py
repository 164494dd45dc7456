"""The hot-path benchmark still runs on the code it measures (it builds a keyring without Django, so a
keyring change that reaches for the database broke it once without any test noticing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_hot_path_benchmark_runs_a_small_pass_and_reports_consistent_figures():
    # its own process (the benchmark pins itself to one CPU), started as `make bench` starts it: no Django
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_hot_path.py"), "--records", "2000",
                           "--passes", "1", "--json"], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["hot_path_events"] == 2000 and figures["passes"] == 1
    # every record has one outcome: canonical events (some records map to two) or a quarantine row
    assert figures["canonical_events_out"] + figures["quarantined"] >= 2000
    assert 0 < figures["hot_path_events_per_s"] < figures["parse_only_events_per_s"]
    assert figures["archive_bytes_per_record_encrypted"] > 0 and figures["landing_bytes_per_pass"] > 2000 * 500
    assert "hot path :" in done.stdout and "ratio    :" in done.stdout
