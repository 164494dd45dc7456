"""The embedded warehouse: fakesnow's HTTP server as ONE process with ONE persistent FakeSnow.

A DuckDB file belongs to one process at a time, so the portal, every Celery worker and the CLI
reach the warehouse the way they reach Snowflake: through ``snowflake-connector-python`` over HTTP
(``warehouse.connection``). This module runs that server (``manage.py warehouse_server`` or
``python -m warehouse.embedded --path DIR --port N``) and starts/stops it for tests.

Each database is one DuckDB file ``<path>/<DATABASE>.db``; every file found there is attached at
start, so data survives restarts.

Fixes to fakesnow 0.12.1, applied in the server process only (the SQL the platform sends
stays plain Snowflake SQL):

* a MERGE whose UPDATE/INSERT expressions use a source column only inside an expression
  (``DUPLICATE_COUNT = tgt.DUPLICATE_COUNT + src.COPIES``) failed: fakesnow copies only bare
  source columns into its ``merge_candidates`` table. Every source column the MERGE mentions is
  now copied.
* that MERGE (it runs through a temporary table) failed inside BEGIN … COMMIT after another write:
  fakesnow recorded the temporary table's comment in a second DuckDB database, and a DuckDB
  transaction may write only one. Temporary tables without a comment are no longer recorded.
* a NULL timestamp was returned as 1970-01-01 00:00:00 (the Arrow struct lacked a validity mask).
* FLATTEN re-serialised and hashed its whole input for every output row: landing a 5,000-event
  batch through ``TABLE(FLATTEN(INPUT => PARSE_JSON(%s)))`` took ~1 s. It now does that once.
* a DuckDB error fakesnow does not translate (write-write conflict, duplicate key, NOT NULL…)
  became an HTTP 500, which the connector retries until its network timeout: a hang. Every one is
  now answered as an ordinary, non-retryable Snowflake error: NOT NULL with Snowflake's 100072,
  the others with errnos only this server uses (``EMBEDDED_*_ERRNO``), never with 625.
* ``INFORMATION_SCHEMA.COLUMNS`` had no ``DATETIME_PRECISION`` column, which Soda's schema check
  selects (quality/): it is now there, as DuckDB reports it (NULL for a non-temporal column).

Snowflake's session semantics, which fakesnow does not have (DESIGN decision 11; details at
"Snowflake's session semantics" below):

* **Table locks.** UPDATE, DELETE, MERGE, TRUNCATE (and INSERT OVERWRITE) take a lock on their
  target table before DuckDB runs them and hold it until the transaction ends (COMMIT, ROLLBACK, the
  session's end; the statement's end in autocommit). Another session's such statement on that table
  WAITS, up to LOCK_TIMEOUT (session parameter; ``--lock-timeout``, default 43200 s as on
  Snowflake), then fails with Snowflake's 000625; so do a deadlock victim and a 51st waiter.
  INSERT and COPY take no lock. ``SHOW LOCKS`` lists holders and waiters. A DuckDB conflict can
  still happen when a transaction read the table's database before it took the lock (DuckDB's
  snapshot is older than the holder's commit; Snowflake re-reads): it is answered as
  ``EMBEDDED_CONFLICT_ERRNO``, not retried.
* **Session expiry.** A session idle (no statement running, no request) for ``--session-idle-seconds``
  (default 60) while it holds a transaction or a lock, or for ``--session-timeout`` (default 4 h, as
  Snowflake) otherwise, is closed: its transaction rolled back, its locks released. A client that
  logs out (``conn.close()``) gets the same at once: the login answer now carries the master token
  the connector needs to send its logout. A request on an ended session is answered 390112
  ("session expired"); the connector then asks ``/session/token-request`` to renew, which is
  refused with 390114 ("authentication token has expired"): the client sees a ProgrammingError
  390114 at once, never a hang.
* **Long statements are answered "in progress"** (333333, as Snowflake's service does) after a few
  seconds and the connector polls ``/queries/<id>/result``, so a statement waiting for a lock never
  outlives the connector's socket timeout, whose retry would run it a second time; a retried request
  (same ``requestId``) joins the statement already running; an abort-request (the connector's
  statement timeout) cancels a lock wait with 000604.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import gzip
import importlib
import itertools
import json
import logging
import os
import re
import socket
import string
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "embedded_serve",
    "embedded_server_start",
    "embedded_server_stop",
    "wait_ready",
    "free_port",
    "EmbeddedServerError",
]

logger = logging.getLogger("warehouse.embedded")

#: Snowflake's code for a statement aborted while it waited for a table lock: "000625 (57014):
#: Statement '…' has locked table '…' in transaction … and this lock has not yet been released. Your
#: statement '…' was aborted because …" (too many waiters: seen verbatim in Snowflake's answers; lock
#: wait timeout and deadlock victim: same code assumed, wording ours). Transient: retry later.
LOCK_ERRNO, LOCK_SQLSTATE = 625, "57014"
#: Snowflake's "SQL execution canceled" (the answer to the client's abort-request)
CANCELED_ERRNO, CANCELED_SQLSTATE = 604, "57014"
#: Snowflake's "NULL result in a non-nullable column" (the connector raises IntegrityError for it)
NOT_NULL_ERRNO, NOT_NULL_SQLSTATE = 100072, "22000"
#: Errors only the embedded engine (DuckDB) raises, answered as ordinary non-retryable errors: a
#: write-write conflict Snowflake's locks would have serialised (a transaction whose DuckDB snapshot
#: predates the lock holder's commit), a key Snowflake would not enforce, a transaction DuckDB
#: aborted after an error in it (Snowflake rolls back only the failed statement).
EMBEDDED_CONFLICT_ERRNO, EMBEDDED_CONFLICT_SQLSTATE = 990001, "40001"
EMBEDDED_CONSTRAINT_ERRNO, EMBEDDED_CONSTRAINT_SQLSTATE = 990002, "23505"
EMBEDDED_TRANSACTION_ERRNO, EMBEDDED_TRANSACTION_SQLSTATE = 990003, "25P02"

#: Snowflake's LOCK_TIMEOUT default: 12 hours.
LOCK_TIMEOUT_DEFAULT = 43200.0
#: Idle seconds after which a session holding a transaction or a lock (a client killed inside a
#: transaction) is closed and its transaction rolled back. Snowflake aborts such a detached
#: transaction after 5 minutes idle if it blocks another one, else after 4 hours.
SESSION_IDLE_SECONDS_DEFAULT = 60.0
#: Idle seconds after which any other session is closed: Snowflake's default idle session timeout.
SESSION_TIMEOUT_SECONDS_DEFAULT = 4 * 3600.0
#: A statement still running after this many seconds is answered "in progress" (the connector polls).
IN_PROGRESS_AFTER_SECONDS_DEFAULT = 10.0
#: Waiters for one table lock beyond which Snowflake aborts a statement (625). Answers from 2019 to
#: 2024 said "exceeds the 20 statements limit", one from 2025 "the 50 statements limit".
MAX_LOCK_WAITERS = 50
#: anyio's default limiter runs 40 threads; statements run in threads (lock waits do not)
SERVER_THREADS = 100


class EmbeddedServerError(RuntimeError):
    """The embedded warehouse server did not start (message includes the end of its log)."""


# --------------------------------------------------------------------------------------------
# fakesnow fixes (server process only)
# --------------------------------------------------------------------------------------------

_patched = False


def _patch_fakesnow() -> None:
    """Apply the fixes listed in the module docstring (once per process)."""
    global _patched
    if not _patched:
        _fix_merge_source_columns()
        _fix_merge_in_transactions()
        _fix_null_timestamps()
        _fix_flatten_cost()
        _fix_errors_become_answers()
        _fix_info_schema_datetime_precision()
        _patched = True


def _fix_info_schema_datetime_precision() -> None:
    # Soda's schema check selects INFORMATION_SCHEMA.COLUMNS.DATETIME_PRECISION (DuckDB has it). Must
    # run before FakeSnow(...) creates the global view; a database file made before the fix works too,
    # because its per-database view is ``select *`` over the global (in-memory) one.
    import fakesnow.info_schema as fs_info

    sql = fs_info.SQL_CREATE_GLOBAL_INFORMATION_SCHEMA_COLUMNS_VIEW
    if "DATETIME_PRECISION" not in sql:
        patched = sql.replace(
            "    null::VARCHAR as DATA_TYPE_ALIAS\n",
            "    null::VARCHAR as DATA_TYPE_ALIAS,\n    columns.datetime_precision AS DATETIME_PRECISION\n",
        )
        if patched == sql:
            raise RuntimeError("fakesnow's INFORMATION_SCHEMA.COLUMNS view changed: update _fix_info_schema_datetime_"
                               "precision (Soda's schema check needs DATETIME_PRECISION)")
        fs_info.SQL_CREATE_GLOBAL_INFORMATION_SCHEMA_COLUMNS_VIEW = patched


def _fix_merge_source_columns() -> None:
    from sqlglot import exp

    # the package re-exports the function ``merge`` under the module's name: take the module itself
    fs_merge = importlib.import_module("fakesnow.transforms.merge")
    original = fs_merge._create_merge_candidates

    def source_columns(merge_expr: exp.Merge, source_name: str) -> dict[str, exp.Column]:
        whens = merge_expr.args.get("whens")
        found: dict[str, exp.Column] = {}
        for when in whens if isinstance(whens, list) else [whens] if whens is not None else []:
            for col in when.find_all(exp.Column):
                table = col.args.get("table")
                if isinstance(table, exp.Identifier) and table.name.upper() == source_name:
                    found.setdefault(col.sql().upper(), col)
        return found

    def create_merge_candidates(merge_expr: exp.Merge) -> Any:
        created = original(merge_expr)
        source = merge_expr.args.get("using")
        alias = source.args.get("alias") if source is not None else None
        name = alias.this if alias is not None else getattr(source, "this", None)
        select = created.find(exp.Select)
        if not isinstance(name, exp.Identifier) or select is None:
            return created
        have = {e.sql().upper() for e in select.expressions}
        wanted = source_columns(merge_expr, name.name.upper())
        extra = [c.copy() for key, c in sorted(wanted.items()) if key not in have]
        if extra:  # keep MERGE_OP (the CASE) last, as fakesnow builds it
            select.set("expressions", [*select.expressions[:-1], *extra, select.expressions[-1]])
        return created

    fs_merge._create_merge_candidates = create_merge_candidates


def _fix_merge_in_transactions() -> None:
    # The MERGE emulation creates a TEMPORARY table; fakesnow records a (None) comment for it in its
    # global catalog, and DuckDB refuses a transaction that writes two attached databases.
    import fakesnow.transforms as fs_transforms
    from sqlglot import exp

    original = fs_transforms.extract_comment_on_table

    def extract_comment_on_table(expression: Any) -> Any:
        new = original(expression)
        if (
            isinstance(new, exp.Create)
            and new.find(exp.TemporaryProperty)
            and (new.args.get("table_comment") or (None, None))[1] is None
        ):
            new.args.pop("table_comment", None)
        return new

    fs_transforms.extract_comment_on_table = extract_comment_on_table


def _fix_null_timestamps() -> None:
    # The Arrow struct Snowflake uses for timestamps was built without a validity mask.
    import fakesnow.arrow as fs_arrow
    import pyarrow as pa
    import pyarrow.compute as pc

    original = fs_arrow.timestamp_to_sf_struct

    def timestamp_to_sf_struct(ts: Any) -> Any:
        if isinstance(ts, pa.ChunkedArray):
            ts = ts.combine_chunks()
        struct = original(ts)
        if not ts.null_count:
            return struct
        children = [pc.fill_null(struct.field(i), 0) for i in range(struct.type.num_fields)]
        return pa.StructArray.from_arrays(children, fields=list(struct.type), mask=ts.is_null())

    fs_arrow.timestamp_to_sf_struct = timestamp_to_sf_struct


def _fix_flatten_cost() -> None:
    # FLATTEN re-serialised and hashed its whole input once per output row (for SEQ and THIS).
    import fakesnow.macros as fs_macros

    fs_macros.FS_FLATTEN = string.Template(_FS_FLATTEN_ONCE)


def _fix_errors_become_answers() -> None:
    import duckdb
    import snowflake.connector.errors as sf_errors
    from fakesnow.cursor import FakeSnowflakeCursor

    original = FakeSnowflakeCursor.execute

    def answer(errno: int, sqlstate: str, message: str, cause: Exception) -> Exception:
        error = sf_errors.ProgrammingError(msg=message, errno=errno, sqlstate=sqlstate)
        error.__cause__ = cause
        return error

    def constraint(text: str, cause: Exception) -> Exception:
        if "not null" in text.lower():
            return answer(NOT_NULL_ERRNO, NOT_NULL_SQLSTATE, f"NULL result in a non-nullable column: {text}", cause)
        return answer(EMBEDDED_CONSTRAINT_ERRNO, EMBEDDED_CONSTRAINT_SQLSTATE,
                      f"The embedded warehouse (DuckDB) enforced a constraint Snowflake does not: {text}", cause)

    def execute(self: Any, command: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(self, command, *args, **kwargs)
        except sf_errors.Error:
            raise
        except duckdb.TransactionException as e:
            text = str(e)
            lowered = text.lower()
            if any(word in lowered for word in ("duplicate key", "constraint violation", "violates")):
                raise constraint(text, e) from e
            if "conflict" in lowered:
                raise answer(EMBEDDED_CONFLICT_ERRNO, EMBEDDED_CONFLICT_SQLSTATE,
                             "The embedded warehouse (DuckDB) detected a write-write conflict: this transaction "
                             "read the database before another one committed a change to the same rows. "
                             f"Snowflake would have waited for the table lock and re-read. {text}", e) from e
            raise answer(EMBEDDED_TRANSACTION_ERRNO, EMBEDDED_TRANSACTION_SQLSTATE, text, e) from e
        except duckdb.ConstraintException as e:
            raise constraint(str(e), e) from e
        except duckdb.Error as e:
            raise sf_errors.ProgrammingError(msg=str(e), errno=100000, sqlstate="22000") from e
        except Exception as e:  # noqa: BLE001 - anything else would become an HTTP 500 retried for minutes
            raise sf_errors.ProgrammingError(
                msg=f"The embedded warehouse (fakesnow) cannot run this statement: {type(e).__name__}: {e}",
                errno=9999, sqlstate="0A000",
            ) from e

    FakeSnowflakeCursor.execute = execute  # type: ignore[method-assign]


_FS_FLATTEN_ONCE = """
CREATE OR REPLACE MACRO ${catalog}._fs_flatten(input) AS TABLE
    WITH src AS MATERIALIZED (
        SELECT j, hash(j)::UBIGINT AS seq,
               CASE WHEN json_type(j) = 'OBJECT'
                    THEN list_transform(json_keys(j), lambda x: struct_pack(k := x, v := CAST(j -> x AS JSON)))
                    ELSE list_transform(CAST(j AS JSON[]), lambda x: struct_pack(k := NULL::VARCHAR, v := x))
               END AS l
        FROM (SELECT TO_JSON(input) AS j)
    )
    SELECT
        src.seq AS SEQ,
        e.k AS KEY,
        COALESCE(e.k, '[' || (e.i - 1) || ']') AS PATH,
        CASE WHEN e.k IS NOT NULL THEN NULL ELSE (e.i - 1)::BIGINT END AS INDEX,
        e.v AS VALUE,
        src.j AS THIS
    FROM src, (SELECT UNNEST(src.l, recursive := true), generate_subscripts(src.l, 1) AS i FROM src) AS e(k, v, i)
