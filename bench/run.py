"""`make bench`: run every benchmark and write bench/results/latest.json (also printed).

Benchmarks are never part of the test suite; timing goals live here.
"""

from __future__ import annotations

import json
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
    # each benchmark runs in its own process and prints its JSON result as the last line
    for script, key in (("bench_core.py", None), ("bench_hot_path.py", "hot_path")):
        path = HERE / script
        if not path.exists():
            continue
        out = subprocess.run([sys.executable, str(path), "--json"], capture_output=True, text=True, check=True)
        data = json.loads(out.stdout.strip().splitlines()[-1])
        results.update({key: data} if key else data)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
