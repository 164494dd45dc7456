"""Landing and merging canonical events, the quarantine table, and reads for the CLI and portal.

Thin I/O over an open connection (``warehouse.connection``): every function takes ``conn`` first
and runs plain Snowflake SQL, the same against Snowflake and the embedded fakesnow server.

Exactly-once, end to end:

* ``landing_insert`` lands one batch (events + quarantined records + a ledger row in
  ``RAW.LANDED_BATCHES``) in ONE transaction. The ledger row is written last with a MERGE keyed on
  BATCH_ID, so a retried batch (same id) lands nothing and says ``already_landed=True``, even when
  two workers race with it.
* ``merge_landing`` claims the unmerged batches (an UPDATE of the ledger, which also serialises
  concurrent merges), MERGEs their rows into ``CANONICAL.EVENTS`` and commits both together: a
  crash rolls everything back and a second run finds nothing to do.

Which copy an event keeps: the earliest by (RECEIVED_AT, SHARD_ID, SEQUENCE_NUMBER as a number),
NULLs last, whichever merge it arrives in; on an exact tie (the same stream record landed again,
e.g. by a replay) the most recently landed copy wins, so a replay after a mapping fix corrects the row.
Every other copy adds to DUPLICATE_COUNT; FIRST_SEEN_AT/LAST_SEEN_AT span the copies' RECEIVED_AT.

SQL text is assembled only from identifiers checked by ``ddl.check_identifier`` and the generated
column lists; every value is bound (hence the ``noqa: S608`` marks).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from snowflake.connector import DictCursor
from snowflake.connector import errors as sf_errors
from snowflake.connector.constants import FIELD_ID_TO_NAME

from warehouse.connection import WarehouseConflict, WarehouseError, warehouse_error_from, warehouse_errors
from warehouse.ddl import (
    CANONICAL_EVENTS,
    EVENT_COLUMNS,
    LANDED_BATCHES,
    LANDING_EVENTS,
    QUARANTINE,
    QUARANTINE_REASONS,
    QUARANTINE_STATUSES,
    Table,
    check_identifier,
    qualified,
)

__all__ = [
    "LandResult",
    "MergeResult",
    "landing_insert",
    "merge_landing",
    "quarantine_list",
    "quarantine_get",
    "quarantine_mark",
    "quarantine_counts",
    "warehouse_query",
    "pipeline_counts",
    "QUARANTINE_ROW_KEYS",
    "BATCH_META_KEYS",
    "STATEMENT_MAX_BYTES",
]

#: Keys of one quarantine row as ``landing_insert`` takes it (a JSON object each; all optional but
#: ``reason_code``). ``received_at`` is UTC micros; ``payload`` any JSON value, or the record's text
#: (decoded with errors="replace") when it was not JSON; ``quarantine_id`` defaults to a new uuid.
QUARANTINE_ROW_KEYS: tuple[str, ...] = (
    "quarantine_id", "source", "source_id", "contract_subject", "contract_version", "reason_code",
    "reason_detail", "error_path", "raw_archive_uri", "raw_offset", "stream", "shard_id",
    "sequence_number", "batch_id", "received_at", "payload",
)
#: ``meta`` keys stored in ledger columns; the whole dict is kept in META.
BATCH_META_KEYS: tuple[str, ...] = (
    "kind", "source", "stream", "shard_id", "first_sequence_number", "last_sequence_number",
)


#: Snowflake advises at most 1 MB of (compressed) statement text per statement, bound values
#: included; canonical event JSON compresses 4-6x, so a batch goes out in statements of at most
#: this many uncompressed bytes.
STATEMENT_MAX_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class LandResult:
    batch_id: str
    already_landed: bool
    rows: int  # event copies landed by this call (0 when already landed)
    quarantined: int  # quarantine rows landed by this call
    seconds: float


@dataclass(frozen=True)
class MergeResult:
    batches: int  # batches merged by this call
    rows_in: int  # landing rows (event copies) in those batches
    events_inserted: int  # new rows in CANONICAL.EVENTS
    duplicates_counted: int  # copies of events that already had a row (or another copy in the merge)
    events_matched: int = 0  # existing rows touched (DUPLICATE_COUNT, and the kept copy if earlier)
    merge_id: str | None = None
    seconds: float = 0.0


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _database(conn: Any) -> str:
    name = getattr(conn, "database", None)
    if not name:
        raise WarehouseError("The warehouse connection has no current database (settings.SNOWFLAKE['database']).")
    return check_identifier(name)


def _utcnow() -> str:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _timestamp_param(value: dt.datetime | str) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(sep=" ", timespec="microseconds")


def _json_text(value: bytes | str | None) -> str | None:
    """The JSON array as text, or None when there is nothing in it."""
    if value is None:
        return None
    text = value.decode("utf-8") if isinstance(value, (bytes, bytearray, memoryview)) else value
    if len(text) < 64 and text.strip() in ("", "[]"):
        return None
    return text


def _from_warehouse(exc: BaseException) -> bool:
    """Errors of the connector or the network (anything else is a bug here: let it through)."""
    return isinstance(exc, (sf_errors.Error, OSError, WarehouseError))


def _rollback(cur: Any) -> None:
    try:
        cur.execute("ROLLBACK")
    except Exception:  # noqa: BLE001,S110 - the connection may be gone; the server rolls back then
        pass


_NAMED = re.compile(r"%\((\w+)\)s")


def _execute_bound(cur: Any, sql: str, params: Mapping[str, Any]) -> Any:
    """Execute with server-side binding (``?``), whatever the connection's paramstyle: a batch's
    JSON travels as a bind value, not inside the SQL text (the server doesn't re-parse megabytes of
    SQL). ``sql`` names its parameters ``%(name)s``."""
    ordered: list[Any] = []

    def mark(m: re.Match) -> str:
        ordered.append(params[m.group(1)])
        return "?"

    return cur.execute(_NAMED.sub(mark, sql), ordered, _force_qmark_paramstyle=True)


def _json_array_chunks(text: str, max_bytes: int) -> list[str]:
    """Split a JSON array into arrays of at most ``max_bytes`` each (an oversized element alone)."""
    if len(text) <= max_bytes:
        return [text]
    items = orjson.loads(text)
    if not isinstance(items, list):
        raise ValueError("rows must be a JSON array")
    chunks: list[bytes] = []
    current: list[bytes] = []
    size = 2
    for item in items:
        encoded = orjson.dumps(item)
        if current and size + len(encoded) + 1 > max_bytes:
            chunks.append(b"[" + b",".join(current) + b"]")
            current, size = [], 2
        current.append(encoded)
        size += len(encoded) + 1
    if current:
        chunks.append(b"[" + b",".join(current) + b"]")
    return [c.decode() for c in chunks]


def _insert_from_json_sql(db: str, table: Table, columns: Iterable[Any], rows_param: str) -> str:
    cols = list(columns)
    return (
        f"INSERT INTO {qualified(db, table)} ({', '.join(c.name for c in cols)})\n"
        f"SELECT {', '.join(c.select_expr('v.value') for c in cols)}\n"
        f"FROM TABLE(FLATTEN(INPUT => PARSE_JSON(%({rows_param})s))) v"
    )


# --------------------------------------------------------------------------------------------
# landing
# --------------------------------------------------------------------------------------------


def _batch_landed(cur: Any, db: str, batch_id: str) -> bool:
    cur.execute(f"SELECT 1 FROM {qualified(db, LANDED_BATCHES)} WHERE BATCH_ID = %(batch_id)s",  # noqa: S608
                {"batch_id": batch_id})
    return cur.fetchone() is not None


def _ledger_claim_sql(db: str) -> str:
    cols = [c.name for c in LANDED_BATCHES.columns if c.name not in ("MERGE_ID", "MERGED_AT")]
    return (
        f"MERGE INTO {qualified(db, LANDED_BATCHES)} tgt USING (\n"  # noqa: S608
        "  SELECT %(batch_id)s AS BATCH_ID, %(kind)s AS KIND, %(source)s AS SOURCE, %(stream)s AS STREAM,\n"
        "         %(shard_id)s AS SHARD_ID, %(first_sequence_number)s AS FIRST_SEQUENCE_NUMBER,\n"
        "         %(last_sequence_number)s AS LAST_SEQUENCE_NUMBER, %(row_count)s AS ROW_COUNT,\n"
        "         %(quarantine_count)s AS QUARANTINE_COUNT, %(landed_at)s::TIMESTAMP_NTZ(6) AS LANDED_AT,\n"
        "         PARSE_JSON(%(meta)s) AS META\n"
        ") src ON tgt.BATCH_ID = src.BATCH_ID\n"
        f"WHEN NOT MATCHED THEN INSERT ({', '.join(cols)}) VALUES ({', '.join('src.' + c for c in cols)})"
    )


def _land(cur: Any, db: str, params: dict[str, Any], events: str | None, quarantine: str | None,
          meta: dict[str, Any], max_bytes: int) -> tuple[bool, int, int]:
    """The landing transaction: (landed?, event rows, quarantine rows). Leaves it open on error."""
    cur.execute("BEGIN")
    landed = quarantined = 0
    for chunk in _json_array_chunks(events, max_bytes) if events else ():
        _execute_bound(cur, _insert_from_json_sql(db, LANDING_EVENTS, LANDING_EVENTS.columns, "rows"),
                       {**params, "rows": chunk})
        landed += int(cur.rowcount or 0)
    for chunk in _json_array_chunks(quarantine, max_bytes) if quarantine else ():
        _execute_bound(cur, _insert_from_json_sql(db, QUARANTINE, QUARANTINE.columns, "rows"),
                       {**params, "rows": chunk})
        quarantined += int(cur.rowcount or 0)
    ledger = {key: (str(meta[key]) if meta.get(key) is not None else None) for key in BATCH_META_KEYS}
    ledger["kind"] = ledger["kind"] or "live"
    cur.execute(_ledger_claim_sql(db), {
        **params, **ledger, "row_count": landed, "quarantine_count": quarantined,
        "meta": orjson.dumps(meta, default=str).decode(),
    })
    if not cur.rowcount:
        # another writer landed this batch id between our check and our claim
        _rollback(cur)
        return False, 0, 0
    cur.execute("COMMIT")
    return True, landed, quarantined


def landing_insert(
    conn: Any, *, batch_id: str, rows: bytes | str | None, quarantine_rows: bytes | str | None = None,
    meta: Mapping[str, Any] | None = None, max_statement_bytes: int = STATEMENT_MAX_BYTES,
) -> LandResult:
    """Land one batch exactly once, in one transaction.

    ``rows`` is a JSON array of canonical event dicts (``contracts.mapping`` output, lineage filled);
    ``quarantine_rows`` a JSON array of objects with ``QUARANTINE_ROW_KEYS``; ``meta`` describes the
    batch (``BATCH_META_KEYS``: kind live|replay|redrive, stream, shard_id, first/last sequence
    number…; kept whole in the ledger's META). Pass the arrays as ``orjson.dumps`` made them: each
    is bound as one string; only an array longer than ``max_statement_bytes`` is parsed, to split
    it into several INSERTs (same transaction).

    Returns ``already_landed=True`` (and writes nothing) when BATCH_ID is in the ledger. Raises
    ``WarehouseUnavailable`` (transient: retry, nothing was written) or ``WarehouseQueryError``.
    """
    started = time.perf_counter()
    if not batch_id:
        raise ValueError("batch_id is required")
    db = _database(conn)
    params: dict[str, Any] = {"batch_id": batch_id, "landed_at": _utcnow()}

    def result(already: bool, n: int = 0, q: int = 0) -> LandResult:
        return LandResult(batch_id, already, n, q, time.perf_counter() - started)

    with warehouse_errors():
        cur = conn.cursor()
    try:
        with warehouse_errors():
            if _batch_landed(cur, db, batch_id):
                return result(True)
        try:
            landed, n, q = _land(cur, db, params, _json_text(rows), _json_text(quarantine_rows), dict(meta or {}),
                                 max_statement_bytes)
            return result(not landed, n, q)
        except Exception as exc:
            _rollback(cur)
            if not _from_warehouse(exc):
                raise
            error = warehouse_error_from(exc)
            # a racing writer may have landed the same batch: then this was a retry, not a failure
            if isinstance(error, WarehouseConflict) and _batch_landed_quietly(cur, db, batch_id):
                return result(True)
            if error is exc:
                raise
            raise error from exc
    finally:
        cur.close()


def _batch_landed_quietly(cur: Any, db: str, batch_id: str) -> bool:
    try:
        return _batch_landed(cur, db, batch_id)
    except Exception:  # noqa: BLE001 - the caller reports the original error
        return False


# --------------------------------------------------------------------------------------------
# merging
# --------------------------------------------------------------------------------------------

_ORDER_KEYS = (
    # (expression over alias, sentinel that sorts NULL last)
    ("{a}.RECEIVED_AT", "'9999-12-31'::TIMESTAMP_NTZ(6)"),
    ("{a}.SHARD_ID", "'~'"),
    # sequence numbers are decimal strings of up to 129 digits: left-pad to compare as numbers
    ("LPAD({a}.SEQUENCE_NUMBER, 130, '0')", "'~'"),
)


def _order_key(alias: str) -> list[str]:
    return [f"COALESCE({expr.format(a=alias)}, {null_last})" for expr, null_last in _ORDER_KEYS]


def _not_after(src: str, tgt: str) -> str:
    """SQL: the copy in ``src`` sorts before, or ties with, the copy in ``tgt``."""
    s, t = _order_key(src), _order_key(tgt)
    cond = f"{t[-1]} < {s[-1]}"
    for i in range(len(s) - 2, -1, -1):
        cond = f"{t[i]} < {s[i]} OR ({t[i]} = {s[i]} AND ({cond}))"
    return f"NOT ({cond})"


def _replace(column: str) -> str:
    # identity stitching fills PERSON_ID on stored rows later: an earlier copy must not erase it
    if column == "PERSON_ID":
        return "PERSON_ID = COALESCE(src.PERSON_ID, tgt.PERSON_ID)"
    return f"{column} = src.{column}"


def _merge_sql(db: str) -> str:
    content = [c.name for c in EVENT_COLUMNS] + ["BATCH_ID"]
    events, landing, ledger = (qualified(db, t) for t in (CANONICAL_EVENTS, LANDING_EVENTS, LANDED_BATCHES))
    order = ", ".join(_order_key("l")) + ", l.LANDED_AT DESC, l.BATCH_ID DESC, l.RAW_OFFSET"
    seen = (
        "DUPLICATE_COUNT = tgt.DUPLICATE_COUNT + src.COPIES,\n"
        "    FIRST_SEEN_AT = LEAST(COALESCE(tgt.FIRST_SEEN_AT, src.COPIES_FIRST_SEEN_AT),"
        " COALESCE(src.COPIES_FIRST_SEEN_AT, tgt.FIRST_SEEN_AT)),\n"
        "    LAST_SEEN_AT = GREATEST(COALESCE(tgt.LAST_SEEN_AT, src.COPIES_LAST_SEEN_AT),"
        " COALESCE(src.COPIES_LAST_SEEN_AT, tgt.LAST_SEEN_AT)),\n"
        "    FIRST_LANDED_AT = LEAST(COALESCE(tgt.FIRST_LANDED_AT, src.COPIES_FIRST_LANDED_AT),"
        " COALESCE(src.COPIES_FIRST_LANDED_AT, tgt.FIRST_LANDED_AT)),\n"
        "    MERGED_AT = %(now)s::TIMESTAMP_NTZ(6)"
    )
    inserted = [*content, "DUPLICATE_COUNT", "FIRST_SEEN_AT", "LAST_SEEN_AT", "FIRST_LANDED_AT", "MERGED_AT"]
    values = [*(f"src.{c}" for c in content), "src.COPIES - 1", "src.COPIES_FIRST_SEEN_AT",
              "src.COPIES_LAST_SEEN_AT", "src.COPIES_FIRST_LANDED_AT", "%(now)s::TIMESTAMP_NTZ(6)"]
    return f"""MERGE INTO {events} tgt USING (
  SELECT {', '.join('l.' + c for c in content)},
         COUNT(*) OVER (PARTITION BY l.EVENT_ID) AS COPIES,
         MIN(l.RECEIVED_AT) OVER (PARTITION BY l.EVENT_ID) AS COPIES_FIRST_SEEN_AT,
         MAX(l.RECEIVED_AT) OVER (PARTITION BY l.EVENT_ID) AS COPIES_LAST_SEEN_AT,
         MIN(l.LANDED_AT) OVER (PARTITION BY l.EVENT_ID) AS COPIES_FIRST_LANDED_AT
  FROM {landing} l
  JOIN {ledger} b ON b.BATCH_ID = l.BATCH_ID
  WHERE b.MERGE_ID = %(merge_id)s
  QUALIFY ROW_NUMBER() OVER (PARTITION BY l.EVENT_ID ORDER BY {order}) = 1
) src ON tgt.EVENT_ID = src.EVENT_ID
WHEN MATCHED AND {_not_after('src', 'tgt')} THEN UPDATE SET
    {', '.join(_replace(c) for c in content if c != 'EVENT_ID')},
    {seen}
WHEN MATCHED THEN UPDATE SET
    {seen}
WHEN NOT MATCHED THEN INSERT ({', '.join(inserted)})
VALUES ({', '.join(values)})"""  # noqa: S608


def merge_landing(conn: Any, *, max_batches: int | None = None) -> MergeResult:
    """MERGE every unmerged landed batch (the oldest ``max_batches`` when given) into
    CANONICAL.EVENTS, in one transaction. Idempotent: a second run merges nothing.

    Raises ``WarehouseConflict`` (transient) when another merge runs at the same moment on the
    embedded server; on Snowflake the second merge waits for the first instead.
    """
    started = time.perf_counter()
    db = _database(conn)
    ledger = qualified(db, LANDED_BATCHES)
    merge_id = uuid.uuid4().hex
    params: dict[str, Any] = {"merge_id": merge_id, "now": _utcnow()}
    limit = ""
    if max_batches is not None:
        if int(max_batches) <= 0:
            return MergeResult(0, 0, 0, 0, seconds=time.perf_counter() - started)
        params["limit"] = int(max_batches)
        limit = (f" AND BATCH_ID IN (SELECT BATCH_ID FROM {ledger} WHERE MERGED_AT IS NULL"  # noqa: S608
                 " ORDER BY LANDED_AT, BATCH_ID LIMIT %(limit)s)")
    with warehouse_errors():
        cur = conn.cursor()
    try:
        cur.execute("BEGIN")
        cur.execute(f"UPDATE {ledger} SET MERGE_ID = %(merge_id)s, MERGED_AT = %(now)s::TIMESTAMP_NTZ(6)"  # noqa: S608
                    f" WHERE MERGED_AT IS NULL{limit}", params)
        batches = int(cur.rowcount or 0)
        if batches == 0:
            _rollback(cur)
            return MergeResult(0, 0, 0, 0, seconds=time.perf_counter() - started)
        cur.execute(f"SELECT COALESCE(SUM(ROW_COUNT), 0) FROM {ledger} WHERE MERGE_ID = %(merge_id)s", params)  # noqa: S608
        rows_in = int(cur.fetchone()[0])
        inserted = matched = 0
        if rows_in:
            cur.execute(_merge_sql(db), params)
            counts = dict(zip([d.name.lower() for d in cur.description], cur.fetchone() or (), strict=False))
            inserted = int(counts.get("number of rows inserted") or 0)
            matched = int(counts.get("number of rows updated") or 0)
        cur.execute("COMMIT")
        return MergeResult(batches, rows_in, inserted, rows_in - inserted, matched, merge_id,
                           time.perf_counter() - started)
    except Exception as exc:
        _rollback(cur)
        if not _from_warehouse(exc):
            raise
        error = warehouse_error_from(exc)
        if error is exc:
            raise
        raise error from exc
    finally:
        cur.close()


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------

_JSON_TYPES = frozenset({"VARIANT", "OBJECT", "ARRAY"})


def _jsonable(value: Any, is_json: bool) -> Any:
    if value is None:
        return None
    if is_json and isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:  # TIMESTAMP_NTZ: the platform keeps UTC wall time in it
            value = value.replace(tzinfo=dt.UTC)
        return value.isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode()
    return value


def warehouse_query(conn: Any, sql: str, params: Any = None) -> list[dict]:
    """Run one statement; rows as dicts of JSON-able values (timestamps as ISO strings in UTC,
    VARIANT/OBJECT/ARRAY decoded, NUMBERs as int/float). Column names as the warehouse returns them."""
    with warehouse_errors():
        cur = conn.cursor(DictCursor)
        try:
            cur.execute(sql, params)
            if not cur.description:
                return []
            json_cols = {d.name for d in cur.description if FIELD_ID_TO_NAME.get(d.type_code) in _JSON_TYPES}
            return [{k: _jsonable(v, k in json_cols) for k, v in row.items()} for row in cur.fetchall()]
        finally:
            cur.close()


def _lower_keys(rows: list[dict]) -> list[dict]:
    return [{k.lower(): v for k, v in row.items()} for row in rows]


def quarantine_list(
    conn: Any, *, source: str | None = None, reason: str | None = None, status: str | None = None,
    since: dt.datetime | str | None = None, limit: int = 100, offset: int = 0,
) -> list[dict]:
    """Quarantined records, newest first, as dicts with lower-case keys (payload decoded)."""
    where, params = _quarantine_filters(source=source, reason=reason, status=status, since=since)
    params.update(limit=max(0, min(int(limit), 10_000)), offset=max(0, int(offset)))
    sql = (f"SELECT * FROM {qualified(_database(conn), QUARANTINE)}{where}"  # noqa: S608
           " ORDER BY QUARANTINED_AT DESC, QUARANTINE_ID LIMIT %(limit)s OFFSET %(offset)s")
    return _lower_keys(warehouse_query(conn, sql, params))


def quarantine_get(conn: Any, quarantine_id: str) -> dict | None:
    rows = warehouse_query(conn, f"SELECT * FROM {qualified(_database(conn), QUARANTINE)}"  # noqa: S608
                                 " WHERE QUARANTINE_ID = %(id)s", {"id": str(quarantine_id)})
    return _lower_keys(rows)[0] if rows else None


def quarantine_mark(conn: Any, ids: Iterable[str], *, status: str, result: Any = None) -> int:
    """Set STATUS (new | redriven | resolved) of these records, and REDRIVE_RESULT when ``result``
    is given (any JSON value); ``redriven`` also stamps REDRIVEN_AT. Returns rows changed."""
    if status not in QUARANTINE_STATUSES:
        raise ValueError(f"status must be one of {', '.join(QUARANTINE_STATUSES)}, not {status!r}")
    id_list = [str(i) for i in ids]
    if not id_list:
        return 0
    sets = ["STATUS = %(status)s"]
    params: dict[str, Any] = {"status": status, "ids": orjson.dumps(id_list).decode(), "now": _utcnow()}
    if result is not None:
        sets.append("REDRIVE_RESULT = PARSE_JSON(%(result)s)")
        params["result"] = orjson.dumps(result, default=str).decode()
    if status == "redriven":
        sets.append("REDRIVEN_AT = %(now)s::TIMESTAMP_NTZ(6)")
    sql = (f"UPDATE {qualified(_database(conn), QUARANTINE)} SET {', '.join(sets)} WHERE QUARANTINE_ID IN "  # noqa: S608
           "(SELECT value::VARCHAR FROM TABLE(FLATTEN(INPUT => PARSE_JSON(%(ids)s))))")
    with warehouse_errors():
        cur = conn.cursor()
        try:
            cur.execute(sql, params)
            return int(cur.rowcount or 0)
        finally:
            cur.close()


def quarantine_counts(
    conn: Any, *, source: str | None = None, status: str | None = None, since: dt.datetime | str | None = None,
) -> dict[str, int]:
    """Quarantined records per reason code (every known reason present, 0 when none), for dashboards."""
    where, params = _quarantine_filters(source=source, status=status, since=since)
    rows = warehouse_query(conn, f"SELECT REASON_CODE, COUNT(*) AS N FROM {qualified(_database(conn), QUARANTINE)}"  # noqa: S608
                                 f"{where} GROUP BY REASON_CODE", params)
    counts = dict.fromkeys(QUARANTINE_REASONS, 0)
    for row in rows:
        counts[row["REASON_CODE"] or "unknown"] = int(row["N"])
    return counts


def _quarantine_filters(**filters: Any) -> tuple[str, dict[str, Any]]:
    clauses, params = [], {}
    if filters.get("source"):
        clauses.append("SOURCE = %(source)s")
        params["source"] = filters["source"]
    if filters.get("reason"):
        clauses.append("REASON_CODE = %(reason)s")
        params["reason"] = filters["reason"]
    if filters.get("status"):
        if filters["status"] not in QUARANTINE_STATUSES:
            raise ValueError(f"status must be one of {', '.join(QUARANTINE_STATUSES)}")
        clauses.append("STATUS = %(status)s")
        params["status"] = filters["status"]
    if filters.get("since"):
        clauses.append("QUARANTINED_AT >= %(since)s::TIMESTAMP_NTZ(6)")
        params["since"] = _timestamp_param(filters["since"])
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def pipeline_counts(conn: Any) -> dict[str, int]:
    """Totals for the drain command and the portal. After a full merge,
    ``landed_rows == events + duplicates``."""
    db = _database(conn)
    landing, ledger, events, quarantine = (qualified(db, t) for t in
                                           (LANDING_EVENTS, LANDED_BATCHES, CANONICAL_EVENTS, QUARANTINE))
    row = warehouse_query(conn, f"""SELECT
  (SELECT COUNT(*) FROM {landing}) AS LANDED_ROWS,
  (SELECT COUNT(*) FROM {ledger}) AS LANDED_BATCHES,
  (SELECT COUNT(*) FROM {ledger} WHERE MERGED_AT IS NULL) AS UNMERGED_BATCHES,
  (SELECT COALESCE(SUM(ROW_COUNT), 0) FROM {ledger} WHERE MERGED_AT IS NULL) AS UNMERGED_ROWS,
  (SELECT COUNT(*) FROM {events}) AS EVENTS,
  (SELECT COALESCE(SUM(DUPLICATE_COUNT), 0) FROM {events}) AS DUPLICATES,
  (SELECT COUNT(*) FROM {quarantine}) AS QUARANTINED,
  (SELECT COUNT(*) FROM {quarantine} WHERE STATUS = 'new') AS QUARANTINED_NEW""")[0]  # noqa: S608
    return {k.lower(): int(v or 0) for k, v in row.items()}
