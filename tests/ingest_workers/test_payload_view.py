"""The quarantined payload's lines and the paths an error names (pure: literal inputs, no database)."""

from __future__ import annotations

import orjson

from ingest_workers.payload_view import failing_pointers, json_lines

PAYLOAD = {"type": "message", "message": {"role": "robot", "text": "‹masked string · 5 chars›"},
           "items": [1, {"sku": None}], "context": {}, "a/b~c": [], "score": 0.5}


def test_the_lines_are_the_indented_json_a_reader_knows():
    assert "\n".join(line.text for line in json_lines(PAYLOAD)) == orjson.dumps(
        PAYLOAD, option=orjson.OPT_INDENT_2).decode()
    assert json_lines("‹masked string · 9 chars›")[0].text == '"‹masked string · 9 chars›"'


def test_each_line_knows_its_pointer_and_a_failing_subtree_is_highlighted_whole():
    lines = json_lines(PAYLOAD, ["/message", "/items/1/sku", "/a~1b~0c"])
    by_text = {line.text.strip(): line for line in lines}
    assert by_text['"role": "robot",'].pointer == "/message/role"
    assert [line.text.strip() for line in lines if line.failing] == [
        '"message": {', '"role": "robot",', '"text": "‹masked string · 5 chars›"', "},", '"sku": null',
        '"a/b~c": [],']
    assert not by_text['"type": "message",'].failing


def test_a_missing_field_is_flagged_on_its_nearest_parent_once():
    lines = json_lines(PAYLOAD, ["/message/model", "/message/format", "/request/requestId"])
    flagged = [(line.text.strip(), line.missing) for line in lines if line.missing]
    assert flagged == [("{", "/request/requestId"), ('"message": {', "/message/model, /message/format")]
    assert not any(line.failing for line in lines)


def test_the_root_pointer_marks_only_the_outer_braces():
    lines = json_lines(PAYLOAD, ["/"])
    assert [line.text for line in lines if line.failing] == ["{", "}"]


def test_failing_pointers_come_from_the_path_and_every_error_of_the_detail():
    detail = ('3 schema errors against web-chat.chat_event v2: /message/role: "robot" is not a symbol of enum '
              'MessageRole (allowed: user, assistant); /traits/email: invalid value "a: b"; /message/role: again')
    assert failing_pointers("/message/role", detail) == ["/message/role", "/traits/email"]
    assert failing_pointers(None, "event_time: 'soon' is not an ISO-8601 timestamp") == []
    assert failing_pointers("/timestamp", None) == ["/timestamp"]
    assert failing_pointers("", "Matches none (closest: x). 1 schema error against x v1: /: not an object") == ["/"]
