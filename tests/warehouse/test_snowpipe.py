"""The Snowpipe Streaming landing writer (warehouse.snowpipe): built from key-pair settings, the clear
error it gives when Snowflake cannot be reached (a loopback port nobody listens on), the pipe DDL,
the choice of writer, and the adapter's logic over a stand-in SDK client (the real SDK cannot be
pointed at the embedded warehouse)."""

from __future__ import annotations

import os
import runpy
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.exceptions import ImproperlyConfigured

from warehouse.channels import ChannelError, ChannelInvalidated, ChannelUnavailable, LandingChannel, LandingClient
from warehouse.ddl import Column, Table
from warehouse.snowpipe import (
    SnowpipeLandingClient,
    landing_client_from_settings,
    landing_pipe_ddl,
    landing_row_stamps,
    landing_writer,
    pipe_select_expr,
    snowpipe_client_from_settings,
    snowpipe_properties,
)

REPO = Path(__file__).resolve().parents[2]
ACCOUNT = "myorg-myaccount"
#: SDK tunables that make "cannot connect" fail within seconds: 1 s backoff, 2 s in all
FAST_FAIL = {"mgmt_retry_initial_backoff_seconds": 1, "mgmt_retry_max_backoff_seconds": 1,
             "mgmt_retry_total_backoff_seconds": 2, "mgmt_http_timeout_seconds": 2,
             "enable_telemetry_reporting": False}


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key, passphrase: bytes | None = None) -> str:
    encryption = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption).decode()


@pytest.fixture
def key_file(tmp_path, rsa_key):
    path = tmp_path / "snowpipe_rsa_key.p8"
    path.write_text(_pem(rsa_key))
    path.chmod(0o600)
    return path


@pytest.fixture
def snowpipe_settings(settings, key_file):
    settings.WAREHOUSE_LANDING_WRITER = "snowpipe"
    settings.SNOWPIPE_STREAMING = {
        "account": ACCOUNT, "user": "INGEST_SVC", "private_key_file": str(key_file), "private_key": "",
        "private_key_passphrase": "", "url": "", "database": "CHATORBIT", "schema": "RAW",
        "pipe": "LANDING_EVENTS_STREAMING", "client_name": "", "sdk_properties": "",
    }
    return settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- (a) built from key-pair settings ------------------------------------------------------------------


def test_properties_from_key_pair_settings(snowpipe_settings, rsa_key):
    props = snowpipe_properties(snowpipe_settings.SNOWPIPE_STREAMING)

    assert props["authorization_type"] == "JWT"
    assert props["account"] == ACCOUNT
    assert props["user"] == "INGEST_SVC"
    assert props["url"] == f"https://{ACCOUNT}.snowflakecomputing.com"
    assert props["private_key"] == _pem(rsa_key)  # the key file's PKCS#8 PEM, as the SDK reads it
    assert "private_key_file" not in props and "private_key_passphrase" not in props
    assert all(isinstance(v, str) for v in props.values())  # the SDK takes text


def test_properties_decrypt_an_encrypted_key_and_take_pem_text_and_tunables(snowpipe_settings, rsa_key):
    config = {**snowpipe_settings.SNOWPIPE_STREAMING, "private_key_file": "",
              # as a secret store hands it over: one line, newlines escaped
              "private_key": _pem(rsa_key, b"s3cret-pass").replace("\n", "\\n"),
              "private_key_passphrase": "s3cret-pass", "url": "https://acct.privatelink.snowflakecomputing.com/",
              "sdk_properties": orjson.dumps(FAST_FAIL).decode()}

    props = snowpipe_properties(config)

    assert props["private_key"] == _pem(rsa_key)  # decrypted here: the SDK gets one form, no passphrase
    assert "s3cret-pass" not in "".join(props.values())
    assert props["url"] == "https://acct.privatelink.snowflakecomputing.com"
    assert props["mgmt_retry_total_backoff_seconds"] == "2"
    assert props["enable_telemetry_reporting"] == "false"


