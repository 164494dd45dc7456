"""The collectors end to end: HTTP request in, raw envelopes read back from a real moto Kinesis stream,
sources in the real PostgreSQL, rate limits in the real Redis."""

from __future__ import annotations

import gzip
import io
import re
import time
from collections import defaultdict

import orjson
import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import CommandError

from contracts.presets import preset_load
from ingest_workers import rate_limit
from ingest_workers.collector_auth import slack_signature, voice_signature
from tests.ingest_workers.conftest import _free_port

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("collector_cache")]

BATCH = "/collect/v1/batch"
SLACK = "/collect/v1/webhooks/slack/{}"
VOICE = "/collect/v1/webhooks/voice/{}"


def web_event(i: int, conversation: str = "wc_1", **extra) -> dict:
    return {"messageId": f"m-{i}", "type": "message", "timestamp": "2026-03-01T09:30:15.250+00:00",
            "anonymousId": "anon-1", "sessionId": "ws_1", "conversationId": conversation,
            "message": {"role": "user", "text": f"hello {i}"}, **extra}


@pytest.fixture
def post_batch(client, collector_sources, stream):
    def post(body, *, content_type="application/json", key=None, headers=None, path=BATCH):
        if not isinstance(body, bytes | str):
            body = orjson.dumps(body)
        all_headers = {"Authorization": f"Bearer {key or collector_sources['web_key']}", **(headers or {})}
        all_headers = {k: v for k, v in all_headers.items() if v is not None}
        return client.post(path, data=body, content_type=content_type, headers=all_headers)

    return post


@pytest.fixture
def post_slack(client, collector_sources, stream):
    secret = collector_sources["slack"].signing_secret

    def post(payload, *, source="slack-bot", timestamp=None, signature=None, headers=None,
             content_type="application/json"):
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        ts = str(int(time.time()) if timestamp is None else timestamp)
        sig = slack_signature(secret, ts, body) if signature is None else signature
        all_headers = {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig, **(headers or {})}
        return client.post(SLACK.format(source), data=body, content_type=content_type,
                           headers={k: v for k, v in all_headers.items() if v is not None})

    return post


@pytest.fixture
def post_voice(client, collector_sources, stream):
    secret = collector_sources["voice"].signing_secret

    def post(payload, *, source="voice-assistant", timestamp=None, signature="", headers=None):
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        ts = str(int(time.time()) if timestamp is None else timestamp)
        sig = voice_signature(secret, ts, body) if signature == "" else signature
        all_headers = {"X-ChatOrbit-Timestamp": ts, "X-ChatOrbit-Signature": sig, **(headers or {})}
        return client.post(VOICE.format(source), data=body, content_type="application/json",
                           headers={k: v for k, v in all_headers.items() if v is not None})

    return post


def slack_samples() -> list[dict]:
    return preset_load("slack-bot")["contracts"][0]["versions"][0]["samples"]


def alexa_samples() -> list[dict]:
    return preset_load("voice-assistant")["contracts"][0]["versions"][0]["samples"]


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    return body


# --- batch: what lands on the stream ----------------------------------------------------------------

def test_a_json_array_lands_as_raw_envelopes(post_batch, stream_records):
    events = [web_event(i) for i in range(3)]
    before = time.time_ns() // 1000
    response = post_batch(events)
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 3 and body["rejected"] == []
    assert response["X-Request-Id"] == body["request_id"]
    records = stream_records()
    assert sorted((r["envelope"]["payload"] for r in records), key=lambda p: p["messageId"]) == events
    for record in records:
        envelope = record["envelope"]
        assert envelope["v"] == 1 and envelope["source"] == "web-chat" and envelope["channel"] == "batch"
        assert envelope["request_id"] == body["request_id"]
        assert before <= envelope["received_at"] <= time.time_ns() // 1000
        assert "contract" not in envelope
        assert record["key"] == "web-chat|wc_1"


def test_events_of_one_conversation_share_a_shard_and_keep_their_order(post_batch, stream_records):
    events = [web_event(i, conversation=f"wc_{i % 7}") for i in range(70)]
    assert post_batch(events).status_code == 202
    shards = defaultdict(set)
    order = defaultdict(list)
    for record in stream_records():
        payload = record["envelope"]["payload"]
        shards[payload["conversationId"]].add(record["shard"])
        order[payload["conversationId"]].append(int(payload["messageId"][2:]))
    assert len(shards) == 7 and all(len(s) == 1 for s in shards.values())
    assert len(set().union(*shards.values())) > 1
    assert all(numbers == sorted(numbers) for numbers in order.values())


