"""The collectors: thin HTTP views that authenticate a request, parse and bound it, and put one raw
envelope per event on the Kinesis stream. Nothing here knows about contracts or the canonical model;
the pipeline reads the envelopes (see `envelope.py` and `docs/ingestion.md`).

Every answer is JSON. Errors are `{"error": code, "message": text}` with a 4xx status (or 503 when
the stream or the database is down, with Retry-After), so a producer knows whether to fix the request
or send it again. A request is either accepted whole (every event that passed the up-front checks is
on the stream) or answered with an error; it is never half-accepted silently.
"""

from __future__ import annotations

import functools
import logging
import re
import time
import uuid
import zlib
from collections.abc import Callable
from typing import Any

import orjson
from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from contracts.errors import NotFound
from contracts.models import Platform, Source
from contracts.selectors import source_by_name_or_id
from contracts.services import source_write_key_matches
from ingest_workers import collector_auth, collector_stats, json_numbers
from ingest_workers.envelope import envelope_encode
from ingest_workers.partition import partition_key
from ingest_workers.rate_limit import rate_limit_take
from ingest_workers.stream import RecordTooLarge, StreamProducer, StreamUnavailable

logger = logging.getLogger(__name__)

JSON_TYPES = frozenset({"application/json"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl",
                          "application/x-jsonlines", "application/jsonlines"})
# navigator.sendBeacon and CORS "simple requests" send text/plain: a JSON array or NDJSON, sniffed.
SNIFFED_TYPES = frozenset({"text/plain"})
CONTRACT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,62}$")
UTF8_BOM = b"\xef\xbb\xbf"
STREAM_RETRY_AFTER_SECONDS = 5
DATABASE_RETRY_AFTER_SECONDS = 5
# Slack wants an answer within 3 s; Alexa waits up to 8 s; SDKs retry a 503 on their own.
BATCH_PUT_DEADLINE_SECONDS = 5.0
SLACK_PUT_DEADLINE_SECONDS = 2.0
VOICE_PUT_DEADLINE_SECONDS = 4.0
# Slack retries a delivery up to three times over about an hour.
SLACK_SEEN_TTL_SECONDS = 2 * 60 * 60
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Content-Encoding",
    "Access-Control-Max-Age": "86400",
}


class CollectorError(Exception):
    """A refused request: status, a stable code, a sentence, and optional extra fields and headers."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                 **extra: Any):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra


class _Rejected:
    """An event refused up front, in the place of its payload."""

    __slots__ = ("code", "message")

    def __init__(self, code: str, message: str):
        self.code = code
        self.message = message


def _json(status: int, body: dict, headers: dict[str, str] | None = None) -> HttpResponse:
    response = HttpResponse(orjson.dumps(body), status=status, content_type="application/json")
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def collector_view(*, methods: tuple[str, ...] = ("POST",), cors: bool = False) -> Callable:
    """CSRF-exempt (these endpoints authenticate each request; no cookies), JSON errors, request ids."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            request_id = uuid.uuid4().hex
            extra_headers = {"X-Request-Id": request_id, **(CORS_HEADERS if cors else {})}
            if cors and request.method == "OPTIONS":
                response = HttpResponse(status=204)
            elif request.method not in methods:
                response = _json(405, {"error": "method_not_allowed", "message": f"Use {' or '.join(methods)}."},
                                 {"Allow": ", ".join(methods)})
            else:
                try:
                    response = view(request, *args, request_id=request_id, **kwargs)
                except CollectorError as err:
                    response = _json(err.status, {"error": err.code, "message": err.message, **err.extra},
                                     err.headers)
                except DatabaseError:
                    logger.exception("collector: database unavailable (request %s)", request_id)
                    response = _json(503, {"error": "database_unavailable",
                                           "message": "The collector cannot look up sources right now; retry."},
                                     {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})
            for name, value in extra_headers.items():
                response[name] = value
            _answer_count(request, response)
            return response

        return wrapper

    return decorate