@pytest.mark.parametrize(("change", "names"), [
    ({"account": ""}, "SNOWPIPE_ACCOUNT"),
    ({"user": ""}, "SNOWPIPE_USER"),
    ({"private_key_file": ""}, "SNOWPIPE_PRIVATE_KEY_FILE"),
    ({"private_key_file": "/nonexistent/rsa_key.p8"}, "/nonexistent/rsa_key.p8"),
    ({"private_key_file": "", "private_key": "-----BEGIN PRIVATE KEY-----\nNOTAKEY\n-----END PRIVATE KEY-----"},
     "SNOWPIPE_PRIVATE_KEY"),
    ({"url": "http://127.0.0.1:8765"}, "SNOWPIPE_URL"),
    ({"sdk_properties": '{"private_key": "x"}'}, "SNOWPIPE_SDK_PROPERTIES"),
])
def test_settings_problems_are_named(snowpipe_settings, change, names):
    with pytest.raises(ImproperlyConfigured, match=names.replace(".", r"\.")) as err:
        snowpipe_properties({**snowpipe_settings.SNOWPIPE_STREAMING, **change})
    assert "NOTAKEY" not in str(err.value)


def test_an_encrypted_key_without_its_passphrase_is_named(snowpipe_settings, rsa_key, tmp_path):
    path = tmp_path / "enc.p8"
    path.write_text(_pem(rsa_key, b"pw"))
    with pytest.raises(ImproperlyConfigured, match="encrypted: set SNOWPIPE_PRIVATE_KEY_PASSPHRASE"):
        snowpipe_properties({**snowpipe_settings.SNOWPIPE_STREAMING, "private_key_file": str(path)})


class RecordingSDKClient:
    """Stands in for StreamingIngestClient: records what it was built with."""

    built: list[dict] = []

    def __init__(self, **kwargs):
        RecordingSDKClient.built.append(kwargs)

    def close(self, wait_for_flush=True, timeout_seconds=None):
        pass


def test_client_from_settings_hands_the_key_pair_to_the_sdk(snowpipe_settings, monkeypatch, rsa_key):
    import warehouse.snowpipe as snowpipe

    RecordingSDKClient.built.clear()
    monkeypatch.setattr(snowpipe, "_sdk_client_class", lambda: RecordingSDKClient)

    client = landing_client_from_settings()

    assert isinstance(client, SnowpipeLandingClient) and isinstance(client, LandingClient)
    (built,) = RecordingSDKClient.built
    assert (built["db_name"], built["schema_name"], built["pipe_name"]) == ("CHATORBIT", "RAW",
                                                                            "LANDING_EVENTS_STREAMING")
    assert built["client_name"].startswith("chatorbit-ingest-")
    assert built["properties"]["account"] == ACCOUNT
    assert built["properties"]["user"] == "INGEST_SVC"
    assert built["properties"]["private_key"] == _pem(rsa_key)
    assert built["properties"]["url"] == f"https://{ACCOUNT}.snowflakecomputing.com"
    assert "PRIVATE KEY" not in repr(client)
    client.close()


# --- (b) the clear error when it cannot connect ---------------------------------------------------------


def test_cannot_connect_gives_a_clear_error_within_seconds(snowpipe_settings):
    """The real SDK against https://127.0.0.1:<a port nobody listens on>: ChannelUnavailable naming the
    URL and the account, and what to check; bounded by the SDK's retry settings (FAST_FAIL)."""
    url = f"https://127.0.0.1:{_free_port()}"
    snowpipe_settings.SNOWPIPE_STREAMING = {**snowpipe_settings.SNOWPIPE_STREAMING, "url": url,
                                            "sdk_properties": orjson.dumps(FAST_FAIL).decode()}
    started = time.monotonic()
    with pytest.raises(ChannelUnavailable) as err:
        snowpipe_client_from_settings()
    elapsed = time.monotonic() - started

    message = str(err.value)
    assert err.value.transient
    assert url in message and ACCOUNT in message
    assert "CHATORBIT.RAW.LANDING_EVENTS_STREAMING" in message
    assert "SNOWPIPE_URL" in message and "reachable" in message
    assert "PRIVATE KEY" not in message and "MII" not in message  # no key material
    assert elapsed < 30, f"took {elapsed:.1f} s"


def test_importing_the_module_does_not_load_the_sdk():
    code = "import sys, warehouse.snowpipe; print('snowflake.ingest.streaming' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    assert out.stdout.strip() == "False"


# --- (c) the pipe DDL -------------------------------------------------------------------------------------

