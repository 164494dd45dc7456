# ruff: noqa: S608 - table and column names come from the DDL module; no value is interpolated
"""deletion_seconds: erasing one person from an embedded warehouse of 1,000,000 events and the archive behind it.

    .venv/bin/python bench/bench_deletion.py [--events 1000000] [--seed-events 10000] [--json]

Lands ``--seed-events`` sample events (warehouse/analytics_sample.py: people on web, iOS, Android, Slack,
voice and the LLM gateway) through the real landing, MERGE and models run, then copies every warehouse table
in bulk SQL (one INSERT … SELECT per table) until CANONICAL.EVENTS holds ``--events`` events: each copy's
identifiers, persons, sessions and event ids get a suffix, so each copy is other people. The raw archive
behind it: the seed's records written through the consumer's own ``ShardArchive`` and the keyring's sealer
(each line encrypted under its subjects' data keys, the person's among them), and a data key for every
identifier of the 1,000,000 events (so the key table has the size it would have).

Then it erases the seed's person with the most platforms the way a privacy officer does: a ticket is filed
(identity expansion from one of their identifiers) and confirmed, and the ticket's job runs every configured
step (``DELETION_STEP_PROVIDERS``: suppression and crypto-shredding of the archive, the five warehouse steps,
the platform stores) in this process, as the ``deletion`` worker runs it (``ticket_execute``).
``deletion_seconds`` is expansion + the job (goal: under 300 s). Checks that every step verified 0 remaining
and that the person's archived lines no longer decrypt while the others still do.
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
VAR = Path(tempfile.mkdtemp(prefix="bench-deletion-"))
for _name in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL"):
    os.environ.pop(_name, None)
os.environ.update(CHATORBIT_VAR_DIR=str(VAR), DATABASE_URL=f"sqlite:///{VAR / 'portal.sqlite3'}", DEBUG="1",
                  LOG_LEVEL="WARNING", ARCHIVE_ENCRYPTION="local", RAW_ARCHIVE_URL=f"file://{VAR / 'archive'}",
                  SNOWFLAKE_DATABASE="BENCH_DELETION")

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
    "MERGED_ANCHOR", "FIRST_EVENT_ID", "RATED_MESSAGE_EVENT_ID", "PREVIOUS_ANONYMOUS_ID",
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


SHARD = "shardId-000000000000"


def archive_write(events: list[dict]) -> dict:
    """The seed's records in the archive as the consumer writes them: placed in hourly objects, each line
    encrypted under the data keys of its event's identifiers (its conversation's key for an event without
    any, ``unattributed`` day keys for the others)."""
    from django.conf import settings

    from deletion.subject_keys import archive_keyring
    from ingest_workers.archive import ShardArchive, archive_put_new
    from ingest_workers.archive_crypto import records_subjects
    from ingest_workers.pipeline import RawRecord

    records, lineaged = [], []
    for n, event in enumerate(sorted(events, key=lambda e: e["event_time"]), start=1):
        seq = f"{n:021d}"
        arrival = _micros(event["event_time"])
        records.append(RawRecord(SHARD, seq, orjson.dumps(event), arrival))
        lineaged.append({**event, "lineage": {"sequence_number": seq}})
    subjects = records_subjects(lineaged)
    keyring = archive_keyring()
    keyring.refresh()
    shard = ShardArchive(base_uri=settings.RAW_ARCHIVE_URL, roll_seconds=3600, roll_bytes=64 << 20,
                         existing=lambda key: None)
    out = {"lines": len(records), "objects": 0, "subjects": {}}
    for start in range(0, len(records), 5_000):   # units of the consumer's size
        unit = records[start:start + 5_000]
        for record, location in zip(unit, shard.place(unit), strict=True):
            out["subjects"][location] = subjects.get(record.sequence_number, ())
        shard.append(sealer=keyring.sealer(unit, subjects, set()))
    shard.roll()
    for sealed in shard.take_sealed():
        archive_put_new(sealed.key, sealed.blob)
        out["objects"] += 1
    return out


def _micros(value) -> int:
    import datetime as dt

    if isinstance(value, int | float):
        return int(value)
    return int(dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1_000_000)


def keys_for_every_identifier(conn) -> int:
    """A data key for every identifier of every event (what the archive of all of them would hold)."""
    from deletion.subject_keys import archive_keyring

    db = conn.database
    keyring = archive_keyring()
    subjects = [r["K"] for r in warehouse_query(conn, " UNION ".join(
        f"SELECT DISTINCT '{kind}:' || {kind.upper()} AS K FROM {db}.CANONICAL.EVENTS WHERE {kind.upper()} IS NOT NULL"
        for kind in ("anonymous_id", "platform_user_id", "device_id", "email_sha256")))]
    for start in range(0, len(subjects), 10_000):
        keyring.subject_keys(subjects[start:start + 10_000])
    return len(subjects)


def archive_subjects_of(conn, person_id: str) -> set[str]:
    db = conn.database
    return {r["ID_KEY"] for r in warehouse_query(
        conn, f"SELECT ID_KEY FROM {db}.IDENTITY.IDENTIFIERS WHERE PERSON_ID = %(p)s", {"p": person_id})}


def person_archive_subjects(conn, person_id: str) -> set[str]:
    """The person's identifiers and their conversations (the subjects of their lines without identifiers), as
    the erasure's conversation step finds them."""
    from deletion.erasure_types import ErasureSubject, Identifier, IdentifierKind
    from deletion.warehouse_erasure import subject_conversations
    from ingest_workers.archive_crypto import conversation_subject

    id_keys = archive_subjects_of(conn, person_id)
    subject = ErasureSubject("bench", tuple(Identifier(IdentifierKind(k.split(":", 1)[0]), k.split(":", 1)[1])
                                            for k in sorted(id_keys)), (person_id,))
    conversations = {conversation_subject(*row) for row in subject_conversations(subject, database=conn.database)}
    return id_keys | (conversations - {None})


