"""The declarative mapping: checking specs, mapping payloads, previews, event ids."""

import copy
import hashlib
import json
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.canonical_model import canonical_avro_schema, to_natural_json
from contracts.mapping import (
    EVENT_ID_NAMESPACE,
    NORMALIZER_VERSION,
    MappingError,
    MappingFailure,
    MappingSpecError,
    PreviewResult,
    SourceContext,
    compile_mapping,
    derive_event_id,
    mapping_check,
    parse_path,
    preview,
)
from contracts.validation import compile_validator

S = lambda name, typ, **kw: {"name": name, "type": typ, **kw}  # noqa: E731
O = lambda name, typ: {"name": name, "type": ["null", typ], "default": None}  # noqa: E731, E741

SLACK_SCHEMA = {
    "type": "record",
    "name": "EventCallback",
    "namespace": "slack",
    "fields": [
        S("token", "string"),
        S("team_id", "string"),
        S("api_app_id", "string"),
        S(
            "event",
            {
                "type": "record",
                "name": "MessageEvent",
                "fields": [
                    S("type", {"type": "enum", "name": "EventType", "symbols": ["message", "app_mention"]}),
                    O("user", "string"),
                    O("text", "string"),
                    S("ts", "string"),
                    S("channel", "string"),
                    S("event_ts", "string"),
                    O("channel_type", "string"),
                    O("thread_ts", "string"),
                ],
            },
        ),
        S("type", "string"),
        S("event_id", "string"),
        S("event_time", "long"),
        S(
            "authorizations",
            {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Authorization",
                    "fields": [S("team_id", "string"), S("user_id", "string"), S("is_bot", "boolean")],
                },
            },
            default=[],
        ),
    ],
}

SLACK_MAPPING = {
    "event_id": {"idempotency_key": "event_id"},
    "platform_metadata": {"rest": True, "exclude": ["token"]},
    "events": [
        {
            "type": "message.sent",
            "when": {"path": "event.type", "in": ["message", "app_mention"]},
            "fields": {
                "event_time": {"path": "event.ts", "transform": "epoch_seconds"},
                "identifiers.platform_user_id": {"template": "{team_id}:{event.user}"},
                "identifiers.tenant_id": "team_id",
                "conversation_id": {"first": ["event.thread_ts", "event.ts"]},
                "message_id": {"template": "{event.channel}:{event.ts}"},
                "role": {"const": "user"},
                "content": "event.text",
                "content_length": {"path": "event.text", "transform": "length"},
            },
        }
    ],
}

SLACK_PAYLOAD = {
    "token": "XXYYZZ",
    "team_id": "T0001",
    "api_app_id": "A0001",
    "event": {
        "type": "message",
        "user": "U2147483697",
        "text": "Where is my order?",
        "ts": "1700000000.123456",
        "channel": "D0PNCRP9N",
        "event_ts": "1700000000.123456",
        "channel_type": "im",
        "client_msg_id": "3b2c4d10-0a37-4d1c-9d3e-1b2f0c9a5e61",
    },
    "type": "event_callback",
    "event_id": "Ev08MFMKH6",
    "event_time": 1700000000,
    "authorizations": [{"team_id": "T0001", "user_id": "U0BOT", "is_bot": True}],
    "is_ext_shared_channel": False,
}

CTX = SourceContext(
    source_id="src-slack",
    source_name="slack-bot",
    platform="slack",
    product="helpdesk",
    contract_name="slack-bot.events",
    contract_version=1,
    received_at_micros=1_700_000_001_000_000,
)


def check(schema, mapping):
    return [(e.path, e.message) for e in mapping_check(schema, mapping)]


def paths(schema, mapping):
    return [e.path for e in mapping_check(schema, mapping)]


def with_field(mapping, target, value, event=0):
    m = copy.deepcopy(mapping)
    m["events"][event]["fields"][target] = value
    return m


# ---------------------------------------------------------------------------------------------
# Mapping a payload
# ---------------------------------------------------------------------------------------------


def test_slack_message_previews_to_the_expected_canonical_event():
    result = preview(SLACK_SCHEMA, SLACK_MAPPING, SLACK_PAYLOAD, CTX)
    assert isinstance(result, PreviewResult)
    assert result.errors == []
    [event] = result.events
    expected_id = str(
        uuid.uuid5(
            EVENT_ID_NAMESPACE, json.dumps(["slack-bot", "message.sent", "Ev08MFMKH6"], separators=(",", ":"))
        )
    )
    assert event == {
        "event_id": expected_id,
        "event_type": "message.sent",
        "event_time": 1_700_000_000_123_456,
        "received_at": 1_700_000_001_000_000,
        "ingested_at": None,
        "platform": "slack",
        "product": "helpdesk",
        "source_id": "src-slack",
        "contract": {"name": "slack-bot.events", "version": 1},
        "canonical_version": "1.0.0",
        "identifiers": {
            "person_id": None,
            "anonymous_id": None,
            "platform_user_id": "T0001:U2147483697",
            "device_id": None,
            "tenant_id": "T0001",
            "email_sha256": None,
        },
        "session_id": None,
        "conversation_id": "1700000000.123456",
        "message_id": "D0PNCRP9N:1700000000.123456",
        "parent_event_id": None,
        "attributes": {
            **{k: None for k in event["attributes"]},
            "role": "user",
            "content": "Where is my order?",
            "content_length": 18,
        },
        "platform_metadata": {
            "api_app_id": "A0001",
            "type": "event_callback",
            "event_id": "Ev08MFMKH6",
            "event_time": 1700000000,
            "authorizations": [{"team_id": "T0001", "user_id": "U0BOT", "is_bot": True}],
            "is_ext_shared_channel": False,
            "event": {
                "type": "message",
                "event_ts": "1700000000.123456",
                "channel_type": "im",
                "client_msg_id": "3b2c4d10-0a37-4d1c-9d3e-1b2f0c9a5e61",
            },
        },
        "lineage": {
            "raw_archive_uri": None,
            "raw_offset": None,
            "stream": None,
            "shard_id": None,
            "sequence_number": None,
            "batch_id": None,
            "contract_version": 1,
            "normalizer_version": NORMALIZER_VERSION,
        },
    }
    assert len(event["attributes"]) == 25


def test_mapped_events_conform_to_the_canonical_schema():
    [event] = compile_mapping(SLACK_SCHEMA, SLACK_MAPPING)(SLACK_PAYLOAD, CTX)
    assert compile_validator(canonical_avro_schema())(to_natural_json(event)) == []


def test_thread_reply_uses_thread_ts_as_conversation():
    p = copy.deepcopy(SLACK_PAYLOAD)
    p["event"]["thread_ts"] = "1699999999.000100"
    [event] = compile_mapping(SLACK_SCHEMA, SLACK_MAPPING)(p, CTX)
    assert event["conversation_id"] == "1699999999.000100"


def test_unmatched_payload_fails_unless_skipped():
    schema = copy.deepcopy(SLACK_SCHEMA)
    schema["fields"][3]["type"]["fields"][0]["type"]["symbols"].append("reaction_added")
    p = copy.deepcopy(SLACK_PAYLOAD)
    p["event"]["type"] = "reaction_added"
    with pytest.raises(MappingFailure) as exc:
        compile_mapping(schema, SLACK_MAPPING)(p, CTX)
    assert exc.value.path == "/" and "no event rule matched" in exc.value.message
    assert compile_mapping(schema, {**SLACK_MAPPING, "unmatched": "skip"})(p, CTX) == []