"""


# --------------------------------------------------------------------------------------------
# Snowflake's session semantics: table locks, "in progress" answers, session expiry
# --------------------------------------------------------------------------------------------
#
# Everything below runs in the server's event loop (one thread), so its state needs no locks:
# a lock wait is an asyncio future, not a blocked thread; only the statements themselves (and a
# session's final rollback) run in the thread pool.

#: Statements that lock their target table (Snowflake: UPDATE, DELETE, MERGE; TRUNCATE and INSERT
#: OVERWRITE empty it). Other statements are not parsed here.
_FIRST_WORD = re.compile(r"\A\s*(?:(?:--[^\n]*(?:\n|\Z)|/\*.*?\*/)\s*)*([A-Za-z]+)", re.DOTALL)
_PARSED_WORDS = frozenset({"UPDATE", "DELETE", "MERGE", "TRUNCATE", "BEGIN", "START", "COMMIT", "ROLLBACK",
                           "ALTER"})
_INSERT_OVERWRITE = re.compile(r"\s*OVERWRITE\b", re.IGNORECASE)
_SHOW_LOCKS = re.compile(r"\A\s*SHOW\s+LOCKS(?:\s+IN\s+ACCOUNT)?\s*;?\s*\Z", re.IGNORECASE)
#: how many finished statements a session keeps, to answer a retried request without running it again
_FINISHED_KEPT = 2
#: how many ended sessions are remembered, to say why a later request is refused
_ENDED_KEPT = 10_000


class _Refused(Exception):
    """A statement answered with a Snowflake error before DuckDB ran it."""

    def __init__(self, errno: int, sqlstate: str, message: str):
        super().__init__(message)
        self.errno, self.sqlstate, self.message = errno, sqlstate, message


@dataclasses.dataclass(eq=False)
class _Waiter:
    session: _Session
    key: str
    request_id: str
    future: asyncio.Future
    since: dt.datetime


@dataclasses.dataclass(eq=False)
class _TableLock:
    owner: _Session | None = None
    owner_request: str = ""
    acquired_on: dt.datetime | None = None
    waiters: collections.deque = dataclasses.field(default_factory=collections.deque)


@dataclasses.dataclass(eq=False)
class _Session:
    token: str
    master_token: str
    conn: Any  # fakesnow's FakeSnowflakeConnection
    number: int
    lock_timeout: float | None = None  # the LOCK_TIMEOUT session parameter, if the client set it
    last_seen: float = dataclasses.field(default_factory=time.monotonic)
    in_flight: int = 0  # statements running (or waiting for a lock)
    explicit_transaction: bool = False  # BEGIN seen in an autocommit session (fakesnow does not track it)
    transaction_id: int | None = None
    transaction_started: dt.datetime | None = None
    locks: set = dataclasses.field(default_factory=set)
    waiting: _Waiter | None = None
    statements: collections.OrderedDict = dataclasses.field(default_factory=collections.OrderedDict)
    ended: str | None = None  # why it ended (closed by the client, expired)
    closed: bool = False  # rolled back and its DuckDB cursor closed

    def in_transaction(self) -> bool:
        if not self.conn._autocommit:  # noqa: SLF001 - fakesnow tracks implicit transactions itself
            return bool(self.conn._in_transaction)  # noqa: SLF001
        return self.explicit_transaction

    def transaction(self) -> int:
        if self.transaction_id is None:
            self.transaction_started = _now()
            self.transaction_id = time.time_ns()
        return self.transaction_id


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _error_answer(errno: int, sqlstate: str, message: str, query_id: str | None = None) -> Any:
    from starlette.responses import JSONResponse

    code = f"{errno:06d}"
    return JSONResponse({"data": {"errorCode": code, "sqlState": sqlstate, "queryId": query_id},
                         "code": code, "message": message, "success": False})


def _text_result(columns: list[str], rows: list[list[Any]], type_id: int, query_id: str, conn: Any) -> Any:
    """A result of text columns, in the JSON result format the connector reads."""
    from starlette.responses import JSONResponse

    rowtype = [{"name": name, "database": "", "schema": "", "table": "", "nullable": True, "type": "text",
                "byteLength": 16777216, "length": 16777216, "scale": None, "precision": None, "collation": None}
               for name in columns]
    return JSONResponse({
        "data": {"parameters": [{"name": "TIMEZONE", "value": "Etc/UTC"}], "rowtype": rowtype,
                 "rowset": [[None if v is None else str(v) for v in row] for row in rows], "total": len(rows),
                 "queryResultFormat": "json", "queryId": query_id, "statementTypeId": type_id,
                 "finalDatabaseName": conn.database, "finalSchemaName": conn.schema},
        "success": True,
    })


def _ident(node: Any) -> str | None:
    return node.name.upper() if node is not None and getattr(node, "name", None) else None


def _lock_keys(expr: Any, conn: Any) -> list[str]:
    """``DATABASE.SCHEMA.TABLE`` of each table the statement locks (upper case: DuckDB's names are
    case-insensitive, so that is the identity its conflicts use)."""
    from sqlglot import exp

    if isinstance(expr, (exp.Update, exp.Delete, exp.Merge)):
        targets = [expr.this]
    elif isinstance(expr, exp.TruncateTable):
        targets = list(expr.expressions)
    elif isinstance(expr, exp.Insert) and expr.args.get("overwrite"):
        targets = [expr.this.this if isinstance(expr.this, exp.Schema) else expr.this]
    else:
        return []
    keys = []
    for table in targets:
        if not isinstance(table, exp.Table) or not table.name:
            continue
        database = _ident(table.args.get("catalog")) or (conn.database or "").upper()
        schema = _ident(table.args.get("db")) or (conn.schema or "").upper()
        keys.append(f"{database}.{schema}.{table.name.upper()}")
    return sorted(set(keys))


class _Warehouse:
    """The server's sessions with Snowflake's semantics, on top of fakesnow's routes."""

    def __init__(self, *, session_idle_seconds: float, session_timeout_seconds: float,
                 lock_timeout_seconds: float, in_progress_after_seconds: float):
        self.session_idle_seconds = session_idle_seconds
        self.session_timeout_seconds = session_timeout_seconds
        self.lock_timeout_seconds = lock_timeout_seconds
        self.in_progress_after_seconds = in_progress_after_seconds
        self.sessions: dict[str, _Session] = {}
        self.by_master: dict[str, _Session] = {}
        self.ended: collections.OrderedDict[str, str] = collections.OrderedDict()
        self.locks: dict[str, _TableLock] = {}
        self.numbers = itertools.count(1)
        self.reaper: asyncio.Task | None = None

    # ---- routes -----------------------------------------------------------------------------

    def routes(self) -> list[Any]:
        import fakesnow.server as fs_server
        from starlette.routing import Route

        mine = [
            Route("/session/v1/login-request", self.login, methods=["POST"]),
            Route("/session", self.session, methods=["POST"]),
            Route("/session/heartbeat", self.heartbeat, methods=["POST"]),
            Route("/session/token-request", self.token_request, methods=["POST"]),
            Route("/queries/v1/query-request", self.query, methods=["POST"]),
            Route("/queries/v1/abort-request", self.abort, methods=["POST"]),
            Route("/queries/{request_id}/result", self.result, methods=["GET"]),
        ]
        paths = {route.path for route in mine}
        return [*mine, *(route for route in fs_server.routes if route.path not in paths)]

    async def login(self, request: Any) -> Any:
        import fakesnow.server as fs_server
        from starlette.responses import JSONResponse

        answer = await fs_server.login_request(request)
        payload = json.loads(answer.body)
        token = (payload.get("data") or {}).get("token")
        conn = fs_server.sessions.get(token) if token else None
        if conn is None:
            return answer
        params = (_json_body(await request.body(), request) or {}).get("data", {}).get("SESSION_PARAMETERS") or {}
        session = _Session(token=token, master_token=f"master-{uuid.uuid4().hex}", conn=conn,
                           number=next(self.numbers))
        for name, value in params.items():
            if str(name).upper() == "LOCK_TIMEOUT":
                with contextlib.suppress(TypeError, ValueError):
                    session.lock_timeout = _lock_timeout_value(value)
        self.sessions[token] = session
        self.by_master[session.master_token] = session
        # without a master token the connector never sends its logout (rest.delete_session refuses)
        payload["data"]["masterToken"] = session.master_token
        payload["data"]["masterValidityInSeconds"] = int(self.session_timeout_seconds)
        payload["data"]["validityInSeconds"] = int(self.session_timeout_seconds)
        payload["data"]["sessionId"] = session.number
        return JSONResponse(payload)

    async def session(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        session = self._session_of(request)
        if session is None:
            return self._expired_answer(request)
        session.last_seen = time.monotonic()
        if request.query_params.get("delete"):
            await self.end(session, "it was closed by the client")
        return JSONResponse({"data": None, "code": None, "message": None, "success": True})

    async def heartbeat(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        session = self._session_of(request)
        if session is None:
            return self._expired_answer(request)
        session.last_seen = time.monotonic()
        return JSONResponse({"data": None, "code": None, "message": None, "success": True})

    async def token_request(self, request: Any) -> Any:
        """The connector's renewal after 390112: a live session keeps its tokens; an ended one is
        refused with 390114, which the connector raises as a ProgrammingError (no retry, no hang)."""
        from starlette.responses import JSONResponse

        master = _header_token(request)
        session = self.by_master.get(master or "")
        if session is not None and session.ended is None:
            session.last_seen = time.monotonic()
            return JSONResponse({"data": {"sessionToken": session.token, "masterToken": session.master_token,
                                          "validityInSecondsST": int(self.session_timeout_seconds),
                                          "validityInSecondsMT": int(self.session_timeout_seconds)},
                                 "code": None, "message": None, "success": True})
        why = self.ended.get(master or "", "the session is unknown to this server (it may have restarted)")
        return JSONResponse({"data": None, "code": "390114", "success": False,
                             "message": "Authentication token has expired. The user must authenticate again. "
                                        f"(embedded warehouse: the session ended because {why})"})

    async def query(self, request: Any) -> Any:
        session = self._session_of(request)
        if session is None:
            return self._expired_answer(request)
        session.last_seen = time.monotonic()
        request_id = request.query_params.get("requestId") or str(uuid.uuid4())
        statement = session.statements.get(request_id)
        if statement is None:  # a retried request (same requestId) joins the one already running
            body = await request.body()  # read now: the statement may outlive this request
            statement = asyncio.ensure_future(self._statement(session, request, request_id, body))
            session.statements[request_id] = statement
            finished = [rid for rid, task in session.statements.items() if task.done()]
            for rid in finished[:max(0, len(finished) - _FINISHED_KEPT)]:
                del session.statements[rid]
        return await self._answer(session, request_id, statement)

    async def result(self, request: Any) -> Any:
        """``getResultUrl`` of an "in progress" answer: the statement's answer, or "in progress" again."""
        session = self._session_of(request)
        if session is None:
            return self._expired_answer(request)
        session.last_seen = time.monotonic()
        request_id = request.path_params["request_id"]
        statement = session.statements.get(request_id)
        if statement is None:
            return _error_answer(709, "02000", f"Statement {request_id} not found", request_id)
        return await self._answer(session, request_id, statement)

    async def abort(self, request: Any) -> Any:
        """The connector's abort-request (its statement timeout, Ctrl-C): a statement still waiting
        for a lock is canceled; one DuckDB is running finishes (fakesnow cannot interrupt it)."""
        from starlette.responses import JSONResponse

        session = self._session_of(request)
        if session is not None:
            body = _json_body(await request.body(), request) or {}
            waiter = session.waiting
            if waiter is not None and waiter.request_id == str(body.get("requestId")):
                self._cancel_wait(waiter, _Refused(CANCELED_ERRNO, CANCELED_SQLSTATE, "SQL execution canceled"))
        return JSONResponse({"data": None, "code": None, "message": None, "success": True})

    # ---- statements -------------------------------------------------------------------------

    async def _answer(self, session: _Session, request_id: str, statement: asyncio.Future) -> Any:
        from starlette.responses import JSONResponse

        await asyncio.wait({statement}, timeout=self.in_progress_after_seconds)
        session.last_seen = time.monotonic()
        if statement.done():
            answer = statement.result()
            if getattr(answer, "status_code", 200) >= 500:  # fakesnow failed: let a retry run it again
                session.statements.pop(request_id, None)
            return answer
        return JSONResponse({"data": {"queryId": request_id, "getResultUrl": f"/queries/{request_id}/result",
                                      "progressDesc": None, "queryAbortsAfterSecs": 300},
                             "code": "333333", "message": "Query execution in progress", "success": True})

    async def _statement(self, session: _Session, request: Any, request_id: str, body: bytes) -> Any:
        import fakesnow.server as fs_server

        session.in_flight += 1
        expr = None
        try:
            sql = (_json_body(body, request) or {}).get("sqlText") or ""
            if _SHOW_LOCKS.match(sql):
                return self._show_locks(session, request_id)
            expr = _parse_if_needed(sql)
            answer = self._alter_session(session, expr, request_id)
            if answer is not None:
                return answer
            keys = _lock_keys(expr, session.conn) if expr is not None else []
            try:
                for key in keys:
                    await self._acquire(session, key, request_id)
            except _Refused as refused:
                return _error_answer(refused.errno, refused.sqlstate, refused.message, request_id)
            if session.ended is not None:
                return _error_answer(CANCELED_ERRNO, CANCELED_SQLSTATE,
                                     f"SQL execution canceled: the session ended because {session.ended}", request_id)
            return await fs_server.query_request(request)
        finally:
            self._after_statement(session, expr)
            session.in_flight -= 1
            session.last_seen = time.monotonic()
            if session.ended is not None and not session.in_flight and not session.closed:
                await self._close(session)

    def _after_statement(self, session: _Session, expr: Any) -> None:
        from sqlglot import exp

        if session.ended is not None:
            return  # its locks go once its transaction is rolled back
        if isinstance(expr, exp.Transaction):
            session.explicit_transaction = True
        elif isinstance(expr, (exp.Commit, exp.Rollback)):
            session.explicit_transaction = False
        # in autocommit a lock lasts as long as the statement (and any other of this session running)
        if not session.in_transaction() and session.in_flight <= 1:
            self._release(session)

    def _alter_session(self, session: _Session, expr: Any, request_id: str) -> Any:
        """``ALTER SESSION SET|UNSET LOCK_TIMEOUT`` (fakesnow refuses any ALTER SESSION it does not know)."""
        from fakesnow.statement_type import statement_type_id
        from sqlglot import exp

        if not (isinstance(expr, exp.Alter) and str(expr.args.get("kind") or "").upper() == "SESSION"):
            return None
        alter = expr.find(exp.AlterSession)
        items = alter.expressions if alter is not None else []
        values: list[Any] = []
        for item in items:
            target = item.this if isinstance(item, exp.SetItem) else None
            name = target.this if isinstance(target, exp.EQ) else target
            if _ident(name) != "LOCK_TIMEOUT":
                return None
            values.append(target.expression if isinstance(target, exp.EQ) else None)
        if not values:
            return None
        try:
            for value in values:
                session.lock_timeout = None if value is None else _lock_timeout_value(value.name)
        except ValueError:
            return _error_answer(1008, "22023", f"Invalid value [{values[-1].sql()}] for parameter 'LOCK_TIMEOUT'",
                                 request_id)
        return _text_result(["status"], [["Statement executed successfully."]], statement_type_id(expr),
                            request_id, session.conn)

    def _show_locks(self, session: _Session, request_id: str) -> Any:
        from fakesnow.statement_type import SHOW

        rows = []
        for key, lock in sorted(self.locks.items()):
            if lock.owner is not None:
                rows.append([key, "PARTITIONS", lock.owner.transaction(), lock.owner.transaction_started, "HOLDING",
                             lock.acquired_on, lock.owner_request, lock.owner.number])
            rows.extend([key, "PARTITIONS", w.session.transaction(), w.session.transaction_started, "WAITING",
                         None, w.request_id, w.session.number] for w in lock.waiters)
        columns = ["resource", "type", "transaction", "transaction_started_on", "status", "acquired_on",
                   "query_id", "session"]
        return _text_result(columns, rows, SHOW, request_id, session.conn)

    # ---- locks ------------------------------------------------------------------------------

    async def _acquire(self, session: _Session, key: str, request_id: str) -> None:
        lock = self.locks.setdefault(key, _TableLock())
        if lock.owner is session:
            return
        if lock.owner is None:
            self._grant(lock, session, key, request_id)
            return
        held = (f"Statement '{lock.owner_request}' has locked table '{key}' in transaction "
                f"{lock.owner.transaction()} and this lock has not yet been released.\n"
                f"Your statement '{request_id}' was aborted because ")
        if len(lock.waiters) >= MAX_LOCK_WAITERS:
            raise _Refused(LOCK_ERRNO, LOCK_SQLSTATE, held + f"the number of waiters for this lock exceeds the "
                                                            f"{MAX_LOCK_WAITERS} statements limit.")
        if self._would_deadlock(session, lock):
            raise _Refused(LOCK_ERRNO, LOCK_SQLSTATE, held + "waiting for it would deadlock: that transaction "
                                                            "waits for a lock this one holds.")
        timeout = session.lock_timeout if session.lock_timeout is not None else self.lock_timeout_seconds
        waiter = _Waiter(session, key, request_id, asyncio.get_running_loop().create_future(), _now())
        session.transaction()
        lock.waiters.append(waiter)
        session.waiting = waiter
        try:
            await asyncio.wait({waiter.future}, timeout=timeout)
        finally:
            session.waiting = None
        if waiter.future.done():
            waiter.future.result()  # granted, or raises why the wait was canceled
            return
        lock.waiters.remove(waiter)
        raise _Refused(LOCK_ERRNO, LOCK_SQLSTATE, held + f"it waited for this lock longer than LOCK_TIMEOUT "
                                                        f"({timeout:g} seconds).")

    def _grant(self, lock: _TableLock, session: _Session, key: str, request_id: str) -> None:
        lock.owner, lock.owner_request, lock.acquired_on = session, request_id, _now()
        session.locks.add(key)
        session.transaction()

    def _would_deadlock(self, session: _Session, lock: _TableLock) -> bool:
        seen: set[int] = set()
        owner = lock.owner
        while owner is not None and id(owner) not in seen:
            if owner is session:
                return True
            seen.add(id(owner))
            waiting = owner.waiting
            owner = self.locks[waiting.key].owner if waiting is not None and waiting.key in self.locks else None
        return False

    def _cancel_wait(self, waiter: _Waiter, why: _Refused) -> None:
        if not waiter.future.done():
            waiter.future.set_exception(why)
            lock = self.locks.get(waiter.key)
            if lock is not None and waiter in lock.waiters:
                lock.waiters.remove(waiter)

    def _release(self, session: _Session) -> None:
        """End the session's transaction as far as locks go: each lock passes to its first waiter."""
        for key in sorted(session.locks):
            lock = self.locks.get(key)
            if lock is None or lock.owner is not session:
                continue
            lock.owner = None
            while lock.waiters:
                waiter = lock.waiters.popleft()
                if not waiter.future.done():
                    self._grant(lock, waiter.session, key, waiter.request_id)
                    waiter.future.set_result(None)
                    break
            if lock.owner is None:
                del self.locks[key]
        session.locks.clear()
        if not session.in_transaction():
            session.transaction_id = session.transaction_started = None

    # ---- session ends -----------------------------------------------------------------------

    async def end(self, session: _Session, why: str) -> None:
        """End a session: refuse its token from now on, cancel its lock wait, and (once no statement
        of it runs) roll its transaction back and release its locks."""
        if session.ended is not None:
            return
        import fakesnow.server as fs_server

        session.ended = why
        self.sessions.pop(session.token, None)
        self.by_master.pop(session.master_token, None)
        fs_server.sessions.pop(session.token, None)
        for token in (session.token, session.master_token):
            self.ended[token] = why
        while len(self.ended) > _ENDED_KEPT:
            self.ended.popitem(last=False)
        if session.waiting is not None:
            self._cancel_wait(session.waiting, _Refused(CANCELED_ERRNO, CANCELED_SQLSTATE,
                                                        f"SQL execution canceled: the session ended because {why}"))
        if not session.in_flight:
            await self._close(session)
        logger.info("session %s ended: %s", session.number, why)

    async def _close(self, session: _Session) -> None:
        from starlette.concurrency import run_in_threadpool

        session.closed = True
        try:
            await run_in_threadpool(_rollback_and_close, session.conn)
        finally:
            session.explicit_transaction = False
            self._release(session)  # only now: a waiter must not run before the rollback

    async def reap(self) -> None:
        """Close sessions idle for too long (a client killed inside a transaction holds its locks
        until then); a session with a statement running or waiting is never reaped."""
        interval = max(0.05, min(1.0, self.session_idle_seconds / 4, self.session_timeout_seconds / 4))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if session.in_flight or session.ended is not None:
                    continue
                holding = bool(session.locks) or session.in_transaction()
                limit = self.session_idle_seconds if holding else self.session_timeout_seconds
                if now - session.last_seen >= limit:
                    why = f"it was idle for {limit:g} s" + (
                        " inside a transaction, which was rolled back" if holding else "")
                    try:
                        await self.end(session, why)
                    except Exception:  # noqa: BLE001 - one broken session must not stop the reaper
                        logger.exception("closing session %s failed", session.number)

    async def shut_down(self) -> None:
        if self.reaper is not None:
            self.reaper.cancel()
        for session in list(self.sessions.values()):
            if session.waiting is not None:
                self._cancel_wait(session.waiting, _Refused(CANCELED_ERRNO, CANCELED_SQLSTATE,
                                                            "SQL execution canceled: the warehouse is shutting down"))

    # ---- helpers ----------------------------------------------------------------------------

    def _session_of(self, request: Any) -> _Session | None:
        return self.sessions.get(_header_token(request) or "")

    def _expired_answer(self, request: Any) -> Any:
        """Snowflake's "session expired" (390112): the connector answers it with a token-request."""
        from starlette.responses import JSONResponse

        why = self.ended.get(_header_token(request) or "", "it is unknown to this server (it may have restarted)")
        return JSONResponse({"data": None, "code": "390112", "success": False,
                             "message": f"Session no longer exists: it ended because {why}. New login required."})


def _header_token(request: Any) -> str | None:
    auth = request.headers.get("Authorization") or ""
    match = re.fullmatch(r'\s*Snowflake\s+Token="([^"]*)"\s*', auth)
    return match[1] if match else None


def _json_body(body: bytes, request: Any) -> dict | None:
    with contextlib.suppress(ValueError, OSError):
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        value = json.loads(body) if body else None
        return value if isinstance(value, dict) else None
    return None


def _parse_if_needed(sql: str) -> Any:
    """The statement's expression when it may lock, end a transaction or set LOCK_TIMEOUT; else None."""
    from fakesnow.dialect import parse_one

    first = _FIRST_WORD.match(sql)
    if first is None:
        return None
    word = first[1].upper()
    if word not in _PARSED_WORDS and not (word == "INSERT" and _INSERT_OVERWRITE.match(sql, first.end())):
        return None  # INSERT, COPY and queries take no lock: no need to parse them twice
    try:
        return parse_one(sql)
    except Exception:  # noqa: BLE001 - fakesnow answers the syntax error itself
        return None


def _lock_timeout_value(value: Any) -> float:
    seconds = float(str(value).strip().strip("'\""))
    if seconds < 0 or seconds != seconds:  # noqa: PLR0124 - NaN
        raise ValueError(value)
    return seconds


def _rollback_and_close(conn: Any) -> None:
    duck = conn._duck_conn  # noqa: SLF001
    with contextlib.suppress(Exception):  # "no transaction is active" is fine
        duck.rollback()
    with contextlib.suppress(Exception):
        conn.close()


# --------------------------------------------------------------------------------------------
# Serving
# --------------------------------------------------------------------------------------------


def embedded_serve(
    *, path: str | os.PathLike, host: str = "127.0.0.1", port: int = 8765,
    announce: Callable[[str], None] | None = None, log_level: str = "warning", ensure_database: str | None = None,
    session_idle_seconds: float = SESSION_IDLE_SECONDS_DEFAULT,
    lock_timeout_seconds: float = LOCK_TIMEOUT_DEFAULT,
    session_timeout_seconds: float = SESSION_TIMEOUT_SECONDS_DEFAULT,
    in_progress_after_seconds: float = IN_PROGRESS_AFTER_SECONDS_DEFAULT,
) -> None:
    """Run the warehouse server in the foreground until SIGINT/SIGTERM; data lives in ``path``.
    With ``ensure_database``, that database's schemas and tables are created (``warehouse_ensure``)
    before the server accepts connections.

    ``lock_timeout_seconds``: how long a statement waits for a table lock when its session did not
    set LOCK_TIMEOUT. ``session_idle_seconds``: idle time after which a session holding a transaction
    or a lock is closed and rolled back; ``session_timeout_seconds``: idle time after which any other
    session is closed. ``in_progress_after_seconds``: a statement still running then is answered
    "in progress" and the client polls for its result."""
    import anyio.to_thread
    import fakesnow.server
    import uvicorn
    from fakesnow.instance import FakeSnow
    from starlette.applications import Starlette

    data = Path(path)
    data.mkdir(parents=True, exist_ok=True)
    # sqlglot warns for every Snowflake-only clause DuckDB drops (column COMMENTs, TRANSIENT, CLUSTER BY)
    logging.getLogger("sqlglot").setLevel(logging.ERROR)
    # fakesnow logs every login and every refused statement at INFO (the client gets the error anyway)
    fs_logger = logging.getLogger("fakesnow.server")
    fs_logger.setLevel(log_level.upper())
    fs_logger.propagate = False
    warnings.filterwarnings("ignore", message="Arrow output on a DB-API result", category=UserWarning)
    _patch_fakesnow()
    instance = FakeSnow(db_path=str(data))
    fakesnow.server.shared_fs = instance
    # attach every database already on disk, so clients that don't name a database still see them
    for db_file in sorted(data.glob("*.db")):
        if db_file.stem.isidentifier():
            instance.connect(database=db_file.stem).close()
    say = announce or (lambda line: print(line, flush=True))
    if ensure_database:
        from warehouse.ddl import check_identifier, warehouse_ensure

        conn = instance.connect(database=check_identifier(ensure_database), schema="PUBLIC")
        try:
            added = warehouse_ensure(conn).columns_added
        finally:
            conn.close()
        say(f"warehouse tables ready in {ensure_database.upper()}" + (f" (added {', '.join(added)})" if added else ""))

    closed = False

    def close() -> None:
        # fold the write-ahead logs into the database files (committed data is safe either way)
        nonlocal closed
        if not closed:
            closed = True
            with contextlib.suppress(Exception):
                instance.duck_conn.execute("CHECKPOINT")
            with contextlib.suppress(Exception):
                instance.duck_conn.close()

    semantics = _Warehouse(session_idle_seconds=session_idle_seconds, session_timeout_seconds=session_timeout_seconds,
                           lock_timeout_seconds=lock_timeout_seconds,
                           in_progress_after_seconds=in_progress_after_seconds)
    app = Starlette(routes=semantics.routes())

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            # statements run in anyio's thread pool (lock waits do not): more than its default 40
            limiter = anyio.to_thread.current_default_thread_limiter()
            limiter.total_tokens = max(limiter.total_tokens, SERVER_THREADS)
            semantics.reaper = asyncio.ensure_future(semantics.reap())
            await super().startup(sockets=sockets)
            if self.started:
                say(f"warehouse ready on http://{host}:{port} (fakesnow {_fakesnow_version()}, data in {data}; "
                    f"lock timeout {lock_timeout_seconds:g} s, idle sessions in a transaction closed after "
                    f"{session_idle_seconds:g} s)")

        async def shutdown(self, sockets: Any = None) -> None:
            await semantics.shut_down()
            await super().shutdown(sockets=sockets)
            # uvicorn re-raises SIGTERM once it has shut down, which ends the process: close first
            close()

    server = Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                   access_log=False, lifespan="off"))
    try:
        server.run()
    except KeyboardInterrupt:  # Ctrl-C: uvicorn shut down cleanly, then re-raised SIGINT
        pass
    finally:
        close()
    if not server.started:
        raise EmbeddedServerError(f"the warehouse server could not listen on {host}:{port}")


