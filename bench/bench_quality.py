"""quality_cycle_s: one full data-quality check cycle on the embedded warehouse, CANONICAL.EVENTS holding
1,000,000 events and every curated table built from them.

    .venv/bin/python bench/bench_quality.py [--events 1000000] [--seed-events 20000] [--json]

Lands ``--seed-events`` sample events (warehouse/analytics_sample.py: people across the six platforms over
30 days) through the real landing and MERGE, then multiplies them inside the warehouse to ``--events``
with one INSERT … SELECT (each copy gets its own event, person, session, conversation and message ids,
so the curated tables grow with it), rebuilds the curated models from all of them, and times what the
scheduler runs every cycle: ``quality.services.quality_run()`` over every covered table (the generated
Soda contracts verified by Soda Core through the connector, failed-row samples read and masked, results
stored in a SQLite portal). Goal: under 60 s.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
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


def multiply(conn, factor: int) -> float:
    """CANONICAL.EVENTS × ``factor`` inside the warehouse: copy k of a row suffixes its ids with ~k."""
    started = time.perf_counter()
    columns = [c.name for c in CANONICAL_EVENTS.columns]
    exprs = [f"{c} || '~' || CAST(k.K AS VARCHAR)" if c in COPIED_IDS else c for c in columns]
    table = f"{DATABASE}.CANONICAL.EVENTS"
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed-events", type=int, default=20_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.events % args.seed_events:
        parser.error("--events must be a multiple of --seed-events")

    from django.conf import settings

    from quality.services import quality_run

    portal_ready()
    port = free_port()
    proc = embedded_server_start(VAR / "warehouse", port, log_path=VAR / "warehouse.log")
    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "port": port, "host": "127.0.0.1", "protocol": "http",
                          "database": DATABASE}
    try:
        conn = warehouse_connect(database=DATABASE)
        warehouse_ensure(conn)
        seed = list(itertools.islice(sample_events(people=args.seed_events // 40, days=DAYS, seed=SEED,
                                                   start_us=START_US), args.seed_events))
        if len(seed) < args.seed_events:
            raise SystemExit(f"the sample gave {len(seed)} events, fewer than --seed-events")
        print(f"landing {len(seed):,} seed events …", file=sys.stderr, flush=True)
        land_s = land(conn, seed)
        print(f"multiplying to {args.events:,} …", file=sys.stderr, flush=True)
        multiply_s = multiply(conn, args.events // args.seed_events)
        [row] = warehouse_query(conn, f"SELECT COUNT(*) AS N FROM {DATABASE}.CANONICAL.EVENTS")  # noqa: S608
        events = int(row["N"])
        print("building the curated tables …", file=sys.stderr, flush=True)
        started = time.perf_counter()
        report = models_run(conn, full_refresh=True, prices=sample_prices(START_US, DAYS))
        models_s = time.perf_counter() - started
        if not report.ok:
            raise SystemExit(f"model run failed: {[(m.name, m.error) for m in report.models if m.error]}")
        curated = {m.name: m.rows_changed for m in report.models}
        conn.close()
        print("one quality cycle …", file=sys.stderr, flush=True)
        started = time.perf_counter()
        runs = quality_run()
        cycle_s = time.perf_counter() - started
    finally:
        embedded_server_stop(proc)
    tables = {r.table: {"s": round((r.duration_ms or 0) / 1000, 2), "status": r.status, "passed": r.passed,
                        "failed": r.failed, "errors": r.errors} for r in runs}
    result = {
        "quality_cycle_s": round(cycle_s, 2),
        "quality_cycle_goal_met": cycle_s < GOAL_S and all(r.status == "done" for r in runs),
        "quality_canonical_events": events,
        "quality_setup": {"land_seed_s": round(land_s, 1), "multiply_s": round(multiply_s, 1),
                          "models_rebuild_s": round(models_s, 1), "curated_rows": curated},
        "quality_tables": tables,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    return 0 if result["quality_cycle_goal_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