def test_unparsable_timestamp_is_a_mapping_failure_with_the_payload_path():
    p = copy.deepcopy(SLACK_PAYLOAD)
    p["event"]["ts"] = "yesterday"
    with pytest.raises(MappingFailure) as exc:
        compile_mapping(SLACK_SCHEMA, SLACK_MAPPING)(p, CTX)
    assert exc.value.path == "/event/ts"
    assert exc.value.message == "event_time: 'yesterday' is not a number"


def test_required_field_that_is_null_fails():
    m = with_field(SLACK_MAPPING, "event_time", {"path": "event.thread_ts", "transform": "epoch_seconds"})
    with pytest.raises(MappingFailure) as exc:
        compile_mapping(SLACK_SCHEMA, m)(SLACK_PAYLOAD, CTX)
    assert exc.value.path == "/event/thread_ts"
    assert "event_time: required canonical field is null" in exc.value.message


def test_non_object_payload_fails():
    with pytest.raises(MappingFailure):
        compile_mapping(SLACK_SCHEMA, SLACK_MAPPING)(["x"], CTX)


def test_product_comes_from_the_source_unless_mapped():
    m = copy.deepcopy(SLACK_MAPPING)
    m["fields"] = {"product": {"const": "sales-bot"}}
    assert compile_mapping(SLACK_SCHEMA, m)(SLACK_PAYLOAD, CTX)[0]["product"] == "sales-bot"


# ---------------------------------------------------------------------------------------------
# event_id
# ---------------------------------------------------------------------------------------------


def test_event_id_is_deterministic_and_documented():
    cm = compile_mapping(SLACK_SCHEMA, SLACK_MAPPING)
    a = cm(SLACK_PAYLOAD, CTX)[0]["event_id"]
    b = compile_mapping(SLACK_SCHEMA, SLACK_MAPPING)(copy.deepcopy(SLACK_PAYLOAD), CTX)[0]["event_id"]
    assert a == b == derive_event_id("slack-bot", "message.sent", ["Ev08MFMKH6"])
    assert uuid.UUID(a).version == 5


def test_event_id_differs_when_the_key_or_source_differs():
    cm = compile_mapping(SLACK_SCHEMA, SLACK_MAPPING)
    base = cm(SLACK_PAYLOAD, CTX)[0]["event_id"]
    other = copy.deepcopy(SLACK_PAYLOAD)
    other["event_id"] = "Ev08MFMKH7"
    assert cm(other, CTX)[0]["event_id"] != base
    other_source = SourceContext(**{**{f: getattr(CTX, f) for f in CTX.__slots__}, "source_name": "slack-bot-2"})
    assert cm(SLACK_PAYLOAD, other_source)[0]["event_id"] != base


def test_event_id_is_namespaced_by_the_source_name_not_its_database_id():
    # Re-creating a source or restoring the portal database elsewhere gives the source a new
    # database id; its name stays, and so must every event id (dedup against the archive, replays).
    cm = compile_mapping(SLACK_SCHEMA, SLACK_MAPPING)
    fields = {f: getattr(CTX, f) for f in CTX.__slots__}
    first_db = SourceContext(**{**fields, "source_id": "17"})
    restored_db = SourceContext(**{**fields, "source_id": "4242"})
    renamed = SourceContext(**{**fields, "source_id": "17", "source_name": "other-bot"})
    [a], [b], [c] = cm(SLACK_PAYLOAD, first_db), cm(SLACK_PAYLOAD, restored_db), cm(SLACK_PAYLOAD, renamed)
    assert a["event_id"] == b["event_id"] == derive_event_id("slack-bot", "message.sent", ["Ev08MFMKH6"])
    assert c["event_id"] != a["event_id"]
    assert (a["source_id"], b["source_id"]) == ("17", "4242")  # the envelope still says which row it is


def test_derive_event_id_refuses_a_database_id():
    a, b = (derive_event_id(name, "message.sent", ["m-1"]) for name in ("web-chat", "web-chat-2"))
    assert a != b
    for not_a_name in (17, "", None):
        with pytest.raises(TypeError, match="source's name"):
            derive_event_id(not_a_name, "message.sent", ["m-1"])


def test_event_id_is_stable_across_contract_versions_and_arrival_times():
    cm = compile_mapping(SLACK_SCHEMA, SLACK_MAPPING)
    later = SourceContext(
        **{
            **{f: getattr(CTX, f) for f in CTX.__slots__},
            "contract_version": 7,
            "received_at_micros": CTX.received_at_micros + 10**9,
        }
    )
    assert cm(SLACK_PAYLOAD, CTX)[0]["event_id"] == cm(SLACK_PAYLOAD, later)[0]["event_id"]


def test_natural_key_hash_differs_by_each_part():
    m = copy.deepcopy(SLACK_MAPPING)
    m["event_id"] = {"natural_key": ["team_id", "event.channel", "event.ts"]}
    cm = compile_mapping(SLACK_SCHEMA, m)
    base = cm(SLACK_PAYLOAD, CTX)[0]["event_id"]
    assert base == derive_event_id("slack-bot", "message.sent", ["T0001", "D0PNCRP9N", "1700000000.123456"])
    for path in (("team_id",), ("event", "channel"), ("event", "ts")):
        p = copy.deepcopy(SLACK_PAYLOAD)
        target = p
        for k in path[:-1]:
            target = target[k]
        target[path[-1]] = target[path[-1]][:-1] + "9"
        assert cm(p, CTX)[0]["event_id"] != base, path
    # retrying the same message (Slack redelivers with a new event_id) keeps the natural-key id
    retry = copy.deepcopy(SLACK_PAYLOAD)
    retry["event_id"] = "Ev0RETRY"
    assert cm(retry, CTX)[0]["event_id"] == base


def test_event_id_keys_are_compared_as_text():
    assert derive_event_id("s", "message.sent", [123]) == derive_event_id("s", "message.sent", ["123"])
    assert derive_event_id("s", "message.sent", [True]) == derive_event_id("s", "message.sent", ["true"])
    assert derive_event_id("s", "message.sent", ["a", None]) != derive_event_id(
        "s", "message.sent", ["a", ""]
    )


# A tool-call log: the session id is always there, the request id only for some calls.
RID_SCHEMA = {
    "type": "record",
    "name": "ToolLog",
    "fields": [S("sid", "string"), O("rid", "string"), S("ts", "long"), S("tool", "string")],
}


def rid_mapping(**event_id):
    return {
        "event_id": event_id,
        "events": [
            {
                "type": "tool_call.started",
                "fields": {"event_time": {"path": "ts", "transform": "epoch_millis"}, "tool_name": "tool"},
            }
        ],
    }


def test_natural_key_part_that_the_schema_allows_to_be_null_is_rejected():
    # Two different calls in session s-1 without a request id would share one event_id, and the
    # MERGE would keep one and count the other as a duplicate: the loss would be silent.
    m = rid_mapping(natural_key=["sid", "rid"])
    [(path, message)] = check(RID_SCHEMA, m)
    assert path == "/event_id/natural_key/1"
    assert message.startswith("natural_key part 'rid' may be missing or null ('rid' is a union with null)")
    assert "would get the same event_id whenever their other parts match" in message
    assert "dropped as a duplicate" in message
    assert '"allow_null": ["rid"]' in message
    with pytest.raises(MappingSpecError) as exc:
        compile_mapping(RID_SCHEMA, m)
    assert exc.value.errors[0].path == "/event_id/natural_key/1"


