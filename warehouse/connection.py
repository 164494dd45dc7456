"""The one way the platform reaches Snowflake: ``snowflake-connector-python`` with ``settings.SNOWFLAKE``.

In the embedded default the same connector talks to fakesnow's HTTP server (``warehouse.embedded``);
in production to Snowflake. ``workload=`` ("ingest", "merge", "models", "dashboards") picks that
workload's virtual warehouse from ``settings.SNOWFLAKE_WAREHOUSES``. Errors come back as three kinds a
caller can act on:

* ``WarehouseUnavailable`` (transient: retry later, lose nothing): the server cannot be reached, the
  connection dropped, or (``WarehouseConflict``) a concurrent transaction touched the same rows;
* ``WarehouseQueryError``: the statement itself is wrong (bad SQL, missing table); retrying won't help;
* ``WarehouseError``: the base class (also raised for a refused login).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import snowflake.connector
from snowflake.connector import errors as sf_errors

__all__ = [
    "WarehouseError",
    "WarehouseUnavailable",
    "WarehouseConflict",
    "WarehouseQueryError",
    "WORKLOADS",
    "warehouse_params",
    "warehouse_connect",
    "warehouse_connection",
    "pooled_connection",
    "pool_close",
    "warehouse_errors",
    "warehouse_error_from",
    "CONFLICT_ERRNOS",
]

#: Defaults that keep a dead warehouse from hanging a worker. Login gives up after LOGIN_TIMEOUT s.
#: NETWORK_TIMEOUT bounds the connector's retries of any other request AND is its per-statement
#: timeout (it cancels a statement running longer), so it must exceed the longest legitimate
#: statement. SOCKET_TIMEOUT is the HTTP read timeout (a statement running longer is answered "in
#: progress" and polled, by Snowflake and by the embedded server alike). LOCK_TIMEOUT (seconds a
#: statement waits for another transaction's table lock) stays below NETWORK_TIMEOUT, so a long wait
#: ends as Snowflake's lock-wait error 625 (transient: retry) rather than as a cancelled statement.
LOGIN_TIMEOUT = 10
NETWORK_TIMEOUT = 120
SOCKET_TIMEOUT = 120
LOCK_TIMEOUT = 90
DEFAULT_SCHEMA = "PUBLIC"
#: The workloads that may each have a virtual warehouse of their own (``settings.SNOWFLAKE_WAREHOUSES``).
WORKLOADS = ("ingest", "merge", "models", "dashboards")

#: Retry the transaction: Snowflake's 625 (a statement waited too long for another transaction's
#: lock, or too many statements waited), and the embedded server's 990001: a statement that waited
#: for a lock, as on Snowflake, but whose DuckDB snapshot predates the other transaction's commit
#: (Snowflake re-reads; DuckDB cannot), so the whole transaction is retried instead. Nothing's
#: correctness depends on it (landing never conflicts; the merge is idempotent).
CONFLICT_ERRNOS = frozenset({625, 990001})
#: Connector-side codes for "could not reach / lost the server" (250001 connect failed, 250003 bad
#: HTTP response, 250002 connection closed, 251005/251006 request timeouts, 390114 token expired).
UNAVAILABLE_ERRNOS = frozenset({250001, 250002, 250003, 251005, 251006, 390114})
#: Refused logins: a configuration problem, not worth retrying.
AUTH_ERRNOS = frozenset({390100, 390101, 390102, 390144})


class WarehouseError(Exception):
    """Something went wrong talking to the warehouse; ``.errno``/``.sqlstate`` when Snowflake said why."""

    transient = False

    def __init__(self, message: str, *, errno: int | None = None, sqlstate: str | None = None):
        super().__init__(message)
        self.message = message
        self.errno = errno
        self.sqlstate = sqlstate


class WarehouseUnavailable(WarehouseError):
    """Transient: the warehouse could not serve the request now. Retry later; nothing was written."""

    transient = True


class WarehouseConflict(WarehouseUnavailable):
    """Transient: a concurrent transaction wrote the same rows; this one was rolled back. Retry."""


class WarehouseQueryError(WarehouseError):
    """The statement was refused (syntax, unknown object, bad value). Not transient."""


def warehouse_params(*, workload: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Connector keyword arguments from ``settings.SNOWFLAKE`` plus ``overrides``.

    Empty values are dropped (so a production config without ``host`` lets the connector derive
    ``<account>.snowflakecomputing.com``); extra keys in ``settings.SNOWFLAKE`` (``authenticator``,
    ``private_key_file``, ``private_key``, ``login_timeout`` …) pass through. ``workload`` (one of
    ``WORKLOADS``) sets ``warehouse`` to that workload's warehouse when one is configured, and
    tags its statements (``QUERY_TAG`` ``chatorbit:<workload>``); an explicit ``warehouse=`` wins.
    """
    from django.conf import settings

    params: dict[str, Any] = {
        "schema": DEFAULT_SCHEMA,
        "login_timeout": LOGIN_TIMEOUT,
        "network_timeout": NETWORK_TIMEOUT,
        "socket_timeout": SOCKET_TIMEOUT,
    }
    params.update(getattr(settings, "SNOWFLAKE", {}) or {})
    query_tag = "chatorbit"
    if workload is not None:
        if workload not in WORKLOADS:
            raise ValueError(f"Unknown warehouse workload {workload!r}; the known ones are {', '.join(WORKLOADS)}.")
        workload_warehouse = (getattr(settings, "SNOWFLAKE_WAREHOUSES", None) or {}).get(workload)
        if workload_warehouse:
            params["warehouse"] = workload_warehouse
        query_tag = f"chatorbit:{workload}"
    params.update(overrides)
    session_parameters = {
        # the embedded server has no telemetry endpoint; real Snowflake doesn't need it either
        "CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False,
        # every timestamp the platform writes is UTC (TIMESTAMP_NTZ holding UTC wall time)
        "TIMEZONE": "UTC",
        "LOCK_TIMEOUT": LOCK_TIMEOUT,
        "QUERY_TAG": query_tag,
    }
    session_parameters.update(params.pop("session_parameters", None) or {})
    params["session_parameters"] = session_parameters
    return {k: v for k, v in params.items() if v not in ("", None)}


