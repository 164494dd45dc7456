"""Declarative mapping from a source payload to canonical events (spec format: docs/mapping.md).

* ``mapping_check(schema, mapping)`` checks a hand-written spec against the source's Avro schema and
  the canonical model and returns every problem as ``MappingError(path, message)`` with a JSON
  pointer into the spec. It never raises, whatever it is given.
* ``compile_mapping(schema, mapping)`` checks, then generates one specialised Python function for
  the spec (path getters, transforms, event_id derivation and platform_metadata all resolved at
  compile time) and returns a ``CompiledMapping``: ``cm(payload, ctx) -> [canonical event dict]``.
  It expects a payload that passed the contract's validator; a per-payload problem (a timestamp
  that does not parse, a required field that is null) raises ``MappingFailure(path, message)``.
* ``preview(schema, mapping, payload, ctx)`` validates, checks and maps one payload and collects
  every error of every stage; it never raises.

Pure: no Django, no network, no clock (times come in through ``SourceContext``).
"""

from __future__ import annotations

import datetime as _dt
import difflib
import hashlib
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

import orjson

from .canonical_model import (
    EVENT_TYPES,
    CanonicalField,
    CanonicalModel,
    canonical_avro_schema,
    load_canonical_model,
    to_natural_json,
)
from .validation import (
    LONG_MAX,
    LONG_MIN,
    Node,
    SchemaError,
    compile_validator,
    json_type_name,
    parse_avro_schema,
)

__all__ = [
    "MappingError",
    "MappingSpecError",
    "MappingFailure",
    "SourceContext",
    "PreviewResult",
    "CompiledMapping",
    "mapping_check",
    "compile_mapping",
    "preview",
    "derive_event_id",
    "parse_path",
    "TRANSFORMS",
    "NORMALIZER_VERSION",
    "EVENT_ID_NAMESPACE",
]

NORMALIZER_VERSION = "chatorbit-mapping/1.0.0"
SPEC_FORMAT = 1
#: UUIDv5 namespace of event ids (uuid5(NAMESPACE_URL, "https://chatorbit.io/ns/canonical-event-id"))
EVENT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://chatorbit.io/ns/canonical-event-id")
_NS_BYTES = EVENT_ID_NAMESPACE.bytes
MAX_DEPTH = 16  # nesting of first/not/all/any in a spec
MAX_PATH_SEGMENTS = 32


# =============================================================================================
# Public types
# =============================================================================================


@dataclass(frozen=True)
class MappingError:
    path: str  # JSON pointer into the mapping spec, e.g. "/events/0/fields/session_id"
    message: str


class MappingSpecError(ValueError):
    def __init__(self, errors: list[MappingError]):
        self.errors = list(errors)
        first = "; ".join(f"{e.path}: {e.message}" for e in self.errors[:3])
        more = f" (+{len(self.errors) - 3} more)" if len(self.errors) > 3 else ""
        super().__init__(f"invalid mapping spec: {first}{more}")