def test_allow_null_opts_a_natural_key_part_in_and_hashes_null():
    m = rid_mapping(natural_key=["sid", "rid"], allow_null=["rid"])
    assert mapping_check(RID_SCHEMA, m) == []
    cm = compile_mapping(RID_SCHEMA, m)

    def eid(**payload):
        return cm({"sid": "s-1", "rid": None, "ts": 1772357417020, "tool": "lookup_order", **payload}, CTX)[0][
            "event_id"
        ]

    # what the opt-in accepts: with rid null, only sid tells calls apart; a retry is one event
    assert eid(ts=1772357417999, tool="search") == eid()
    assert eid() == derive_event_id("slack-bot", "tool_call.started", ["s-1", None])
    # a request id, when there is one, still separates calls; null is not the empty string
    assert len({eid(), eid(rid="r-1"), eid(rid="r-2"), eid(rid="")}) == 4
    assert eid(rid="r-1", ts=1772357417999) == eid(rid="r-1")
    # every part null still fails (sid is required here, so only a payload that breaks the schema)
    opted_all = compile_mapping(RID_SCHEMA, rid_mapping(natural_key=["sid", "rid"], allow_null=["sid", "rid"]))
    with pytest.raises(MappingFailure) as exc:
        opted_all({"ts": 1772357417020, "tool": "t"}, CTX)
    assert exc.value.path == "/sid" and "every part of the natural key ('sid', 'rid')" in exc.value.message


def test_a_natural_key_part_not_in_allow_null_is_never_hashed_as_null():
    # The schema promises sid; a payload that breaks the promise (never validated) fails rather
    # than collapsing onto the id of every other sid-less payload.
    cm = compile_mapping(RID_SCHEMA, rid_mapping(natural_key=["sid", "rid"], allow_null=["rid"]))
    with pytest.raises(MappingFailure) as exc:
        cm({"rid": "r-1", "ts": 1772357417020, "tool": "t"}, CTX)
    assert exc.value.path == "/sid"
    assert exc.value.message == "event_id: the natural key part ('sid') is missing or null and is not in allow_null"


@pytest.mark.parametrize(
    ("fields", "key", "why"),
    [
        ([S("rid", "string", default="none")], "rid", "'rid' is a field with a default, which a payload may leave"),
        (
            [O("ctx", {"type": "record", "name": "Ctx", "fields": [S("rid", "string")]})],
            "ctx.rid",
            "its parent 'ctx' may be null",
        ),
        ([S("headers", {"type": "map", "values": "string"})], "headers.x-request-id", "is a map key, which may"),
        ([S("ids", {"type": "array", "items": "string"})], "ids[0]", "'ids[0]' is an array item"),
        ([O("rid", "string")], {"template": "{sid}/{rid}"}, "'rid' is a union with null"),
        ([O("rid", "string"), O("rid2", "string")], {"first": ["rid", "rid2"]}, "union with null; 'rid2' is"),
        ([S("rid", "string")], {"path": "rid", "transform": {"map": {"a": "b"}}}, "its 'map' transform gives null"),
    ],
)
def test_every_way_a_natural_key_part_can_be_null_is_caught(fields, key, why):
    required = [S("sid", "string"), S("ts", "long"), S("tool", "string")]
    schema = {"type": "record", "name": "R", "fields": [*required, *fields]}
    [(path, message)] = check(schema, rid_mapping(natural_key=["sid", key]))
    assert path == "/event_id/natural_key/1" and why in message, message
    assert check(schema, rid_mapping(natural_key=["sid", key], allow_null=[key])) == []


def test_a_lone_natural_key_part_that_may_be_null_fails_the_payload_unless_a_fallback_hides_it():
    # One part: a null key cannot be hashed (like a null idempotency key, the payload fails).
    cm = compile_mapping(RID_SCHEMA, rid_mapping(natural_key=["rid"]))
    with pytest.raises(MappingFailure) as exc:
        cm({"sid": "s-1", "ts": 1772357417020, "tool": "t"}, CTX)
    assert exc.value.path == "/rid" and exc.value.message == "event_id: the natural key ('rid') is missing or null"
    # ... but a default or a constant in "first" turns every missing key into one id
    for key in ({"path": "rid", "default": "none"}, {"first": ["rid", {"const": "none"}]}):
        [(path, message)] = check(RID_SCHEMA, rid_mapping(natural_key=[key]))
        assert path == "/event_id/natural_key/0"
        assert 'A "default" or a constant fallback does not help' in message
        assert check(RID_SCHEMA, rid_mapping(natural_key=[key], allow_null=[key])) == []
    # a fallback to a path the schema requires is fine
    assert check(RID_SCHEMA, rid_mapping(natural_key=[{"first": ["rid", "sid"]}, "ts"])) == []


def test_allow_null_mistakes_are_reported():
    assert check(RID_SCHEMA, rid_mapping(natural_key=["sid", "rid"], allow_null=["ri"])) == [
        (
            "/event_id/allow_null/0",
            "'ri' is not a natural_key part (did you mean 'rid'?); allow_null lists parts exactly as "
            "natural_key writes them ('sid', 'rid')",
        )
    ]
    assert paths(RID_SCHEMA, rid_mapping(natural_key=["sid", "rid"], allow_null="rid")) == ["/event_id/allow_null"]
    assert paths(RID_SCHEMA, rid_mapping(natural_key=["sid", "rid"], allow_null=[])) == ["/event_id/allow_null"]
    assert check(RID_SCHEMA, rid_mapping(idempotency_key="rid", allow_null=["rid"])) == [
        (
            "/event_id/allow_null",
            "allow_null goes with natural_key only: a null idempotency key always fails the payload",
        )
    ]


def test_missing_idempotency_key_fails():
    schema = copy.deepcopy(SLACK_SCHEMA)
    schema["fields"][5] = O("event_id", "string")
    p = copy.deepcopy(SLACK_PAYLOAD)
    del p["event_id"]
    with pytest.raises(MappingFailure) as exc:
        compile_mapping(schema, SLACK_MAPPING)(p, CTX)
    assert exc.value.path == "/event_id" and "idempotency key" in exc.value.message


# ---------------------------------------------------------------------------------------------
# A richer web SDK source: arrays, maps, feedback, several events per payload
# ---------------------------------------------------------------------------------------------

WEB_SCHEMA = {
    "type": "record",
    "name": "WebEvent",
    "namespace": "web",
    "fields": [
        S("messageId", "string"),
        S(
            "type",
            {"type": "enum", "name": "Kind", "symbols": ["chat_opened", "message", "feedback", "identify"]},
        ),
        S("timestamp", "string"),
        S("sentAtMs", "long"),
        S("anonymousId", "string"),
        O("userId", "string"),
        O("email", "string"),
        S("sessionId", "string"),
        O("conversationId", "string"),
        S(
            "context",
            {
                "type": "record",
                "name": "Context",
                "fields": [
                    S("app", {"type": "record", "name": "App", "fields": [S("version", "string")]}),
                    O("locale", "string"),
                    S("traits", {"type": "map", "values": "string"}, default={}),
                ],
            },
        ),
        O(
            "message",
            {
                "type": "record",
                "name": "Message",
                "fields": [
                    S("id", "string"),
                    S("role", {"type": "enum", "name": "Role", "symbols": ["user", "assistant"]}),
                    S("text", "string"),
                    S(
                        "parts",
                        {
                            "type": "array",
                            "items": {
                                "type": "record",
                                "name": "Part",
                                "fields": [S("kind", "string"), S("text", "string")],
                            },
                        },
                        default=[],
                    ),
                ],
            },
        ),
        O(
            "feedback",
            {
                "type": "record",
                "name": "Feedback",
                "fields": [S("messageId", "string"), S("stars", "int"), O("comment", "string")],
            },
        ),
    ],
}