def _answer_count(request: HttpRequest, response: HttpResponse) -> None:
    """Count the answer against its source (the source and pipeline pages show the last hour)."""
    if request.method == "OPTIONS":
        return
    status = response.status_code
    if status < 300:
        code = collector_stats.ACCEPTED
    else:
        code = getattr(request, "collector_code", None)
        if code is None:
            try:
                code = str(orjson.loads(response.content).get("error") or status)
            except (orjson.JSONDecodeError, AttributeError):
                code = str(status)
    collector_stats.collector_answer_record(source=getattr(request, "collector_source", ""), status=status,
                                            code=code[:64], events=getattr(request, "collector_events", 0))


# --- request parsing and limits ---------------------------------------------------------------------

def _require_active(source: Source) -> None:
    if not source.is_active:
        raise CollectorError(403, "source_disabled",
                             f"Source '{source.name}' is disabled; its events are refused until it is enabled.")


def _content_type(request: HttpRequest, accepted: frozenset[str]) -> str:
    mime = (request.content_type or "").lower()
    if mime not in accepted:
        raise CollectorError(415, "unsupported_media_type",
                             f"Content-Type must be one of {', '.join(sorted(accepted))}, not '{mime or 'none'}'.")
    charset = (request.content_params or {}).get("charset", "utf-8").strip().strip('"').lower()
    if charset not in {"utf-8", "utf8"}:
        raise CollectorError(415, "unsupported_charset", f"Send UTF-8 bodies, not charset '{charset}'.")
    return mime


def _content_encoding(request: HttpRequest) -> str:
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in {"", "identity"}:
        return ""
    if encoding in {"gzip", "x-gzip"}:
        return "gzip"
    raise CollectorError(415, "unsupported_content_encoding",
                         f"Content-Encoding must be gzip or none, not '{encoding}'.")


def _declared_length(request: HttpRequest) -> int:
    """The body's length as its Content-Length declares it (docs/decisions.md, "Chunked request bodies").

    Django reads a body only as far as CONTENT_LENGTH says: a chunked body (Transfer-Encoding, no
    Content-Length) would be read as empty, so it is refused with 411 rather than misread."""
    if request.META.get("HTTP_TRANSFER_ENCODING"):
        raise CollectorError(411, "length_required",
                             "Chunked request bodies are not accepted: send the body with a Content-Length header "
                             "(and no Transfer-Encoding).")
    raw = (request.META.get("CONTENT_LENGTH") or "").strip()
    if not raw:
        return 0  # no Content-Length and no Transfer-Encoding: HTTP/1.1 says the body is empty
    if not raw.isascii() or not raw.isdigit():
        raise CollectorError(400, "invalid_content_length", "The Content-Length header is not a number of bytes.")
    return int(raw)


def _body_read(request: HttpRequest, limit: int, what: str = "body") -> bytes:
    """The raw body: refuses more than `limit` bytes (413) before reading, and a body that ends before its
    Content-Length (the client gave up or the connection broke: 400, nothing accepted)."""
    declared = _declared_length(request)
    if declared > limit:
        raise CollectorError(413, "body_too_large", f"The {what} is larger than {limit} bytes.", limit=limit)
    body = request.read(declared)
    if len(body) < declared:
        raise CollectorError(400, "incomplete_body",
                             f"The {what} ended after {len(body)} of the {declared} bytes its Content-Length "
                             "announced; nothing from this request was accepted.")
    return body


def _gunzip(body: bytes, limit: int) -> bytes:
    """Decompress a gzip body (every member), refusing more than `limit` bytes of output (a gzip bomb)."""
    out: list[bytes] = []
    size = 0
    data = body
    try:
        while data:
            decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
            chunk = decompressor.decompress(data, limit + 1 - size)
            size += len(chunk)
            out.append(chunk)
            if size > limit or decompressor.unconsumed_tail:
                raise CollectorError(413, "body_too_large",
                                     f"The decompressed body is larger than {limit} bytes.", limit=limit)
            if not decompressor.eof:
                raise CollectorError(400, "invalid_gzip", "The gzip body is truncated.")
            data = decompressor.unused_data
    except zlib.error as err:
        raise CollectorError(400, "invalid_gzip", f"The body is not valid gzip: {err}.") from None
    return b"".join(out)


