"""The compiled validator: what a platform engineer sees when a payload breaks its contract."""

import itertools
import json

import fastavro
import pytest
from fastavro.validation import validate as fastavro_validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.validation import SchemaError, ValidationError, compile_validator

SESSION_SCHEMA = {
    "type": "record",
    "name": "ChatEvent",
    "namespace": "demo",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "count", "type": "int"},
        {"name": "big", "type": "long", "default": 0},
        {"name": "ratio", "type": ["null", "double"], "default": None},
        {
            "name": "kind",
            "type": {"type": "enum", "name": "Kind", "symbols": ["message", "feedback", "session"]},
        },
        {"name": "digest", "type": ["null", {"type": "fixed", "name": "Md5", "size": 16}], "default": None},
        {
            "name": "session",
            "type": {
                "type": "record",
                "name": "Session",
                "fields": [
                    {"name": "id", "type": "string"},
                    {"name": "started_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
                    {"name": "is_new", "type": "boolean", "default": False},
                ],
            },
        },
        {
            "name": "messages",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Message",
                    "fields": [
                        {"name": "text", "type": "string"},
                        {"name": "lang", "type": ["null", "string"], "default": None},
                    ],
                },
            },
            "default": [],
        },
        {"name": "tags", "type": {"type": "map", "values": "string"}, "default": {}},
    ],
}


def valid_payload():
    return {
        "event_id": "e-1",
        "count": 3,
        "kind": "message",
        "session": {"id": "s-1", "started_at": 1_700_000_000_000_000},
        "messages": [{"text": "hi"}, {"text": "hello", "lang": "en"}],
        "tags": {"ab": "b"},
    }


@pytest.fixture(scope="module")
def v():
    return compile_validator(SESSION_SCHEMA)


def errors_of(v, payload):
    return [(e.path, e.message) for e in v(payload)]


def test_valid_payload_has_no_errors(v):
    assert v(valid_payload()) == []
    assert v.is_valid(valid_payload())


def test_missing_field_with_default_or_null_is_fine(v):
    p = valid_payload()
    del p["messages"], p["tags"]
    p["session"].pop("is_new", None)
    assert v(p) == []


def test_extra_fields_are_allowed_at_every_level(v):
    p = valid_payload()
    p["app_version"] = "3.2.1"
    p["session"]["device"] = {"model": "Pixel 8"}
    p["messages"][0]["reactions"] = [1, 2]
    assert v(p) == []


def test_wrong_type_names_its_path(v):
    p = valid_payload()
    p["session"]["started_at"] = "2024-05-01T12:00:00Z"
    assert errors_of(v, p) == [
        ("/session/started_at", "expected integer (long, 64-bit) (timestamp-micros), got string")
    ]


def test_array_item_errors_name_the_index(v):
    p = valid_payload()
    p["messages"] = [{"text": "a"}, {"text": "b"}, {"text": "c"}, {"text": 4}]
    assert errors_of(v, p) == [("/messages/3/text", "expected string, got integer")]


def test_bool_is_not_an_int(v):
    p = valid_payload()
    p["count"] = True
    assert errors_of(v, p) == [("/count", "expected integer (int, 32-bit), got boolean")]


def test_bool_is_not_a_double(v):
    p = valid_payload()
    p["ratio"] = False
    assert errors_of(v, p) == [("/ratio", "expected one of [null, double], got boolean")]


def test_int_and_long_ranges(v):
    p = valid_payload()
    p["count"] = 2**31
    p["big"] = 2**63
    errs = errors_of(v, p)
    assert errs[0] == ("/count", "2147483648 is out of range for int (32-bit: -2147483648 to 2147483647)")
    assert errs[1][0] == "/big" and "out of range for long" in errs[1][1]
    p["count"], p["big"] = -(2**31), -(2**63)
    assert v(p) == []


def test_double_accepts_integers(v):
    p = valid_payload()
    p["ratio"] = 1
    assert v(p) == []