WEB_PAYLOAD = {
    "messageId": "0f9c1a7e-6a2b-4c55-9c1e-8e7d2b4f5a10",
    "type": "message",
    "timestamp": "2026-03-01T09:30:15.250+01:00",
    "sentAtMs": 1772353815250,
    "anonymousId": "anon-42",
    "userId": "user-7",
    "email": "  Ada@Example.COM ",
    "sessionId": "sess-1",
    "conversationId": "conv-1",
    "context": {
        "app": {"version": "3.14.2"},
        "locale": "en-GB",
        "traits": {"plan": "pro", "cohort": "2026-02"},
        "screen": {"w": 1440, "h": 900},
    },
    "message": {
        "id": "msg-1",
        "role": "user",
        "text": "Can I change my delivery address?",
        "parts": [{"kind": "text", "text": "Can I change"}, {"kind": "text", "text": "my delivery address?"}],
    },
}

WEB_MAPPING = {
    "description": "web SDK events",
    "event_id": {"idempotency_key": "messageId"},
    "fields": {
        "event_time": {"path": "timestamp", "transform": "iso8601"},
        "identifiers.anonymous_id": "anonymousId",
        "identifiers.platform_user_id": "userId",
        "identifiers.email_sha256": {"path": "email", "transform": ["trim", "lower", "sha256"]},
        "session_id": "sessionId",
        "conversation_id": "conversationId",
    },
    "events": [
        {
            "type": "message.sent",
            "when": {"path": "type", "equals": "message"},
            "fields": {
                "message_id": "message.id",
                "role": "message.role",
                "content": "message.text",
                "content_length": {"path": "message.text", "transform": "length"},
                "language": {"first": ["context.locale", {"const": "und"}]},
            },
            "platform_metadata": {
                "include": {
                    "app_version": "context.app.version",
                    "first_part": "message.parts[0].kind",
                    "last_part": "message.parts[-1].text",
                    "plan": "context.traits.plan",
                }
            },
        },
        {
            "type": "feedback.submitted",
            "when": {"path": "type", "equals": "feedback"},
            "fields": {
                "message_id": "feedback.messageId",
                "kind": {"const": "stars"},
                "score": {"path": "feedback.stars", "transform": {"scale": {"from": [1, 5], "to": [-1, 1]}}},
                "raw_value": {"path": "feedback.stars", "transform": "to_string"},
                "comment": "feedback.comment",
            },
            "platform_metadata": "none",
        },
        {
            "type": "session.started",
            "when": {"path": "type", "equals": "chat_opened"},
            "fields": {
                "app_version": "context.app.version",
                "locale": "context.locale",
                "event_time": {"path": "sentAtMs", "transform": "epoch_millis"},
            },
        },
        {
            "type": "user.identified",
            "when": {"all": [{"path": "type", "equals": "identify"}, {"path": "userId", "exists": True}]},
            "fields": {"previous_anonymous_id": "anonymousId"},
        },
    ],
}

WEB_CTX = SourceContext(
    source_id="src-web",
    source_name="web-chat",
    platform="web",
    product="storefront",
    contract_name="web-chat.events",
    contract_version=3,
    received_at_micros=1_772_353_816_000_000,
)


def test_web_message_maps_transforms_and_metadata():
    assert mapping_check(WEB_SCHEMA, WEB_MAPPING) == []
    [e] = compile_mapping(WEB_SCHEMA, WEB_MAPPING)(WEB_PAYLOAD, WEB_CTX)
    assert e["event_type"] == "message.sent"
    assert e["event_time"] == 1772353815250000  # 09:30:15.250+01:00 is 08:30:15.250Z
    assert e["identifiers"]["email_sha256"] == hashlib.sha256(b"ada@example.com").hexdigest()
    assert e["attributes"]["role"] == "user" and e["attributes"]["language"] == "en-GB"
    assert e["attributes"]["content_length"] == len("Can I change my delivery address?")
    assert e["platform_metadata"] == {
        "app_version": "3.14.2",
        "first_part": "text",
        "last_part": "my delivery address?",
        "plan": "pro",
    }


def test_first_falls_back_to_a_constant():
    p = copy.deepcopy(WEB_PAYLOAD)
    p["context"]["locale"] = None
    [e] = compile_mapping(WEB_SCHEMA, WEB_MAPPING)(p, WEB_CTX)
    assert e["attributes"]["language"] == "und"


def test_feedback_stars_scale_to_minus_one_one():
    cm = compile_mapping(WEB_SCHEMA, WEB_MAPPING)
    for stars, score in ((1, -1.0), (3, 0.0), (5, 1.0), (4, 0.5)):
        p = {
            **WEB_PAYLOAD,
            "type": "feedback",
            "message": None,
            "feedback": {"messageId": "msg-1", "stars": stars, "comment": "ok"},
        }
        [e] = cm(p, WEB_CTX)
        assert e["event_type"] == "feedback.submitted"
        assert e["attributes"] == {"score": score, "kind": "stars", "comment": "ok", "raw_value": str(stars)}
        assert e["platform_metadata"] == {}


def test_score_outside_range_is_a_failure():
    p = {**WEB_PAYLOAD, "type": "feedback", "feedback": {"messageId": "m", "stars": 9}}
    with pytest.raises(MappingFailure) as exc:
        compile_mapping(WEB_SCHEMA, WEB_MAPPING)(p, WEB_CTX)
    assert exc.value.path == "/feedback/stars" and "outside [-1, 1]" in exc.value.message


def test_rule_specific_event_time_overrides_the_common_one():
    p = {**WEB_PAYLOAD, "type": "chat_opened"}
    [e] = compile_mapping(WEB_SCHEMA, WEB_MAPPING)(p, WEB_CTX)
    assert e["event_type"] == "session.started" and e["event_time"] == 1772353815250000
    assert e["attributes"]["app_version"] == "3.14.2"


def test_rest_keeps_unmapped_and_unknown_fields_whole():
    m = copy.deepcopy(WEB_MAPPING)
    del m["events"][0]["platform_metadata"]
    [e] = compile_mapping(WEB_SCHEMA, m)(WEB_PAYLOAD, WEB_CTX)
    md = e["platform_metadata"]
    assert md["sentAtMs"] == 1772353815250 and md["type"] == "message"
    assert md["context"] == {
        "app": {"version": "3.14.2"},
        "traits": {"plan": "pro", "cohort": "2026-02"},
        "screen": {"w": 1440, "h": 900},
    }
    assert md["message"] == {"parts": WEB_PAYLOAD["message"]["parts"]}
    assert "email" not in md and "anonymousId" not in md and "timestamp" not in md