def archive_check(archive: dict, person_lines: list) -> tuple[int, int]:
    """(the person's lines that no longer decrypt, the other lines that still do), read by a fresh reader."""
    from deletion.subject_keys import archive_keyrings_forget
    from ingest_workers.archive import ArchiveReader

    archive_keyrings_forget()
    reader = ArchiveReader()
    person = set(person_lines)
    unreadable = readable = 0
    for uri in sorted({uri for uri, _ in archive["subjects"]}):
        before = reader.shredded
        lines = reader.object_lines(uri)
        readable += sum(1 for offset, _ in lines if (uri, offset) not in person)
        unreadable += reader.shredded - before
    return unreadable, readable


def ticket_run(identifier) -> tuple[dict[str, float], dict[str, dict], list]:
    """File (with its expansion), confirm and run the ticket's job; the time of the expansion and of each
    step as the job recorded them."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from deletion import services
    from deletion.models import DeletionStep
    from portal.roles import Role
    from portal.services import role_groups_ensure

    groups = role_groups_ensure()
    officer = get_user_model().objects.create_user("bench-privacy", password="unused-bench-password")
    officer.groups.add(groups[Role.PRIVACY])
    services._enqueue = lambda ticket_id: None   # the job runs below, in this process, as the worker runs it
    started = time.perf_counter()
    ticket = services.ticket_file(actor=officer, regulation="gdpr", requester_reference="BENCH",
                                  identifiers=[identifier], received_at=timezone.now())
    timings = {"expansion": time.perf_counter() - started}
    if ticket.status == "held":   # a large group: a second officer reviews it, as the portal requires
        reviewer = get_user_model().objects.create_user("bench-privacy-2", password="unused-bench-password")
        reviewer.groups.add(groups[Role.PRIVACY])
        ticket = services.ticket_review_approve(actor=reviewer, ticket=ticket)
    if ticket.expansion_error:
        raise SystemExit(f"expansion failed: {ticket.expansion_error}")
    services.ticket_confirm(actor=officer, ticket=ticket)
    started = time.perf_counter()
    outcome = services.ticket_execute(ticket_id=ticket.pk, worker_id="bench")
    timings["job"] = time.perf_counter() - started
    ticket.refresh_from_db()
    if ticket.status != "done":
        raise SystemExit(f"the job ended {outcome}: {ticket.error}")
    results = {}
    for step in DeletionStep.objects.filter(ticket=ticket).order_by("position"):
        timings[step.name] = (step.finished_at - step.started_at).total_seconds()
        results[step.name] = {"removed": step.result.get("removed"), "remaining": step.result.get("remaining")}
        print(f"  {step.name}: removed {step.result.get('removed')} in {timings[step.name]:.1f} s",
              file=sys.stderr, flush=True)
    return timings, results, ticket.expansion


def main() -> int:  # noqa: C901 - a linear script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed-events", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
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

        started = time.perf_counter()
        archive = archive_write(seed)
        keys = keys_for_every_identifier(conn)
        archive_s = time.perf_counter() - started
        print(f"archive: {archive['lines']:,} encrypted lines in {archive['objects']} objects, {keys:,} data keys "
              f"in {archive_s:.1f} s", file=sys.stderr, flush=True)

        identifier, person = subject_identifier(conn)
        of_person = person_archive_subjects(conn, person["PERSON_ID"])
        person_lines = [loc for loc, subjects in archive["subjects"].items() if set(subjects) & of_person]
        timings, results, expansion = ticket_run(identifier)
        total = timings["expansion"] + timings["job"]
        unreadable, readable = archive_check(archive, person_lines)
        ok = all(r["remaining"] == 0 for r in results.values()) and unreadable == len(person_lines) > 0 \
            and readable == archive["lines"] - len(person_lines)
        out = {
            "deletion_seconds": round(total, 2), "deletion_events": int(count["N"]),
            "deletion_subject_platforms": int(person["PLATFORMS"]), "deletion_identifiers": len(expansion),
            "deletion_steps_s": {k: round(v, 2) for k, v in timings.items()}, "deletion_steps": results,
            "deletion_archive": {"lines": archive["lines"], "objects": archive["objects"], "data_keys": keys,
                                 "person_lines_unreadable": unreadable, "other_lines_readable": readable},
            "deletion_setup_s": {"seed": round(seed_s, 1), **copy_s, "archive": round(archive_s, 1)},
            "deletion_verified": ok,
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