def _fakesnow_version() -> str:
    from importlib.metadata import version

    try:
        return version("fakesnow")
    except Exception:  # noqa: BLE001
        return "?"


# --------------------------------------------------------------------------------------------
# Starting it from tests and scripts
# --------------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def embedded_server_start(
    path: str | os.PathLike, port: int, *, host: str = "127.0.0.1", log_path: str | os.PathLike | None = None,
    wait: bool = True, timeout: float = 30.0, session_idle_seconds: float | None = None,
    lock_timeout_seconds: float | None = None, session_timeout_seconds: float | None = None,
    in_progress_after_seconds: float | None = None,
) -> subprocess.Popen:
    """Start the server as a subprocess (``python -m warehouse.embedded``) and, unless ``wait=False``,
    wait until it accepts connections. Its output goes to ``log_path`` (default ``<path>.log``).
    The timeouts (see ``embedded_serve``) keep the server's defaults unless given."""
    Path(path).mkdir(parents=True, exist_ok=True)
    log_file = Path(log_path) if log_path else Path(f"{Path(path).resolve()}.log")
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    args = [sys.executable, "-m", "warehouse.embedded", "--path", str(path), "--host", host, "--port", str(port)]
    for flag, value in (("--session-idle-seconds", session_idle_seconds), ("--lock-timeout", lock_timeout_seconds),
                        ("--session-timeout", session_timeout_seconds),
                        ("--in-progress-after", in_progress_after_seconds)):
        if value is not None:
            args += [flag, repr(float(value))]
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(root),
        )
    proc.log_path = log_file  # type: ignore[attr-defined]
    if wait:
        try:
            wait_ready(host, port, proc=proc, timeout=timeout)
        except BaseException:
            embedded_server_stop(proc)
            raise
    return proc