def test_match_all_makes_several_events_with_distinct_ids():
    m = {
        "match": "all",
        "fields": {"event_time": {"path": "timestamp", "transform": "iso8601"}, "session_id": "sessionId"},
        "events": [
            {
                "type": "session.started",
                "event_id": {"natural_key": ["sessionId"]},
                "when": {"path": "type", "equals": "chat_opened"},
            },
            {
                "type": "conversation.started",
                "event_id": {"natural_key": ["sessionId"]},
                "when": {"path": "type", "equals": "chat_opened"},
                "fields": {"conversation_id": "conversationId"},
            },
        ],
    }
    assert mapping_check(WEB_SCHEMA, m) == []
    events = compile_mapping(WEB_SCHEMA, m)({**WEB_PAYLOAD, "type": "chat_opened"}, WEB_CTX)
    assert [e["event_type"] for e in events] == ["session.started", "conversation.started"]
    assert events[0]["event_id"] != events[1]["event_id"]


def test_map_transform_to_enum_and_unknown_values():
    schema = {
        "type": "record",
        "name": "R",
        "fields": [S("id", "string"), S("ts", "long"), S("vote", "string")],
    }
    m = {
        "event_id": {"idempotency_key": "id"},
        "events": [
            {
                "type": "feedback.submitted",
                "fields": {
                    "event_time": {"path": "ts", "transform": "epoch_seconds"},
                    "kind": {"const": "thumbs"},
                    "score": {"path": "vote", "transform": {"map": {"up": 1, "down": -1}}, "default": 0},
                    "raw_value": "vote",
                },
            }
        ],
    }
    cm = compile_mapping(schema, m)
    ctx = WEB_CTX
    assert cm({"id": "1", "ts": 1700000000, "vote": "up"}, ctx)[0]["attributes"]["score"] == 1.0
    assert cm({"id": "1", "ts": 1700000000, "vote": "down"}, ctx)[0]["attributes"]["score"] == -1.0
    assert cm({"id": "1", "ts": 1700000000, "vote": "meh"}, ctx)[0]["attributes"]["score"] == 0


@pytest.mark.parametrize(
    "transform,value,expected",
    [
        ("epoch_seconds", "1700000000.123456", 1_700_000_000_123_456),
        ("epoch_seconds", 1700000000, 1_700_000_000_000_000),
        ("epoch_seconds", 1700000000.5, 1_700_000_000_500_000),
        ("epoch_millis", 1700000000123, 1_700_000_000_123_000),
        ("epoch_millis", "1700000000123.5", 1_700_000_000_123_500),
        ("epoch_micros", "1700000000123456", 1_700_000_000_123_456),
        ("iso8601", "2023-11-14T22:13:20Z", 1_700_000_000_000_000),
        ("iso8601", "2023-11-14T22:13:20.123456789Z", 1_700_000_000_123_456),
        ("iso8601", "2023-11-14T23:13:20+01:00", 1_700_000_000_000_000),
        ("iso8601", "2023-11-14 22:13:20", 1_700_000_000_000_000),
    ],
)
def test_timestamp_transforms(transform, value, expected):
    typ = "string" if isinstance(value, str) else ("double" if isinstance(value, float) else "long")
    schema = {"type": "record", "name": "R", "fields": [S("id", "string"), S("t", typ)]}
    m = {
        "event_id": {"idempotency_key": "id"},
        "events": [
            {"type": "session.started", "fields": {"event_time": {"path": "t", "transform": transform}}}
        ],
    }
    assert compile_mapping(schema, m)({"id": "x", "t": value}, WEB_CTX)[0]["event_time"] == expected


def test_timestamp_in_the_wrong_unit_is_caught():
    schema = {"type": "record", "name": "R", "fields": [S("id", "string"), S("t", "long")]}
    m = {
        "event_id": {"idempotency_key": "id"},
        "events": [
            {"type": "session.started", "fields": {"event_time": {"path": "t", "transform": "epoch_seconds"}}}
        ],
    }
    with pytest.raises(MappingFailure) as exc:
        compile_mapping(schema, m)({"id": "x", "t": 1700000000123}, WEB_CTX)
    assert "outside 1900-2300 (wrong unit?)" in exc.value.message


def test_to_int_to_json_and_map_paths():
    schema = {
        "type": "record",
        "name": "R",
        "fields": [
            S("id", "string"),
            S("ts", "long"),
            S("tokens", "string"),
            S("args", {"type": "map", "values": "long"}),
            S("headers", {"type": "map", "values": "string"}),
        ],
    }
    m = {
        "event_id": {"idempotency_key": "headers.x-request-id"},
        "events": [
            {
                "type": "tool_call.started",
                "fields": {
                    "event_time": {"path": "ts", "transform": "epoch_millis"},
                    "tool_name": "headers.tool",
                    "arguments": {"path": "args", "transform": "to_json"},
                    "tool_call_id": {"path": "tokens", "transform": ["to_int", "to_string"]},
                },
            }
        ],
    }
    assert mapping_check(schema, m) == []
    [e] = compile_mapping(schema, m)(
        {
            "id": "1",
            "ts": 1700000000000,
            "tokens": "42.0",
            "args": {"b": 2, "a": 1},
            "headers": {"x-request-id": "req-1", "tool": "lookup_order"},
        },
        WEB_CTX,
    )
    assert e["attributes"]["arguments"] == '{"a":1,"b":2}'
    assert e["attributes"]["tool_call_id"] == "42"
    assert e["attributes"]["tool_name"] == "lookup_order"
    assert e["event_id"] == derive_event_id("web-chat", "tool_call.started", ["req-1"])


def test_parse_path():
    assert parse_path("event.user") == (("key", "event"), ("key", "user"))
    assert parse_path("messages[3].text") == (("key", "messages"), ("index", 3), ("key", "text"))
    assert parse_path('headers["x.y"][-1]') == (("key", "headers"), ("key", "x.y"), ("index", -1))
    for bad in ("", "a..b", "a.", "[0]", "a[x]", ".a"):
        with pytest.raises(ValueError):
            parse_path(bad)


# ---------------------------------------------------------------------------------------------
# mapping_check: each kind of problem, with its path in the spec
# ---------------------------------------------------------------------------------------------


def test_valid_specs_have_no_errors():
    assert mapping_check(SLACK_SCHEMA, SLACK_MAPPING) == []


def test_unknown_source_path_suggests_a_field():
    errs = check(SLACK_SCHEMA, with_field(SLACK_MAPPING, "content", "event.txt"))
    assert errs == [
        (
            "/events/0/fields/content",
            "source path 'event.txt': field 'txt' does not exist in record slack.MessageEvent at event "
            "(did you mean 'text'?) "
            "(fields: type, user, text, ts, channel, event_ts, channel_type, thread_ts)",
        )
    ]


def test_path_through_a_scalar():
    errs = check(SLACK_SCHEMA, with_field(SLACK_MAPPING, "content", "event.text.value"))
    assert errs == [
        (
            "/events/0/fields/content",
            "source path 'event.text.value': cannot read 'value' from event.text, which is string",
        )
    ]


def test_path_through_arrays_needs_an_index():
    assert paths(SLACK_SCHEMA, with_field(SLACK_MAPPING, "content", "authorizations.user_id")) == [
        "/events/0/fields/content"
    ]
    assert (
        mapping_check(SLACK_SCHEMA, with_field(SLACK_MAPPING, "content", "authorizations[0].user_id")) == []
    )


def test_invalid_path_syntax():
    errs = check(SLACK_SCHEMA, with_field(SLACK_MAPPING, "content", {"path": "event..text"}))
    assert errs[0][0] == "/events/0/fields/content/path" and "invalid source path" in errs[0][1]


def test_unknown_target_suggests_a_field():
    errs = check(SLACK_SCHEMA, with_field(SLACK_MAPPING, "contnet", "event.text"))
    assert errs == [
        (
            "/events/0/fields/contnet",
            "unknown canonical field 'contnet' for message.sent (did you mean 'content'?)",
        )
    ]


