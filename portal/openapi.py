"""The OpenAPI document says every answer the API gives, not only the happy one.

drf-spectacular documents the 200/201 a view declares. The refusals every operation shares are added here,
by a postprocessing hook, from what the operation has (an auth requirement, a body, parameters); the ones
only some operations give (409, 413, ...) are declared on the view with `error_responses`. The collectors
are plain Django views (no DRF), so their paths are written out in `collector_paths`.

tests/portal/test_openapi_conformance.py checks the document against the running API with schemathesis.
"""

from __future__ import annotations

import copy
from typing import Any

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    """What every refusal of the REST API looks like (portal/api_errors.py)."""

    error = serializers.CharField(help_text="A stable code, e.g. `invalid`, `not_found`, `forbidden`.")
    message = serializers.CharField(help_text="A sentence for people, naming what was wrong.")
    details = serializers.JSONField(required=False, help_text="For `invalid`: each field and its messages.")

    class Meta:
        ref_name = "Error"


ERROR_DESCRIPTIONS = {
    400: "The request is not valid: `message` names the parameter or field and what is wrong with it.",
    401: "No API token, or one that is unknown, revoked or expired.",
    403: "Signed in, but this account may not do this (its role, or not a member of the owning team).",
    404: "No such object (source, subject, version or schema).",
    409: "The change conflicts with the current state (already exists, wrong review state, incompatible).",
    413: "The schema (or mapping) is larger than the limit (`CONTRACT_SCHEMA_MAX_BYTES`, 256 KB by default).",
    415: "The body's Content-Type is not one this operation reads.",
    422: "The registry cannot process the request (an invalid schema, version or compatibility level).",
}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """The `responses` entries for refusals only some operations give, e.g. `**error_responses(409)`."""
    return {code: OpenApiResponse(ErrorSerializer, description=ERROR_DESCRIPTIONS[code]) for code in codes}


ERROR_REF = {"$ref": "#/components/schemas/Error"}
ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "A stable code, e.g. `invalid`, `not_found`, `forbidden`."},
        "message": {"type": "string", "description": "A sentence for people, naming what was wrong."},
        "details": {"description": "For `invalid`: each field and its messages."},
    },
    "required": ["error", "message"],
}
REGISTRY_ERROR_REF = {"$ref": "#/components/schemas/RegistryError"}
REGISTRY_ERROR_SCHEMA = {
    "type": "object",
    "description": "Confluent Schema Registry's error body.",
    "properties": {
        "error_code": {"type": "integer", "description": "e.g. 40401 subject not found, 42201 invalid schema"},
        "message": {"type": "string"},
    },
    "required": ["error_code", "message"],
}
METHODS = ("get", "put", "post", "patch", "delete")
# PostgreSQL text cannot hold NUL, so the API refuses it in parameters (portal.api_errors.ApiView).
NO_NUL = "^[^\\u0000]*$"
# Objects the demo data and the tests have, so "Try it out" (and schemathesis' examples phase) finds one.
PATH_EXAMPLES = {"subject": "web-chat.chat_event", "source": "web-chat", "version": "1"}


def common_error_codes(operation: dict, *, registry: bool) -> set[int]:
    """The refusals an operation can give because of what it has (auth, a body, parameters)."""
    codes: set[int] = set()
    security = operation.get("security") or []
    if security and {} not in security:
        codes |= {401, 403}
    parameters = operation.get("parameters") or []
    has_body = "requestBody" in operation
    if has_body:
        codes |= {400, 415}
        if registry:
            codes.add(422)
    if any(p.get("in") == "query" for p in parameters):
        codes.add(400)
    if any(p.get("in") == "path" for p in parameters):
        codes |= {400, 404}
        if registry:
            codes.add(422)
    return codes


def _error_content(operation: dict, registry: bool) -> dict:
    ref = REGISTRY_ERROR_REF if registry else ERROR_REF
    ok = next((r for code, r in operation.get("responses", {}).items() if str(code).startswith("2")), {})
    # errors are rendered as JSON even where the success is a file (the CLI download is text/x-python)
    media_types = [m for m in (ok.get("content") or {}) if "json" in m] or ["application/json"]
    return {media_type: {"schema": ref} for media_type in media_types}


# What contracts.registry_apis._version_lookup reads: `latest`, -1, or 1 … 2^31-1 (leading zeros allowed).
REGISTRY_VERSION_PATTERN = "^(latest|-1|0*[1-9][0-9]{0,8})$"
# contracts.services.subject_split: `<source>.<event>`, or the canonical model's subject.
SUBJECT_PATTERN = r"^(canonical|[a-z0-9][a-z0-9-]{1,62}\.[a-z0-9][a-z0-9_]{0,62})$"