SMALL = Table("RAW", "SMALL_LANDING", (
    Column("EVENT_ID", "VARCHAR", "event_id"),
    Column("EVENT_TIME", "TIMESTAMP_NTZ(6)", "event_time", "timestamp"),
    Column("PAYLOAD", "VARIANT", "payload", "variant"),
    Column("ROW_KIND", "VARCHAR", expr="IFF({row}:quarantine IS NULL, 'event', 'quarantine')"),
    Column("CHANNEL", "VARCHAR", "_channel", expr="%(channel)s"),
    Column("OFFSET_TOKEN", "VARCHAR", "_offset_token", expr="%(offset_token)s"),
    Column("LANDED_AT", "TIMESTAMP_NTZ(6)", expr="CAST(%(landed_at)s AS TIMESTAMP_NTZ(6))"),
))


def test_pipe_ddl_for_a_small_table():
    assert landing_pipe_ddl("analytics", table=SMALL) == (
        "CREATE PIPE IF NOT EXISTS ANALYTICS.RAW.LANDING_EVENTS_STREAMING\n"
        "AS COPY INTO ANALYTICS.RAW.SMALL_LANDING (EVENT_ID, EVENT_TIME, PAYLOAD, ROW_KIND, CHANNEL, OFFSET_TOKEN, "
        "LANDED_AT)\n"
        "FROM (\n"
        "    SELECT\n"
        "        $1:event_id::VARCHAR,\n"
        "        TO_TIMESTAMP_NTZ($1:event_time::NUMBER, 6),\n"
        "        STRIP_NULL_VALUE($1:payload),\n"
        "        IFF($1:quarantine IS NULL, 'event', 'quarantine'),\n"
        "        $1:_channel::VARCHAR,\n"
        "        $1:_offset_token::VARCHAR,\n"
        "        CAST((CONVERT_TIMEZONE('UTC', CURRENT_TIMESTAMP())::TIMESTAMP_NTZ(6)) AS TIMESTAMP_NTZ(6))\n"
        "    FROM TABLE(DATA_SOURCE(TYPE => 'STREAMING'))\n"
        ")"
    )
    # what the adapter puts into each row for the pipe to read
    assert landing_row_stamps(SMALL) == {"_channel": "channel", "_offset_token": "offset_token"}


def test_a_bind_parameter_the_pipe_cannot_compute_is_named():
    odd = Column("LOADED_BY", "VARCHAR", expr="%(loader)s")
    with pytest.raises(ValueError, match="column LOADED_BY"):
        pipe_select_expr(odd)
    with pytest.raises(ValueError, match="column LOADED_BY"):
        landing_pipe_ddl("DB", table=Table("RAW", "T", (*SMALL.columns, odd)))


def test_the_landing_table_has_a_pipe():
    from warehouse.ddl import LANDING_EVENTS

    ddl = landing_pipe_ddl("CHATORBIT")
    assert ddl.startswith("CREATE PIPE IF NOT EXISTS CHATORBIT.RAW.LANDING_EVENTS_STREAMING\n")
    assert "%(" not in ddl and "{row}" not in ddl
    assert all(c.name in ddl for c in LANDING_EVENTS.columns)


# --- (d) choosing the writer ----------------------------------------------------------------------------


def test_an_invalid_landing_writer_is_refused(settings):
    with pytest.raises(ImproperlyConfigured, match="WAREHOUSE_LANDING_WRITER must be one of embedded, snowpipe"):
        landing_writer("kafka")
    settings.WAREHOUSE_LANDING_WRITER = "snowpipes"
    with pytest.raises(ImproperlyConfigured, match="WAREHOUSE_LANDING_WRITER.*'snowpipes'"):
        landing_client_from_settings()
    assert landing_writer(" Snowpipe ") == "snowpipe"


def test_the_embedded_writer_is_the_default(settings, monkeypatch):
    import types

    class EmbeddedLandingClient:  # stands in for warehouse.landing's, which this test does not need
        pass

    monkeypatch.setitem(sys.modules, "warehouse.landing",
                        types.SimpleNamespace(EmbeddedLandingClient=EmbeddedLandingClient))
    settings.WAREHOUSE_LANDING_WRITER = "embedded"
    assert isinstance(landing_client_from_settings(), EmbeddedLandingClient)


