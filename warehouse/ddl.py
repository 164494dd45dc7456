"""Warehouse tables, generated from the canonical model (``contracts/canonical/v1``).

Column rules, applied to every field of the canonical envelope (``canonical_avro_schema()``):

* a scalar field becomes a typed column named after it (``event_id`` → ``EVENT_ID VARCHAR``);
  ``timestamp-micros`` fields become ``TIMESTAMP_NTZ(6)`` holding UTC (lossless for micros);
* ``identifiers`` is flattened: each identifier is a typed column (``PERSON_ID``, ``DEVICE_ID`` …);
* any other record (``contract``, ``lineage``), the ``attributes`` union and ``platform_metadata``
  (JSON text in Avro, an object in the event dict) become ``VARIANT``;
* the lineage fields that order and trace copies (raw archive URI/offset, stream, shard, sequence
  number) are also flattened next to ``LINEAGE``, because dedup and replay query them.

A field added to the model in a minor version therefore gets its column automatically, and
``warehouse_ensure`` adds it to existing tables (``ALTER TABLE … ADD COLUMN``).

Pure except ``warehouse_ensure`` (which takes an open connection): no Django import at module level.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass, field
from typing import Any

from contracts.canonical_model import canonical_avro_schema

__all__ = [
    "Column",
    "Table",
    "EVENT_COLUMNS",
    "LANDING_EVENTS",
    "CHANNEL_OFFSETS",
    "MERGE_PROGRESS",
    "MERGE_LOG",
    "MERGER_FENCE",
    "LATE_COPIES",
    "EVENT_COPIES",
    "COPY_KEY_SQL",
    "DEDUP_WINDOW_DAYS_DEFAULT",
    "PERSONAL_DATA_RETENTION_DAYS",
    "QUARANTINE",
    "CANONICAL_EVENTS",
    "TABLES",
    "QUARANTINE_REASONS",
    "QUARANTINE_STATUSES",
    "LINEAGE_FLATTENED",
    "event_columns",
    "table_ddl",
    "warehouse_ddl",
    "warehouse_ensure",
    "qualified",
    "check_identifier",
]

QUARANTINE_REASONS: tuple[str, ...] = (
    "unknown_source",
    "source_disabled",
    "no_approved_contract",
    "schema_violation",
    "mapping_failure",
    "oversize",
    "undecodable",
    "invalid_envelope",
    "number_out_of_range",
)
QUARANTINE_STATUSES: tuple[str, ...] = ("new", "redriven", "resolved")

#: record fields whose children become typed columns (no prefix: the names are unique)
FLATTENED_RECORDS = frozenset({"identifiers"})
#: record fields kept whole as VARIANT and also partly flattened
LINEAGE_FLATTENED: tuple[str, ...] = ("raw_archive_uri", "raw_offset", "stream", "shard_id", "sequence_number")
PARTLY_FLATTENED = {"lineage": LINEAGE_FLATTENED}

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


def check_identifier(name: str) -> str:
    """An unquoted Snowflake identifier, upper-cased; refuses anything that would need quoting."""
    if not isinstance(name, str) or not _IDENT.match(name):
        raise ValueError(f"not a plain Snowflake identifier: {name!r}")
    return name.upper()


@dataclass(frozen=True)
class Column:
    """One warehouse column. ``path`` is where its value sits in the JSON row being landed
    (``identifiers.person_id``), ``kind`` how it is extracted: ``scalar`` (cast to ``sql_type``),
    ``timestamp`` (UTC micros → ``TIMESTAMP_NTZ(6)``), ``variant`` (kept as JSON; JSON null → NULL)."""

    name: str
    sql_type: str
    path: str | None = None
    kind: str = "scalar"
    comment: str = ""
    not_null: bool = False
    #: a fixed SQL expression for the landing INSERT instead of reading ``path``
    expr: str | None = None

    def definition(self) -> str:
        parts = [self.name, self.sql_type]
        if self.not_null:
            parts.append("NOT NULL")
        if self.comment:
            parts.append(f"COMMENT '{_sql_text(self.comment)}'")
        return " ".join(parts)

    def select_expr(self, row: str = "v.value") -> str:
        """The SQL that extracts this column from one element of a FLATTENed JSON array."""
        if self.expr is not None:
            return self.expr.replace("{row}", row)
        if self.path is None:
            return "NULL"
        ref = f"{row}:{self.path}"
        if self.kind == "timestamp":
            return f"TO_TIMESTAMP_NTZ({ref}::NUMBER, 6)"
        if self.kind == "variant":
            return f"STRIP_NULL_VALUE({ref})"
        return f"{ref}::{self.sql_type}"


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    columns: tuple[Column, ...]
    comment: str = ""
    primary_key: tuple[str, ...] = ()
    #: emit the key as a PRIMARY KEY constraint. Snowflake never enforces one; the embedded engine
    #: would (and with an index it rewrites at every checkpoint), so no table declares one: every
    #: writer guarantees its key itself (DESIGN decision 7), and the tests see Snowflake's semantics.
    key_constraint: bool = False
    #: real Snowflake clustering key (fakesnow accepts and ignores it)
    cluster_by: str | None = None
    #: TRANSIENT: no Fail-safe (cheaper; the raw archive can rebuild it)
    transient: bool = False
    #: DATA_RETENTION_TIME_IN_DAYS (Time Travel); None: the account default. Tables holding personal data
    #: keep at most 1 day, so an erasure is not undone by a Time Travel query (docs/privacy.md)
    retention_days: int | None = None
    column_index: dict[str, Column] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"{self.schema}.{self.name}: duplicate columns {sorted(dupes)}")
        self.column_index.update({c.name: c for c in self.columns})

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def _sql_text(text: str) -> str:
    return " ".join(str(text).split()).replace("\\", "\\\\").replace("'", "''")


# --------------------------------------------------------------------------------------------
# From the canonical model
# --------------------------------------------------------------------------------------------


def _avro_base(t: Any) -> Any:
    if isinstance(t, list):
        rest = [b for b in t if b != "null"]
        return rest[0] if len(rest) == 1 else rest
    return t


def _sql_type(avro_field: dict) -> tuple[str, str]:
    """(sql_type, kind) of one Avro field."""
    base = _avro_base(avro_field["type"])
    if avro_field.get("x-json"):
        return "VARIANT", "variant"
    if isinstance(base, list):  # a union of several branches (attributes)
        return "VARIANT", "variant"
    if isinstance(base, dict):
        if base.get("logicalType") in ("timestamp-micros", "timestamp-millis"):
            if base.get("logicalType") == "timestamp-millis":
                raise ValueError(f"{avro_field['name']}: the canonical model keeps times in micros")
            return "TIMESTAMP_NTZ(6)", "timestamp"
        kind = base.get("type")
        if kind == "enum":
            return "VARCHAR", "scalar"
        if kind in ("record", "array", "map"):
            return "VARIANT", "variant"
        base = kind
    return {
        "string": ("VARCHAR", "scalar"),
        "int": ("NUMBER(38,0)", "scalar"),
        "long": ("NUMBER(38,0)", "scalar"),
        "boolean": ("BOOLEAN", "scalar"),
        "float": ("FLOAT", "scalar"),
        "double": ("FLOAT", "scalar"),
        "bytes": ("VARCHAR", "scalar"),
    }.get(base, ("VARIANT", "variant"))


def _is_record(avro_field: dict) -> bool:
    base = _avro_base(avro_field["type"])
    return isinstance(base, dict) and base.get("type") == "record"


@functools.lru_cache(maxsize=1)
def event_columns() -> tuple[Column, ...]:
    """The columns every canonical event becomes, in envelope order (see the module docstring)."""
    cols: list[Column] = []
    for f in canonical_avro_schema()["fields"]:
        name = f["name"]
        if _is_record(f) and name in FLATTENED_RECORDS:
            for child in _avro_base(f["type"])["fields"]:
                sql_type, kind = _sql_type(child)
                cols.append(Column(child["name"].upper(), sql_type, f"{name}.{child['name']}", kind,
                                   child.get("doc", "")))
            continue
        sql_type, kind = _sql_type(f)
        doc = f.get("doc", "") + (" Stored here as the JSON value itself." if f.get("x-json") else "")
        cols.append(Column(name.upper(), sql_type, name, kind, doc, not_null=(name == "event_id")))
        if name in PARTLY_FLATTENED:
            children = {c["name"]: c for c in _avro_base(f["type"])["fields"]}
            for child_name in PARTLY_FLATTENED[name]:
                child = children[child_name]
                sql_type, kind = _sql_type(child)
                cols.append(Column(child_name.upper(), sql_type, f"{name}.{child_name}", kind,
                                   f"{name}.{child_name}: {child.get('doc', '')}"))
    return tuple(cols)


EVENT_COLUMNS: tuple[Column, ...] = event_columns()

_TS = "TIMESTAMP_NTZ(6)"

#: Time Travel (DATA_RETENTION_TIME_IN_DAYS) of every table that holds personal data: at most one day
#: (docs/privacy.md, "What Snowflake still keeps")
PERSONAL_DATA_RETENTION_DAYS = 1

#: Days before the merge's date whose events are deduplicated by the MERGE into CANONICAL.EVENTS
#: (the event-date window; see docs/ingestion.md "Deduplication window").
DEDUP_WINDOW_DAYS_DEFAULT = 3

#: The copy key of a landed row: which stream record it came from. Two landing rows with one copy key
#: are the same record landed twice (a retry, a lease takeover, a replay) and count once; two copy
#: keys with one EVENT_ID are real duplicates from the producer. (A SQL expression over alias {a}.)
COPY_KEY_SQL = ("COALESCE({a}.STREAM, '') || '/' || COALESCE({a}.SHARD_ID, '') || '/' || "
                "COALESCE({a}.SEQUENCE_NUMBER, "
                "COALESCE({a}.BATCH_ID, '') || '#' || COALESCE({a}.RAW_OFFSET::VARCHAR, ''))")

_EVENT_DATE = Column(
    "EVENT_DATE", "DATE", expr="TO_DATE(TO_TIMESTAMP_NTZ({row}:event_time::NUMBER, 6))",
    comment="UTC date of EVENT_TIME: with EVENT_ID the dedup key, and the clustering key.")

LANDING_EVENTS = Table(
    "RAW", "LANDING_EVENTS",
    (
        # EVENT_ID is NULL on quarantine rows, which land through the same channel
        *(dataclasses.replace(c, not_null=False) for c in EVENT_COLUMNS),
        _EVENT_DATE,
        Column("ROW_KIND", "VARCHAR", not_null=True,
               expr="IFF({row}:quarantine IS NULL, 'event', 'quarantine')",
               comment="event | quarantine (a rejected record, in QUARANTINE_ROW)."),
        Column("QUARANTINE_ROW", "VARIANT", "quarantine", "variant",
               comment="The quarantine row (the RAW.QUARANTINE columns, lower case) when ROW_KIND = 'quarantine'."),
        Column("CHANNEL", "VARCHAR", "_channel", expr="%(channel)s", not_null=True,
               comment="Landing channel (one per shard, or one per re-drive)."),
        Column("OFFSET_TOKEN", "VARCHAR", "_offset_token", expr="%(offset_token)s", not_null=True,
               comment="Offset token of the append that landed the row (the last sequence number of the unit)."),
        Column("BATCH_ID", "VARCHAR", "_batch_id", expr="%(batch_id)s", not_null=True,
               comment="Landing unit: <channel>/<first sequence>-<last sequence>."),
        Column("LANDED_AT", _TS, expr="CAST(%(landed_at)s AS TIMESTAMP_NTZ(6))", not_null=True,
               comment="When the unit landed (UTC)."),
    ),
    comment="Every copy of every valid canonical event and every quarantined record, append only "
            "(INSERTs, never updated). The merger MERGEs it into CANONICAL.EVENTS and RAW.QUARANTINE.",
    transient=True,
    retention_days=PERSONAL_DATA_RETENTION_DAYS,
    # no clustering key: rows stay in landing order, which is what the merger's claims prune on
    # (LANDED_AT); a key on another column would make automatic clustering reorder them
)

CHANNEL_OFFSETS = Table(
    "RAW", "CHANNEL_OFFSETS",
    (
        Column("CHANNEL", "VARCHAR", not_null=True, comment="Landing channel."),
        Column("OFFSET_TOKEN", "VARCHAR",
               comment="Offset token committed with the rows (NULL on the row that records an opening)."),
        Column("CLIENT_SEQUENCER", "NUMBER(38,0)", comment="Which opening of the channel appended."),
        Column("ROW_COUNT", "NUMBER(38,0)", not_null=True, comment="Landing rows in the append."),
        Column("COMMITTED_AT", _TS, not_null=True, comment="When the append committed (UTC)."),
    ),
    comment="Channel state of the embedded landing writer (Snowpipe Streaming keeps its own): one row "
            "per append, INSERTed in the same transaction as the rows. "
            "The committed token of a channel is its greatest.",
    transient=True,
)

MERGE_LOG = Table(
    "RAW", "MERGE_LOG",
    (
        Column("MERGE_ID", "VARCHAR", not_null=True, comment="Id of the merge."),
        Column("MERGED_AT", _TS, not_null=True,
               comment="MERGED_AT written on every CANONICAL.EVENTS row the merge changed (UTC)."),
        Column("FENCE", "NUMBER(38,0)", comment="Fencing token of the merger lease."),
        Column("RANGES", "VARIANT", comment="Channel ranges merged: [{channel, after, through}]."),
        Column("ROWS_IN", "NUMBER(38,0)", comment="Landing rows read."),
        Column("EVENTS_INSERTED", "NUMBER(38,0)", comment="New rows in CANONICAL.EVENTS."),
        Column("EVENTS_UPDATED", "NUMBER(38,0)", comment="Existing rows changed (a new copy or an earlier one)."),
        Column("LATE_COPIES", "NUMBER(38,0)", comment="Copies that arrived after the window (RAW.LATE_COPIES)."),
        Column("QUARANTINED", "NUMBER(38,0)", comment="New rows in RAW.QUARANTINE."),
    ),
    comment="One row per merge, written in the merge transaction: what the curated models read to "
            "find changed events.",
)

MERGE_PROGRESS = Table(
    "RAW", "MERGE_PROGRESS",
    (
        Column("CHANNEL", "VARCHAR", not_null=True, comment="Landing channel."),
        Column("MERGED_THROUGH", "VARCHAR", not_null=True,
               comment="Offset token through which the rows of the channel are merged (never moves back)."),
        Column("MERGE_ID", "VARCHAR", comment="The merge that moved it last."),
        Column("MERGED_AT", _TS, comment="When (UTC)."),
    ),
    comment="How far each landing channel is merged, written only by the merger, in the merge transaction.",
    primary_key=("CHANNEL",),
)

MERGER_FENCE = Table(
    "RAW", "MERGER_FENCE",
    (
        Column("NAME", "VARCHAR", not_null=True, comment="The merger role (one row: merger)."),
        Column("FENCE", "NUMBER(38,0)", not_null=True,
               comment="Highest fencing token that merged; a merge with a lower one is refused."),
        Column("UPDATED_AT", _TS, comment="When (UTC)."),
    ),
    comment="The merge transaction first raises FENCE to its own token: the row lock serialises two "
            "mergers, and one whose lease was taken over finds a higher token and rolls back.",
    primary_key=("NAME",),
)

LATE_COPIES = Table(
    "RAW", "LATE_COPIES",
    (
        Column("EVENT_DATE", "DATE", not_null=True, comment="Event date of the copy (before the window)."),
        Column("EVENT_ID", "VARCHAR", not_null=True, comment="The event it copies."),
        Column("COPY_KEY", "VARCHAR", not_null=True, comment="Stream record of the copy (stream/shard/sequence)."),
        Column("SOURCE_ID", "VARCHAR", comment="Source of the copy."),
        Column("RECEIVED_AT", _TS, comment="Collector receive time of the copy (UTC)."),
        Column("LANDED_AT", _TS, comment="When the copy landed (UTC)."),
        Column("MERGE_ID", "VARCHAR", comment="The merge that counted it."),
    ),
    comment="Duplicates that arrived after the dedup window: counted here, never merged into old "
            "partitions of CANONICAL.EVENTS.",
    primary_key=("EVENT_ID", "COPY_KEY"),
    cluster_by="EVENT_DATE",
)

EVENT_COPIES = Table(
    "RAW", "EVENT_COPIES",
    (
        Column("EVENT_DATE", "DATE", not_null=True, comment="Event date of the event (CANONICAL.EVENTS)."),
        Column("EVENT_ID", "VARCHAR", not_null=True, comment="The event."),
        Column("COPY_KEY", "VARCHAR", not_null=True, comment="Stream record of one copy (stream/shard/sequence)."),
        Column("RECEIVED_AT", _TS, comment="Collector receive time of the copy (UTC)."),
        Column("LANDED_AT", _TS, comment="When the copy landed (UTC)."),
        Column("MERGE_ID", "VARCHAR", comment="The merge that counted it."),
        Column("WAS_KEPT", "BOOLEAN",
               comment="TRUE: the stored kept copy, counted before and recorded here by the merge that found "
                       "another copy (not a new copy of that merge)."),
    ),
    comment="Every copy counted in CANONICAL.EVENTS.DUPLICATE_COUNT, the kept one included, for events seen "
            "more than once (DUPLICATE_COUNT + 1 rows each; none for an event seen once). What makes a repeated "
            "merge count nothing twice, without the event row growing with its copies.",
    primary_key=("EVENT_DATE", "EVENT_ID", "COPY_KEY"),
    cluster_by="EVENT_DATE, SUBSTR(EVENT_ID, 1, 2)",
)

QUARANTINE = Table(
    "RAW", "QUARANTINE",
    (
        Column("QUARANTINE_ID", "VARCHAR", "quarantine_id", not_null=True,
               expr="COALESCE({row}:quarantine_id::VARCHAR, UUID_STRING())", comment="Id (uuid)."),
        Column("SOURCE", "VARCHAR", "source", comment="Source name from the raw envelope."),
        Column("SOURCE_ID", "VARCHAR", "source_id", comment="Registered source id, when known."),
        Column("CONTRACT_SUBJECT", "VARCHAR", "contract_subject", comment="Contract subject, when known."),
        Column("CONTRACT_VERSION", "NUMBER(38,0)", "contract_version", comment="Contract version, when known."),
        Column("REASON_CODE", "VARCHAR", "reason_code", comment=" | ".join(QUARANTINE_REASONS)),
        Column("REASON_DETAIL", "VARCHAR", "reason_detail", comment="What was wrong, for a person."),
        Column("ERROR_PATH", "VARCHAR", "error_path", comment="JSON pointer into the payload (or spec)."),
        Column("RAW_ARCHIVE_URI", "VARCHAR", "raw_archive_uri", comment="Raw archive object with the record."),
        Column("RAW_OFFSET", "NUMBER(38,0)", "raw_offset", comment="Record index in that object."),
        Column("STREAM", "VARCHAR", "stream", comment="Stream the record was read from."),
        Column("SHARD_ID", "VARCHAR", "shard_id", comment="Shard."),
        Column("SEQUENCE_NUMBER", "VARCHAR", "sequence_number", comment="Sequence number in the shard."),
        Column("BATCH_ID", "VARCHAR", "batch_id", not_null=True, comment="Landing unit."),
        Column("RECEIVED_AT", _TS, "received_at", "timestamp", comment="Collector receive time (UTC)."),
        Column("QUARANTINED_AT", _TS, not_null=True, comment="When it was quarantined (landed)."),
        Column("PAYLOAD", "VARIANT", "payload", "variant",
               comment="The payload as sent (JSON), or its text when it was not JSON."),
        Column("STATUS", "VARCHAR", not_null=True, expr="COALESCE({row}:status::VARCHAR, 'new')",
               comment=" | ".join(QUARANTINE_STATUSES)),
        Column("REDRIVEN_AT", _TS, comment="When it was last re-driven."),
        Column("REDRIVE_RESULT", "VARIANT", comment="Outcome of the last re-drive."),
    ),
    comment="One row per rejected record, with its reason and raw pointer; re-drivable. Written only by "
            "the merger (MERGE on QUARANTINE_ID), so a record landed twice is quarantined once.",
    primary_key=("QUARANTINE_ID",),
    # not transient: its statuses and re-drive results cannot be rebuilt from the archive
    retention_days=PERSONAL_DATA_RETENTION_DAYS,
)

CANONICAL_EVENTS = Table(
    "CANONICAL", "EVENTS",
    (
        *EVENT_COLUMNS,
        Column("EVENT_DATE", "DATE", comment="UTC date of EVENT_TIME: with EVENT_ID the key; the clustering key."),
        Column("BATCH_ID", "VARCHAR", comment="Landing unit of the kept copy."),
        Column("KEPT_LANDED_AT", _TS, comment="When the kept copy landed (UTC)."),
        Column("DUPLICATE_COUNT", "NUMBER(38,0)", not_null=True,
               comment="Extra copies seen within the dedup window (0 for an event seen once); the copies "
                       "counted are listed in RAW.EVENT_COPIES."),
        Column("FIRST_SEEN_AT", _TS, comment="Earliest RECEIVED_AT over all copies (UTC)."),
        Column("LAST_SEEN_AT", _TS, comment="Latest RECEIVED_AT over all copies (UTC)."),
        Column("FIRST_LANDED_AT", _TS, comment="When the first copy landed in the warehouse (UTC)."),
        Column("MERGED_AT", _TS, comment="Last merge that changed this row (UTC): the incremental watermark."),
    ),
    comment="One row per (EVENT_DATE, EVENT_ID). The kept copy is the earliest by (RECEIVED_AT, SHARD_ID, "
            "SEQUENCE_NUMBER).",
    primary_key=("EVENT_DATE", "EVENT_ID"),
    # the dedup MERGE's ON clause is bounded by EVENT_DATE; the id prefix lets a point lookup prune
    cluster_by="EVENT_DATE, SUBSTR(EVENT_ID, 1, 2)",
    # permanent (rebuilding it is a replay of the whole archive); Time Travel kept to one day
    retention_days=PERSONAL_DATA_RETENTION_DAYS,
)

TABLES: tuple[Table, ...] = (
    LANDING_EVENTS, CHANNEL_OFFSETS, MERGE_PROGRESS, MERGE_LOG, MERGER_FENCE, LATE_COPIES, EVENT_COPIES, QUARANTINE,
    CANONICAL_EVENTS,
)
SCHEMAS: tuple[str, ...] = ("RAW", "CANONICAL")


def qualified(database: str, table: Table) -> str:
    return f"{check_identifier(database)}.{table.schema}.{table.name}"


def table_ddl(table: Table, database: str) -> str:
    lines = [f"    {c.definition()}" for c in table.columns]
    if table.primary_key and table.key_constraint:
        lines.append(f"    PRIMARY KEY ({', '.join(table.primary_key)})")
    kind = "TRANSIENT TABLE" if table.transient else "TABLE"
    sql = f"CREATE {kind} IF NOT EXISTS {qualified(database, table)} (\n" + ",\n".join(lines) + "\n)"
    if table.cluster_by:
        sql += f"\nCLUSTER BY ({table.cluster_by})"
    if table.retention_days is not None:
        sql += f"\nDATA_RETENTION_TIME_IN_DAYS = {int(table.retention_days)}"
    if table.comment:
        sql += f"\nCOMMENT = '{_sql_text(table.comment)}'"
    return sql


def warehouse_ddl(database: str) -> list[str]:
    """Every statement ``warehouse_ensure`` runs, in order (all idempotent)."""
    db = check_identifier(database)
    return [
        f"CREATE DATABASE IF NOT EXISTS {db}",
        *(f"CREATE SCHEMA IF NOT EXISTS {db}.{s}" for s in SCHEMAS),
        *(table_ddl(t, db) for t in TABLES),
    ]


@dataclass(frozen=True)
class EnsureResult:
    database: str
    statements: int
    columns_added: tuple[str, ...]


def warehouse_ensure(conn: Any, *, database: str | None = None) -> EnsureResult:
    """Create the database, schemas and tables if missing, and add columns the model gained since
    (``ALTER TABLE … ADD COLUMN``). Safe to run at every start."""
    from warehouse.connection import warehouse_errors

    db = check_identifier(database or conn.database or _settings_database())
    statements = warehouse_ddl(db)
    added: list[str] = []
    with warehouse_errors():
        cur = conn.cursor()
        try:
            for sql in statements:
                cur.execute(sql)
            cur.execute(
                f"SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM {db}.INFORMATION_SCHEMA.COLUMNS "  # noqa: S608
                f"WHERE TABLE_SCHEMA IN ({', '.join(repr(s) for s in SCHEMAS)})"
            )
            existing = {(s.upper(), t.upper(), c.upper()) for s, t, c in cur.fetchall()}
            if ("CANONICAL", "EVENTS", "COPY_KEYS") in existing:
                try:
                    _copy_keys_move(cur, db)
                    added.append("RAW.EVENT_COPIES (moved from CANONICAL.EVENTS.COPY_KEYS)")
                except Exception:
                    # another process starting at the same time moved them and dropped the column first
                    cur.execute(f"SELECT COUNT(*) FROM {db}.INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = "  # noqa: S608
                                "'CANONICAL' AND TABLE_NAME = 'EVENTS' AND COLUMN_NAME = 'COPY_KEYS'")
                    if cur.fetchone()[0]:
                        raise
            for table in TABLES:
                for col in table.columns:
                    if (table.schema, table.name, col.name) not in existing:
                        # NOT NULL can't be added to a table with rows; new model fields are nullable
                        ddl_col = Column(col.name, col.sql_type, comment=col.comment)
                        cur.execute(f"ALTER TABLE {qualified(db, table)} ADD COLUMN {ddl_col.definition()}")
                        added.append(f"{table.schema}.{table.name}.{col.name}")
        finally:
            cur.close()
    return EnsureResult(database=db, statements=len(statements), columns_added=tuple(added))


def _copy_keys_move(cur: Any, db: str) -> None:
    """Move the copy keys that event rows listed in ``COPY_KEYS`` (``|key|key|``, before RAW.EVENT_COPIES)
    into that table, then drop the column. A row with many copies could pass Snowflake's 16 MB row limit and
    stop every merge; the merge reads only RAW.EVENT_COPIES now, so without this a warehouse made before
    would count its earlier copies again on a re-merge. Snowflake commits before any DDL, so the two steps
    cannot share a transaction: the move inserts only keys not there yet, and a start that failed between
    them repeats it harmlessly. Upgrade with the old merger stopped (a merge between the two steps would
    append keys the drop then loses; there is one merger, leased, so a deploy replaces it anyway)."""
    events, copies = qualified(db, CANONICAL_EVENTS), qualified(db, EVENT_COPIES)
    cur.execute(
        f"MERGE INTO {copies} tgt USING (SELECT DISTINCT e.EVENT_DATE, e.EVENT_ID, f.value::VARCHAR AS COPY_KEY "  # noqa: S608
        f"FROM {events} e, LATERAL FLATTEN(input => SPLIT(e.COPY_KEYS, '|')) f "
        "WHERE e.COPY_KEYS IS NOT NULL AND f.value::VARCHAR <> '') src "
        "ON tgt.EVENT_DATE = src.EVENT_DATE AND tgt.EVENT_ID = src.EVENT_ID AND tgt.COPY_KEY = src.COPY_KEY "
        "WHEN NOT MATCHED THEN INSERT (EVENT_DATE, EVENT_ID, COPY_KEY, MERGE_ID) "
        "VALUES (src.EVENT_DATE, src.EVENT_ID, src.COPY_KEY, 'moved-from-copy-keys')")
    cur.execute(f"ALTER TABLE {events} DROP COLUMN IF EXISTS COPY_KEYS")


def _settings_database() -> str:
    from django.conf import settings

    return settings.SNOWFLAKE["database"]
