"""Compiled validation of natural-JSON payloads against Avro schemas.

``compile_validator(schema)`` turns an Avro schema into a ``Validator``: a callable taking a decoded
JSON payload and returning a list of ``ValidationError(path, message)`` (empty when valid).

What "natural JSON" means here (how sources actually send data, not Avro's JSON encoding):

* records are objects; union values are plain values (no ``{"string": "x"}`` wrappers);
* ``int``/``long`` are JSON integers within 32/64-bit range; ``true``/``false`` are NOT integers;
* ``float``/``double`` accept any JSON number (integers included), never booleans;
* ``bytes`` and ``fixed`` are strings whose characters are bytes (code points 0-255, as in Avro's
  JSON encoding); a ``fixed`` string has exactly ``size`` characters;
* enums are strings that must be one of the symbols;
* logical types are checked on their base type (``timestamp-micros`` is a long, ``uuid`` a string);
* a missing field is fine when it has a default or its type allows null (same as fastavro);
* map keys must be strings (JSON objects always have string keys; Python dicts may not);
* **extra fields not in the schema are allowed** at every level: the mapping keeps them in the
  canonical event's ``platform_metadata`` (rule ``"rest"``) so nothing a producer sends is lost,
  and producers can roll out new fields before their contract version lands.

Design: the schema is compiled once into specialised Python source (one function per record,
array and map; primitives inlined as expressions) and ``exec``-ed. The fast check returns a bool;
only when it fails does a second, interpreted walk collect every error with its JSON-pointer path
(``/session/started_at``, ``/messages/3/text``; the payload root is ``/``). At most
``MAX_ERRORS`` errors are listed (the last one says how many more there were).

Pure: no Django, no network, no clock.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ValidationError",
    "SchemaError",
    "Validator",
    "compile_validator",
    "parse_avro_schema",
    "Node",
    "json_type_name",
    "pointer",
]

MAX_ERRORS = 1000

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1

PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ValidationError:
    path: str
    message: str


class SchemaError(ValueError):
    """The Avro schema itself is invalid."""


# ---------------------------------------------------------------------------------------------
# Schema parsing into a small node graph (shared with the mapping compiler)
# ---------------------------------------------------------------------------------------------


class Node:
    """A resolved Avro type. ``kind`` is a primitive name or record/enum/array/map/fixed/union.

    Named types are shared objects, so recursive schemas form cycles.
    """

    __slots__ = (
        "kind",
        "name",
        "fields",
        "items",
        "values",
        "symbols",
        "size",
        "branches",
        "logical",
        "uid",
        "doc",
    )

    def __init__(self, kind: str, uid: int):
        self.kind = kind
        self.uid = uid
        self.name: str | None = None
        self.fields: list[FieldNode] = []
        self.items: Node | None = None
        self.values: Node | None = None
        self.symbols: tuple[str, ...] = ()
        self.size = 0
        self.branches: list[Node] = []
        self.logical: str | None = None
        self.doc: str | None = None

    # helpers used by the mapping compiler ---------------------------------------------------
    @property
    def nullable(self) -> bool:
        return self.kind == "null" or (self.kind == "union" and any(b.kind == "null" for b in self.branches))

    def non_null(self) -> list[Node]:
        if self.kind == "union":
            return [b for b in self.branches if b.kind != "null"]
        if self.kind == "null":
            return []
        return [self]

    def field(self, name: str) -> FieldNode | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None

    def label(self) -> str:
        if self.kind in ("record", "enum", "fixed"):
            return f"{self.kind} {self.name}"
        if self.kind == "array":
            return f"array<{self.items.label()}>"
        if self.kind == "map":
            return f"map<{self.values.label()}>"
        if self.kind == "union":
            return " | ".join(b.label() for b in self.branches)
        if self.logical:
            return f"{self.kind} ({self.logical})"
        return self.kind

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Node({self.label()})"


class FieldNode:
    __slots__ = ("name", "node", "has_default", "default", "doc")

    def __init__(self, name: str, node: Node, has_default: bool, default: Any, doc: str | None):
        self.name = name
        self.node = node
        self.has_default = has_default
        self.default = default
        self.doc = doc


class _Parser:
    def __init__(self) -> None:
        self.named: dict[str, Node] = {}
        self.uid = 0

    def new(self, kind: str) -> Node:
        self.uid += 1
        return Node(kind, self.uid)

    def fullname(self, name: Any, namespace: Any, where: str) -> tuple[str, str | None]:
        if not isinstance(name, str) or not name:
            raise SchemaError(f"{where}: a named type needs a non-empty string 'name'")
        if namespace is not None and not isinstance(namespace, str):
            raise SchemaError(f"{where}: 'namespace' must be a string")
        if "." in name:
            full = name
            ns = name.rsplit(".", 1)[0]
        else:
            full = f"{namespace}.{name}" if namespace else name
            ns = namespace or None
        for part in full.split("."):
            if not _NAME_RE.match(part):
                raise SchemaError(f"{where}: invalid name {full!r}")
        return full, ns

    def register(self, full: str, node: Node, where: str) -> None:
        if full in self.named or full in PRIMITIVES:
            raise SchemaError(f"{where}: type {full!r} is defined twice")
        node.name = full
        self.named[full] = node

    def parse(self, s: Any, ns: str | None, where: str) -> Node:
        if isinstance(s, str):
            return self.parse_name(s, ns, where)
        if isinstance(s, list):
            return self.parse_union(s, ns, where)
        if not isinstance(s, dict):
            raise SchemaError(f"{where}: a type must be a name, an object or a list, not {json_type_name(s)}")
        t = s.get("type")
        if isinstance(t, str) and t in PRIMITIVES:
            node = self.new(t)
            node.logical = s.get("logicalType") if isinstance(s.get("logicalType"), str) else None
            return node
        handler = self.COMPLEX.get(t) if isinstance(t, str) else None
        if handler is not None:
            return handler(self, s, ns, where)
        if isinstance(t, (dict, list, str)):
            # {"type": {...}} and {"type": "Name"} are tolerated by most tools: the inner type
            return self.parse(t, ns, f"{where}/type")
        raise SchemaError(f"{where}: missing or invalid 'type'")

    def parse_name(self, s: str, ns: str | None, where: str) -> Node:
        if s in PRIMITIVES:
            return self.new(s)
        candidates = [s] if "." in s else ([f"{ns}.{s}", s] if ns else [s])
        for c in candidates:
            if c in self.named:
                return self.named[c]
        hint = difflib.get_close_matches(s, list(PRIMITIVES) + list(self.named), n=1)
        raise SchemaError(f"{where}: unknown type {s!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))

    def parse_union(self, s: list, ns: str | None, where: str) -> Node:
        if not s:
            raise SchemaError(f"{where}: a union needs at least one branch")
        node = self.new("union")
        seen: set[str] = set()
        for i, b in enumerate(s):
            if isinstance(b, list):
                raise SchemaError(f"{where}/{i}: a union may not contain another union")
            bn = self.parse(b, ns, f"{where}/{i}")
            key = bn.name if bn.kind in ("record", "enum", "fixed") else bn.kind
            if key in seen:
                raise SchemaError(f"{where}/{i}: union holds {key!r} twice")
            seen.add(key)
            node.branches.append(bn)
        return node

    def parse_record(self, s: dict, ns: str | None, where: str) -> Node:
        full, new_ns = self.fullname(s.get("name"), s.get("namespace", ns), where)
        node = self.new("record")
        node.doc = s.get("doc") if isinstance(s.get("doc"), str) else None
        self.register(full, node, where)
        fields = s.get("fields")
        if not isinstance(fields, list):
            raise SchemaError(f"{where}: record {full!r} needs a 'fields' list")
        names: set[str] = set()
        for i, f in enumerate(fields):
            node.fields.append(self.parse_field(f, names, new_ns, f"{where}/fields/{i}"))
        return node

    def parse_field(self, f: Any, names: set, ns: str | None, fw: str) -> FieldNode:
        if not isinstance(f, dict):
            raise SchemaError(f"{fw}: a field must be an object")
        fname = f.get("name")
        if not isinstance(fname, str) or not _NAME_RE.match(fname):
            raise SchemaError(f"{fw}: invalid field name {fname!r}")
        if fname in names:
            raise SchemaError(f"{fw}: field {fname!r} is defined twice")
        names.add(fname)
        if "type" not in f:
            raise SchemaError(f"{fw}: field {fname!r} has no 'type'")
        fnode = self.parse(f["type"], ns, f"{fw}/type")
        doc = f.get("doc") if isinstance(f.get("doc"), str) else None
        return FieldNode(fname, fnode, "default" in f, f.get("default"), doc)

    def parse_enum(self, s: dict, ns: str | None, where: str) -> Node:
        full, _ = self.fullname(s.get("name"), s.get("namespace", ns), where)
        node = self.new("enum")
        syms = s.get("symbols")
        if not isinstance(syms, list) or not all(isinstance(x, str) and _NAME_RE.match(x) for x in syms):
            raise SchemaError(f"{where}: enum {full!r} needs a list of symbol names")
        if len(set(syms)) != len(syms):
            raise SchemaError(f"{where}: enum {full!r} repeats a symbol")
        node.symbols = tuple(syms)
        self.register(full, node, where)
        return node

    def parse_fixed(self, s: dict, ns: str | None, where: str) -> Node:
        full, _ = self.fullname(s.get("name"), s.get("namespace", ns), where)
        node = self.new("fixed")
        size = s.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise SchemaError(f"{where}: fixed {full!r} needs a non-negative integer 'size'")
        node.size = size
        node.logical = s.get("logicalType") if isinstance(s.get("logicalType"), str) else None
        self.register(full, node, where)
        return node

    def parse_array(self, s: dict, ns: str | None, where: str) -> Node:
        if "items" not in s:
            raise SchemaError(f"{where}: array needs 'items'")
        node = self.new("array")
        node.items = self.parse(s["items"], ns, f"{where}/items")
        return node

    def parse_map(self, s: dict, ns: str | None, where: str) -> Node:
        if "values" not in s:
            raise SchemaError(f"{where}: map needs 'values'")
        node = self.new("map")
        node.values = self.parse(s["values"], ns, f"{where}/values")
        return node

    COMPLEX: dict[str, Callable] = {
        "record": parse_record,
        "error": parse_record,
        "enum": parse_enum,
        "fixed": parse_fixed,
        "array": parse_array,
        "map": parse_map,
    }


def parse_avro_schema(schema: Any) -> Node:
    """Parse an Avro schema (dict, list, type name, or its JSON text) into a ``Node`` graph.

    Raises ``SchemaError`` with a JSON-pointer-like location for invalid schemas.
    """
    if isinstance(schema, (bytes, bytearray)):
        schema = schema.decode("utf-8", "replace")
    if isinstance(schema, str) and schema.lstrip()[:1] in ("{", "[", '"'):
        try:
            schema = json.loads(schema)
        except ValueError as e:
            raise SchemaError(f"schema is not valid JSON: {e}") from None
    try:
        return _Parser().parse(schema, None, "")
    except RecursionError:
        raise SchemaError("schema is nested too deeply") from None


# ---------------------------------------------------------------------------------------------
# Code generation of the fast check
# ---------------------------------------------------------------------------------------------


def _latin1(s: str) -> bool:
    try:
        s.encode("latin-1")
        return True
    except UnicodeEncodeError:
        return False


class _Gen:
    def __init__(self) -> None:
        self.funcs: dict[int, str] = {}
        self.src: list[str] = []
        self.ns: dict[str, Any] = {"_NUM": frozenset((int, float)), "_latin1": _latin1, "_M": object()}
        self.n = 0

    def const(self, value: Any) -> str:
        self.n += 1
        name = f"_k{self.n}"
        self.ns[name] = value
        return name

    def expr(self, node: Node, v: str) -> str:
        k = node.kind
        if k == "null":
            return f"{v} is None"
        if k == "boolean":
            return f"{v}.__class__ is bool"
        if k == "int":
            return f"({v}.__class__ is int and {INT_MIN} <= {v} <= {INT_MAX})"
        if k == "long":
            return f"({v}.__class__ is int and {LONG_MIN} <= {v} <= {LONG_MAX})"
        if k in ("float", "double"):
            return f"{v}.__class__ in _NUM"
        if k == "string":
            return f"{v}.__class__ is str"
        if k == "bytes":
            return f"({v}.__class__ is str and ({v}.isascii() or _latin1({v})))"
        if k == "fixed":
            return f"({v}.__class__ is str and len({v}) == {node.size} and ({v}.isascii() or _latin1({v})))"
        if k == "enum":
            return f"({v}.__class__ is str and {v} in {self.const(frozenset(node.symbols))})"
        if k == "union":
            parts = [self.expr(b, v) for b in node.branches]
            return "(" + " or ".join(parts) + ")"
        return f"{self.func(node)}({v})"

    def func(self, node: Node) -> str:
        if node.uid in self.funcs:
            return self.funcs[node.uid]
        name = f"_{node.kind[0]}{node.uid}"
        self.funcs[node.uid] = name
        lines = [f"def {name}(v):"]
        if node.kind == "record":
            lines.append("    if v.__class__ is not dict: return False")
            if node.fields:
                lines.append("    g = v.get")
            for f in node.fields:
                key = repr(f.name)
                if f.node.nullable or not f.has_default:
                    # missing reads as None: fine for nullable types, an error otherwise
                    lines.append(f"    x = g({key})")
                    lines.append(f"    if not {self.expr(f.node, 'x')}: return False")
                else:
                    lines.append(f"    x = g({key}, _M)")
                    lines.append(f"    if x is not _M and not {self.expr(f.node, 'x')}: return False")
            lines.append("    return True")
        elif node.kind == "array":
            lines.append("    if v.__class__ is not list: return False")
            lines.append("    for x in v:")
            lines.append(f"        if not {self.expr(node.items, 'x')}: return False")
            lines.append("    return True")
        elif node.kind == "map":
            lines.append("    if v.__class__ is not dict: return False")
            lines.append("    for k, x in v.items():")
            lines.append(
                f"        if k.__class__ is not str or not {self.expr(node.values, 'x')}: return False"
            )
            lines.append("    return True")
        else:  # pragma: no cover - primitives never get functions
            lines.append(f"    return {self.expr(node, 'v')}")
        self.src.append("\n".join(lines))
        return name

    def build(self, root: Node) -> tuple[Callable[[Any], bool], str, dict[str, Any]]:
        if root.kind in ("record", "array", "map"):
            entry = self.func(root)
        else:
            self.src.append(f"def _root(v):\n    return {self.expr(root, 'v')}")
            entry = "_root"
        source = "\n\n".join(self.src) + "\n"
        exec(compile(source, "<avro-validator>", "exec"), self.ns)  # noqa: S102 - generated from a parsed schema
        return self.ns[entry], source, self.ns


# ---------------------------------------------------------------------------------------------
# Error walk (slow path, only for invalid payloads)
# ---------------------------------------------------------------------------------------------


def json_type_name(v: Any) -> str:
    if v is None:
        return "null"
    if v is True or v is False:
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, dict):
        return "object"
    if isinstance(v, (list, tuple)):
        return "array"
    return type(v).__name__


def _escape(token: Any) -> str:
    return str(token).replace("~", "~0").replace("/", "~1")


def pointer(parts: list | tuple) -> str:
    """JSON-pointer-like path for a list of keys/indexes; the root is ``/``."""
    if not parts:
        return "/"
    return "".join("/" + _escape(p) for p in parts)


def _join(path: str, token: Any) -> str:
    return ("" if path == "/" else path) + "/" + _escape(token)


def _short(v: Any, limit: int = 40) -> str:
    try:
        r = json.dumps(v, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        r = repr(v)
    return r if len(r) <= limit else r[: limit - 1] + "…"


_EXPECT = {
    "null": "null",
    "boolean": "boolean",
    "int": "integer (int, 32-bit)",
    "long": "integer (long, 64-bit)",
    "float": "number (float)",
    "double": "number (double)",
    "string": "string",
    "bytes": "string (bytes)",
    "fixed": "string (fixed)",
    "enum": "string (enum)",
    "record": "object",
    "map": "object (map)",
    "array": "array",
}

# JSON value class -> node kinds that could accept it (used to pick the union branch to report)
_CANDIDATES = {
    "null": {"null"},
    "boolean": {"boolean"},
    "integer": {"int", "long", "float", "double"},
    "number": {"float", "double"},
    "string": {"string", "bytes", "fixed", "enum"},
    "object": {"record", "map"},
    "array": {"array"},
}


class _Walker:
    def __init__(self, checks: dict[int, Callable[[Any], bool]]):
        self.checks = checks
        self.errors: list[ValidationError] = []
        self.dropped = 0

    def add(self, path: str, message: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(ValidationError(path, message))
        else:
            self.dropped += 1

    def type_error(self, node: Node, v: Any, path: str) -> None:
        what = _EXPECT.get(node.kind, node.kind)
        if node.kind in ("record", "enum", "fixed"):
            what += f" {node.name}"
        if node.logical:
            what += f" ({node.logical})"
        self.add(path, f"expected {what}, got {json_type_name(v)}")

    def walk(self, node: Node, v: Any, path: str) -> None:
        if self.checks[node.uid](v):
            return
        before = len(self.errors) + self.dropped
        self._walk(node, v, path)
        if len(self.errors) + self.dropped == before:  # safety net: never report "invalid" silently
            self.add(path, f"invalid value for {node.label()}: {_short(v)}")

    def _walk(self, node: Node, v: Any, path: str) -> None:
        handler = self.KINDS.get(node.kind)
        if handler is None:
            self.type_error(node, v, path)
        else:
            handler(self, node, v, path)

    def _walk_integer(self, node: Node, v: Any, path: str) -> None:
        if type(v) is not int:
            self.type_error(node, v, path)
            return
        k = node.kind
        lo, hi = (INT_MIN, INT_MAX) if k == "int" else (LONG_MIN, LONG_MAX)
        self.add(path, f"{v} is out of range for {k} ({'32' if k == 'int' else '64'}-bit: {lo} to {hi})")

    def _walk_bytes(self, node: Node, v: Any, path: str) -> None:
        if type(v) is not str:
            self.type_error(node, v, path)
        elif node.kind == "fixed" and len(v) != node.size:
            self.add(path, f"expected {node.size} bytes for fixed {node.name}, got {len(v)}")
        else:
            self.add(path, f"{node.kind} string may only hold characters \\u0000-\\u00ff (one per byte)")

    def _walk_enum(self, node: Node, v: Any, path: str) -> None:
        if type(v) is not str:
            self.type_error(node, v, path)
            return
        syms = ", ".join(node.symbols[:20]) + (", …" if len(node.symbols) > 20 else "")
        msg = f"{_short(v)} is not a symbol of enum {node.name} (allowed: {syms})"
        close = difflib.get_close_matches(v, node.symbols, n=1)
        if close:
            msg += f'; did you mean "{close[0]}"?'
        self.add(path, msg)

    def _walk_record(self, node: Node, v: Any, path: str) -> None:
        if type(v) is not dict:
            self.type_error(node, v, path)
            return
        for f in node.fields:
            fpath = _join(path, f.name)
            if f.name in v:
                self.walk(f.node, v[f.name], fpath)
            elif not (f.has_default or f.node.nullable):
                self.add(fpath, f"required field is missing ({f.node.label()})")

    def _walk_array(self, node: Node, v: Any, path: str) -> None:
        if type(v) is not list:
            self.type_error(node, v, path)
            return
        check = self.checks[node.items.uid]
        for i, x in enumerate(v):
            if not check(x):
                self.walk(node.items, x, _join(path, i))

    def _walk_map(self, node: Node, v: Any, path: str) -> None:
        if type(v) is not dict:
            self.type_error(node, v, path)
            return
        check = self.checks[node.values.uid]
        for key, x in v.items():
            if type(key) is not str:
                self.add(_join(path, key), f"map key must be a string, got {json_type_name(key)}")
            elif not check(x):
                self.walk(node.values, x, _join(path, key))

    def _walk_union(self, node: Node, v: Any, path: str) -> None:
        cands = [b for b in node.branches if b.kind in _CANDIDATES.get(json_type_name(v), ())]
        if len(cands) == 1:
            self._walk(cands[0], v, path)
            return
        if not cands:
            names = ", ".join(b.label() for b in node.branches)
            self.add(path, f"expected one of [{names}], got {json_type_name(v)}")
            return
        # several branches could take this JSON type: report the closest one
        best = None
        for b in cands:
            sub = _Walker(self.checks)
            sub.walk(b, v, path)
            if best is None or len(sub.errors) + sub.dropped < len(best.errors) + best.dropped:
                best = sub
        for e in best.errors:
            self.add(e.path, e.message)
        self.dropped += best.dropped

    KINDS: dict[str, Callable] = {
        "int": _walk_integer,
        "long": _walk_integer,
        "bytes": _walk_bytes,
        "fixed": _walk_bytes,
        "enum": _walk_enum,
        "record": _walk_record,
        "array": _walk_array,
        "map": _walk_map,
        "union": _walk_union,
    }


def _all_nodes(root: Node) -> list[Node]:
    seen: dict[int, Node] = {}
    stack = [root]
    while stack:
        n = stack.pop()
        if n.uid in seen:
            continue
        seen[n.uid] = n
        stack.extend(f.node for f in n.fields)
        if n.items is not None:
            stack.append(n.items)
        if n.values is not None:
            stack.append(n.values)
        stack.extend(n.branches)
    return list(seen.values())


class Validator:
    """A compiled validator for one schema. Call it with a decoded JSON payload."""

    __slots__ = ("schema", "root", "source", "is_valid", "_checks")

    def __init__(self, schema: Any, root: Node, is_valid: Callable[[Any], bool], source: str, checks: dict):
        self.schema = schema
        self.root = root
        self.source = source
        #: the fast check alone: ``True`` when the payload is valid
        self.is_valid = is_valid
        self._checks = checks

    def __call__(self, payload: Any) -> list[ValidationError]:
        try:
            if self.is_valid(payload):
                return []
        except RecursionError:
            return [ValidationError("/", "payload is nested too deeply to validate")]
        return self.errors(payload)

    def errors(self, payload: Any) -> list[ValidationError]:
        """Every error of an invalid payload (the slow path)."""
        w = _Walker(self._checks)
        try:
            w.walk(self.root, payload, "/")
        except RecursionError:
            w.add("/", "payload is nested too deeply to validate")
        if w.dropped:
            w.errors.append(ValidationError("/", f"… and {w.dropped} more errors"))
        return w.errors


def compile_validator(schema: Any) -> Validator:
    """Compile an Avro schema (dict/list/name or JSON text) into a fast ``Validator``.

    Raises ``SchemaError`` if the schema is not valid Avro.
    """
    root = parse_avro_schema(schema)
    gen = _Gen()
    try:
        fast, source, ns = gen.build(root)
        # a check per node for the error walk: functions for complex nodes, lambdas for the rest
        checks: dict[int, Callable[[Any], bool]] = {}
        for n in _all_nodes(root):
            if n.uid in gen.funcs:
                checks[n.uid] = ns[gen.funcs[n.uid]]
            else:
                checks[n.uid] = eval(f"lambda v: {gen.expr(n, 'v')}", ns)  # noqa: S307 - generated
    except RecursionError:
        raise SchemaError("schema is nested too deeply") from None
    return Validator(schema, root, fast, source, checks)
