"""dedup_exact: 1,000,000 events with 5% duplicates (some hours apart) and 10% out of order, through
the pure pipeline and the warehouse MERGE on the embedded warehouse (fakesnow's server).

    .venv/bin/python bench/bench_dedup.py [--events 1000000] [--merge-every BATCHES] [--json]

True only if every event_id appears exactly once in CANONICAL.EVENTS and the duplicate counts
match what was injected, event by event (histogram of DUPLICATE_COUNT, plus a 20,000-event sample
compared id by id).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("CHATORBIT_VAR_DIR", tempfile.mkdtemp(prefix="bench-dedup-"))

import django  # noqa: E402

django.setup()

from contracts.presets import demo_presets  # noqa: E402
from ingest_workers.envelope import envelope_encode  # noqa: E402
from ingest_workers.pipeline import ContractIndex, RawRecord, process_batch  # noqa: E402
from ingest_workers.traffic import TrafficGenerator, templates_from_preset  # noqa: E402
from warehouse.connection import warehouse_connect  # noqa: E402
from warehouse.ddl import warehouse_ensure  # noqa: E402
from warehouse.embedded import embedded_server_start, embedded_server_stop, free_port  # noqa: E402
from warehouse.landing import landing_append, landing_rows_json, merge_channels  # noqa: E402
from warehouse.load import warehouse_query  # noqa: E402

HOURS = 6 * 3600 * 1_000_000
BATCH = 1000


def index_from_presets() -> ContractIndex:
    sources = []
    for i, preset in enumerate(demo_presets()):
        sources.append({"source_id": str(i + 1), "name": preset["source"], "platform": preset["platform"],
                        "product": preset.get("product"), "active": True,
                        "contracts": [{"subject": c["subject"], "event": c["subject"].split(".", 1)[1],
                                       "versions": [{"version": n + 1, "schema": v["schema"], "mapping": v["mapping"]}
                                                    for n, v in enumerate(c["versions"])]}
                                      for c in preset["contracts"]]})
    return ContractIndex.build(sources)


def build_records(count: int) -> tuple[list, int]:
    """`count` unique raw records (each becomes one or more events), 10% of them out of order."""
    templates = [t for p in demo_presets() for t in templates_from_preset(p)]
    generator = TrafficGenerator(templates, seed=42, duplicate_fraction=0.0, out_of_order_fraction=0.10,
                                 late_fraction=0.0, malformed_fraction=0.0, min_bytes=900, max_bytes=2500)
    start = 1_772_400_000_000_000
    return list(generator.records(count, now_micros=start)), start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000, help="unique raw records (each ≥ 1 event)")
    parser.add_argument("--merge-every", type=int, default=0, metavar="BATCHES",
                        help="merge after every BATCHES landed batches of 1,000 (default 0: one merge at the end), "
                             "as the merger does while records flow: each merge then meets the events stored before")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rng = random.Random(7)  # noqa: S311 - benchmark data
    index = index_from_presets()
    t0 = time.monotonic()
    uniques, start = build_records(args.events)
    # Timeline: unique records spread over 6 hours; 5% of them re-sent 1–5 hours after the original.
    timeline = [(start + i * HOURS // len(uniques), i) for i in range(len(uniques))]
    dup_sources = rng.sample(range(len(uniques)), k=len(uniques) * 5 // 100)
    timeline += [(start + i * HOURS // len(uniques) + rng.randrange(3600, 5 * 3600) * 1_000_000, i)
                 for i in dup_sources]
    timeline.sort()
    generated_s = time.monotonic() - t0

    path = Path(tempfile.mkdtemp(prefix="bench-wh-"))
    port = free_port()
    proc = embedded_server_start(path / "data", port, log_path=path / "server.log")
    copies_by_id: collections.Counter = collections.Counter()
    try:
        conn = warehouse_connect(host="127.0.0.1", port=port, database="BENCH_DEDUP")
        warehouse_ensure(conn)
        t1 = time.monotonic()
        pipeline_s = merge_s = 0.0
        merges = 0
        inserted = 0

        def merge_now() -> None:
            nonlocal merge_s, merges, inserted
            t2 = time.monotonic()
            # the data is from 2026-03: a window reaching back to it, so every copy meets its event
            inserted += merge_channels(conn, window_days=3650).events_inserted
            merge_s += time.monotonic() - t2
            merges += 1

        for b in range(0, len(timeline), BATCH):
            chunk = timeline[b:b + BATCH]
            # Each copy is received when it is sent: a re-send hours later has its own receipt time.
            records = [RawRecord("shardId-000000000000", f"{b + k:020d}",
                                 envelope_encode(source=uniques[i].source, payload=uniques[i].payload,
                                                 received_at=at, contract=uniques[i].contract, channel="direct"),
                                 at) for k, (at, i) in enumerate(chunk)]
            p0 = time.perf_counter()
            result = process_batch(records, index, stream="bench", batch_id=f"bench/{b}",
                                   archive_locations=[("file:///bench", k) for k in range(len(records))],
                                   now_micros=chunk[-1][0])
            rows = result.landing_json()
            pipeline_s += time.perf_counter() - p0
            copies_by_id.update(result.event_ids)
            landing_append(conn, channel="bench-shardId-000000000000", offset_token=records[-1].sequence_number,
                           rows=landing_rows_json(rows, result.quarantine_json()), batch_id=f"bench/{b}")
            if args.merge_every and (b // BATCH + 1) % args.merge_every == 0:
                merge_now()
        merge_now()
        landed_s = time.monotonic() - t1 - merge_s
        expected_events = len(copies_by_id)
        expected_dups = sum(copies_by_id.values()) - expected_events
        expected_hist = collections.Counter(n - 1 for n in copies_by_id.values())
        got = warehouse_query(conn, "SELECT COUNT(*) AS N, COUNT(DISTINCT EVENT_ID) AS D, "
                                    "SUM(DUPLICATE_COUNT) AS S FROM CANONICAL.EVENTS")[0]
        hist_rows = warehouse_query(conn, "SELECT DUPLICATE_COUNT AS K, COUNT(*) AS N FROM CANONICAL.EVENTS "
                                          "GROUP BY 1")
        got_hist = collections.Counter({int(r["K"]): int(r["N"]) for r in hist_rows})
        sample = rng.sample(sorted(copies_by_id), k=min(20_000, expected_events))
        sample_rows = {}
        for s in range(0, len(sample), 2000):
            ids = sample[s:s + 2000]
            rows = warehouse_query(conn, "SELECT EVENT_ID, DUPLICATE_COUNT FROM CANONICAL.EVENTS WHERE EVENT_ID IN ("
                                   + ",".join(f"'{i}'" for i in ids) + ")")
            sample_rows.update({r["EVENT_ID"]: int(r["DUPLICATE_COUNT"]) for r in rows})
        sample_ok = all(sample_rows.get(i) == copies_by_id[i] - 1 for i in sample)
        conn.close()
    finally:
        embedded_server_stop(proc)
    exact = (int(got["N"]) == expected_events and int(got["D"]) == expected_events
             and int(got["S"] or 0) == expected_dups and got_hist == expected_hist and sample_ok)
    result = {
        "dedup_exact": exact, "dedup_events": expected_events, "dedup_records": len(timeline),
        "dedup_duplicates_injected": expected_dups, "dedup_duplicates_counted": int(got["S"] or 0),
        "dedup_out_of_order_fraction": 0.10, "dedup_generate_s": round(generated_s, 1),
        "dedup_pipeline_events_per_s": round(sum(copies_by_id.values()) / pipeline_s),
        "dedup_land_s": round(landed_s, 1), "dedup_merge_s": round(merge_s, 1), "dedup_merges": merges,
        "dedup_merge_inserted": inserted,
    }
    print(json.dumps(result, indent=None if args.json else 2))
    return 0 if exact else 1


if __name__ == "__main__":
    raise SystemExit(main())
