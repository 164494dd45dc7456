"""Hostile bodies and headers never crash a collector: every answer is JSON, 2xx or a 4xx with a reason,
and every event a 2xx reports accepted is on the (real, moto) stream: nothing accepted is lost."""

from __future__ import annotations

import gzip
import time

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest_workers.collector_auth import slack_signature, voice_signature

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("collector_cache")]

BATCH = "/collect/v1/batch"
HYPOTHESIS = settings(max_examples=120, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

json_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30))
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=40,
)
event_like = st.dictionaries(st.sampled_from(["messageId", "conversationId", "sessionId", "anonymousId", "type",
                                              "event", "session", "x"]), json_values, max_size=6)


@st.composite
def nested(draw) -> bytes:
    depth = draw(st.integers(1, 1200))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    return opener * depth + b"0" + closer * depth


def _mangle(data: bytes, draw) -> bytes:
    """Flip, cut or splice bytes of a valid body."""
    if not data:
        return data
    how = draw(st.sampled_from(["flip", "cut", "splice", "as_is"]))
    at = draw(st.integers(0, len(data) - 1))
    if how == "flip":
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
    if how == "cut":
        return data[:at]
    if how == "splice":
        return data[:at] + draw(st.binary(max_size=20)) + data[at:]
    return data


@st.composite
def hostile_batch_bodies(draw) -> tuple[bytes, str, dict]:
    kind = draw(st.sampled_from(["bytes", "json", "events", "ndjson", "nested", "mangled", "latin1"]))
    if kind == "bytes":
        body = draw(st.binary(max_size=300))
    elif kind == "json":
        body = orjson.dumps(draw(json_values))
    elif kind == "events":
        body = orjson.dumps(draw(st.lists(event_like | json_values, max_size=12)))
    elif kind == "ndjson":
        lines = draw(st.lists(event_like.map(orjson.dumps) | st.binary(max_size=40), max_size=12))
        body = b"\n".join(lines)
    elif kind == "nested":
        body = b"[" + draw(nested()) + b"]"
    elif kind == "latin1":
        body = orjson.dumps([{"text": draw(st.text(max_size=20))}]).decode().encode("latin-1", "replace") + b"\xe9"
    else:
        body = _mangle(orjson.dumps(draw(st.lists(event_like, min_size=1, max_size=5))), draw)
    content_type = draw(st.sampled_from(["application/json", "application/x-ndjson", "text/plain",
                                         "application/json; charset=utf-8", "text/html", "application/xml",
                                         "application/octet-stream", "application/json; charset=utf-16"]))
    headers = {}
    encoding = draw(st.sampled_from(["", "", "gzip", "gzip-broken", "deflate", "GZIP"]))
    if encoding == "gzip-broken":
        body = _mangle(gzip.compress(body), draw)
        headers["Content-Encoding"] = "gzip"
    elif encoding in {"gzip", "GZIP"}:
        body = gzip.compress(body)
        headers["Content-Encoding"] = encoding
    elif encoding:
        headers["Content-Encoding"] = encoding
    return body, content_type, headers


def assert_json_answer(response, allowed: set[int]) -> dict:
    assert response.status_code in allowed, (response.status_code, response.content[:300])
    assert response["Content-Type"] == "application/json"
    body = orjson.loads(response.content)
    if response.status_code >= 400:
        assert isinstance(body["error"], str) and body["error"]
        assert isinstance(body["message"], str) and body["message"]
    return body


def test_hostile_batch_bodies_get_json_4xx_and_accepted_events_all_land(client, collector_sources, stream_records):
    accepted: list[int] = []
    auth = {"Authorization": f"Bearer {collector_sources['web_key']}"}

    @HYPOTHESIS
    @given(case=hostile_batch_bodies())
    def run(case):
        body, content_type, headers = case
        # generic(), not post(): post() re-encodes a body whose content type names a charset
        response = client.generic("POST", BATCH, body, content_type=content_type, headers={**auth, **headers})
        answer = assert_json_answer(response, {202, 400, 413, 415})
        if response.status_code == 202:
            assert answer["accepted"] >= 1
            assert all(set(r) == {"index", "error", "message"} for r in answer["rejected"])
            accepted.append(answer["accepted"])
        elif response.status_code == 400 and answer["error"] == "no_valid_events":
            assert answer["rejected"]

    run()
    records = stream_records()
    assert len(records) == sum(accepted)
    assert all(isinstance(r["envelope"]["payload"], dict) for r in records)


def _container_depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max((_container_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_container_depth(v) for v in value), default=0)
    return 0


def _nested_bytes(depth: int, as_object: bool) -> bytes:
    opener, closer = (b'{"a":', b"}") if as_object else (b"[", b"]")
    return opener * depth + b"0" + closer * depth


