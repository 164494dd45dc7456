# ruff: noqa: S608 - table and column names come from the DDL module; no value is interpolated
"""deletion_seconds: erasing one person from an embedded warehouse of 1,000,000 events (the warehouse steps).

    .venv/bin/python bench/bench_deletion.py [--events 1000000] [--seed-events 10000] [--json]

Lands ``--seed-events`` sample events (warehouse/analytics_sample.py: people on web, iOS, Android, Slack,
voice and the LLM gateway) through the real landing, MERGE and models run, then copies every warehouse table
in bulk SQL (one INSERT … SELECT per table) until CANONICAL.EVENTS holds ``--events`` events: each copy's
identifiers, persons, sessions and event ids get a suffix, so each copy is other people. Then it erases the
seed's person with the most platforms: identity expansion from one of their identifiers, and every step of
``deletion.warehouse_erasure.warehouse_steps()``; ``deletion_seconds`` is the sum (goal: under 300 s for the
whole erasure, the archive's shredding included). Checks that every step verified 0 remaining.
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
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("CHATORBIT_VAR_DIR", tempfile.mkdtemp(prefix="bench-deletion-"))

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
DATABASE = "BENCH_DELETION"
#: columns whose values name a person, an event or a session: suffixed per copy so each copy is other people
KEY_COLUMNS = frozenset({
    "EVENT_ID", "SESSION_ID", "CONVERSATION_ID", "MESSAGE_ID", "ANONYMOUS_ID", "PLATFORM_USER_ID", "DEVICE_ID",
    "EMAIL_SHA256", "PERSON_ID", "SESSION_KEY", "SOURCE_SESSION_KEY", "PRIMARY_ID_KEY", "ID_KEY", "ID_VALUE",
    "LINK_GROUP", "OBSERVATION_KEY", "MERGE_KEY", "FEEDBACK_EVENT_ID", "ANCHOR_ID_KEY", "PERSON_ANCHOR",
    "MERGED_ANCHOR", "FIRST_EVENT_ID", "RATED_MESSAGE_EVENT_ID", "COPY_KEYS", "PREVIOUS_ANONYMOUS_ID",
})


def copy_tables(conn, copies: int) -> dict[str, float]:
    from warehouse.analytics_ddl import (
        CONVERSATION_SESSIONS,
        EVENT_FACTS,
        IDENTITY_TABLES,
        USER_FEEDBACK,
        USER_JOURNEYS,
    )
    from warehouse.ddl import CANONICAL_EVENTS, LANDING_EVENTS

    took = {}
    db = conn.database
    for table in (LANDING_EVENTS, CANONICAL_EVENTS, EVENT_FACTS, *IDENTITY_TABLES, CONVERSATION_SESSIONS,
                  USER_FEEDBACK, USER_JOURNEYS):
        cols = table.column_names
        exprs = [f"t.{c} || '~' || g.value::VARCHAR" if c in KEY_COLUMNS else f"t.{c}" for c in cols]
        started = time.perf_counter()
        warehouse_query(conn, f"INSERT INTO {db}.{table.schema}.{table.name} ({', '.join(cols)}) "
                              f"SELECT {', '.join(exprs)} FROM {db}.{table.schema}.{table.name} t, "
                              f"TABLE(FLATTEN(INPUT => ARRAY_GENERATE_RANGE(1, {copies}))) g")
        took[f"{table.schema}.{table.name}"] = round(time.perf_counter() - started, 1)
        print(f"  copied {table.schema}.{table.name} ×{copies} in {took[f'{table.schema}.{table.name}']} s",
              file=sys.stderr, flush=True)
    return took


def subject_identifier(conn):
    """An identifier of the seed's person seen on the most platforms (their e-mail hash when they have one)."""
    from deletion.erasure_types import Identifier, IdentifierKind

    db = conn.database
    [row] = warehouse_query(conn, f"""
        SELECT i.PERSON_ID, COUNT(DISTINCT e.PLATFORM) AS PLATFORMS,
          MAX(CASE WHEN i.ID_KIND = 'email_sha256' THEN i.ID_VALUE END) AS EMAIL_SHA256,
          MAX(i.ID_KIND || ':' || i.ID_VALUE) AS ANY_KEY
        FROM {db}.IDENTITY.IDENTIFIERS i
        JOIN {db}.CANONICAL.EVENTS e ON (i.ID_KIND = 'email_sha256' AND e.EMAIL_SHA256 = i.ID_VALUE)
          OR (i.ID_KIND = 'platform_user_id' AND e.PLATFORM_USER_ID = i.ID_VALUE)
        WHERE i.PERSON_ID NOT LIKE '%~%'
        GROUP BY i.PERSON_ID ORDER BY PLATFORMS DESC, i.PERSON_ID LIMIT 1""")
    if row["EMAIL_SHA256"]:
        return Identifier(IdentifierKind.EMAIL_SHA256, row["EMAIL_SHA256"]), row
    kind, _, value = row["ANY_KEY"].partition(":")
    return Identifier(IdentifierKind(kind), value), row


