"""Masking personal values in quarantined payloads (pure: literal inputs, no database)."""

from __future__ import annotations

import copy
import json

import orjson
import pytest

from contracts.presets import preset_load
from ingest_workers.masking import (
    MASK_PREFIX,
    canonical_personal_names,
    canonical_personal_targets,
    detail_mask,
    key_is_personal,
    masked_marker,
    payload_mask,
    personal_source_paths,
    pointer_mask,
)

MESSAGE_TEXT = "Hi, my order #48213 arrived yesterday but the tent poles are missing"


def web_chat_message() -> dict:
    return {
        "messageId": "0f9c1a7e-6a2b-4c55-9c1e-8e7d2b4f5a10", "type": "message",
        "timestamp": "2026-03-01T09:30:15.250+00:00", "anonymousId": "a8f3c1e2-7b4d-4e9a-9c1f-2d6b8e0f4a17",
        "userId": "cust_5512093", "sessionId": "ws_01JNB6Q3Z8T4XG7K2M9D5R1VCE",
        "context": {"tenantId": "acme-outdoor", "locale": "en-GB", "ip": "203.0.113.42",
                    "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36",
                    "page": {"path": "/help/orders/48213", "title": "Order 48213 - Help centre - ACME Outdoor"},
                    "screen": {"width": 1512, "height": 982}},
        "message": {"id": "wm_01JNB6QRX4M2", "role": "user", "format": "text", "text": MESSAGE_TEXT,
                    "latencyMs": None},
        "traits": {"email": "Jane.Doe@example.com", "name": "Jane Doe", "plan": "pro"},
    }


PERSONAL_VALUES = [MESSAGE_TEXT, "cust_5512093", "a8f3c1e2-7b4d-4e9a-9c1f-2d6b8e0f4a17", "203.0.113.42",
                   "Jane.Doe@example.com", "Jane Doe", "Order 48213 - Help centre - ACME Outdoor", "Mozilla/5.0"]


def test_personal_values_are_replaced_by_type_and_length_and_nothing_else_changes():
    payload = web_chat_message()
    original = copy.deepcopy(payload)
    masked = payload_mask(payload)
    text = orjson.dumps(masked.value).decode()
    for value in PERSONAL_VALUES:
        assert value not in text
    assert payload == original  # the input is not modified
    m = masked.value
    assert m["message"]["text"] == f"{MASK_PREFIX} string · {len(MESSAGE_TEXT)} chars›"
    # what debugging needs stays: ids of things, enums, types, structure
    assert m["messageId"] == original["messageId"] and m["sessionId"] == original["sessionId"]
    assert m["message"]["role"] == "user" and m["message"]["format"] == "text"
    assert m["message"]["id"] == "wm_01JNB6QRX4M2"
    assert m["message"]["latencyMs"] is None
    assert m["context"]["screen"] == {"width": 1512, "height": 982}
    assert m["context"]["tenantId"] == "acme-outdoor" and m["timestamp"] == original["timestamp"]
    assert set(masked.masked_paths) >= {"/message/text", "/userId", "/anonymousId", "/traits/email",
                                        "/traits/name", "/context/ip", "/context/page/title"}
    assert masked.masked_count == len(masked.masked_paths)


def test_a_whole_identity_subtree_is_masked_but_keeps_its_shape():
    masked = payload_mask({"user": {"id": "U024BE7LH", "profile": {"real_name": "Ana", "tz": "Europe/Lisbon"}},
                           "authed_users": ["U1", "U2"], "event": {"type": "message", "user": "U061F7AUR"}})
    m = masked.value
    assert m["user"]["profile"]["tz"].startswith(MASK_PREFIX) and m["user"]["id"].startswith(MASK_PREFIX)
    assert m["authed_users"] == [masked_marker("U1"), masked_marker("U2")]
    assert m["event"] == {"type": "message", "user": masked_marker("U061F7AUR")}


def test_alexa_request_hides_user_device_token_and_what_was_said():
    request = {"session": {"user": {"userId": "amzn1.ask.account.AF7X"}, "sessionId": "amzn1.echo-api.session.1"},
               "context": {"System": {"device": {"deviceId": "amzn1.ask.device.AEX"}, "apiAccessToken": "eyJ0eXAi"}},
               "request": {"type": "IntentRequest", "intent": {
                   "name": "OrderStatusIntent",
                   "slots": {"Order": {"name": "Order", "value": "four eight two one three"}}}}}
    text = orjson.dumps(payload_mask(request).value).decode()
    for value in ("amzn1.ask.account.AF7X", "amzn1.ask.device.AEX", "eyJ0eXAi", "four eight two one three"):
        assert value not in text
    assert "IntentRequest" in text and "amzn1.echo-api.session.1" in text


@pytest.mark.parametrize("value", ["someone@example.org", "+44 20 7946 0958", "(555) 123-4567", "555-123-4567",
                                   "10.1.2.3", "2001:db8::ff00:42:8329", "call me back tomorrow please"])
def test_values_that_look_personal_are_masked_under_any_key(value):
    assert payload_mask({"misc": {"x": value}}).value == {"misc": {"x": masked_marker(value)}}


@pytest.mark.parametrize("value", ["2026-03-01", "2026-03-01T09:30:15Z", "09:30:02", "en-GB", "thumbs_up",
                                   "0f9c1a7e-6a2b-4c55-9c1e-8e7d2b4f5a10", "12345678", "3.14.2"])