def test_hostile_event_lists_account_for_every_event(client, collector_sources, stream_records):
    """Each event of a parsed batch is either accepted or listed by index; none goes missing.

    An event is refused when it is not an object, or when it nests 254+ containers (the envelope adds
    one more level and orjson serialises at most 254).
    """
    accepted: list[int] = []
    auth = {"Authorization": f"Bearer {collector_sources['web_key']}"}
    deep = st.tuples(st.integers(1, 1100), st.booleans())

    @HYPOTHESIS
    @given(events=st.lists(event_like | json_values | deep, min_size=1, max_size=20))
    def run(events):
        encoded, expected_rejected, deepest = [], set(), 0
        for index, event in enumerate(events):
            if isinstance(event, tuple):
                depth, as_object = event
                encoded.append(_nested_bytes(depth, as_object))
                deepest = max(deepest, depth)
                if not as_object or depth >= 254:
                    expected_rejected.add(index)
            else:
                encoded.append(orjson.dumps(event))
                if not isinstance(event, dict) or _container_depth(event) >= 254:
                    expected_rejected.add(index)
        response = client.post(BATCH, data=b"[" + b",".join(encoded) + b"]", content_type="application/json",
                               headers=auth)
        answer = assert_json_answer(response, {202, 400})
        if deepest + 1 > 1024:  # the array and an event nest past orjson's 1024 levels: the body is not JSON
            assert answer["error"] == "invalid_json"
            return
        assert {r["index"] for r in answer.get("rejected", [])} == expected_rejected
        if response.status_code == 202:
            assert answer["accepted"] + len(expected_rejected) == len(events)
            accepted.append(answer["accepted"])
        else:
            assert answer["error"] == "no_valid_events" and len(expected_rejected) == len(events)

    run()
    assert len(stream_records()) == sum(accepted)


def test_hostile_write_keys_are_401(client, collector_sources, stream_records):
    @HYPOTHESIS
    @given(header=st.text(max_size=120).filter(lambda h: "\n" not in h and "\r" not in h)
           | st.builds(lambda k: f"Bearer {k}", st.from_regex(r"wk_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", fullmatch=True)))
    def run(header):
        response = client.post(BATCH, data=b'[{"a": 1}]', content_type="application/json",
                               headers={"Authorization": header})
        answer = assert_json_answer(response, {401})
        assert answer["error"] in {"missing_write_key", "invalid_write_key"}

    run()
    assert stream_records() == []


def test_hostile_signed_slack_bodies_never_500(client, collector_sources, stream_records):
    secret = collector_sources["slack"].signing_secret
    accepted: list[int] = []

    @HYPOTHESIS
    @given(body=st.binary(max_size=300) | json_values.map(orjson.dumps)
           | st.fixed_dictionaries({"type": st.sampled_from(["event_callback", "url_verification", "x"])},
                                   optional={"event_id": json_values, "challenge": json_values,
                                             "event": event_like | json_values}).map(orjson.dumps)
           | nested(),
           retry=st.sampled_from([None, "1", "x"]))
    def run(body, retry):
        ts = str(int(time.time()))
        headers = {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": slack_signature(secret, ts, body)}
        if retry:
            headers["X-Slack-Retry-Num"] = retry
        response = client.post("/collect/v1/webhooks/slack/slack-bot", data=body, content_type="application/json",
                               headers=headers)
        answer = assert_json_answer(response, {200, 400, 413, 415})
        if response.status_code == 200:
            accepted.append(answer.get("accepted", 0))

    run()
    assert len(stream_records()) == sum(accepted)


def test_forged_slack_signatures_are_always_401(client, collector_sources, stream_records):
    secret = collector_sources["slack"].signing_secret

    @HYPOTHESIS
    @given(body=st.binary(min_size=1, max_size=200), wrong_secret=st.text(min_size=1, max_size=40),
           skew=st.sampled_from([0, -301, 301, -10_000]), ts_text=st.none() | st.text(max_size=12))
    def run(body, wrong_secret, skew, ts_text):
        ts = str(int(time.time()) + skew) if ts_text is None else ts_text
        signer = wrong_secret if wrong_secret != secret else secret + "x"
        headers = {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": slack_signature(signer, ts, body)}
        headers = {k: v for k, v in headers.items() if "\n" not in v and "\r" not in v}
        response = client.post("/collect/v1/webhooks/slack/slack-bot", data=body, content_type="application/json",
                               headers=headers)
        assert_json_answer(response, {401})

    run()
    assert stream_records() == []


def test_hostile_signed_voice_bodies_never_500(client, collector_sources, stream_records):
    secret = collector_sources["voice"].signing_secret
    accepted: list[int] = []

    @HYPOTHESIS
    @given(body=st.binary(max_size=300) | json_values.map(orjson.dumps) | nested()
           | st.fixed_dictionaries({"request": st.fixed_dictionaries({"type": json_values})},
                                   optional={"session": event_like | json_values}).map(orjson.dumps))
    def run(body):
        ts = str(int(time.time()))
        response = client.post("/collect/v1/webhooks/voice/voice-assistant", data=body,
                               content_type="application/json",
                               headers={"X-ChatOrbit-Timestamp": ts,
                                        "X-ChatOrbit-Signature": voice_signature(secret, ts, body)})
        answer = assert_json_answer(response, {202, 400, 413, 415})
        if response.status_code == 202:
            accepted.append(answer["accepted"])

    run()
    assert len(stream_records()) == sum(accepted)


def test_hostile_source_ids_are_json_404s(client, collector_sources, stream):
    @HYPOTHESIS
    @given(source_id=st.text(min_size=1, max_size=80).filter(lambda s: s not in {"slack-bot", "voice-assistant"}
                                                              and not s.isdigit()))
    def run(source_id):
        from urllib.parse import quote

        for kind in ("slack", "voice"):
            response = client.post(f"/collect/v1/webhooks/{kind}/{quote(source_id, safe='')}", data=b"{}",
                                   content_type="application/json")
            answer = assert_json_answer(response, {404})
            assert answer["error"] in {"source_not_found", "not_found"}

    run()