def _utf8_check(body: bytes) -> bytes:
    if body.startswith(UTF8_BOM):
        body = body[len(UTF8_BOM):]
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CollectorError(400, "invalid_utf8", f"The body is not valid UTF-8 (byte {err.start}).") from None
    return body


def _json_events(body: bytes) -> list[Any]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        hint = " (send NDJSON as application/x-ndjson)" if b"\n{" in body.strip() else ""
        raise CollectorError(400, "invalid_json", f"The body is not valid JSON: {err}{hint}.") from None
    if isinstance(parsed, list):
        return _big_integers_rejected(parsed, body)
    if isinstance(parsed, dict):
        return _big_integers_rejected([parsed], body)
    raise CollectorError(400, "invalid_batch", "The body must be a JSON array of event objects (or NDJSON).")


def _big_integers_rejected(events: list[Any], body: bytes) -> list[Any]:
    """The events, each one holding an integer beyond 64 bits replaced by its rejection (orjson read
    those as floats, so the exact values come from a second, exact parse; only when a long run of
    digits is in the body)."""
    if not json_numbers.may_hold_big_integer(body):
        return events
    exact = json_numbers.exact_loads(body)
    exact_events = exact if isinstance(exact, list) else [exact]
    if len(exact_events) != len(events):  # cannot happen for a document both readers accept
        return events
    for index, event in enumerate(exact_events):
        path = json_numbers.out_of_range_path(event)
        if path is not None:
            events[index] = _Rejected(json_numbers.NUMBER_OUT_OF_RANGE, json_numbers.out_of_range_message(path))
    return events


def _ndjson_events(body: bytes) -> list[Any]:
    events: list[Any] = []
    for line in body.split(b"\n"):
        line = line.strip(b" \t\r")
        if not line:
            continue
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError as err:
            events.append(_Rejected("invalid_json", f"The line is not valid JSON: {err}."))
            continue
        problem = json_numbers.big_integer_problem(line)
        events.append(event if problem is None else _Rejected(json_numbers.NUMBER_OUT_OF_RANGE, problem))
    return events


def _batch_events(body: bytes, mime: str) -> list[Any]:
    body = _utf8_check(body)
    if mime in NDJSON_TYPES:
        return _ndjson_events(body)
    if mime in SNIFFED_TYPES and not body.lstrip().startswith(b"["):
        return _ndjson_events(body)
    return _json_events(body)


def _json_object(body: bytes) -> dict:
    body = _utf8_check(body)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise CollectorError(400, "invalid_json", f"The body is not valid JSON: {err}.") from None
    if not isinstance(payload, dict):
        raise CollectorError(400, "not_an_object", "The body must be a JSON object.")
    problem = json_numbers.big_integer_problem(body)
    if problem is not None:
        raise CollectorError(400, json_numbers.NUMBER_OUT_OF_RANGE, problem)
    return payload


def _envelopes(
    events: list[Any], *, source: str, channel: str, request_id: str, received_at: int, contract: str | None,
    max_event_bytes: int,
) -> tuple[list[tuple[str, bytes]], list[dict]]:
    """Stream records for the events that pass the up-front checks, and the rest listed by index."""
    common = {"source": source, "received_at": received_at, "request_id": request_id, "channel": channel,
              "contract": contract}
    overhead = len(envelope_encode(payload={}, **common)) - 2  # the envelope around a payload's bytes
    records: list[tuple[str, bytes]] = []
    rejected: list[dict] = []
    for index, event in enumerate(events):
        problem: _Rejected | None = event if isinstance(event, _Rejected) else None
        if problem is None and not isinstance(event, dict):
            problem = _Rejected("not_an_object", f"An event must be a JSON object, not {type(event).__name__}.")
        if problem is None:
            try:
                data = envelope_encode(payload=event, **common)
            except orjson.JSONEncodeError:
                problem = _Rejected("too_deep", "The event is nested too deeply (over 250 levels).")
            else:
                size = len(data) - overhead
                if size > max_event_bytes:
                    problem = _Rejected("event_too_large",
                                        f"The event is {size} bytes as JSON; the limit is {max_event_bytes}.")
                else:
                    records.append((partition_key(source, event), data))
        if problem is not None:
            rejected.append({"index": index, "error": problem.code, "message": problem.message})
    return records, rejected


