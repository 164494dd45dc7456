"""The merge beside the landing, on real parts (moto's Kinesis, the embedded warehouse server with
Snowflake's table locks, PostgreSQL leases): landing never waits for a merge (pipeline review C1), a
merge that meets another transaction's lock is retried, not given up (hostile-input sweep D5), a
merger killed inside its transaction does not wedge the next one (D1), and a consumer's units and a
merger's rounds each go through one warehouse session, not a login per batch (review H3, M9)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ingest_workers import services
from tests.ingest_workers.test_consumer import (
    assert_exactly_once,
    counts,
    expected_outcome,
    send_traffic,
)
from tests.warehouse.test_embedded_semantics import poll

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 60.0


def _qualified(table: str) -> str:
    from django.conf import settings

    return f"{settings.SNOWFLAKE['database']}.{table}"


def _run(conn, sql: str) -> list[tuple]:
    cur = conn.cursor()
    try:
        cur.execute(sql)
        return cur.fetchall() if cur.description else []
    finally:
        cur.close()


def _locks(conn, table: str, status: str) -> list[tuple]:
    """SHOW LOCKS rows of one table (``RAW.MERGE_PROGRESS``) with one status (HOLDING / WAITING)."""
    return [row for row in _run(conn, "SHOW LOCKS") if row[0] == _qualified(table) and row[4] == status]


def _land_everything(kinesis, stream: str) -> int:
    """Every shard read to its end and landed (not merged); returns the records read."""
    read = 0
    for lease in services.shard_sync(kinesis=kinesis, stream=stream):
        mine = services.shard_lease_acquire(stream=lease.stream, shard_id=lease.shard_id, owner="lander")
        assert mine is not None
        while outcome := services.shard_batch_process(kinesis=kinesis, lease=mine).read:
            read += outcome
        services.shard_lease_release(mine)
    return read


def _hold_the_merge_progress_lock():
    """A session holding RAW.MERGE_PROGRESS's table lock in an open transaction: the last table a merge
    locks (``merge_channels``), so a merge started now takes all its other locks, then waits here."""
    from warehouse.connection import warehouse_connect

    blocker = warehouse_connect()
    services.warehouse_ready(blocker)  # this test's database may have no tables yet
    _run(blocker, "BEGIN")
    _run(blocker, f"DELETE FROM {_qualified('RAW.MERGE_PROGRESS')} WHERE 1 = 0")  # noqa: S608 - test-made name
    return blocker


def _end(conn) -> None:
    """Roll back and close a test session, quietly: a failure here must not hide the test's own."""
    with contextlib.suppress(Exception):
        _run(conn, "ROLLBACK")
    with contextlib.suppress(Exception):
        conn.close()


def test_records_land_while_a_merge_holds_its_locks(ingest_env, kinesis):
    # review C1: every landing and every merge took the same table lock, so landing waited for merges
    import threading

    from warehouse.connection import warehouse_connect
    from warehouse.landing import merge_channels

    first = send_traffic(120, seed=41)
    _land_everything(kinesis, ingest_env.KINESIS_STREAM_NAME)
    blocker = _hold_the_merge_progress_lock()
    watcher = warehouse_connect()
    merged: dict = {}

    def merge():
        with warehouse_connect(workload="merge") as conn:
            merged["result"] = merge_channels(conn)

    merger = threading.Thread(target=merge, daemon=True)
    merger.start()
    try:
        # the merge is inside its transaction: it holds the event table and waits for the progress table
        poll(lambda: _locks(watcher, "RAW.MERGE_PROGRESS", "WAITING"), "the merge waits for RAW.MERGE_PROGRESS")
        assert _locks(watcher, "CANONICAL.EVENTS", "HOLDING")
        # meanwhile new records arrive and land: the consumer's INSERTs take no lock the merge holds
        second = send_traffic(80, seed=42)
        landed = _land_everything(kinesis, ingest_env.KINESIS_STREAM_NAME)
        assert landed == len(second)
        assert merger.is_alive() and _locks(watcher, "RAW.MERGE_PROGRESS", "WAITING")  # still mid-merge
        assert counts()["events"] == 0   # nothing merged yet: the landing did not wait for the merge to end
        _run(blocker, "ROLLBACK")        # the merge goes on
        merger.join(DEADLINE)
        assert not merger.is_alive()
    finally:
        _end(blocker)
        _end(watcher)
    # the merge took the ranges committed when it began; the next round takes the rest
    assert merged["result"].events_inserted == expected_outcome(first)["events"]
    services.warehouse_merge_run()
    assert_exactly_once(expected_outcome(first + second))


def test_a_merge_that_waits_out_its_lock_timeout_is_retried_and_the_drain_merges_everything(
        ingest_env, monkeypatch, caplog):
    # hostile-input sweep D5: a merge conflict (Snowflake's 625: a lock waited for longer than LOCK_TIMEOUT)
    # made pipeline_drain and the merge task give up
    from warehouse import connection

    records = send_traffic(150, seed=43)
    expected = expected_outcome(records)
    monkeypatch.setattr(connection, "LOCK_TIMEOUT", 1)  # each merge session waits 1 s for a lock, then 625
    services._merge_connection_drop()                   # the next merge session logs in with it
    blocker = _hold_the_merge_progress_lock()
    waits: list[float] = []

    def backoff(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:   # the other transaction ends after the merge's second failed attempt
            _run(blocker, "ROLLBACK")

    try:
        with caplog.at_level(logging.WARNING, logger="ingest_workers.services"):
            report = services.pipeline_drain(sleep=backoff)
    finally:
        _end(blocker)
    assert report.read == len(records)
    assert report.merged == expected["events"] and report.duplicates == expected["duplicates"]
    assert_exactly_once(expected)
    # two attempts failed with the lock conflict, each logged and backed off (about 1 s, then 2 s, with jitter)
    failed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("merge attempt")]
    assert len(failed) == 2 and all("LOCK_TIMEOUT (1 seconds)" in message for message in failed)
    assert len(waits) == 2 and 0.5 <= waits[0] <= 1.0 and 1.0 <= waits[1] <= 2.0