def test_target_of_another_event_type():
    errs = check(SLACK_SCHEMA, with_field(SLACK_MAPPING, "tool_name", "event.text"))
    assert errs[0][0] == "/events/0/fields/tool_name"


@pytest.mark.parametrize(
    "target,fragment",
    [
        ("received_at", "filled by the pipeline"),
        ("identifiers.person_id", "filled by the pipeline"),
        ("lineage.batch_id", "filled by the pipeline"),
        ("event_id", "'event_id' rule"),
        ("event_type", "rule's 'type'"),
        ("platform_metadata", "'platform_metadata' rule"),
        ("identifiers", "is a record: map its fields"),
    ],
)
def test_targets_the_mapping_may_not_set(target, fragment):
    errs = check(SLACK_SCHEMA, with_field(SLACK_MAPPING, target, "event.text"))
    assert len(errs) == 1 and errs[0][0] == f"/events/0/fields/{target}" and fragment in errs[0][1], errs


def test_string_needs_a_transform_to_become_a_timestamp():
    errs = check(SLACK_SCHEMA, with_field(SLACK_MAPPING, "event_time", "event.ts"))
    assert errs == [
        (
            "/events/0/fields/event_time",
            "'event.ts' is string, which cannot fill event_time (long (timestamp-micros)): add a transform: "
            "iso8601 for ISO-8601 text, or epoch_seconds / epoch_millis / epoch_micros for numeric text",
        )
    ]


def test_epoch_number_needs_its_unit():
    errs = check(SLACK_SCHEMA, with_field(SLACK_MAPPING, "event_time", "event_time"))
    assert (
        errs[0][0] == "/events/0/fields/event_time"
        and "epoch_seconds, epoch_millis or epoch_micros" in errs[0][1]
    )
    assert (
        mapping_check(
            SLACK_SCHEMA,
            with_field(SLACK_MAPPING, "event_time", {"path": "event_time", "transform": "epoch_seconds"}),
        )
        == []
    )


def test_int_fits_long_but_record_cannot_fill_a_string():
    ok = with_field(SLACK_MAPPING, "input_tokens", "event_time")
    assert mapping_check(SLACK_SCHEMA, ok) == []
    errs = check(SLACK_SCHEMA, with_field(SLACK_MAPPING, "content", "event"))
    assert errs == [
        (
            "/events/0/fields/content",
            "'event' is record, which cannot fill content (string?): map one of its fields, or add the "
            "to_json transform to keep it as JSON text",
        )
    ]
    errs = check(SLACK_SCHEMA, with_field(SLACK_MAPPING, "session_id", "event_time"))
    assert errs[0][1].endswith("add the to_string transform")
    errs = check(SLACK_SCHEMA, with_field(SLACK_MAPPING, "input_tokens", "team_id"))
    assert errs[0][1].endswith("add the to_int transform")


def test_long_fits_an_int_field_with_a_range_check_per_payload():
    m = with_field(SLACK_MAPPING, "content_length", "event_time")
    assert mapping_check(SLACK_SCHEMA, m) == []
    with pytest.raises(MappingFailure) as exc:
        compile_mapping(SLACK_SCHEMA, m)({**SLACK_PAYLOAD, "event_time": 2**40}, CTX)
    assert exc.value.path == "/event_time" and "does not fit a 32-bit int" in exc.value.message


def test_required_canonical_fields_must_be_mapped():
    m = copy.deepcopy(SLACK_MAPPING)
    del m["events"][0]["fields"]["role"]
    del m["events"][0]["fields"]["event_time"]
    errs = check(SLACK_SCHEMA, m)
    assert [e[0] for e in errs] == ["/events/0/fields", "/events/0/fields"]
    assert "required canonical field 'event_time' of message.sent is not mapped" in errs[0][1]
    assert "required canonical field 'role' of message.sent is not mapped" in errs[1][1]


def test_enum_constant_must_be_a_symbol():
    errs = check(SLACK_SCHEMA, with_field(SLACK_MAPPING, "role", {"const": "usr"}))
    assert errs == [
        (
            "/events/0/fields/role",
            "'usr' not in role's symbols (user, assistant, system, tool) (did you mean 'user'?)",
        )
    ]


def test_source_enum_symbols_must_fit_the_target_enum():
    schema = copy.deepcopy(WEB_SCHEMA)
    schema["fields"][10]["type"][1]["fields"][1]["type"]["symbols"].append("bot")
    errs = check(schema, WEB_MAPPING)
    assert errs == [
        (
            "/events/0/fields/role",
            "source enum symbols bot are not in role's symbols "
            "(assistant, system, tool, user); add a map transform",
        )
    ]


def test_unknown_transform_and_wrong_input():
    errs = check(
        SLACK_SCHEMA,
        with_field(SLACK_MAPPING, "content", {"path": "event.text", "transform": ["trim", "lowercase"]}),
    )
    assert errs == [
        (
            "/events/0/fields/content/transform/1",
            "unknown transform 'lowercase' (did you mean 'lower'?); known: epoch_seconds, epoch_millis, "
            "epoch_micros, iso8601, to_string, to_int, to_float, to_number, lower, upper, trim, sha256, "
            "length, to_json, map, scale, multiply",
        )
    ]
    errs = check(
        SLACK_SCHEMA, with_field(SLACK_MAPPING, "session_id", {"path": "event_time", "transform": "lower"})
    )
    assert errs == [
        (
            "/events/0/fields/session_id/transform",
            "transform 'lower' cannot take long (it takes enum | string)",
        )
    ]


def test_transform_arguments_are_checked():
    bad = {"path": "event_time", "transform": {"scale": {"from": [1, 1], "to": [-1, 1]}}}
    assert check(SLACK_SCHEMA, with_field(SLACK_MAPPING, "temperature", bad)) == [
        ("/events/0/fields/temperature/transform", "'scale' from range is empty (a == b)")
    ]
    assert paths(
        SLACK_SCHEMA,
        with_field(SLACK_MAPPING, "temperature", {"path": "event_time", "transform": "multiply"}),
    ) == ["/events/0/fields/temperature/transform"]


def test_unknown_keys_are_named():
    m = copy.deepcopy(SLACK_MAPPING)
    m["events"][0]["filds"] = {}
    m["evnts"] = []
    errs = check(SLACK_SCHEMA, m)
    assert (
        "/evnts",
        "unknown key 'evnts' in the mapping (did you mean 'events'?); allowed: format, description, match, "
        "unmatched, event_id, fields, platform_metadata, events",
    ) in errs
    assert any(p == "/events/0/filds" and "did you mean 'fields'?" in msg for p, msg in errs)


def test_unknown_event_type():
    m = copy.deepcopy(SLACK_MAPPING)
    m["events"][0]["type"] = "message.send"
    assert check(SLACK_SCHEMA, m)[0] == (
        "/events/0/type",
        "'type' must be one of user.identified, session.started, "
        "session.ended, conversation.started, conversation.ended, message.sent, "
        "tool_call.started, tool_call.completed, feedback.submitted (did you mean 'message.sent'?)",
    )


