"""quality_cycle_s: one full data-quality check cycle on the embedded warehouse, CANONICAL.EVENTS holding
1,000,000 events and every curated table built from them.

    .venv/bin/python bench/bench_quality.py [--events 1000000] [--seed-events 20000] [--json]
                                            [--with-e2e [--e2e-rate 100]]

Lands ``--seed-events`` sample events (warehouse/analytics_sample.py: people across the six platforms over
30 days) through the real landing and MERGE, then multiplies them inside the warehouse to ``--events``
with one INSERT … SELECT (each copy gets its own event, person, session, conversation and message ids,
so the curated tables grow with it), rebuilds the curated models from all of them, and times what the
scheduler runs every cycle: ``quality.services.quality_run()`` over every covered table (the generated
Soda contracts verified by Soda Core through the connector, failed-row samples read and masked, results
stored in a SQLite portal). Goal: under 60 s.

``--with-e2e`` runs all of it inside the live embedded stack (`manage.py run_embedded --no-traffic`, as
bench_e2e.py does): the million events go into the stack's own warehouse, and while the cycle runs (and
for the cycles after it, ``--e2e-seconds`` in all) events are sent through the collectors at
``--e2e-rate``; ``quality_e2e_latency_p99_s`` is the end-to-end latency (send → queryable in
CANONICAL.EVENTS, polled each second) of the events sent while a cycle was running. Goal: under 60 s.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VAR = Path(tempfile.mkdtemp(prefix="bench-quality-"))
for _name in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL"):
    os.environ.pop(_name, None)
os.environ.update(CHATORBIT_VAR_DIR=str(VAR), DATABASE_URL=f"sqlite:///{VAR / 'portal.sqlite3'}", DEBUG="1",
                  LOG_LEVEL="WARNING", SODA_CORE_TELEMETRY_ENABLED="false")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django  # noqa: E402

django.setup()

import orjson  # noqa: E402

from warehouse.analytics_sample import sample_events, sample_prices  # noqa: E402
from warehouse.connection import warehouse_connect  # noqa: E402
from warehouse.ddl import CANONICAL_EVENTS, warehouse_ensure  # noqa: E402
from warehouse.embedded import embedded_server_start, embedded_server_stop, free_port  # noqa: E402
from warehouse.landing import landing_append, landing_rows_json, merge_channels  # noqa: E402
from warehouse.load import warehouse_query  # noqa: E402
from warehouse.modeling.runner import models_run  # noqa: E402

DATABASE = "BENCH_QUALITY"
START_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
DAYS = 30
SEED = 17
BATCH = 10_000
GOAL_S = 60.0
#: the columns holding ids that each copy makes its own (NULL stays NULL)
COPIED_IDS = ("EVENT_ID", "PERSON_ID", "ANONYMOUS_ID", "SESSION_ID", "CONVERSATION_ID", "MESSAGE_ID",
              "PARENT_EVENT_ID")


def land(conn, events: list[dict]) -> float:
    started = time.perf_counter()
    for n, start in enumerate(range(0, len(events), BATCH)):
        landing_append(conn, channel="bench-quality", offset_token=str(time.time_ns()),
                       rows=landing_rows_json(orjson.dumps(events[start:start + BATCH])), batch_id=f"seed-{n}")
    merge_channels(conn, window_days=3650)
    return time.perf_counter() - started


def multiply(conn, database: str, factor: int) -> float:
    """CANONICAL.EVENTS × ``factor`` inside the warehouse: copy k of a row suffixes its ids with ~k."""
    started = time.perf_counter()
    columns = [c.name for c in CANONICAL_EVENTS.columns]
    exprs = [f"{c} || '~' || CAST(k.K AS VARCHAR)" if c in COPIED_IDS else c for c in columns]
    table = f"{database}.CANONICAL.EVENTS"
    cur = conn.cursor()
    try:
        cur.execute(
            f"INSERT INTO {table} ({', '.join(columns)})\n"  # noqa: S608 - DDL column names and a constant
            f"SELECT {', '.join(exprs)} FROM {table} e,\n"
            f"  (SELECT ROW_NUMBER() OVER (ORDER BY EVENT_ID) AS K FROM {table} LIMIT {int(factor) - 1}) k")
    finally:
        cur.close()
    return time.perf_counter() - started


def portal_ready() -> None:
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("seed_demo", quiet_keys=True, stdout=open(os.devnull, "w"))  # noqa: SIM115 - the registry's versions


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stack_start() -> tuple[subprocess.Popen, str]:
    """The embedded platform without traffic, on free ports, sharing this process's SQLite portal and
    settings (so the warehouse it runs is the one this process fills). Returns it and the portal URL."""
    portal_port = _free_port()
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{_free_port()}", SNOWFLAKE_PORT=str(_free_port()),
                      PYTHONUNBUFFERED="1")
    log = (VAR / "stack.log").open("w")
    stack = subprocess.Popen([sys.executable, "manage.py", "run_embedded", "--no-traffic", "--no-demo-break",
                              "--addrport", f"127.0.0.1:{portal_port}"], cwd=ROOT, env=dict(os.environ),
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return stack, f"http://127.0.0.1:{portal_port}"


def stack_stop(stack: subprocess.Popen) -> None:
    os.killpg(stack.pid, signal.SIGTERM)
    try:
        stack.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(stack.pid, signal.SIGKILL)


class LiveTraffic(threading.Thread):
    """Sends ``rate`` events/s through the collectors and polls CANONICAL.EVENTS each second for them
    (as bench_e2e.py does; only events received since it started are read back)."""

    def __init__(self, url: str, rate: float):
        super().__init__(daemon=True)
        self.url, self.rate = url, rate
        self.sent: dict[str, float] = {}           # event id → send time (the event's own time)
        self.seen: dict[str, float] = {}           # event id → first poll that saw it
        self.stop_sending = threading.Event()
        self.stop_polling = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as err:  # noqa: BLE001 - reported by the benchmark
            self.error = err

    def _run(self) -> None:
        from contracts.presets import demo_presets
        from ingest_workers.management.commands.generate_traffic import HttpSender
        from ingest_workers.traffic import TrafficGenerator, templates_from_preset
        from warehouse.connection import warehouse_connect

        sender = HttpSender(self.url)
        generator = TrafficGenerator([t for p in demo_presets() for t in templates_from_preset(p)], seed=5,
                                     duplicate_fraction=0, out_of_order_fraction=0, late_fraction=0,
                                     malformed_fraction=0)
        conn = warehouse_connect()
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - 5))
        tick, next_poll = 0.2, time.time() + 1.0
        while not self.stop_polling.is_set():
            now = time.time()
            if not self.stop_sending.is_set():
                sender.send(list(generator.records(max(1, round(self.rate * tick)), now_micros=int(now * 1e6))))
            if now >= next_poll:
                cur = conn.cursor()
                cur.execute("SELECT EVENT_ID, DATE_PART(EPOCH_MICROSECOND, EVENT_TIME) FROM CANONICAL.EVENTS "
                            f"WHERE RECEIVED_AT >= '{since}'::TIMESTAMP_NTZ")  # noqa: S608 - our own clock
                for event_id, event_time in cur.fetchall():
                    if event_id not in self.seen:
                        self.seen[event_id] = now
                        self.sent[event_id] = int(event_time) / 1_000_000
                cur.close()
                next_poll = now + 1.0
            time.sleep(max(0.0, tick - (time.time() - now)))
        conn.close()

    def latencies(self, window: tuple[float, float]) -> list[float]:
        """Latencies of the events sent within ``window`` (start, end), sorted."""
        return sorted(self.seen[e] - t for e, t in self.sent.items() if window[0] <= t <= window[1])


def quantiles(latencies: list[float]) -> tuple[float | None, float | None]:
    if len(latencies) < 2:
        return None, None
    return round(statistics.median(latencies), 2), round(statistics.quantiles(latencies, n=100)[98], 2)


def warehouse_fill(conn, database: str, events: int, seed_events: int) -> dict:
    """Seed landed for real, multiplied to ``events`` in the warehouse, curated tables rebuilt."""
    seed = list(itertools.islice(sample_events(people=seed_events // 40, days=DAYS, seed=SEED, start_us=START_US),
                                 seed_events))
    if len(seed) < seed_events:
        raise SystemExit(f"the sample gave {len(seed)} events, fewer than --seed-events")
    print(f"landing {len(seed):,} seed events …", file=sys.stderr, flush=True)
    land_s = land(conn, seed)
    print(f"multiplying to {events:,} …", file=sys.stderr, flush=True)
    multiply_s = multiply(conn, database, events // seed_events)
    [row] = warehouse_query(conn, f"SELECT COUNT(*) AS N FROM {database}.CANONICAL.EVENTS")  # noqa: S608
    print("building the curated tables …", file=sys.stderr, flush=True)
    started = time.perf_counter()
    report = models_run(conn, full_refresh=True, prices=sample_prices(START_US, DAYS))
    models_s = time.perf_counter() - started
    if not report.ok:
        raise SystemExit(f"model run failed: {[(m.name, m.error) for m in report.models if m.error]}")
    return {"events": int(row["N"]), "land_seed_s": round(land_s, 1), "multiply_s": round(multiply_s, 1),
            "models_rebuild_s": round(models_s, 1), "curated_rows": {m.name: m.rows_changed for m in report.models}}


def cycle_timed() -> tuple[float, list]:
    from quality.services import quality_run

    print("one quality cycle …", file=sys.stderr, flush=True)
    started = time.perf_counter()
    runs = quality_run()
    return time.perf_counter() - started, runs


def run_alone(args) -> dict:
    from django.conf import settings

    portal_ready()
    port = free_port()
    proc = embedded_server_start(VAR / "warehouse", port, log_path=VAR / "warehouse.log")
    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "port": port, "host": "127.0.0.1", "protocol": "http",
                          "database": DATABASE}
    try:
        conn = warehouse_connect(database=DATABASE)
        warehouse_ensure(conn)
        setup = warehouse_fill(conn, DATABASE, args.events, args.seed_events)
        conn.close()
        cycle_s, runs = cycle_timed()
    finally:
        embedded_server_stop(proc)
    return {"cycle_s": cycle_s, "runs": runs, "setup": setup}


def run_with_e2e(args) -> dict:
    """The same inside the live stack, with traffic flowing through it while the cycle runs. The warehouse
    is filled first, by a server of this process on the folder the stack's warehouse then opens (the
    stack's merger alone merges once it runs: a second MERGE beside it would race it)."""
    from django.conf import settings

    from ingest_workers.management.commands.generate_traffic import wait_for_portal

    portal_ready()
    database = settings.SNOWFLAKE["database"]
    port = free_port()
    proc = embedded_server_start(VAR / "warehouse", port, log_path=VAR / "warehouse-fill.log")
    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "port": port, "host": "127.0.0.1", "protocol": "http"}
    try:
        conn = warehouse_connect()
        warehouse_ensure(conn)
        setup = warehouse_fill(conn, database, args.events, args.seed_events)
        conn.close()
    finally:
        embedded_server_stop(proc)
    stack, url = stack_start()
    try:
        settings.SNOWFLAKE = {**settings.SNOWFLAKE, "port": int(os.environ["SNOWFLAKE_PORT"])}
        settings.AWS_ENDPOINT_URL = os.environ["AWS_ENDPOINT_URL"]
        wait_for_portal(url, timeout=240)
        time.sleep(3)
        traffic = LiveTraffic(url, args.e2e_rate)
        traffic.start()
        time.sleep(15)                      # the pipeline warm, before the cycle starts
        cycles = []
        started = time.time()
        while not cycles or time.time() - started < args.e2e_seconds:
            begin = time.time()
            cycle_s, runs = cycle_timed()
            cycles.append((begin, begin + cycle_s, runs))
        traffic.stop_sending.set()
        time.sleep(20)                      # what was sent lands (merges every few seconds)
        traffic.stop_polling.set()
        traffic.join(timeout=30)
        if traffic.error is not None:
            raise SystemExit(f"the live traffic failed: {traffic.error!r}")
        during = sorted(x for begin, end, _ in cycles for x in traffic.latencies((begin, end)))
        before = traffic.latencies((started - 15, started))
        p50, p99 = quantiles(during)
        return {"cycle_s": cycles[0][1] - cycles[0][0], "runs": cycles[0][2], "setup": setup,
                "e2e": {"quality_e2e_latency_p50_s": p50, "quality_e2e_latency_p99_s": p99,
                        "quality_e2e_events_during_cycles": len(during), "quality_e2e_cycles": len(cycles),
                        "quality_cycle_under_load_s": [round(end - begin, 2) for begin, end, _ in cycles],
                        "quality_e2e_latency_p99_before_s": quantiles(before)[1],
                        "quality_e2e_rate": args.e2e_rate}}
    finally:
        stack_stop(stack)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed-events", type=int, default=20_000)
    parser.add_argument("--with-e2e", action="store_true",
                        help="inside the live embedded stack, with traffic through it; reports its e2e p99")
    parser.add_argument("--e2e-rate", type=float, default=100.0, help="events/s sent during --with-e2e")
    parser.add_argument("--e2e-seconds", type=float, default=60.0,
                        help="keep running cycles (with the traffic) for at least this long")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.events % args.seed_events:
        parser.error("--events must be a multiple of --seed-events")
    out = run_with_e2e(args) if args.with_e2e else run_alone(args)
    runs, cycle_s = out["runs"], out["cycle_s"]
    tables = {r.table: {"s": round((r.duration_ms or 0) / 1000, 2), "status": r.status, "passed": r.passed,
                        "failed": r.failed, "errors": r.errors,
                        "not_passed": sorted(r.results.exclude(outcome="passed").values_list("check_key", flat=True))}
              for r in runs}
    result = {
        "quality_cycle_s": round(cycle_s, 2),
        "quality_cycle_goal_met": cycle_s < GOAL_S and all(r.status == "done" for r in runs),
        "quality_canonical_events": out["setup"].pop("events"),
        **out.get("e2e", {}),
        "quality_setup": out["setup"],
        "quality_tables": tables,
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0 if result["quality_cycle_goal_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