def test_ordinary_values_stay(value):
    assert payload_mask({"misc": value}).value == {"misc": value}


@pytest.mark.parametrize(("key", "how"), [
    ("text", "scalar"), ("message", "scalar"), ("body", "scalar"), ("email", "subtree"), ("emailAddress", "scalar"),
    ("phone_number", "scalar"), ("first_name", "scalar"), ("userId", "subtree"), ("user_id", "subtree"),
    ("display_name", "subtree"), ("device_id", "subtree"), ("content", "subtree"), ("comment", "subtree"),
    ("messageId", None), ("contentType", None), ("content_length", None), ("sessionId", None), ("context", None),
    ("type", None), ("role", None), ("tenantId", None),
])
def test_key_names(key, how):
    assert key_is_personal(key, canonical_personal_names()) == how


def test_a_message_object_is_walked_but_a_message_string_is_masked():
    masked = payload_mask({"message": "where is my parcel", "other": {"message": {"id": "m1", "text": "hi there"}}})
    assert masked.value["message"] == masked_marker("where is my parcel")
    assert masked.value["other"]["message"] == {"id": "m1", "text": masked_marker("hi there")}


def test_undecodable_raw_text_is_masked_whole():
    masked = payload_mask({"raw_text": "not json {", "truncated_from": 70000})
    assert masked.value == {"raw_text": masked_marker("not json {"), "truncated_from": 70000}
    assert payload_mask({"raw_base64": "//79"}).value == {"raw_base64": masked_marker("//79")}


def test_keys_that_are_email_addresses_are_masked_too():
    masked = payload_mask({"scores": {"jane@example.com": 3}})
    assert "jane@example.com" not in json.dumps(masked.value)


def test_the_list_of_masked_paths_masks_keys_the_payload_masks():
    # hostile-input sweep D3: the payload showed the key masked, the list of masked paths printed it
    masked = payload_mask({"anonymousId": {"jane.doe@example.com": "PII-NESTED"},
                           "scores": {"+442079460958": "I want my money back now"}})
    shown = json.dumps(masked.value)
    assert masked.masked_paths == [f"/anonymousId/{MASK_PREFIX} key · 20 chars›",
                                   f"/scores/{MASK_PREFIX} key · 13 chars›"]
    for secret in ("jane.doe", "7946", "PII-NESTED", "money back"):
        assert secret not in shown and not any(secret in path for path in masked.masked_paths)
    # the error path quoting such a key gets the very same marker
    assert pointer_mask("/anonymousId/jane.doe@example.com", masked.secrets) == masked.masked_paths[0]


def test_the_contract_mapping_marks_source_paths_that_feed_personal_fields():
    preset = preset_load("web-chat")
    mapping = preset["contracts"][0]["versions"][0]["mapping"]
    paths = personal_source_paths(mapping, canonical_personal_targets())
    assert {"message.text", "userId", "anonymousId", "feedback.comment", "traits.email", "traits.name"} <= paths
    assert "sessionId" not in paths and "message.role" not in paths
    # a source field with an innocent name is masked because the mapping sends it to `content`
    masked = payload_mask({"msg": {"pl": "the words the user typed"}, "n": 1}, personal_paths={"msg.pl"})
    assert masked.value == {"msg": {"pl": masked_marker("the words the user typed")}, "n": 1}


def test_mapping_paths_with_indexes_and_fallbacks():
    mapping = {"fields": {"content": {"first": ["turns[0].utterance", {"path": "alt[\"spoken text\"]"}]},
                          "session_id": "sid"}}
    assert personal_source_paths(mapping, {"content"}) == {"turns.utterance", "alt.spoken text"}
    assert personal_source_paths(None, {"content"}) == set()


def test_canonical_personal_fields_come_from_the_model():
    names = canonical_personal_names()
    assert {"content", "email", "displayname", "deviceid", "anonymousid", "comment"} <= names
    assert "sessionid" not in names and "role" not in names


def test_error_detail_quoting_a_personal_value_is_masked():
    payload = web_chat_message()
    masked = payload_mask(payload)
    detail = ('3 schema errors against web-chat.chat_event v2: /message/role: "robot" is not a symbol of enum '
              'MessageRole (allowed: user, assistant, system); /userId: invalid value "cust_5512093"; '
              f'/message/text: invalid value {json.dumps(MESSAGE_TEXT)[:39]}…; '
              "'Jane.Doe@example.com' is not a number; the source's contract")
    shown = detail_mask(detail, masked.secrets)
    for value in ("cust_5512093", MESSAGE_TEXT[:30], "Jane.Doe@example.com"):
        assert value not in shown
    assert '"robot"' in shown and "/message/role" in shown and "the source's contract" in shown
    assert detail_mask(None) == "" and detail_mask("expected string, got int") == "expected string, got int"


def test_pointers_hide_personal_segments():
    assert pointer_mask("/scores/jane@example.com/x") == f"/scores/{MASK_PREFIX} key · 16 chars›/x"
    assert pointer_mask("/message/role") == "/message/role"
    assert pointer_mask(None) == ""


def test_very_deep_payloads_do_not_crash():
    deep: dict = {}
    node = deep
    for _ in range(5000):
        node["a"] = {}
        node = node["a"]
    masked = payload_mask(deep)
    assert masked.masked_paths == ["/"]