def warehouse_connect(*, workload: str | None = None, **overrides: Any) -> snowflake.connector.SnowflakeConnection:
    """Open a connection (the caller closes it) on ``workload``'s warehouse when given; raises
    ``WarehouseUnavailable`` within ``login_timeout`` seconds when the server cannot be reached."""
    params = warehouse_params(workload=workload, **overrides)
    with warehouse_errors(during="connect"):
        return snowflake.connector.connect(**params)


@contextlib.contextmanager
def warehouse_connection(
    *, workload: str | None = None, **overrides: Any
) -> Iterator[snowflake.connector.SnowflakeConnection]:
    """``with warehouse_connection(workload="dashboards") as conn:`` for short-lived use; always
    closes, translates errors."""
    conn = warehouse_connect(workload=workload, **overrides)
    try:
        with warehouse_errors():
            yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.close()


#: Idle connections kept per configuration, and how long one is reused before a fresh login (well
#: inside Snowflake's 4-hour idle session expiry and the embedded server's).
POOL_SIZE = 4
POOL_MAX_AGE_SECONDS = 1800
POOL_CONFIGURATIONS = 8

_pool_lock = threading.Lock()
_pool: dict[tuple, list[tuple[float, snowflake.connector.SnowflakeConnection]]] = {}


@contextlib.contextmanager
def pooled_connection(*, workload: str | None = None,
                      **overrides: Any) -> Iterator[snowflake.connector.SnowflakeConnection]:
    """``with pooled_connection(workload="dashboards") as conn:`` for request handlers: a connection
    from this process's pool (a login only when none is idle), given back afterwards unless it failed
    (a transient error drops it, so the next use logs in again). Errors are translated as by
    ``warehouse_connection``. The caller must leave no transaction open."""
    params = warehouse_params(workload=workload, **overrides)
    key = tuple(sorted((k, repr(v)) for k, v in params.items()))
    conn = None
    with _pool_lock:
        idle = _pool.get(key, [])
        while idle and conn is None:
            born, candidate = idle.pop()
            if time.monotonic() - born < POOL_MAX_AGE_SECONDS and not candidate.is_closed():
                conn, conn_born = candidate, born
            else:
                _close_quietly(candidate)
    if conn is None:
        with warehouse_errors(during="connect"):
            conn = snowflake.connector.connect(**params)
        conn_born = time.monotonic()
    healthy = False
    try:
        with warehouse_errors():
            yield conn
        healthy = True
    except WarehouseError as err:
        healthy = not err.transient
        if healthy:  # a refused statement may have left a transaction open: not for the next user
            with contextlib.suppress(Exception):
                conn.cursor().execute("ROLLBACK")
        raise
    finally:
        evicted: list[Any] = []
        with _pool_lock:
            idle = _pool.setdefault(key, [])
            if healthy and len(idle) < POOL_SIZE:
                idle.append((conn_born, conn))
                conn = None
            while len(_pool) > POOL_CONFIGURATIONS:  # e.g. tests, each on a database of its own
                evicted.extend(c for _, c in _pool.pop(next(iter(_pool))))
        for stale in [conn, *evicted]:
            if stale is not None:
                _close_quietly(stale)


