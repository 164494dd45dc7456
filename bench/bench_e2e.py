"""End-to-end latency on the embedded stack: from the generator's send (through the collectors) to
the event being queryable in CANONICAL.EVENTS, under a sustained load.

    .venv/bin/python bench/bench_e2e.py [--rate 300] [--seconds 60] [--json]

Starts `manage.py run_embedded --no-traffic` (local AWS, warehouse server, the ingest pool, a Celery worker and beat,
portal) on free ports in a temporary folder, sends `--rate` events/s for `--seconds` through the
collectors, and polls CANONICAL.EVENTS once a second; an event's latency is the poll time at which
it first appears minus its send time (so the resolution is about one second).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    var = tempfile.mkdtemp(prefix="bench-e2e-")
    portal_port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL"}}
    env.update(CHATORBIT_VAR_DIR=var, AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
               SNOWFLAKE_PORT=str(free_port()), PYTHONUNBUFFERED="1")
    os.environ.update(env)
    log = open(Path(var) / "run.log", "w")  # noqa: SIM115 - lives as long as the stack
    stack = subprocess.Popen([sys.executable, "manage.py", "run_embedded", "--no-traffic", "--addrport",
                              f"127.0.0.1:{portal_port}"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        sys.path.insert(0, str(ROOT))
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
        import django

        django.setup()
        from contracts.presets import demo_presets
        from ingest_workers.management.commands.generate_traffic import HttpSender, wait_for_portal
        from ingest_workers.traffic import TrafficGenerator, templates_from_preset
        from warehouse.connection import warehouse_connect

        url = f"http://127.0.0.1:{portal_port}"
        wait_for_portal(url, timeout=180)
        time.sleep(3)  # let seed_demo's writes settle before rotating keys
        sender = HttpSender(url)
        # Several client threads (runserver is threaded), each with its own HTTP session.
        import concurrent.futures
        import copy

        import requests

        senders = []
        for _ in range(8):
            clone = copy.copy(sender)
            clone.session = requests.Session()
            senders.append(clone)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(senders))
        templates = [t for p in demo_presets() for t in templates_from_preset(p)]
        generator = TrafficGenerator(templates, seed=5, duplicate_fraction=0, out_of_order_fraction=0,
                                     late_fraction=0, malformed_fraction=0)
        seen_at: dict[str, tuple[float, float]] = {}   # event id → (first poll that saw it, event time)
        conn = warehouse_connect()
        started = time.time()
        tick = 0.2
        per_tick = max(1, round(args.rate * tick))
        next_poll = started + 1.0
        sent = 0
        last_growth = started
        while True:
            now = time.time()
            if now - started < args.seconds:
                records = list(generator.records(per_tick, now_micros=int(now * 1_000_000)))
                parts = [records[i::len(senders)] for i in range(len(senders))]
                list(pool.map(lambda pair: pair[0].send(pair[1]) if pair[1] else 0, zip(senders, parts, strict=True)))
                sent += len(records)
            if now >= next_poll:
                rows = conn.cursor().execute("SELECT EVENT_ID, DATE_PART(EPOCH_MICROSECOND, EVENT_TIME) AS T "
                                             "FROM CANONICAL.EVENTS").fetchall()
                before = len(seen_at)
                for event_id, event_time in rows:
                    seen_at.setdefault(event_id, (now, int(event_time) / 1_000_000))
                if len(seen_at) > before:
                    last_growth = now
                next_poll = now + 1.0
            # Done when the load is over and nothing new has appeared for 15 s (merges run every 5 s).
            if now - started >= args.seconds and (now - last_growth > 15 or now - started > args.seconds + 180):
                break
            time.sleep(max(0.0, tick - (time.time() - now)))
        pool.shutdown()
        load_seconds = min(args.seconds, time.time() - started)
        latencies = sorted(max(0.0, seen - sent_time) for seen, sent_time in seen_at.values())
        conn.close()
        q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
        result = {
            "e2e_latency_p50_s": round(statistics.median(latencies), 2) if latencies else None,
            "e2e_latency_p99_s": round(q[98], 2) if latencies else None,
            # The rate actually achieved (records sent / load seconds), not the one asked for.
            "e2e_rate_events_per_s": round(sent / args.seconds, 1), "e2e_rate_requested": args.rate,
            "e2e_load_seconds": args.seconds, "e2e_wall_seconds": round(load_seconds, 1),
            "e2e_records_sent": sent, "e2e_events_seen": len(seen_at),
            "e2e_path": "generator → HTTP collectors → Kinesis (moto) → ingest pool consumer → landing channel "
                        "→ merger",
        }
        print(json.dumps(result, indent=None if args.json else 2))
        return 0
    finally:
        os.killpg(stack.pid, signal.SIGTERM)
        try:
            stack.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(stack.pid, signal.SIGKILL)


if __name__ == "__main__":
    raise SystemExit(main())