def _rate_limit(source: Source, events: int) -> None:
    decision = rate_limit_take(source_key=str(source.pk), events=events)
    if not decision.allowed:
        raise CollectorError(
            429, "rate_limited",
            f"Source '{source.name}' may send {decision.limit} events per second; retry after "
            f"{decision.retry_after} s.",
            headers={"Retry-After": str(decision.retry_after)}, limit=decision.limit,
        )


def _put(records: list[tuple[str, bytes]], *, deadline: float) -> None:
    try:
        StreamProducer(deadline_seconds=deadline).put(records)
    except StreamUnavailable as err:
        logger.warning("collector: stream unavailable: %s", err.message)
        raise CollectorError(
            503, "stream_unavailable",
            "The event stream is not accepting records right now; nothing from this request should be "
            "considered accepted. Retry later (events are deduplicated by id).",
            headers={"Retry-After": str(STREAM_RETRY_AFTER_SECONDS)},
        ) from None
    except RecordTooLarge as err:  # cannot happen below the 64 KB event limit; refuse rather than crash
        raise CollectorError(413, "event_too_large", str(err)) from None


def _now_micros() -> int:
    return time.time_ns() // 1000


# --- POST /collect/v1/batch -------------------------------------------------------------------------

def _source_for_write_key(request: HttpRequest) -> Source:
    try:
        key = collector_auth.write_key_from_authorization(request.headers.get("Authorization"))
        prefix = collector_auth.write_key_prefix(key)
    except collector_auth.AuthError as err:
        raise CollectorError(401, err.code, err.message, headers={"WWW-Authenticate": "Bearer"}) from None
    # The prefix narrows the lookup; the SHA-256 of the whole key decides.
    for source in Source.objects.select_related("team").filter(write_key_prefix=prefix):
        request.collector_source = source.name  # type: ignore[attr-defined]
        if source_write_key_matches(source, key):
            if source.kind == "webhook":
                # a webhook source's events are always provider-signed (a key issued before webhook
                # sources stopped getting one must not open a second, unsigned way in)
                path = "slack" if source.platform == "slack" else "voice"
                raise CollectorError(403, "webhook_source",
                                     f"{source.name} is a webhook source: its events arrive signed by the provider "
                                     f"at /collect/v1/webhooks/{path}/{source.name}, not through the batch endpoint.")
            return source
    request.collector_source = ""  # type: ignore[attr-defined]  # a prefix match alone names nobody
    rotated = Source.objects.filter(previous_write_key_prefix=prefix).values_list("name", flat=True).first()
    if rotated:
        # a sender still using the key before the last rotation: counted against its source, so the
        # source page shows who is being turned away (the answer itself says no more than before)
        request.collector_source, request.collector_code = rotated, "rotated_write_key"  # type: ignore[attr-defined]
    raise CollectorError(401, "invalid_write_key", "The write key is not valid (rotated or mistyped?).",
                         headers={"WWW-Authenticate": "Bearer"})


def _contract_param(request: HttpRequest) -> str | None:
    contract = request.GET.get("contract") or request.headers.get("X-ChatOrbit-Contract") or None
    if contract is not None and not CONTRACT_NAME_RE.match(contract):
        raise CollectorError(400, "invalid_contract",
                             "'contract' names one of the source's event streams, e.g. 'chat_event'.")
    return contract


