"""Fixtures for the ingestion tests: a real moto server on loopback, a fresh Kinesis stream per test,
the real Redis as the cache (with a key prefix per test), and sources with their credentials."""

from __future__ import annotations

import io
import logging
import socket
import uuid

import boto3
import pytest


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_server():
    """moto's server (Kinesis, S3) on 127.0.0.1:<free port> for the whole session; yields its URL.

    It is moto's application behind a lock (`LocalAwsServer`): ThreadedMotoServer serves requests
    concurrently, and moto's Kinesis then loses records when two put_records race on one shard.
    """
    from ingest_workers.aws import LocalAwsServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = LocalAwsServer("127.0.0.1", 0).start()
    yield server.url
    server.stop()


@pytest.fixture
def aws_settings(settings, moto_server):
    settings.AWS_ENDPOINT_URL = moto_server
    settings.AWS_REGION = "us-east-1"
    settings.AWS_ACCESS_KEY_ID = "test"
    settings.AWS_SECRET_ACCESS_KEY = "test"
    return settings


@pytest.fixture
def kinesis(aws_settings):
    """A plain boto3 Kinesis client on the moto server, for reading back what the collectors wrote."""
    return boto3.client("kinesis", endpoint_url=aws_settings.AWS_ENDPOINT_URL, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


@pytest.fixture
def stream(aws_settings, kinesis):
    """A fresh 4-shard stream for this test, set as settings.KINESIS_STREAM_NAME."""
    from ingest_workers.aws import stream_ensure

    name = f"raw-events-{uuid.uuid4().hex[:12]}"
    aws_settings.KINESIS_STREAM_NAME = name
    aws_settings.KINESIS_SHARD_COUNT = 4
    stream_ensure(4, stream_name=name)
    yield name
    kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)


def read_stream(kinesis, name: str) -> list[dict]:
    """Every record on the stream: [{"shard", "key", "sequence", "data"}], in shard then sequence order."""
    out = []
    for shard in kinesis.list_shards(StreamName=name)["Shards"]:
        iterator = kinesis.get_shard_iterator(StreamName=name, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            response = kinesis.get_records(ShardIterator=iterator, Limit=10000)
            for record in response["Records"]:
                out.append({"shard": shard["ShardId"], "key": record["PartitionKey"],
                            "sequence": record["SequenceNumber"], "data": record["Data"]})
            if not response["Records"]:
                break
            iterator = response.get("NextShardIterator")
    return out


@pytest.fixture
def stream_records(kinesis, stream):
    """Read back the test's stream, envelopes decoded."""
    import orjson

    def read() -> list[dict]:
        records = read_stream(kinesis, stream)
        for record in records:
            record["envelope"] = orjson.loads(record["data"])
        return records

    return read


@pytest.fixture
def collector_cache(settings):
    """The real Redis when REDIS_URL is set (else LocMem), with a key prefix of its own per test."""
    import os

    redis_url = os.environ.get("REDIS_URL", "")
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    if redis_url:
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                       "LOCATION": redis_url, "KEY_PREFIX": prefix}}
    else:
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                                       "LOCATION": prefix}}
    settings.COLLECTOR_RATE_LIMIT_PER_SOURCE = 1_000_000
    return settings.CACHES["default"]


@pytest.fixture
def collector_sources(platform_user, team):
    """web-chat (SDK, write key), slack-bot and voice-assistant (webhooks with signing secrets)."""
    from contracts.services import source_create, source_signing_secret_set

    web, web_key = source_create(actor=platform_user, team=team, name="web-chat", platform="web", kind="sdk",
                                 product="storefront-assistant")
    api, api_key = source_create(actor=platform_user, team=team, name="llm-gateway", platform="api",
                                 kind="backend")
    slack, _ = source_create(actor=platform_user, team=team, name="slack-bot", platform="slack", kind="webhook")
    voice, _ = source_create(actor=platform_user, team=team, name="voice-assistant", platform="voice",
                             kind="webhook")
    slack = source_signing_secret_set(actor=platform_user, source=slack, secret="8f742231b10e8888abcd99yyyzzz85a5")
    voice = source_signing_secret_set(actor=platform_user, source=voice, secret="voice-signing-secret-0123456789")
    return {"web": web, "web_key": web_key, "api": api, "api_key": api_key, "slack": slack, "voice": voice}



@pytest.fixture(autouse=True)
def collector_answers_fresh():
    """The collectors count their answers in memory until a flush: start each test with none pending."""
    from ingest_workers import collector_stats

    collector_stats._pending.clear()
    yield
    collector_stats._pending.clear()


@pytest.fixture
def ingest_env(settings, engineer, platform_user, stream, warehouse_server, tmp_path):
    """Seeded demo contracts (the users made first: the seed reuses them), a fresh stream, this test's
    own warehouse database and archive folder, and the embedded default's local master key (the erasure
    tests' environment; test_consumer.py has its own, without the users and the key setting)."""
    from django.core.management import call_command

    from ingest_workers import services

    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "database": f"T_{uuid.uuid4().hex[:12].upper()}"}
    settings.RAW_ARCHIVE_URL = f"file://{tmp_path}/archive"
    settings.ARCHIVE_ENCRYPTION = "local"
    call_command("seed_demo", quiet_keys=True, force=True, stdout=io.StringIO())
    services.contract_index_current(force=True)
    return settings


@pytest.fixture
def keyrings_fresh():
    """Each test's database starts without keys: no process keyring may remember another test's (used by
    the modules of the erasure tests through ``pytest.mark.usefixtures``)."""
    from deletion.subject_keys import archive_keyrings_forget

    archive_keyrings_forget()
    yield
    archive_keyrings_forget()