def _parameters_complete(operation: dict, *, registry: bool) -> None:
    for parameter in operation.get("parameters") or []:
        schema = parameter.setdefault("schema", {})
        if registry and parameter.get("in") == "path" and parameter.get("name") == "version":
            schema["pattern"] = REGISTRY_VERSION_PATTERN
            parameter["description"] = "A version number, `latest` or -1 (the latest)."
        if parameter.get("in") == "path" and parameter.get("name") == "subject":
            schema["pattern"] = SUBJECT_PATTERN
            parameter.setdefault("description", "`<source>.<event>`, e.g. web-chat.chat_event, or `canonical`.")
        if schema.get("type") == "string" and "pattern" not in schema and "enum" not in schema:
            schema["pattern"] = NO_NUL
        if parameter.get("in") == "path" and parameter.get("name") in PATH_EXAMPLES:
            parameter.setdefault("example", PATH_EXAMPLES[parameter["name"]])


def _strings_without_nul(schema: Any) -> None:
    """DRF's text fields refuse NUL characters (PostgreSQL cannot store them): say so where nothing else does."""
    if isinstance(schema, dict):
        if schema.get("type") == "string" and not ({"pattern", "enum", "format"} & set(schema)) \
                and not schema.get("readOnly"):
            schema["pattern"] = NO_NUL
        for value in schema.values():
            _strings_without_nul(value)
    elif isinstance(schema, list):
        for value in schema:
            _strings_without_nul(value)


