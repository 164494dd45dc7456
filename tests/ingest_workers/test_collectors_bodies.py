"""Request bodies the collectors must not misread (hostile-input sweep D7 and D8): a chunked body, a body
shorter than its Content-Length (over real HTTP, on the live server), and integers beyond 64 bits, which
orjson would silently turn into floats."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import orjson
import pytest

from ingest_workers.collector_auth import voice_signature

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("collector_cache")]

BATCH = "/collect/v1/batch"
EVENT = b'{"messageId":"m-1","type":"message","conversationId":"wc_1","message":{"text":"hi"}}'


def raw_http(live_server, head: bytes, body: bytes, *, close_after_body: bool) -> tuple[int, dict]:
    """Send bytes as they are over one connection; the status and the JSON answer."""
    url = urlsplit(live_server.url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(head + body)
        if close_after_body:
            sock.shutdown(socket.SHUT_WR)  # the client is gone: nothing more will come
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer:
                headers, _, rest = answer.partition(b"\r\n\r\n")
                length = [int(line.split(b":")[1]) for line in headers.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")]
                if length and len(rest) >= length[0]:
                    break
    status = int(answer.split(b" ", 2)[1])
    return status, orjson.loads(answer.partition(b"\r\n\r\n")[2])


def test_a_chunked_batch_is_refused_with_411_not_read_as_empty(live_server, collector_sources, stream_records):
    chunk = b"[" + EVENT + b"]"
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk)
    head = (f"POST {BATCH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {collector_sources['web_key']}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    status, answer = raw_http(live_server, head, body, close_after_body=False)
    assert (status, answer["error"]) == (411, "length_required")
    assert "Content-Length" in answer["message"] and "chunked" in answer["message"].lower()
    assert stream_records() == []


def test_a_body_shorter_than_its_content_length_is_refused_not_accepted(live_server, collector_sources,
                                                                       stream_records):
    body = b"[" + EVENT + b"]"
    head = (f"POST {BATCH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {collector_sources['web_key']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body) + 40}\r\nConnection: close\r\n\r\n").encode()
    status, answer = raw_http(live_server, head, body, close_after_body=True)
    assert (status, answer["error"]) == (400, "incomplete_body")
    assert f"{len(body)} of the {len(body) + 40} bytes" in answer["message"]
    assert stream_records() == []


def test_a_whole_body_over_real_http_is_still_accepted(live_server, collector_sources, stream_records):
    body = b"[" + EVENT + b"]"
    head = (f"POST {BATCH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {collector_sources['web_key']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    status, answer = raw_http(live_server, head, body, close_after_body=False)
    assert (status, answer["accepted"]) == (202, 1)
    assert len(stream_records()) == 1


def test_integers_beyond_64_bits_are_refused_per_event_and_the_rest_kept_exact(client, collector_sources,
                                                                              stream_records):
    events = [
        b'{"messageId":"m-1","big":18446744073709551616}',                   # 2**64: orjson makes a float
        b'{"messageId":"m-2","n":{"list":[1,-9223372036854775809]}}',        # -(2**63) - 1
        b'{"messageId":"m-3","max":18446744073709551615,"min":-9223372036854775808,'
        b'"id":"123456789012345678901234567890","f":1.8446744073709552e+19}',  # all in range, or not integers
    ]
    response = client.post(BATCH, data=b"[" + b",".join(events) + b"]", content_type="application/json",
                           headers={"Authorization": f"Bearer {collector_sources['web_key']}"})
    assert response.status_code == 202
    answer = orjson.loads(response.content)
    assert answer["accepted"] == 1
    assert [(r["index"], r["error"]) for r in answer["rejected"]] == [(0, "number_out_of_range"),
                                                                     (1, "number_out_of_range")]
    assert "/big" in answer["rejected"][0]["message"] and "/n/list/1" in answer["rejected"][1]["message"]
    (record,) = stream_records()
    payload = record["envelope"]["payload"]
    assert payload["max"] == 2**64 - 1 and payload["min"] == -(2**63) and isinstance(payload["max"], int)

    # NDJSON: the same rule line by line
    response = client.post(BATCH, data=b"\n".join(events), content_type="application/x-ndjson",
                           headers={"Authorization": f"Bearer {collector_sources['web_key']}"})
    answer = orjson.loads(response.content)
    assert (response.status_code, answer["accepted"]) == (202, 1)
    assert [r["error"] for r in answer["rejected"]] == ["number_out_of_range"] * 2

    # a batch of nothing else is refused whole
    response = client.post(BATCH, data=events[0], content_type="application/json",
                           headers={"Authorization": f"Bearer {collector_sources['web_key']}"})
    assert response.status_code == 400
    assert orjson.loads(response.content)["rejected"][0]["error"] == "number_out_of_range"


def test_a_webhook_with_an_integer_beyond_64_bits_is_refused(client, collector_sources, stream_records):
    body = b'{"version":"1.0","request":{"type":"IntentRequest","requestId":"r-1","n":99999999999999999999999}}'
    ts = str(int(time.time()))
    response = client.post("/collect/v1/webhooks/voice/voice-assistant", data=body, content_type="application/json",
                           headers={"X-ChatOrbit-Timestamp": ts,
                                    "X-ChatOrbit-Signature": voice_signature(
                                        collector_sources["voice"].signing_secret, ts, body)})
    assert response.status_code == 400
    assert orjson.loads(response.content)["error"] == "number_out_of_range"
    assert stream_records() == []


def test_a_nul_character_in_a_collector_address_is_a_json_404_or_400(client, collector_sources, stream):
    for path in ("/collect/v1/webhooks/slack/slack%00bot", "/collect/v1/webhooks/voice/%00",
                 "/collect/v1/ba%00tch"):
        response = client.post(path, data=b"{}", content_type="application/json")
        assert response.status_code == 404, path
        assert orjson.loads(response.content)["error"] in {"not_found", "source_not_found"}
    response = client.post(BATCH + "?contract=chat%00event", data=b"[" + EVENT + b"]",
                           content_type="application/json",
                           headers={"Authorization": f"Bearer {collector_sources['web_key']}"})
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    assert "contract" in orjson.loads(response.content)["message"]