def test_ndjson_body(post_batch, stream_records):
    body = b"\n".join(orjson.dumps(web_event(i)) for i in range(4)) + b"\n\n"
    response = post_batch(body, content_type="application/x-ndjson")
    assert response.status_code == 202 and response.json()["accepted"] == 4
    assert len(stream_records()) == 4


def test_gzip_json_and_gzip_ndjson(post_batch, stream_records):
    json_body = gzip.compress(orjson.dumps([web_event(i) for i in range(5)]))
    assert post_batch(json_body, headers={"Content-Encoding": "gzip"}).json()["accepted"] == 5
    nd_body = gzip.compress(b"\n".join(orjson.dumps(web_event(i)) for i in range(5, 8)))
    response = post_batch(nd_body, content_type="application/x-ndjson", headers={"Content-Encoding": "gzip"})
    assert response.status_code == 202 and response.json()["accepted"] == 3
    assert len(stream_records()) == 8


def test_text_plain_from_send_beacon_is_sniffed(post_batch, stream_records):
    assert post_batch([web_event(1)], content_type="text/plain").json()["accepted"] == 1
    assert post_batch(orjson.dumps(web_event(2)), content_type="text/plain").json()["accepted"] == 1
    assert len(stream_records()) == 2


def test_a_single_object_is_a_batch_of_one_and_contract_is_carried(post_batch, stream_records):
    response = post_batch(web_event(1), path=f"{BATCH}?contract=chat_event")
    assert response.status_code == 202
    assert stream_records()[0]["envelope"]["contract"] == "chat_event"
    assert_error(post_batch(web_event(1), path=f"{BATCH}?contract=Bad%20Name"), 400, "invalid_contract")


def test_a_full_batch_of_500_is_accepted_and_501_is_refused(post_batch, stream_records):
    response = post_batch([web_event(i, conversation=f"c{i % 50}") for i in range(500)])
    assert response.status_code == 202 and response.json()["accepted"] == 500
    assert len(stream_records()) == 500
    body = assert_error(post_batch([web_event(i) for i in range(501)]), 413, "too_many_events")
    assert body["limit"] == 500
    assert len(stream_records()) == 500


def test_an_event_over_64_kb_is_rejected_by_index_and_the_rest_accepted(post_batch, stream_records):
    def sized(i: int, size: int) -> dict:
        event = web_event(i, pad="")
        event["pad"] = "x" * (size - len(orjson.dumps(event)))
        assert len(orjson.dumps(event)) == size
        return event

    events = [web_event(0), sized(1, 64 * 1024 + 1), sized(2, 64 * 1024), "not an object", [1, 2], web_event(5)]
    response = post_batch(events)
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 3
    assert [(r["index"], r["error"]) for r in body["rejected"]] == [
        (1, "event_too_large"), (3, "not_an_object"), (4, "not_an_object")]
    assert sorted(r["envelope"]["payload"]["messageId"] for r in stream_records()) == ["m-0", "m-2", "m-5"]


def test_a_deeply_nested_event_is_rejected_by_index(post_batch, stream_records):
    deep = b'{"messageId": "deep", "x": ' + b'{"d": ' * 300 + b'"leaf"' + b"}" * 300 + b"}"
    response = post_batch(b"[" + orjson.dumps(web_event(0)) + b", " + deep + b"]")
    assert response.status_code == 202
    assert [(r["index"], r["error"]) for r in response.json()["rejected"]] == [(1, "too_deep")]
    assert len(stream_records()) == 1


def test_a_body_nested_past_1024_levels_is_a_400_not_a_500(post_batch):
    assert_error(post_batch(b"[" * 1100 + b"]" * 1100), 400, "invalid_json")
    nd = post_batch(b'{"a": ' * 1100 + b"1" + b"}" * 1100 + b"\n" + orjson.dumps(web_event(1)),
                    content_type="application/x-ndjson")
    assert nd.status_code == 202 and nd.json()["rejected"][0]["error"] == "invalid_json"


def test_malformed_ndjson_lines_are_rejected_by_index(post_batch, stream_records):
    body = orjson.dumps(web_event(0)) + b"\n{not json\n" + orjson.dumps(web_event(2)) + b"\n42\n"
    response = post_batch(body, content_type="application/x-ndjson")
    assert response.status_code == 202
    assert [(r["index"], r["error"]) for r in response.json()["rejected"]] == [
        (1, "invalid_json"), (3, "not_an_object")]
    assert len(stream_records()) == 2