def test_missing_required_field(v):
    p = valid_payload()
    del p["session"]["started_at"]
    del p["event_id"]
    assert errors_of(v, p) == [
        ("/event_id", "required field is missing (string)"),
        ("/session/started_at", "required field is missing (long (timestamp-micros))"),
    ]


def test_null_for_a_non_null_field_with_default_is_an_error(v):
    p = valid_payload()
    p["big"] = None
    assert errors_of(v, p) == [("/big", "expected integer (long, 64-bit), got null")]


def test_enum_symbol_not_in_enum_suggests_the_closest(v):
    p = valid_payload()
    p["kind"] = "mesage"
    assert errors_of(v, p) == [
        (
            "/kind",
            '"mesage" is not a symbol of enum demo.Kind (allowed: message, feedback, session); '
            'did you mean "message"?',
        )
    ]


def test_fixed_needs_its_exact_length(v):
    p = valid_payload()
    p["digest"] = "0123456789abcde"
    assert errors_of(v, p) == [("/digest", "expected 16 bytes for fixed demo.Md5, got 15")]
    p["digest"] = "0123456789abcdef"
    assert v(p) == []


def test_bytes_are_strings_of_byte_characters():
    v = compile_validator({"type": "record", "name": "B", "fields": [{"name": "raw", "type": "bytes"}]})
    assert v({"raw": "\x00\xffabc"}) == []
    assert errors_of(v, {"raw": "snow ☃"}) == [
        ("/raw", "bytes string may only hold characters \\u0000-\\u00ff (one per byte)")
    ]
    assert errors_of(v, {"raw": 5}) == [("/raw", "expected string (bytes), got integer")]


def test_map_keys_must_be_strings(v):
    p = valid_payload()
    p["tags"] = {"ok": "x", 7: "y"}
    assert errors_of(v, p) == [("/tags/7", "map key must be a string, got integer")]


def test_map_value_errors_name_the_key(v):
    p = valid_payload()
    p["tags"] = {"a/b": 1}
    assert errors_of(v, p) == [("/tags/a~1b", "expected string, got integer")]


def test_nesting_deeper_than_the_schema_is_rejected(v):
    p = valid_payload()
    p["event_id"] = {"nested": {"deeper": ["x"]}}
    p["messages"][0]["text"] = [["a"]]
    assert errors_of(v, p) == [
        ("/event_id", "expected string, got object"),
        ("/messages/0/text", "expected string, got array"),
    ]


def test_every_error_is_reported(v):
    p = {
        "event_id": 1,
        "count": "3",
        "kind": "nope",
        "session": {"id": None, "started_at": 1.5},
        "messages": [{"text": "ok"}, {}, {"text": False}],
        "tags": [],
    }
    paths = [e.path for e in v(p)]
    assert paths == [
        "/event_id",
        "/count",
        "/kind",
        "/session/id",
        "/session/started_at",
        "/messages/1/text",
        "/messages/2/text",
        "/tags",
    ]


def test_root_must_be_an_object(v):
    assert errors_of(v, ["not", "an", "object"]) == [("/", "expected object demo.ChatEvent, got array")]
    assert errors_of(v, None) == [("/", "expected object demo.ChatEvent, got null")]


def test_union_of_records_reports_inside_the_closest_branch():
    v = compile_validator(
        {
            "type": "record",
            "name": "U",
            "fields": [
                {
                    "name": "who",
                    "type": [
                        "null",
                        {"type": "record", "name": "Person", "fields": [{"name": "name", "type": "string"}]},
                        {
                            "type": "record",
                            "name": "Bot",
                            "fields": [{"name": "bot_id", "type": "string"}, {"name": "x", "type": "int"}],
                        },
                    ],
                }
            ],
        }
    )
    assert v({"who": {"name": "Ada"}}) == []
    assert v({"who": {"bot_id": "b", "x": 1}}) == []
    assert errors_of(v, {"who": {"name": 3}}) == [("/who/name", "expected string, got integer")]
    assert errors_of(v, {"who": "Ada"}) == [
        ("/who", "expected one of [null, record Person, record Bot], got string")
    ]