def test_condition_on_an_enum_catches_typos():
    m = copy.deepcopy(SLACK_MAPPING)
    m["events"][0]["when"] = {"path": "event.type", "in": ["message", "app_mentoin"]}
    assert check(SLACK_SCHEMA, m) == [
        (
            "/events/0/when/in/1",
            "'app_mentoin' is not a symbol of 'event.type' (app_mention, message) "
            "(did you mean 'app_mention'?)",
        )
    ]
    m["events"][0]["when"] = {"path": "event_time", "equals": "x"}
    assert paths(SLACK_SCHEMA, m) == ["/events/0/when/equals"]
    m["events"][0]["when"] = {"path": "event.type"}
    assert paths(SLACK_SCHEMA, m) == ["/events/0/when"]


def test_event_id_rule_is_required():
    m = copy.deepcopy(SLACK_MAPPING)
    del m["event_id"]
    errs = check(SLACK_SCHEMA, m)
    assert errs[0][0] == "/events/0" and "no event_id rule" in errs[0][1]
    m["event_id"] = {"idempotency_key": "event"}
    assert check(SLACK_SCHEMA, m) == [
        ("/event_id/idempotency_key", "an event_id key must be a scalar, but it is record")
    ]
    m["event_id"] = {"natural_key": []}
    assert paths(SLACK_SCHEMA, m) == ["/event_id/natural_key"]


def test_unreachable_rules_and_duplicate_ids():
    m = copy.deepcopy(SLACK_MAPPING)
    rule = copy.deepcopy(m["events"][0])
    del m["events"][0]["when"]
    m["events"].append(rule)
    assert check(SLACK_SCHEMA, m)[0] == (
        "/events/1",
        "unreachable: rule /events/0 has no 'when' and match is \"first\"",
    )
    m["match"] = "all"
    assert check(SLACK_SCHEMA, m)[0][0] == "/events/1/event_id"


def test_common_fields_are_envelope_only():
    m = copy.deepcopy(SLACK_MAPPING)
    m["fields"] = {"content": "event.text"}
    assert check(SLACK_SCHEMA, m) == [
        (
            "/fields/content",
            "'content' belongs to message.sent: common 'fields' may only "
            "set envelope fields; move it into the event rule",
        )
    ]


def test_templates_are_checked():
    assert paths(SLACK_SCHEMA, with_field(SLACK_MAPPING, "session_id", {"template": "{team_id"})) == [
        "/events/0/fields/session_id/template"
    ]
    assert paths(SLACK_SCHEMA, with_field(SLACK_MAPPING, "session_id", {"template": "fixed"})) == [
        "/events/0/fields/session_id/template"
    ]
    assert paths(SLACK_SCHEMA, with_field(SLACK_MAPPING, "session_id", {"template": "{event}"})) == [
        "/events/0/fields/session_id/template"
    ]
    assert (
        mapping_check(SLACK_SCHEMA, with_field(SLACK_MAPPING, "session_id", {"template": "{{x}}-{team_id}"}))
        == []
    )


def test_metadata_rule_is_checked():
    m = copy.deepcopy(SLACK_MAPPING)
    m["platform_metadata"] = {"include": ["event.nope"]}
    assert paths(SLACK_SCHEMA, m) == ["/platform_metadata/include/0"]
    m["platform_metadata"] = "everything"
    assert paths(SLACK_SCHEMA, m) == ["/platform_metadata"]


def test_invalid_source_schema_is_reported():
    assert check({"type": "record", "name": "R", "fields": [{"name": "a", "type": "nope"}]}, SLACK_MAPPING)[
        0
    ] == ("/", "the source schema is not valid Avro: /fields/0/type: unknown type 'nope'")


def test_compile_mapping_raises_with_every_error():
    m = copy.deepcopy(SLACK_MAPPING)
    m["events"][0]["fields"]["contnet"] = "event.txt"
    with pytest.raises(MappingSpecError) as exc:
        compile_mapping(SLACK_SCHEMA, m)
    assert [e.path for e in exc.value.errors] == ["/events/0/fields/contnet", "/events/0/fields/contnet"]


# ---------------------------------------------------------------------------------------------
# preview collects every error of every stage
# ---------------------------------------------------------------------------------------------


def test_preview_lists_schema_and_payload_errors_together():
    p = copy.deepcopy(SLACK_PAYLOAD)
    p["event"]["ts"] = "soon"
    p["event_time"] = "late"
    p["team_id"] = None
    result = preview(SLACK_SCHEMA, SLACK_MAPPING, p, CTX)
    assert {(e["stage"], e["path"]) for e in result.errors} >= {
        ("schema", "/event_time"),
        ("schema", "/team_id"),
        ("payload", "/event/ts"),
    }
    assert len(result.events) == 1 and result.events[0]["event_time"] is None


def test_preview_with_a_bad_mapping_reports_mapping_errors():
    result = preview(SLACK_SCHEMA, with_field(SLACK_MAPPING, "contnet", "event.text"), SLACK_PAYLOAD, CTX)
    assert result.events == []
    assert result.errors == [
        {
            "stage": "mapping",
            "path": "/events/0/fields/contnet",
            "message": "unknown canonical field 'contnet' for message.sent (did you mean 'content'?)",
        }
    ]


def test_preview_with_a_bad_schema():
    result = preview({"type": "nope"}, SLACK_MAPPING, SLACK_PAYLOAD, CTX)
    assert result.events == [] and result.errors[0]["stage"] == "schema"


@pytest.mark.parametrize("payload", [None, [], "x", 3, {"event": "x"}, {"event": {"ts": {"a": 1}}}])
def test_preview_of_hostile_payloads_never_raises(payload):
    result = preview(SLACK_SCHEMA, SLACK_MAPPING, payload, CTX)
    assert result.errors


# ---------------------------------------------------------------------------------------------
# Hostile specs never raise
# ---------------------------------------------------------------------------------------------

HOSTILE = [
    None,
    [],
    "x",
    3,
    {},
    {"events": "x"},
    {"events": [1]},
    {"events": [{}]},
    {"events": [{"type": 5}]},
    {"events": [{"type": "message.sent", "fields": []}]},
    {"events": [{"type": "message.sent", "fields": {"role": {"const": {"a": 1}}}}]},
    {"events": [{"type": "message.sent", "fields": {"role": {"first": "x"}}}]},
    {"events": [{"type": "message.sent", "fields": {"role": {"path": 3}}}]},
    {"events": [{"type": "message.sent", "fields": {"role": {"path": "a", "const": "b"}}}]},
    {"events": [{"type": "message.sent", "fields": {"role": {"path": "team_id", "transform": [[]]}}}]},
    {"events": [{"type": "message.sent", "fields": {"role": {"path": "team_id", "transform": {"map": []}}}}]},
    {"events": [{"type": "message.sent", "when": [], "fields": {}}]},
    {"events": [{"type": "message.sent", "when": {"not": {"not": {"all": "x"}}}}]},
    {"event_id": "x", "events": [{"type": "message.sent"}]},
    {"event_id": {"idempotency_key": None}, "events": [{"type": "message.sent"}]},
    {"platform_metadata": {"include": 5}, "events": [{"type": "message.sent"}]},
    {"match": [], "unmatched": {}, "format": True, "events": [{"type": "message.sent"}]},
    {"fields": {"event_time": {"template": 5}}, "events": [{"type": "message.sent"}]},
    {1: 2, "events": [{"type": "message.sent", "fields": {3: "x"}}]},
    {
        "events": [
            {"type": "message.sent", "fields": {"content": {"first": [{"first": [{"first": ["x"] * 3}]}]}}}
        ]
    },
    {"events": float("inf")},
    {
        "event_id": {"idempotency_key": "event_id"},
        "events": [
            {
                "type": "message.sent",
                "fields": {
                    "event_time": {"path": "event_time", "transform": "epoch_seconds"},
                    "role": {"const": "user"},
                    "temperature": {"const": float("nan")},
                },
            }
        ],
    },
    {
        "event_id": {"idempotency_key": "event_id"},
        "events": [
            {
                "type": "message.sent",
                "fields": {
                    "event_time": {"path": "event_time", "transform": "epoch_seconds"},
                    "role": {"const": "user"},
                    "content": {"path": "event.text", "default": float("inf")},
                },
            }
        ],
    },
]


