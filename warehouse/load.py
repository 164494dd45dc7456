"""Reads of the landing and quarantine tables for the CLI and the portal, and the bound-statement helper.

Thin I/O over an open connection (``warehouse.connection``): every function takes ``conn`` first
and runs plain Snowflake SQL, the same against Snowflake and the embedded fakesnow server. Landing
and merging live in ``warehouse.landing``.

SQL text is assembled only from identifiers checked by ``ddl.check_identifier`` and the generated
column lists; every value is bound (hence the ``noqa: S608`` marks).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from snowflake.connector import DictCursor
from snowflake.connector.constants import FIELD_ID_TO_NAME

from warehouse.connection import WarehouseError, warehouse_errors
from warehouse.ddl import (
    CANONICAL_EVENTS,
    CHANNEL_OFFSETS,
    LANDING_EVENTS,
    LATE_COPIES,
    MERGE_PROGRESS,
    QUARANTINE,
    QUARANTINE_REASONS,
    QUARANTINE_STATUSES,
    check_identifier,
    qualified,
)

__all__ = [
    "execute_bound",
    "quarantine_list",
    "quarantine_get",
    "quarantine_mark",
    "quarantine_counts",
    "warehouse_query",
    "pipeline_counts",
    "QUARANTINE_ROW_KEYS",
]

#: Keys of one quarantine row as the pipeline writes it (``QUARANTINE_ROW`` of a landing row; all
#: optional but ``reason_code``). ``received_at`` is UTC micros; ``payload`` any JSON value, or the
#: record's text (decoded with errors="replace") when it was not JSON.
QUARANTINE_ROW_KEYS: tuple[str, ...] = (
    "quarantine_id", "source", "source_id", "contract_subject", "contract_version", "reason_code",
    "reason_detail", "error_path", "raw_archive_uri", "raw_offset", "stream", "shard_id",
    "sequence_number", "batch_id", "received_at", "payload",
)


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





_NAMED = re.compile(r"%\((\w+)\)s")


def execute_bound(cur: Any, sql: str, params: Mapping[str, Any]) -> Any:
    """Execute with server-side binding (``?``), whatever the connection's paramstyle: a batch's
    JSON travels as a bind value, not inside the SQL text (the server doesn't re-parse megabytes of
    SQL). ``sql`` names its parameters ``%(name)s``."""
    ordered: list[Any] = []

    def mark(m: re.Match) -> str:
        ordered.append(params[m.group(1)])
        return "?"

    return cur.execute(_NAMED.sub(mark, sql), ordered, _force_qmark_paramstyle=True)




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
    """Totals for the drain command and the portal. Once everything is merged,
    ``landed_rows == events + duplicates + late_copies`` unless a record was landed twice."""
    db = _database(conn)
    landing, offsets, progress, events, late, quarantine = (
        qualified(db, t) for t in (LANDING_EVENTS, CHANNEL_OFFSETS, MERGE_PROGRESS, CANONICAL_EVENTS, LATE_COPIES,
                                   QUARANTINE))
    pad = "LPAD({}, 130, '0')"
    row = warehouse_query(conn, f"""SELECT
  (SELECT COUNT(*) FROM {landing} WHERE ROW_KIND = 'event') AS LANDED_ROWS,
  (SELECT COUNT(*) FROM {landing} l LEFT JOIN {progress} p ON p.CHANNEL = l.CHANNEL
     WHERE p.CHANNEL IS NULL OR {pad.format('l.OFFSET_TOKEN')} > {pad.format('p.MERGED_THROUGH')}) AS UNMERGED_ROWS,
  (SELECT COUNT(*) FROM (SELECT o.CHANNEL, MAX({pad.format('o.OFFSET_TOKEN')}) AS T FROM {offsets} o
     WHERE o.OFFSET_TOKEN IS NOT NULL GROUP BY o.CHANNEL) c LEFT JOIN {progress} p ON p.CHANNEL = c.CHANNEL
     WHERE p.CHANNEL IS NULL OR c.T > {pad.format('p.MERGED_THROUGH')}) AS UNMERGED_CHANNELS,
  (SELECT COUNT(*) FROM {events}) AS EVENTS,
  (SELECT COALESCE(SUM(DUPLICATE_COUNT), 0) FROM {events}) AS DUPLICATES,
  (SELECT COUNT(*) FROM {late}) AS LATE_COPIES,
  (SELECT COUNT(*) FROM {quarantine}) AS QUARANTINED,
  (SELECT COUNT(*) FROM {quarantine} WHERE STATUS = 'new') AS QUARANTINED_NEW""")[0]  # noqa: S608
    return {k.lower(): int(v or 0) for k, v in row.items()}