def pool_close() -> None:
    """Close every idle pooled connection (at shutdown, while the warehouse still answers)."""
    with _pool_lock:
        idle = [conn for entries in _pool.values() for _, conn in entries]
        _pool.clear()
    for conn in idle:
        _close_quietly(conn)


def _close_quietly(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.close()


@contextlib.contextmanager
def warehouse_errors(*, during: str = "query") -> Iterator[None]:
    """Re-raise connector (and socket) errors inside the block as Warehouse* errors."""
    try:
        yield
    except WarehouseError:
        raise
    except (sf_errors.Error, OSError) as exc:
        raise warehouse_error_from(exc, during=during) from exc


def warehouse_error_from(exc: BaseException, *, during: str = "query") -> WarehouseError:
    """Classify one exception from the connector."""
    if isinstance(exc, WarehouseError):
        return exc
    if isinstance(exc, (OSError, socket.timeout)) and not isinstance(exc, sf_errors.Error):
        return WarehouseUnavailable(f"The warehouse could not be reached ({during}): {exc}")
    errno = getattr(exc, "errno", None)
    sqlstate = getattr(exc, "sqlstate", None)
    msg = (getattr(exc, "raw_msg", None) or getattr(exc, "msg", None) or str(exc)).strip()
    if errno in CONFLICT_ERRNOS:
        return WarehouseConflict(
            f"A concurrent transaction changed the same rows; rolled back, retry: {msg}",
            errno=errno, sqlstate=sqlstate,
        )
    if errno in AUTH_ERRNOS:
        return WarehouseError(f"The warehouse refused the login: {msg}", errno=errno, sqlstate=sqlstate)
    if errno in UNAVAILABLE_ERRNOS or isinstance(exc, (sf_errors.OperationalError, sf_errors.InterfaceError)):
        return WarehouseUnavailable(
            f"The warehouse could not be reached ({during}): {msg}", errno=errno, sqlstate=sqlstate
        )
    if isinstance(exc, (sf_errors.ProgrammingError, sf_errors.DataError, sf_errors.IntegrityError,
                        sf_errors.NotSupportedError)):
        return WarehouseQueryError(msg, errno=errno, sqlstate=sqlstate)
    if isinstance(exc, sf_errors.DatabaseError) and sqlstate and sqlstate.startswith("08"):
        return WarehouseUnavailable(f"The warehouse connection was lost: {msg}", errno=errno, sqlstate=sqlstate)
    return WarehouseError(msg, errno=errno, sqlstate=sqlstate)
