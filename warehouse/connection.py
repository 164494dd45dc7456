"""The one way the platform reaches Snowflake: ``snowflake-connector-python`` with ``settings.SNOWFLAKE``.

In the embedded default the same connector talks to fakesnow's HTTP server (``warehouse.embedded``);
in production to Snowflake. Errors come back as three kinds a caller can act on:

* ``WarehouseUnavailable`` (transient: retry later, lose nothing): the server cannot be reached, the
  connection dropped, or (``WarehouseConflict``) a concurrent transaction touched the same rows;
* ``WarehouseQueryError``: the statement itself is wrong (bad SQL, missing table); retrying won't help;
* ``WarehouseError``: the base class (also raised for a refused login).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import snowflake.connector
from snowflake.connector import errors as sf_errors

__all__ = [
    "WarehouseError",
    "WarehouseUnavailable",
    "WarehouseConflict",
    "WarehouseQueryError",
    "warehouse_params",
    "warehouse_connect",
    "warehouse_connection",
    "warehouse_errors",
    "warehouse_error_from",
    "CONFLICT_ERRNOS",
]

#: Defaults that keep a dead warehouse from hanging a worker. Login gives up after LOGIN_TIMEOUT s.
#: NETWORK_TIMEOUT bounds the connector's retries of any other request AND is its per-statement
#: timeout (it cancels a statement running longer), so it must exceed the longest legitimate
#: statement: keep merges bounded (``merge_landing(max_batches=…)``). SOCKET_TIMEOUT is the HTTP read
#: timeout; the embedded server answers only when a statement is done and the connector re-sends a
#: request that timed out, so it must not be shorter than NETWORK_TIMEOUT (the default 60 s is).
LOGIN_TIMEOUT = 10
NETWORK_TIMEOUT = 120
SOCKET_TIMEOUT = 120
DEFAULT_SCHEMA = "PUBLIC"

#: Snowflake's "lock held by another transaction, statement aborted" code; the embedded server
#: answers a DuckDB write-write conflict with it too (see warehouse.embedded).
CONFLICT_ERRNOS = frozenset({625})
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


def warehouse_params(**overrides: Any) -> dict[str, Any]:
    """Connector keyword arguments from ``settings.SNOWFLAKE`` plus ``overrides``.

    Empty values are dropped (so a production config without ``host`` lets the connector derive
    ``<account>.snowflakecomputing.com``); extra keys in ``settings.SNOWFLAKE`` (``authenticator``,
    ``private_key_file``, ``login_timeout`` …) pass through.
    """
    from django.conf import settings

    params: dict[str, Any] = {
        "schema": DEFAULT_SCHEMA,
        "login_timeout": LOGIN_TIMEOUT,
        "network_timeout": NETWORK_TIMEOUT,
        "socket_timeout": SOCKET_TIMEOUT,
    }
    params.update(getattr(settings, "SNOWFLAKE", {}) or {})
    params.update(overrides)
    session_parameters = {
        # the embedded server has no telemetry endpoint; real Snowflake doesn't need it either
        "CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False,
        # every timestamp the platform writes is UTC (TIMESTAMP_NTZ holding UTC wall time)
        "TIMEZONE": "UTC",
        "QUERY_TAG": "chatorbit",
    }
    session_parameters.update(params.pop("session_parameters", None) or {})
    params["session_parameters"] = session_parameters
    return {k: v for k, v in params.items() if v not in ("", None)}


def warehouse_connect(**overrides: Any) -> snowflake.connector.SnowflakeConnection:
    """Open a connection (the caller closes it); raises ``WarehouseUnavailable`` within
    ``login_timeout`` seconds when the server cannot be reached."""
    params = warehouse_params(**overrides)
    with warehouse_errors(during="connect"):
        return snowflake.connector.connect(**params)


@contextlib.contextmanager
def warehouse_connection(**overrides: Any) -> Iterator[snowflake.connector.SnowflakeConnection]:
    """``with warehouse_connection() as conn:`` for short-lived use; always closes, translates errors."""
    conn = warehouse_connect(**overrides)
    try:
        with warehouse_errors():
            yield conn
    finally:
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
