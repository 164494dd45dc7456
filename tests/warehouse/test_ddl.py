"""The warehouse tables are generated from the canonical model (pure: no server)."""

from __future__ import annotations

import pytest

from contracts.canonical_model import canonical_avro_schema
from warehouse.ddl import (
    CANONICAL_EVENTS,
    EVENT_COLUMNS,
    LANDING_EVENTS,
    QUARANTINE,
    QUARANTINE_REASONS,
    TABLES,
    check_identifier,
    table_ddl,
    warehouse_ddl,
)


def _leaf_paths(fields, prefix=""):
    for f in fields:
        t = f["type"]
        base = [b for b in t if b != "null"] if isinstance(t, list) else [t]
        record = base[0] if len(base) == 1 and isinstance(base[0], dict) and base[0].get("type") == "record" else None
        if record:
            yield from _leaf_paths(record["fields"], f"{prefix}{f['name']}.")
        else:
            yield f"{prefix}{f['name']}"


def test_every_canonical_envelope_field_has_a_home_in_the_event_tables():
    schema_fields = canonical_avro_schema()["fields"]
    leaves = list(_leaf_paths(schema_fields))
    assert "identifiers.email_sha256" in leaves and "lineage.normalizer_version" in leaves
    for table in (LANDING_EVENTS, CANONICAL_EVENTS):
        paths = {c.path: c for c in table.columns if c.path}
        variants = {c.path for c in table.columns if c.sql_type == "VARIANT"}
        for leaf in leaves:
            covered = leaf in paths or any(leaf == v or leaf.startswith(v + ".") for v in variants)
            assert covered, f"{table.name} has no column for canonical field {leaf}"
    # every top-level field is a column or (identifiers) flattened into columns
    top = {f["name"] for f in schema_fields}
    assert top - {c.path for c in EVENT_COLUMNS} == {"identifiers"}


def test_column_types_follow_the_model():
    cols = {c.name: c for c in EVENT_COLUMNS}
    for ts in ("EVENT_TIME", "RECEIVED_AT", "INGESTED_AT"):
        assert cols[ts].sql_type == "TIMESTAMP_NTZ(6)" and cols[ts].kind == "timestamp"
    for variant in ("CONTRACT", "ATTRIBUTES", "PLATFORM_METADATA", "LINEAGE"):
        assert cols[variant].sql_type == "VARIANT"
    for identifier in ("PERSON_ID", "ANONYMOUS_ID", "PLATFORM_USER_ID", "DEVICE_ID", "TENANT_ID", "EMAIL_SHA256"):
        assert cols[identifier].sql_type == "VARCHAR" and cols[identifier].path.startswith("identifiers.")
    assert cols["RAW_OFFSET"].sql_type == "NUMBER(38,0)" and cols["SEQUENCE_NUMBER"].sql_type == "VARCHAR"
    assert cols["EVENT_ID"].not_null
    assert cols["PLATFORM"].comment  # docs travel into the warehouse as column comments


def test_tables_and_their_keys():
    assert LANDING_EVENTS.transient and {"BATCH_ID", "CHANNEL", "OFFSET_TOKEN", "ROW_KIND"} <= set(
        LANDING_EVENTS.column_names)
    assert not LANDING_EVENTS.column_index["EVENT_ID"].not_null  # quarantine rows land there too
    assert CANONICAL_EVENTS.primary_key == ("EVENT_DATE", "EVENT_ID")
    assert CANONICAL_EVENTS.cluster_by.startswith("EVENT_DATE")
    # Snowflake enforces no key: no table may make the embedded engine enforce one
    assert not any(table.key_constraint for table in TABLES)
    assert all("PRIMARY KEY" not in table_ddl(table, "X") for table in TABLES)
    assert {"DUPLICATE_COUNT", "FIRST_SEEN_AT", "LAST_SEEN_AT"} <= set(CANONICAL_EVENTS.column_names)
    assert [c.name for c in QUARANTINE.columns][:6] == [
        "QUARANTINE_ID", "SOURCE", "SOURCE_ID", "CONTRACT_SUBJECT", "CONTRACT_VERSION", "REASON_CODE"]
    assert "undecodable" in QUARANTINE_REASONS


def test_ddl_is_idempotent_snowflake_sql():
    statements = warehouse_ddl("chatorbit")
    assert statements[0] == "CREATE DATABASE IF NOT EXISTS CHATORBIT"
    assert all("IF NOT EXISTS" in s for s in statements)
    events = table_ddl(CANONICAL_EVENTS, "CHATORBIT")
    assert events.startswith("CREATE TABLE IF NOT EXISTS CHATORBIT.CANONICAL.EVENTS (")
    assert "CLUSTER BY (EVENT_DATE, SUBSTR(EVENT_ID, 1, 2))" in events
    assert "PRIMARY KEY" not in events
    assert table_ddl(LANDING_EVENTS, "CHATORBIT").startswith("CREATE TRANSIENT TABLE IF NOT EXISTS")
    # quotes in model docs are escaped
    assert "producer''s" in events


@pytest.mark.parametrize("bad", ["", "1ABC", "A-B", "A;DROP", 'A"B'])
def test_identifiers_are_checked(bad):
    with pytest.raises(ValueError):
        check_identifier(bad)