@pytest.mark.parametrize("spec", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_specs_give_errors_not_exceptions(spec):
    errs = mapping_check(SLACK_SCHEMA, spec)
    assert errs and all(isinstance(e, MappingError) and e.path.startswith("/") for e in errs)
    with pytest.raises(MappingSpecError):
        compile_mapping(SLACK_SCHEMA, spec)
    assert preview(SLACK_SCHEMA, spec, SLACK_PAYLOAD, CTX).errors


def test_deeply_nested_spec():
    spec = {"events": [{"type": "message.sent", "when": {"path": "type", "equals": "x"}}]}
    cond = {"path": "type", "equals": "x"}
    for _ in range(5000):
        cond = {"not": cond}
    spec["events"][0]["when"] = cond
    assert mapping_check(SLACK_SCHEMA, spec)


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=8),
        st.sampled_from(
            [
                "event.text",
                "team_id",
                "message.sent",
                "rest",
                "epoch_seconds",
                "first",
                "path",
                "const",
                "events",
                "fields",
                "when",
                "equals",
                "in",
                "type",
                "event_id",
                "idempotency_key",
                "natural_key",
                "allow_null",
                "template",
                "{team_id}",
                "map",
                "scale",
            ]
        ),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "events",
                    "type",
                    "fields",
                    "when",
                    "path",
                    "const",
                    "first",
                    "template",
                    "transform",
                    "default",
                    "event_id",
                    "platform_metadata",
                    "match",
                    "in",
                    "equals",
                    "exists",
                    "not",
                    "all",
                    "any",
                    "include",
                    "rest",
                    "exclude",
                    "idempotency_key",
                    "natural_key",
                    "allow_null",
                    "role",
                    "content",
                    "event_time",
                    "x",
                ]
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=25,
)


PLAUSIBLE = [
    "team_id",
    "event.text",
    "event.user",
    "event.ts",
    "event.channel",
    "api_app_id",
    "messageId",
    "sessionId",
    "userId",
    "message.text",
    "context.locale",
    "context.traits.plan",
    "message.parts[0].text",
    "rest",
    "none",
    {"const": "user"},
    {"const": 1},
    {"const": None},
    {"first": ["event.user", "team_id"]},
    {"first": ["userId", "anonymousId"]},
    {"template": "{team_id}-{event.ts}"},
    {"template": "{sessionId}:{messageId}"},
    {"path": "event.text", "transform": ["trim", "lower", "sha256"]},
    {"path": "email", "transform": "sha256"},
    {"path": "event.ts", "transform": "epoch_seconds"},
    {"path": "timestamp", "transform": "iso8601"},
    {"path": "event.text", "transform": "length"},
    {"path": "message.text", "transform": "length"},
    {"include": ["api_app_id"]},
    {"include": {"app": "context.app.version"}},
    {"rest": True, "exclude": ["token"]},
]


def _mutate(spec, data):
    """Change one random node of a valid spec: random JSON, a plausible value, or drop it."""
    spec = copy.deepcopy(spec)
    nodes = []

    def walk(node, parent, key):
        nodes.append((parent, key))
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, node, k)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, node, i)

    walk(spec, None, None)
    for _ in range(data.draw(st.integers(1, 3))):
        parent, key = data.draw(st.sampled_from(nodes[1:]))
        how = data.draw(st.sampled_from(["random", "plausible", "plausible", "drop"]))
        try:
            if how == "drop" and isinstance(parent, dict):
                del parent[key]
            elif how == "drop":
                parent.pop(key)
            else:
                parent[key] = copy.deepcopy(
                    data.draw(json_values if how == "random" else st.sampled_from(PLAUSIBLE))
                )
        except (KeyError, IndexError):
            pass  # an earlier change removed this node
    return spec


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_and_mutated_specs_never_raise(data):
    base = data.draw(
        st.sampled_from(
            [
                (SLACK_SCHEMA, SLACK_MAPPING, SLACK_PAYLOAD, CTX),
                (WEB_SCHEMA, WEB_MAPPING, WEB_PAYLOAD, WEB_CTX),
            ]
        )
    )
    schema, mapping, payload, ctx = base
    mutated = st.builds(lambda: _mutate(mapping, data))
    spec = data.draw(st.one_of(json_values, mutated, mutated, mutated))
    errs = mapping_check(schema, spec)
    assert all(isinstance(e, MappingError) for e in errs)
    if errs:
        with pytest.raises(MappingSpecError):
            compile_mapping(schema, spec)
    else:
        cm = compile_mapping(schema, spec)
        try:
            cm(payload, ctx)
        except MappingFailure:
            pass
    result = preview(schema, spec, payload, ctx)
    assert isinstance(result, PreviewResult)
    assert all(e["stage"] in ("schema", "mapping", "payload") for e in result.errors)


def test_wide_and_deep_specs_still_compile():
    wide = with_field(SLACK_MAPPING, "session_id", {"first": ["event.thread_ts"] * 300 + ["team_id"]})
    chain = with_field(
        SLACK_MAPPING,
        "content",
        {"path": "event.text", "transform": [{"map": {"a": "b"}}] * 60 + ["upper"], "default": "none"},
    )
    for spec in (wide, chain):
        assert mapping_check(SLACK_SCHEMA, spec) == []
        compile_mapping(SLACK_SCHEMA, spec)(SLACK_PAYLOAD, CTX)
    nested = {"const": "x"}
    for _ in range(15):
        nested = {"first": ["event.thread_ts", nested]}
    assert (
        compile_mapping(SLACK_SCHEMA, with_field(SLACK_MAPPING, "session_id", nested))(SLACK_PAYLOAD, CTX)[0][
            "session_id"
        ]
        == "x"
    )


def test_deep_paths_through_a_recursive_schema():
    schema = {
        "type": "record",
        "name": "Node",
        "fields": [S("id", "string"), S("ts", "long"), O("label", "string"), O("next", "Node")],
    }
    deep = ".".join(["next"] * 30) + ".label"
    m = {
        "event_id": {"idempotency_key": "id"},
        "events": [
            {
                "type": "session.started",
                "fields": {"event_time": {"path": "ts", "transform": "epoch_seconds"}, "entry_point": deep},
            }
        ],
    }
    assert mapping_check(schema, m) == []
    payload = {"id": "n0", "ts": 1700000000, "label": "root"}
    node = payload
    for i in range(30):
        node["next"] = {"id": f"n{i + 1}", "ts": 1, "label": f"l{i + 1}"}
        node = node["next"]
    [e] = compile_mapping(schema, m)(payload, WEB_CTX)
    assert e["attributes"]["entry_point"] == "l30"
    too_deep = ".".join(["next"] * 40)
    m["events"][0]["fields"]["entry_point"] = too_deep
    errs = check(schema, m)
    assert errs[0][0] == "/events/0/fields/entry_point" and "deeper than 32 segments" in errs[0][1]