class MappingFailure(Exception):
    """A payload could not be mapped (path: JSON pointer into the payload)."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


@dataclass(frozen=True, slots=True)
class SourceContext:
    #: the portal's id of the source, copied into the event's ``source_id``
    source_id: str
    #: the source's unique, immutable name: event ids are namespaced by it (see derive_event_id)
    source_name: str
    platform: str
    product: str | None
    contract_name: str
    contract_version: int
    received_at_micros: int
    #: set by the ingest worker when it normalizes; None in previews
    ingested_at_micros: int | None = None


@dataclass(frozen=True)
class PreviewResult:
    events: list[dict]
    errors: list[dict]  # {"stage": "schema"|"mapping"|"payload", "path": str, "message": str}


# =============================================================================================
# Paths
# =============================================================================================

_SEG_RE = re.compile(r'([^.\[\]"\']+)|\[(-?\d+)\]|\[\"((?:[^"\\]|\\.)*)\"\]|\[\'((?:[^\'\\]|\\.)*)\'\]')


def parse_path(text: Any) -> tuple[tuple[str, Any], ...]:
    """``event.user``, ``messages[0].text``, ``headers["x.y"]`` → (("key","event"),("key","user")) …

    Raises ``ValueError`` with a readable message for malformed paths.
    """
    if not isinstance(text, str):
        raise ValueError(f"a path must be a string, not {json_type_name(text)}")
    if not text:
        raise ValueError("empty path")
    segs: list[tuple[str, Any]] = []
    i, n = 0, len(text)
    while i < n:
        if segs and text[i] == ".":
            i += 1
            if i == n:
                raise ValueError(f"path {text!r} ends with '.'")
            if text[i] in ".[":
                raise ValueError(f"empty segment at position {i} in {text!r}")
        elif segs and text[i] != "[":
            raise ValueError(f"expected '.' or '[' at position {i} in {text!r}")
        i = _path_segment(text, i, segs)
        if len(segs) > MAX_PATH_SEGMENTS:
            raise ValueError(f"path {text[:40]!r}… is deeper than {MAX_PATH_SEGMENTS} segments")
    return tuple(segs)


def _path_segment(text: str, i: int, segs: list) -> int:
    """Read one segment of a path at ``i`` into ``segs``; returns where the next one starts."""
    m = _SEG_RE.match(text, i)
    if not m:
        raise ValueError(f'cannot read {text!r} at position {i} (use name, [index] or ["key"])')
    if m.group(1) is not None:
        segs.append(("key", m.group(1)))
    elif m.group(2) is not None:
        if not segs:
            raise ValueError(f"path {text!r} cannot start with an index")
        segs.append(("index", int(m.group(2))))
    else:
        raw = m.group(3) if m.group(3) is not None else m.group(4)
        segs.append(("key", re.sub(r"\\(.)", r"\1", raw)))
    return m.end()


def _pointer(segs) -> str:
    if not segs:
        return "/"
    return "".join("/" + str(v).replace("~", "~0").replace("/", "~1") for _, v in segs)


def _tok(x: Any) -> str:
    return str(x).replace("~", "~0").replace("/", "~1")


# =============================================================================================
# Runtime helpers (used by generated code)
# =============================================================================================


class _TF(Exception):
    """A transform could not convert a value."""


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_ONE_US = _dt.timedelta(microseconds=1)
_TS_MIN = -2208988800_000000  # 1900-01-01
_TS_MAX = 10413792000_000000  # 2300-01-01
_DEC_RE = re.compile(r"^\s*([+-]?)(\d+)(?:\.(\d*))?\s*$")
_INT_RE = re.compile(r"^\s*[+-]?\d+\s*$")


def _check_ts(us: int, raw: Any) -> int:
    if _TS_MIN <= us <= _TS_MAX:
        return us
    raise _TF(f"timestamp {raw!r} is outside 1900-2300 (wrong unit?)")


_POW10 = tuple(10**i for i in range(19))


def _dec_scaled(s: str, digits: int) -> int:
    """Decimal text scaled by 10**digits, exactly (``"1700000000.123456"``, 6 → 1700000000123456)."""
    a, _, b = s.partition(".")
    if a.isdigit() and a.isascii() and len(b) <= digits and (not b or (b.isdigit() and b.isascii())):
        return int(a) * _POW10[digits] + (int(b) * _POW10[digits - len(b)] if b else 0)
    m = _DEC_RE.match(s)
    if m and (m.group(3) is None or len(m.group(3)) <= digits):
        frac = (m.group(3) or "").ljust(digits, "0")
        v = int(m.group(2)) * 10**digits + (int(frac) if frac else 0)
        return -v if m.group(1) == "-" else v
    try:
        d = Decimal(s.strip())
    except InvalidOperation:
        raise _TF(f"{s!r} is not a number") from None
    if not d.is_finite():
        raise _TF(f"{s!r} is not a finite number")
    return int((d * (10**digits)).to_integral_value(ROUND_HALF_EVEN))


def _num_in(v: Any, what: str) -> None:
    raise _TF(f"{what} expects a number or numeric string, got {json_type_name(v)}")


def _t_epoch_seconds(v: Any) -> int:
    c = v.__class__
    if c is int:
        return _check_ts(v * 1_000_000, v)
    if c is str:
        return _check_ts(_dec_scaled(v, 6), v)
    if c is float:
        if not math.isfinite(v):
            raise _TF(f"{v!r} is not a finite number")
        return _check_ts(round(v * 1e6), v)
    _num_in(v, "epoch_seconds")


def _t_epoch_millis(v: Any) -> int:
    c = v.__class__
    if c is int:
        return _check_ts(v * 1000, v)
    if c is str:
        return _check_ts(_dec_scaled(v, 3), v)
    if c is float:
        if not math.isfinite(v):
            raise _TF(f"{v!r} is not a finite number")
        return _check_ts(round(v * 1e3), v)
    _num_in(v, "epoch_millis")


def _t_epoch_micros(v: Any) -> int:
    c = v.__class__
    if c is int:
        return _check_ts(v, v)
    if c is str:
        return _check_ts(_dec_scaled(v, 0), v)
    if c is float:
        if not math.isfinite(v):
            raise _TF(f"{v!r} is not a finite number")
        return _check_ts(round(v), v)
    _num_in(v, "epoch_micros")


def _t_iso8601(v: Any) -> int:
    if v.__class__ is not str:
        raise _TF(f"iso8601 expects a string, got {json_type_name(v)}")
    try:
        d = _dt.datetime.fromisoformat(v)
    except ValueError:
        s = v.strip()
        if s.endswith(("z", "Z")):
            s = s[:-1] + "+00:00"
        try:
            d = _dt.datetime.fromisoformat(s)
        except ValueError:
            raise _TF(f"{v!r} is not an ISO-8601 timestamp") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.UTC)  # no offset: read as UTC (documented)
    return _check_ts((d - _EPOCH) // _ONE_US, v)


def _t_to_string(v: Any) -> str:
    c = v.__class__
    if c is str:
        return v
    if c is bool:
        return "true" if v else "false"
    if c is int:
        return str(v)
    if c is float:
        return repr(v)
    raise _TF(f"to_string cannot convert {json_type_name(v)} (use to_json for objects and arrays)")


def _t_to_int(v: Any) -> int:
    c = v.__class__
    if c is int:
        return v
    if c is float:
        if not math.isfinite(v):
            raise _TF(f"{v!r} is not a finite number")
        return round(v)
    if c is str:
        if _INT_RE.match(v):
            return int(v)
        try:
            f = float(v)
        except ValueError:
            raise _TF(f"{v!r} is not a number") from None
        if not math.isfinite(f):
            raise _TF(f"{v!r} is not a finite number")
        return round(f)
    _num_in(v, "to_int")


def _t_to_float(v: Any) -> float:
    c = v.__class__
    if c is float or c is int:
        return float(v)
    if c is str:
        try:
            f = float(v)
        except ValueError:
            raise _TF(f"{v!r} is not a number") from None
        if not math.isfinite(f):
            raise _TF(f"{v!r} is not a finite number")
        return f
    _num_in(v, "to_float")


def _t_to_number(v: Any) -> int | float:
    c = v.__class__
    if c is int or c is float:
        return v
    if c is str:
        if _INT_RE.match(v):
            return int(v)
        return _t_to_float(v)
    _num_in(v, "to_number")


def _str_only(name: str) -> Callable[[Any], None]:
    def bad(v: Any):
        raise _TF(f"{name} expects a string, got {json_type_name(v)}")

    return bad


_bad_lower, _bad_upper, _bad_trim, _bad_sha = (_str_only(n) for n in ("lower", "upper", "trim", "sha256"))


def _t_lower(v: Any) -> str:
    return v.lower() if v.__class__ is str else _bad_lower(v)


def _t_upper(v: Any) -> str:
    return v.upper() if v.__class__ is str else _bad_upper(v)


def _t_trim(v: Any) -> str:
    return v.strip() if v.__class__ is str else _bad_trim(v)


def _t_sha256(v: Any) -> str:
    if v.__class__ is not str:
        _bad_sha(v)
    return hashlib.sha256(v.encode("utf-8")).hexdigest()


def _t_length(v: Any) -> int:
    c = v.__class__
    if c is str or c is list or c is dict:
        return len(v)
    raise _TF(f"length expects a string, array or object, got {json_type_name(v)}")


def _t_to_json(v: Any) -> str:
    try:
        return orjson.dumps(v, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError) as e:
        raise _TF(f"to_json cannot encode the value: {e}") from None


def _lookup_key(v: Any) -> str:
    c = v.__class__
    if c is str:
        return v
    if c is bool:
        return "true" if v else "false"
    if c is int:
        return str(v)
    if c is float:
        return repr(v)
    raise _TF(f"map cannot look up {json_type_name(v)}")


def _make_map(table: dict) -> Callable[[Any], Any]:
    get = table.get

    def f(v: Any) -> Any:
        return get(v) if v.__class__ is str else get(_lookup_key(v))

    return f


def _num(v: Any, name: str) -> float | int:
    c = v.__class__
    if c is int or c is float:
        return v
    raise _TF(f"{name} expects a number, got {json_type_name(v)}")


def _make_scale(args: dict) -> Callable[[Any], float]:
    (a, b), (c, d) = args["from"], args["to"]
    k = (d - c) / (b - a)

    def f(v: Any) -> float:
        return float(c + (_num(v, "scale") - a) * k)

    return f


def _make_multiply(k: Any) -> Callable[[Any], Any]:
    def f(v: Any) -> Any:
        return _num(v, "multiply") * k

    return f


def _scalar_str(v: Any) -> str:
    """How a value is written into a template or an event-id key."""
    c = v.__class__
    if c is str:
        return v
    if c is bool:
        return "true" if v else "false"
    if c is int:
        return str(v)
    if c is float:
        return repr(v)
    return orjson.dumps(v, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
_sha1 = hashlib.sha1
_dumps = orjson.dumps


def _uuid5(name: bytes) -> str:
    """``str(uuid.uuid5(EVENT_ID_NAMESPACE, name))`` without building UUID objects."""
    h = _sha1(_NS_BYTES + name).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


def _key_str(k: Any) -> Any:
    return None if k is None else (k if k.__class__ is str else _scalar_str(k))


def _event_id(source_name: str, event_type: str, keys: tuple) -> str:
    parts = [source_name, event_type]
    for k in keys:
        parts.append(None if k is None else (k if k.__class__ is str else _scalar_str(k)))
    return _uuid5(_dumps(parts))


def derive_event_id(source_name: str, event_type: str, keys: list | tuple) -> str:
    """The event id the mapping derives: ``uuid5(EVENT_ID_NAMESPACE, json([source_name, event_type, *keys]))``.

    ``source_name`` is the source's name (``SourceContext.source_name``, e.g. ``"web-chat"``), not
    its database id: the name is unique and never changes, so re-creating a source or restoring the
    portal database elsewhere keeps every id (and dedup against the archive and replays).
    Key values are written as strings (numbers in decimal, booleans as true/false, null stays
    null) so a key that changes type between contract versions keeps its id. The JSON text is
    compact and UTF-8 (``json.dumps(parts, separators=(",", ":"), ensure_ascii=False)``).
    """
    if not isinstance(source_name, str) or not source_name:
        raise TypeError(f"derive_event_id needs the source's name (a non-empty str), not {source_name!r}")
    return _event_id(source_name, event_type, tuple(keys))


def _falls_back_to_constant(v: Any) -> bool:
    """Does this value turn a missing payload value into a constant (a default, a const in first)?"""
    if v.has_default:
        return True
    return v.kind == "first" and any(
        (it.kind == "const" and it.const is not None) or _falls_back_to_constant(it) for it in v.items
    )


def _json_text(x: Any) -> str:
    """A spec entry as the author wrote it: a path in quotes, a value object as compact JSON."""
    if isinstance(x, str):
        return f"'{x}'"
    try:
        return orjson.dumps(x, option=orjson.OPT_SORT_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return repr(x)


def _exc_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


# =============================================================================================
# Transforms (the fixed set a spec may use)
# =============================================================================================

_NUMERIC = frozenset({"int", "long", "float", "double"})
_TS_KINDS = frozenset({"timestamp-micros", "timestamp-millis"})
_SCALARS = (
    frozenset({"string", "enum", "int", "long", "float", "double", "boolean", "bytes", "fixed"}) | _TS_KINDS
)
_ANY = _SCALARS | {"record", "array", "map"}


@dataclass(frozen=True)
class TransformDef:
    name: str
    accepts: frozenset
    doc: str
    takes_args: bool = False


TRANSFORMS: dict[str, TransformDef] = {
    t.name: t
    for t in (
        TransformDef(
            "epoch_seconds",
            _NUMERIC | {"string"},
            "seconds since the epoch (number or numeric string, fractions kept exactly) → timestamp-micros",
        ),
        TransformDef(
            "epoch_millis",
            _NUMERIC | {"string", "timestamp-millis"},
            "milliseconds since the epoch → timestamp-micros",
        ),
        TransformDef(
            "epoch_micros",
            _NUMERIC | {"string", "timestamp-micros"},
            "microseconds since the epoch → timestamp-micros",
        ),
        TransformDef(
            "iso8601",
            frozenset({"string"}),
            "ISO-8601 / RFC 3339 text (offset or Z; none means UTC) → timestamp-micros",
        ),
        TransformDef("to_string", _SCALARS, "scalar → string (numbers in decimal, booleans true/false)"),
        TransformDef(
            "to_int",
            _NUMERIC | {"string"} | _TS_KINDS,
            "number or numeric string → integer (rounded to nearest)",
        ),
        TransformDef("to_float", _NUMERIC | {"string"}, "number or numeric string → double"),
        TransformDef(
            "to_number", _NUMERIC | {"string"}, "numeric string → integer when integral, else double"
        ),
        TransformDef("lower", frozenset({"string", "enum"}), "lower-case a string"),
        TransformDef("upper", frozenset({"string", "enum"}), "upper-case a string"),
        TransformDef("trim", frozenset({"string", "enum"}), "strip surrounding whitespace"),
        TransformDef(
            "sha256",
            frozenset({"string", "enum"}),
            "SHA-256 of the UTF-8 text, lower-case hex (use after trim, lower for e-mails)",
        ),
        TransformDef(
            "length",
            frozenset({"string", "array", "map", "record"}),
            "length of a string (characters), array or object",
        ),
        TransformDef("to_json", _ANY, "any value → its JSON text (sorted keys)"),
        TransformDef(
            "map",
            frozenset({"string", "enum", "int", "long", "boolean"}),
            '{"map": {"from": to, …}} value lookup; unlisted values → null',
            True,
        ),
        TransformDef(
            "scale", _NUMERIC, '{"scale": {"from": [a, b], "to": [c, d]}} linear rescale → double', True
        ),
        TransformDef("multiply", _NUMERIC, '{"multiply": k} multiply by a number', True),
    )
}

_SIMPLE_IMPL: dict[str, Callable] = {
    "epoch_seconds": _t_epoch_seconds,
    "epoch_millis": _t_epoch_millis,
    "epoch_micros": _t_epoch_micros,
    "iso8601": _t_iso8601,
    "to_string": _t_to_string,
    "to_int": _t_to_int,
    "to_float": _t_to_float,
    "to_number": _t_to_number,
    "lower": _t_lower,
    "upper": _t_upper,
    "trim": _t_trim,
    "sha256": _t_sha256,
    "length": _t_length,
    "to_json": _t_to_json,
}


# =============================================================================================
# Type information (what a source value can be, statically)
# =============================================================================================


@dataclass(frozen=True)
class TInfo:
    # non-null kinds: string enum int long float double boolean bytes fixed timestamp-* record array map
    kinds: frozenset
    nullable: bool
    symbols: frozenset | None = None  # when kinds holds "enum"
    literals: frozenset | None = None  # every non-null value it can take, when known (const, map)

    def label(self) -> str:
        ks = sorted(self.kinds) or ["null"]
        return " | ".join(ks) + (" (nullable)" if self.nullable and self.kinds else "")


def _kind_of(node: Node) -> str:
    if node.kind == "long" and node.logical in ("timestamp-micros", "timestamp-millis"):
        return node.logical
    return node.kind


def _tinfo_of_nodes(nodes: list[Node], nullable: bool) -> TInfo:
    kinds: set[str] = set()
    syms: set[str] = set()
    for n in nodes:
        for b in n.branches if n.kind == "union" else [n]:
            if b.kind == "null":
                nullable = True
                continue
            k = _kind_of(b)
            kinds.add(k)
            if k == "enum":
                syms.update(b.symbols)
    return TInfo(frozenset(kinds), nullable, frozenset(syms) if "enum" in kinds else None)


def _const_tinfo(v: Any) -> TInfo | None:
    if v is None:
        return TInfo(frozenset(), True, literals=frozenset())
    if v is True or v is False:
        return TInfo(frozenset({"boolean"}), False, literals=frozenset([v]))
    if isinstance(v, int):
        k = "int" if -(2**31) <= v < 2**31 else "long"
        return TInfo(frozenset({k}), False, literals=frozenset([v]))
    if isinstance(v, float):
        if not math.isfinite(v):
            return None  # NaN and infinities are not JSON
        return TInfo(frozenset({"double"}), False, literals=frozenset([v]))
    if isinstance(v, str):
        return TInfo(frozenset({"string"}), False, literals=frozenset([v]))
    return None


# =============================================================================================
# Spec IR
# =============================================================================================


@dataclass
class _V:
    """A compiled value spec."""

    kind: str  # path | const | first | template
    spec_path: str
    segs: tuple = ()
    text: str = ""
    const: Any = None
    items: list = field(default_factory=list)
    parts: list = field(default_factory=list)  # template: str literals and _V paths
    transforms: list = field(default_factory=list)  # (name, args)
    has_default: bool = False
    default: Any = None
    info: TInfo | None = None

    def source_segs(self) -> list[tuple]:
        """Every payload path this value reads."""
        if self.kind == "path":
            return [self.segs]
        if self.kind == "first":
            return [s for it in self.items for s in it.source_segs()]
        if self.kind == "template":
            return [p.segs for p in self.parts if isinstance(p, _V)]
        return []


@dataclass
class _Cond:
    op: str  # equals not_equals in not_in exists all any not always
    segs: tuple = ()
    value: Any = None
    subs: list = field(default_factory=list)


@dataclass
class _Event:
    index: int
    type: str
    when: _Cond | None
    key_mode: str
    keys: list
    fields: dict  # target -> (_V, CanonicalField)
    metadata: tuple  # ("rest", exclude_segs) | ("include", [(name, _V)]) | ("none",)
    key_may_be_null: tuple = ()  # per key: opted in with allow_null (null is hashed, not a failure)


@dataclass
class _Plan:
    match: str
    unmatched: str
    events: list
    root: Node | None = None


# =============================================================================================
# The checker
# =============================================================================================

_TOP_KEYS = (
    "format",
    "description",
    "match",
    "unmatched",
    "event_id",
    "fields",
    "platform_metadata",
    "events",
)
_EVENT_KEYS = ("type", "description", "when", "event_id", "fields", "platform_metadata")
_VALUE_KEYS = ("path", "const", "first", "template", "transform", "default")
_VALUE_SOURCES = ("path", "const", "first", "template")
_COND_OPS = ("equals", "not_equals", "in", "not_in", "exists")
_SPECIAL_TARGETS = {
    "event_id": "event_id is derived by the 'event_id' rule, not mapped as a field",
    "event_type": "event_type is set by the event rule's 'type'",
    "platform_metadata": "platform_metadata is chosen by the 'platform_metadata' rule",
    "attributes": "map the event type's fields by name (e.g. 'role'), not 'attributes'",
}


def _template_pieces(text: str) -> list[tuple[bool, str]]:
    """Split a template into (is_placeholder, text) pieces; ``{{`` and ``}}`` are literal braces."""
    pieces: list[tuple[bool, str]] = []
    lit: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text.startswith("{{", i) or text.startswith("}}", i):
            lit.append(text[i])
            i += 2
        elif text[i] == "{":
            j = text.find("}", i)
            if j < 0:
                raise ValueError(f"unclosed '{{' at position {i} (write '{{{{' for a literal brace)")
            if lit:
                pieces.append((False, "".join(lit)))
                lit = []
            pieces.append((True, text[i + 1 : j].strip()))
            i = j + 1
        elif text[i] == "}":
            raise ValueError(f"unmatched '}}' at position {i} (write '}}}}' for a literal brace)")
        else:
            lit.append(text[i])
            i += 1
    if lit:
        pieces.append((False, "".join(lit)))
    return pieces


def _expand_unions(nodes: list[Node]) -> tuple[list[Node], bool]:
    """The non-null types a value of these types can have, and whether it can be null."""
    out: list[Node] = []
    had_null = False
    for n in nodes:
        for b in n.branches if n.kind == "union" else [n]:
            if b.kind == "null":
                had_null = True
            else:
                out.append(b)
    return out, had_null


def _path_step(nodes: list[Node], kind: str, val: Any) -> tuple[list, list, list, bool, str | None]:
    """One path segment through each type: (next types, records lacking the field, types that cannot
    be read this way, whether a numeric key indexes an array, why the step may give null or None)."""
    nxt: list[Node] = []
    missing: list[Node] = []
    others: list[Node] = []
    as_index = False
    optional: str | None = None
    for n in nodes:
        if kind == "key" and n.kind == "record":
            f = n.field(val)
            if f is not None:
                nxt.append(f.node)
                if f.has_default and not f.node.nullable:
                    # the validator lets a payload leave out a field with a default, and the mapping
                    # reads the payload as sent (defaults are not filled in): absent reads as null
                    optional = optional or "a field with a default, which a payload may leave out"
            else:
                missing.append(n)
        elif kind == "key" and n.kind == "map":
            nxt.append(n.values)
            optional = optional or "a map key, which may be absent"
        elif n.kind == "array" and (kind == "index" or re.fullmatch(r"-?\d+", val)):
            nxt.append(n.items)
            optional = optional or "an array item, which is missing when the array is shorter"
            as_index = kind == "key"
        else:
            others.append(n)
    return nxt, missing, others, as_index, optional


def _close(word: str, options) -> str:
    m = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{m[0]}'?)" if m else ""


def _jt(v: Any) -> str:
    return json_type_name(v)


class _Checker:
    def __init__(self, schema: Any, mapping: Any, model: CanonicalModel):
        self.schema = schema
        self.mapping = mapping
        self.model = model
        self.errors: list[MappingError] = []
        self.root: Node | None = None
        #: why a resolved source path may be null, by its normalised segments
        self.null_why: dict[tuple, str] = {}

    def err(self, path: str, msg: str) -> None:
        self.errors.append(MappingError(path or "/", msg))

    def unknown_keys(self, obj: dict, allowed, path: str, what: str) -> None:
        for k in obj:
            if k not in allowed:
                self.err(
                    f"{path}/{_tok(k)}",
                    f"unknown key '{k}' in {what}{_close(str(k), allowed)}; allowed: {', '.join(allowed)}",
                )

    # ----- paths ------------------------------------------------------------------------------
    def resolve(self, text: Any, spath: str) -> tuple[tuple, TInfo] | None:
        """Check a source path against the schema: its normalised segments and what it can hold."""
        try:
            segs = parse_path(text)
        except ValueError as e:
            self.err(spath, f"invalid source path: {e}")
            return None
        if self.root is None:
            return segs, TInfo(frozenset(_ANY), True)
        current = [self.root]
        why_null: str | None = None  # the first reason the value may be null, for error messages
        norm: list[tuple] = []
        walked: list[str] = []
        for kind, val in segs:
            expanded, had_null = _expand_unions(current)
            nxt, missing, others, as_index, optional = _path_step(expanded, kind, val)
            if not nxt:
                self.path_error(text, spath, kind, val, walked, missing, others)
                return None
            # a null parent, a map key, an array index, a field with a default or a field only some
            # branches have: may be null
            if why_null is None:
                if had_null:
                    why_null = f"its parent '{_segs_text(norm)}' may be null"
                elif missing or others:
                    why_null = f"only some types of '{_segs_text(norm) or 'the payload'}' have '{val}'"
            norm.append(("index", int(val)) if as_index else (kind, val))
            if why_null is None and optional:
                why_null = f"'{_segs_text(norm)}' is {optional}"
            walked.append(str(val) if kind == "key" else f"[{val}]")
            current = nxt
        if why_null is None and _expand_unions(current)[1]:
            why_null = f"'{_segs_text(norm)}' is a union with null"
        if why_null is not None:
            self.null_why[tuple(norm)] = why_null
        return tuple(norm), _tinfo_of_nodes(current, why_null is not None)

    def path_error(self, text, spath, kind, val, walked, missing, others) -> None:
        where = ".".join(walked) or "the payload root"
        if missing:
            rec = missing[0]
            names = [f.name for f in rec.fields]
            shown = ", ".join(names[:15]) + (", …" if len(names) > 15 else "")
            self.err(
                spath,
                f"source path '{text}': field '{val}' does not exist in record {rec.name} at {where}"
                f"{_close(str(val), names)} (fields: {shown})",
            )
            return
        what = " | ".join(sorted({n.label() for n in others})) or "null"
        step = f"[{val}]" if kind == "index" else f"'{val}'"
        self.err(spath, f"source path '{text}': cannot read {step} from {where}, which is {what}")

    # ----- values -----------------------------------------------------------------------------
    def value(self, spec: Any, spath: str, depth: int = 0) -> _V | None:
        if depth > MAX_DEPTH:
            self.err(spath, "value spec is nested too deeply")
            return None
        if isinstance(spec, str):
            r = self.resolve(spec, spath)
            return None if r is None else _V("path", spath, segs=r[0], text=spec, info=r[1])
        if not isinstance(spec, dict):
            self.err(
                spath,
                "a value must be a source path (string) or an object with one of "
                f"{', '.join(_VALUE_SOURCES)}; got {_jt(spec)}",
            )
            return None
        self.unknown_keys(spec, _VALUE_KEYS, spath, "a value")
        sources = [k for k in _VALUE_SOURCES if k in spec]
        if len(sources) != 1:
            if not sources:
                self.err(spath, f"a value needs exactly one of {', '.join(_VALUE_SOURCES)}")
            else:
                self.err(spath, f"a value takes only one of {', '.join(sources)}")
            return None
        src = sources[0]
        if src == "path":
            r = self.resolve(spec["path"], f"{spath}/path")
            v = None if r is None else _V("path", spath, segs=r[0], text=spec["path"], info=r[1])
        elif src == "const":
            v = self.const_value(spec["const"], spath)
        elif src == "first":
            v = self.first(spec["first"], spath, depth)
        else:
            v = self.template(spec["template"], f"{spath}/template")
        if v is None:
            if "transform" in spec:  # still report the transform's own problems
                self.transforms(spec["transform"], None, f"{spath}/transform")
            return None
        return self.modifiers(v, spec, spath)

    def const_value(self, c: Any, spath: str) -> _V | None:
        ti = _const_tinfo(c)
        if ti is None:
            self.err(f"{spath}/const", f"a constant must be a string, number, boolean or null, not {_jt(c)}")
            return None
        return _V("const", spath, const=c, info=ti)

    def first(self, items: Any, spath: str, depth: int) -> _V | None:
        if not isinstance(items, list) or not items:
            self.err(f"{spath}/first", "'first' needs a non-empty list of values (paths or value objects)")
            return None
        subs = [self.value(it, f"{spath}/first/{i}", depth + 1) for i, it in enumerate(items)]
        if any(s is None for s in subs):
            return None
        kinds: set = set()
        syms: set = set()
        lits: set | None = set()
        for s in subs:
            kinds |= s.info.kinds
            syms |= s.info.symbols or set()
            lits = None if (lits is None or s.info.literals is None) else lits | s.info.literals
        ti = TInfo(
            frozenset(kinds),
            all(s.info.nullable for s in subs),
            frozenset(syms) if "enum" in kinds else None,
            frozenset(lits) if lits is not None else None,
        )
        return _V("first", spath, items=subs, info=ti)

    def modifiers(self, v: _V, spec: dict, spath: str) -> _V | None:
        """Apply a value object's ``transform`` and ``default``."""
        if "transform" in spec:
            res = self.transforms(spec["transform"], v.info, f"{spath}/transform")
            if res is None:
                return None
            v.transforms, v.info = res
        if "default" in spec:
            d = spec["default"]
            ti = _const_tinfo(d)
            if ti is None or d is None:
                self.err(f"{spath}/default", f"a default must be a string, number or boolean, not {_jt(d)}")
                return None
            v.has_default = True
            v.default = d
            lits = None if v.info.literals is None else v.info.literals | ti.literals
            v.info = TInfo(v.info.kinds | ti.kinds, False, v.info.symbols, lits)
        return v

    def template(self, text: Any, spath: str) -> _V | None:
        if not isinstance(text, str):
            self.err(spath, f'a template must be a string like "{{team_id}}:{{event.user}}", not {_jt(text)}')
            return None
        try:
            pieces = _template_pieces(text)
        except ValueError as e:
            self.err(spath, str(e))
            return None
        parts: list = []
        ok = True
        nullable = False
        for is_path, piece in pieces:
            if not is_path:
                parts.append(piece)
                continue
            r = self.resolve(piece, spath)
            if r is None:
                ok = False
                continue
            if r[1].kinds - _SCALARS:
                self.err(
                    spath,
                    f"template placeholder '{{{piece}}}' is {r[1].label()}; "
                    "only scalar values can be written into text",
                )
                ok = False
            nullable = nullable or r[1].nullable
            parts.append(_V("path", spath, segs=r[0], text=piece, info=r[1]))
        if not ok:
            return None
        if not any(isinstance(p, _V) for p in parts):
            self.err(spath, "a template needs at least one {path} placeholder (use 'const' for fixed text)")
            return None
        return _V("template", spath, parts=parts, text=text, info=TInfo(frozenset({"string"}), nullable))

    def transforms(self, spec: Any, info: TInfo | None, spath: str) -> tuple[list, TInfo] | None:
        items = spec if isinstance(spec, list) else [spec]
        base = spath if not isinstance(spec, list) else None
        out: list = []
        ok = True
        for i, t in enumerate(items):
            tp = base if base is not None else f"{spath}/{i}"
            if isinstance(t, str):
                name, args, has_args = t, None, False
            elif isinstance(t, dict) and len(t) == 1:
                name, args = next(iter(t.items()))
                has_args = True
            else:
                self.err(
                    tp,
                    'a transform is a name (e.g. "lower") or an object with one key '
                    f'(e.g. {{"multiply": 1000}}), not {_jt(t)}',
                )
                ok = False
                continue
            td = TRANSFORMS.get(name)
            if td is None:
                self.err(
                    tp,
                    f"unknown transform '{name}'{_close(str(name), TRANSFORMS)}; "
                    f"known: {', '.join(TRANSFORMS)}",
                )
                ok = False
                continue
            if td.takes_args and not has_args:
                self.err(tp, f"transform '{name}' needs arguments: {td.doc}")
                ok = False
                continue
            if has_args and not td.takes_args:
                self.err(tp, f"transform '{name}' takes no arguments (write it as \"{name}\")")
                ok = False
                continue
            if td.takes_args:
                aerr = self.transform_args(name, args)
                if aerr:
                    self.err(tp, aerr)
                    ok = False
                    continue
            if info is not None:
                bad = info.kinds - td.accepts
                if bad:
                    self.err(
                        tp,
                        f"transform '{name}' cannot take {' | '.join(sorted(bad))} "
                        f"(it takes {' | '.join(sorted(td.accepts))})",
                    )
                    ok = False
                    info = None
                else:
                    info = self.transform_out(name, args, info)
            out.append((name, args))
        if not ok or info is None:
            return None
        return out, info

    def transform_args(self, name: str, args: Any) -> str | None:
        if name == "map":
            if not isinstance(args, dict) or not args:
                return "'map' needs a non-empty object of {\"source value\": canonical value}"
            for k, val in args.items():
                if _const_tinfo(val) is None:
                    return f"'map' value for '{k}' must be a string, number, boolean or null"
            return None
        if name == "scale":
            if not isinstance(args, dict) or set(args) != {"from", "to"}:
                return '\'scale\' needs {"from": [a, b], "to": [c, d]}'
            for k in ("from", "to"):
                r = args[k]
                if not (isinstance(r, list) and len(r) == 2 and all(_is_num(x) for x in r)):
                    return f"'scale' {k} must be a list of two numbers"
            if args["from"][0] == args["from"][1]:
                return "'scale' from range is empty (a == b)"
            return None
        if name == "multiply":
            if not _is_num(args):
                return "'multiply' needs a number, e.g. {\"multiply\": 1000}"
            return None
        return None  # pragma: no cover

    def transform_out(self, name: str, args: Any, info: TInfo) -> TInfo:
        nullable = info.nullable
        if name in ("epoch_seconds", "epoch_millis", "epoch_micros", "iso8601"):
            return TInfo(frozenset({"timestamp-micros"}), nullable)
        if name in ("to_string", "lower", "upper", "trim", "sha256", "to_json"):
            return TInfo(frozenset({"string"}), nullable)
        if name == "to_int":
            return TInfo(frozenset({"long"}), nullable)
        if name in ("to_float", "scale"):
            return TInfo(frozenset({"double"}), nullable)
        if name == "to_number":
            return TInfo(frozenset({"long", "double"}), nullable)
        if name == "length":
            return TInfo(frozenset({"int"}), nullable)
        if name == "multiply":
            if isinstance(args, int) and info.kinds <= {"int", "long"}:
                return TInfo(frozenset({"long"}), nullable)
            return TInfo(frozenset({"double"}), nullable)
        if name == "map":
            kinds: set = set()
            for val in args.values():
                ti = _const_tinfo(val)
                kinds |= ti.kinds
            return TInfo(
                frozenset(kinds), True, literals=frozenset(v for v in args.values() if v is not None)
            )
        return info  # pragma: no cover

    # ----- fitting a value into a canonical field ----------------------------------------------
    def fit(self, v: _V, tf: CanonicalField, spath: str) -> bool:
        tkind = _target_kind(tf)
        info = v.info
        if tkind == "record":
            sub = ", ".join(f"'{c.path}'" for c in tf.fields if c.filled_by == "mapping")
            self.err(spath, f"'{tf.path}' is a record: map its fields instead ({sub})")
            return False
        for k in sorted(info.kinds):
            ok, hint = _fits(k, tkind)
            if not ok:
                src = f"'{v.text}'" if v.kind == "path" else f"the {v.kind} value"
                hint = f": {hint}" if hint else ""
                self.err(spath, f"{src} is {k}, which cannot fill {tf.path} ({tf.type_label}){hint}")
                return False
        if tkind == "enum" and not self.fit_enum(info, tf, spath):
            return False
        if tf.value_range and info.literals:
            lo, hi = tf.value_range
            bad = [x for x in info.literals if _is_num(x) and not (lo <= x <= hi)]
            if bad:
                self.err(spath, f"{bad[0]} is outside {tf.path}'s range [{lo:g}, {hi:g}]")
                return False
        if tf.required and v.kind == "const" and v.const is None and not v.has_default:
            self.err(spath, f"{tf.path} is required and cannot be the constant null")
            return False
        return True

    def fit_enum(self, info: TInfo, tf: CanonicalField, spath: str) -> bool:
        allowed = set(tf.symbols or ())
        extra = sorted((info.symbols or set()) - allowed) if "enum" in info.kinds else []
        if extra:
            self.err(
                spath,
                f"source enum symbols {', '.join(extra)} are not in {tf.path}'s symbols "
                f"({', '.join(sorted(allowed))}); add a map transform",
            )
            return False
        extra = sorted(str(x) for x in info.literals or () if x not in allowed)
        if extra:
            self.err(
                spath,
                f"{', '.join(repr(x) for x in extra)} not in {tf.path}'s symbols "
                f"({', '.join(tf.symbols or ())}){_close(extra[0], allowed)}",
            )
            return False
        return True

    def cond(self, spec: Any, spath: str, depth: int = 0) -> _Cond | None:
        if depth > MAX_DEPTH:
            self.err(spath, "condition is nested too deeply")
            return None
        if not isinstance(spec, dict):
            self.err(
                spath,
                'a condition is an object like {"path": "event.type", "equals": "message"}, '
                f"not {_jt(spec)}",
            )
            return None
        for comb in ("all", "any"):
            if comb in spec:
                self.unknown_keys(spec, (comb,), spath, f"an '{comb}' condition")
                subs = spec[comb]
                if not isinstance(subs, list) or not subs:
                    self.err(f"{spath}/{comb}", f"'{comb}' needs a non-empty list of conditions")
                    return None
                cs = [self.cond(s, f"{spath}/{comb}/{i}", depth + 1) for i, s in enumerate(subs)]
                return _Cond(comb, subs=cs) if all(c is not None for c in cs) else None
        if "not" in spec:
            self.unknown_keys(spec, ("not",), spath, "a 'not' condition")
            c = self.cond(spec["not"], f"{spath}/not", depth + 1)
            return _Cond("not", subs=[c]) if c is not None else None
        return self.comparison(spec, spath)

    def comparison(self, spec: dict, spath: str) -> _Cond | None:
        self.unknown_keys(spec, ("path",) + _COND_OPS, spath, "a condition")
        ops = [k for k in _COND_OPS if k in spec]
        if "path" not in spec or len(ops) != 1:
            self.err(
                spath,
                "a condition needs 'path' and exactly one of equals, not_equals, in, not_in, exists "
                "(or all / any / not)",
            )
            return None
        r = self.resolve(spec["path"], f"{spath}/path")
        if r is None:
            return None
        segs, info = r
        op = ops[0]
        val = spec[op]
        vp = f"{spath}/{op}"
        if op == "exists":
            if not isinstance(val, bool):
                self.err(vp, "'exists' takes true or false")
                return None
            return _Cond("exists", segs=segs, value=val)
        if op in ("in", "not_in"):
            if not isinstance(val, list) or not val:
                self.err(vp, f"'{op}' needs a non-empty list of values")
                return None
            checks = [(x, f"{vp}/{i}") for i, x in enumerate(val)]
        else:
            checks = [(val, vp)]
        for x, xp in checks:
            if not self.comparable(x, xp, info, spec["path"]):
                return None
        return _Cond(op, segs=segs, value=val)

    def comparable(self, x: Any, xp: str, info: TInfo, path: str) -> bool:
        """Can the source value at ``path`` ever equal the constant ``x``?"""
        ti = _const_tinfo(x)
        if ti is None:
            self.err(xp, f"compare with a string, number, boolean or null, not {_jt(x)}")
            return False
        if x is None:
            return True
        if not _comparable(ti, info):
            self.err(xp, f"{x!r} can never equal '{path}', which is {info.label()}")
            return False
        if (
            info.kinds == {"enum"}
            and isinstance(x, str)
            and info.symbols is not None
            and x not in info.symbols
        ):
            self.err(
                xp,
                f"'{x}' is not a symbol of '{path}' ({', '.join(sorted(info.symbols))})"
                f"{_close(x, info.symbols)}",
            )
            return False
        return True

    # ----- event ids, metadata ------------------------------------------------------------------
    def event_id(self, spec: Any, spath: str) -> tuple[str, list, tuple] | None:
        """(mode, key values, whether each key may be null)."""
        if not isinstance(spec, dict):
            self.err(
                spath,
                'event_id is {"idempotency_key": "<path>"} or {"natural_key": ["<path>", …]}, '
                f"not {_jt(spec)}",
            )
            return None
        self.unknown_keys(spec, ("idempotency_key", "natural_key", "allow_null"), spath, "event_id")
        modes = [k for k in ("idempotency_key", "natural_key") if k in spec]
        if len(modes) != 1:
            self.err(spath, "event_id needs exactly one of idempotency_key, natural_key")
            return None
        mode = modes[0]
        raw = spec[mode]
        if mode == "idempotency_key":
            if "allow_null" in spec:
                self.err(
                    f"{spath}/allow_null",
                    "allow_null goes with natural_key only: a null idempotency key always fails the payload",
                )
                return None
            items = [(raw, f"{spath}/idempotency_key")]
        else:
            if not isinstance(raw, list) or not raw:
                self.err(f"{spath}/natural_key", "natural_key needs a non-empty list of source paths")
                return None
            items = [(x, f"{spath}/natural_key/{i}") for i, x in enumerate(raw)]
        allowed = self.allow_null(spec, raw, spath) if mode == "natural_key" else []
        if allowed is None:
            return None
        return self.event_id_keys(mode, items, allowed)

    def event_id_keys(self, mode: str, items: list, allowed: list) -> tuple[str, list, tuple] | None:
        keys = []
        may_be_null = []
        nullable_parts = False
        for x, xp in items:
            v = self.value(x, xp)
            if v is None:
                return None
            if v.info.kinds - _SCALARS:
                self.err(xp, f"an event_id key must be a scalar, but it is {v.info.label()}")
                return None
            if v.kind == "const":
                self.err(xp, "an event_id key must come from the payload, not a constant")
                return None
            opted_in = any(x == a for a in allowed)
            if mode == "natural_key" and not opted_in and self.root is not None:
                causes = self.null_causes(v)
                # Hashed as null (or as a fallback constant), such a part gives two different events
                # one event_id and the MERGE drops the second as a duplicate. A lone part without a
                # fallback cannot: when it is null the payload fails, like a null idempotency key.
                if causes and (len(items) > 1 or _falls_back_to_constant(v)):
                    self.nullable_key_error(x, xp, v, causes, len(items))
                    nullable_parts = True
            keys.append(v)
            may_be_null.append(opted_in)
        if nullable_parts:
            return None
        return mode, keys, tuple(may_be_null)

    def allow_null(self, spec: dict, parts: list, spath: str) -> list | None:
        """The natural-key parts the spec lets be null (as written in natural_key)."""
        if "allow_null" not in spec:
            return []
        raw = spec["allow_null"]
        ap = f"{spath}/allow_null"
        if not isinstance(raw, list) or not raw:
            self.err(
                ap,
                'allow_null is a non-empty list of natural_key parts, written as in natural_key, '
                f'that may be null (e.g. ["rid"]), not {_jt(raw)}',
            )
            return None
        ok = True
        written = [x for x in parts if isinstance(x, str)]
        for i, a in enumerate(raw):
            if not any(a == x for x in parts):
                hint = _close(a, written) if isinstance(a, str) else ""
                shown = ", ".join(_json_text(x) for x in parts)
                self.err(
                    f"{ap}/{i}",
                    f"{_json_text(a)} is not a natural_key part{hint}; allow_null lists parts exactly as "
                    f"natural_key writes them ({shown})",
                )
                ok = False
        return raw if ok else None

    def null_causes(self, v: _V) -> list[str]:
        """Why a key value may lack a payload value ([] when it never does).

        A "default" or a constant at the end of "first" does not count as a value: every payload
        lacking the key would get the same constant, which collapses the events just as null does."""
        if v.kind == "path":
            causes = [self.null_why[v.segs]] if v.segs in self.null_why else []
        elif v.kind == "const":
            causes = [f"it falls back to the constant {_json_text(v.const)}"]
        elif v.kind == "template":
            causes = [c for p in v.parts if isinstance(p, _V) for c in self.null_causes(p)]
        else:  # first: null only when every item is
            per_item = [self.null_causes(it) for it in v.items]
            causes = [c for cs in per_item for c in cs] if all(per_item) else []
        if any(name == "map" for name, _ in v.transforms):
            causes.append("its 'map' transform gives null for values it does not list")
        return list(dict.fromkeys(causes))

    def nullable_key_error(self, x: Any, xp: str, v: _V, causes: list[str], n_parts: int) -> None:
        shown = _json_text(x)
        subject = shown if isinstance(x, str) else "this part"
        as_json = orjson.dumps(x).decode() if isinstance(x, str) else _json_text(x)
        opt_in = f'"allow_null": [{as_json}]'
        if n_parts > 1:
            effect = "would get the same event_id whenever their other parts match"
            fix = (
                f"Key on a value the schema requires, or, if the other parts alone tell such events "
                f"apart, opt in with {opt_in} next to natural_key."
            )
        else:
            effect = "would get the same event_id"
            fix = (
                f"Key on a value the schema requires, drop the fallback so that such payloads fail "
                f"instead, or, if every payload lacking it is the same event, opt in with {opt_in} "
                "next to natural_key."
            )
        fallback = (
            ' A "default" or a constant fallback does not help: every such event gets the same value.'
            if _falls_back_to_constant(v)
            else ""
        )
        self.err(
            xp,
            f"natural_key part {shown} may be missing or null ({'; '.join(causes)}). Two different events "
            f"in which {subject} is missing {effect}, and the second would be dropped as a duplicate."
            f"{fallback} {fix}",
        )

    def metadata(self, spec: Any, spath: str) -> tuple | None:
        if spec == "rest":
            return ("rest", [])
        if spec == "none":
            return ("none",)
        if isinstance(spec, dict) and "include" in spec:
            return self.metadata_include(spec, spath)
        if isinstance(spec, dict) and "rest" in spec:
            return self.metadata_rest(spec, spath)
        self.err(
            spath,
            'platform_metadata is "rest", "none", {"rest": true, "exclude": [paths]} or '
            '{"include": [paths] | {"name": value}}',
        )
        return None

    def metadata_include(self, spec: dict, spath: str) -> tuple | None:
        self.unknown_keys(spec, ("include",), spath, "platform_metadata")
        inc = spec["include"]
        if isinstance(inc, list) and inc:
            bad = [i for i, x in enumerate(inc) if not isinstance(x, str)]
            if bad:
                self.err(
                    f"{spath}/include/{bad[0]}",
                    f"include lists source paths (strings), not {_jt(inc[bad[0]])}",
                )
                return None
            entries = [(x, x, f"{spath}/include/{i}") for i, x in enumerate(inc)]
        elif isinstance(inc, dict) and inc:
            entries = [(k, x, f"{spath}/include/{_tok(k)}") for k, x in inc.items()]
        else:
            self.err(
                f"{spath}/include", 'include needs a non-empty list of paths or an object {"name": value}'
            )
            return None
        out = []
        for name, x, xp in entries:
            v = self.value(x, xp)
            if v is None:
                return None
            out.append((name, v))
        return ("include", out)

    def metadata_rest(self, spec: dict, spath: str) -> tuple | None:
        self.unknown_keys(spec, ("rest", "exclude"), spath, "platform_metadata")
        if spec["rest"] is not True:
            self.err(f"{spath}/rest", "'rest' must be true")
            return None
        exc = spec.get("exclude", [])
        if not isinstance(exc, list):
            self.err(f"{spath}/exclude", "exclude needs a list of source paths")
            return None
        segs = []
        for i, x in enumerate(exc):
            try:
                segs.append(parse_path(x))  # payload extras may be excluded too: no schema check
            except ValueError as e:
                self.err(f"{spath}/exclude/{i}", f"invalid path: {e}")
                return None
        return ("rest", segs)

    # ----- fields -----------------------------------------------------------------------------
    def fields(self, spec: Any, spath: str, event_type: str | None) -> dict | None:
        if not isinstance(spec, dict):
            self.err(spath, f"'fields' is an object of {{\"canonical field\": value}}, not {_jt(spec)}")
            return None
        out: dict = {}
        ok = True
        for target, vs in spec.items():
            tp = f"{spath}/{_tok(target)}"
            if not isinstance(target, str):
                self.err(tp, "canonical field names are strings")
                ok = False
                continue
            tf = self.target(target, tp, event_type)
            v = self.value(vs, tp)
            if tf is None or v is None:
                ok = False
                continue
            if not self.fit(v, tf, tp):
                ok = False
                continue
            out[target] = (v, tf)
        return out if ok else None

    def target(self, target: str, tp: str, event_type: str | None) -> CanonicalField | None:
        if target in _SPECIAL_TARGETS:
            self.err(tp, _SPECIAL_TARGETS[target])
            return None
        m = self.model
        tf = m.envelope_field(target) if event_type is None else m.target(event_type, target)
        if tf is None:
            if event_type is None:
                owners = [t for t in EVENT_TYPES if m.target(t, target) is not None]
                if owners:
                    self.err(
                        tp,
                        f"'{target}' belongs to {', '.join(owners)}: "
                        "common 'fields' may only set envelope fields; "
                        "move it into the event rule",
                    )
                    return None
                options = [f.path for f in _envelope_leaves(m)]
            else:
                options = [f.path for f in m.leaf_targets(event_type)]
            self.err(
                tp,
                f"unknown canonical field '{target}'"
                + (f" for {event_type}" if event_type else "")
                + _close(target, options),
            )
            return None
        if tf.filled_by == "pipeline":
            self.err(tp, f"'{target}' is filled by the pipeline, not by the mapping")
            return None
        return tf

    # ----- schema and top-level keys ----------------------------------------------------------
    def load_schema(self) -> None:
        try:
            self.root = parse_avro_schema(self.schema)
        except SchemaError as e:
            self.err("/", f"the source schema is not valid Avro: {e}")
            self.root = None
        except Exception as e:  # hostile schema objects
            self.err("/", f"the source schema is not valid Avro: {_exc_text(e)}")
            self.root = None
        if self.root is not None and self.root.kind != "record":
            self.err("/", f"the source schema must be a record, not {self.root.label()}")
            self.root = None

    def top_level(self, spec: dict) -> tuple[str, str]:
        self.unknown_keys(spec, _TOP_KEYS, "", "the mapping")
        fmt = spec.get("format", SPEC_FORMAT)
        if fmt != SPEC_FORMAT or isinstance(fmt, bool):
            self.err("/format", f"unsupported spec format {fmt!r} (this platform reads format {SPEC_FORMAT})")
        if "description" in spec and not isinstance(spec["description"], str):
            self.err("/description", "description must be a string")
        match = spec.get("match", "first")
        if match not in ("first", "all"):
            self.err("/match", f'match is "first" or "all", not {match!r}')
            match = "first"
        unmatched = spec.get("unmatched", "error")
        if unmatched not in ("error", "skip"):
            self.err("/unmatched", f'unmatched is "error" or "skip", not {unmatched!r}')
            unmatched = "error"
        return match, unmatched

    # ----- the whole spec ---------------------------------------------------------------------
    def run(self) -> _Plan | None:
        self.load_schema()
        spec = self.mapping
        if not isinstance(spec, dict):
            self.err("/", f"a mapping spec is a JSON object with an 'events' list, not {_jt(spec)}")
            return None
        match, unmatched = self.top_level(spec)
        rules = _RuleContext(
            match=match,
            has_default_id="event_id" in spec,
            default_id=self.event_id(spec["event_id"], "/event_id") if "event_id" in spec else None,
            common=self.fields(spec["fields"], "/fields", None) if "fields" in spec else {},
            default_md=(
                self.metadata(spec["platform_metadata"], "/platform_metadata")
                if "platform_metadata" in spec
                else ("rest", [])
            ),
        )
        events_spec = spec.get("events")
        if not isinstance(events_spec, list) or not events_spec:
            self.err(
                "/events", '\'events\' needs a non-empty list of event rules ({"type": "message.sent", …})'
            )
            return None
        events = [self.event_rule(i, es, rules) for i, es in enumerate(events_spec)]
        if self.errors:
            return None
        return _Plan(match, unmatched, [e for e in events if e is not None], self.root)

    def event_rule(self, i: int, es: Any, rules: _RuleContext) -> _Event | None:
        ep = f"/events/{i}"
        if not isinstance(es, dict):
            self.err(ep, f"an event rule is an object with 'type', 'when', 'fields', …, not {_jt(es)}")
            return None
        self.unknown_keys(es, _EVENT_KEYS, ep, "an event rule")
        et = es.get("type")
        if not isinstance(et, str) or et not in self.model.event_types:
            hint = _close(et, EVENT_TYPES) if isinstance(et, str) else f"; got {_jt(et)}"
            self.err(f"{ep}/type", f"'type' must be one of {', '.join(EVENT_TYPES)}{hint}")
            et = None
        if rules.match == "first" and rules.catch_all is not None:
            self.err(ep, f"unreachable: rule /events/{rules.catch_all} has no 'when' and match is \"first\"")
        when = self.cond(es["when"], f"{ep}/when") if "when" in es else None
        if "when" not in es and rules.catch_all is None:
            rules.catch_all = i
        if "event_id" in es:
            eid = self.event_id(es["event_id"], f"{ep}/event_id")
        else:
            eid = rules.default_id
            if not rules.has_default_id:
                self.err(
                    ep,
                    'no event_id rule: add "event_id" to the rule or to the mapping '
                    '({"idempotency_key": "<path>"} or {"natural_key": [paths]})',
                )
        own = self.fields(es.get("fields", {}), f"{ep}/fields", et) if et else None
        if "platform_metadata" in es:
            md = self.metadata(es["platform_metadata"], f"{ep}/platform_metadata")
        else:
            md = rules.default_md
        parts = (et, own, rules.common, eid, md)
        if any(x is None for x in parts) or ("when" in es and when is None):
            return None
        merged = dict(rules.common)
        merged.update(own)
        self.required_fields(et, merged, ep)
        self.distinct_ids(et, eid, i, ep, rules)
        return _Event(i, et, when, eid[0], eid[1], merged, md, eid[2])

    def required_fields(self, et: str, merged: dict, ep: str) -> None:
        """Required canonical fields the mapping must fill."""
        for tf in self.model.leaf_targets(et):
            if not tf.required or tf.filled_by != "mapping" or tf.path in ("event_id", "event_type"):
                continue
            if tf.path not in merged:
                self.err(
                    f"{ep}/fields",
                    f"required canonical field '{tf.path}' of {et} is not mapped ({tf.type_label}: {tf.doc})",
                )

    def distinct_ids(self, et: str, eid: tuple, i: int, ep: str, rules: _RuleContext) -> None:
        key_sig = (et, eid[0], tuple(tuple(k.source_segs()) for k in eid[1]))
        if key_sig in rules.seen_keys and rules.match == "all":
            self.err(
                f"{ep}/event_id",
                f"rule /events/{rules.seen_keys[key_sig]} derives {et} event ids from the same key: "
                "both events would get the same event_id",
            )
        rules.seen_keys.setdefault(key_sig, i)


