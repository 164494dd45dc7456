"""models_incremental_s and models_full_rebuild_s: the curated models on the embedded warehouse.

    .venv/bin/python bench/bench_models.py [--events 1000000] [--new 10000] [--rounds 3] [--json]
                                           [--snapshot DIR]

Lands canonical events (warehouse/analytics_sample.py: people across web, iOS, Android, Slack,
voice and the LLM gateway over 30 days) through the real landing and MERGE and runs the models
once. Then, ``--rounds`` times, lands ``--new`` more events (nine tenths new people on the last
day, one tenth late events of people already landed) and times one incremental run; the base is
sized so that the last round ends at ``--events`` + ``--new`` (1,010,000). ``models_incremental_s``
is the mean of the rounds: the embedded engine checkpoints its write-ahead log every few runs, and
one run alone may or may not pay for it. Then it times a full rebuild of all the events
(``models_full_rebuild_s``). Goal: the incremental run at most a tenth of the rebuild. Also checks
that the rebuild gives the same tables as the incremental runs (row counts and sums).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("CHATORBIT_VAR_DIR", tempfile.mkdtemp(prefix="bench-models-"))

import django  # noqa: E402

django.setup()

import orjson  # noqa: E402

from warehouse.analytics_sample import sample_events, sample_prices  # noqa: E402
from warehouse.connection import warehouse_connect  # noqa: E402
from warehouse.ddl import warehouse_ensure  # noqa: E402
from warehouse.embedded import embedded_server_start, embedded_server_stop, free_port  # noqa: E402
from warehouse.landing import landing_append, landing_rows_json, merge_channels  # noqa: E402
from warehouse.load import warehouse_query  # noqa: E402
from warehouse.modeling.runner import models_run  # noqa: E402

START_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
DAYS = 30
SEED = 11
BATCH = 10_000
EVENTS_PER_PERSON = 82  # what the sample generator averages over 30 days (measured)

CHECKS = {
    "CONVERSATION_SESSIONS": "COUNT(*), SUM(EVENT_COUNT), SUM(USER_MESSAGES), SUM(CAST(COST_USD AS NUMBER(18,12))), "
                             "COUNT(DISTINCT PERSON_ID), SUM(FIRST_RESPONSE_LATENCY_MS)",
    "TOKEN_COST_USAGE": "COUNT(*), SUM(REQUESTS), SUM(INPUT_TOKENS), SUM(CAST(COST_USD AS NUMBER(18,12)))",
    "USER_FEEDBACK": "COUNT(*), SUM(SCORE), COUNT(MODEL)",
    "USER_JOURNEYS": "COUNT(*), SUM(PLATFORMS_SO_FAR), SUM(CASE WHEN PLATFORM_SWITCH THEN 1 ELSE 0 END)",
    "PLATFORM_ENGAGEMENT_DAILY": "COUNT(*), SUM(ACTIVE_PEOPLE), SUM(NEW_PEOPLE), SUM(D1_RETAINED), "
                                 "SUM(D7_RETAINED)",
}


#: the generated events are dated in the past: a dedup window reaching back to them
MERGE_WINDOW_DAYS = 3650


def land(conn, events, label: str) -> tuple[int, float]:
    started = time.perf_counter()
    total = 0
    for n, chunk in enumerate(_chunks(events, BATCH)):
        # a fresh, growing token per append: the same label may land again on a later run
        landing_append(conn, channel=f"bench-{label}", offset_token=str(time.time_ns()),
                       rows=landing_rows_json(orjson.dumps(chunk)), batch_id=f"{label}-{n}")
        total += len(chunk)
        if n % 10 == 9:
            merge_channels(conn, window_days=MERGE_WINDOW_DAYS)
            print(f"  landed {total:,} events", file=sys.stderr, flush=True)
    merge_channels(conn, window_days=MERGE_WINDOW_DAYS)
    return total, time.perf_counter() - started


def _chunks(iterable, size):
    it = iter(iterable)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def checksums(conn) -> dict:
    out = {}
    for table, exprs in CHECKS.items():
        [row] = warehouse_query(conn, f"SELECT {exprs} FROM {conn.database}.ANALYTICS.{table}")  # noqa: S608
        out[table] = [str(v) for v in row.values()]
    return out


def timed_run(conn, prices, **kwargs) -> tuple[float, dict]:
    started = time.perf_counter()
    report = models_run(conn, prices=prices, **kwargs)
    seconds = time.perf_counter() - started
    if not report.ok:
        raise SystemExit(f"model run failed: {[(m.name, m.error) for m in report.models if m.error]}")
    return seconds, {m.name: {"ms": m.duration_ms, "rows": m.rows_changed, **m.detail} for m in report.models}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--new", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--snapshot", type=Path, default=None,
                        help="keep the warehouse as it is just before the incremental run in this folder, "
                             "and start from it next time (same --events and --new): for tuning the models "
                             "without landing a million events each time")
    args = parser.parse_args()

    from django.conf import settings

    tmp = Path(tempfile.mkdtemp(prefix="bench-models-wh-"))
    port = free_port()
    proc = embedded_server_start(tmp / "data", port, log_path=tmp / "server.log")
    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "port": port, "host": "127.0.0.1", "protocol": "http"}
    try:
        prices = sample_prices(START_US, DAYS)
        tag = f"{args.events}-{args.new}-{args.rounds}"
        snapshot_db = args.snapshot / f"BENCH_MODELS-{tag}.db" if args.snapshot else None
        snapshot_rounds = args.snapshot / f"rounds-{tag}.json" if args.snapshot else None
        if snapshot_db is not None and snapshot_db.exists() and snapshot_rounds.exists():
            embedded_server_stop(proc)
            _copy_database(snapshot_db, tmp / "data" / "BENCH_MODELS.db")
            proc = embedded_server_start(tmp / "data", port, log_path=tmp / "server.log")
            print(f"started from the snapshot {snapshot_db}", file=sys.stderr, flush=True)
            conn = warehouse_connect(database="BENCH_MODELS")
            rounds = orjson.loads(snapshot_rounds.read_bytes())
            result = measure(conn, prices, rounds, landed=None, land_s=None, first_s=None)
            return report(result, args.json)
        conn = warehouse_connect(database="BENCH_MODELS")
        warehouse_ensure(conn)
        base, rounds = datasets(args.events, args.new, args.rounds)
        print(f"landing {len(base):,} events …", file=sys.stderr, flush=True)
        landed, land_s = land(conn, base, "base")
        print("first model run …", file=sys.stderr, flush=True)
        first_s, _ = timed_run(conn, prices)
        if snapshot_db is not None:
            conn.close()
            embedded_server_stop(proc)
            args.snapshot.mkdir(parents=True, exist_ok=True)
            _copy_database(tmp / "data" / "BENCH_MODELS.db", snapshot_db)
            snapshot_rounds.write_bytes(orjson.dumps(rounds))
            proc = embedded_server_start(tmp / "data", port, log_path=tmp / "server.log")
            conn = warehouse_connect(database="BENCH_MODELS")
        result = measure(conn, prices, rounds, landed=landed, land_s=land_s, first_s=first_s)
    finally:
        embedded_server_stop(proc)
    return report(result, args.json)


def datasets(events: int, new: int, rounds: int) -> tuple[list[dict], list[list[dict]]]:
    """The base events, and each round's new events. A round is what arrives between two runs:
    nine tenths new people's activity on the last day, one tenth late: the last people's events of
    the last two days, held back like a mobile app that comes back online (they fix those people's
    sessions and days)."""
    late = new // 10
    base_size = events - (rounds - 1) * new
    people = events // EVENTS_PER_PERSON + 1
    stream = sample_events(people=people * 2, days=DAYS, seed=SEED, start_us=START_US)
    generated = list(itertools.islice(stream, base_size + rounds * late))
    late_from = START_US + (DAYS - 2) * 86_400_000_000
    recent_events = generated[base_size - 5 * rounds * new:]
    held = [e for e in recent_events if e["event_time"] >= late_from][-(rounds * late):]
    held_ids = {e["event_id"] for e in held}
    base = [e for e in generated if e["event_id"] not in held_ids][:base_size]
    today = START_US + (DAYS - 1) * 86_400_000_000
    recent = sample_events(people=rounds * new, days=1, seed=SEED + 1, start_us=today)
    fresh_people = list(itertools.islice(recent, rounds * (new - late)))
    return base, [held[i * late:(i + 1) * late] + fresh_people[i * (new - late):(i + 1) * (new - late)]
                  for i in range(rounds)]


def measure(conn, prices, rounds: list[list[dict]], *, landed: int | None, land_s: float | None,
            first_s: float | None) -> dict:
    """Time one incremental run after each round's events land, then a full rebuild, and compare
    the tables they leave."""
    runs = []
    for n, fresh in enumerate(rounds, 1):
        print(f"round {n}: landing {len(fresh):,} new events, incremental run …", file=sys.stderr, flush=True)
        land(conn, fresh, f"new-{n}")
        seconds, models = timed_run(conn, prices)
        runs.append({"s": round(seconds, 3), "new_events": len(fresh), "models": models})
    incremental_s = sum(r["s"] for r in runs) / len(runs)
    incremental = runs[-1]["models"]
    after_incremental = checksums(conn)
    print("full rebuild …", file=sys.stderr, flush=True)
    rebuild_s, rebuild = timed_run(conn, prices, full_refresh=True)
    after_rebuild = checksums(conn)
    [counts] = warehouse_query(conn, "SELECT COUNT(*) AS EVENTS FROM BENCH_MODELS.CANONICAL.EVENTS")
    ratio = incremental_s / rebuild_s if rebuild_s else None
    result = {
        "models_incremental_s": round(incremental_s, 2),
        "models_full_rebuild_s": round(rebuild_s, 2),
        "models_incremental_vs_rebuild": round(ratio, 3) if ratio is not None else None,
        "models_goal_met": bool(ratio is not None and ratio <= 0.1),
        "models_rebuild_equals_incremental": after_incremental == after_rebuild,
        "models_detail": {
            "events_total": counts["EVENTS"], "events_base": landed,
            "incremental_runs_s": [r["s"] for r in runs], "events_new_per_run": [r["new_events"] for r in runs],
            "landing_s": round(land_s, 1) if land_s else None,
            "first_run_s": round(first_s, 2) if first_s else None,
            "incremental_models_last_run": incremental, "rebuild_models": rebuild,
            "checksums_incremental": after_incremental, "checksums_rebuild": after_rebuild,
        },
    }
    return result


def _copy_database(source: Path, target: Path) -> None:
    """Copy a stopped server's DuckDB file, with its write-ahead log if one was left."""
    shutil.copyfile(source, target)
    wal = source.with_name(source.name + ".wal")
    if wal.exists():
        shutil.copyfile(wal, target.with_name(target.name + ".wal"))


def report(result: dict, as_json: bool) -> int:
    if as_json:
        print(json.dumps(result, default=str))
    else:
        print(json.dumps(result, indent=2, default=str))
    return 0 if result["models_goal_met"] and result["models_rebuild_equals_incremental"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