def test_recursive_schema():
    v = compile_validator(
        {
            "type": "record",
            "name": "Node",
            "fields": [
                {"name": "value", "type": "int"},
                {"name": "next", "type": ["null", "Node"], "default": None},
            ],
        }
    )
    assert v({"value": 1, "next": {"value": 2, "next": {"value": 3}}}) == []
    assert errors_of(v, {"value": 1, "next": {"value": 2, "next": {"value": "3"}}}) == [
        ("/next/next/value", "expected integer (int, 32-bit), got string")
    ]
    deep = None
    for i in range(5000):
        deep = {"value": i, "next": deep}
    assert errors_of(v, deep) == [("/", "payload is nested too deeply to validate")]


def test_non_record_root_schemas():
    v = compile_validator({"type": "array", "items": "long"})
    assert v([1, 2]) == []
    assert errors_of(v, [1, "2"]) == [("/1", "expected integer (long, 64-bit), got string")]


def test_schema_given_as_json_text():
    v = compile_validator(json.dumps(SESSION_SCHEMA))
    assert v(valid_payload()) == []


@pytest.mark.parametrize(
    "schema,message",
    [
        (
            {"type": "record", "name": "R", "fields": [{"name": "a", "type": "strng"}]},
            "/fields/0/type: unknown type 'strng' (did you mean 'string'?)",
        ),
        ({"type": "record", "name": "R"}, ": record 'R' needs a 'fields' list"),
        ({"type": "enum", "name": "E", "symbols": ["a", "a"]}, ": enum 'E' repeats a symbol"),
        ({"type": "fixed", "name": "F", "size": -1}, ": fixed 'F' needs a non-negative integer 'size'"),
        (["null", ["string"]], "/1: a union may not contain another union"),
        (["string", "string"], "/1: union holds 'string' twice"),
        (
            {
                "type": "record",
                "name": "R",
                "fields": [{"name": "a", "type": "int"}, {"name": "a", "type": "int"}],
            },
            "/fields/1: field 'a' is defined twice",
        ),
        (42, ": a type must be a name, an object or a list, not integer"),
        ("{not json", "schema is not valid JSON"),
    ],
)
def test_invalid_schemas_raise_schema_error(schema, message):
    with pytest.raises(SchemaError) as exc:
        compile_validator(schema)
    assert message in str(exc.value)


def test_error_list_is_capped():
    v = compile_validator({"type": "array", "items": "int"})
    errs = v(["x"] * 1500)
    assert len(errs) == 1001
    assert errs[-1] == ValidationError("/", "… and 500 more errors")


def test_validator_is_compiled_code():
    v = compile_validator(SESSION_SCHEMA)
    assert "def " in v.source and "isinstance" not in v.source


# ---------------------------------------------------------------------------------------------
# Agreement with fastavro on random schemas and payloads
# ---------------------------------------------------------------------------------------------
#
# fastavro's validate() takes union values as plain values (it tries each branch), which is what
# natural JSON sends, so the two must agree on every payload made of JSON values. The random
# schemas leave out bytes/fixed (fastavro wants Python bytes there, JSON has only strings) and
# logical types (fastavro converts datetimes), and payloads never carry the "-type" key fastavro
# reserves.

_counter = itertools.count()
PRIMS = ["boolean", "int", "long", "float", "double", "string"]