@dataclass
class _RuleContext:
    """What the event rules share while a spec is checked."""

    match: str
    has_default_id: bool
    default_id: tuple | None
    common: dict | None
    default_md: tuple | None
    catch_all: int | None = None
    seen_keys: dict = field(default_factory=dict)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _comparable(ti: TInfo, info: TInfo) -> bool:
    k = next(iter(ti.kinds))
    if k == "string":
        return bool(info.kinds & {"string", "enum", "bytes", "fixed"})
    if k == "boolean":
        return "boolean" in info.kinds
    return bool(info.kinds & (_NUMERIC | _TS_KINDS))


def _envelope_leaves(m: CanonicalModel) -> list[CanonicalField]:
    out: list[CanonicalField] = []

    def walk(fs):
        for f in fs:
            if f.fields:
                walk(f.fields)
            else:
                out.append(f)

    walk(m.envelope)
    return out


def _target_kind(tf: CanonicalField) -> str:
    b = tf.base_type
    if isinstance(b, str):
        return b
    if isinstance(b, dict):
        if b.get("logicalType") == "timestamp-micros":
            return "timestamp-micros"
        return b.get("type")
    return "union"


_TS_HINT_STR = (
    "add a transform: iso8601 for ISO-8601 text, "
    "or epoch_seconds / epoch_millis / epoch_micros for numeric text"
)
_TS_HINT_NUM = (
    "add a transform saying which unit the source uses: epoch_seconds, epoch_millis or epoch_micros"
)


