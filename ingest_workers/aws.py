"""boto3 clients built from settings, and the two resources the pipeline needs (the stream, the bucket).

The endpoint comes from `settings.AWS_ENDPOINT_URL`: the local emulator (moto's server) in the
embedded default and the tests, unset (real AWS) in production. Clients use short timeouts and
botocore's standard retry mode, so an outage surfaces in about a second instead of hanging a request;
the stream producer adds its own bounded retries for throttling and partial failures on top.
Clients are cached per configuration (creating one costs tens of milliseconds; they are thread-safe).
"""

from __future__ import annotations

import datetime as dt
import errno
import functools
import logging
import time
from typing import Any, NotRequired, TypedDict

import boto3
import botocore.session
import msgspec
import pybase64
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.parsers import ResponseParserFactory
from django.conf import settings

logger = logging.getLogger(__name__)

# Collectors answer Slack within 3 seconds, so a Kinesis call must fail fast: one botocore retry.
KINESIS_CONFIG = {"connect_timeout": 1.0, "read_timeout": 3.0, "max_attempts": 2}
S3_CONFIG = {"connect_timeout": 2.0, "read_timeout": 10.0, "max_attempts": 3}


def _settings_key(service: str) -> tuple:
    overrides = getattr(settings, f"AWS_{service.upper()}_CLIENT", {}) or {}
    defaults = KINESIS_CONFIG if service == "kinesis" else S3_CONFIG
    merged = {**defaults, **overrides}
    return (
        service, settings.AWS_ENDPOINT_URL, settings.AWS_REGION, settings.AWS_ACCESS_KEY_ID,
        settings.AWS_SECRET_ACCESS_KEY, merged["connect_timeout"], merged["read_timeout"], merged["max_attempts"],
    )


class _GetRecord(TypedDict):
    SequenceNumber: str
    ApproximateArrivalTimestamp: dt.datetime
    Data: str  # base64, decoded by pybase64 in ``_get_records_answer`` (SIMD: a fraction of msgspec's bytes)
    PartitionKey: str
    EncryptionType: NotRequired[str]


class _GetRecordsBody(TypedDict):
    Records: list[_GetRecord]
    NextShardIterator: NotRequired[str | None]  # null at the end of a closed shard
    MillisBehindLatest: NotRequired[int | None]
    ChildShards: NotRequired[list[Any] | None]


#: One pass in C over a GetRecords body: the JSON parsed and each arrival time (epoch seconds) made an
#: aware UTC datetime; each ``Data`` is then base64-decoded to bytes by pybase64 (msgspec's own bytes
#: decoding took as long as the rest of the parse). Not strict, as botocore is not: a timestamp may come
#: as a number or as an ISO-8601 string.
_GET_RECORDS_DECODER = msgspec.json.Decoder(_GetRecordsBody, strict=False)


class _GetRecordsParser:
    """botocore's JSON-protocol parser, except for successful GetRecords answers, which are parsed by
    one msgspec decoder: botocore walks its generic shape model for every record (and turns each
    arrival time into a local-timezone datetime through dateutil), and a parse with orjson followed
    by one ``b64decode`` per record still cost a consumer about as much CPU per record as its own
    landing (bench/bench_consumer.py). Same result: ``Data`` as bytes, ``ApproximateArrivalTimestamp``
    as an aware UTC datetime, missing and null members left out. Anything unexpected (another
    operation, an error, a body it cannot read, a member of another type, bad base64) goes to
    botocore's parser."""

    def __init__(self, default: Any):
        self._default = default

    def parse(self, response: dict, shape: Any) -> dict:
        if getattr(shape, "name", None) == "GetRecordsOutput" and response.get("status_code") == 200:
            try:
                return _get_records_answer(response)
            except (msgspec.DecodeError, ValueError, KeyError, TypeError):
                pass
        return self._default.parse(response, shape)


