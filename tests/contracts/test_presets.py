"""The demo sources' preset contracts (contracts/presets/*.json): every one checks and previews cleanly."""

import hashlib
import json
import re
import statistics
from pathlib import Path

import avro.schema
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from contracts.canonical_model import PLATFORMS
from contracts.mapping import SourceContext, compile_mapping, derive_event_id, mapping_check, preview
from contracts.validation import compile_validator

PRESET_DIR = Path(__file__).resolve().parents[2] / "contracts" / "presets"
DEMO_SOURCES = {"web-chat", "ios-app", "android-app", "slack-bot", "voice-assistant", "llm-gateway"}
RECEIVED_AT = 1_772_400_000_000_000


def load(name):
    return json.loads((PRESET_DIR / f"{name}.json").read_text())


def all_versions():
    for path in sorted(PRESET_DIR.glob("*.json")):
        preset = json.loads(path.read_text())
        for contract in preset["contracts"]:
            for number, version in enumerate(contract["versions"], 1):
                yield pytest.param(preset, contract, number, version, id=f"{contract['subject']}-v{number}")


def ctx_for(preset, contract, number):
    return SourceContext(
        source_id=f"src-{preset['source']}",
        source_name=preset["source"],
        platform=preset["platform"],
        product=preset.get("product") or None,
        contract_name=contract["subject"],
        contract_version=number,
        received_at_micros=RECEIVED_AT,
    )


def events_of(name, subject=None, version=1):
    preset = load(name)
    contract = next(c for c in preset["contracts"] if subject is None or c["subject"] == subject)
    v = contract["versions"][version - 1]
    cm = compile_mapping(v["schema"], v["mapping"])
    ctx = ctx_for(preset, contract, version)
    return [cm(s, ctx) for s in v["samples"]]


def test_one_preset_per_demo_source():
    assert {p.stem for p in PRESET_DIR.glob("*.json")} == DEMO_SOURCES
    for name in DEMO_SOURCES:
        preset = load(name)
        assert preset["source"] == name
        assert preset["platform"] in PLATFORMS
        assert preset["kind"] in ("sdk", "backend", "webhook")
        assert preset["product"] and preset["description"]
        for contract in preset["contracts"]:
            source, _, event = contract["subject"].partition(".")
            assert source == name and re.fullmatch(r"[a-z][a-z0-9_]*", event)
            assert contract["compatibility"] == "BACKWARD_TRANSITIVE"
            assert contract["versions"]


def test_some_contracts_have_history():
    multi = [c["subject"] for n in DEMO_SOURCES for c in load(n)["contracts"] if len(c["versions"]) >= 2]
    assert len(multi) >= 2


@pytest.mark.parametrize("preset,contract,number,version", list(all_versions()))
def test_preset_version_checks_and_every_sample_previews_cleanly(preset, contract, number, version):
    assert mapping_check(version["schema"], version["mapping"]) == []
    assert version["samples"], "every version ships samples"
    ctx = ctx_for(preset, contract, number)
    cm = compile_mapping(version["schema"], version["mapping"])
    validator = compile_validator(version["schema"])
    for sample in version["samples"]:
        assert validator(sample) == []
        result = preview(version["schema"], version["mapping"], sample, ctx)
        assert result.errors == []
        assert result.events, "every sample makes at least one event"
        assert cm(sample, ctx) == result.events
        for event in result.events:
            assert event["platform"] == preset["platform"]
            assert event["contract"] == {"name": contract["subject"], "version": number}


@pytest.mark.parametrize("name", sorted(DEMO_SOURCES))
def test_later_versions_are_backward_compatible_with_every_earlier_one(name):
    checker = ReaderWriterCompatibilityChecker()
    for contract in load(name)["contracts"]:
        schemas = [avro.schema.parse(json.dumps(v["schema"])) for v in contract["versions"]]
        for i, new in enumerate(schemas):
            for old in schemas[:i]:
                r = checker.get_compatibility(reader=new, writer=old)
                assert r.compatibility == SchemaCompatibilityType.compatible, (
                    contract["subject"],
                    r.messages,
                )


@pytest.mark.parametrize("name", ["web-chat", "ios-app", "android-app", "llm-gateway"])
def test_sdk_and_gateway_samples_are_realistic_sizes(name):
    sizes = [
        len(json.dumps(s, separators=(",", ":")).encode())
        for c in load(name)["contracts"]
        for v in c["versions"]
        for s in v["samples"]
    ]
    assert 1000 <= statistics.median(sizes) <= 4096 and max(sizes) <= 4096, sizes


def test_slack_messages_become_user_messages_keyed_by_slack_event_id():
    dm, mention, reply, bot = [events[0] for events in events_of("slack-bot")]
    assert dm["event_type"] == "message.sent" and dm["attributes"]["role"] == "user"
    assert dm["identifiers"]["platform_user_id"] == "T061EG9R6:U2147483697"
    assert dm["identifiers"]["tenant_id"] == "T061EG9R6"
    assert dm["event_id"] == derive_event_id("slack-bot", "message.sent", ["Ev08MFMKH6"])
    assert dm["event_time"] == 1_772_360_999_000_200
    assert mention["attributes"]["role"] == "user"
    assert mention["conversation_id"] == reply["conversation_id"] == "C0LAN2Q65:1772360800.001100"
    assert dm["conversation_id"] == "D024BE7LR:1772360999.000200"
    assert bot["attributes"]["role"] == "assistant" and bot["identifiers"]["platform_user_id"] is None
    for e in (dm, mention, reply, bot):
        assert "token" not in e["platform_metadata"]
    assert dm["platform_metadata"]["event"]["client_msg_id"] == "b6a1f4d2-6c0e-4f3a-9a55-3d1e2c7b8f90"