_TO_STRING = "add the to_string transform"
_TO_INT = "add the to_int transform"
_TO_FLOAT = "add the to_float transform"
_CONTAINER_TO_STRING = "map one of its fields, or add the to_json transform to keep it as JSON text"
#: target kind -> (source kinds that fit, {source kind: hint when it does not})
_FIT_RULES: dict[str, tuple[frozenset, dict]] = {
    "string": (
        frozenset({"string", "enum"}),
        {"record": _CONTAINER_TO_STRING, "array": _CONTAINER_TO_STRING, "map": _CONTAINER_TO_STRING},
    ),
    "enum": (frozenset({"string", "enum"}), {}),
    "timestamp-micros": (
        frozenset({"timestamp-micros"}),
        {
            **dict.fromkeys(("string", "bytes", "fixed"), _TS_HINT_STR),
            **dict.fromkeys(_NUMERIC, _TS_HINT_NUM),
            "timestamp-millis": "add the epoch_millis transform",
        },
    ),
    "int": (frozenset({"int", "long"}), dict.fromkeys(("float", "double", "string"), _TO_INT)),
    "long": (frozenset({"int", "long"}) | _TS_KINDS, dict.fromkeys(("float", "double", "string"), _TO_INT)),
    "float": (_NUMERIC, {"string": _TO_FLOAT}),
    "double": (_NUMERIC, {"string": _TO_FLOAT}),
    "boolean": (frozenset({"boolean"}), {}),
}
_DEFAULT_HINTS = {
    "string": _TO_STRING,
    "enum": "add a map transform to the enum's symbols",
    "boolean": 'add a map transform, e.g. {"map": {"yes": true, "no": false}}',
}


