"""The production landing writer: Snowpipe Streaming through Snowflake's high-performance SDK.

A thin adapter from the ``warehouse.channels`` interface to ``snowpipe-streaming``
(``snowflake.ingest.streaming.StreamingIngestClient``), chosen with ``WAREHOUSE_LANDING_WRITER=snowpipe``
(DESIGN decision 10). One SDK client per process writes to one PIPE; each Kinesis shard has its own
channel; each append carries the unit's last sequence number as its offset token, and a consumer
resumes after the channel's committed token. The embedded default (``warehouse.landing``) implements
the same interface over the connector, so the consumer's logic is one and is tested on that one.

What this module adds to the SDK, and nothing more (the consumer does the retrying):

* settings → SDK properties (``snowpipe_properties``): key-pair auth, the account URL, SDK tunables;
* each landing row gets the values the embedded writer binds as parameters (channel, offset token,
  batch id) under its column's ``path``, so the pipe's ``$1:<path>`` finds them (``landing_row_stamps``);
* SDK errors → ``ChannelUnavailable`` / ``ChannelInvalidated`` / ``ChannelError`` with a message that
  names the account, URL, pipe and channel and what to check, never key material;
* the pipe's DDL, generated from ``warehouse.ddl.LANDING_EVENTS`` (``landing_pipe_ddl``).

The SDK is imported inside ``SnowpipeLandingClient``'s constructor only: importing this module never
loads its Rust library. The SDK cannot be pointed at the embedded warehouse (it speaks a REST API that
fakesnow does not have), so the tests cover the settings, the pipe DDL, the error mapping (with a
stand-in SDK client) and the clear error against a loopback port nobody listens on.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from django.core.exceptions import ImproperlyConfigured

from warehouse.channels import (
    AppendResult,
    ChannelError,
    ChannelInvalidated,
    ChannelUnavailable,
    LandingClient,
    offset_after,
)
from warehouse.ddl import LANDING_EVENTS, Column, Table, check_identifier

__all__ = [
    "WRITERS",
    "DEFAULT_PIPE",
    "SnowpipeLandingClient",
    "SnowpipeLandingChannel",
    "snowpipe_properties",
    "snowpipe_client_from_settings",
    "landing_client_from_settings",
    "landing_writer",
    "landing_pipe_ddl",
    "pipe_select_expr",
    "landing_row_stamps",
]

log = logging.getLogger(__name__)

#: The values of ``settings.WAREHOUSE_LANDING_WRITER``.
WRITERS: tuple[str, ...] = ("embedded", "snowpipe")
DEFAULT_PIPE = "LANDING_EVENTS_STREAMING"
#: An append is sent to the SDK in pieces of at most this many bytes of row JSON (uncompressed).
#: Only the last piece carries the unit's offset token, so a crash between pieces commits no token
#: past what landed whole; pieces that did commit land again on the retry and count once (copy key).
MAX_APPEND_BYTES_DEFAULT = 4 * 1024 * 1024
#: Bound on flushing at close (seconds): what is not committed by then is read again from the shard.
CLOSE_TIMEOUT_SECONDS_DEFAULT = 30
#: SDK tunables set unless ``sdk_properties`` sets them. With the SDK's own defaults, a client that
#: cannot reach Snowflake was still retrying its first call after 400 s (measured, snowpipe-streaming
#: 1.9.1, connection refused); bounded, the consumer gets ``ChannelUnavailable`` and retries itself.
SDK_PROPERTIES_DEFAULT: dict[str, str] = {"mgmt_retry_total_backoff_seconds": "60"}


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


def landing_writer(value: str | None = None) -> str:
    """The configured landing writer (``embedded`` or ``snowpipe``); anything else is refused."""
    if value is None:
        from django.conf import settings

        value = getattr(settings, "WAREHOUSE_LANDING_WRITER", "embedded")
    writer = (value or "").strip().lower()
    if writer not in WRITERS:
        raise ImproperlyConfigured(
            f"WAREHOUSE_LANDING_WRITER must be one of {', '.join(WRITERS)}, not {value!r}: 'embedded' lands "
            "through the warehouse connector (the default), 'snowpipe' through Snowpipe Streaming "
            "(settings.SNOWPIPE_STREAMING, see docs/snowpipe-streaming.md).")
    return writer


def _text(config: Mapping[str, Any], key: str) -> str:
    value = config.get(key)
    return "" if value is None else str(value).strip()


def _pem_text(raw: str) -> bytes:
    # a PEM pasted into one environment variable often carries literal "\n"s
    if "\n" not in raw and "\\n" in raw:
        raw = raw.replace("\\n", "\n")
    return raw.strip().encode() + b"\n"


def _private_key_pem(config: Mapping[str, Any]) -> tuple[str, str]:
    """(unencrypted PKCS#8 PEM the SDK reads, public key fingerprint ``SHA256:…``) from the
    configured key file or PEM text and optional passphrase. Errors name the setting, never the key."""
    from cryptography.hazmat.primitives import hashes, serialization

    path, text = _text(config, "private_key_file"), _text(config, "private_key")
    if path and text:
        raise ImproperlyConfigured("Snowpipe Streaming: set SNOWPIPE_PRIVATE_KEY_FILE or SNOWPIPE_PRIVATE_KEY, "
                                   "not both.")
    if path:
        source = f"SNOWPIPE_PRIVATE_KEY_FILE ({path})"
        try:
            data = Path(path).expanduser().read_bytes()
        except OSError as err:
            raise ImproperlyConfigured(f"Snowpipe Streaming: cannot read {source}: {err.strerror or err}.") from None
    elif text:
        source, data = "SNOWPIPE_PRIVATE_KEY", _pem_text(text)
    else:
        raise ImproperlyConfigured(
            "Snowpipe Streaming needs the user's private key: set SNOWPIPE_PRIVATE_KEY_FILE (a PEM file) or "
            "SNOWPIPE_PRIVATE_KEY (the PEM text); see docs/snowpipe-streaming.md.")
    passphrase = _text(config, "private_key_passphrase")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase.encode() if passphrase else None)
    except TypeError:
        raise ImproperlyConfigured(
            f"Snowpipe Streaming: the key in {source} is encrypted: set SNOWPIPE_PRIVATE_KEY_PASSPHRASE."
            if not passphrase else
            f"Snowpipe Streaming: the key in {source} is not encrypted: unset SNOWPIPE_PRIVATE_KEY_PASSPHRASE."
        ) from None
    except ValueError:
        raise ImproperlyConfigured(
            f"Snowpipe Streaming: {source} is not a PEM private key, or SNOWPIPE_PRIVATE_KEY_PASSPHRASE does "
            "not decrypt it.") from None
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    public_der = key.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(public_der)
    return pem, "SHA256:" + base64.b64encode(digest.finalize()).decode()


def _sdk_tunables(config: Mapping[str, Any]) -> dict[str, str]:
    extra = config.get("sdk_properties") or {}
    if isinstance(extra, (str, bytes)):
        try:
            extra = orjson.loads(extra) if extra.strip() else {}
        except orjson.JSONDecodeError as err:
            raise ImproperlyConfigured(f"SNOWPIPE_SDK_PROPERTIES must be a JSON object: {err}") from None
    if not isinstance(extra, Mapping):
        raise ImproperlyConfigured("SNOWPIPE_SDK_PROPERTIES must be a JSON object of SDK properties.")
    secret = {"private_key", "private_key_file", "private_key_passphrase", "account", "user", "url"}
    clash = sorted(secret & set(extra))
    if clash:
        raise ImproperlyConfigured(f"SNOWPIPE_SDK_PROPERTIES must not set {', '.join(clash)}: use their own settings.")
    # the SDK reads every property as text (its seconds are whole numbers)
    return {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in extra.items()}


def snowpipe_properties(config: Mapping[str, Any]) -> dict[str, str]:
    """The ``properties`` handed to ``StreamingIngestClient`` from a ``settings.SNOWPIPE_STREAMING``-like
    dict: key-pair (JWT) auth with ``account``, ``user``, ``private_key`` (unencrypted PKCS#8 PEM: a key
    file or an encrypted key is read and decrypted here, so errors are clear and the SDK sees one form)
    and ``url`` (``https://<account>.snowflakecomputing.com`` unless set), plus ``sdk_properties``
    (retry/timeout tunables, e.g. ``mgmt_retry_total_backoff_seconds``)."""
    account, user = _text(config, "account"), _text(config, "user")
    if not account:
        raise ImproperlyConfigured("Snowpipe Streaming needs SNOWPIPE_ACCOUNT (or SNOWFLAKE_ACCOUNT): "
                                   "the account identifier, e.g. myorg-myaccount.")
    if not user:
        raise ImproperlyConfigured("Snowpipe Streaming needs SNOWPIPE_USER (or SNOWFLAKE_USER): the user whose "
                                   "RSA_PUBLIC_KEY matches the private key.")
    url = _text(config, "url") or f"https://{account}.snowflakecomputing.com"
    if not url.lower().startswith("https://"):
        raise ImproperlyConfigured(f"SNOWPIPE_URL must be an https:// URL (the SDK speaks only HTTPS), not {url!r}.")
    pem, _fingerprint = _private_key_pem(config)
    return {
        **SDK_PROPERTIES_DEFAULT,
        **_sdk_tunables(config),
        "authorization_type": "JWT",
        "account": account,
        "user": user,
        "private_key": pem,
        "url": url.rstrip("/"),
    }


def _default_client_name() -> str:
    return f"chatorbit-ingest-{socket.gethostname().split('.')[0]}-{os.getpid()}"


# --------------------------------------------------------------------------------------------
# the pipe
# --------------------------------------------------------------------------------------------

#: Bind parameters of the embedded writer's INSERT (``warehouse.landing``) that the pipe computes
#: itself. A Snowpipe Streaming pipe is a ``COPY INTO … FROM (SELECT … FROM TABLE(DATA_SOURCE(TYPE =>
#: 'STREAMING')))``: it has no bind parameters. LANDED_AT is the time the pipe loads the row, in UTC
#: like the embedded writer's. (Snowflake's CREATE PIPE page warns that CURRENT_TIMESTAMP in a
#: file-based Snowpipe COPY can read hours earlier than the load, and suggests METADATA$START_SCAN_TIME
#: there; streaming pipes in Snowflake's and partners' examples use CURRENT_TIMESTAMP(). Check it
#: against a real account when the pipe is first created.)
PIPE_SIDE_PARAMETERS: dict[str, str] = {
    "landed_at": "CONVERT_TIMEZONE('UTC', CURRENT_TIMESTAMP())::TIMESTAMP_NTZ(6)",
}
#: Bind parameters whose value the adapter puts into every row it appends, under the column's
#: ``path`` (the pipe reads ``$1:<path>``), from the channel and the append's offset token.
ROW_PARAMETERS: tuple[str, ...] = ("channel", "offset_token", "batch_id")

_PARAM = re.compile(r"%\((\w+)\)s")


def pipe_select_expr(column: Column, row: str = "$1") -> str:
    """The pipe's SELECT expression for one column. Columns read from the row, or with a fixed
    expression over it, are ``Column.select_expr(row)``; a column whose ``expr`` has bind parameters
    (``%(name)s``) gets the pipe-side value of each (``PIPE_SIDE_PARAMETERS``), or, when it has a
    ``path`` and its parameters are ``ROW_PARAMETERS``, reads the value the adapter stamped into the row.
    Anything else is a ``ValueError`` naming the column."""
    if column.expr is None or "%(" not in column.expr:
        return column.select_expr(row)
    params = _PARAM.findall(column.expr)
    if params and all(p in PIPE_SIDE_PARAMETERS for p in params):
        expr = column.expr
        for p in params:
            expr = expr.replace(f"%({p})s", f"({PIPE_SIDE_PARAMETERS[p]})")
        return expr.replace("{row}", row)
    if column.path is not None and params and all(p in ROW_PARAMETERS for p in params):
        return dataclasses.replace(column, expr=None).select_expr(row)
    raise ValueError(
        f"column {column.name}: its landing expression {column.expr!r} binds parameters a Snowpipe Streaming "
        f"pipe cannot: give it a path the adapter fills (for {', '.join(ROW_PARAMETERS)}), or a pipe-side "
        f"value in warehouse.snowpipe.PIPE_SIDE_PARAMETERS (now {', '.join(PIPE_SIDE_PARAMETERS)}).")


def landing_row_stamps(table: Table = LANDING_EVENTS) -> dict[str, str]:
    """``{row key: bind parameter}`` the adapter adds to every row: the columns whose value the embedded
    writer binds and the pipe reads from the row (see ``pipe_select_expr``)."""
    stamps: dict[str, str] = {}
    for column in table.columns:
        if column.expr is None or "%(" not in column.expr:
            continue
        pipe_select_expr(column)  # refuses what the pipe cannot compute
        params = _PARAM.findall(column.expr)
        if all(p in PIPE_SIDE_PARAMETERS for p in params):
            continue
        if len(params) != 1 or column.path is None or "." in column.path or ":" in column.path:
            raise ValueError(f"column {column.name}: the adapter stamps one parameter under a top-level key; "
                             f"its expression {column.expr!r} and path {column.path!r} are not that.")
        stamps[column.path] = params[0]
    return stamps


def landing_pipe_ddl(database: str, *, table: Table = LANDING_EVENTS, pipe: str = DEFAULT_PIPE) -> str:
    """``CREATE PIPE IF NOT EXISTS <db>.RAW.LANDING_EVENTS_STREAMING`` for Snowpipe Streaming's
    high-performance architecture: every column of ``table``, in order, from the streamed row ``$1``.

    Syntax (Snowflake docs, CREATE PIPE, https://docs.snowflake.com/en/sql-reference/sql/create-pipe: "A
    streaming source: COPY INTO mytable FROM (SELECT ... FROM TABLE(DATA_SOURCE(TYPE => 'STREAMING')))";
    the PIPE object page, https://docs.snowflake.com/en/user-guide/snowpipe-streaming/snowpipe-streaming-pipe-object:
    in-flight transformations use COPY transformation syntax; Streaming Transformations, "Pipe Creation":
    an explicit column list is required both in the COPY INTO target and in the SELECT). Each appended
    row is one VARIANT, ``$1``, read with ``$1:<key>::<type>`` as in Snowflake's and partners' examples.
    """
    db = check_identifier(database)
    columns = table.columns
    selects = ",\n        ".join(pipe_select_expr(c, "$1") for c in columns)
    return (
        f"CREATE PIPE IF NOT EXISTS {db}.{check_identifier(table.schema)}.{check_identifier(pipe)}\n"
        f"AS COPY INTO {db}.{table.schema}.{table.name} ({', '.join(c.name for c in columns)})\n"
        "FROM (\n"
        f"    SELECT\n        {selects}\n"
        "    FROM TABLE(DATA_SOURCE(TYPE => 'STREAMING'))\n"
        ")"
    )


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------

# StreamingIngestErrorCode values (snowflake/ingest/streaming/streaming_ingest_error.py, 1.9.1)
_UNREACHABLE = frozenset({"HttpRetriesExhaustedError", "HttpRetryableClientError", "SfApiInternalServerError",
                          "FileUploadError", "NonFatal"})
_THROTTLED = frozenset({"ReceiverSaturated", "MemoryThresholdExceeded", "MemoryThresholdExceededInContainer"})
_FLUSH_TIMEOUT = frozenset({"ChannelWaitForFlushTimeout", "ClientWaitForFlushTimeout"})
#: the channel can take no more appends: another client reopened it (Snowflake bumps the channel's
#: client sequencer at every open, and the SDK then reports the old handle "in an invalid state. Please
#: close and re-open the channel, and check the last committed offset token"), or it was closed under us
_INVALIDATED = frozenset({"InvalidChannelError", "ClosedChannelError", "InputChannelClosed", "OutputChannelClosed"})
#: the whole client must be made again (its channels are dead): the next open builds a new one
_CLIENT_GONE = frozenset({"SfApiPipeFailedOverError", "InvalidClientError", "ClosedClientError"})
_AUTH = frozenset({"AuthTokenError", "SfApiAuthError"})
_NOT_FOUND = frozenset({"SfApiNotFoundError", "ChannelNotFound"})
_CONFIG = frozenset({"ConfigError", "InvalidArgument", "InvalidRequest"})

_PEM = re.compile(r"-----BEGIN [A-Z ]*-----.*?(-----END [A-Z ]*-----|$)", re.DOTALL)


class SnowpipeLandingClient:
    """``LandingClient`` over one ``StreamingIngestClient`` (one account/database/schema/pipe).

    ``config`` is a ``settings.SNOWPIPE_STREAMING``-like dict. Thread-safe for different channels;
    one channel is used by one consumer thread at a time (as the SDK requires)."""

    def __init__(self, config: Mapping[str, Any], *, table: Table = LANDING_EVENTS,
                 sdk_client_factory: Callable[..., Any] | None = None):
        self.properties = snowpipe_properties(config)
        self.account = self.properties["account"]
        self.url = self.properties["url"]
        if not _text(config, "database"):
            raise ImproperlyConfigured("Snowpipe Streaming needs the database of the landing table "
                                       "(SNOWFLAKE_DATABASE).")
        self.database = check_identifier(_text(config, "database"))
        self.schema = check_identifier(_text(config, "schema") or table.schema)
        self.pipe = check_identifier(_text(config, "pipe") or DEFAULT_PIPE)
        self.client_name = _text(config, "client_name") or _default_client_name()
        self.max_append_bytes = int(config.get("max_append_bytes") or MAX_APPEND_BYTES_DEFAULT)
        self.close_timeout_seconds = int(config.get("close_timeout_seconds") or CLOSE_TIMEOUT_SECONDS_DEFAULT)
        self.stamps = landing_row_stamps(table)
        self._secrets = [v for k, v in self.properties.items() if k == "private_key"]
        if _text(config, "private_key_passphrase"):
            self._secrets.append(_text(config, "private_key_passphrase"))
        self._factory = sdk_client_factory or _sdk_client_class()
        self._lock = threading.RLock()  # error() may drop the client while it is held
        self._channels: dict[str, SnowpipeLandingChannel] = {}
        self._closed = False
        self._sdk: Any = None
        self._sdk = self._sdk_client()  # fail at start (unreachable, refused key) rather than at the first unit

    # -- the SDK client -------------------------------------------------------------------------

    @property
    def pipe_path(self) -> str:
        return f"{self.database}.{self.schema}.{self.pipe}"

    def __repr__(self) -> str:  # never the properties: they hold the key
        return f"<SnowpipeLandingClient {self.client_name} account={self.account} url={self.url} pipe={self.pipe_path}>"

    def _sdk_client(self) -> Any:
        if self._closed:
            raise ChannelError(f"the Snowpipe Streaming client for pipe {self.pipe_path} is closed")
        if self._sdk is None:
            try:
                self._sdk = self._factory(client_name=self.client_name, db_name=self.database,
                                          schema_name=self.schema, pipe_name=self.pipe,
                                          properties=dict(self.properties))
            except Exception as exc:  # noqa: BLE001 - every SDK failure is classified
                raise self.error(exc, action="start the client") from None
        return self._sdk

    def _client_gone(self) -> None:
        """Forget the SDK client (a failed-over pipe, an invalidated client): the next call builds one."""
        with self._lock:
            sdk, self._sdk = self._sdk, None
            channels = list(self._channels.values())
            self._channels.clear()
        for channel in channels:
            channel._invalidated = "the Snowpipe Streaming client was invalidated"
        if sdk is not None:
            try:
                sdk.close(wait_for_flush=False)
            except Exception:  # noqa: BLE001,S110 - it is unusable already
                pass

    def error(self, exc: BaseException, *, action: str, channel: str | None = None) -> ChannelError:
        """The ``ChannelError`` for an SDK failure: which kind, and a message naming the account, URL,
        pipe and channel and what to check. SDK text is scrubbed of key material."""
        code = getattr(getattr(exc, "error_code", None), "value", None)
        detail = self._scrub(str(exc))
        where = (f"Snowpipe Streaming could not {action}" + (f" on channel {channel!r}" if channel else "")
                 + f" (pipe {self.pipe_path}, account {self.account}, url {self.url}): {detail}")
        if isinstance(exc, TimeoutError) or code in _FLUSH_TIMEOUT:
            return ChannelUnavailable(f"{where}. Snowflake did not commit in time; the consumer retries, and "
                                      "resumes after the channel's committed offset token.")
        if code in _UNREACHABLE:
            return ChannelUnavailable(
                f"{where}. Check that the account URL (SNOWPIPE_URL, default https://<account>.snowflakecomputing"
                ".com) is right and reachable from this host: DNS, firewall, proxy, TLS trust (SSL_CERT_FILE). "
                "Nothing uncommitted is lost: the consumer retries and resumes after the committed token.")
        if code in _THROTTLED:
            return ChannelUnavailable(f"{where}. Snowflake is throttling or the client is at its memory or "
                                      "in-flight limit; the consumer retries.")
        if code in _CLIENT_GONE:
            self._client_gone()
            message = (f"{where}. The client must be made again (failed-over pipe or invalidated client); the "
                       "next open does it. Reopen the channel and resume after its committed offset token.")
            return ChannelInvalidated(message) if channel else ChannelUnavailable(message)
        if code in _INVALIDATED:
            return ChannelInvalidated(
                f"{where}. The channel was reopened by another writer (a lease takeover) or invalidated: stop "
                "appending, reopen it and resume after its committed offset token.")
        if code in _AUTH:
            return ChannelError(
                f"{where}. Check SNOWPIPE_USER and the key pair: the user's RSA_PUBLIC_KEY must match the "
                "private key (SNOWPIPE_PRIVATE_KEY_FILE / SNOWPIPE_PRIVATE_KEY, and its passphrase).")
        if code in _NOT_FOUND:
            return ChannelError(
                f"{where}. Check that the pipe exists (warehouse.snowpipe.landing_pipe_ddl) and that the user's "
                "role has OPERATE and MONITOR on it and INSERT on the landing table.")
        if code in _CONFIG:
            return ChannelError(f"{where}. Check settings.SNOWPIPE_STREAMING (docs/snowpipe-streaming.md).")
        return ChannelError(f"{where}.")

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "[redacted]")
        return _PEM.sub("[redacted key]", text)

    # -- LandingClient -------------------------------------------------------------------------

    def open_channel(self, name: str) -> SnowpipeLandingChannel:
        """Open (or reopen) the channel: Snowflake fences the channel's previous writer (in any process)."""
        with self._lock:
            sdk = self._sdk_client()
            previous = self._channels.pop(name, None)
        if previous is not None:  # this process's own previous writer: fence it, drop what it buffered
            previous._invalidated = "the channel was reopened by this process"
            previous._close_sdk(wait_for_flush=False)
        try:
            sdk_channel, _status = sdk.open_channel(name)
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, action="open the channel", channel=name) from None
        channel = SnowpipeLandingChannel(self, name, sdk_channel)
        with self._lock:
            self._channels[name] = channel
        return channel

    def latest_committed_offset_tokens(self, names: list[str]) -> dict[str, str | None]:
        if not names:
            return {}
        with self._lock:
            sdk = self._sdk_client()
        try:
            found = sdk.get_latest_committed_offset_tokens(list(names))
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, action="read the committed offset tokens") from None
        return {name: found.get(name) for name in names}

    def close(self) -> None:
        """Flush (bounded by ``close_timeout_seconds``) and close every channel and the client. Best
        effort: what did not commit is read again from the shards."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sdk, self._sdk = self._sdk, None
            channels = list(self._channels.values())
            self._channels.clear()
        for channel in channels:
            channel._close_sdk(wait_for_flush=True)
        if sdk is not None:
            try:
                sdk.close(wait_for_flush=True, timeout_seconds=self.close_timeout_seconds)
            except Exception as exc:  # noqa: BLE001
                log.warning("%s", self.error(exc, action="close the client"))


class SnowpipeLandingChannel:
    """``LandingChannel`` over one SDK channel. Appends are buffered by the SDK; ``wait_for_commit`` is
    the durability point."""

    #: appends are buffered: a consumer does not wait for each (``ShardReader.settle``)
    commits_on_append = False

    def __init__(self, client: SnowpipeLandingClient, name: str, sdk_channel: Any):
        self.name = name
        self._client = client
        self._sdk = sdk_channel
        self._closed = False
        self._invalidated: str | None = None
        #: the last offset token appended WITH rows: an append of no rows (a unit whose records were all
        #: skipped) sends nothing, so its token is never committed by Snowflake; the consumer's own
        #: checkpoint covers it, and ``wait_for_commit`` waits for what was sent.
        self._last_sent: str | None = None

    def __repr__(self) -> str:
        return f"<SnowpipeLandingChannel {self.name} on {self._client.pipe_path}>"

    def _usable(self) -> None:
        if self._invalidated:
            raise ChannelInvalidated(f"channel {self.name!r} on pipe {self._client.pipe_path} can take no more "
                                     f"appends: {self._invalidated}; reopen it")
        if self._closed:
            raise ChannelError(f"channel {self.name!r} on pipe {self._client.pipe_path} is closed")

    def _fail(self, exc: BaseException, action: str) -> ChannelError:
        error = self._client.error(exc, action=action, channel=self.name)
        if isinstance(error, ChannelInvalidated):
            self._invalidated = self._invalidated or "Snowflake invalidated it"
        return error

    def latest_committed_offset_token(self) -> str | None:
        self._usable()
        try:
            return self._sdk.get_latest_committed_offset_token()
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, "read the committed offset token") from None

    def _rows(self, rows: bytes | Sequence[bytes], offset_token: str) -> tuple[list[dict[str, Any]], int]:
        """The parsed rows (of one JSON array, or of several in order), each stamped, and about how
        many bytes of JSON they make."""
        pieces = [rows] if isinstance(rows, (bytes, bytearray, memoryview, str)) or rows is None else list(rows)
        items: list[Any] = []
        for piece in pieces:
            parsed = orjson.loads(piece) if piece and bytes(piece).strip() else []
            if not isinstance(parsed, list) or not all(isinstance(i, dict) for i in parsed):
                raise ValueError("rows must be JSON arrays of landing rows (objects)")
            items.extend(parsed)
        rows_bytes = sum(len(piece) for piece in pieces if piece)
        values = {"channel": self.name, "offset_token": offset_token, "batch_id": f"{self.name}/{offset_token}"}
        stamp = {key: values[param] for key, param in self._client.stamps.items()}
        for item in items:
            item.update(stamp)
        return items, rows_bytes + len(items) * len(orjson.dumps(stamp))

    def _pieces(self, items: list[dict[str, Any]], size_bytes: int) -> list[list[dict[str, Any]]]:
        limit = self._client.max_append_bytes
        if size_bytes <= limit:
            return [items]
        pieces: list[list[dict[str, Any]]] = [[]]
        size = 0
        for item in items:
            item_size = len(orjson.dumps(item)) + 1
            if pieces[-1] and size + item_size > limit:
                pieces.append([])
                size = 0
            pieces[-1].append(item)
            size += item_size
        return pieces

    def append(self, rows: bytes | Sequence[bytes], *, offset_token: str) -> AppendResult:
        started = time.perf_counter()
        if not offset_token or not offset_token.isdigit():
            raise ValueError("an append needs a decimal offset token")
        self._usable()
        items, size_bytes = self._rows(rows, offset_token)
        if items:
            pieces = self._pieces(items, size_bytes)
            try:
                for index, piece in enumerate(pieces):
                    last = index == len(pieces) - 1
                    self._sdk.append_rows(piece, start_offset_token=None,
                                          end_offset_token=offset_token if last else None)
            except Exception as exc:  # noqa: BLE001
                raise self._fail(exc, "append rows") from None
            self._last_sent = offset_token
        return AppendResult(self.name, offset_token, len(items), time.perf_counter() - started)

    def wait_for_commit(self, offset_token: str, *, timeout_seconds: float) -> None:
        self._usable()
        target: str | None = offset_token
        if self._last_sent is None or offset_after(offset_token, self._last_sent):
            # the tokens after the last append with rows came with no rows: Snowflake never sees them,
            # so wait for what was sent (nothing, on a fresh opening); the consumer's checkpoint covers them
            target = self._last_sent
        if target is None:
            return

        def reached(token: str | None) -> bool:
            try:
                return token is not None and not offset_after(target, token)
            except ValueError:  # a token this platform did not write
                return False

        try:
            self._sdk.wait_for_commit(reached, timeout_seconds=timeout_seconds)
        except Exception as exc:  # noqa: BLE001 - TimeoutError included
            raise self._fail(exc, f"commit offset token {target} within {timeout_seconds:g} s") from None

    def _close_sdk(self, *, wait_for_flush: bool) -> None:
        self._closed = True
        sdk, self._sdk = self._sdk, None
        if sdk is None:
            return
        try:
            sdk.close(drop=False, wait_for_flush=wait_for_flush,
                      timeout_seconds=self._client.close_timeout_seconds if wait_for_flush else None)
        except Exception as exc:  # noqa: BLE001 - best effort: the uncommitted rows are read again
            log.warning("%s", self._client.error(exc, action="close the channel", channel=self.name))

    def close(self) -> None:
        """Flush (bounded) and close; idempotent."""
        if self._closed:
            return
        self._close_sdk(wait_for_flush=not self._invalidated)
        with self._client._lock:
            if self._client._channels.get(self.name) is self:
                del self._client._channels[self.name]


def _sdk_client_class() -> Callable[..., Any]:
    os.environ.setdefault("SS_LOG_LEVEL", "warn")  # the Rust core logs INFO to stdout otherwise
    from snowflake.ingest.streaming import StreamingIngestClient

    return StreamingIngestClient


# --------------------------------------------------------------------------------------------
# factories
# --------------------------------------------------------------------------------------------


def snowpipe_client_from_settings() -> SnowpipeLandingClient:
    """The Snowpipe Streaming landing client for ``settings.SNOWPIPE_STREAMING`` (see
    docs/snowpipe-streaming.md). Raises ``ImproperlyConfigured`` for missing or unreadable settings and
    a ``ChannelError`` (``ChannelUnavailable`` when Snowflake cannot be reached) when the client cannot
    start."""
    from django.conf import settings

    config = getattr(settings, "SNOWPIPE_STREAMING", None)
    if not isinstance(config, Mapping):
        raise ImproperlyConfigured("settings.SNOWPIPE_STREAMING must be a dict (see docs/snowpipe-streaming.md).")
    if not _text(config, "database"):
        config = {**config, "database": settings.SNOWFLAKE.get("database")}
    return SnowpipeLandingClient(config)


def landing_client_from_settings() -> LandingClient:
    """The landing client ``settings.WAREHOUSE_LANDING_WRITER`` chooses: ``snowpipe`` →
    ``snowpipe_client_from_settings()``; ``embedded`` → ``warehouse.landing.EmbeddedLandingClient()``
    (the connector, on its own pooled connection; imported here so this module does not depend on it).
    Anything else → ``ImproperlyConfigured`` naming WAREHOUSE_LANDING_WRITER."""
    if landing_writer() == "snowpipe":
        return snowpipe_client_from_settings()
    from warehouse.landing import EmbeddedLandingClient

    return EmbeddedLandingClient()
