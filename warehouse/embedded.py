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
  became an HTTP 500, which the connector retries until its network timeout: a hang. They are now
  answered as Snowflake errors; conflicts with Snowflake's lock-conflict code 625 (retryable).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import socket
import string
import subprocess
import sys
import time
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

#: errno/sqlstate the server answers a DuckDB transaction conflict or duplicate key with
#: (Snowflake's "statement aborted: lock held by another transaction").
CONFLICT_ERRNO, CONFLICT_SQLSTATE = 625, "57014"


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
        _patched = True


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

    def conflict(message: str, cause: Exception) -> Exception:
        error = sf_errors.ProgrammingError(msg=message, errno=CONFLICT_ERRNO, sqlstate=CONFLICT_SQLSTATE)
        error.__cause__ = cause
        return error

    def execute(self: Any, command: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(self, command, *args, **kwargs)
        except sf_errors.Error:
            raise
        except duckdb.TransactionException as e:
            text = str(e)
            if any(word in text.lower() for word in ("conflict", "duplicate key", "constraint violation")):
                raise conflict(f"Transaction conflict, rolled back: {text}", e) from e
            raise sf_errors.ProgrammingError(msg=text, errno=90001, sqlstate="25P02") from e
        except duckdb.ConstraintException as e:
            text = str(e)
            if "duplicate key" in text.lower() or "unique constraint" in text.lower():
                # Snowflake does not enforce keys; here a second writer raced for the same key
                raise conflict(f"Duplicate key written by a concurrent transaction: {text}", e) from e
            raise sf_errors.ProgrammingError(msg=text, errno=100072, sqlstate="22000") from e
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
# Serving
# --------------------------------------------------------------------------------------------


def embedded_serve(
    *, path: str | os.PathLike, host: str = "127.0.0.1", port: int = 8765,
    announce: Callable[[str], None] | None = None, log_level: str = "warning", ensure_database: str | None = None,
) -> None:
    """Run the warehouse server in the foreground until SIGINT/SIGTERM; data lives in ``path``.
    With ``ensure_database``, that database's schemas and tables are created (``warehouse_ensure``)
    before the server accepts connections."""
    import fakesnow.server
    import uvicorn
    from fakesnow.instance import FakeSnow

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

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                say(f"warehouse ready on http://{host}:{port} (fakesnow {_fakesnow_version()}, data in {data})")

        async def shutdown(self, sockets: Any = None) -> None:
            await super().shutdown(sockets=sockets)
            # uvicorn re-raises SIGTERM once it has shut down, which ends the process: close first
            close()

    server = Server(uvicorn.Config(fakesnow.server.app, host=host, port=port, log_level=log_level,
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
    wait: bool = True, timeout: float = 30.0,
) -> subprocess.Popen:
    """Start the server as a subprocess (``python -m warehouse.embedded``) and, unless ``wait=False``,
    wait until it accepts connections. Its output goes to ``log_path`` (default ``<path>.log``)."""
    Path(path).mkdir(parents=True, exist_ok=True)
    log_file = Path(log_path) if log_path else Path(f"{Path(path).resolve()}.log")
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "warehouse.embedded", "--path", str(path), "--host", host, "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(root),
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
    args = parser.parse_args(argv)
    embedded_serve(path=args.path, host=args.host, port=args.port, log_level=args.log_level,
                   ensure_database=args.ensure)


if __name__ == "__main__":
    main()