def _fits(k: str, t: str) -> tuple[bool, str]:
    """Does a source value of kind ``k`` fill a canonical field of kind ``t``? (ok, hint if not)"""
    rule = _FIT_RULES.get(t)
    if rule is None:
        return False, ""
    ok_kinds, hints = rule
    if k in ok_kinds:
        return True, ""
    return False, hints.get(k, _DEFAULT_HINTS.get(t, ""))


def _check_and_build(
    schema: Any, mapping: Any, model: CanonicalModel
) -> tuple[list[MappingError], CompiledMapping | None]:
    """Check the spec and, when it is sound, generate its code; so a spec that passes the check
    always compiles (a spec too large for Python's compiler is reported as an error here)."""
    try:
        c = _Checker(schema, mapping, model)
        plan = c.run()
    except RecursionError:
        return [MappingError("/", "the mapping spec is nested too deeply")], None
    except Exception as e:  # pragma: no cover - a bug in the checker must not take the portal down
        return [MappingError("/", f"internal error while checking the mapping: {_exc_text(e)}")], None
    if c.errors or plan is None:
        return c.errors or [MappingError("/", "invalid mapping spec")], None
    try:
        run, source, _ = _Codegen(plan, model).build()
    except (SyntaxError, RecursionError, MemoryError, ValueError, OverflowError) as e:
        return [
            MappingError(
                "/", f"the mapping is too large or too deeply nested to compile ({type(e).__name__})"
            )
        ], None
    return [], CompiledMapping(schema, mapping, run, source, tuple(ev.type for ev in plan.events))


