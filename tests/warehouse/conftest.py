"""The embedded warehouse for tests: one fakesnow server subprocess per test session.

``warehouse_server`` starts it on a free port with its files in a temporary folder and points
``settings.SNOWFLAKE`` at it for the whole session; ``warehouse_conn`` gives each test its own
database (created and ``warehouse_ensure``d), so tests never see each other's rows.
"""

from __future__ import annotations

import copy
import dataclasses
import uuid

import pytest


@dataclasses.dataclass(frozen=True)
class WarehouseServer:
    host: str
    port: int
    path: str
    proc: object


@pytest.fixture(scope="session")
def warehouse_server(tmp_path_factory):
    from django.conf import settings

    from warehouse.embedded import embedded_server_start, embedded_server_stop, free_port

    path = tmp_path_factory.mktemp("warehouse")
    port = free_port()
    proc = embedded_server_start(path / "data", port, log_path=path / "server.log")
    saved = copy.deepcopy(settings.SNOWFLAKE)
    settings.SNOWFLAKE = {
        **settings.SNOWFLAKE, "account": "fakesnow", "user": "fake", "password": "snow",
        "host": "127.0.0.1", "port": port, "protocol": "http", "warehouse": "", "role": "",
    }
    try:
        yield WarehouseServer("127.0.0.1", port, str(path / "data"), proc)
    finally:
        settings.SNOWFLAKE = saved
        embedded_server_stop(proc)


@pytest.fixture
def warehouse_database(warehouse_server):
    """A fresh database name for this test (the server creates its file on first connect)."""
    return f"T_{uuid.uuid4().hex[:12].upper()}"


@pytest.fixture
def warehouse_conn(warehouse_server, warehouse_database):
    """A connection to this test's own database, with every table created."""
    from warehouse.connection import warehouse_connect
    from warehouse.ddl import warehouse_ensure

    conn = warehouse_connect(database=warehouse_database)
    warehouse_ensure(conn)
    try:
        yield conn
    finally:
        conn.close()
