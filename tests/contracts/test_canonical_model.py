"""The canonical model v1: what the portal's model browser and the registry see."""

import io
import json

import avro.schema
import fastavro
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from contracts.canonical_model import (
    CANONICAL_NAMESPACE,
    CANONICAL_VERSION,
    EVENT_TYPES,
    PLATFORMS,
    SCHEMA_DIR,
    canonical_avro_schema,
    load_canonical_model,
    to_avro_datum,
)

PIPELINE_FIELDS = {
    "received_at",
    "ingested_at",
    "source_id",
    "contract",
    "contract.name",
    "contract.version",
    "canonical_version",
    "platform",
    "lineage",
    "identifiers.person_id",
}


def all_fields(model):
    out = []

    def walk(fields):
        for f in fields:
            out.append(f)
            walk(f.fields)

    walk(model.envelope)
    for et in model.event_types.values():
        walk(et.fields)
    return out


def test_one_avsc_file_per_event_type_plus_envelope():
    names = sorted(p.name for p in SCHEMA_DIR.glob("*.avsc"))
    assert names == sorted(["envelope.avsc"] + [f"{t}.avsc" for t in EVENT_TYPES])


@pytest.mark.parametrize("path", sorted(SCHEMA_DIR.glob("*.avsc")), ids=lambda p: p.name)
def test_every_file_is_valid_avro_in_the_v1_namespace(path):
    raw = json.loads(path.read_text())
    fastavro.parse_schema(raw)
    avro.schema.parse(json.dumps(raw))
    assert raw["namespace"] == CANONICAL_NAMESPACE
    assert raw["doc"]


def test_model_loads_once_with_every_event_type():
    m = load_canonical_model()
    assert m is load_canonical_model()
    assert m.version == CANONICAL_VERSION == "1.0.0"
    assert list(m.event_types) == list(EVENT_TYPES)
    assert m.event_types["message.sent"].record_name == "chatorbit.canonical.v1.MessageSent"


def test_every_field_documents_meaning_platforms_privacy_and_filler():
    for f in all_fields(load_canonical_model()):
        assert f.doc.strip(), f.path
        assert f.platforms and set(f.platforms) <= set(PLATFORMS), f.path
        assert isinstance(f.personal, bool), f.path
        assert f.filled_by in ("mapping", "pipeline"), f.path


def test_envelope_has_the_design_fields_in_order():
    m = load_canonical_model()
    assert [f.name for f in m.envelope] == [
        "event_id",
        "event_type",
        "event_time",
        "received_at",
        "ingested_at",
        "platform",
        "product",
        "source_id",
        "contract",
        "canonical_version",
        "identifiers",
        "session_id",
        "conversation_id",
        "message_id",
        "parent_event_id",
        "platform_metadata",
        "lineage",
    ]
    ids = m.envelope_field("identifiers")
    assert [f.name for f in ids.fields] == [
        "person_id",
        "anonymous_id",
        "platform_user_id",
        "device_id",
        "tenant_id",
        "email_sha256",
    ]
    lineage = m.envelope_field("lineage")
    assert [f.name for f in lineage.fields] == [
        "raw_archive_uri",
        "raw_offset",
        "stream",
        "shard_id",
        "sequence_number",
        "batch_id",
        "contract_version",
        "normalizer_version",
    ]


def test_pipeline_fields_are_marked_pipeline_and_the_rest_mapping():
    m = load_canonical_model()
    for f in all_fields(m):
        if f.path in PIPELINE_FIELDS or f.path.startswith("lineage."):
            assert f.filled_by == "pipeline", f.path
    for path in ("event_id", "event_time", "session_id", "identifiers.device_id", "product"):
        assert m.envelope_field(path).filled_by == "mapping"
    assert m.event_types["message.sent"].field("input_tokens").filled_by == "mapping"


def test_timestamps_are_timestamp_micros_and_required_ones_are_required():
    m = load_canonical_model()
    for name in ("event_time", "received_at", "ingested_at"):
        assert m.envelope_field(name).logical_type == "timestamp-micros"
    assert m.envelope_field("event_time").required
    assert m.envelope_field("event_id").required
    assert not m.envelope_field("ingested_at").required
    assert not m.envelope_field("session_id").required
    assert m.envelope_field("event_time").type_label == "long (timestamp-micros)"
    assert m.envelope_field("session_id").type_label == "string?"


@pytest.mark.parametrize(
    "event_type,name,otel",
    [
        ("message.sent", "input_tokens", "gen_ai.usage.input_tokens"),
        ("message.sent", "output_tokens", "gen_ai.usage.output_tokens"),
        ("message.sent", "cache_read_input_tokens", "gen_ai.usage.cache_read.input_tokens"),
        ("message.sent", "request_model", "gen_ai.request.model"),
        ("message.sent", "response_model", "gen_ai.response.model"),
        ("message.sent", "provider", "gen_ai.provider.name"),
        ("message.sent", "finish_reason", "gen_ai.response.finish_reasons"),
        ("tool_call.started", "tool_name", "gen_ai.tool.name"),
        ("tool_call.completed", "tool_call_id", "gen_ai.tool.call.id"),
    ],
)
def test_genai_fields_follow_otel_names(event_type, name, otel):
    f = load_canonical_model().event_types[event_type].field(name)
    assert f is not None and f.otel == otel