def mapping_check(schema: dict, mapping: dict, model: CanonicalModel | None = None) -> list[MappingError]:
    """Every problem of a mapping spec against its source schema and the canonical model.

    Never raises: whatever ``schema`` and ``mapping`` hold, problems come back as ``MappingError``s.
    An empty list means ``compile_mapping`` will succeed.
    """
    try:
        return _check_and_build(schema, mapping, model or load_canonical_model())[0]
    except Exception as e:  # pragma: no cover - last line of defence
        return [MappingError("/", f"internal error while checking the mapping: {_exc_text(e)}")]


# =============================================================================================
# Code generation
# =============================================================================================

_PIPELINE_EXPR = {
    "received_at": "ctx.received_at_micros",
    "ingested_at": "ctx.ingested_at_micros",
    "platform": "ctx.platform",
    "source_id": "ctx.source_id",
    "canonical_version": "_CANON_VERSION",
    "contract.name": "ctx.contract_name",
    "contract.version": "ctx.contract_version",
    "lineage.contract_version": "ctx.contract_version",
    "lineage.normalizer_version": "_NORMALIZER_VERSION",
}


class _Codegen:
    def __init__(self, plan: _Plan, model: CanonicalModel):
        self.plan = plan
        self.model = model
        self.ns: dict[str, Any] = {
            "_TF": _TF,
            "_exc_text": _exc_text,
            "_event_id": _event_id,
            "_uuid5": _uuid5,
            "_dumps": _dumps,
            "_key_str": _key_str,
            "_scalar_str": _scalar_str,
            "_CANON_VERSION": model.version,
            "_NORMALIZER_VERSION": NORMALIZER_VERSION,
        }
        for name, fn in _SIMPLE_IMPL.items():
            self.ns[f"_t_{name}"] = fn
        self.n = 0
        self.src: list[str] = []

    def uniq(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def const(self, value: Any, prefix: str = "_k") -> str:
        name = self.uniq(prefix)
        self.ns[name] = value
        return name

    # ----- getters ----------------------------------------------------------------------------
    def getters(self, seg_lists, lines: list[str], ind: str, table: dict) -> None:
        """Emit getter statements for every path (sharing prefixes); table: segs -> var name.

        Where the schema guarantees a value is an object (a required, non-null record), its
        children are read without a type check; if the payload breaks that promise anyway (it was
        not validated), the AttributeError falls back to fully guarded getters.
        """
        fast: list[str] = []
        safe: list[str] = []
        unchecked = False
        for segs in sorted(set(seg_lists), key=len):
            for i in range(1, len(segs) + 1):
                pre = segs[:i]
                if pre in table:
                    continue
                var = self.uniq("_p")
                parent = table.get(segs[: i - 1]) if i > 1 else "p"
                kind, val = pre[-1]
                if kind == "key":
                    k = repr(val)
                    guarded = f"{var} = {parent}.get({k}) if {parent}.__class__ is dict else None"
                    if parent == "p":
                        fast.append(f"{var} = p.get({k})")
                        safe.append(fast[-1])
                    elif _sure_dict(self.plan.root, segs[: i - 1]):
                        fast.append(f"{var} = {parent}.get({k})")
                        safe.append(guarded)
                        unchecked = True
                    else:
                        fast.append(guarded)
                        safe.append(guarded)
                else:
                    idx = int(val)
                    cond = f"len({parent}) > {idx}" if idx >= 0 else f"len({parent}) >= {-idx}"
                    fast.append(f"{var} = {parent}[{idx}] if {parent}.__class__ is list and {cond} else None")
                    safe.append(fast[-1])
                table[pre] = var
        if not unchecked:
            lines.extend(ind + x for x in fast)
            return
        lines.append(f"{ind}try:")
        lines.extend(f"{ind}    {x}" for x in fast)
        lines.append(f"{ind}except AttributeError:")
        lines.extend(f"{ind}    {x}" for x in safe)

    # ----- values -----------------------------------------------------------------------------
    def value(self, v: _V, out: str, lines: list[str], ind: str, table: dict) -> None:
        """Statements that leave the value (transforms applied, default filled) in ``out``."""
        if v.kind == "path":
            lines.append(f"{ind}{out} = {table[v.segs]}")
        elif v.kind == "const":
            c = v.const
            simple = c is None or isinstance(c, (bool, str)) or (isinstance(c, int) and abs(c) < 2**63)
            lines.append(f"{ind}{out} = {c!r}" if simple else f"{ind}{out} = {self.const(c)}")
        elif v.kind == "first":
            # flat: each later item only runs while the value is still null
            self.value(v.items[0], out, lines, ind, table)
            for item in v.items[1:]:
                lines.append(f"{ind}if {out} is None:")
                self.value(item, out, lines, ind + "    ", table)
        elif v.kind == "template":
            lines.append(f"{ind}{out} = {self.template_expr(v, table)}")
        if v.transforms:
            self.transform_chain(v.transforms, out, lines, ind)
        if v.has_default:
            lines.append(f"{ind}if {out} is None: {out} = {self.const(v.default)}")

    def template_expr(self, v: _V, table: dict) -> str:
        pieces = []
        for p in v.parts:
            if isinstance(p, _V):
                g = table[p.segs]
                pieces.append(f"({g} if {g}.__class__ is str else _scalar_str({g}))")
            else:
                pieces.append(repr(p))
        nn = " and ".join(f"{table[p.segs]} is not None" for p in v.parts if isinstance(p, _V))
        return f"({' + '.join(pieces)}) if {nn} else None"

    def transform_chain(self, transforms: list, out: str, lines: list[str], ind: str) -> None:
        lines.append(f"{ind}if {out} is not None:")
        for i, (name, args) in enumerate(transforms):
            if name == "map":
                fn = self.const(_make_map(dict(args)), "_tm")
            elif name == "scale":
                fn = self.const(_make_scale(args), "_ts")
            elif name == "multiply":
                fn = self.const(_make_multiply(args), "_tx")
            else:
                fn = f"_t_{name}"
            if i > 0 and transforms[i - 1][0] == "map":
                lines.append(
                    f"{ind}if {out} is not None:"
                )  # a lookup may give null: the rest runs only if not
            lines.append(f"{ind}    {out} = {fn}({out})")

    def field(
        self, target: str, v: _V, tf: CanonicalField, var: str, lines: list[str], ind: str, table: dict
    ) -> str:
        """Statements computing one canonical field; returns the expression holding its value."""
        post: list[str] = []
        self._field_checks(target, v, tf, var, post, ind)
        if not post and not v.transforms and not v.has_default:
            if v.kind == "path":
                return table[v.segs]  # a plain copy: use the getter's variable as is
            if v.kind == "const" and (v.const is None or isinstance(v.const, (bool, str))):
                return repr(v.const)
        segs = v.source_segs()
        ptr = repr(_pointer(segs[0]) if segs else "/")
        self.guarded(v, var, lines, ind, table, ptr, target)
        lines.extend(post)
        return var

    def _field_checks(
        self, target: str, v: _V, tf: CanonicalField, var: str, lines: list[str], ind: str
    ) -> None:
        segs = v.source_segs()
        ptr = repr(_pointer(segs[0]) if segs else "/")
        src_desc = ", ".join("'" + _segs_text(s) + "'" for s in segs) or "a constant"
        tk = _target_kind(tf)
        kinds = v.info.kinds
        if tk in ("double", "float") and kinds & {"int", "long"}:
            lines.append(f"{ind}if {var}.__class__ is int: {var} = float({var})")
        if tk == "int" and (kinds - {"int"} or v.transforms):
            lines.append(f"{ind}if {var}.__class__ is int and not (-2147483648 <= {var} <= 2147483647):")
            lines.append(
                f"{ind}    fail({ptr}, {target!r} + ': ' + str({var}) + ' does not fit a 32-bit int')"
                f"; {var} = None"
            )
        if tk == "long" and v.transforms:
            lines.append(f"{ind}if {var}.__class__ is int and not ({LONG_MIN} <= {var} <= {LONG_MAX}):")
            lines.append(
                f"{ind}    fail({ptr}, {target!r} + ': ' + str({var}) + ' does not fit a 64-bit long')"
                f"; {var} = None"
            )
        if tk == "enum":
            syms = tuple(tf.symbols or ())
            static_ok = (
                kinds == {"enum"} and v.info.symbols is not None and v.info.symbols <= set(syms)
            ) or (
                v.info.literals is not None
                and all(x in syms for x in v.info.literals)
                and not (kinds - {"string"})
                and v.kind == "const"
            )
            if not static_ok:
                sname = self.const(frozenset(syms), "_sy")
                allowed = ", ".join(syms)
                lines.append(
                    f"{ind}if {var} is not None and ({var}.__class__ is not str or {var} not in {sname}):"
                )
                lines.append(
                    f"{ind}    fail({ptr}, {target!r} + ': ' + repr({var}) + ' is not one of {allowed}')"
                    f"; {var} = None"
                )
        if tf.value_range is not None:
            lo, hi = tf.value_range
            lines.append(
                f"{ind}if {var} is not None and {var}.__class__ in (int, float) "
                f"and not ({lo!r} <= {var} <= {hi!r}):"
            )
            lines.append(
                f"{ind}    fail({ptr}, {target!r} + ': ' + repr({var}) + ' is outside [{lo:g}, {hi:g}]')"
                f"; {var} = None"
            )
        if tf.required and v.info.nullable:
            msg = (
                f"{target}: required canonical field is null "
                f"(source {src_desc} missing, null or unconvertible)"
            )
            lines.append(f"{ind}if {var} is None:")
            lines.append(f"{ind}    fail({ptr}, {msg!r})")

    # ----- conditions -------------------------------------------------------------------------
    def cond(self, c: _Cond, table: dict) -> str:
        if c.op == "all":
            return "(" + " and ".join(self.cond(s, table) for s in c.subs) + ")"
        if c.op == "any":
            return "(" + " or ".join(self.cond(s, table) for s in c.subs) + ")"
        if c.op == "not":
            return f"(not {self.cond(c.subs[0], table)})"
        g = table[c.segs]
        if c.op == "exists":
            return f"({g} is not None)" if c.value else f"({g} is None)"
        if c.op in ("equals", "not_equals"):
            e = self.eq(g, c.value)
            return e if c.op == "equals" else f"(not {e})"
        values = list(c.value)
        e = (
            "(" + " or ".join(self.eq(g, x) for x in values) + ")"
            if len(values) <= 3 or not all(isinstance(x, str) for x in values)
            else f"({g}.__class__ is str and {g} in {self.const(frozenset(values), '_in')})"
        )
        return e if c.op == "in" else f"(not {e})"

    def eq(self, g: str, x: Any) -> str:
        if x is None:
            return f"({g} is None)"
        if isinstance(x, bool):
            return f"({g} is {x!r})"
        if isinstance(x, str):
            return f"({g}.__class__ is str and {g} == {x!r})"
        return f"({g}.__class__ in (int, float) and {g} == {self.const(x)})"

    # ----- platform_metadata ------------------------------------------------------------------
    def rest_fn(self, tree: dict) -> str:
        """One function copying the payload minus the mapped paths (nested records inlined, no calls)."""
        name = self.uniq("_rest")
        lines = [f"def {name}(d):"]
        self._rest_body(tree, "d", "r", lines, "    ")
        lines.append("    return r")
        self.src.append("\n".join(lines))
        return name

    def _rest_body(self, tree: dict, src: str, dst: str, lines: list[str], ind: str) -> None:
        # copy (C speed), then drop the mapped keys and rebuild the partly mapped records
        lines.append(f"{ind}{dst} = {src}.copy()")
        full = [k for k, sub in tree.items() if sub is True]
        if full:
            pop = self.uniq("_pop")
            lines.append(f"{ind}{pop} = {dst}.pop")
            lines.append(ind + "; ".join(f"{pop}({k!r}, None)" for k in full))
        for k, sub in tree.items():
            if sub is True:
                continue
            s = self.uniq("_s")
            t = self.uniq("_t")
            lines.append(f"{ind}{s} = {src}.get({k!r})")
            lines.append(f"{ind}if {s}.__class__ is dict:")
            self._rest_body(sub, s, t, lines, ind + "    ")
            lines.append(f"{ind}    if {t}: {dst}[{k!r}] = {t}")
            lines.append(f"{ind}    else: del {dst}[{k!r}]")
            lines.append(f"{ind}elif {s} is None:")
            lines.append(f"{ind}    {dst}.pop({k!r}, None)")

    # ----- events -----------------------------------------------------------------------------
    def event_fn(self, ev: _Event) -> str:
        name = self.uniq("_ev")
        ind = "    "
        lines = [f"def {name}(p, ctx, fail):"]
        values = [v for v, _ in ev.fields.values()] + list(ev.keys)
        if ev.metadata[0] == "include":
            values += [v for _, v in ev.metadata[1]]
        seg_lists = []
        for v in values:
            seg_lists.extend(self._all_segs(v))
        table: dict = {}
        self.getters(seg_lists, lines, ind, table)
        # fields
        fvars: dict[str, str] = {}
        for target, (v, tf) in ev.fields.items():
            var = self.uniq("_f")
            fvars[target] = self.field(target, v, tf, var, lines, ind, table)
        # event id
        kvars = []
        for k in ev.keys:
            var = self.uniq("_key")
            label = (
                f"event_id ({ev.key_mode} '{_segs_text(k.source_segs()[0]) if k.source_segs() else k.text}')"
            )
            self.field_plain(k, var, lines, ind, table, label)
            kvars.append(var)
        self.event_id_lines(ev, kvars, lines, ind)
        # platform metadata
        md = ev.metadata
        if md[0] == "none":
            lines.append(f"{ind}_md = {{}}")
        elif md[0] == "include":
            lines.append(f"{ind}_md = {{}}")
            for mname, v in md[1]:
                var = self.uniq("_m")
                self.field_plain(v, var, lines, ind, table, f"platform_metadata.{mname}")
                lines.append(f"{ind}if {var} is not None: _md[{mname!r}] = {var}")
        else:
            tree: dict = {}
            for v, _ in ev.fields.values():
                for segs in v.source_segs():
                    _tree_add(tree, segs)
            for segs in md[1]:
                _tree_add(tree, segs)
            fn = self.rest_fn(tree)
            lines.append(f"{ind}_md = {fn}(p)")
        # the event dict
        lines.append(f"{ind}return {self.event_literal(ev, fvars, lines, ind)}")
        self.src.append("\n".join(lines))
        return name

    def event_id_lines(self, ev: _Event, kvars: list[str], lines: list[str], ind: str) -> None:
        """Statements setting ``_eid`` from the key values in ``kvars``."""
        # A key the spec did not opt in with allow_null must be there (the checker makes sure the
        # schema promises it; this catches payloads that break the promise). Opted-in keys are
        # hashed as null, and fail only when every key is null.
        nullable = ev.key_may_be_null or (False,) * len(kvars)
        branch = "if"
        for k, var, may_be_null in zip(ev.keys, kvars, nullable, strict=True):
            if may_be_null:
                continue
            segs = k.source_segs()
            ptr = repr(_pointer(segs[0]) if segs else "/")
            desc = ", ".join("'" + _segs_text(s) + "'" for s in segs)
            if ev.key_mode == "idempotency_key":
                msg = f"event_id: the idempotency key ({desc}) is missing or null"
            elif len(kvars) == 1:
                msg = f"event_id: the natural key ({desc}) is missing or null"
            else:
                msg = f"event_id: the natural key part ({desc}) is missing or null and is not in allow_null"
            lines.append(f"{ind}{branch} {var} is None:")
            lines.append(f"{ind}    fail({ptr}, {msg!r}); _eid = None")
            branch = "elif"
        if all(nullable):
            ptr0 = repr(_pointer(ev.keys[0].source_segs()[0]) if ev.keys[0].source_segs() else "/")
            allnull = " and ".join(f"{k} is None" for k in kvars)
            keys_desc = ", ".join("'" + _segs_text(s) + "'" for k in ev.keys for s in k.source_segs())
            missing_msg = f"event_id: every part of the natural key ({keys_desc}) is missing or null"
            lines.append(f"{ind}if {allnull}:")
            lines.append(f"{ind}    fail({ptr0}, {missing_msg!r}); _eid = None")
        lines.append(f"{ind}else:")
        kexpr = ", ".join(f"{k} if {k}.__class__ is str else _key_str({k})" for k in kvars)
        # namespaced by the source's name, which is unique and never changes: the database id
        # changes when a source is re-created or the portal database restored elsewhere
        lines.append(f"{ind}    _eid = _uuid5(_dumps([ctx.source_name, {ev.type!r}, {kexpr}]))")

    def field_plain(self, v: _V, var: str, lines: list[str], ind: str, table: dict, label: str) -> None:
        segs = v.source_segs()
        ptr = repr(_pointer(segs[0]) if segs else "/")
        self.guarded(v, var, lines, ind, table, ptr, label)

    def guarded(self, v: _V, var: str, lines: list[str], ind: str, table: dict, ptr: str, label: str) -> None:
        """The value's statements, inside try/except when something in them can fail."""
        if not _can_fail(v):
            self.value(v, var, lines, ind, table)
            return
        lines.append(f"{ind}try:")
        self.value(v, var, lines, ind + "    ", table)
        lines.append(f"{ind}except _TF as e:")
        lines.append(f"{ind}    {var} = None; fail({ptr}, {label + ': '!r} + str(e))")
        lines.append(f"{ind}except Exception as e:")
        lines.append(f"{ind}    {var} = None; fail({ptr}, {label + ': cannot map: '!r} + _exc_text(e))")

    def _all_segs(self, v: _V) -> list:
        return v.source_segs()

    def event_literal(self, ev: _Event, fvars: dict, lines: list[str], ind: str) -> str:
        """Statements building the nested records (copies of prebuilt templates, which is ~3x faster
        than big dict literals) and the expression of the event dict itself."""
        b = _EventBuilder(self, ev, fvars, lines, ind)
        items = []
        for f in self.model.envelope:
            if f.fields:
                e = b.record(f.fields, "_r")
            else:
                e = b.expr_for(f)
                if e is None:
                    d = _default_of(f)
                    e = repr(d) if isinstance(d, (str, int, float, bool, type(None))) else self.const(d)
            if f.name == "platform_metadata":
                items.append(f"'attributes': {b.record(self.model.event_types[ev.type].fields, '_a')}")
            items.append(f"{f.name!r}: {e}")
        return "{" + ", ".join(items) + "}"

    def build(self) -> tuple[Callable, str, dict]:
        plan = self.plan
        fns = [(ev, self.event_fn(ev)) for ev in plan.events]
        lines = ["def _run(p, ctx, fail):"]
        ind = "    "
        table: dict = {}
        csegs = []
        for ev, _ in fns:
            if ev.when is not None:
                csegs.extend(_cond_segs(ev.when))
        self.getters(csegs, lines, ind, table)
        types = ", ".join(sorted({ev.type for ev in plan.events}))
        unmatched_msg = f"no event rule matched this payload (rules make: {types})"
        if plan.match == "first":
            for ev, fn in fns:
                if ev.when is None:
                    lines.append(f"{ind}return [{fn}(p, ctx, fail)]")
                    break
                lines.append(f"{ind}if {self.cond(ev.when, table)}:")
                lines.append(f"{ind}    return [{fn}(p, ctx, fail)]")
            else:
                if plan.unmatched == "error":
                    lines.append(f"{ind}fail('/', {unmatched_msg!r})")
                lines.append(f"{ind}return []")
        else:
            lines.append(f"{ind}out = []")
            for ev, fn in fns:
                if ev.when is None:
                    lines.append(f"{ind}out.append({fn}(p, ctx, fail))")
                else:
                    lines.append(f"{ind}if {self.cond(ev.when, table)}:")
                    lines.append(f"{ind}    out.append({fn}(p, ctx, fail))")
            if plan.unmatched == "error":
                lines.append(f"{ind}if not out:")
                lines.append(f"{ind}    fail('/', {unmatched_msg!r})")
            lines.append(f"{ind}return out")
        self.src.append("\n".join(lines))
        source = "\n\n".join(self.src) + "\n"
        exec(compile(source, "<mapping>", "exec"), self.ns)  # noqa: S102 - generated from a checked spec
        return self.ns["_run"], source, self.ns


def _sure_dict(root: Node | None, segs: tuple) -> bool:
    """True when every payload valid for the schema has an object at ``segs``."""
    node = root
    if node is None:
        return False
    for kind, val in segs:
        if kind != "key" or node.kind != "record":
            return False
        f = node.field(val)
        if f is None or f.has_default or f.node.nullable:
            return False
        node = f.node
    return node.kind in ("record", "map")


def _can_fail(v: _V) -> bool:
    if v.transforms or v.kind == "template":
        return True
    return v.kind == "first" and any(_can_fail(i) for i in v.items)


def _default_of(f: CanonicalField) -> Any:
    return f.default if f.has_default else None


class _EventBuilder:
    """Expressions for the fields of one generated event dict."""

    def __init__(self, gen: _Codegen, ev: _Event, fvars: dict, lines: list[str], ind: str):
        self.gen, self.ev, self.fvars, self.lines, self.ind = gen, ev, fvars, lines, ind

    def expr_for(self, f: CanonicalField) -> str | None:
        """The expression for a leaf field, or None for its default."""
        path = f.path
        special = {"event_id": "_eid", "event_type": repr(self.ev.type), "platform_metadata": "_md"}
        if path in special:
            return special[path]
        if path in _PIPELINE_EXPR:
            return _PIPELINE_EXPR[path]
        e = self.fvars.get(path)
        if path == "product":
            if e is None or e == "None":
                return "ctx.product"
            return f"({e} if {e} is not None else ctx.product)" if e.isidentifier() else e
        return e

    def record(self, fields, var_prefix: str) -> str:
        gen, ind = self.gen, self.ind
        if len(fields) <= 4:  # small records: a literal is cheaper than copy + assignments
            parts = []
            for f in fields:
                e = self.record(f.fields, "_r") if f.fields else self.expr_for(f)
                parts.append(f"{f.name!r}: {gen.const(_default_of(f)) if e is None else e}")
            return "{" + ", ".join(parts) + "}"
        tpl = {f.name: _default_of(f) for f in fields}
        for f in fields:  # constants go straight into the template
            if _PIPELINE_EXPR.get(f.path) == "_NORMALIZER_VERSION":
                tpl[f.name] = NORMALIZER_VERSION
        var = gen.uniq(var_prefix)
        self.lines.append(f"{ind}{var} = {gen.const(tpl, '_tpl')}.copy()")
        for f in fields:
            e = self.record(f.fields, "_r") if f.fields else self.expr_for(f)
            if e is not None and e != "_NORMALIZER_VERSION":
                self.lines.append(f"{ind}{var}[{f.name!r}] = {e}")
        return var


def _cond_segs(c: _Cond) -> list:
    if c.op in ("all", "any", "not"):
        return [s for sub in c.subs for s in _cond_segs(sub)]
    return [c.segs]


def _tree_add(tree: dict, segs: tuple) -> None:
    if any(k == "index" for k, _ in segs):
        return  # paths through arrays leave the array whole in platform_metadata
    node = tree
    for i, (_, key) in enumerate(segs):
        last = i == len(segs) - 1
        cur = node.get(key)
        if cur is True:
            return
        if last:
            node[key] = True
            return
        if cur is None:
            cur = node[key] = {}
        node = cur


def _segs_text(segs) -> str:
    out = []
    for k, v in segs:
        if k == "index":
            out.append(f"[{v}]")
        else:
            out.append(("." if out else "") + str(v))
    return "".join(out)


def _raise(path: str, message: str) -> None:
    raise MappingFailure(path, message)


class CompiledMapping:
    """A mapping compiled for one contract version. ``cm(payload, ctx)`` → list of canonical event dicts."""

    __slots__ = ("schema", "mapping", "source", "event_types", "_run")

    def __init__(self, schema: Any, mapping: Any, run: Callable, source: str, event_types: tuple[str, ...]):
        self.schema = schema
        self.mapping = mapping
        self.source = source
        self.event_types = event_types
        self._run = run

    def __call__(self, payload: dict, ctx: SourceContext) -> list[dict]:
        if payload.__class__ is not dict:
            raise MappingFailure("/", f"payload must be a JSON object, not {json_type_name(payload)}")
        return self._run(payload, ctx, _raise)

    def collect(self, payload: Any, ctx: SourceContext) -> tuple[list[dict], list[MappingFailure]]:
        """Map without stopping at the first failure: every event, and every failure (for previews)."""
        failures: list[MappingFailure] = []
        if not isinstance(payload, dict):
            return [], [MappingFailure("/", f"payload must be a JSON object, not {json_type_name(payload)}")]

        def fail(path: str, message: str) -> None:
            failures.append(MappingFailure(path, message))

        try:
            events = self._run(payload, ctx, fail)
        except Exception as e:  # pragma: no cover - generated code guards each field
            failures.append(MappingFailure("/", f"cannot map: {_exc_text(e)}"))
            events = []
        return events, failures


def compile_mapping(schema: dict, mapping: dict, model: CanonicalModel | None = None) -> CompiledMapping:
    """Check and compile a mapping spec; raises ``MappingSpecError(errors)`` when the check fails."""
    errors, compiled = _check_and_build(schema, mapping, model or load_canonical_model())
    if errors or compiled is None:
        raise MappingSpecError(errors or [MappingError("/", "invalid mapping spec")])
    return compiled


# =============================================================================================
# Preview
# =============================================================================================

_canonical_validator = None


def _canon_validator():
    global _canonical_validator
    if _canonical_validator is None:
        _canonical_validator = compile_validator(canonical_avro_schema())
    return _canonical_validator


def preview(schema: dict, mapping: dict, payload: Any, ctx: SourceContext) -> PreviewResult:
    """Validate ``payload`` against ``schema``, check ``mapping``, map the payload; every error of
    every stage is listed. Never raises.

    Stages: ``schema`` — the payload does not match the contract schema (or the schema is not valid
    Avro); path points into the payload. ``mapping`` — the spec has a problem; path points into the
    spec. ``payload`` — this payload could not be mapped (a value that does not convert, a required
    field that is null) or the resulting event breaks the canonical model; path points into the
    payload (or, for canonical problems, into the event).
    """
    return preview_many(schema, mapping, [payload], ctx)[1][0]


def preview_many(
    schema: dict, mapping: dict, payloads: list[Any], ctx: SourceContext
) -> tuple[list[MappingError], list[PreviewResult]]:
    """``mapping_check`` and a ``preview`` of each payload, compiling the schema's validator and the
    mapping once for all of them (the version editor previews every sample on each keystroke).
    Never raises."""
    try:
        merrs, cm = _check_and_build(schema, mapping, load_canonical_model())
    except Exception as e:  # pragma: no cover - last line of defence for the portal
        merrs, cm = [MappingError("/", f"internal error while checking the mapping: {_exc_text(e)}")], None
    if not payloads:
        return merrs, []
    errors: list[dict] = []
    try:
        validator = compile_validator(schema)
    except Exception as e:
        detail = str(e) if isinstance(e, SchemaError) else _exc_text(e)
        errors.append({"stage": "schema", "path": "/", "message": f"the schema is not valid Avro: {detail}"})
        validator = None
    return merrs, [_preview_one(validator, merrs, cm, payload, ctx, list(errors)) for payload in payloads]


def _preview_one(
    validator: Any, merrs: list[MappingError], cm: CompiledMapping | None, payload: Any, ctx: SourceContext,
    errors: list[dict],
) -> PreviewResult:
    events: list[dict] = []
    try:
        schema_ok = validator is not None
        if schema_ok:
            errors.extend({"stage": "schema", "path": ve.path, "message": ve.message} for ve in validator(payload))
        for me in merrs:
            if (
                not schema_ok
                and me.path == "/"
                and me.message.startswith("the source schema is not valid Avro")
            ):
                continue  # already reported at the schema stage
            errors.append({"stage": "mapping", "path": me.path, "message": me.message})
        if merrs or cm is None:
            return PreviewResult(events, errors)
        events, failures = cm.collect(payload, ctx)
        errors.extend({"stage": "payload", "path": f.path, "message": f.message} for f in failures)
        cv = _canon_validator()
        for i, ev in enumerate(events):
            for ce in cv(to_natural_json(ev)):
                message = f"canonical event {i} ({ev.get('event_type')}) does not conform: {ce.message}"
                errors.append({"stage": "payload", "path": ce.path, "message": message})
    except Exception as e:  # pragma: no cover - last line of defence for the portal
        errors.append(
            {"stage": "payload", "path": "/", "message": f"internal error during preview: {_exc_text(e)}"}
        )
    return PreviewResult(events, errors)

