"""Pure helpers behind the portal pages: the reviewer's line diff and readable Avro types."""

from __future__ import annotations

from contracts.avro_display import avro_type_label
from contracts.line_diff import json_line_diff, side_by_side_line_diff, top_level_changes


def test_an_added_field_shows_as_inserted_lines_on_the_right():
    old = {"type": "record", "name": "E", "fields": [{"name": "a", "type": "string"}]}
    new = {"type": "record", "name": "E", "fields": [
        {"name": "a", "type": "string"}, {"name": "b", "type": ["null", "long"], "default": None}]}
    diff = json_line_diff(old, new)
    assert diff.changed and diff.removed <= 1 and diff.added >= 5
    inserted = [row for row in diff.rows if row.kind in ("insert", "replace")]
    assert any('"b"' in row.right_text for row in inserted)
    assert all(row.left_text == "" for row in diff.rows if row.kind == "insert")


def test_long_unchanged_stretches_fold_to_one_row_keeping_context():
    old = "\n".join(f"line {n}" for n in range(40))
    new = old.replace("line 20", "line twenty")
    diff = side_by_side_line_diff(old, new, context=3)
    kinds = [row.kind for row in diff.rows]
    assert kinds.count("fold") == 2 and kinds.count("replace") == 1
    folded = sum(row.folded_lines for row in diff.rows if row.kind == "fold")
    shown_equal = kinds.count("equal")
    assert folded + shown_equal + 1 == 40
    replaced = next(row for row in diff.rows if row.kind == "replace")
    assert (replaced.left_number, replaced.left_text, replaced.right_text) == (21, "line 20", "line twenty")


def test_no_previous_version_means_everything_is_added():
    diff = json_line_diff(None, {"a": 1})
    assert diff.removed == 0 and all(row.kind == "insert" for row in diff.rows)


def test_audit_state_changes_key_by_key():
    changes = top_level_changes({"a": 1, "b": 2, "gone": True}, {"a": 1, "b": 3, "new": "x"})
    assert [(c.key, c.kind) for c in changes] == [("a", "same"), ("b", "changed"), ("gone", "removed"),
                                                  ("new", "added")]
    assert top_level_changes(None, {"a": 1})[0].kind == "added"


def test_avro_types_read_like_sentences():
    assert avro_type_label("string") == "string"
    assert avro_type_label(["null", "string"]) == "optional string"
    assert avro_type_label(["null", "string", "long"]) == "optional string | long"
    assert avro_type_label({"type": "long", "logicalType": "timestamp-micros"}).startswith("timestamp (µs")
    assert avro_type_label(["null", {"type": "string", "logicalType": "uuid"}]) == "optional UUID"
    enum = {"type": "enum", "name": "Role", "symbols": ["user", "assistant"]}
    assert avro_type_label(enum) == "enum: user, assistant"
    assert avro_type_label({"type": "array", "items": "string"}) == "array of string"
    assert avro_type_label({"type": "map", "values": "long"}) == "map of string → long"
    assert avro_type_label({"type": "record", "name": "Identifiers", "fields": []}) == "record Identifiers"
    decimal = {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 4}
    assert avro_type_label(decimal) == "decimal(10, 4)"


def test_schemas_are_shown_name_and_type_first_without_changing_them():
    from contracts.avro_display import avro_reading_order

    stored = {"fields": [{"type": "string", "name": "a"},
                         {"default": None, "name": "r", "type": ["null", {"symbols": ["x"], "type": "enum",
                                                                        "name": "R"}]}],
              "name": "E", "type": "record"}
    shown = avro_reading_order(stored)
    assert shown == stored
    assert list(shown) == ["type", "name", "fields"]
    assert list(shown["fields"][0]) == ["name", "type"]
    assert list(shown["fields"][1]) == ["name", "type", "default"]
    assert list(shown["fields"][1]["type"][1]) == ["type", "name", "symbols"]


def test_inline_markdown_turns_code_bold_and_links_into_tags_after_escaping():
    from contracts.inline_markdown import inline_markdown_html

    assert inline_markdown_html("Every web widget event; `type` says which.") == (
        "Every web widget event; <code>type</code> says which.")
    assert inline_markdown_html("`<b>x</b>` and **bold**") == (
        "<code>&lt;b&gt;x&lt;/b&gt;</code> and <strong>bold</strong>")
    assert inline_markdown_html("[a](/contracts/)") == '<a href="/contracts/" rel="nofollow noopener noreferrer">a</a>'
    for hostile in ('<script>alert(1)</script>', '<img src=x onerror=alert(1)>', '[x](javascript:alert(1))',
                    '[x](//evil.example/)', '[x](https://a.example/" onclick="alert(1))', '**<svg onload=alert(1)>**'):
        rendered = inline_markdown_html(hostile)
        assert "<script" not in rendered and "<img" not in rendered and "<svg" not in rendered
        assert 'href="javascript:' not in rendered
        assert 'href="//' not in rendered and "onclick=\"" not in rendered


def test_schema_field_rows_flatten_sub_records_with_defaults_docs_and_personal_flags():
    from contracts.avro_display import schema_field_rows

    schema = {"type": "record", "name": "E", "fields": [
        {"name": "id", "type": "string", "doc": "The id."},
        {"name": "message", "type": ["null", {"type": "record", "name": "M", "fields": [
            {"name": "text", "type": "string"}]}], "default": None},
        {"name": "email", "type": "string", "x-personal": True},
    ]}
    rows = schema_field_rows(schema, personal_paths={"message.text"})
    assert [(r["path"], r["type"], r["has_default"], r["personal"]) for r in rows] == [
        ("id", "string", False, False), ("message", "optional record M", True, False),
        ("message.text", "string", False, True), ("email", "string", False, True)]
    assert rows[0]["doc"] == "The id." and rows[2]["parent"] == "message." and rows[2]["depth"] == 1