@pytest.mark.parametrize(("body", "code"), [
    (b"[{\"a\": 1},", "invalid_json"),
    (b"42", "invalid_batch"),
    (b"\"text\"", "invalid_batch"),
    (b"[]", "empty_batch"),
    (b"[1, \"two\", null]", "no_valid_events"),
    (b"[{\"text\": \"caf\xe9\"}]", "invalid_utf8"),
    (b"\xff\xfe[\x00]\x00", "invalid_utf8"),
    (b"{\"a\": 1}\n{\"b\": 2}", "invalid_json"),
    (b"[NaN]", "invalid_json"),
])
def test_bad_bodies_are_400_with_a_reason_and_nothing_lands(post_batch, stream_records, body, code):
    assert_error(post_batch(body), 400, code)
    assert stream_records() == []


def test_an_empty_body_is_invalid_json(client, collector_sources, stream):
    response = client.generic("POST", BATCH, b"", CONTENT_TYPE="application/json",
                              HTTP_AUTHORIZATION=f"Bearer {collector_sources['web_key']}")
    assert_error(response, 400, "invalid_json")


def test_no_valid_events_lists_them(post_batch):
    body = assert_error(post_batch([1, "two"]), 400, "no_valid_events")
    assert [r["index"] for r in body["rejected"]] == [0, 1]


def test_an_empty_ndjson_body_is_an_empty_batch(post_batch):
    assert_error(post_batch(b"\n\n", content_type="application/x-ndjson"), 400, "empty_batch")


def test_a_utf8_bom_is_tolerated(post_batch, stream_records):
    assert post_batch(b"\xef\xbb\xbf" + orjson.dumps([web_event(1)])).status_code == 202


# --- batch: content types, encodings, sizes ---------------------------------------------------------

@pytest.mark.parametrize("content_type", ["text/html", "application/xml", "multipart/form-data; boundary=x",
                                          "application/x-www-form-urlencoded", ""])
def test_wrong_content_types_are_415(post_batch, content_type, stream_records):
    assert_error(post_batch([web_event(1)], content_type=content_type), 415, "unsupported_media_type")
    assert stream_records() == []


def test_a_non_utf8_charset_is_415(post_batch):
    assert_error(post_batch([web_event(1)], content_type="application/json; charset=latin-1"), 415,
                 "unsupported_charset")
    assert post_batch([web_event(1)], content_type="application/json; charset=UTF-8").status_code == 202


def test_unknown_content_encodings_are_415_and_bad_gzip_400(post_batch):
    assert_error(post_batch([web_event(1)], headers={"Content-Encoding": "br"}), 415, "unsupported_content_encoding")
    assert_error(post_batch(b"not gzip at all", headers={"Content-Encoding": "gzip"}), 400, "invalid_gzip")
    truncated = gzip.compress(orjson.dumps([web_event(1)]))[:-12]
    assert_error(post_batch(truncated, headers={"Content-Encoding": "gzip"}), 400, "invalid_gzip")


def test_an_oversized_body_is_413(post_batch, settings, stream_records):
    settings.COLLECTOR_MAX_BODY_BYTES = 10_000
    body = assert_error(post_batch([web_event(i) for i in range(100)]), 413, "body_too_large")
    assert body["limit"] == 10_000
    assert stream_records() == []


def test_a_gzip_bomb_is_413(post_batch, settings):
    settings.COLLECTOR_MAX_BODY_BYTES = 1_000_000
    bomb = gzip.compress(b"[" + b" " * 5_000_000 + b"]")
    assert len(bomb) < 10_000
    assert_error(post_batch(bomb, headers={"Content-Encoding": "gzip"}), 413, "body_too_large")


def test_the_body_limit_is_not_djangos_2_5_mb_default(post_batch, stream_records):
    big = [web_event(i, pad="y" * 7000) for i in range(450)]  # ~3.4 MB, under the 5 MB collector limit
    response = post_batch(big)
    assert response.status_code == 202 and response.json()["accepted"] == 450
    assert len(stream_records()) == 450


# --- batch: authentication and source state ---------------------------------------------------------

def test_a_missing_write_key_is_401(client, collector_sources):
    response = client.post(BATCH, data=b"[]", content_type="application/json")
    assert_error(response, 401, "missing_write_key")
    assert response["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("header", ["Bearer nope", "Bearer wk_deadbeef_AAAAAAAAAAAAAAAAAAAAAAAAAAAA", "Token x",
                                    "Basic !!!"])
