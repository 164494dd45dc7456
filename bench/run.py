"""`make bench`: run every benchmark and write bench/results/latest.json (also printed).

Benchmarks are never part of the test suite; timing goals live here.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"python": platform.python_version(), "cpu": cpu, "machine": platform.machine()}


def main() -> int:
    sys.path.insert(0, str(HERE.parent))
    results: dict = {"machine": machine(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    # Each benchmark runs in its own process and prints its JSON result as the last line; the
    # headline figures go to the top level, each benchmark's full output under its own name.
    # BENCH_ONLY=hot_path,dedup (names below) runs a subset.
    only = {name for name in os.environ.get("BENCH_ONLY", "").split(",") if name}
    for name, script in (("core", "bench_core.py"), ("hot_path", "bench_hot_path.py"),
                         ("consumer", "bench_consumer.py"), ("e2e", "bench_e2e.py"),
                         ("dedup", "bench_dedup.py"), ("models", "bench_models.py"), ("check", "bench_check.py"),
                         ("analytics_page", "bench_analytics_page.py"), ("quality", "bench_quality.py"),
                         ("deletion", "bench_deletion.py")):
        if only and name not in only:
            continue
        print(f"running {script} …", file=sys.stderr, flush=True)
        out = subprocess.run([sys.executable, str(HERE / script), "--json"], capture_output=True, text=True)
        if out.returncode not in (0, 1) or not out.stdout.strip():
            results[name] = {"error": (out.stderr or out.stdout)[-2000:]}
            continue
        data = json.loads(out.stdout.strip().splitlines()[-1])
        results[name] = data
        results.update({k: v for k, v in data.items() if not isinstance(v, (dict, list))})
        if out.returncode == 1:  # the benchmark ran but its own check failed (e.g. inexact dedup)
            results[f"{name}_check_failed"] = True
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
