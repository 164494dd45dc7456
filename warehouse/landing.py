"""Landing (append only) and the merge into ``CANONICAL.EVENTS``: exactly once by construction.

Snowflake enforces no primary key, and UPDATE/DELETE/MERGE statements on one table wait for each
other's locks. So nothing here relies on a key or a conflict (DESIGN decision 7):

* **Landing is append only.** A consumer lands a unit of a shard (events and quarantine rows
  together) through its *channel* with one ``INSERT`` into ``RAW.LANDING_EVENTS`` and, in the same
  transaction, one ``INSERT`` into ``RAW.CHANNEL_OFFSETS`` recording the unit's offset token (the
  last sequence number). A consumer resumes after its channel's committed token, so a crash between
  landing and its checkpoint lands nothing twice; and when a zombie writer does land a range twice,
  the copies carry the same *copy key* (stream/shard/sequence) and count once.
* **One merger** (leased, see ``ingest_workers.services``) claims, per channel, the rows between its
  ``RAW.MERGE_PROGRESS`` and the channel's committed token, and in ONE transaction MERGEs them into
  ``CANONICAL.EVENTS``, MERGEs quarantine rows into ``RAW.QUARANTINE`` (on QUARANTINE_ID), moves the
  progress (never backwards) and appends a ``RAW.MERGE_LOG`` row the curated models read.
* **The merge is idempotent.** The copies an event counted are known (its kept copy, and for an event
  seen more than once every copy in ``RAW.EVENT_COPIES``, a row each, so the event row does not grow
  with them), so merging the same landing rows again counts nothing twice and changes nothing; a copy
  landed again only replaces the stored row when it landed later (a replay after a mapping fix).
* **The MERGE is bounded by an event-date window**: ``ON tgt.EVENT_DATE >= :lo AND tgt.EVENT_DATE =
  src.EVENT_DATE AND tgt.EVENT_ID = src.EVENT_ID``, ``lo`` = the merge's date minus
  ``window_days``. Rows whose event date is older (late events, late copies) never rewrite old
  partitions: a new event is inserted by an insert-only MERGE (a read of its date's partitions), and a
  copy of a stored event is counted in ``RAW.LATE_COPIES`` instead.

Which copy an event keeps: the earliest by (RECEIVED_AT, SHARD_ID, SEQUENCE_NUMBER as a number), NULLs
last; on an exact tie (the same stream record landed again) the later landing wins.

SQL text is assembled only from checked identifiers and generated column lists; values are bound.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pybase64

from warehouse.channels import (
    AppendResult,
    ChannelError,
    ChannelInvalidated,
    ChannelUnavailable,
    offset_after,
)
from warehouse.connection import WarehouseError, warehouse_error_from, warehouse_errors
from warehouse.ddl import (
    CANONICAL_EVENTS,
    CHANNEL_OFFSETS,
    COPY_KEY_SQL,
    DEDUP_WINDOW_DAYS_DEFAULT,
    EVENT_COLUMNS,
    EVENT_COPIES,
    LANDING_EVENTS,
    LATE_COPIES,
    MERGE_LOG,
    MERGE_PROGRESS,
    MERGER_FENCE,
    QUARANTINE,
    check_identifier,
    qualified,
)
from warehouse.load import execute_bound

__all__ = [
    "MergeResult",
    "ChannelRange",
    "MergerFenced",
    "landing_append",
    "landing_rows_json",
    "landing_rows_pieces",
    "channel_committed_tokens",
    "merge_progress",
    "merge_ranges_pending",
    "merge_channels",
    "EmbeddedLandingClient",
    "EmbeddedLandingChannel",
    "offset_key",
    "STATEMENT_MAX_BYTES",
]

#: Snowflake advises at most 1 MB of (compressed) statement text per statement, bound values
#: included; canonical event JSON compresses 4-6x, so an append goes out in statements of at most
#: this many uncompressed bytes (all in one transaction).
STATEMENT_MAX_BYTES = 4 * 1024 * 1024
#: Offset tokens are decimal strings up to 129 digits (Kinesis sequence numbers); compared as text
#: after left-padding to this width.
OFFSET_WIDTH = 130


def offset_key(token: str) -> str:
    return token.rjust(OFFSET_WIDTH, "0")


def _offset_sql(expr: str) -> str:
    return f"LPAD({expr}, {OFFSET_WIDTH}, '0')"


def _database(conn: Any) -> str:
    name = getattr(conn, "database", None)
    if not name:
        raise WarehouseError("The warehouse connection has no current database (settings.SNOWFLAKE['database']).")
    return check_identifier(name)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _ts(value: dt.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(sep=" ", timespec="microseconds")


def _rollback(cur: Any) -> None:
    try:
        cur.execute("ROLLBACK")
    except Exception:  # noqa: BLE001,S110 - the connection may be gone; the server rolls back then
        pass


# --------------------------------------------------------------------------------------------
# landing rows
# --------------------------------------------------------------------------------------------


_JSON_WHITESPACE = b" \t\r\n"


def _array_items(array: bytes | None) -> memoryview:
    """The inside of a JSON array's text (empty when the array is), as a view: a unit's rows are
    megabytes, and each copy of them cost the consumer CPU (bench/bench_consumer.py)."""
    if not array:
        return memoryview(b"")
    inner = array.strip()  # the same object when there is nothing to strip
    if not (inner.startswith(b"[") and inner.endswith(b"]")):
        raise ValueError("rows must be a JSON array")
    start, end = 1, len(inner) - 1
    while start < end and inner[start] in _JSON_WHITESPACE:
        start += 1
    while end > start and inner[end - 1] in _JSON_WHITESPACE:
        end -= 1
    return memoryview(inner)[start:end]


def landing_rows_json(events: bytes | None, quarantine_rows: bytes | list[dict] | None = None) -> bytes:
    """ONE JSON array of landing rows: the canonical events as they are (``orjson.dumps(list)``, not
    re-parsed) followed by each quarantine row wrapped as ``{"quarantine": row}``; the events' text
    is copied once."""
    parts: list[Any] = [p for p in (_array_items(events),) if p]
    if quarantine_rows:
        rows = orjson.loads(quarantine_rows) if isinstance(quarantine_rows, (bytes, str)) else quarantine_rows
        if rows:
            parts.append(memoryview(orjson.dumps([{"quarantine": r} for r in rows]))[1:-1])
    pieces: list[Any] = [b"["]
    for i, part in enumerate(parts):
        if i:
            pieces.append(b",")
        pieces.append(part)
    pieces.append(b"]")
    return b"".join(pieces)


def landing_rows_pieces(event_pieces: Sequence[bytes], quarantine_rows: bytes | list[dict] | None = None, *,
                        max_bytes: int = STATEMENT_MAX_BYTES) -> list[bytes]:
    """A unit's landing rows as several JSON arrays, in order: its batches' pieces of events
    (``BatchResult.landing_json``), neighbours joined into arrays of at most ``max_bytes``, about equal in
    size (an append sends one statement per array, and each statement costs the writer ~1.4 ms of CPU;
    arrays of equal size, not one full and one small, keep each statement's megabytes of base64 and
    request body as small as the count allows), then the quarantine rows: after the last array's
    events, or as an array of their own when they would take it over ``max_bytes``. A piece is never
    split here (one over ``max_bytes`` is left whole, for the append to split)."""
    inside = [(piece, items) for piece in event_pieces if (items := _array_items(piece))]
    # an array of n pieces' insides is 2 brackets + n - 1 commas + their bytes: 1 + the sum of (len + 1)
    total = 1 + sum(len(items) + 1 for _, items in inside)
    target = total / max(1, math.ceil(total / max_bytes))
    joined: list[bytes] = []
    group: list[tuple[bytes, memoryview]] = []
    size = 1
    for piece, items in inside:
        if group and size + len(items) + 1 > max_bytes:
            joined.append(_arrays_joined(group))
            group, size = [], 1
        group.append((piece, items))
        size += len(items) + 1
        if size >= target:
            joined.append(_arrays_joined(group))
            group, size = [], 1
    if group:
        joined.append(_arrays_joined(group))
    quarantine = landing_rows_json(None, quarantine_rows) if quarantine_rows else b"[]"
    if not _array_items(quarantine):
        return joined or [b"[]"]
    if not joined:
        return [quarantine]
    if len(joined[-1]) + len(quarantine) - 1 <= max_bytes:
        joined[-1] = _arrays_joined([(joined[-1], _array_items(joined[-1])), (quarantine, _array_items(quarantine))])
    else:
        joined.append(quarantine)
    return joined


def _arrays_joined(group: list[tuple[bytes, memoryview]]) -> bytes:
    """One JSON array of the elements of several (a lone array as it is: no copy)."""
    if len(group) == 1:
        return group[0][0]
    parts: list[Any] = [b"["]
    for i, (_, items) in enumerate(group):
        if i:
            parts.append(b",")
        parts.append(items)
    parts.append(b"]")
    return b"".join(parts)


def _json_array_chunks(text: bytes, max_bytes: int) -> list[bytes]:
    """Split a JSON array into arrays of at most ``max_bytes`` each (an oversized element alone)."""
    if len(text) <= max_bytes:
        return [text]
    items = orjson.loads(text)
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
    return chunks


def _statement_chunks(pieces: Sequence[bytes | None], max_bytes: int) -> Iterator[bytes]:
    """The JSON arrays one landing statement each: every non-empty piece, split when it is over
    ``max_bytes`` (a unit's pieces are one batch each, so they rarely are)."""
    for piece in pieces:
        if _array_items(piece):
            yield from _json_array_chunks(bytes(piece), max_bytes)  # type: ignore[arg-type]


def _landing_insert_sql(db: str) -> str:
    cols = LANDING_EVENTS.columns
    return (
        f"INSERT INTO {qualified(db, LANDING_EVENTS)} ({', '.join(c.name for c in cols)})\n"  # noqa: S608
        f"SELECT {', '.join(c.select_expr('v.value') for c in cols)}\n"
        "FROM TABLE(FLATTEN(INPUT => PARSE_JSON(BASE64_DECODE_STRING(%(rows)s)))) v"
    )


def landing_append(
    conn: Any, *, channel: str, offset_token: str, rows: bytes | Sequence[bytes], batch_id: str | None = None,
    client_sequencer: int | None = None, max_statement_bytes: int = STATEMENT_MAX_BYTES,
    implicit_transaction: bool = False,
) -> AppendResult:
    """Land one unit on ``channel`` in one INSERT-only transaction, with its offset token.

    ``rows`` is ONE JSON array from ``landing_rows_json``, or several (``landing_rows_pieces``: one
    statement each, in one transaction). With ``client_sequencer`` the append is
    refused (``ChannelInvalidated``) when the channel was reopened by a later writer. Raises
    ``WarehouseUnavailable`` (transient) or ``WarehouseQueryError``; nothing is committed then.
    ``implicit_transaction``: ``conn`` is a session with ``AUTOCOMMIT = FALSE``, where the first INSERT
    begins the transaction (Snowflake's rule, which fakesnow follows): no ``BEGIN`` statement, one
    request less per unit (each costs the consumer ~1.4 ms of connector CPU).
    """
    started = time.perf_counter()
    if not channel or not offset_token or not offset_token.isdigit():
        raise ValueError("an append needs a channel and a decimal offset token")
    db = _database(conn)
    params = {"channel": channel, "offset_token": offset_token, "batch_id": batch_id or f"{channel}/{offset_token}",
              "landed_at": _ts(_utcnow())}
    pieces = [rows] if isinstance(rows, (bytes, bytearray, memoryview)) or rows is None else list(rows)
    count = 0
    with warehouse_errors():
        cur = conn.cursor()
    try:
        with warehouse_errors():
            if not implicit_transaction:
                cur.execute("BEGIN")
            try:
                for chunk in _statement_chunks(pieces, max_statement_bytes):
                    # base64: ASCII without a character to escape, so the request body (JSON,
                    # written by orjson in the embedded client: ``_FastJson``) is copied, never
                    # transcoded; the JSON text itself (non-ASCII, quotes) measured slower. SIMD
                    # base64 straight to a str: the standard library's cost the consumer 2.7 us
                    # of CPU per event (a unit's rows are megabytes), pybase64's a tenth of that
                    execute_bound(cur, _landing_insert_sql(db),
                                  {**params, "rows": pybase64.b64encode_as_string(chunk)})
                    count += int(cur.rowcount or 0)
                # the token, in the same transaction; refused (nothing commits) when a later writer
                # has opened the channel: one statement, no extra round trip for the fence
                cur.execute(
                    f"INSERT INTO {qualified(db, CHANNEL_OFFSETS)} (CHANNEL, OFFSET_TOKEN, CLIENT_SEQUENCER, "  # noqa: S608
                    "ROW_COUNT, COMMITTED_AT) SELECT %(channel)s, %(offset_token)s, %(sequencer)s, %(rows)s, "
                    "CAST(%(landed_at)s AS TIMESTAMP_NTZ(6)) WHERE NOT EXISTS (SELECT 1 FROM "
                    f"{qualified(db, CHANNEL_OFFSETS)} WHERE CHANNEL = %(channel)s AND CLIENT_SEQUENCER > %(fence)s)",
                    {**params, "sequencer": client_sequencer, "rows": count,
                     "fence": client_sequencer if client_sequencer is not None else 2**62})
                if not cur.rowcount:
                    _rollback(cur)
                    raise ChannelInvalidated(f"channel {channel} was reopened by another writer "
                                             f"(this one opened it as {client_sequencer})")
                cur.execute("COMMIT")
            except ChannelError:
                raise
            except Exception:
                _rollback(cur)
                raise
    finally:
        cur.close()
    return AppendResult(channel, offset_token, count, time.perf_counter() - started)


def _latest_sequencer(cur: Any, db: str, channel: str) -> int | None:
    cur.execute(f"SELECT MAX(CLIENT_SEQUENCER) FROM {qualified(db, CHANNEL_OFFSETS)} WHERE CHANNEL = %(c)s",  # noqa: S608
                {"c": channel})
    row = cur.fetchone()
    return int(row[0]) if row and row[0] is not None else None


def channel_committed_tokens(conn: Any, channels: list[str] | None = None) -> dict[str, str]:
    """The committed offset token of every channel the embedded writer has landed on (or of
    ``channels``): the greatest token recorded for it."""
    db = _database(conn)
    where, params = "", {}
    if channels is not None:
        if not channels:
            return {}
        where = " WHERE CHANNEL IN (SELECT value::VARCHAR FROM TABLE(FLATTEN(INPUT => PARSE_JSON(%(names)s))))"
        params["names"] = orjson.dumps(list(channels)).decode()
    with warehouse_errors():
        cur = conn.cursor()
        try:
            cur.execute(f"SELECT CHANNEL, MAX({_offset_sql('OFFSET_TOKEN')}) FROM {qualified(db, CHANNEL_OFFSETS)}"  # noqa: S608
                        f"{where} GROUP BY CHANNEL", params)
            return {name: (token.lstrip("0") or "0") for name, token in cur.fetchall() if token is not None}
        finally:
            cur.close()


def merge_progress(conn: Any) -> dict[str, str]:
    """How far each channel is merged (channel → offset token)."""
    return {channel: token for channel, (token, _at) in _merge_progress_rows(conn).items()}


def _merge_progress_rows(conn: Any) -> dict[str, tuple[str, dt.datetime | None]]:
    db = _database(conn)
    with warehouse_errors():
        cur = conn.cursor()
        try:
            cur.execute(f"SELECT CHANNEL, MERGED_THROUGH, MERGED_AT FROM {qualified(db, MERGE_PROGRESS)}")  # noqa: S608
            return {channel: (token, merged_at) for channel, token, merged_at in cur.fetchall()}
        finally:
            cur.close()


# --------------------------------------------------------------------------------------------
# the embedded channel client
# --------------------------------------------------------------------------------------------


class EmbeddedLandingChannel:
    """A channel over the connector: each append commits before it returns."""

    commits_on_append = True

    def __init__(self, client: EmbeddedLandingClient, name: str, sequencer: int):
        self.name = name
        self._client = client
        self._sequencer = sequencer
        self._closed = False
        self._appended: str | None = None  # the last token this channel committed

    def latest_committed_offset_token(self) -> str | None:
        return self._client.latest_committed_offset_tokens([self.name]).get(self.name)

    def append(self, rows: bytes | Sequence[bytes], *, offset_token: str) -> AppendResult:
        if self._closed:
            raise ChannelError(f"channel {self.name} is closed")
        try:
            result = self._client.with_connection(lambda conn: landing_append(
                conn, channel=self.name, offset_token=offset_token, rows=rows,
                batch_id=f"{self.name}/{offset_token}", client_sequencer=self._sequencer,
                implicit_transaction=self._client.implicit_transactions))
            self._appended = offset_token
            return result
        except WarehouseError as err:
            if err.transient:
                raise ChannelUnavailable(f"channel {self.name}: {err}") from err
            raise ChannelError(f"channel {self.name}: {err}") from err

    def wait_for_commit(self, offset_token: str, *, timeout_seconds: float) -> None:
        # appends commit before they return: what this channel appended is committed; anything
        # else is asked of the warehouse
        if self._appended is not None and not offset_after(offset_token, self._appended):
            return
        committed = self.latest_committed_offset_token()
        if offset_after(offset_token, committed):
            raise ChannelUnavailable(f"channel {self.name}: {offset_token} is not committed (at {committed})")

    def close(self) -> None:
        self._closed = True


class _FastGzip:
    """``gzip`` for the connector's request bodies without compression (``gzip.compress`` defaults to
    level 9): the same format, for a body that only crosses the loopback, written as stored blocks
    (``gzip_stored_member``)."""

    _chatorbit_level = 0

    def __getattr__(self, name: str) -> Any:
        import gzip

        return getattr(gzip, name)

    def compress(self, data: bytes, compresslevel: int = 0, **kwargs: Any) -> bytes:
        import gzip

        level = min(compresslevel, self._chatorbit_level)
        if level == 0 and not kwargs:
            return gzip_stored_member(data)
        return gzip.compress(data, compresslevel=level, **kwargs)


_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no flags, no mtime, OS unknown
_STORED_BLOCK_MAX = 0xFFFF


def gzip_stored_member(data: bytes) -> bytes:
    """One gzip member (RFC 1952) holding ``data`` in stored deflate blocks (RFC 1951 §3.2.4): what
    ``zlib.compress(data, 0, 31)`` writes, in one CRC-32 pass and one copy. zlib's own level 0 still
    runs its deflate loop over every byte: on a unit's 3 MB request body it measured 0.8 to 4 ms
    against this one's 0.7 to 0.9 ms (the spread is zlib's, by content)."""
    import struct
    import zlib

    view = memoryview(data)
    size = len(data)
    parts: list[bytes | memoryview] = [_GZIP_HEADER]
    if not size:
        parts.append(b"\x01\x00\x00\xff\xff")  # one final, empty stored block
    for start in range(0, size, _STORED_BLOCK_MAX):
        block = view[start:start + _STORED_BLOCK_MAX]
        final = 1 if start + _STORED_BLOCK_MAX >= size else 0
        parts.append(struct.pack("<BHH", final, len(block), len(block) ^ 0xFFFF))
        parts.append(block)
    parts.append(struct.pack("<II", zlib.crc32(data), size & 0xFFFFFFFF))
    return b"".join(parts)


class _FastJson:
    """``json`` for the connector's request bodies, written by orjson: a landing unit's rows travel
    as one bind value of megabytes, which ``json.dumps`` (the connector's) escaped several times
    slower. Same JSON (non-ASCII text as UTF-8 instead of ``\\u`` escapes, both valid); anything
    orjson refuses (an unknown type, an integer over 64 bits) goes to ``json.dumps`` as before."""

    def __getattr__(self, name: str) -> Any:
        import json

        return getattr(json, name)

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        try:
            return orjson.dumps(obj).decode()
        except orjson.JSONEncodeError:
            import json

            return json.dumps(obj, **kwargs)


class _StatementDeadline:
    """The connector's per-statement timeout (``_TrackedQueryCancellationTimer``, a
    ``threading.Timer``: one new thread per statement, started and cancelled around every request),
    kept by one watchdog thread for the whole process instead: the same call (the cursor's
    cancel-query) after the same interval, unless cancelled first. A landing unit runs four
    statements; their timer threads cost the consumer more CPU than its whole checkpoint step
    (bench/bench_consumer.py). Same interface as the timer: ``start``, ``cancel``, ``executed``."""

    __slots__ = ("interval", "function", "args", "kwargs", "executed", "deadline", "cancelled")

    def __init__(self, interval: float, function: Any, args: Any = None, kwargs: Any = None):
        self.interval = interval
        self.function = function
        self.args = list(args or ())
        self.kwargs = dict(kwargs or {})
        self.executed = False  # the function ran (the cursor words its "canceled" error by it)
        self.deadline = 0.0
        self.cancelled = False

    def start(self) -> None:
        self.deadline = time.monotonic() + float(self.interval)
        _statement_watchdog.add(self)

    def cancel(self) -> None:
        self.cancelled = True
        # the watchdog keeps a cancelled deadline until it is due: let go of the cursor meanwhile
        self.function, self.args, self.kwargs = None, [], {}

    def fire(self) -> None:
        function, args, kwargs = self.function, self.args, self.kwargs
        if self.cancelled or function is None:
            return
        # marked before the cancel request, not after it returns (as the connector's timer does): the
        # server's "canceled" answer to the statement can reach the cursor first, which then words the
        # error as the server's instead of "cancelled by the client due to a timeout" (seen under load)
        self.executed = True
        function(*args, **kwargs)


class _StatementWatchdog:
    """One daemon thread that fires due ``_StatementDeadline``s, earliest first; each fires in a
    thread of its own (cancelling a statement is a request to the server, which must not hold up
    the next deadline). A cancelled deadline stays queued until it is due, then is dropped: a
    statement's start costs one heap push under a lock, and the thread wakes only when a deadline
    earlier than every queued one arrives."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _StatementDeadline]] = []
        self._count = 0
        self._thread: threading.Thread | None = None

    def add(self, deadline: _StatementDeadline) -> None:
        import heapq

        with self._cond:
            self._count += 1
            heapq.heappush(self._heap, (deadline.deadline, self._count, deadline))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="warehouse-statement-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is deadline:
                self._cond.notify()

    def queued(self) -> int:
        with self._cond:
            return len(self._heap)

    def _run(self) -> None:
        import heapq

        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                due, _, deadline = self._heap[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            if not deadline.cancelled:
                threading.Thread(target=deadline.fire, name="warehouse-statement-cancel", daemon=True).start()


_statement_watchdog = _StatementWatchdog()


def _statement_watchdog_renew() -> None:
    """A forked child (a prefork pool's worker) starts with no statement of its own and without the
    parent's thread, whose lock may have been held at the fork: it gets a fresh watchdog."""
    global _statement_watchdog
    _statement_watchdog = _StatementWatchdog()


os.register_at_fork(after_in_child=_statement_watchdog_renew)


def _connector_requests_fast() -> None:
    """Make the connector's requests cheaper in CPU for the embedded writer, whose landing sends a
    unit's rows as one bind value of megabytes to a server on the loopback (each was measured with
    bench/bench_consumer.py):

    * the connector gzips every request body at level 9: level 0 instead (``_FastGzip``);
    * it writes the request body with ``json.dumps``: orjson instead (``_FastJson``);
    * it tries to import OpenTelemetry for every request, to add trace headers: without the package
      the failed import searched every ``sys.path`` entry each time; it is now remembered as missing;
    * it starts a timer thread per statement for the statement timeout: one watchdog thread keeps
      every statement's deadline instead (``_StatementDeadline``), cancelling as the timer did.

    Only the embedded landing client applies this (production lands through Snowpipe Streaming,
    not these requests). Each is skipped if the connector no longer has the hook."""
    import importlib.util
    import sys

    import snowflake.connector.cursor as cursor
    import snowflake.connector.network as network

    if not isinstance(getattr(network, "gzip", None), _FastGzip) and hasattr(network, "gzip"):
        network.gzip = _FastGzip()  # type: ignore[assignment]
    if not isinstance(getattr(network, "json", None), _FastJson) and hasattr(network, "json"):
        network.json = _FastJson()  # type: ignore[assignment]
    if "opentelemetry" not in sys.modules and importlib.util.find_spec("opentelemetry") is None:
        sys.modules["opentelemetry"] = None  # type: ignore[assignment]  # import fails at once, as it would
    if hasattr(cursor, "_TrackedQueryCancellationTimer"):
        cursor._TrackedQueryCancellationTimer = _StatementDeadline  # type: ignore[assignment,misc]


def _no_environment_proxies(conn: Any) -> None:
    """The connector's HTTP sessions of ``conn`` stop reading proxy settings from the environment for
    every request (requests' ``trust_env``: two walks over ``os.environ`` per statement, about a third
    of a statement's CPU in the connector): the embedded server is on the loopback. Proxies given to
    the connector itself (``proxy_host``) still apply."""
    manager = getattr(conn, "_session_manager", None)
    make = getattr(manager, "make_session", None)
    if manager is None or make is None or getattr(make, "_chatorbit_no_env", False):
        return

    def make_session(*args: Any, **kwargs: Any) -> Any:
        session = make(*args, **kwargs)
        session.trust_env = False
        return session

    make_session._chatorbit_no_env = True  # type: ignore[attr-defined]
    manager.make_session = make_session
    for pool in list(getattr(manager, "sessions_map", {}).values()):
        for session in [*getattr(pool, "_idle_sessions", ()), *getattr(pool, "_active_sessions", ())]:
            session.trust_env = False


class EmbeddedLandingClient:
    """The embedded default's ``LandingClient``: one pooled connector connection per client (per
    process), reopened when it breaks. Thread-safe: appends from several threads take turns."""

    def __init__(self, connect: Any = None, *, implicit_transactions: bool = True):
        from warehouse.connection import warehouse_connect

        _connector_requests_fast()
        #: the session is switched to AUTOCOMMIT = FALSE once connected: a write begins a transaction, and
        #: every write on it here ends with COMMIT or ROLLBACK (so an append needs no BEGIN statement)
        self.implicit_transactions = implicit_transactions
        self._connect = connect or (lambda: warehouse_connect(workload="ingest"))
        self._conn: Any = None
        self._lock = threading.Lock()
        self._sequencers: dict[str, int] = {}

    def with_connection(self, work: Any) -> Any:
        with self._lock:
            if self._conn is None:
                conn = self._connect()
                _no_environment_proxies(conn)
                if self.implicit_transactions:
                    try:
                        with warehouse_errors(during="connect"):
                            conn.autocommit(False)  # ALTER SESSION SET AUTOCOMMIT = FALSE
                    except Exception:
                        with contextlib.suppress(Exception):
                            conn.close()
                        raise
                self._conn = conn
            try:
                return work(self._conn)
            except WarehouseError as err:
                if err.transient:  # the next call logs in again
                    self._drop()
                raise
            except Exception as exc:
                error = warehouse_error_from(exc) if not isinstance(exc, ChannelError) else exc
                if isinstance(error, WarehouseError) and error.transient:
                    self._drop()
                raise

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001,S110 - it is broken already
                pass

    def open_channel(self, name: str) -> EmbeddedLandingChannel:
        # a new sequencer fences the previous writer of the channel (as reopening a Snowpipe
        # Streaming channel does): recorded as an empty offsets row carrying the current token
        def reopen(conn: Any) -> int:
            db = _database(conn)
            with warehouse_errors():
                cur = conn.cursor()
                try:
                    latest = _latest_sequencer(cur, db, name) or 0
                    sequencer = max(latest, int(time.time_ns())) + 1
                    try:
                        cur.execute(
                            f"INSERT INTO {qualified(db, CHANNEL_OFFSETS)} (CHANNEL, OFFSET_TOKEN, "  # noqa: S608
                            "CLIENT_SEQUENCER, ROW_COUNT, COMMITTED_AT) VALUES (%(c)s, NULL, %(s)s, 0, "
                            "CAST(%(t)s AS TIMESTAMP_NTZ(6)))",
                            {"c": name, "s": sequencer, "t": _ts(_utcnow())})
                        if self.implicit_transactions:  # the INSERT began a transaction: end it
                            cur.execute("COMMIT")
                    except Exception:
                        if self.implicit_transactions:
                            _rollback(cur)
                        raise
                    return sequencer
                finally:
                    cur.close()

        try:
            sequencer = self.with_connection(reopen)
        except WarehouseError as err:
            raise (ChannelUnavailable if err.transient else ChannelError)(f"channel {name}: {err}") from err
        self._sequencers[name] = sequencer
        return EmbeddedLandingChannel(self, name, sequencer)

    def latest_committed_offset_tokens(self, names: list[str]) -> dict[str, str | None]:
        try:
            found = self.with_connection(lambda conn: channel_committed_tokens(conn, names))
        except WarehouseError as err:
            raise (ChannelUnavailable if err.transient else ChannelError)(str(err)) from err
        return {name: found.get(name) for name in names}

    def close(self) -> None:
        with self._lock:
            self._drop()


# --------------------------------------------------------------------------------------------
# merging
# --------------------------------------------------------------------------------------------


class MergerFenced(WarehouseError):
    """A merger with a newer fencing token has merged: this one's lease was taken over. Stop."""


@dataclass(frozen=True)
class ChannelRange:
    channel: str
    after: str | None  # merged through this token already (None: nothing merged yet)
    through: str  # merge rows up to and including this token
    #: when the channel was last merged (None: never): its unmerged rows landed after this, less
    #: the longest a landing can take to commit (CLAIM_MARGIN)
    merged_at: dt.datetime | None = None


@dataclass(frozen=True)
class MergeResult:
    ranges: int  # channel ranges merged by this call
    rows_in: int  # landing rows (event copies and quarantine rows) in those ranges
    events_inserted: int  # new rows in CANONICAL.EVENTS
    events_updated: int  # stored rows changed (new copies counted, or an earlier copy kept)
    late_copies: int = 0  # copies that arrived after the window, counted in RAW.LATE_COPIES
    quarantined: int = 0  # new RAW.QUARANTINE rows
    merge_id: str | None = None
    seconds: float = 0.0


def merge_ranges_pending(conn: Any, committed: Mapping[str, str | None] | None = None) -> list[ChannelRange]:
    """Every channel whose committed token is past its merge progress. ``committed`` defaults to the
    embedded writer's channel state; pass the Snowpipe Streaming channels' tokens in production."""
    tokens = dict(channel_committed_tokens(conn))
    if committed:
        tokens.update({k: v for k, v in committed.items() if v})
    progress = _merge_progress_rows(conn)
    ranges = []
    for name, token in sorted(tokens.items()):
        after, merged_at = progress.get(name, (None, None))
        if token and offset_after(token, after):
            ranges.append(ChannelRange(name, after, token, merged_at))
    return ranges


#: the longest a landing may take between stamping LANDED_AT and committing: a claim reads rows
#: landed after its channels' last merge less this (so it never reads the whole landing table)
CLAIM_MARGIN = dt.timedelta(hours=1)
#: how far back a channel never merged before may have landed: the stream's retention and a day
NEW_CHANNEL_LOOKBACK = dt.timedelta(days=8)


def _claim_from(ranges: list[ChannelRange], now: dt.datetime) -> dt.datetime:
    """The earliest LANDED_AT any claimed row can have: Snowflake prunes the landing table (in
    landing order) to what came since, instead of reading every copy ever landed."""
    starts = [(r.merged_at.replace(tzinfo=None) if r.merged_at is not None else now - NEW_CHANNEL_LOOKBACK)
              for r in ranges]
    return min(starts) - CLAIM_MARGIN


_ORDER_KEYS = (
    # (expression over alias, sentinel that sorts NULL last)
    ("{a}.RECEIVED_AT", "'9999-12-31'::TIMESTAMP_NTZ(6)"),
    ("{a}.SHARD_ID", "'~'"),
    ("LPAD({a}.SEQUENCE_NUMBER, 130, '0')", "'~'"),
)


def _order_key(alias: str) -> list[str]:
    return [f"COALESCE({expr.format(a=alias)}, {null_last})" for expr, null_last in _ORDER_KEYS]


def _before(src: str, tgt: str) -> str:
    """SQL: the copy in ``src`` sorts strictly before the copy in ``tgt``."""
    s, t = _order_key(src), _order_key(tgt)
    cond = f"{s[-1]} < {t[-1]}"
    for i in range(len(s) - 2, -1, -1):
        cond = f"{s[i]} < {t[i]} OR ({s[i]} = {t[i]} AND ({cond}))"
    return f"({cond})"


def _same_copy_order(src: str, tgt: str) -> str:
    s, t = _order_key(src), _order_key(tgt)
    return "(" + " AND ".join(f"{a} = {b}" for a, b in zip(s, t, strict=True)) + ")"


def _copy_key(alias: str) -> str:
    return COPY_KEY_SQL.format(a=alias)


def _counted_join(db: str, copy: str) -> str:
    """SQL: LEFT JOIN ``k``, the row of RAW.EVENT_COPIES that counted the copy in alias ``copy`` (its
    EVENT_DATE, EVENT_ID, COPY_KEY)."""
    return (f"LEFT JOIN {qualified(db, EVENT_COPIES)} k ON k.EVENT_DATE = {copy}.EVENT_DATE "
            f"AND k.EVENT_ID = {copy}.EVENT_ID AND k.COPY_KEY = {copy}.COPY_KEY")


def _known(copy_key: str, tgt: str) -> str:
    """SQL: the copy is one the stored row counted already: its kept copy, or one in RAW.EVENT_COPIES
    (``_counted_join`` as ``k``)."""
    return f"({copy_key} = {_copy_key(tgt)} OR k.COPY_KEY IS NOT NULL)"


_CONTENT = [c.name for c in EVENT_COLUMNS] + ["EVENT_DATE", "BATCH_ID"]
#: columns that differ between two landings of one stream record without the event differing
_SAME_RECORD_VOLATILE = frozenset({"INGESTED_AT", "LINEAGE", "RAW_ARCHIVE_URI", "RAW_OFFSET", "BATCH_ID", "PERSON_ID"})


def _ranges_sql(count: int) -> str:
    """The claimed ranges as a relation (bound as ``range_<i>_channel/after/through``); a UNION ALL
    of one-row SELECTs, which every engine runs anywhere in a statement."""
    return " UNION ALL ".join(
        f"SELECT CAST(%(range_{i}_channel)s AS VARCHAR) AS CHANNEL, CAST(%(range_{i}_after)s AS VARCHAR) AS AFTER_KEY, "
        f"CAST(%(range_{i}_through)s AS VARCHAR) AS THROUGH_KEY, CAST(%(range_{i}_token)s AS VARCHAR) AS TOKEN"
        for i in range(count))


def _claim_sql(db: str, ranges: int, *, kind: str | None, late: bool | None, copy_key: str | None = None) -> str:
    """Landing rows of the claimed channel ranges (bound as ``range_<i>_*``): of one ``kind`` (any
    when None), in the window or before it (``late``), with ``copy_key`` (SQL over ``l``) as COPY_KEY."""
    landing = qualified(db, LANDING_EVENTS)
    cols = [*_CONTENT, "LANDED_AT", "QUARANTINE_ROW", "CHANNEL", "OFFSET_TOKEN", "ROW_KIND"]
    date_cond = ""
    if late is True:
        date_cond = " AND l.EVENT_DATE < CAST(%(lo)s AS DATE)"
    elif late is False:
        date_cond = " AND l.EVENT_DATE >= CAST(%(lo)s AS DATE)"
    kind_cond = f"l.ROW_KIND = '{kind}' AND " if kind else ""
    return (
        f"SELECT {', '.join('l.' + c for c in cols)}, {copy_key or _copy_key('l')} AS COPY_KEY "  # noqa: S608
        f"FROM {landing} l JOIN ({_ranges_sql(ranges)}) r "
        f"ON l.CHANNEL = r.CHANNEL AND {_offset_sql('l.OFFSET_TOKEN')} > r.AFTER_KEY "
        f"AND {_offset_sql('l.OFFSET_TOKEN')} <= r.THROUGH_KEY "
        f"WHERE {kind_cond}l.LANDED_AT >= CAST(%(claim_from)s AS TIMESTAMP_NTZ(6)){date_cond}"
    )


def _claim_counts_sql(db: str, ranges: int) -> str:
    """One read of the claim: its events in the window, its late events, its quarantine rows."""
    event, late = "c.ROW_KIND = 'event'", "c.EVENT_DATE < CAST(%(lo)s AS DATE)"
    return (f"SELECT COALESCE(SUM(CASE WHEN {event} AND NOT {late} THEN 1 ELSE 0 END), 0), "  # noqa: S608
            f"COALESCE(SUM(CASE WHEN {event} AND {late} THEN 1 ELSE 0 END), 0), "
            "COALESCE(SUM(CASE WHEN c.ROW_KIND = 'quarantine' THEN 1 ELSE 0 END), 0) "
            f"FROM ({_claim_sql(db, ranges, kind=None, late=None)}) c")


def _source_sql(db: str, ranges: int, *, late: bool) -> str:
    """Per event of the claim: its kept copy, its distinct copies in the claim (COPIES), the rows this
    merge added to RAW.EVENT_COPIES for it (NEW_SIDE, by its merge id; ``_event_copies_merge_sql`` ran
    first) and the span of the copies' times. No lookup of CANONICAL.EVENTS: the side-table statement
    made the one for the window, and the MERGE's ON clause reads the stored row."""
    copies = qualified(db, EVENT_COPIES)
    claim = _claim_sql(db, ranges, kind="event", late=late)
    order = ", ".join(_order_key("c")) + ", c.LANDED_AT DESC, c.BATCH_ID DESC"
    # late events are only inserted (a stored one's late copies go to RAW.LATE_COPIES): no NEW_SIDE, and no
    # read of the side table's years of partitions before the window
    new_side = f"""
LEFT JOIN (
  SELECT s.EVENT_DATE, s.EVENT_ID, COUNT(*) AS NEW_SIDE FROM {copies} s
  WHERE s.MERGE_ID = %(merge_id)s AND s.EVENT_DATE >= CAST(%(lo)s AS DATE) AND NOT COALESCE(s.WAS_KEPT, FALSE)
  GROUP BY s.EVENT_DATE, s.EVENT_ID
) n ON n.EVENT_DATE = k.EVENT_DATE AND n.EVENT_ID = k.EVENT_ID""" if not late else ""  # noqa: S608
    return f"""SELECT {', '.join('k.' + c for c in _CONTENT)}, k.LANDED_AT AS KEPT_LANDED_AT,
       a.COPIES, {'0' if late else 'COALESCE(n.NEW_SIDE, 0)'} AS NEW_SIDE,
       a.COPIES_FIRST_SEEN_AT, a.COPIES_LAST_SEEN_AT, a.COPIES_FIRST_LANDED_AT
FROM (
  SELECT c.* FROM ({claim}) c
  QUALIFY ROW_NUMBER() OVER (PARTITION BY c.EVENT_DATE, c.EVENT_ID ORDER BY {order}) = 1
) k
JOIN (
  SELECT EVENT_DATE, EVENT_ID, COUNT(*) AS COPIES,
         MIN(RECEIVED_AT) AS COPIES_FIRST_SEEN_AT, MAX(RECEIVED_AT) AS COPIES_LAST_SEEN_AT,
         MIN(LANDED_AT) AS COPIES_FIRST_LANDED_AT
  FROM (
    SELECT c.EVENT_DATE, c.EVENT_ID, c.COPY_KEY, MIN(c.RECEIVED_AT) AS RECEIVED_AT, MIN(c.LANDED_AT) AS LANDED_AT
    FROM ({claim}) c
    GROUP BY c.EVENT_DATE, c.EVENT_ID, c.COPY_KEY
  ) g
  GROUP BY EVENT_DATE, EVENT_ID
) a ON a.EVENT_DATE = k.EVENT_DATE AND a.EVENT_ID = k.EVENT_ID{new_side}"""  # noqa: S608


def _replace(column: str) -> str:
    # identity stitching fills PERSON_ID on stored rows later: an earlier copy must not erase it
    if column == "PERSON_ID":
        return "PERSON_ID = COALESCE(src.PERSON_ID, tgt.PERSON_ID)"
    return f"{column} = src.{column}"


#: SQL: copies of a stored event this merge counts for the first time: the rows ``_event_copies_merge_sql``
#: added to RAW.EVENT_COPIES under this merge's id, less the stored kept copy's row (WAS_KEPT), which it
#: adds when the event had none there yet. Read from the rows themselves, not from the stored count, so a
#: side table that lost rows cannot make a later merge count the kept copy again.
_NEW_COPIES = "src.NEW_SIDE"

_SEEN = (
    "DUPLICATE_COUNT = tgt.DUPLICATE_COUNT + " + _NEW_COPIES + ",\n"
    "    FIRST_SEEN_AT = LEAST(COALESCE(tgt.FIRST_SEEN_AT, src.COPIES_FIRST_SEEN_AT),"
    " COALESCE(src.COPIES_FIRST_SEEN_AT, tgt.FIRST_SEEN_AT)),\n"
    "    LAST_SEEN_AT = GREATEST(COALESCE(tgt.LAST_SEEN_AT, src.COPIES_LAST_SEEN_AT),"
    " COALESCE(src.COPIES_LAST_SEEN_AT, tgt.LAST_SEEN_AT)),\n"
    "    FIRST_LANDED_AT = LEAST(COALESCE(tgt.FIRST_LANDED_AT, src.COPIES_FIRST_LANDED_AT),"
    " COALESCE(src.COPIES_FIRST_LANDED_AT, tgt.FIRST_LANDED_AT)),\n"
    "    MERGED_AT = CAST(%(now)s AS TIMESTAMP_NTZ(6))"
)


def _insert_clause() -> str:
    inserted = [*_CONTENT, "KEPT_LANDED_AT", "DUPLICATE_COUNT", "FIRST_SEEN_AT", "LAST_SEEN_AT",
                "FIRST_LANDED_AT", "MERGED_AT"]
    values = [*(f"src.{c}" for c in _CONTENT), "src.KEPT_LANDED_AT", "src.COPIES - 1", "src.COPIES_FIRST_SEEN_AT",
              "src.COPIES_LAST_SEEN_AT", "src.COPIES_FIRST_LANDED_AT", "CAST(%(now)s AS TIMESTAMP_NTZ(6))"]
    return f"WHEN NOT MATCHED THEN INSERT ({', '.join(inserted)})\nVALUES ({', '.join(values)})"


def _window_merge_sql(db: str, ranges: int) -> str:
    events = qualified(db, CANONICAL_EVENTS)
    changed = " OR ".join(f"src.{c} IS DISTINCT FROM tgt.{c}" for c in _CONTENT if c not in _SAME_RECORD_VOLATILE)
    # an exact tie is the same stream record landed again: it replaces the row only when it landed
    # later AND says something else (a replay after a mapping fix), not when a retry re-landed it
    replace_when = (f"{_before('src', 'tgt')} OR ({_same_copy_order('src', 'tgt')} "
                    "AND src.KEPT_LANDED_AT > COALESCE(tgt.KEPT_LANDED_AT, '1970-01-01'::TIMESTAMP_NTZ(6)) "
                    f"AND ({changed}))")
    return f"""MERGE INTO {events} tgt USING (
{_source_sql(db, ranges, late=False)}
) src ON tgt.EVENT_DATE >= CAST(%(lo)s AS DATE) AND tgt.EVENT_DATE = src.EVENT_DATE AND tgt.EVENT_ID = src.EVENT_ID
WHEN MATCHED AND ({replace_when}) THEN UPDATE SET
    {', '.join(_replace(c) for c in _CONTENT if c not in ('EVENT_ID', 'EVENT_DATE'))},
    KEPT_LANDED_AT = src.KEPT_LANDED_AT,
    {_SEEN}
WHEN MATCHED AND {_NEW_COPIES} > 0 THEN UPDATE SET
    {_SEEN}
{_insert_clause()}"""  # noqa: S608


def _late_events_merge_sql(db: str, ranges: int) -> str:
    events = qualified(db, CANONICAL_EVENTS)
    return f"""MERGE INTO {events} tgt USING (
{_source_sql(db, ranges, late=True)}
) src ON tgt.EVENT_DATE < CAST(%(lo)s AS DATE) AND tgt.EVENT_DATE = src.EVENT_DATE AND tgt.EVENT_ID = src.EVENT_ID
{_insert_clause()}"""  # noqa: S608


def _event_copies_merge_sql(db: str, ranges: int) -> str:
    """Record in RAW.EVENT_COPIES every copy the claim adds to an event's DUPLICATE_COUNT, and the stored
    kept copy of such an event (so it stays known as counted when an earlier copy displaces it): copies of
    events with more than one copy in all, under this merge's id. Late copies of stored events are not
    among them (counted in RAW.LATE_COPIES). Runs before the events' MERGEs; this is the merge's one lookup
    of the window's stored events for the claim (each claimed copy twice: as itself, and as the row's kept
    copy, ``p.K``), so the side table costs no extra scan of CANONICAL.EVENTS."""
    events, copies = qualified(db, CANONICAL_EVENTS), qualified(db, EVENT_COPIES)
    lo = "CAST(%(lo)s AS DATE)"
    return f"""MERGE INTO {copies} tgt USING (
  SELECT x.EVENT_DATE, x.EVENT_ID, x.COPY_KEY, MIN(x.RECEIVED_AT) AS RECEIVED_AT, MIN(x.LANDED_AT) AS LANDED_AT,
         MAX(x.K) = 1 AS WAS_KEPT
  FROM (
    SELECT c.EVENT_DATE, c.EVENT_ID, p.K,
           CASE WHEN p.K = 0 THEN c.COPY_KEY ELSE {_copy_key('t')} END AS COPY_KEY,
           CASE WHEN p.K = 0 THEN c.RECEIVED_AT ELSE t.RECEIVED_AT END AS RECEIVED_AT,
           CASE WHEN p.K = 0 THEN c.LANDED_AT ELSE t.KEPT_LANDED_AT END AS LANDED_AT
    FROM ({_claim_sql(db, ranges, kind='event', late=False)}) c
    LEFT JOIN {events} t ON t.EVENT_DATE >= {lo} AND t.EVENT_DATE = c.EVENT_DATE AND t.EVENT_ID = c.EVENT_ID
    JOIN (SELECT 0 AS K UNION ALL SELECT 1 AS K) p ON p.K = 0 OR t.EVENT_ID IS NOT NULL
    UNION ALL
    SELECT c.EVENT_DATE, c.EVENT_ID, 0 AS K, c.COPY_KEY, c.RECEIVED_AT, c.LANDED_AT
    FROM ({_claim_sql(db, ranges, kind='event', late=True)}) c
    LEFT JOIN {events} t ON t.EVENT_DATE < {lo} AND t.EVENT_DATE = c.EVENT_DATE AND t.EVENT_ID = c.EVENT_ID
    WHERE t.EVENT_ID IS NULL
  ) x
  GROUP BY x.EVENT_DATE, x.EVENT_ID, x.COPY_KEY
  QUALIFY COUNT(*) OVER (PARTITION BY x.EVENT_DATE, x.EVENT_ID) > 1
) src ON tgt.EVENT_DATE = src.EVENT_DATE AND tgt.EVENT_ID = src.EVENT_ID AND tgt.COPY_KEY = src.COPY_KEY
WHEN NOT MATCHED THEN INSERT (EVENT_DATE, EVENT_ID, COPY_KEY, RECEIVED_AT, LANDED_AT, MERGE_ID, WAS_KEPT)
VALUES (src.EVENT_DATE, src.EVENT_ID, src.COPY_KEY, src.RECEIVED_AT, src.LANDED_AT, %(merge_id)s, src.WAS_KEPT)"""  # noqa: S608


def _late_copies_merge_sql(db: str, ranges: int) -> str:
    events, late = qualified(db, CANONICAL_EVENTS), qualified(db, LATE_COPIES)
    return f"""MERGE INTO {late} tgt USING (
  SELECT c.EVENT_DATE, c.EVENT_ID, c.COPY_KEY, MIN(c.SOURCE_ID) AS SOURCE_ID,
         MIN(c.RECEIVED_AT) AS RECEIVED_AT, MIN(c.LANDED_AT) AS LANDED_AT
  FROM ({_claim_sql(db, ranges, kind='event', late=True)}) c
  JOIN {events} t ON t.EVENT_DATE < CAST(%(lo)s AS DATE) AND t.EVENT_DATE = c.EVENT_DATE AND t.EVENT_ID = c.EVENT_ID
  {_counted_join(db, 'c')}
  WHERE NOT {_known('c.COPY_KEY', 't')}
  GROUP BY c.EVENT_DATE, c.EVENT_ID, c.COPY_KEY
) src ON tgt.EVENT_DATE = src.EVENT_DATE AND tgt.EVENT_ID = src.EVENT_ID AND tgt.COPY_KEY = src.COPY_KEY
WHEN NOT MATCHED THEN INSERT (EVENT_DATE, EVENT_ID, COPY_KEY, SOURCE_ID, RECEIVED_AT, LANDED_AT, MERGE_ID)
VALUES (src.EVENT_DATE, src.EVENT_ID, src.COPY_KEY, src.SOURCE_ID, src.RECEIVED_AT, src.LANDED_AT, %(merge_id)s)"""  # noqa: S608


def _quarantine_merge_sql(db: str, ranges: int) -> str:
    quarantine = qualified(db, QUARANTINE)
    overrides = {
        # deterministic even for a row that came without an id, so a second merge finds it
        "QUARANTINE_ID": "COALESCE(l.QUARANTINE_ROW:quarantine_id::VARCHAR, MD5(l.COPY_KEY || '/' || "
                         "COALESCE(l.QUARANTINE_ROW:reason_code::VARCHAR, '')))",
        "BATCH_ID": "COALESCE(l.QUARANTINE_ROW:batch_id::VARCHAR, l.BATCH_ID)",
        "QUARANTINED_AT": "l.LANDED_AT",
        "STATUS": "COALESCE(l.QUARANTINE_ROW:status::VARCHAR, 'new')",
        "REDRIVEN_AT": "NULL::TIMESTAMP_NTZ(6)",
        "REDRIVE_RESULT": "NULL::VARIANT",
    }
    cols = [c.name for c in QUARANTINE.columns]
    select = [f"{overrides.get(c.name) or c.select_expr('l.QUARANTINE_ROW')} AS {c.name}" for c in QUARANTINE.columns]
    # a quarantine row's copy key is the record's own stream position, kept in its QUARANTINE_ROW
    claim = _claim_sql(db, ranges, kind="quarantine", late=None,
                       copy_key="COALESCE(l.QUARANTINE_ROW:stream::VARCHAR, '') || '/' || "
                                "COALESCE(l.QUARANTINE_ROW:shard_id::VARCHAR, '') || '/' || "
                                "COALESCE(l.QUARANTINE_ROW:sequence_number::VARCHAR, l.BATCH_ID)")
    return f"""MERGE INTO {quarantine} tgt USING (
  SELECT * FROM (SELECT {', '.join(select)} FROM ({claim}) l) q
  QUALIFY ROW_NUMBER() OVER (PARTITION BY q.QUARANTINE_ID ORDER BY q.QUARANTINED_AT, q.BATCH_ID) = 1
) src ON tgt.QUARANTINE_ID = src.QUARANTINE_ID AND tgt.QUARANTINED_AT >= CAST(%(lo)s AS TIMESTAMP_NTZ(6))
WHEN NOT MATCHED THEN INSERT ({', '.join(cols)}) VALUES ({', '.join('src.' + c for c in cols)})"""  # noqa: S608


def _progress_merge_sql(db: str, ranges: int) -> str:
    progress = qualified(db, MERGE_PROGRESS)
    return f"""MERGE INTO {progress} tgt USING (
  SELECT r.CHANNEL, r.TOKEN FROM ({_ranges_sql(ranges)}) r
) src ON tgt.CHANNEL = src.CHANNEL
WHEN MATCHED AND {_offset_sql('src.TOKEN')} > {_offset_sql('tgt.MERGED_THROUGH')} THEN UPDATE SET
    MERGED_THROUGH = src.TOKEN, MERGE_ID = %(merge_id)s, MERGED_AT = CAST(%(now)s AS TIMESTAMP_NTZ(6))
WHEN NOT MATCHED THEN INSERT (CHANNEL, MERGED_THROUGH, MERGE_ID, MERGED_AT)
VALUES (src.CHANNEL, src.TOKEN, %(merge_id)s, CAST(%(now)s AS TIMESTAMP_NTZ(6)))"""  # noqa: S608


def _counts(cur: Any) -> dict[str, int]:
    row = cur.fetchone() or ()
    return {d.name.lower(): int(v or 0) for d, v in zip(cur.description or (), row, strict=False)}


def _fence_claim(cur: Any, db: str, fence: int | None, params: Mapping[str, Any]) -> None:
    """BEGIN the merge transaction; with a fencing token, raise RAW.MERGER_FENCE to it first, so the
    row lock orders two mergers and a stale one stops before it writes anything."""
    fence_table = qualified(db, MERGER_FENCE)
    if fence is not None:
        cur.execute(f"MERGE INTO {fence_table} t USING (SELECT 'merger' AS NAME) s ON t.NAME = s.NAME "  # noqa: S608
                    "WHEN NOT MATCHED THEN INSERT (NAME, FENCE) VALUES ('merger', 0)")
    cur.execute("BEGIN")
    if fence is not None:
        cur.execute(f"UPDATE {fence_table} SET FENCE = %(fence)s, "  # noqa: S608
                    "UPDATED_AT = CAST(%(now)s AS TIMESTAMP_NTZ(6)) WHERE NAME = 'merger' AND FENCE <= %(fence)s",
                    {**params, "fence": fence})
        if not cur.rowcount:
            _rollback(cur)
            raise MergerFenced(f"merge {params['merge_id']} refused: a merger with a fencing token above {fence} "
                               "has merged (this one's lease was taken over)")


# The merge statements bind client side (pyformat): their values are a few short strings, and
# fakesnow rewrites a MERGE into several statements, which positional server-side binds cannot follow.
def _claim_params(ranges: list[ChannelRange], *, now: dt.datetime, window_days: int,
                  merge_id: str | None = None) -> dict[str, Any]:
    """The bound values of a claim of ``ranges`` merged at ``now`` (``range_<i>_*``, lo, claim_from…)."""
    lo = (now - dt.timedelta(days=window_days)).date()
    params: dict[str, Any] = {
        "merge_id": merge_id, "now": _ts(now), "lo": lo.isoformat(), "claim_from": _ts(_claim_from(ranges, now)),
        "ranges": orjson.dumps([{"channel": r.channel, "after": r.after, "through": r.through}
                                for r in ranges]).decode(),
    }
    for i, r in enumerate(ranges):
        params.update({f"range_{i}_channel": r.channel, f"range_{i}_after": offset_key(r.after or ""),
                       f"range_{i}_through": offset_key(r.through), f"range_{i}_token": r.through})
    return params


def merge_latency(conn: Any, *, ranges: list[ChannelRange], now: dt.datetime, bounds: Sequence[float],
                  late_after_s: float, window_days: int = DEDUP_WINDOW_DAYS_DEFAULT) -> list[dict[str, Any]]:
    """The event copies of ``ranges`` (as ``merge_channels`` claimed them, merged at ``now``) per source id,
    contract and latency bucket: ``{"source_id", "contract", "version", "bucket" (index into ``bounds``, the
    buckets' upper bounds in seconds, the last unbounded), "copies", "sum_s", "late" (event time older than
    ``late_after_s`` at ``now``), "newest_received_at"}``. One read of the claim, after the merge."""
    if not ranges:
        return []
    db = _database(conn)
    params = _claim_params(ranges, now=now, window_days=window_days)
    params["late_ms"] = int(late_after_s * 1000)
    finite = [b for b in bounds if b != float("inf")]
    bucket = "CASE " + " ".join(f"WHEN c.LAT_MS <= {int(b * 1000)} THEN {i}" for i, b in enumerate(finite)) \
        + f" ELSE {len(finite)} END"
    claim = _claim_sql(db, len(ranges), kind="event", late=None)
    sql = (f"SELECT c.SOURCE_ID, c.CONTRACT_NAME, c.CONTRACT_VERSION, {bucket} AS BUCKET, COUNT(*) AS COPIES, "  # noqa: S608
           "SUM(c.LAT_MS) AS SUM_MS, SUM(CASE WHEN c.AGE_MS > %(late_ms)s THEN 1 ELSE 0 END) AS LATE, "
           "MAX(c.RECEIVED_AT) AS NEWEST "
           "FROM (SELECT l.SOURCE_ID, l.CONTRACT:name::VARCHAR AS CONTRACT_NAME, "
           "l.CONTRACT:version::NUMBER(38,0) AS CONTRACT_VERSION, l.RECEIVED_AT, "
           "GREATEST(DATEDIFF('millisecond', l.RECEIVED_AT, CAST(%(now)s AS TIMESTAMP_NTZ(6))), 0) AS LAT_MS, "
           "DATEDIFF('millisecond', l.EVENT_TIME, CAST(%(now)s AS TIMESTAMP_NTZ(6))) AS AGE_MS "
           f"FROM ({claim}) l) c GROUP BY 1, 2, 3, 4")
    with warehouse_errors():
        cur = conn.cursor()
        try:
            cur.execute(sql, params)
            rows = cur.fetchall()
        finally:
            cur.close()
    return [{"source_id": source_id or "", "contract": contract or "", "version": int(version or 0),
             "bucket": int(bucket_index), "copies": int(copies), "sum_s": float(sum_ms or 0) / 1000.0,
             "late": int(late or 0), "newest_received_at": newest}
            for source_id, contract, version, bucket_index, copies, sum_ms, late, newest in rows]


def merge_channels(
    conn: Any, *, ranges: list[ChannelRange] | None = None, committed: Mapping[str, str | None] | None = None,
    window_days: int = DEDUP_WINDOW_DAYS_DEFAULT, now: dt.datetime | None = None, fence: int | None = None,
) -> MergeResult:
    """Merge the landed rows of ``ranges`` (default: every channel's unmerged rows) in ONE
    transaction. Idempotent: merging the same ranges again counts and changes nothing.

    Raises ``WarehouseUnavailable`` (transient: retry; the transaction rolled back) or
    ``WarehouseQueryError``.
    """
    started = time.perf_counter()
    db = _database(conn)
    if window_days < 1:
        raise ValueError("the dedup window is at least one day")
    if ranges is None:
        ranges = merge_ranges_pending(conn, committed)
    # new for every call, never taken from a caller: RAW.EVENT_COPIES tells this merge's rows apart by it, so
    # an id used twice would count the first merge's copies again
    merge_id = uuid.uuid4().hex
    if not ranges:
        return MergeResult(0, 0, 0, 0, merge_id=merge_id, seconds=time.perf_counter() - started)
    now = now or _utcnow()
    params = _claim_params(ranges, now=now, window_days=window_days, merge_id=merge_id)
    with warehouse_errors():
        cur = conn.cursor()
    try:
        _fence_claim(cur, db, fence, params)
        cur.execute(_claim_counts_sql(db, len(ranges)), params)
        in_window, late_in, q_in = (int(n) for n in cur.fetchone())
        late_counts = {"number of rows inserted": 0}
        late_inserted = 0
        if in_window or late_in:
            cur.execute(_event_copies_merge_sql(db, len(ranges)), params)
        if late_in:
            cur.execute(_late_copies_merge_sql(db, len(ranges)), params)
            late_counts = _counts(cur)
            cur.execute(_late_events_merge_sql(db, len(ranges)), params)
            late_inserted = _counts(cur).get("number of rows inserted", 0)
        inserted = updated = 0
        if in_window:
            cur.execute(_window_merge_sql(db, len(ranges)), params)
            counts = _counts(cur)
            inserted, updated = counts.get("number of rows inserted", 0), counts.get("number of rows updated", 0)
        rows_in = in_window + late_in
        quarantined = 0
        if q_in:
            cur.execute(_quarantine_merge_sql(db, len(ranges)), params)
            quarantined = _counts(cur).get("number of rows inserted", 0)
        cur.execute(_progress_merge_sql(db, len(ranges)), params)
        late_copies = late_counts.get("number of rows inserted", 0)
        cur.execute((
            f"INSERT INTO {qualified(db, MERGE_LOG)} (MERGE_ID, MERGED_AT, FENCE, RANGES, ROWS_IN, "  # noqa: S608
            "EVENTS_INSERTED, EVENTS_UPDATED, LATE_COPIES, QUARANTINED) SELECT %(merge_id)s, "
            "CAST(%(now)s AS TIMESTAMP_NTZ(6)), %(fence)s, PARSE_JSON(%(ranges)s), %(rows_in)s, %(inserted)s, "
            "%(updated)s, "
            "%(late)s, %(quarantined)s"),
            {**params, "fence": fence, "rows_in": rows_in + q_in, "inserted": inserted + late_inserted,
             "updated": updated, "late": late_copies, "quarantined": quarantined})
        cur.execute("COMMIT")
    except Exception as exc:
        _rollback(cur)
        error = warehouse_error_from(exc) if not isinstance(exc, WarehouseError) else exc
        if error is exc or not isinstance(error, WarehouseError):
            raise
        raise error from exc
    finally:
        cur.close()
    return MergeResult(
        ranges=len(ranges), rows_in=rows_in + q_in, events_inserted=inserted + late_inserted,
        events_updated=updated, late_copies=late_copies, quarantined=quarantined, merge_id=merge_id,
        seconds=time.perf_counter() - started,
    )

