"""The embedded warehouse server: persistence, failure modes, and the warehouse_query command."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
from django.core.management import CommandError, call_command

from tests.warehouse.factories import T0, as_json, canonical_event, land_and_merge
from warehouse.connection import (
    WarehouseQueryError,
    WarehouseUnavailable,
    warehouse_connect,
    warehouse_connection,
)
from warehouse.ddl import warehouse_ensure
from warehouse.embedded import embedded_server_start, embedded_server_stop, free_port
from warehouse.landing import landing_append, landing_rows_json, merge_channels
from warehouse.load import pipeline_counts, warehouse_query

ROOT = Path(__file__).resolve().parents[2]


def test_data_survives_a_server_restart(warehouse_server, tmp_path):
    port = free_port()
    server = embedded_server_start(tmp_path / "wh", port)
    try:
        with warehouse_connection(port=port, database="CHATORBIT") as conn:
            warehouse_ensure(conn)
            copies = [canonical_event("a", sequence_number="1", event_time=T0),
                      canonical_event("a", sequence_number="2", event_time=T0)]
            landing_append(conn, channel="c-0", offset_token="2", rows=landing_rows_json(as_json(copies)))
            merge_channels(conn, window_days=36500)
            landing_append(conn, channel="c-0", offset_token="3",
                           rows=landing_rows_json(as_json([canonical_event("b", sequence_number="3")])))
            before = pipeline_counts(conn)
    finally:
        assert embedded_server_stop(server) is not None
    assert (tmp_path / "wh" / "CHATORBIT.db").exists()

    server = embedded_server_start(tmp_path / "wh", port)
    try:
        with warehouse_connection(port=port, database="CHATORBIT") as conn:
            assert pipeline_counts(conn) == before == {**before, "events": 1, "duplicates": 1, "unmerged_rows": 1}
            # the channel state survived too: the committed token, and the pending row still merges
            from warehouse.landing import channel_committed_tokens

            assert channel_committed_tokens(conn) == {"c-0": "3"}
            assert merge_channels(conn, window_days=36500).events_inserted == 1
        # a client that names no database still sees it (every database file is attached at start)
        with warehouse_connection(port=port, database=None, schema=None) as conn:
            assert warehouse_query(conn, "SELECT COUNT(*) AS N FROM CHATORBIT.CANONICAL.EVENTS") == [{"N": 2}]
    finally:
        embedded_server_stop(server)


def test_an_unreachable_warehouse_raises_unavailable_quickly(warehouse_server):
    started = time.monotonic()
    with pytest.raises(WarehouseUnavailable) as err:
        warehouse_connect(port=free_port(), login_timeout=5)
    assert time.monotonic() - started < 20
    assert err.value.transient
    assert "could not be reached" in str(err.value)


# the connector's statement-timeout thread also fails to reach the vanished server, in the background
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
# The connector's statement timer (network_timeout) then tries, from its own thread, to cancel the
# statement on the stopped server: that failure is expected here, and waited for below so it is not
# reported against whichever test runs next.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_server_that_goes_away_mid_session_raises_unavailable(warehouse_server, tmp_path):
    port = free_port()
    server = embedded_server_start(tmp_path / "wh", port)
    conn = warehouse_connect(port=port, database="CHATORBIT", network_timeout=2)
    try:
        assert warehouse_query(conn, "SELECT 1 AS X") == [{"X": 1}]
        embedded_server_stop(server)
        started = time.monotonic()
        with pytest.raises(WarehouseUnavailable):
            landing_append(conn, channel="c-0", offset_token="1",
                           rows=landing_rows_json(as_json([canonical_event("a")])))
        assert time.monotonic() - started < 30
    finally:
        embedded_server_stop(server)
        conn.close()
        for thread in threading.enumerate():
            if type(thread).__name__ == "_TrackedQueryCancellationTimer":
                thread.join(timeout=30)


def test_a_storage_error_is_an_answer_not_a_hang(warehouse_conn):
    # DuckDB enforces a primary key that Snowflake only declares (no platform table declares one);
    # fakesnow used to answer HTTP 500 here, which the connector retries until it times out. It is an
    # ordinary error, not Snowflake's lock code 625 (which callers retry): see test_embedded_semantics.
    warehouse_query(warehouse_conn, "CREATE OR REPLACE TABLE PUBLIC.KEYED (ID INT PRIMARY KEY)")
    insert = "INSERT INTO PUBLIC.KEYED (ID) VALUES (1)"
    warehouse_query(warehouse_conn, insert)
    started = time.monotonic()
    with pytest.raises(WarehouseQueryError) as err:
        warehouse_query(warehouse_conn, insert)
    assert err.value.errno != 625 and not err.value.transient
    assert time.monotonic() - started < 5


def test_warehouse_query_command_prints_rows_as_json(warehouse_conn, warehouse_database, capsys):
    land_and_merge(warehouse_conn, [canonical_event("a")])
    from django.conf import settings

    saved = settings.SNOWFLAKE
    settings.SNOWFLAKE = {**saved, "database": warehouse_database}
    try:
        call_command("warehouse_query", "SELECT EVENT_ID, EVENT_TIME, CONTRACT, DUPLICATE_COUNT FROM CANONICAL.EVENTS")
        rows = orjson.loads(capsys.readouterr().out)
        assert rows == [{"EVENT_ID": "a", "EVENT_TIME": rows[0]["EVENT_TIME"],
                         "CONTRACT": {"name": "web-chat.chat_event", "version": 1}, "DUPLICATE_COUNT": 0}]
        assert rows[0]["EVENT_TIME"].startswith("2025-12-31T23:59:58")
        with pytest.raises(CommandError, match="refused the statement"):
            call_command("warehouse_query", "SELECT * FROM NOWHERE")
    finally:
        settings.SNOWFLAKE = saved


def test_warehouse_query_command_exit_codes(warehouse_server):
    env = {**os.environ, "SNOWFLAKE_HOST": "127.0.0.1", "SNOWFLAKE_PORT": str(warehouse_server.port),
           "SNOWFLAKE_PROTOCOL": "http", "DJANGO_SETTINGS_MODULE": "portal.settings"}

    def run(sql, **extra):
        return subprocess.run([sys.executable, "manage.py", "warehouse_query", "--compact", sql],  # noqa: S603
                              cwd=ROOT, env={**env, **extra}, capture_output=True, text=True, timeout=120)

    ok = run("SELECT 1 AS ONE, 'x' AS S")
    assert ok.returncode == 0, ok.stderr
    assert orjson.loads(ok.stdout) == [{"ONE": 1, "S": "x"}]

    bad = run("SELEC nonsense")
    assert bad.returncode == 1 and "refused the statement" in bad.stderr

    down = run("SELECT 1", SNOWFLAKE_PORT=str(free_port()))
    assert down.returncode == 1 and "unreachable" in down.stderr


def test_pooled_connections_are_reused_and_a_broken_one_is_dropped(warehouse_conn, warehouse_database):
    # review M9: every page request logged in to the warehouse
    from warehouse.connection import WarehouseQueryError, pooled_connection

    with pooled_connection(database=warehouse_database) as first:
        assert warehouse_query(first, "SELECT 1 AS X") == [{"X": 1}]
    with pooled_connection(database=warehouse_database) as again:
        assert again is first                                # no second login
        with pytest.raises(WarehouseQueryError):             # a refused statement keeps the session
            warehouse_query(again, "SELECT * FROM NO_SUCH_TABLE")
    with pooled_connection(database=warehouse_database) as still:
        assert still is first
        still.close()                                        # a session that died meanwhile…
    with pooled_connection(database=warehouse_database) as fresh:
        assert fresh is not first and not fresh.is_closed()  # …is replaced by a fresh login