@pytest.mark.django_db(transaction=True)   # the consumer's heartbeat thread uses its own connection
def test_units_and_merge_rounds_each_go_through_one_warehouse_session(ingest_env, kinesis, monkeypatch):
    # review H3 and M9: a warehouse login per consumer task, merge and re-drive. Logins are counted where
    # every one of them happens, at the connector, by the workload each session tags its queries with
    import snowflake.connector

    from ingest_workers.consumer import ShardConsumer

    logins: list[str] = []
    real_connect = snowflake.connector.connect

    def connect_counted(**kwargs):
        logins.append((kwargs.get("session_parameters") or {}).get("QUERY_TAG", ""))
        return real_connect(**kwargs)

    monkeypatch.setattr(snowflake.connector, "connect", connect_counted)
    services._merge_connection_drop()
    records = send_traffic(240, seed=44)
    drained = services.pipeline_drain(max_records=20)        # units of 20 records: a dozen units or more
    more = send_traffic(120, seed=45)
    consumer = ShardConsumer(max_records=20)                 # the ingest pool's long-lived consumer
    consumed = consumer.run(max_seconds=120, until_idle=True)
    services.warehouse_merge_run()
    assert drained.read == len(records) and consumed.read == len(more)
    assert drained.batches >= 12 and consumed.units >= 6
    assert logins.count("chatorbit:ingest") == 1 and logins.count("chatorbit:merge") == 1
    assert_exactly_once(expected_outcome(records + more))


@pytest.fixture
def expiring_warehouse(ingest_env, tmp_path):
    """This test's own warehouse server, whose sessions expire after 2 s idle inside a transaction (the
    shared one waits 60 s, as the embedded default does)."""
    from warehouse.embedded import embedded_server_start, embedded_server_stop, free_port

    port = free_port()
    proc = embedded_server_start(tmp_path / "wh", port, log_path=tmp_path / "wh.log", session_idle_seconds=2)
    saved = ingest_env.SNOWFLAKE
    ingest_env.SNOWFLAKE = {**saved, "port": port, "database": f"T_{uuid.uuid4().hex[:12].upper()}"}
    try:
        yield port
    finally:
        services.landing_clients_close()
        services.merge_connections_close()
        ingest_env.SNOWFLAKE = saved
        embedded_server_stop(proc)


_KILLED_MERGER = """
import json, os, sys
sys.path.insert(0, os.environ["ROOT"])
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
import django
django.setup()
import snowflake.connector
from warehouse.landing import merge_channels
conn = snowflake.connector.connect(**json.loads(os.environ["MERGER_PARAMS"]))
merge_channels(conn)
print("merged", flush=True)
"""


def test_a_merger_killed_inside_its_merge_does_not_wedge_the_next_one(expiring_warehouse, ingest_env, kinesis,
                                                                       monkeypatch):
    # hostile-input sweep D1: a worker killed mid-merge left its session holding the tables, and every
    # merge failed for 9.5 minutes until the warehouse server restarted
    from warehouse import connection

    records = send_traffic(120, seed=46)
    _land_everything(kinesis, ingest_env.KINESIS_STREAM_NAME)
    blocker = _hold_the_merge_progress_lock()
    watcher = connection.warehouse_connect()
    params = connection.warehouse_params(workload="merge")
    merger = subprocess.Popen([sys.executable, "-c", _KILLED_MERGER], cwd=ROOT, stdout=subprocess.PIPE,
                              env={**os.environ, "ROOT": str(ROOT), "MERGER_PARAMS": json.dumps(params)})
    try:
        # the blocker runs a statement on every look, or this server would expire it after 2 s idle and
        # let the merger through before it is in place
        poll(lambda: _run(blocker, "SELECT 1") and _locks(watcher, "RAW.MERGE_PROGRESS", "WAITING"),
              "the merger waits for RAW.MERGE_PROGRESS")
        assert _locks(watcher, "CANONICAL.EVENTS", "HOLDING")   # inside its transaction, holding the table
        merger.send_signal(signal.SIGKILL)
        merger.wait(timeout=20)
        _run(blocker, "ROLLBACK")
        assert merger.returncode == -signal.SIGKILL and b"merged" not in merger.stdout.read()
        # a wedge would make every lock wait end in 625 after LOCK_TIMEOUT and the run give up at its deadline
        monkeypatch.setattr(connection, "LOCK_TIMEOUT", 10)
        services._merge_connection_drop()
        merged = services.warehouse_merge_run(max_seconds=45)
        assert merged["events_inserted"] == expected_outcome(records)["events"]
        assert_exactly_once(expected_outcome(records))
        assert not _locks(watcher, "CANONICAL.EVENTS", "HOLDING")   # the dead session's locks are gone
    finally:
        if merger.poll() is None:
            merger.kill()
            merger.wait(timeout=20)
        merger.stdout.close()
        _end(blocker)
        _end(watcher)
