"""One warehouse database per test module (on the session's embedded warehouse server), with the
canonical tables created once; each test loads its own few events into it."""

from __future__ import annotations

import time
import uuid

import pytest

# the ingestion fixtures (moto's Kinesis, a stream per test, Redis as the cache, sources with their keys) for
# the scorecard tests that run the real pipeline
from tests.ingest_workers.conftest import (  # noqa: F401
    aws_settings,
    collector_cache,
    collector_sources,
    kinesis,
    moto_server,
    stream,
)


@pytest.fixture(scope="module")
def quality_warehouse(warehouse_server):
    """(database name, open connection): RAW and CANONICAL tables only (no ANALYTICS tables: a curated
    table is "missing" here)."""
    from warehouse.connection import warehouse_connect
    from warehouse.ddl import warehouse_ensure

    name = f"Q_{uuid.uuid4().hex[:12].upper()}"
    conn = warehouse_connect(database=name)
    warehouse_ensure(conn)
    try:
        yield name, conn
    finally:
        conn.close()


@pytest.fixture
def quality_db(quality_warehouse, settings):
    """This module's database as the platform's warehouse, CANONICAL.EVENTS emptied."""
    name, conn = quality_warehouse
    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "database": name}
    conn.cursor().execute(f"TRUNCATE TABLE {name}.CANONICAL.EVENTS")
    return conn


def clean_events(source_id: str, prefix: str = "e") -> list[dict]:
    """One conversation of the web-chat preset (every event type it has), received seconds ago."""
    from tests.warehouse.factories import SECOND, _templates, canonical_event

    now = int(time.time() * 1_000_000)
    return [canonical_event(f"{prefix}{i}", received_at=now - 5 * SECOND, template=i, source_id=source_id)
            for i in range(len(_templates()))]


def load(conn, events: list[dict]) -> None:
    from tests.warehouse.factories import land_and_merge

    land_and_merge(conn, events, batch_id=uuid.uuid4().hex[:8])