@st.composite
def avro_types(draw, depth=0):
    choices = ["prim"] * 4 + (["enum", "array", "map", "record", "union"] if depth < 3 else ["enum"])
    kind = draw(st.sampled_from(choices))
    if kind == "prim":
        return draw(st.sampled_from(PRIMS))
    if kind == "enum":
        syms = draw(
            st.lists(
                st.sampled_from(["A", "B", "C", "D", "red", "green"]), min_size=1, max_size=4, unique=True
            )
        )
        return {"type": "enum", "name": f"E{next(_counter)}", "symbols": syms}
    if kind == "array":
        return {"type": "array", "items": draw(avro_types(depth + 1))}
    if kind == "map":
        return {"type": "map", "values": draw(avro_types(depth + 1))}
    if kind == "record":
        return draw(records(depth + 1))
    # union: distinct branches, never a union inside
    branches = []
    keys = set()
    for b in draw(st.lists(avro_types(depth + 1), min_size=1, max_size=4)):
        if isinstance(b, list):
            continue
        key = b if isinstance(b, str) else (b.get("name") or b["type"])
        if key in keys:
            continue
        keys.add(key)
        branches.append(b)
    if draw(st.booleans()):
        branches.insert(0, "null")
    return branches or ["null"]


@st.composite
def records(draw, depth=0):
    names = draw(
        st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f", "g"]), min_size=0, max_size=5, unique=True)
    )
    fields = []
    for n in names:
        t = draw(avro_types(depth))
        f = {"name": n, "type": t}
        if isinstance(t, list) and t[0] == "null" and draw(st.booleans()):
            f["default"] = None
        elif t in ("string", "int", "long", "boolean", "double") and draw(st.booleans()):
            f["default"] = {"string": "", "int": 0, "long": 0, "boolean": False, "double": 0.0}[t]
        fields.append(f)
    return {"type": "record", "name": f"R{next(_counter)}", "fields": fields}


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1]),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.sampled_from(["A", "B", "red", "x"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text("abcxyz", max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)


def _named(schema):
    out = {}

    def walk(s):
        if isinstance(s, list):
            for b in s:
                walk(b)
        elif isinstance(s, dict):
            if "name" in s:
                out[s["name"]] = s
            for k in ("items", "values"):
                if k in s:
                    walk(s[k])
            for f in s.get("fields", []):
                walk(f["type"])

    walk(schema)
    return out


@st.composite
def payload_for(draw, schema):
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)  # anything at all
    if isinstance(schema, list):
        return draw(payload_for(draw(st.sampled_from(schema))))
    if isinstance(schema, str):
        return draw(
            {
                "null": st.none(),
                "boolean": st.booleans(),
                "int": st.integers(-(2**31) - 2, 2**31 + 1),
                "long": st.one_of(st.integers(-(2**31), 2**31), st.integers(-(2**63) - 2, 2**63 + 1)),
                "float": st.one_of(st.floats(allow_nan=False), st.integers(-5, 5)),
                "double": st.one_of(st.floats(allow_nan=False), st.integers(-5, 5)),
                "string": st.text(max_size=4),
            }[schema]
        )
    t = schema["type"]
    if t == "enum":
        return draw(st.one_of(st.sampled_from(schema["symbols"]), st.sampled_from(["A", "zzz", "Red"])))
    if t == "array":
        return draw(st.lists(payload_for(schema["items"]), max_size=3))
    if t == "map":
        return draw(st.dictionaries(st.text("abc", max_size=2), payload_for(schema["values"]), max_size=3))
    out = {}
    for f in schema["fields"]:
        if draw(st.integers(0, 5)) == 0:
            continue  # leave it out
        out[f["name"]] = draw(payload_for(f["type"]))
    if draw(st.integers(0, 4)) == 0:
        out["extra_" + draw(st.text("xyz", min_size=1, max_size=2))] = draw(json_values)
    return out


@st.composite
def schema_and_payloads(draw):
    schema = draw(records())
    payloads = draw(st.lists(payload_for(schema), min_size=1, max_size=6))
    return schema, payloads


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(schema_and_payloads())
def test_agrees_with_fastavro_validate(data):
    schema, payloads = data
    parsed = fastavro.parse_schema(json.loads(json.dumps(schema)))
    v = compile_validator(schema)
    for p in payloads:
        ours = v(p)
        theirs = fastavro_validate(p, parsed, raise_errors=False)
        assert (ours == []) == theirs, (schema, p, ours)
        assert v.is_valid(p) == theirs
        for e in ours:
            assert e.path.startswith("/") and e.message