def postprocess_error_responses(result: dict, generator: Any, request: Any, public: bool) -> dict:
    """drf-spectacular hook: every operation lists its refusals with the project's error body; the collectors'
    paths are added; the registry's error body is Confluent's."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    for name, component in schemas.items():
        if name.endswith("In"):  # request bodies (SourceCreateIn, ...); answers may hold anything
            _strings_without_nul(component)
    schemas.setdefault("Error", ERROR_SCHEMA)
    schemas["RegistryError"] = REGISTRY_ERROR_SCHEMA
    for path, item in result.get("paths", {}).items():
        registry = path.startswith("/registry/")
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            _parameters_complete(operation, registry=registry)
            body = operation.get("requestBody")
            if body and not registry:
                # Clients send JSON; DRF's form parsers are there for the browsable API, not a contract.
                body["content"] = {k: v for k, v in body["content"].items() if k == "application/json"}
            responses = operation.setdefault("responses", {})
            for code in sorted(common_error_codes(operation, registry=registry)):
                responses.setdefault(str(code), {"description": ERROR_DESCRIPTIONS[code],
                                                 "content": _error_content(operation, registry)})
            if registry:  # the registry answers every error in its own shape, whatever a view declared
                for code, response in responses.items():
                    if not str(code).startswith("2"):
                        response["content"] = _error_content(operation, registry)
    result["paths"].update(copy.deepcopy(collector_paths()))
    result["components"].setdefault("securitySchemes", {}).update(COLLECTOR_SECURITY_SCHEMES)
    return result


# --- the collectors (ingest_workers/collectors.py; docs/ingestion.md) ----------------------------------

COLLECTOR_SECURITY_SCHEMES = {
    "writeKey": {"type": "http", "scheme": "bearer",
                 "description": "A source's write key (`Authorization: Bearer <write key>`; HTTP basic with the "
                                "key as the username works too). Shown once when the source is registered or "
                                "its key is rotated."},
    "slackSignature": {"type": "apiKey", "in": "header", "name": "X-Slack-Signature",
                       "description": "Slack's `v0=<hex HMAC-SHA256>` of `v0:<timestamp>:<body>` with the "
                                      "source's signing secret, plus `X-Slack-Request-Timestamp` (at most "
                                      "`WEBHOOK_MAX_AGE_SECONDS` old)."},
    "voiceSignature": {"type": "apiKey", "in": "header", "name": "X-ChatOrbit-Signature",
                       "description": "`sha256=<hex HMAC-SHA256>` of `<timestamp>.<body>` with the source's signing "
                                      "secret, plus `X-ChatOrbit-Timestamp` (Unix seconds)."},
}


def _collector_error(description: str, headers: dict | None = None) -> dict:
    response: dict = {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}
    if headers:
        response["headers"] = headers
    return response


RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying."}}
SOURCE_PATH_PARAMETER = {
    "in": "path", "name": "source", "required": True,
    "description": "The source's name (or id).",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
}
COLLECTOR_COMMON_ERRORS = {
    "403": _collector_error("The source is disabled (`source_disabled`)."),
    "413": _collector_error("The body (or, for a batch, the number of events) is over the limit "
                            "(`body_too_large`, `too_many_events`, `event_too_large`); `limit` says the limit."),
    "415": _collector_error("Not JSON, not UTF-8, or an unsupported Content-Encoding."),
    "429": _collector_error("The source sends more events per second than it may (`rate_limited`).", RETRY_AFTER),
    "503": _collector_error("The event stream or the database is unavailable: nothing from this request was "
                            "accepted; retry (events are deduplicated by id).", RETRY_AFTER),
}
ANY_OBJECT = {"type": "object", "additionalProperties": True}


def collector_paths() -> dict:
    """The collectors' three endpoints, as docs/ingestion.md describes them."""
    batch_body = {
        "description": "One event object, a JSON array of them, or NDJSON (one per line); gzip allowed "
                       "(`Content-Encoding: gzip`). `text/plain` (sendBeacon) is read as a JSON array or NDJSON.",
        "required": True,
        "content": {
            "application/json": {"schema": {"oneOf": [ANY_OBJECT, {"type": "array", "items": ANY_OBJECT}]}},
            "application/x-ndjson": {"schema": {"type": "string"}},
            "text/plain": {"schema": {"type": "string"}},
        },
    }
    accepted = {"type": "object", "required": ["accepted", "rejected", "request_id"], "properties": {
        "accepted": {"type": "integer", "description": "Events put on the stream."},
        "rejected": {"type": "array", "description": "Events refused up front, by index; the rest were accepted.",
                     "items": {"type": "object", "properties": {"index": {"type": "integer"},
                                                               "error": {"type": "string"},
                                                               "message": {"type": "string"}}}},
        "request_id": {"type": "string"},
    }}
    tags = ["collectors"]
    return {
        "/collect/v1/batch": {"post": {
            "operationId": "collect_batch", "tags": tags,
            "summary": "Send a batch of events (SDKs and backends)",
            "description": "Authenticated with the source's write key. Accepted whole or refused with an error; "
                           "events refused up front are listed in `rejected` by index. The optional "
                           "`contract` query parameter (or `X-ChatOrbit-Contract` header) names the source's "
                           "event stream. Webhook sources are refused here (403 `webhook_source`). CORS "
                           "preflight (OPTIONS) is answered 204. See docs/ingestion.md.",
            "parameters": [{"in": "query", "name": "contract", "required": False,
                            "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_]{0,62}$"}}],
            "security": [{"writeKey": []}],
            "requestBody": batch_body,
            "responses": {
                "202": {"description": "The events were put on the stream.",
                        "content": {"application/json": {"schema": accepted}}},
                "400": _collector_error("Not valid JSON/UTF-8/gzip, an empty batch, a bad `contract`, or every "
                                        "event refused (`no_valid_events`, with `rejected`)."),
                "401": _collector_error("No write key, or not a valid one (rotated or mistyped)."),
                **COLLECTOR_COMMON_ERRORS,
                "403": _collector_error("The source is disabled, or a webhook source (its events arrive signed "
                                        "at its webhook URL)."),
            },
        }},
        "/collect/v1/webhooks/slack/{source}": {"post": {
            "operationId": "collect_slack_webhook", "tags": tags,
            "summary": "Slack Events API webhook (set this URL as the Slack app's Request URL)",
            "description": "Verified with the source's signing secret. Answers Slack's `url_verification` "
                           "challenge; acknowledges other callback types without an event; a retry "
                           "(`X-Slack-Retry-Num`) of an event already accepted is answered `duplicate`.",
            "parameters": [SOURCE_PATH_PARAMETER],
            "security": [{"slackSignature": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": ANY_OBJECT}}},
            "responses": {
                "200": {"description": "The challenge echoed, or the event accepted (`accepted`: 1), ignored or "
                                       "a duplicate.", "content": {"application/json": {"schema": ANY_OBJECT}}},
                "400": _collector_error("Not a JSON object, or a `url_verification` without a challenge."),
                "401": _collector_error("A missing, stale or wrong signature."),
                "404": _collector_error("No such source, or not a Slack source."),
                **COLLECTOR_COMMON_ERRORS,
                "403": _collector_error("The source is disabled, or has no signing secret yet."),
            },
        }},
        "/collect/v1/webhooks/voice/{source}": {"post": {
            "operationId": "collect_voice_webhook", "tags": tags,
            "summary": "Voice-assistant webhook (Alexa Skills Kit request format)",
            "description": "Verified with the source's signing secret; the body is an Alexa Skills Kit request "
                           "(an object with `request.type`).",
            "parameters": [SOURCE_PATH_PARAMETER],
            "security": [{"voiceSignature": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["request"],
                "properties": {"request": {"type": "object", "required": ["type"],
                                           "properties": {"type": {"type": "string"}}}}}}}},
            "responses": {
                "202": {"description": "The turn was put on the stream.", "content": {"application/json": {
                    "schema": {"type": "object", "properties": {"accepted": {"type": "integer"},
                                                                "request_id": {"type": "string"}}}}}},
                "400": _collector_error("Not a JSON object, or not an Alexa Skills Kit request."),
                "401": _collector_error("A missing, stale or wrong signature."),
                "404": _collector_error("No such source, or not a voice source."),
                **COLLECTOR_COMMON_ERRORS,
                "403": _collector_error("The source is disabled, or has no signing secret yet."),
            },
        }},
    }