def main() -> int:  # noqa: C901 - a linear script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed-events", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from django.conf import settings

    from deletion.erasure_types import ErasureSubject
    from deletion.identity_expansion import HoldLimits, expand_identifiers
    from deletion.warehouse_erasure import curated_erase, warehouse_steps

    tmp = Path(tempfile.mkdtemp(prefix="bench-deletion-wh-"))
    port = free_port()
    proc = embedded_server_start(tmp / "data", port, log_path=tmp / "server.log")
    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "port": port, "host": "127.0.0.1", "protocol": "http",
                          "database": DATABASE}
    conn = None
    try:
        conn = warehouse_connect(database=DATABASE)
        warehouse_ensure(conn)
        seed = list(itertools.islice(sample_events(people=args.seed_events // 40 + 1, days=DAYS, seed=5,
                                                   start_us=START_US), args.seed_events))
        started = time.perf_counter()
        for n in range(0, len(seed), 10_000):
            landing_append(conn, channel="bench-seed", offset_token=str(time.time_ns()),
                           rows=landing_rows_json(orjson.dumps(seed[n:n + 10_000])), batch_id=f"seed-{n}")
        merge_channels(conn, window_days=3650)
        report = models_run(conn, prices=sample_prices(START_US, DAYS))
        if not report.ok:
            raise SystemExit(f"model run failed: {[(m.name, m.error) for m in report.models if m.error]}")
        seed_s = time.perf_counter() - started
        copies = max(1, -(-args.events // len(seed)))
        print(f"seeded {len(seed):,} events in {seed_s:.1f} s; copying ×{copies} …", file=sys.stderr, flush=True)
        copy_s = copy_tables(conn, copies)
        [count] = warehouse_query(conn, f"SELECT COUNT(*) AS N FROM {DATABASE}.CANONICAL.EVENTS")

        identifier, person = subject_identifier(conn)
        timings: dict[str, float] = {}
        started = time.perf_counter()
        expansion = expand_identifiers([identifier], conn=conn, limits=HoldLimits(person_identifiers=1000))
        timings["expansion"] = time.perf_counter() - started
        subject = ErasureSubject("BENCH", tuple(li.identifier for li in expansion.linked),
                                 tuple(sorted({li.person_id for li in expansion.linked if li.person_id})))
        results = {}
        for step in warehouse_steps(database=DATABASE):
            started = time.perf_counter()
            if step.name == "warehouse.curated":   # no model run competes here; no portal database needed
                result = curated_erase(subject, database=DATABASE, use_lease=False)
            else:
                result = step.run(subject)
            timings[step.name] = time.perf_counter() - started
            results[step.name] = {"removed": result.removed, "remaining": result.remaining}
            print(f"  {step.name}: removed {result.removed} in {timings[step.name]:.1f} s", file=sys.stderr,
                  flush=True)
        total = sum(timings.values())
        ok = all(r["remaining"] == 0 for r in results.values())
        out = {
            "deletion_seconds": round(total, 2), "deletion_events": int(count["N"]),
            "deletion_subject_platforms": int(person["PLATFORMS"]), "deletion_identifiers": len(expansion.linked),
            "deletion_steps_s": {k: round(v, 2) for k, v in timings.items()}, "deletion_steps": results,
            "deletion_setup_s": {"seed": round(seed_s, 1), **copy_s}, "deletion_verified": ok,
        }
        if args.json:
            print(json.dumps(out))
        else:
            print(json.dumps(out, indent=2))
        return 0 if ok else 1
    finally:
        if conn is not None:
            conn.close()   # while the server still answers
        embedded_server_stop(proc)


if __name__ == "__main__":
    raise SystemExit(main())
