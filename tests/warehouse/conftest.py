"""The embedded warehouse for tests. ``warehouse_server`` (in tests/conftest.py, shared with the
ingest tests) starts it on a free port with its files in a temporary folder and points
``settings.SNOWFLAKE`` at it for the whole session; ``warehouse_conn`` gives each test its own
database (created and ``warehouse_ensure``d), so tests never see each other's rows.
"""

from __future__ import annotations

import uuid

import pytest


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