@collector_view(methods=("POST",), cors=True)
def batch(request: HttpRequest, *, request_id: str) -> HttpResponse:
    """A batch of events from an SDK or backend: a JSON array or NDJSON, optionally gzip-encoded."""
    source = _source_for_write_key(request)
    _require_active(source)
    mime = _content_type(request, JSON_TYPES | NDJSON_TYPES | SNIFFED_TYPES)
    encoding = _content_encoding(request)
    contract = _contract_param(request)
    limit = settings.COLLECTOR_MAX_BODY_BYTES
    body = _body_read(request, limit)
    if encoding == "gzip":
        body = _gunzip(body, limit)
    events = _batch_events(body, mime)
    max_events = settings.COLLECTOR_MAX_EVENTS_PER_REQUEST
    if len(events) > max_events:
        raise CollectorError(413, "too_many_events",
                             f"The batch has {len(events)} events; send at most {max_events} per request.",
                             limit=max_events)
    if not events:
        raise CollectorError(400, "empty_batch", "The batch has no events.")
    records, rejected = _envelopes(
        events, source=source.name, channel="batch", request_id=request_id, received_at=_now_micros(),
        contract=contract, max_event_bytes=settings.COLLECTOR_MAX_EVENT_BYTES,
    )
    if not records:
        raise CollectorError(400, "no_valid_events", "Every event in the batch was refused.", rejected=rejected)
    _rate_limit(source, len(records))
    _put(records, deadline=BATCH_PUT_DEADLINE_SECONDS)
    request.collector_events = len(records)  # type: ignore[attr-defined]
    return _json(202, {"accepted": len(records), "rejected": rejected, "request_id": request_id})


# --- webhooks -----------------------------------------------------------------------------------------

def _webhook_source(request: HttpRequest, source_id: str, platform: str, label: str) -> Source:
    if source_id.isdigit() and int(source_id) > 2**63 - 1:  # no such id, and the database would overflow
        raise CollectorError(404, "source_not_found", f"No source '{source_id}'.")
    try:
        source = source_by_name_or_id(source_id)
    except NotFound:
        raise CollectorError(404, "source_not_found", f"No source '{source_id}'.") from None
    if source.platform == platform:
        request.collector_source = source.name  # type: ignore[attr-defined]
    if source.platform != platform:
        raise CollectorError(404, "source_not_found",
                             f"Source '{source.name}' is not a {label} source (its platform is {source.platform}).")
    if not source.signing_secret:
        raise CollectorError(403, "signing_secret_not_set",
                             f"Source '{source.name}' has no signing secret to verify requests with; set it with "
                             f"`manage.py source_credentials {source.name} --signing-secret -`.")
    return source


def _verify(verify: Callable[..., None], request: HttpRequest, source: Source, body: bytes,
            timestamp_header: str, signature_header: str) -> None:
    try:
        verify(secret=source.signing_secret, timestamp=request.headers.get(timestamp_header),
               signature=request.headers.get(signature_header), body=body, now=time.time(),
               max_age=settings.WEBHOOK_MAX_AGE_SECONDS)
    except collector_auth.AuthError as err:
        raise CollectorError(401, err.code, err.message) from None


def _slack_seen_key(source: Source, event_id: str) -> str:
    return f"collect:slack-seen:{source.pk}:{event_id}"


def _cache_get(key: str) -> Any:
    try:
        return cache.get(key)
    except Exception:  # noqa: BLE001 (the short-circuit is an optimisation; the pipeline dedups anyway)
        logger.warning("collector: cache unavailable for %s", key, exc_info=True)
        return None


def _cache_set(key: str, value: Any, timeout: int) -> None:
    try:
        cache.set(key, value, timeout=timeout)
    except Exception:  # noqa: BLE001
        logger.warning("collector: cache unavailable for %s", key, exc_info=True)