def test_settings_refuse_an_invalid_landing_writer(monkeypatch):
    monkeypatch.setenv("WAREHOUSE_LANDING_WRITER", "bogus")
    with pytest.raises(ImproperlyConfigured, match="WAREHOUSE_LANDING_WRITER must be one of embedded, snowpipe"):
        runpy.run_path(str(REPO / "portal" / "settings.py"))
    monkeypatch.setenv("WAREHOUSE_LANDING_WRITER", "snowpipe")
    assert runpy.run_path(str(REPO / "portal" / "settings.py"))["WAREHOUSE_LANDING_WRITER"] == "snowpipe"


# --- the adapter's logic, over a stand-in SDK client -------------------------------------------------------


class FakeSDKChannel:
    def __init__(self, name):
        self.name = name
        self.appends: list[tuple[list[dict], str | None]] = []
        self.committed: str | None = None
        self.closed_with: dict | None = None
        self.fail_with: BaseException | None = None

    def append_rows(self, rows, start_offset_token=None, end_offset_token=None):
        if self.fail_with is not None:
            raise self.fail_with
        self.appends.append((rows, end_offset_token))

    def get_latest_committed_offset_token(self):
        return self.committed

    def wait_for_commit(self, token_checker, timeout_seconds=None):
        if not token_checker(self.committed):
            raise TimeoutError("Wait for commit timed out")

    def close(self, drop=False, wait_for_flush=True, timeout_seconds=None):
        self.closed_with = {"drop": drop, "wait_for_flush": wait_for_flush}


class FakeSDKClient:
    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.channels: dict[str, FakeSDKChannel] = {}
        self.open_error: BaseException | None = None

    def open_channel(self, name, offset_token=None):
        if self.open_error is not None:
            raise self.open_error
        self.channels[name] = FakeSDKChannel(name)
        return self.channels[name], None

    def get_latest_committed_offset_tokens(self, names):
        return {n: self.channels[n].committed for n in names if n in self.channels}

    def close(self, wait_for_flush=True, timeout_seconds=None):
        pass


@pytest.fixture
def fake_client(snowpipe_settings):
    made: list[FakeSDKClient] = []

    def factory(**kwargs):
        made.append(FakeSDKClient(**kwargs))
        return made[-1]

    client = SnowpipeLandingClient(snowpipe_settings.SNOWPIPE_STREAMING, table=SMALL, sdk_client_factory=factory)
    client.sdk_made = made
    yield client
    client.close()


def _sdk_error(code: str, message: str, status: int = 409):
    from snowflake.ingest.streaming import StreamingIngestError, StreamingIngestErrorCode

    return StreamingIngestError(StreamingIngestErrorCode(code), message, status, "x")


def test_append_stamps_rows_and_waits_for_the_token(fake_client):
    channel = fake_client.open_channel("events-shardId-000")
    sdk = fake_client.sdk_made[0].channels["events-shardId-000"]
    assert isinstance(channel, LandingChannel)

    result = channel.append(orjson.dumps([{"event_id": "a"}, {"quarantine": {"reason_code": "oversize"}}]),
                            offset_token="4965")

    assert result.rows == 2 and result.offset_token == "4965"
    ((rows, token),) = sdk.appends
    assert token == "4965"
    assert rows[0] == {"event_id": "a", "_channel": "events-shardId-000", "_offset_token": "4965"}
    with pytest.raises(ChannelUnavailable, match="commit offset token 4965"):
        channel.wait_for_commit("4965", timeout_seconds=1)
    sdk.committed = "10000"  # a later token counts (compared as numbers, not as text)
    channel.wait_for_commit("4965", timeout_seconds=1)
    assert channel.latest_committed_offset_token() == "10000"
    assert fake_client.latest_committed_offset_tokens(["events-shardId-000", "other"]) == {
        "events-shardId-000": "10000", "other": None}


def test_a_unit_of_no_rows_sends_nothing_and_waits_for_what_was_sent(fake_client):
    channel = fake_client.open_channel("ch")
    sdk = fake_client.sdk_made[0].channels["ch"]
    assert channel.append(b"[]", offset_token="7").rows == 0
    channel.wait_for_commit("7", timeout_seconds=1)  # nothing sent on this opening: nothing to wait for
    channel.append(b'[{"event_id": "x"}]', offset_token="9")
    channel.append(b"[]", offset_token="12")
    assert [token for _, token in sdk.appends] == ["9"]
    with pytest.raises(ChannelUnavailable):
        channel.wait_for_commit("12", timeout_seconds=1)  # "9" was sent and is not committed yet
    sdk.committed = "9"
    channel.wait_for_commit("12", timeout_seconds=1)