def test_message_sent_shape():
    ms = load_canonical_model().event_types["message.sent"]
    role = ms.field("role")
    assert role.required and role.symbols == ("user", "assistant", "system", "tool")
    assert ms.field("content").personal and not ms.field("content").required
    assert ms.field("content_length").base_type == "int"
    for name in (
        "reasoning_output_tokens",
        "audio_input_tokens",
        "audio_output_tokens",
        "latency_ms",
        "time_to_first_token_ms",
    ):
        assert ms.field(name) is not None, name


def test_feedback_score_is_a_double_in_minus_one_to_one():
    fb = load_canonical_model().event_types["feedback.submitted"]
    assert fb.field("score").base_type == "double" and fb.field("score").required
    assert fb.field("score").value_range == (-1.0, 1.0)
    assert fb.field("kind").symbols == ("thumbs", "stars", "text")
    assert fb.field("comment").personal


def test_tool_calls_require_a_tool_name():
    m = load_canonical_model()
    for t in ("tool_call.started", "tool_call.completed"):
        assert m.event_types[t].field("tool_name").required


def test_personal_data_is_flagged():
    m = load_canonical_model()
    for path in (
        "identifiers.person_id",
        "identifiers.anonymous_id",
        "identifiers.platform_user_id",
        "identifiers.device_id",
        "identifiers.email_sha256",
        "platform_metadata",
    ):
        assert m.envelope_field(path).personal, path
    assert not m.envelope_field("identifiers.tenant_id").personal
    assert m.event_types["user.identified"].field("email").personal
    assert m.event_types["tool_call.started"].field("arguments").personal


def test_type_fields_never_collide_with_envelope_names():
    m = load_canonical_model()
    env = {f.name for f in m.envelope}
    for et in m.event_types.values():
        assert not env & {f.name for f in et.fields}, et.name


def test_target_lookup():
    m = load_canonical_model()
    assert m.target("message.sent", "role").name == "role"
    assert m.target("message.sent", "identifiers.device_id").path == "identifiers.device_id"
    assert m.target("session.started", "role") is None
    assert m.target("message.sent", "nope") is None


def test_composed_schema_is_valid_avro_and_a_fresh_copy():
    s = canonical_avro_schema()
    assert s["name"] == "CanonicalEvent" and s["namespace"] == CANONICAL_NAMESPACE
    assert s["x-canonical-version"] == CANONICAL_VERSION
    fastavro.parse_schema(s)
    avro.schema.parse(json.dumps(s))
    attrs = next(f for f in s["fields"] if f["name"] == "attributes")
    assert [b["x-event-type"] for b in attrs["type"]] == list(EVENT_TYPES)
    s["fields"].clear()
    assert canonical_avro_schema()["fields"]


def test_composed_schema_is_compatible_with_itself_full():
    s = avro.schema.parse(json.dumps(canonical_avro_schema()))
    r = ReaderWriterCompatibilityChecker().get_compatibility(reader=s, writer=s)
    assert r.compatibility == SchemaCompatibilityType.compatible


def test_canonical_event_round_trips_through_avro_binary():
    event = {
        "event_id": "4c7d6a2e-59a1-5d8e-9d43-2b2f0c0d8a11",
        "event_type": "feedback.submitted",
        "event_time": 1_700_000_000_000_000,
        "received_at": 1_700_000_000_500_000,
        "ingested_at": None,
        "platform": "web",
        "product": "helpdesk",
        "source_id": "src-1",
        "contract": {"name": "web-chat.events", "version": 2},
        "canonical_version": "1.0.0",
        "identifiers": {
            "person_id": None,
            "anonymous_id": "a-1",
            "platform_user_id": None,
            "device_id": None,
            "tenant_id": "acme",
            "email_sha256": None,
        },
        "session_id": "s-1",
        "conversation_id": "c-1",
        "message_id": "m-1",
        "parent_event_id": None,
        "attributes": {"score": 1.0, "kind": "thumbs", "comment": None, "raw_value": "up"},
        "platform_metadata": {"widget": {"position": "bottom-right"}},
        "lineage": {
            "raw_archive_uri": None,
            "raw_offset": None,
            "stream": None,
            "shard_id": None,
            "sequence_number": None,
            "batch_id": None,
            "contract_version": 2,
            "normalizer_version": "x",
        },
    }
    parsed = fastavro.parse_schema(canonical_avro_schema())
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, to_avro_datum(event))
    buf.seek(0)
    back = fastavro.schemaless_reader(buf, parsed)
    assert back["attributes"] == event["attributes"]
    assert json.loads(back["platform_metadata"]) == event["platform_metadata"]
    assert back["event_type"] == "feedback.submitted"