def test_a_wrong_write_key_is_401(client, collector_sources, header, stream_records):
    response = client.post(BATCH, data=orjson.dumps([web_event(1)]), content_type="application/json",
                           headers={"Authorization": header})
    assert response.status_code == 401 and response.json()["error"] in {"invalid_write_key", "missing_write_key"}
    assert stream_records() == []


def test_another_sources_key_with_a_matching_prefix_is_still_refused(post_batch, collector_sources):
    key = collector_sources["web_key"]
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert_error(post_batch([web_event(1)], key=forged), 401, "invalid_write_key")


def test_basic_auth_with_the_key_as_user_works(client, collector_sources, stream_records):
    import base64

    token = base64.b64encode(f"{collector_sources['web_key']}:".encode()).decode()
    response = client.post(BATCH, data=orjson.dumps([web_event(1)]), content_type="application/json",
                           headers={"Authorization": f"Basic {token}"})
    assert response.status_code == 202


def test_a_rotated_key_stops_working(post_batch, collector_sources, platform_user):
    from contracts.services import source_write_key_rotate

    old = collector_sources["web_key"]
    new = source_write_key_rotate(actor=platform_user, source=collector_sources["web"])
    assert_error(post_batch([web_event(1)], key=old), 401, "invalid_write_key")
    assert post_batch([web_event(1)], key=new).status_code == 202


def test_a_disabled_source_is_403(post_batch, collector_sources, platform_user, stream_records):
    from contracts.services import source_update

    source_update(actor=platform_user, source=collector_sources["web"], is_active=False)
    assert_error(post_batch([web_event(1)]), 403, "source_disabled")
    assert stream_records() == []


def test_each_source_writes_under_its_own_name(post_batch, collector_sources, stream_records):
    event = {"call_id": "c1", "origin": {"conversation_id": "conv-9"}}
    assert post_batch([event], key=collector_sources["api_key"]).status_code == 202
    (record,) = stream_records()
    assert record["envelope"]["source"] == "llm-gateway" and record["key"] == "llm-gateway|conv-9"


# --- rate limit (real Redis) --------------------------------------------------------------------------

def test_the_per_source_rate_limit_answers_429_with_retry_after(post_batch, settings, monkeypatch, stream_records,
                                                                 collector_sources):
    settings.COLLECTOR_RATE_LIMIT_PER_SOURCE = 10
    monkeypatch.setattr(rate_limit, "_clock", lambda: 1_000_000.25)
    assert post_batch([web_event(i) for i in range(8)]).status_code == 202
    response = post_batch([web_event(i) for i in range(3)])
    body = assert_error(response, 429, "rate_limited")
    assert response["Retry-After"] == "1" and body["limit"] == 10
    assert post_batch([web_event(i) for i in range(2)]).status_code == 202  # the refused 3 were given back
    assert len(stream_records()) == 10
    monkeypatch.setattr(rate_limit, "_clock", lambda: 1_000_001.0)  # the next window
    assert post_batch([web_event(i) for i in range(10)]).status_code == 202
    if "Redis" in settings.CACHES["default"]["BACKEND"]:
        assert cache.get(f"collect:rate:{collector_sources['web'].pk}:1000001") == 10


def test_one_batch_larger_than_the_limit_goes_in_once_per_window(post_batch, settings, monkeypatch):
    settings.COLLECTOR_RATE_LIMIT_PER_SOURCE = 5
    monkeypatch.setattr(rate_limit, "_clock", lambda: 2_000_000.9)
    assert post_batch([web_event(i) for i in range(20)]).status_code == 202
    assert post_batch([web_event(1)]).status_code == 429


def test_the_limit_is_per_source(post_batch, settings, monkeypatch, collector_sources):
    settings.COLLECTOR_RATE_LIMIT_PER_SOURCE = 3
    monkeypatch.setattr(rate_limit, "_clock", lambda: 3_000_000.0)
    assert post_batch([web_event(i) for i in range(3)]).status_code == 202
    assert post_batch([web_event(1)]).status_code == 429
    assert post_batch([{"call_id": "x"}], key=collector_sources["api_key"]).status_code == 202


