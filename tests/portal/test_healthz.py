"""/healthz checks the real dependencies (PostgreSQL, the Redis broker, Kinesis and S3 on the moto server,
the embedded warehouse server) and answers 200 when every required one is up, 503 naming the one that is
down otherwise; no sign-in, no secrets in the body."""

from __future__ import annotations

import pytest

from tests.ingest_workers.conftest import aws_settings, kinesis, moto_server, stream  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db


@pytest.fixture
def all_up(settings, stream, warehouse_server, moto_server):  # noqa: F811
    from ingest_workers.aws import bucket_ensure

    bucket = bucket_ensure("healthz-archive")
    settings.RAW_ARCHIVE_URL = f"s3://{bucket}/raw"
    settings.HEALTHZ_TIMEOUT_S = 5
    settings.HEALTHZ_CACHE_S = 0  # each test changes a dependency and asks again at once
    return settings


def test_every_dependency_up_answers_200_without_sign_in(client, all_up):
    response = client.get("/healthz")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["dependencies"]) == {"database", "broker", "stream", "archive", "warehouse"}
    assert {d["status"] for d in body["dependencies"].values()} == {"up"}
    assert response["Cache-Control"].startswith("max-age=0")


def test_a_warehouse_on_a_closed_port_answers_503_naming_it(client, all_up):
    from warehouse.embedded import free_port

    all_up.SNOWFLAKE = {**all_up.SNOWFLAKE, "port": free_port(), "password": "hunter2-secret"}
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    warehouse = body["dependencies"]["warehouse"]
    assert warehouse["status"] == "down" and warehouse["required"] and warehouse["error"]
    assert {n for n, d in body["dependencies"].items() if d["status"] == "up"} == {
        "database", "broker", "stream", "archive"}
    assert "hunter2" not in response.content.decode()


def test_a_missing_stream_answers_503_naming_it(client, all_up):
    all_up.KINESIS_STREAM_NAME = "no-such-stream"
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["dependencies"]["stream"]["status"] == "down"
    assert "ResourceNotFound" in response.json()["dependencies"]["stream"]["error"]


def test_a_dependency_not_required_is_reported_but_does_not_fail_the_check(client, all_up):
    all_up.KINESIS_STREAM_NAME = "no-such-stream"
    all_up.HEALTHZ_REQUIRED = ["database", "broker", "archive", "warehouse"]
    response = client.get("/healthz")
    assert response.status_code == 200
    kinesis_stream = response.json()["dependencies"]["stream"]
    assert kinesis_stream["status"] == "down" and kinesis_stream["required"] is False


def test_errors_lose_credentials():
    from portal.health import _scrub

    assert _scrub("cannot reach redis://:s3cr3t@10.0.0.5:6379/0") == "cannot reach redis://***@10.0.0.5:6379/0"
    assert "abc" not in _scrub("https://x.example/?token=abc&password=abc")


def test_a_probe_addressing_the_instance_by_ip_gets_the_health_not_a_host_error(client, all_up):
    # a load balancer or a Kubernetes probe sends the instance's IP as Host, which ALLOWED_HOSTS does not list;
    # any other page keeps refusing that host
    assert client.get("/healthz", HTTP_HOST="10.0.3.7").status_code == 200
    all_up.KINESIS_STREAM_NAME = "no-such-stream"
    assert client.get("/healthz", HTTP_HOST="10.0.3.7").status_code == 503
    assert client.get("/accounts/login/", HTTP_HOST="10.0.3.7").status_code == 400


def test_a_caller_off_the_loopback_sees_statuses_but_not_the_errors(client, all_up):
    all_up.KINESIS_STREAM_NAME = "no-such-stream"
    outside = client.get("/healthz", REMOTE_ADDR="203.0.113.9").json()
    assert outside["dependencies"]["stream"]["status"] == "down"
    assert "error" not in outside["dependencies"]["stream"]
    assert "no-such-stream" not in str(outside)
    all_up.METRICS_TOKEN = "t0ken-for-the-scraper"
    trusted = client.get("/healthz", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer t0ken-for-the-scraper")
    assert "ResourceNotFound" in trusted.json()["dependencies"]["stream"]["error"]


def test_anyone_may_ask_but_the_dependencies_are_checked_once_per_period(client, all_up):
    first = client.get("/healthz").json()  # checked now (the period is 0)
    all_up.HEALTHZ_CACHE_S = 60
    all_up.KINESIS_STREAM_NAME = "no-such-stream"  # within the period the answer is the one already checked
    again = client.get("/healthz").json()
    assert again == first and again["status"] == "ok"
    all_up.HEALTHZ_CACHE_S = 0
    assert client.get("/healthz").json()["dependencies"]["stream"]["status"] == "down"