@collector_view(methods=("POST",))
def slack_webhook(request: HttpRequest, source_id: str, *, request_id: str) -> HttpResponse:
    """The Slack Events API, as Slack sends it (signed with the app's signing secret)."""
    source = _webhook_source(request, source_id, Platform.SLACK, "Slack")
    body = _body_read(request, settings.COLLECTOR_MAX_EVENT_BYTES)
    _verify(collector_auth.slack_request_verify, request, source, body, "X-Slack-Request-Timestamp",
            "X-Slack-Signature")
    _require_active(source)
    _content_type(request, JSON_TYPES)
    payload = _json_object(body)
    kind = payload.get("type")
    if kind == "url_verification":
        challenge = payload.get("challenge")
        if not isinstance(challenge, str):
            raise CollectorError(400, "invalid_challenge", "url_verification needs a 'challenge' string.")
        return _json(200, {"challenge": challenge})
    if kind != "event_callback":  # e.g. app_rate_limited: acknowledged, not an event
        logger.info("slack webhook for %s: ignored a %r callback", source.name, kind)
        return _json(200, {"ok": True, "accepted": 0, "ignored": str(kind), "request_id": request_id})
    event_id = payload.get("event_id") if isinstance(payload.get("event_id"), str) else None
    retry_num = request.headers.get("X-Slack-Retry-Num")
    if retry_num and event_id and _cache_get(_slack_seen_key(source, event_id)):
        return _json(200, {"ok": True, "accepted": 0, "duplicate": True, "request_id": request_id})
    records, rejected = _envelopes([payload], source=source.name, channel="slack", request_id=request_id,
                                   received_at=_now_micros(), contract=None,
                                   max_event_bytes=settings.COLLECTOR_MAX_EVENT_BYTES)
    if rejected:
        raise CollectorError(400, rejected[0]["error"], rejected[0]["message"])
    _rate_limit(source, 1)
    _put(records, deadline=SLACK_PUT_DEADLINE_SECONDS)
    request.collector_events = 1  # type: ignore[attr-defined]
    if event_id:
        _cache_set(_slack_seen_key(source, event_id), request_id, SLACK_SEEN_TTL_SECONDS)
    return _json(200, {"ok": True, "accepted": 1, "request_id": request_id})


@collector_view(methods=("POST",))
def voice_webhook(request: HttpRequest, source_id: str, *, request_id: str) -> HttpResponse:
    """A voice-assistant turn in the Alexa Skills Kit request format, signed with the source's secret."""
    source = _webhook_source(request, source_id, Platform.VOICE, "voice")
    body = _body_read(request, settings.COLLECTOR_MAX_EVENT_BYTES)
    _verify(collector_auth.voice_request_verify, request, source, body, "X-ChatOrbit-Timestamp",
            "X-ChatOrbit-Signature")
    _require_active(source)
    _content_type(request, JSON_TYPES)
    payload = _json_object(body)
    alexa_request = payload.get("request")
    if not isinstance(alexa_request, dict) or not isinstance(alexa_request.get("type"), str):
        raise CollectorError(400, "invalid_alexa_request",
                             "The body must be an Alexa Skills Kit request: an object with request.type.")
    records, rejected = _envelopes([payload], source=source.name, channel="voice", request_id=request_id,
                                   received_at=_now_micros(), contract=None,
                                   max_event_bytes=settings.COLLECTOR_MAX_EVENT_BYTES)
    if rejected:
        raise CollectorError(400, rejected[0]["error"], rejected[0]["message"])
    _rate_limit(source, 1)
    _put(records, deadline=VOICE_PUT_DEADLINE_SECONDS)
    request.collector_events = 1  # type: ignore[attr-defined]
    return _json(202, {"accepted": 1, "request_id": request_id})


@collector_view(methods=("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"))
def not_found(request: HttpRequest, *, request_id: str, **kwargs: Any) -> HttpResponse:
    return _json(404, {"error": "not_found",
                       "message": "No collector here: POST to /collect/v1/batch, /collect/v1/webhooks/slack/<source> "
                                  "or /collect/v1/webhooks/voice/<source>."})