def test_a_cache_outage_fails_open(post_batch, settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": f"redis://127.0.0.1:{_free_port()}/0"}}
    settings.COLLECTOR_RATE_LIMIT_PER_SOURCE = 1
    assert post_batch([web_event(1)]).status_code == 202


# --- stream outage ----------------------------------------------------------------------------------

def test_a_kinesis_outage_is_503_with_retry_after(post_batch, settings, stream_records, stream):
    real_endpoint = settings.AWS_ENDPOINT_URL
    settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{_free_port()}"
    response = post_batch([web_event(1)])
    body = assert_error(response, 503, "stream_unavailable")
    assert int(response["Retry-After"]) > 0 and "accepted" not in body
    settings.AWS_ENDPOINT_URL = real_endpoint
    assert stream_records() == []


def test_a_missing_stream_is_503(post_batch, settings, aws_settings):
    settings.KINESIS_STREAM_NAME = "no-such-stream"
    assert_error(post_batch([web_event(1)]), 503, "stream_unavailable")


def test_records_refused_after_every_retry_make_the_request_503(post_batch, monkeypatch, stream_records):
    from ingest_workers import collectors
    from ingest_workers.stream import StreamProducer

    class AlwaysThrottled(StreamProducer):
        def __init__(self, **kwargs):
            super().__init__(sleep=lambda _: None, **kwargs)
            real = self.client

            class Client:  # the first entry goes in once; every other entry is refused every time
                calls = 0

                def put_records(self, *, StreamName, Records):  # noqa: N803
                    Client.calls += 1
                    answer = real.put_records(StreamName=StreamName, Records=Records[:1])["Records"] \
                        if Client.calls == 1 else []
                    refused = [{"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded"}]
                    failed = len(Records) - len(answer)
                    return {"FailedRecordCount": failed, "Records": answer + refused * failed}

            self.client = Client()

    monkeypatch.setattr(collectors, "StreamProducer", AlwaysThrottled)
    assert_error(post_batch([web_event(i) for i in range(5)]), 503, "stream_unavailable")
    assert len(stream_records()) == 1  # put once, answered 503: the producer's retry makes a counted duplicate


# --- Slack --------------------------------------------------------------------------------------------

def test_a_signed_slack_event_lands_with_its_thread_as_partition_key(post_slack, stream_records):
    sample = slack_samples()[1]  # an app_mention in a thread
    started = time.monotonic()
    response = post_slack(sample)
    assert time.monotonic() - started < 3.0  # Slack's deadline
    assert response.status_code == 200 and response.json()["accepted"] == 1
    (record,) = stream_records()
    assert record["envelope"]["payload"] == sample
    assert record["envelope"]["channel"] == "slack" and record["envelope"]["source"] == "slack-bot"
    assert record["key"] == "slack-bot|C0LAN2Q65:1772360800.001100"


def test_slack_thread_messages_share_a_shard(post_slack, stream_records):
    base = slack_samples()[1]
    for i in range(12):
        event = {**base, "event_id": f"Ev{i}",
                 "event": {**base["event"], "ts": f"17723612{i:02d}.000100",
                           "thread_ts": "1772360800.001100" if i % 2 else "1772360900.000200"}}
        assert post_slack(event).status_code == 200
    shards = defaultdict(set)
    for record in stream_records():
        shards[record["envelope"]["payload"]["event"]["thread_ts"]].add(record["shard"])
    assert len(shards) == 2 and all(len(s) == 1 for s in shards.values())


def test_slack_source_can_be_addressed_by_id(post_slack, collector_sources, stream_records):
    assert post_slack(slack_samples()[0], source=str(collector_sources["slack"].pk)).status_code == 200
    assert len(stream_records()) == 1


def test_url_verification_answers_the_challenge_and_puts_nothing(post_slack, stream_records):
    challenge = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    response = post_slack({"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": challenge, "type": "url_verification"})
    assert response.status_code == 200
    assert response.json() == {"challenge": challenge}
    assert stream_records() == []


def test_url_verification_must_be_signed_too(post_slack):
    body = {"challenge": "c", "type": "url_verification"}
    assert_error(post_slack(body, signature="v0=" + "0" * 64), 401, "invalid_signature")


def test_a_slack_retry_of_a_delivered_event_is_not_put_again(post_slack, stream_records):
    sample = slack_samples()[0]
    assert post_slack(sample).json()["accepted"] == 1
    retry = post_slack(sample, headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    assert retry.status_code == 200 and retry.json()["duplicate"] is True
    assert len(stream_records()) == 1


def test_a_slack_retry_after_a_failed_delivery_is_put(post_slack, settings, stream_records):
    sample = slack_samples()[0]
    real_endpoint = settings.AWS_ENDPOINT_URL
    settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{_free_port()}"
    assert_error(post_slack(sample), 503, "stream_unavailable")
    settings.AWS_ENDPOINT_URL = real_endpoint
    retry = post_slack(sample, headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_error"})
    assert retry.status_code == 200 and retry.json()["accepted"] == 1
    assert len(stream_records()) == 1


def test_a_second_copy_without_the_short_circuit_carries_the_same_slack_event_id(post_slack, stream_records):
    sample = slack_samples()[0]
    cache.clear()
    assert post_slack(sample).status_code == 200
    cache.clear()  # e.g. the cache was flushed between the delivery and Slack's retry
    assert post_slack(sample, headers={"X-Slack-Retry-Num": "2"}).status_code == 200
    ids = {r["envelope"]["payload"]["event_id"] for r in stream_records()}
    assert ids == {sample["event_id"]}  # one event, two copies: the pipeline counts the second as a duplicate


@pytest.mark.parametrize(("change", "code"), [
    ({"signature": "v0=" + "a" * 64}, "invalid_signature"),
    ({"signature": "v1=abc"}, "invalid_signature"),
    ({"signature": ""}, "missing_signature"),
    ({"timestamp": "not-a-number"}, "invalid_timestamp"),
    ({"stale": -301}, "stale_timestamp"),
    ({"stale": 301}, "stale_timestamp"),
])
def test_forged_or_stale_slack_requests_are_401(post_slack, collector_sources, stream_records, change, code):
    kwargs = dict(change)
    if "stale" in kwargs:
        ts = int(time.time()) + kwargs.pop("stale")
        body = orjson.dumps(slack_samples()[0])
        # correctly signed, just too old (or too far in the future): a replay
        secret = collector_sources["slack"].signing_secret
        kwargs = {"timestamp": ts, "signature": slack_signature(secret, str(ts), body)}
    assert_error(post_slack(slack_samples()[0], **kwargs), 401, code)
    assert stream_records() == []


def test_a_slack_body_tampered_after_signing_is_401(client, collector_sources, stream_records):
    ts = str(int(time.time()))
    body = orjson.dumps(slack_samples()[0])
    signature = slack_signature(collector_sources["slack"].signing_secret, ts, body)
    response = client.post(SLACK.format("slack-bot"), data=body.replace(b"VPN", b"NPV"),
                           content_type="application/json",
                           headers={"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature})
    assert_error(response, 401, "invalid_signature")


def test_a_request_signed_with_another_secret_is_401(client, collector_sources, stream_records):
    ts = str(int(time.time()))
    body = orjson.dumps(slack_samples()[0])
    response = client.post(SLACK.format("slack-bot"), data=body, content_type="application/json",
                           headers={"X-Slack-Request-Timestamp": ts,
                                    "X-Slack-Signature": slack_signature("someone-elses-secret", ts, body)})
    assert_error(response, 401, "invalid_signature")


def test_missing_slack_headers_are_401(client, collector_sources):
    response = client.post(SLACK.format("slack-bot"), data=b"{}", content_type="application/json")
    assert_error(response, 401, "missing_signature")


def test_unknown_or_wrong_platform_sources_are_404(post_slack, post_voice):
    assert_error(post_slack(slack_samples()[0], source="no-such-bot"), 404, "source_not_found")
    assert_error(post_slack(slack_samples()[0], source="999999"), 404, "source_not_found")
    assert_error(post_slack(slack_samples()[0], source="9" * 30), 404, "source_not_found")
    assert_error(post_slack(slack_samples()[0], source="web-chat"), 404, "source_not_found")
    assert_error(post_voice(alexa_samples()[0], source="slack-bot"), 404, "source_not_found")


def test_a_source_id_with_odd_characters_is_a_json_404(client, collector_sources):
    for path in ["/collect/v1/webhooks/slack/a%00b", "/collect/v1/webhooks/slack/" + "x" * 200,
                 "/collect/v1/webhooks/slack/caf%C3%A9", "/collect/v1/nope"]:
        assert_error(client.post(path, data=b"{}", content_type="application/json"), 404, "not_found")


def test_a_webhook_source_without_a_signing_secret_is_403(client, platform_user, team):
    from contracts.services import source_create

    source_create(actor=platform_user, team=team, name="new-bot", platform="slack", kind="webhook")
    ts = str(int(time.time()))
    response = client.post(SLACK.format("new-bot"), data=b"{}", content_type="application/json",
                           headers={"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": "v0=00"})
    assert_error(response, 403, "signing_secret_not_set")


def test_a_disabled_slack_source_is_403(post_slack, collector_sources, platform_user, stream_records):
    from contracts.services import source_update

    source_update(actor=platform_user, source=collector_sources["slack"], is_active=False)
    assert_error(post_slack(slack_samples()[0]), 403, "source_disabled")
    assert stream_records() == []


def test_slack_content_type_body_and_size_checks(post_slack, stream_records, settings):
    assert_error(post_slack(slack_samples()[0], content_type="application/x-www-form-urlencoded"), 415,
                 "unsupported_media_type")
    assert_error(post_slack(b"{not json"), 400, "invalid_json")
    assert_error(post_slack(b"[1, 2]"), 400, "not_an_object")
    assert_error(post_slack(b"{\"a\": \"\xff\"}"), 400, "invalid_utf8")
    big = {**slack_samples()[0], "pad": "x" * (64 * 1024)}
    assert_error(post_slack(big), 413, "body_too_large")
    ignored = post_slack({"type": "app_rate_limited", "team_id": "T1", "minute_rate_limited": 1518467820})
    assert ignored.status_code == 200 and ignored.json()["accepted"] == 0
    assert stream_records() == []


# --- voice (Alexa requests) ---------------------------------------------------------------------------

def test_a_signed_alexa_turn_lands_keyed_by_its_session(post_voice, stream_records):
    turns = alexa_samples()
    for turn in turns:
        response = post_voice(turn)
        assert response.status_code == 202 and response.json()["accepted"] == 1
    records = stream_records()
    assert [r["envelope"]["payload"] for r in records] == turns  # one session: one shard, in order
    assert {r["key"] for r in records} == {f"voice-assistant|{turns[0]['session']['sessionId']}"}
    assert {r["envelope"]["channel"] for r in records} == {"voice"}


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"signature": "sha256=" + "0" * 64}, "invalid_signature"),
    ({"signature": None}, "missing_signature"),
    ({"timestamp": "yesterday"}, "invalid_timestamp"),
    ({"timestamp": ""}, "missing_timestamp"),
])
def test_forged_voice_requests_are_401(post_voice, stream_records, kwargs, code):
    assert_error(post_voice(alexa_samples()[0], **kwargs), 401, code)
    assert stream_records() == []


def test_a_stale_voice_request_is_401(post_voice, collector_sources, stream_records):
    ts = str(int(time.time()) - 600)
    body = orjson.dumps(alexa_samples()[0])
    signature = voice_signature(collector_sources["voice"].signing_secret, ts, body)
    assert_error(post_voice(body, timestamp=ts, signature=signature), 401, "stale_timestamp")


def test_a_voice_body_that_is_not_an_alexa_request_is_400(post_voice, stream_records):
    assert_error(post_voice({"hello": "world"}), 400, "invalid_alexa_request")
    assert_error(post_voice({"request": {"type": 3}}), 400, "invalid_alexa_request")
    assert stream_records() == []


# --- methods and CORS ---------------------------------------------------------------------------------

def test_other_methods_are_405_and_cors_preflight_is_answered(client, collector_sources):
    response = client.get(BATCH)
    assert_error(response, 405, "method_not_allowed")
    assert response["Allow"] == "POST"
    preflight = client.options(BATCH, headers={"Origin": "https://shop.example",
                                               "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204
    assert preflight["Access-Control-Allow-Origin"] == "*"
    assert "Authorization" in preflight["Access-Control-Allow-Headers"]
    assert_error(client.get(SLACK.format("slack-bot")), 405, "method_not_allowed")


# --- manage.py source_credentials ---------------------------------------------------------------------

def run_command(*args, stdin: str = "") -> str:
    import sys

    out = io.StringIO()
    old_stdin = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        call_command("source_credentials", *args, stdout=out)
    finally:
        sys.stdin = old_stdin
    return out.getvalue()


def test_source_credentials_shows_prefix_rotation_and_secret_state(collector_sources):
    out = run_command("slack-bot")
    assert "write key prefix:  (none: a webhook source's events are signed by the provider)" in out
    assert "signing secret:    set" in out and collector_sources["slack"].signing_secret not in out
    web = run_command(str(collector_sources["web"].pk))
    assert f"wk_{collector_sources['web'].write_key_prefix}_" in web and "key rotated at:" in web


def test_source_credentials_rotates_the_write_key(post_batch, collector_sources, platform_user):
    out = run_command("web-chat", "--rotate-write-key", "--actor", platform_user.username)
    new_key = out.split("(shown once): ")[1].split()[0]
    assert_error(post_batch([web_event(1)]), 401, "invalid_write_key")
    assert post_batch([web_event(1)], key=new_key).status_code == 202
    from portal.models import AuditRecord

    assert AuditRecord.objects.filter(action="source.rotate_write_key", actor=platform_user).exists()


def test_source_credentials_stores_a_signing_secret_from_stdin(client, collector_sources, admin_user,
                                                               stream_records):
    run_command("slack-bot", "--signing-secret", "-", "--actor", admin_user.username, stdin="fresh-secret\n")
    ts = str(int(time.time()))
    body = orjson.dumps(slack_samples()[0])
    response = client.post(SLACK.format("slack-bot"), data=body, content_type="application/json",
                           headers={"X-Slack-Request-Timestamp": ts,
                                    "X-Slack-Signature": slack_signature("fresh-secret", ts, body)})
    assert response.status_code == 200


def test_source_credentials_explains_refusals(collector_sources, other_platform_user):
    with pytest.raises(CommandError, match="not found"):
        run_command("no-such-source")
    with pytest.raises(CommandError, match="No active user"):
        run_command("web-chat", "--rotate-write-key", "--actor", "ghost")
    with pytest.raises(CommandError, match="--actor"):
        run_command("web-chat", "--rotate-write-key", "--actor", other_platform_user.username)


def test_webhook_sources_have_no_write_key_and_the_batch_endpoint_refuses_them(post_batch, collector_sources,
                                                                               stream_records):
    # issue 10: a webhook source's events are always provider-signed; a write key was a second way in
    from contracts.services import _new_write_key

    slack = collector_sources["slack"]
    assert slack.write_key_prefix == "" and slack.write_key_hash == ""
    # a key issued before webhook sources stopped getting one (the migration withdraws them too)
    key, prefix, digest = _new_write_key()
    type(slack).objects.filter(pk=slack.pk).update(write_key_prefix=prefix, write_key_hash=digest)
    response = post_batch([web_event(1)], key=key)
    assert_error(response, 403, "webhook_source")
    assert "/collect/v1/webhooks/slack/slack-bot" in response.json()["message"]
    assert stream_records() == []


def test_source_credentials_will_not_rotate_a_webhook_sources_key(collector_sources, admin_user):
    with pytest.raises(CommandError, match="webhook source"):
        run_command("slack-bot", "--rotate-write-key", "--actor", admin_user.username)


def test_a_sender_turned_away_shows_on_the_source_and_pipeline_pages(client, post_batch, collector_sources,
                                                                     platform_user):
    # walkthrough F2: after a key rotation the old sender got 401s that nothing in the portal showed
    from contracts.services import source_write_key_rotate

    old_key = collector_sources["web_key"]
    assert post_batch([web_event(1), web_event(2)]).status_code == 202
    source_write_key_rotate(actor=platform_user, source=collector_sources["web"])
    for _ in range(3):
        assert_error(post_batch([web_event(3)], key=old_key), 401, "invalid_write_key")
    assert_error(post_batch([web_event(4)], key="wk_deadbeef_" + "A" * 43), 401, "invalid_write_key")
    client.force_login(platform_user)
    page = client.get("/sources/web-chat/").content.decode()
    section = page[page.index("Collector, last hour"):]
    assert "2 events in 1 request" in section
    assert re.search(r"<code>rotated_write_key</code> \(401\) × 3", section)
    assert "give the sender the new key" in section
    pipeline = client.get("/pipeline/").content.decode()
    rows = re.findall(r'data-testid="collector-answers-row">(.*?)</tr>', pipeline, re.S)
    web = next(row for row in rows if ">web-chat<" in row)
    assert "rotated_write_key" in web and "× 3" in web
    unknown = next(row for row in rows if "no known source" in row)
    assert "<code>invalid_write_key</code> (401) × 1" in unknown


def test_collector_answers_from_several_processes_add_up(db):
    from ingest_workers import collector_stats
    from ingest_workers.page_selectors import collector_answers_last_hour

    now = time.time()
    for _ in range(2):   # two processes count the same minute and each flushes its own counts
        collector_stats.collector_answer_record(source="web-chat", status=202, code="accepted", events=5, now=now)
        collector_stats.collector_answer_record(source="web-chat", status=429, code="rate_limited", now=now)
        collector_stats.collector_answers_flush()
    (web,) = collector_answers_last_hour(source="web-chat")
    assert (web.accepted_requests, web.accepted_events) == (2, 10)
    assert [(r["code"], r["requests"]) for r in web.refused] == [("rate_limited", 2)]
    collector_stats.collector_answer_record(source="old", status=401, code="invalid_write_key",
                                            now=now - 2 * 3600)   # older than the hour: not shown
    collector_stats.collector_answers_flush()
    assert collector_answers_last_hour(source="old") == []