def test_a_large_append_goes_in_pieces_with_the_token_on_the_last(fake_client):
    fake_client.max_append_bytes = 200
    channel = fake_client.open_channel("ch")
    rows = [{"event_id": f"e{i}", "payload": "x" * 40} for i in range(10)]
    channel.append(orjson.dumps(rows), offset_token="500")
    appends = fake_client.sdk_made[0].channels["ch"].appends
    assert len(appends) > 1
    assert [token for _, token in appends] == [None] * (len(appends) - 1) + ["500"]
    assert [r["event_id"] for piece, _ in appends for r in piece] == [f"e{i}" for i in range(10)]


def test_a_unit_given_as_several_arrays_is_sent_in_order_under_its_one_token(fake_client):
    channel = fake_client.open_channel("ch")
    result = channel.append([b'[{"event_id": "a"}, {"event_id": "b"}]', b"[]", b'[{"event_id": "c"}]'],
                            offset_token="77")
    assert result.rows == 3
    ((rows, token),) = fake_client.sdk_made[0].channels["ch"].appends
    assert token == "77" and [r["event_id"] for r in rows] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="JSON arrays"):
        channel.append([b'[{"event_id": "d"}]', b'{"event_id": "e"}'], offset_token="78")


def test_sdk_errors_become_channel_errors(fake_client):
    channel = fake_client.open_channel("ch")
    sdk = fake_client.sdk_made[0].channels["ch"]

    sdk.fail_with = _sdk_error("ReceiverSaturated", "Inflight data limit reached", 429)
    with pytest.raises(ChannelUnavailable, match="throttling"):
        channel.append(b'[{"event_id": "x"}]', offset_token="1")

    sdk.fail_with = _sdk_error("InvalidChannelError", "Channel ch is in an invalid state. Please close and "
                                                      "re-open the channel")
    with pytest.raises(ChannelInvalidated, match="reopened by another writer") as err:
        channel.append(b'[{"event_id": "x"}]', offset_token="2")
    assert "ch" in str(err.value) and ACCOUNT in str(err.value)
    with pytest.raises(ChannelInvalidated):  # and it stays fenced
        channel.append(b'[{"event_id": "x"}]', offset_token="3")

    fake_client.sdk_made[0].open_error = _sdk_error(
        "SfApiNotFoundError", "HTTP request failed with a not-found error for API open_channel", 404)
    with pytest.raises(ChannelError, match="Check that the pipe exists") as err:
        fake_client.open_channel("ch2")
    assert not err.value.transient and "CHATORBIT.RAW.LANDING_EVENTS_STREAMING" in str(err.value)


def test_key_material_never_reaches_a_message(fake_client, rsa_key):
    pem = _pem(rsa_key)
    error = fake_client.error(_sdk_error("ConfigError", f"bad value={pem} for key=private_key", 400),
                              action="start the client")
    assert "BEGIN" not in str(error) and pem.splitlines()[1] not in str(error)
    assert "[redacted]" in str(error) and "settings.SNOWPIPE_STREAMING" in str(error)


def test_reopening_a_channel_fences_this_process_s_previous_writer(fake_client):
    old = fake_client.open_channel("ch")
    old_sdk = fake_client.sdk_made[0].channels["ch"]
    new = fake_client.open_channel("ch")
    assert old_sdk.closed_with == {"drop": False, "wait_for_flush": False}
    with pytest.raises(ChannelInvalidated):
        old.append(b'[{"event_id": "x"}]', offset_token="5")
    new.append(b'[{"event_id": "x"}]', offset_token="5")
    new.close()
    new.close()  # idempotent
    with pytest.raises(ChannelError, match="closed"):
        new.append(b'[{"event_id": "x"}]', offset_token="6")


def test_a_failed_over_pipe_makes_the_client_again(fake_client):
    channel = fake_client.open_channel("ch")
    fake_client.sdk_made[0].channels["ch"].fail_with = _sdk_error(
        "SfApiPipeFailedOverError", "Please recreate the client to do the fail over", 400)
    with pytest.raises(ChannelInvalidated, match="made again"):
        channel.append(b'[{"event_id": "x"}]', offset_token="1")
    fake_client.open_channel("ch")
    assert len(fake_client.sdk_made) == 2
