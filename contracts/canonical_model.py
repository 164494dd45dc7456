"""The canonical event model (v1), loaded from the Avro schemas in ``contracts/canonical/v1``.

Pure: no Django, no network, no clock. The ``.avsc`` files are the source of truth; this module
reads them once and exposes typed, frozen views for the portal's model browser, the mapping
compiler and the schema registry (``canonical_avro_schema()`` is the ``canonical`` subject).

Shape of a canonical event as the mapping produces it (a plain dict, JSON-ready)::

    {
      "event_id": "…uuid…", "event_type": "message.sent", "event_time": <µs>, "received_at": <µs>,
      "ingested_at": <µs|None>, "platform": "slack", "product": "…", "source_id": "…",
      "contract": {"name": "slack-bot.events", "version": 1}, "canonical_version": "1.0.0",
      "identifiers": {"person_id": None, "anonymous_id": …, "platform_user_id": …, "device_id": …,
                      "tenant_id": …, "email_sha256": …},
      "session_id": …, "conversation_id": …, "message_id": …, "parent_event_id": …,
      "attributes": {…every field of the event type's record…},
      "platform_metadata": {…object…},
      "lineage": {"raw_archive_uri": None, …, "contract_version": 1, "normalizer_version": "…"},
    }

In Avro (``to_avro_datum``) ``platform_metadata`` becomes the JSON text of that object and
``attributes`` is the branch of a union of the per-type records.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

CANONICAL_VERSION = "1.0.0"
CANONICAL_MAJOR = 1
CANONICAL_NAMESPACE = "chatorbit.canonical.v1"
CANONICAL_RECORD_NAME = f"{CANONICAL_NAMESPACE}.CanonicalEvent"
CANONICAL_SUBJECT = "canonical"
SCHEMA_DIR = Path(__file__).resolve().parent / "canonical" / "v1"

#: Event types in the order the portal lists them.
EVENT_TYPES: tuple[str, ...] = (
    "user.identified",
    "session.started",
    "session.ended",
    "conversation.started",
    "conversation.ended",
    "message.sent",
    "tool_call.started",
    "tool_call.completed",
    "feedback.submitted",
)
PLATFORMS: tuple[str, ...] = ("web", "ios", "android", "slack", "voice", "api")
FILLED_BY = ("mapping", "pipeline")

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


@dataclass(frozen=True)
class CanonicalField:
    """One field of the canonical model.

    ``avro_type`` is the field's Avro type exactly as written in the ``.avsc`` file (treat it as
    read-only). ``required`` means a non-null type without a default. ``path`` is the dotted
    name a mapping targets (``identifiers.device_id``; a type's field is just ``role``).
    ``fields`` holds the sub-fields of a record-typed field (``identifiers``, ``lineage``…).
    """

    name: str
    avro_type: Any = field(compare=False, hash=False)
    doc: str
    required: bool
    filled_by: str
    platforms: tuple[str, ...]
    personal: bool
    otel: str | None
    path: str = ""
    fields: tuple[CanonicalField, ...] = ()
    has_default: bool = False
    default: Any = field(default=None, compare=False, hash=False)
    value_range: tuple[float, float] | None = None

    @property
    def nullable(self) -> bool:
        return isinstance(self.avro_type, list) and "null" in self.avro_type

    @property
    def base_type(self) -> Any:
        """The Avro type without its ``null`` branch (the type itself when not a union)."""
        t = self.avro_type
        if isinstance(t, list):
            rest = [b for b in t if b != "null"]
            return rest[0] if len(rest) == 1 else rest
        return t

    @property
    def logical_type(self) -> str | None:
        b = self.base_type
        return b.get("logicalType") if isinstance(b, dict) else None

    @property
    def symbols(self) -> tuple[str, ...] | None:
        b = self.base_type
        if isinstance(b, dict) and b.get("type") == "enum":
            return tuple(b["symbols"])
        return None

    @property
    def type_label(self) -> str:
        """Short human label: ``string``, ``long (timestamp-micros)``, ``enum MessageRole``,
        ``record Identifiers``; ending in ``?`` when nullable."""
        b = self.base_type
        if isinstance(b, str):
            label = b
        elif isinstance(b, dict):
            t = b.get("type")
            if b.get("logicalType"):
                label = f"{t} ({b['logicalType']})"
            elif t in ("enum", "record", "fixed"):
                label = f"{t} {b.get('name')}"
            else:
                label = str(t)
        else:
            label = " | ".join(str(x) for x in b)
        return label + ("?" if self.nullable else "")

    def child(self, name: str) -> CanonicalField | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None


@dataclass(frozen=True)
class EventType:
    name: str
    doc: str
    fields: tuple[CanonicalField, ...]
    record_name: str = ""
    schema: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def field(self, name: str) -> CanonicalField | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None


@dataclass(frozen=True)
class CanonicalModel:
    version: str
    envelope: tuple[CanonicalField, ...]
    event_types: dict[str, EventType] = field(hash=False)
    envelope_schema: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def envelope_field(self, dotted: str) -> CanonicalField | None:
        """An envelope field by dotted path (``session_id``, ``identifiers.device_id``)."""
        parts = dotted.split(".")
        fields = self.envelope
        found = None
        for p in parts:
            found = next((f for f in fields if f.name == p), None)
            if found is None:
                return None
            fields = found.fields
        return found

    def target(self, event_type: str, dotted: str) -> CanonicalField | None:
        """The field a mapping target names for ``event_type``: an envelope field or a field of the type."""
        f = self.envelope_field(dotted)
        if f is not None:
            return f
        et = self.event_types.get(event_type)
        if et is None or "." in dotted:
            return None
        return et.field(dotted)

    def leaf_targets(self, event_type: str) -> list[CanonicalField]:
        """Every non-record field an event of this type carries (envelope leaves first)."""
        out: list[CanonicalField] = []

        def walk(fields):
            for f in fields:
                if f.fields:
                    walk(f.fields)
                else:
                    out.append(f)

        walk(self.envelope)
        et = self.event_types.get(event_type)
        if et:
            out.extend(et.fields)
        return out


def _load_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _field_from_avro(raw: dict, prefix: str = "") -> CanonicalField:
    name = raw["name"]
    t = raw["type"]
    nullable = isinstance(t, list) and "null" in t
    has_default = "default" in raw
    base = [b for b in t if b != "null"][0] if isinstance(t, list) else t
    children: tuple[CanonicalField, ...] = ()
    path = f"{prefix}{name}"
    if isinstance(base, dict) and base.get("type") == "record":
        children = tuple(_field_from_avro(c, prefix=f"{path}.") for c in base["fields"])
    vr = raw.get("x-range")
    return CanonicalField(
        name=name,
        avro_type=t,
        doc=raw.get("doc", ""),
        required=(not nullable) and not has_default,
        filled_by=raw.get("x-filled-by", "mapping"),
        platforms=tuple(raw.get("x-platforms", PLATFORMS)),
        personal=bool(raw.get("x-personal", False)),
        otel=raw.get("x-otel"),
        path=path,
        fields=children,
        has_default=has_default,
        default=raw.get("default"),
        value_range=(float(vr[0]), float(vr[1])) if vr else None,
    )


@functools.lru_cache(maxsize=1)
def load_canonical_model() -> CanonicalModel:
    """Read the v1 ``.avsc`` files once (cached for the process)."""
    env = _load_json(SCHEMA_DIR / "envelope.avsc")
    version = env.get("x-canonical-version", CANONICAL_VERSION)
    envelope = tuple(_field_from_avro(f) for f in env["fields"])
    types: dict[str, EventType] = {}
    for name in EVENT_TYPES:
        sch = _load_json(SCHEMA_DIR / f"{name}.avsc")
        if sch.get("x-event-type") != name:
            raise ValueError(f"{name}.avsc declares x-event-type {sch.get('x-event-type')!r}")
        types[name] = EventType(
            name=name,
            doc=sch.get("doc", ""),
            fields=tuple(_field_from_avro(f) for f in sch["fields"]),
            record_name=f"{sch.get('namespace', CANONICAL_NAMESPACE)}.{sch['name']}",
            schema=sch,
        )
    return CanonicalModel(version=version, envelope=envelope, event_types=types, envelope_schema=env)


@functools.lru_cache(maxsize=1)
def _canonical_schema_bytes() -> bytes:
    model = load_canonical_model()
    env = model.envelope_schema
    fields = copy.deepcopy(env["fields"])
    branches = [copy.deepcopy(model.event_types[n].schema) for n in EVENT_TYPES]
    attributes = {
        "name": "attributes",
        "type": branches,
        "doc": "Fields specific to the event type: the branch of this union whose record matches event_type.",
        "x-platforms": list(PLATFORMS),
        "x-personal": True,
        "x-filled-by": "mapping",
    }
    # attributes sits right after the identifying fields, before platform_metadata and lineage
    idx = next(i for i, f in enumerate(fields) if f["name"] == "platform_metadata")
    fields.insert(idx, attributes)
    schema = {
        "type": "record",
        "name": "CanonicalEvent",
        "namespace": CANONICAL_NAMESPACE,
        "doc": f"A ChatOrbit canonical event (model v{model.version}): the envelope every event carries "
        "plus the attributes of its type.",
        "x-canonical-version": model.version,
        "fields": fields,
    }
    return orjson.dumps(schema)


def canonical_avro_schema() -> dict:
    """The whole model as one Avro record (a fresh copy each call): envelope fields plus an
    ``attributes`` union of the nine per-type records. Stored by the registry as subject ``canonical``."""
    return orjson.loads(_canonical_schema_bytes())


@functools.lru_cache(maxsize=1)
def _record_names() -> dict[str, str]:
    m = load_canonical_model()
    return {n: m.event_types[n].record_name for n in EVENT_TYPES}


def to_avro_datum(event: dict) -> dict:
    """Turn a canonical event dict into a datum fastavro can write with ``canonical_avro_schema()``:
    ``platform_metadata`` becomes JSON text and ``attributes`` is tagged with its union branch."""
    out = dict(event)
    md = event.get("platform_metadata")
    if not isinstance(md, str):
        out["platform_metadata"] = orjson.dumps(
            md if md is not None else {}, option=orjson.OPT_SORT_KEYS
        ).decode()
    rec = _record_names().get(event.get("event_type"))
    if rec is not None:
        out["attributes"] = (rec, event.get("attributes") or {})
    return out


def to_natural_json(event: dict) -> dict:
    """The event in natural JSON matching ``canonical_avro_schema()`` (platform_metadata as JSON text)."""
    md = event.get("platform_metadata")
    if isinstance(md, str):
        return event
    out = dict(event)
    out["platform_metadata"] = orjson.dumps(
        md if md is not None else {}, option=orjson.OPT_SORT_KEYS
    ).decode()
    return out


__all__ = [
    "CANONICAL_VERSION",
    "CANONICAL_NAMESPACE",
    "CANONICAL_SUBJECT",
    "EVENT_TYPES",
    "PLATFORMS",
    "CanonicalField",
    "EventType",
    "CanonicalModel",
    "load_canonical_model",
    "canonical_avro_schema",
    "to_avro_datum",
    "to_natural_json",
]
