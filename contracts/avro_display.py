"""Avro types as short readable labels for people ("optional string", "timestamp (µs)"). Pure."""

from __future__ import annotations

from typing import Any

LOGICAL_TYPE_LABELS = {
    "timestamp-micros": "timestamp (µs since epoch, UTC)",
    "timestamp-millis": "timestamp (ms since epoch, UTC)",
    "local-timestamp-micros": "local timestamp (µs)",
    "local-timestamp-millis": "local timestamp (ms)",
    "time-micros": "time of day (µs)",
    "time-millis": "time of day (ms)",
    "date": "date (days since epoch)",
    "uuid": "UUID",
    "decimal": "decimal",
    "duration": "duration",
}


def avro_type_label(avro_type: Any) -> str:
    """A one-line description of an Avro type; unions with null read as "optional …"."""
    if isinstance(avro_type, str):
        return avro_type
    if isinstance(avro_type, list):
        return _union_label(avro_type)
    if isinstance(avro_type, dict):
        return _complex_label(avro_type)
    return str(avro_type)


def _union_label(branches: list) -> str:
    others = [b for b in branches if b != "null"]
    inner = " | ".join(avro_type_label(b) for b in others) or "null"
    if len(others) < len(branches):
        return f"optional {inner}"
    return inner


def _complex_label(schema: dict) -> str:
    logical = schema.get("logicalType")
    if logical == "decimal":
        return f"decimal({schema.get('precision', '?')}, {schema.get('scale', 0)})"
    if logical:
        return LOGICAL_TYPE_LABELS.get(logical, f"{logical} ({avro_type_label(schema.get('type'))})")
    kind = schema.get("type")
    if kind == "array":
        return f"array of {avro_type_label(schema.get('items'))}"
    if kind == "map":
        return f"map of string → {avro_type_label(schema.get('values'))}"
    if kind == "enum":
        symbols = schema.get("symbols") or []
        return f"enum: {', '.join(symbols)}"
    if kind == "record":
        return f"record {schema.get('name', '')}".strip()
    if kind == "fixed":
        return f"fixed ({schema.get('size', '?')} bytes)"
    return avro_type_label(kind)


# Keys people expect first when reading a schema; the registry stores schemas with sorted keys
# ("fields" before "name"), which reads backwards. Reordering dict keys never changes an Avro schema.
_SCHEMA_KEY_ORDER = ("type", "name", "namespace", "aliases", "doc", "logicalType", "precision", "scale",
                     "symbols", "default", "order", "items", "values", "size", "fields")


def avro_reading_order(schema: Any) -> Any:
    """The same schema with each object's keys in reading order (name and type first, fields last)."""
    if isinstance(schema, list):
        return [avro_reading_order(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    rank = {key: index for index, key in enumerate(_SCHEMA_KEY_ORDER)}
    if "name" in schema and schema.get("type") not in ("record", "error", "enum", "fixed"):
        # A record field (named types carry their kind in "type"): its name reads best before its type.
        rank = {**rank, "name": -2, "type": -1}
    ordered = sorted(schema, key=lambda key: (rank.get(key, len(rank)), key))
    return {key: avro_reading_order(schema[key]) for key in ordered}


def _record_inside(avro_type: Any) -> dict | None:
    """The record a field holds directly, as an optional value, or as array items/map values (else None)."""
    if isinstance(avro_type, list):
        records = [branch for branch in avro_type if branch != "null"]
        return _record_inside(records[0]) if len(records) == 1 else None
    if isinstance(avro_type, dict):
        kind = avro_type.get("type")
        if kind == "record" and isinstance(avro_type.get("fields"), list):
            return avro_type
        if kind in ("array", "map"):
            return _record_inside(avro_type.get("items" if kind == "array" else "values"))
    return None


def schema_field_rows(schema: Any, *, personal_paths: frozenset[str] | set[str] = frozenset(),
                      prefix: str = "", depth: int = 0) -> list[dict]:
    """A record schema's fields as table rows, sub-records' fields after their parent (``message.text``).

    Each row: ``path``, ``parent`` (``message.`` or empty), ``name``, ``depth``, ``type`` (readable label),
    ``has_default``, ``default``, ``doc``
    and ``personal`` (the dotted path is in ``personal_paths``, where the mapping feeds personal data, or
    the field says ``"x-personal": true`` as the canonical model's do).
    A record referred to by name is not expanded again (it is described where it is defined)."""
    rows: list[dict] = []
    fields = schema.get("fields") if isinstance(schema, dict) else None
    for field in fields if isinstance(fields, list) else ():
        if not isinstance(field, dict) or not isinstance(field.get("name"), str):
            continue
        path = f"{prefix}{field['name']}"
        rows.append({"path": path, "parent": prefix, "name": field["name"], "depth": depth,
                     "type": avro_type_label(field.get("type")),
                     "has_default": "default" in field, "default": field.get("default"),
                     "doc": field.get("doc") or "",
                     "personal": path in personal_paths or field.get("x-personal") is True})
        inner = _record_inside(field.get("type"))
        if inner is not None and depth < 8:
            rows.extend(schema_field_rows(inner, personal_paths=personal_paths, prefix=f"{path}.", depth=depth + 1))
    return rows