def wait_ready(host: str, port: int, *, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    """Block until ``host:port`` accepts TCP connections; raise ``EmbeddedServerError`` if ``proc``
    exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise EmbeddedServerError(
                f"the warehouse server exited with code {proc.returncode}:\n{_log_tail(proc)}"
            )
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        if time.monotonic() > deadline:
            raise EmbeddedServerError(f"the warehouse server did not listen on {host}:{port} within {timeout}s\n"
                                      f"{_log_tail(proc) if proc else ''}")
        time.sleep(0.05)


def embedded_server_stop(proc: subprocess.Popen, timeout: float = 15.0) -> int | None:
    """Stop a server started by ``embedded_server_start`` (SIGTERM, then SIGKILL after ``timeout``)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    return proc.returncode


def _log_tail(proc: subprocess.Popen | None, limit: int = 4000) -> str:
    log_path = getattr(proc, "log_path", None)
    if not log_path:
        return ""
    with contextlib.suppress(OSError):
        return Path(log_path).read_text(errors="replace")[-limit:]
    return ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m warehouse.embedded", description=__doc__.splitlines()[0])
    parser.add_argument("--path", required=True, help="folder holding the warehouse's database files")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--ensure", metavar="DATABASE", help="create this database's tables before serving")
    parser.add_argument("--lock-timeout", type=float, default=LOCK_TIMEOUT_DEFAULT, metavar="SECONDS",
                        help="how long a statement waits for a table lock unless its session sets LOCK_TIMEOUT "
                             "(default: %(default)g, Snowflake's)")
    parser.add_argument("--session-idle-seconds", type=float, default=SESSION_IDLE_SECONDS_DEFAULT, metavar="SECONDS",
                        help="close a session idle this long inside a transaction or holding a lock, rolling it "
                             "back (default: %(default)g)")
    parser.add_argument("--session-timeout", type=float, default=SESSION_TIMEOUT_SECONDS_DEFAULT, metavar="SECONDS",
                        help="close any other session idle this long (default: %(default)g, Snowflake's)")
    parser.add_argument("--in-progress-after", type=float, default=IN_PROGRESS_AFTER_SECONDS_DEFAULT,
                        metavar="SECONDS", help="answer a statement still running 'in progress' after this long "
                                                "(default: %(default)g)")
    args = parser.parse_args(argv)
    embedded_serve(path=args.path, host=args.host, port=args.port, log_level=args.log_level,
                   ensure_database=args.ensure, session_idle_seconds=args.session_idle_seconds,
                   lock_timeout_seconds=args.lock_timeout, session_timeout_seconds=args.session_timeout,
                   in_progress_after_seconds=args.in_progress_after)


if __name__ == "__main__":
    main()