def test_slack_edits_are_skipped():
    preset = load("slack-bot")
    v = preset["contracts"][0]["versions"][0]
    edit = json.loads(json.dumps(v["samples"][0]))
    edit["event"]["subtype"] = "message_changed"
    assert compile_mapping(v["schema"], v["mapping"])(edit, ctx_for(preset, preset["contracts"][0], 1)) == []


def test_alexa_requests_map_by_request_type():
    launch, question, stop, ended, error = [events[0] for events in events_of("voice-assistant")]
    assert launch["event_type"] == "session.started" and launch["attributes"]["locale"] == "en-US"
    assert question["event_type"] == "message.sent" and question["attributes"]["role"] == "user"
    assert question["attributes"]["intent_name"] == "AskQuestionIntent"
    assert question["attributes"]["content"] == "when does my order of trail running shoes arrive"
    assert stop["attributes"]["intent_name"] == "AMAZON.StopIntent" and stop["attributes"]["content"] is None
    assert ended["event_type"] == "session.ended" and ended["attributes"]["reason"] == "user_initiated"
    assert error["attributes"]["error_type"] == "INVALID_RESPONSE"
    assert question["event_time"] == 1_772_388_259_000_000  # 2026-03-01T18:04:19Z
    assert question["event_id"] == derive_event_id(
        "voice-assistant", "message.sent", ["amzn1.echo-api.request.8f3b0d52-1c4e-4a9f-b7d6-2e0c3f5a8b14"]
    )
    assert len({e["session_id"] for e in (launch, question, stop, ended)}) == 1
    for e in (launch, question, ended):
        text = json.dumps(e)
        assert "accessToken" not in text and "apiAccessToken" not in text and "Atza|" not in text


def test_web_chat_open_starts_session_and_conversation_and_never_keeps_raw_email():
    opened, user_msg, assistant_msg, feedback, closed, identify = events_of("web-chat")
    assert [e["event_type"] for e in opened] == ["session.started", "conversation.started"]
    assert [e["event_type"] for e in closed] == ["conversation.ended", "session.ended"]
    assert (
        user_msg[0]["attributes"]["role"] == "user" and assistant_msg[0]["attributes"]["latency_ms"] == 4412
    )
    assert feedback[0]["attributes"]["score"] == 1.0 and feedback[0]["message_id"] == "wm_01JNB6QWB7T9"
    [ident] = identify
    assert ident["identifiers"]["email_sha256"] == hashlib.sha256(b"jamie.rivera@example.com").hexdigest()
    assert "Example.com" not in json.dumps(ident) and "jamie.rivera@" not in json.dumps(ident).lower()


def test_web_chat_v2_keeps_the_new_field_in_platform_metadata():
    [event] = events_of("web-chat", version=2)[1]
    assert event["platform_metadata"]["experiment"] == "widget-v2-compact"


def test_mobile_sdks_differ_in_shape_but_meet_in_the_model():
    ios_msg = events_of("ios-app")[1][0]
    android_msg = events_of("android-app")[1][0]
    android_reply = events_of("android-app")[2][0]
    assert ios_msg["event_time"] == 1_772_357_431_904_000  # epoch milliseconds
    assert android_msg["event_time"] == 1_772_360_044_087_000  # float epoch seconds
    assert ios_msg["identifiers"]["device_id"] == "6D1F2A8C-3B4E-4F59-8A7B-9C0D1E2F3A4B"
    assert android_msg["identifiers"]["device_id"] == "7f3c9e21-4b8a-4d6f-a1c3-5e7b9d0f2a48"
    assert ios_msg["attributes"]["content_type"] == "audio_transcript"
    assert (android_msg["attributes"]["role"], android_reply["attributes"]["role"]) == ("user", "assistant")
    ios_feedback = events_of("ios-app")[3][0]
    assert ios_feedback["attributes"]["score"] == 0.5 and ios_feedback["attributes"]["kind"] == "stars"
    android_end = events_of("android-app")[4][0]
    assert android_end["attributes"]["duration_ms"] == 401486
    android_start = events_of("android-app")[0][0]
    assert android_start["attributes"]["device_model"] == "Google Pixel 8"


def test_llm_gateway_calls_carry_usage_and_tool_calls_pair_up():
    tool_call, answer, timeout = [e[0] for e in events_of("llm-gateway", "llm-gateway.llm_call")]
    assert answer["attributes"]["role"] == "assistant"
    assert answer["attributes"]["input_tokens"] == 2466 and answer["attributes"]["output_tokens"] == 71
    assert answer["attributes"]["cache_read_input_tokens"] == 2048
    assert (
        answer["attributes"]["finish_reason"] == "stop"
        and answer["attributes"]["time_to_first_token_ms"] == 388
    )
    assert (
        tool_call["attributes"]["tool_call_count"] == 1
        and tool_call["attributes"]["finish_reason"] == "tool_calls"
    )
    assert timeout["attributes"]["error_type"] == "timeout"
    reasoning, voice = [e[0] for e in events_of("llm-gateway", "llm-gateway.llm_call", version=2)]
    assert reasoning["attributes"]["reasoning_output_tokens"] == 448
    assert voice["attributes"]["audio_input_tokens"] == 212 and voice["product"] == "voice-concierge"
    started, completed, failed = [e[0] for e in events_of("llm-gateway", "llm-gateway.tool_call")]
    assert started["event_type"] == "tool_call.started" and completed["event_type"] == "tool_call.completed"
    assert (
        started["attributes"]["tool_call_id"] == completed["attributes"]["tool_call_id"] == "call_8fJ2kL0pQ4"
    )
    assert started["event_id"] != completed["event_id"]
    assert completed["attributes"]["status"] == "ok" and failed["attributes"]["status"] == "timeout"