def _get_records_answer(response: dict) -> dict:
    answer: dict[str, Any] = _GET_RECORDS_DECODER.decode(response["body"])
    decode = pybase64.b64decode
    for record in answer["Records"]:
        record["Data"] = decode(record["Data"], validate=True)  # bad base64: ValueError, botocore's turn
    for key in ("NextShardIterator", "MillisBehindLatest", "ChildShards"):
        if key in answer and answer[key] is None:
            del answer[key]  # as botocore: a null member is left out
    headers = dict(response.get("headers") or {})
    answer["ResponseMetadata"] = {"RequestId": headers.get("x-amzn-requestid", ""), "HTTPStatusCode": 200,
                                  "HTTPHeaders": headers, "RetryAttempts": 0}
    return answer


class _KinesisParserFactory(ResponseParserFactory):
    def create_parser(self, protocol_name: str) -> Any:
        parser = super().create_parser(protocol_name)
        return _GetRecordsParser(parser) if protocol_name == "json" else parser


@functools.lru_cache(maxsize=16)
def _client(service: str, endpoint_url: str | None, region: str, key_id: str | None, secret: str | None,
            connect_timeout: float, read_timeout: float, max_attempts: int) -> Any:
    config = Config(
        region_name=region, connect_timeout=connect_timeout, read_timeout=read_timeout,
        retries={"mode": "standard", "max_attempts": max_attempts},
        # S3 on a local emulator has no virtual-host DNS names.
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    core = botocore.session.get_session()
    if service == "kinesis":
        core.register_component("response_parser_factory", _KinesisParserFactory())
    session = boto3.session.Session(botocore_session=core)
    return session.client(
        service, endpoint_url=endpoint_url, region_name=region, aws_access_key_id=key_id,
        aws_secret_access_key=secret, config=config,
    )


def kinesis_client() -> Any:
    """The Kinesis client for the configured endpoint (override timeouts with settings.AWS_KINESIS_CLIENT)."""
    return _client(*_settings_key("kinesis"))


def kinesis_put_client() -> Any:
    """The Kinesis client for PutRecords: botocore retries nothing. A put whose answer timed out may
    have been written; botocore would send it again and one request would land twice (the hostile-
    input sweep, D6). ``StreamProducer`` retries only what is known not to be written."""
    key = list(_settings_key("kinesis"))
    key[-1] = 0  # botocore's retries.max_attempts counts retries, not attempts: 0 is one attempt
    return _client(*key)


def s3_client() -> Any:
    """The S3 client for the configured endpoint (override timeouts with settings.AWS_S3_CLIENT)."""
    return _client(*_settings_key("s3"))


def kms_client() -> Any:
    """The KMS client for the configured endpoint (the raw archive's master key: deletion.subject_keys)."""
    return _client(*_settings_key("kms"))


def _error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def stream_ensure(
    shard_count: int | None = None, *, stream_name: str | None = None, client: Any = None, timeout: float = 300.0,
) -> dict:
    """Create the Kinesis stream if it is missing and wait until it is ACTIVE; returns its summary.

    An existing stream is left as it is (its shard count is not changed: resharding is an operator's
    decision, see the runbook).
    """
    client = client or kinesis_client()
    name = stream_name or settings.KINESIS_STREAM_NAME
    shards = shard_count or settings.KINESIS_SHARD_COUNT
    try:
        client.describe_stream_summary(StreamName=name)
    except ClientError as err:
        if _error_code(err) != "ResourceNotFoundException":
            raise
        try:
            client.create_stream(StreamName=name, ShardCount=shards)
            logger.info("created Kinesis stream %s with %d shards", name, shards)
        except ClientError as create_err:
            if _error_code(create_err) != "ResourceInUseException":  # created concurrently: fine
                raise
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        summary = client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        if summary["StreamStatus"] == "ACTIVE":
            return _retention_ensure(client, name, summary)
        if time.monotonic() > deadline:
            raise TimeoutError(f"Kinesis stream {name} is still {summary['StreamStatus']} after {timeout:.0f} s")
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def stream_retention_hours() -> int:
    """How long Kinesis keeps records (default 7 days): the time an operator has to unpark a shard
    before its oldest unread records expire. The 24-hour default is too short for a weekend."""
    return int(getattr(settings, "KINESIS_RETENTION_HOURS", 168))


def _retention_ensure(client: Any, name: str, summary: dict) -> dict:
    wanted = stream_retention_hours()
    if int(summary.get("RetentionPeriodHours") or 24) < wanted:
        client.increase_stream_retention_period(StreamName=name, RetentionPeriodHours=wanted)
        logger.info("raised the retention of Kinesis stream %s to %d hours", name, wanted)
        summary = client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    return summary


def archive_lifecycle_rules() -> list[dict]:
    """S3 lifecycle of the raw archive: Standard for RAW_ARCHIVE_TRANSITION_DAYS (30), then Glacier
    Instant Retrieval (still readable in milliseconds for a re-drive), expired after
    RAW_ARCHIVE_RETENTION_DAYS (180); unfinished multipart uploads are cleaned after a day."""
    transition = int(getattr(settings, "RAW_ARCHIVE_TRANSITION_DAYS", 30))
    retention = int(getattr(settings, "RAW_ARCHIVE_RETENTION_DAYS", 180))
    return [
        {"ID": "raw-archive-tiering-and-expiry", "Status": "Enabled", "Filter": {"Prefix": "raw/"},
         "Transitions": [{"Days": transition, "StorageClass": "GLACIER_IR"}],
         "Expiration": {"Days": retention},
         "NoncurrentVersionExpiration": {"NoncurrentDays": 1}},
        {"ID": "abort-incomplete-uploads", "Status": "Enabled", "Filter": {"Prefix": ""},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
    ]


def bucket_ensure(bucket: str | None = None, *, client: Any = None) -> str:
    """Create the raw-archive bucket (settings.RAW_ARCHIVE_BUCKET) if it is missing, and set its
    lifecycle rules (``archive_lifecycle_rules``); returns its name."""
    client = client or s3_client()
    name = bucket or settings.RAW_ARCHIVE_BUCKET
    try:
        client.head_bucket(Bucket=name)
        _lifecycle_ensure(client, name)
        return name
    except ClientError as err:
        if _error_code(err) not in {"404", "NoSuchBucket", "NotFound"}:
            raise
    kwargs: dict[str, Any] = {"Bucket": name}
    if settings.AWS_REGION != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": settings.AWS_REGION}
    try:
        client.create_bucket(**kwargs)
        logger.info("created S3 bucket %s", name)
    except ClientError as err:
        if _error_code(err) not in {"BucketAlreadyOwnedByYou"}:
            raise
    _lifecycle_ensure(client, name)
    return name


def _lifecycle_ensure(client: Any, name: str) -> None:
    client.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": archive_lifecycle_rules()})


class LocalAwsServer:
    """moto's server (Kinesis, S3, …) on host:port, handling one request at a time.

    moto's Kinesis is not safe for concurrent writes: two put_records calls on one shard at the same
    moment can get the same sequence number, and one record silently replaces the other (moto says
    so in `Shard.put_record`; seen here as ~1% of records lost with 2–4 concurrent collector threads).
    moto's own ThreadedMotoServer serves requests concurrently, so this server runs the same moto
    application behind one lock: connections stay concurrent, moto's state changes one at a time.
    `port=0` picks a free port. Binding happens in the constructor, so a busy port fails at once.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        import threading

        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        app = DomainDispatcherApplication(create_backend_app)
        lock = threading.Lock()

        def serialized(environ: dict, start_response: Any) -> list[bytes]:
            with lock:
                result = app(environ, start_response)
                try:
                    return list(result)
                finally:
                    if hasattr(result, "close"):
                        result.close()

        try:
            self._server = make_server(host, port, serialized, threaded=True, request_handler=MotoRequestHandler)
        except SystemExit:  # werkzeug prints why and exits when it cannot bind
            raise OSError(errno.EADDRINUSE, f"cannot listen on {host}:{port}") from None
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-aws", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> LocalAwsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()
