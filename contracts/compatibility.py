"""Avro schema compatibility for event contracts.

Checks a proposed Avro schema against the earlier versions of the same subject under a
compatibility mode, following the "Schema Resolution" section of the Avro 1.12 specification,
and reports every difference as a :class:`Change` a platform engineer can act on.

Pure module: no Django, no network, no clock. ``avro.schema.parse`` is used as the final judge
of schema validity; resolution itself is implemented here (the ``avro`` package's
``ReaderWriterCompatibilityChecker`` mishandles unqualified aliases, see docs/compatibility.md).

Vocabulary used throughout:

* reader / writer -- the schema that reads data / the schema the data was written with;
* "backward" direction -- the new schema reads data written with an earlier version
  (reader = new, writer = old);
* "forward" direction -- an earlier version reads data written with the new schema
  (reader = old, writer = new).

Paths name things, they never use positions: ``/`` is the top-level schema, ``/fields/<name>`` a
field (and that field's type), ``/items`` an array's items, ``/values`` a map's values and
``/[<branch>]`` a union branch, where ``<branch>`` is the branch's type name (``null``, ``long``,
``array``, ``map``) or a named type's full name (``com.acme.Session``). Example:
``/fields/payload/[com.acme.Session]/fields/started_at``.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import json
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, TypeAlias

import avro.schema

__all__ = [
    "DIFF_RULES",
    "RULES",
    "Change",
    "CompatibilityMode",
    "CompatibilityReport",
    "SchemaError",
    "check_compatibility",
    "diff_changes",
    "parse_compatibility_mode",
    "parse_record_schema",
    "parse_schema",
]

SchemaInput: TypeAlias = str | dict[str, Any] | list[Any]
"""JSON text, or an already-decoded JSON value (dict for an object schema, list for a union)."""

JsonSchema: TypeAlias = dict[str, Any] | list[Any] | str
"""A decoded Avro schema, as returned by :func:`parse_schema`."""

BACKWARD: Final = "backward"
FORWARD: Final = "forward"
DIFF: Final = "diff"

ERROR: Final = "error"
WARNING: Final = "warning"
INFO: Final = "info"

RULES: Final[Mapping[str, str]] = MappingProxyType(
    {
        # Breaking in the direction they are reported for.
        "TYPE_MISMATCH": ERROR,
        "NAME_MISMATCH": ERROR,
        "FIXED_SIZE_MISMATCH": ERROR,
        "DECIMAL_MISMATCH": ERROR,
        "MISSING_ENUM_SYMBOLS": ERROR,
        "MISSING_UNION_BRANCH": ERROR,
        "READER_FIELD_MISSING_DEFAULT": ERROR,
        "FIELD_REMOVED_WITHOUT_DEFAULT": ERROR,
        # Data still resolves, but values may silently change meaning.
        "ENUM_DEFAULT_USED": WARNING,
        "TYPE_PROMOTED_LOSSY": WARNING,
        "LOGICAL_TYPE_CHANGED": WARNING,
        # Additive or harmless.
        "FIELD_ADDED_WITH_DEFAULT": INFO,
        "FIELD_REMOVED_WITH_DEFAULT": INFO,
        "FIELD_ADDED": INFO,
        "FIELD_REMOVED": INFO,
        "FIELD_RENAMED": INFO,
        "TYPE_RENAMED": INFO,
        "NAMESPACE_CHANGED": INFO,
        "TYPE_PROMOTED": INFO,
        "ENUM_SYMBOL_ADDED": INFO,
        "ENUM_SYMBOL_REMOVED": INFO,
        "UNION_BRANCH_ADDED": INFO,
        "UNION_BRANCH_REMOVED": INFO,
    }
)
"""Every rule :func:`check_compatibility` can report, with its severity (before mode NONE
downgrades errors to warnings)."""

DIFF_RULES: Final[frozenset[str]] = frozenset(
    {
        "FIELD_ADDED",
        "FIELD_REMOVED",
        "FIELD_RENAMED",
        "TYPE_CHANGED",
        "DEFAULT_ADDED",
        "DEFAULT_REMOVED",
        "DEFAULT_CHANGED",
        "ENUM_SYMBOL_ADDED",
        "ENUM_SYMBOL_REMOVED",
        "ENUM_DEFAULT_CHANGED",
        "UNION_BRANCH_ADDED",
        "UNION_BRANCH_REMOVED",
        "FIXED_SIZE_CHANGED",
        "TYPE_RENAMED",
        "NAMESPACE_CHANGED",
        "LOGICAL_TYPE_CHANGED",
    }
)
"""Rules :func:`diff_changes` can report (all with severity ``info`` and direction ``diff``)."""

_SEVERITY_RANK: Final = {ERROR: 0, WARNING: 1, INFO: 2}

_MAX_DEPTH: Final = 64
"""Deepest nesting (fields, items, values, union branches) a schema may have."""

_RECORD_VISIT_BUDGET: Final = 2000
"""Record pairs compared at every path where they occur before falling back to once per pair
(guards against exponential work on schemas that share named types at many paths)."""


# --------------------------------------------------------------------------------------------
# Public types
# --------------------------------------------------------------------------------------------


class CompatibilityMode(enum.StrEnum):
    """Compatibility level of a subject (the names Confluent's Schema Registry uses)."""

    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"
    NONE = "NONE"

    @classmethod
    def _missing_(cls, value: object) -> CompatibilityMode | None:
        """Lets ``CompatibilityMode("full-transitive")`` work like :meth:`parse`."""
        if isinstance(value, str):
            key = re.sub(r"[\s-]+", "_", value.strip()).upper()
            if key in cls.__members__:
                return cls[key]
        return None

    @classmethod
    def parse(cls, value: str | CompatibilityMode) -> CompatibilityMode:
        """Parse a user-supplied level, case-insensitively ("full-transitive" works too).

        Raises ValueError naming the valid levels.
        """
        if isinstance(value, cls):
            return value
        found = cls._missing_(value)
        if found is not None:
            return found
        valid = ", ".join(member.value for member in cls)
        raise ValueError(f"Unknown compatibility mode {value!r}; valid levels are {valid}.")

    @property
    def transitive(self) -> bool:
        """True when every earlier version is checked, not only the latest."""
        return self.value.endswith("_TRANSITIVE")

    @property
    def directions(self) -> tuple[str, ...]:
        """The resolution directions this mode checks ("backward", "forward")."""
        if self.value.startswith("BACKWARD"):
            return (BACKWARD,)
        if self.value.startswith("FORWARD"):
            return (FORWARD,)
        return (BACKWARD, FORWARD)


def parse_compatibility_mode(value: str | CompatibilityMode) -> CompatibilityMode:
    """Function form of :meth:`CompatibilityMode.parse`."""
    return CompatibilityMode.parse(value)


class SchemaError(ValueError):
    """The schema is not valid JSON or not a valid Avro schema.

    ``message`` says what is wrong in a plain sentence; ``path`` says where, using the same
    path syntax as :class:`Change` (``/`` is the whole schema).
    """

    def __init__(self, message: str, path: str = "/") -> None:
        super().__init__(message if path == "/" else f"{message} (at {path})")
        self.message = message
        self.path = path


@dataclass(frozen=True)
class Change:
    """One difference between the proposed schema and an earlier version."""

    path: str
    rule: str
    severity: str
    message: str
    against_version: int | None
    direction: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "rule": self.rule,
            "severity": self.severity,
            "message": self.message,
            "against_version": self.against_version,
            "direction": self.direction,
        }


@dataclass(frozen=True)
class CompatibilityReport:
    """Outcome of :func:`check_compatibility`. ``compatible`` is False iff a change is an error.

    ``new_changes`` are the changes found against ``latest_version`` (the newest version compared),
    as reported against it: what this proposal itself changes. Under a transitive mode ``changes``
    also holds what differs only from older versions, i.e. what an earlier approved version already
    changed; :meth:`grouped_dict` splits the two for reviewers and CI.
    """

    compatible: bool
    mode: str
    changes: list[Change] = field(default_factory=list)
    latest_version: int | None = None
    new_changes: list[Change] = field(default_factory=list)

    @property
    def errors(self) -> list[Change]:
        return [change for change in self.changes if change.severity == ERROR]

    @property
    def older_changes(self) -> list[Change]:
        """Changes found only against versions older than ``latest_version`` (already approved)."""
        new_keys = {_change_key(change) for change in self.new_changes}
        return [change for change in self.changes if _change_key(change) not in new_keys]

    def grouped_dict(self) -> dict[str, Any]:
        """``{"latest_version", "new", "older"}``: the changes new in this proposal, then the rest."""
        return {
            "latest_version": self.latest_version,
            "new": [change.to_dict() for change in self.new_changes],
            "older": [change.to_dict() for change in self.older_changes],
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "compatible": self.compatible,
            "mode": self.mode,
            "changes": [change.to_dict() for change in self.changes],
        }


# --------------------------------------------------------------------------------------------
# Internal schema model
# --------------------------------------------------------------------------------------------

_PRIMITIVES: Final = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")
_COMPLEX: Final = ("record", "enum", "array", "map", "fixed")
_NAMED: Final = frozenset({"record", "enum", "fixed"})
_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_FIELD_ORDERS: Final = frozenset({"ascending", "descending", "ignore"})

# (writer type, reader type) -> may the promotion change or reject values?
_PROMOTIONS: Final[Mapping[tuple[str, str], bool]] = {
    ("int", "long"): False,
    ("int", "float"): True,
    ("int", "double"): False,
    ("long", "float"): True,
    ("long", "double"): True,
    ("float", "double"): False,
    ("string", "bytes"): False,
    ("bytes", "string"): True,
}

# A path step: ("field", name), ("items", ""), ("values", ""), ("branch", label), or a schema
# attribute such as ("default", "") / ("symbols", "") / ("size", "") used by SchemaError paths.
_Step: TypeAlias = tuple[str, str]
_Steps: TypeAlias = tuple[_Step, ...]

_ITEMS: Final[_Step] = ("items", "")
_VALUES: Final[_Step] = ("values", "")


@dataclass(eq=False)
class _Field:
    name: str
    type: _Node
    has_default: bool
    default: Any
    aliases: tuple[str, ...]
    doc: str | None


@dataclass(eq=False)
class _Node:
    """A resolved schema node. Named types are shared, so recursive schemas form cycles."""

    kind: str
    logical: str | None = None
    decimal: tuple[int, int] | None = None  # (precision, scale) of a valid decimal
    name: str = ""
    namespace: str = ""
    fullname: str = ""
    aliases: tuple[str, ...] = ()  # full names
    fields: list[_Field] = dataclasses.field(default_factory=list)
    symbols: tuple[str, ...] = ()
    enum_default: str | None = None
    size: int = 0
    child: _Node | None = None  # array items / map values
    branches: tuple[_Node, ...] = ()

    @property
    def label(self) -> str:
        """How this node is named as a union branch: full name, else the type name."""
        return self.fullname if self.kind in _NAMED else self.kind

    @property
    def inner(self) -> _Node:
        assert self.child is not None
        return self.child

    def field_named(self, name: str) -> _Field | None:
        for candidate in self.fields:
            if candidate.name == name:
                return candidate
        return None


def _render(steps: _Steps) -> str:
    parts: list[str] = []
    for kind, value in steps:
        if kind == "field":
            parts.extend(("fields", value))
        elif kind == "branch":
            parts.append(f"[{value}]")
        else:
            parts.append(kind)
    return "/" + "/".join(parts)


def _dotted(steps: _Steps) -> str:
    """Human name of a location: fields joined by dots, ``[]`` for array items, ``{}`` for map values."""
    out = ""
    for kind, value in steps:
        if kind == "field":
            out = f"{out}.{value}" if out else value
        elif kind == "items":
            out += "[]"
        elif kind == "values":
            out += "{}"
    return out


def _subject(steps: _Steps) -> str:
    """Lower-case noun phrase for a location, e.g. "field 'session.started_at'"."""
    if not steps:
        return "the top-level schema"
    kind, value = steps[-1]
    if kind == "field":
        return f"field '{_dotted(steps)}'"
    if kind == "items":
        return f"the items of {_subject(steps[:-1])}"
    if kind == "values":
        return f"the values of {_subject(steps[:-1])}"
    if kind == "branch":
        return f"the {value} branch of {_subject(steps[:-1])}"
    return _subject(steps[:-1])


def _without_branch(steps: _Steps) -> _Steps:
    return steps[:-1] if steps and steps[-1][0] == "branch" else steps


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _describe(node: _Node) -> str:
    if node.kind in _PRIMITIVES:
        return f"{node.kind} ({node.logical})" if node.logical else node.kind
    if node.kind == "fixed":
        return f"fixed '{node.fullname}' ({node.size} bytes)"
    if node.kind in _NAMED:
        return f"{node.kind} '{node.fullname}'"
    if node.kind == "array":
        return f"array of {_describe(node.inner)}"
    if node.kind == "map":
        return f"map of {_describe(node.inner)}"
    return "union of " + ", ".join(branch.label for branch in node.branches)


def _quoted(items: Sequence[str]) -> str:
    return ", ".join(f"'{item}'" for item in items)


def _json(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _join_name(namespace: str, name: str) -> str:
    return f"{namespace}.{name}" if namespace else name


def _qualify(name: str, namespace: str) -> str:
    return name if "." in name else _join_name(namespace, name)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# --------------------------------------------------------------------------------------------
# Parsing and validation
# --------------------------------------------------------------------------------------------


def _decode(schema: object) -> Any:
    """JSON text -> decoded value; decoded values are normalised through a JSON round trip."""
    if isinstance(schema, str | bytes | bytearray):
        text = schema.decode("utf-8") if isinstance(schema, bytes | bytearray) else schema
        try:
            return json.loads(text)
        except RecursionError as exc:
            raise SchemaError(f"Schema is nested more than {_MAX_DEPTH} levels deep.") from exc
        except json.JSONDecodeError as exc:
            if text.strip() in _PRIMITIVES:  # a bare primitive name such as int
                return text.strip()
            raise SchemaError(
                f"Schema is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
            ) from exc
    try:
        return json.loads(json.dumps(schema))
    except RecursionError as exc:
        raise SchemaError(f"Schema is nested more than {_MAX_DEPTH} levels deep.") from exc
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"Schema is not JSON data: {exc}.") from exc


class _Builder:
    """Validates decoded JSON against the Avro specification and builds :class:`_Node` graphs."""

    def __init__(self) -> None:
        self.names: dict[str, _Node] = {}
        self.defaults: list[tuple[_Field, _Steps]] = []

    def fail(self, message: str, steps: _Steps) -> SchemaError:
        return SchemaError(message, _render(steps))

    def build(self, obj: object, steps: _Steps, namespace: str) -> _Node:
        if len(steps) > _MAX_DEPTH:
            raise self.fail(f"The schema is nested more than {_MAX_DEPTH} levels deep.", steps)
        if isinstance(obj, str):
            return self.reference(obj, steps, namespace)
        if isinstance(obj, list):
            return self.union(obj, steps, namespace)
        if isinstance(obj, dict):
            return self.from_object(obj, steps, namespace)
        raise self.fail(
            f"{_cap(self.what(steps))} must be a type name, a JSON object or a JSON array (a union), "
            f"not {_json_type(obj)}.",
            steps,
        )

    @staticmethod
    def what(steps: _Steps) -> str:
        if not steps:
            return "the schema"
        if steps[-1][0] == "field":
            return f"the type of {_subject(steps)}"
        return _subject(steps)

    # -- references ----------------------------------------------------------------------------

    def reference(self, name: str, steps: _Steps, namespace: str) -> _Node:
        if name in _PRIMITIVES:
            return _Node(kind=name)
        node = self.names.get(_qualify(name, namespace))
        if node is not None:
            return node
        raise self.fail(f"{_cap(self.what(steps))} refers to unknown type '{name}'.{self.hint(name)}", steps)

    def hint(self, name: str) -> str:
        if name in _COMPLEX or name == "union":
            if name == "union":
                return ' Unions are written as JSON arrays, e.g. ["null", "string"].'
            return f' A {name} must be written as an object, e.g. {{"type": "{name}", ...}}.'
        elsewhere = sorted(full for full in self.names if full.rsplit(".", 1)[-1] == name)
        if elsewhere:
            return (
                f" A type named '{elsewhere[0]}' exists in another namespace; refer to it by its full name."
            )
        candidates = [*_PRIMITIVES, *self.names, *(full.rsplit(".", 1)[-1] for full in self.names)]
        close = difflib.get_close_matches(name, candidates, n=1)
        if close:
            return f" Did you mean '{close[0]}'?"
        return (
            " A type is a primitive (null, boolean, int, long, float, double, bytes, string), a record, "
            "enum, array, map or fixed definition, or the name of a type defined earlier in the schema."
        )

    # -- unions ----------------------------------------------------------------------------------

    def union(self, items: list[Any], steps: _Steps, namespace: str) -> _Node:
        if not items:
            raise self.fail(f"{_cap(self.what(steps))} is an empty union; list at least one type.", steps)
        branches: list[_Node] = []
        for position, item in enumerate(items, start=1):
            branch_steps = (*steps, ("branch", self.raw_label(item, namespace, position)))
            if isinstance(item, list):
                raise self.fail(
                    f"{_cap(self.what(steps))} nests a union inside a union; "
                    "list all the types in one union.",
                    branch_steps,
                )
            node = self.build(item, branch_steps, namespace)
            if any(existing.label == node.label for existing in branches):
                raise self.fail(
                    f"{_cap(self.what(steps))} lists {node.label} more than once; a union may contain each "
                    "type only once (named types once per name).",
                    branch_steps,
                )
            branches.append(node)
        return _Node(kind="union", branches=tuple(branches))

    @staticmethod
    def raw_label(item: object, namespace: str, position: int) -> str:
        if isinstance(item, str):
            return item if item in _PRIMITIVES else _qualify(item, namespace)
        if isinstance(item, dict):
            kind = item.get("type")
            name = item.get("name")
            if kind in _NAMED and isinstance(name, str) and name:
                space = item.get("namespace")
                return _qualify(name, space if isinstance(space, str) else namespace)
            if isinstance(kind, str):
                return kind
        return f"#{position}"

    # -- objects ---------------------------------------------------------------------------------

    def from_object(self, obj: dict[str, Any], steps: _Steps, namespace: str) -> _Node:
        if "type" not in obj:
            raise self.fail(f"{_cap(self.what(steps))} is an object without a 'type'.", steps)
        kind = obj["type"]
        if not isinstance(kind, str):
            raise self.fail(
                f"The 'type' of {self.what(steps)} must be a type name string, not {_json_type(kind)}; "
                "to nest a schema, write it in place of this object.",
                steps,
            )
        builders: dict[str, Callable[[dict[str, Any], _Steps, str], _Node]] = {
            "record": self.record,
            "enum": self.enum,
            "fixed": self.fixed,
            "array": self.array,
            "map": self.map,
        }
        if kind in builders:
            return builders[kind](obj, steps, namespace)
        if kind in _PRIMITIVES:
            decimal = _decimal(obj, kind, 0) if kind == "bytes" else None
            return _Node(kind=kind, logical=self.logical(obj, steps), decimal=decimal)
        if kind == "error":
            raise self.fail("'error' types are only allowed in Avro protocols; use 'record'.", steps)
        if self.names.get(_qualify(kind, namespace)) is not None:
            raise self.fail(
                f"Refer to the type '{kind}' with the plain string \"{kind}\", not with an object.", steps
            )
        raise self.fail(f"{_cap(self.what(steps))} has unknown type '{kind}'.{self.hint(kind)}", steps)

    def logical(self, obj: dict[str, Any], steps: _Steps) -> str | None:
        logical = obj.get("logicalType")
        if logical is None:
            return None
        if not isinstance(logical, str):
            raise self.fail(
                f"The logicalType of {self.what(steps)} must be a string, not {_json_type(logical)}.", steps
            )
        return logical

    def named(self, obj: dict[str, Any], steps: _Steps, namespace: str) -> _Node:
        kind: str = obj["type"]
        name = obj.get("name")
        if name is None:
            raise self.fail(
                f"{_cap(self.what(steps))} is a {kind} without a 'name'; records, enums and fixed types "
                "must be named.",
                steps,
            )
        if not isinstance(name, str) or not name:
            raise self.fail(f"The name of {self.what(steps)} must be a non-empty string.", steps)
        space = obj.get("namespace")
        if space is not None and not isinstance(space, str):
            raise self.fail(f"The namespace of {kind} '{name}' must be a string.", steps)
        fullname = name if "." in name else _join_name(namespace if space is None else space, name)
        self.check_fullname(fullname, kind, steps)
        if fullname in self.names:
            raise self.fail(
                f"The name '{fullname}' is defined more than once; define it once and refer to it by "
                "name elsewhere.",
                steps,
            )
        short = fullname.rsplit(".", 1)[-1]
        space_of_name = fullname.rpartition(".")[0]
        aliases = self.strings(obj, "aliases", f"{kind} '{fullname}'", steps)
        node = _Node(
            kind=kind,
            name=short,
            namespace=space_of_name,
            fullname=fullname,
            aliases=tuple(_qualify(alias, space_of_name) for alias in aliases),
        )
        self.names[fullname] = node
        return node

    def check_fullname(self, fullname: str, kind: str, steps: _Steps) -> None:
        for part in fullname.split("."):
            if not _NAME_RE.match(part):
                raise self.fail(
                    f"'{fullname}' is not a valid {kind} name: each dot-separated part must start with a "
                    "letter or underscore and contain only letters, digits and underscores.",
                    steps,
                )
        if fullname.rsplit(".", 1)[-1] in _PRIMITIVES:
            raise self.fail(f"'{fullname}' cannot name a {kind}: primitive type names are reserved.", steps)

    def strings(self, obj: dict[str, Any], key: str, owner: str, steps: _Steps) -> list[str]:
        value = obj.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.fail(f"The {key} of {owner} must be a list of strings.", steps)
        return value

    def record(self, obj: dict[str, Any], steps: _Steps, namespace: str) -> _Node:
        node = self.named(obj, steps, namespace)
        fields = obj.get("fields")
        if not isinstance(fields, list):
            raise self.fail(f"Record '{node.fullname}' needs a 'fields' list.", steps)
        for position, spec in enumerate(fields, start=1):
            node.fields.append(self.record_field(node, spec, position, steps))
        return node

    def record_field(self, record: _Node, spec: object, position: int, steps: _Steps) -> _Field:
        where = f"Field number {position} of record '{record.fullname}'"
        if not isinstance(spec, dict):
            raise self.fail(f"{where} must be an object.", (*steps, ("field", f"#{position}")))
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise self.fail(f"{where} has no 'name'.", (*steps, ("field", f"#{position}")))
        field_steps = (*steps, ("field", name))
        if not _NAME_RE.match(name):
            raise self.fail(
                f"'{name}' is not a valid field name: it must start with a letter or underscore and contain "
                "only letters, digits and underscores.",
                field_steps,
            )
        if record.field_named(name) is not None:
            raise self.fail(
                f"Record '{record.fullname}' has more than one field named '{name}'.", field_steps
            )
        if "type" not in spec:
            raise self.fail(f"Field '{_dotted(field_steps)}' has no 'type'.", field_steps)
        order = spec.get("order", "ascending")
        if order not in _FIELD_ORDERS:
            raise self.fail(
                f"Field '{_dotted(field_steps)}' has order {_json(order)}; "
                "use ascending, descending or ignore.",
                field_steps,
            )
        aliases = self.strings(spec, "aliases", f"field '{_dotted(field_steps)}'", field_steps)
        doc = spec.get("doc")
        result = _Field(
            name=name,
            type=self.build(spec["type"], field_steps, record.namespace),
            has_default="default" in spec,
            default=spec.get("default"),
            aliases=tuple(aliases),
            doc=doc if isinstance(doc, str) else None,
        )
        if result.has_default:
            self.defaults.append((result, field_steps))
        return result

    def enum(self, obj: dict[str, Any], steps: _Steps, namespace: str) -> _Node:
        node = self.named(obj, steps, namespace)
        symbols = obj.get("symbols")
        symbol_steps = (*steps, ("symbols", ""))
        if not isinstance(symbols, list) or not all(isinstance(symbol, str) for symbol in symbols):
            raise self.fail(f"Enum '{node.fullname}' needs a 'symbols' list of strings.", symbol_steps)
        for symbol in symbols:
            if not _NAME_RE.match(symbol):
                raise self.fail(
                    f"Enum '{node.fullname}' has invalid symbol '{symbol}': symbols must start with a letter "
                    "or underscore and contain only letters, digits and underscores.",
                    symbol_steps,
                )
        duplicates = sorted({symbol for symbol in symbols if symbols.count(symbol) > 1})
        if duplicates:
            raise self.fail(f"Enum '{node.fullname}' repeats symbol(s) {_quoted(duplicates)}.", symbol_steps)
        node.symbols = tuple(symbols)
        default = obj.get("default")
        if default is not None and default not in symbols:
            raise self.fail(
                f"The default {_json(default)} of enum '{node.fullname}' is not one of its symbols "
                f"({_quoted(symbols)}).",
                (*steps, ("default", "")),
            )
        node.enum_default = default
        return node

    def fixed(self, obj: dict[str, Any], steps: _Steps, namespace: str) -> _Node:
        node = self.named(obj, steps, namespace)
        size = obj.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise self.fail(
                f"Fixed '{node.fullname}' needs a 'size' that is a non-negative integer, not {_json(size)}.",
                (*steps, ("size", "")),
            )
        node.size = size
        node.logical = self.logical(obj, steps)
        node.decimal = _decimal(obj, "fixed", size)
        return node

    def array(self, obj: dict[str, Any], steps: _Steps, namespace: str) -> _Node:
        if "items" not in obj:
            raise self.fail(f"{_cap(self.what(steps))} is an array without 'items'.", steps)
        return _Node(kind="array", child=self.build(obj["items"], (*steps, _ITEMS), namespace))

    def map(self, obj: dict[str, Any], steps: _Steps, namespace: str) -> _Node:
        if "values" not in obj:
            raise self.fail(f"{_cap(self.what(steps))} is a map without 'values'.", steps)
        return _Node(kind="map", child=self.build(obj["values"], (*steps, _VALUES), namespace))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _decimal(obj: Mapping[str, Any], kind: str, size: int) -> tuple[int, int] | None:
    """(precision, scale) if ``obj`` is a valid decimal per the spec; invalid ones are ignored."""
    if obj.get("logicalType") != "decimal":
        return None
    precision = obj.get("precision")
    scale = obj.get("scale", 0)
    if not _is_int(precision) or not _is_int(scale):
        return None
    assert isinstance(precision, int) and isinstance(scale, int)
    if precision <= 0 or not 0 <= scale <= precision:
        return None
    if kind == "fixed" and (size < 1 or precision > len(str(2 ** (8 * size - 1) - 1)) - 1):
        return None
    return (precision, scale)


# -- default values ------------------------------------------------------------------------------

_INT_RANGES: Final = {"int": 2**31, "long": 2**63}


def _primitive_default_ok(kind: str, value: Any) -> bool:
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind in _INT_RANGES:
        return _is_int(value) and -_INT_RANGES[kind] <= value < _INT_RANGES[kind]
    if kind in ("float", "double"):
        return isinstance(value, int | float)
    if kind == "bytes":
        return isinstance(value, str) and all(ord(char) < 256 for char in value)
    return isinstance(value, str)  # string


def _default_problem(node: _Node, value: Any) -> str | None:
    """Why ``value`` is not a valid default for ``node`` (None when it is)."""
    kind = node.kind
    if kind in _PRIMITIVES:
        return None if _primitive_default_ok(kind, value) else f"is not a valid {_describe(node)}"
    if kind == "union":
        return _union_default_problem(node, value)
    if kind == "enum":
        if isinstance(value, str) and value in node.symbols:
            return None
        return f"is not one of the symbols of enum '{node.fullname}' ({_quoted(node.symbols)})"
    if kind == "fixed":
        if _primitive_default_ok("bytes", value) and len(value) == node.size:
            return None
        return f"is not a string of exactly {node.size} bytes for fixed '{node.fullname}'"
    if kind == "array":
        if not isinstance(value, list):
            return "is not a JSON array"
        return _first_problem((f"item {index}", node.inner, item) for index, item in enumerate(value))
    if kind == "map":
        if not isinstance(value, dict):
            return "is not a JSON object"
        return _first_problem((f"value '{key}'", node.inner, item) for key, item in value.items())
    return _record_default_problem(node, value)


def _first_problem(parts: Iterable[tuple[str, _Node, Any]]) -> str | None:
    for label, node, value in parts:
        problem = _default_problem(node, value)
        if problem is not None:
            return f"has {label} that {problem}"
    return None


def _record_default_problem(node: _Node, value: Any) -> str | None:
    if not isinstance(value, dict):
        return f"is not a JSON object for record '{node.fullname}'"
    for member in node.fields:
        if member.name in value:
            problem = _default_problem(member.type, value[member.name])
            if problem is not None:
                return f"has field '{member.name}' that {problem}"
        elif not member.has_default:
            return f"lacks field '{member.name}', which has no default of its own"
    return None


def _union_default_problem(node: _Node, value: Any) -> str | None:
    first = node.branches[0]
    if _default_problem(first, value) is None:
        return None
    fitting = next((b for b in node.branches[1:] if _default_problem(b, value) is None), None)
    message = f"does not match the first type of its union ({_describe(first)})"
    if fitting is not None:
        message += (
            f"; a union's default must match its first type, so list {fitting.label} first "
            "or change the default"
        )
    return message


def _compile(schema: object) -> tuple[Any, _Node]:
    decoded = _decode(schema)
    builder = _Builder()
    root = builder.build(decoded, (), "")
    for member, steps in builder.defaults:
        problem = _default_problem(member.type, member.default)
        if problem is not None:
            raise SchemaError(
                f"The default {_json(member.default)} of field '{_dotted(steps)}' {problem}.",
                _render((*steps, ("default", ""))),
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            avro.schema.parse(json.dumps(decoded))
    except Exception as exc:  # the reference parser is the final judge, whatever it raises
        raise SchemaError(f"Avro rejected the schema: {exc}") from exc
    return decoded, root


def parse_schema(schema: SchemaInput) -> JsonSchema:
    """Parse and validate an Avro schema; return the decoded JSON value.

    ``schema`` is JSON text (a bare primitive name such as ``int`` is accepted too) or an already
    decoded JSON value. The result is a fresh decoded copy. Raises :class:`SchemaError` naming
    what is wrong and where, for invalid JSON and for anything the Avro specification forbids:
    unknown or undefined types, missing or invalid names, duplicate names, fields or symbols,
    malformed unions, and field defaults that do not fit the field's type (for a union, its first
    branch). ``avro.schema.parse`` must accept the schema as well.
    """
    decoded, _ = _compile_cached(schema)
    result: JsonSchema = _fresh_copy(decoded)
    return result


def parse_record_schema(schema: SchemaInput) -> dict[str, Any]:
    """Like :func:`parse_schema`, but the top level must be a record (every contract is one)."""
    decoded, root = _compile_cached(schema)
    if root.kind != "record":
        found = _describe(root) if root.kind != "union" else "a union"
        raise SchemaError(f"A contract schema must be an Avro record at the top level, not {found}.")
    result: dict[str, Any] = _fresh_copy(decoded)
    return result


def _fresh_copy(decoded: Any) -> Any:
    """A copy the caller may change without changing what `_compile_cached` remembers."""
    return json.loads(json.dumps(decoded))


# --------------------------------------------------------------------------------------------
# Normalized form (the registry's identity of a schema)
# --------------------------------------------------------------------------------------------

# Attributes the Avro specification reserves for schemas. On a primitive written as an object they
# mean nothing (Java's parser drops them), so {"type": "int", "name": "n"} is the schema "int".
_SCHEMA_RESERVED: Final = frozenset(
    {"type", "name", "namespace", "doc", "aliases", "fields", "items", "values", "symbols", "size"}
)


def normalized_schema(schema: JsonSchema) -> JsonSchema:
    """The same schema, written one way: what the Schema Registry compares to say "the same schema".

    ``schema`` must be a decoded, valid schema (the result of :func:`parse_schema`). Two ways of
    writing one schema give equal results: a primitive written as an object with nothing of its
    own (``{"type": "int"}``, ``{"type": "int", "name": "n"}``) becomes its name, names, references
    and aliases become full names (no ``namespace`` attribute), a field's ``"order": "ascending"``
    (the default) and empty ``aliases`` are dropped. Serialise with sorted keys to compare, so
    attribute order does not matter either.

    This is what Confluent's registry compares (the schema as Java's Avro parser prints it), not
    Avro's Parsing Canonical Form: docs, defaults, aliases, logical types and custom properties
    still make two schemas different, because a reader sees them (docs/decisions.md).
    """
    return _normalized(schema, "")


def _normalized(schema: Any, namespace: str) -> Any:
    if isinstance(schema, str):
        return schema if schema in _PRIMITIVES else _qualify(schema, namespace)
    if isinstance(schema, list):
        return [_normalized(branch, namespace) for branch in schema]
    kind = schema["type"]
    if kind in _PRIMITIVES:
        own = {key: value for key, value in schema.items() if key not in _SCHEMA_RESERVED}
        return {"type": kind, **own} if own else kind
    result = {key: value for key, value in schema.items() if key != "namespace"}
    if kind in ("array", "map"):
        inner = "items" if kind == "array" else "values"
        result[inner] = _normalized(schema[inner], namespace)
        return result
    space = schema.get("namespace")
    fullname = _qualify(schema["name"], namespace if space is None else space)
    space_of_name = fullname.rpartition(".")[0]
    result["name"] = fullname
    _normalize_aliases(result, space_of_name)
    if kind == "record":
        result["fields"] = [_normalized_field(spec, space_of_name) for spec in schema["fields"]]
    return result


def _normalized_field(spec: dict[str, Any], namespace: str) -> dict[str, Any]:
    result = {**spec, "type": _normalized(spec["type"], namespace)}
    if result.get("order") == "ascending":
        del result["order"]
    if not result.get("aliases", True):
        del result["aliases"]
    return result


def _normalize_aliases(result: dict[str, Any], namespace: str) -> None:
    if "aliases" in result:
        if result["aliases"]:
            result["aliases"] = [_qualify(alias, namespace) for alias in result["aliases"]]
        else:
            del result["aliases"]


# --------------------------------------------------------------------------------------------
# Resolution (reader against writer)
# --------------------------------------------------------------------------------------------


class _PairGuard:
    """Tracks record pairs being compared, so recursive types terminate and work stays bounded."""

    def __init__(self) -> None:
        self.active: set[tuple[int, int]] = set()
        self.done: set[tuple[int, int]] = set()
        self.visits = 0

    def enter(self, first: _Node, second: _Node) -> bool:
        key = (id(first), id(second))
        if key in self.active:  # recursive type: this pair is already being compared further up
            return False
        self.visits += 1
        if self.visits > _RECORD_VISIT_BUDGET and key in self.done:
            return False
        self.active.add(key)
        return True

    def leave(self, first: _Node, second: _Node) -> None:
        key = (id(first), id(second))
        self.active.discard(key)
        self.done.add(key)


def _names_match(reader: _Node, writer: _Node) -> bool:
    """Spec: unqualified names are equal, or the reader lists the writer's full name as an alias."""
    return reader.name == writer.name or writer.fullname in reader.aliases


def _matches(reader: _Node, writer: _Node) -> bool:
    """The specification's shallow "match" test used to pick a reader union branch."""
    if reader.kind == "union" or writer.kind == "union":
        return True
    if reader.kind in _PRIMITIVES or writer.kind in _PRIMITIVES:
        return reader.kind == writer.kind or (writer.kind, reader.kind) in _PROMOTIONS
    if reader.kind != writer.kind:
        return False
    if reader.kind in ("array", "map"):
        return _matches(reader.inner, writer.inner)
    if reader.kind == "fixed" and reader.size != writer.size:
        return False
    return _names_match(reader, writer)


def _select_branch(union: _Node, writer: _Node) -> _Node | None:
    """The reader union branch that reads ``writer`` (a non-union schema).

    The specification says "the first schema in the reader's union that matches". Like Java's
    resolver, a branch of exactly the writer's type (same primitive, array, map, or same full
    name) is preferred; otherwise the first matching branch, promotions included, is used. (Read
    literally, ["float", "long"] would read a long as a float even against itself.)
    """
    for option in union.branches:
        if option.kind == writer.kind and option.fullname == writer.fullname:
            return option
    return next((option for option in union.branches if _matches(option, writer)), None)


class _Resolver:
    """Walks a reader/writer pair and records every :class:`Change` found."""

    def __init__(self, direction: str, version: int | None) -> None:
        self.direction = direction
        self.version = version
        self.ver = f"version {version}" if version is not None else "the previous version"
        self.changes: list[Change] = []
        self.guard = _PairGuard()

    # -- helpers -----------------------------------------------------------------------------

    @property
    def backward(self) -> bool:
        return self.direction == BACKWARD

    def old_new(self, reader: _Node, writer: _Node) -> tuple[_Node, _Node]:
        return (writer, reader) if self.backward else (reader, writer)

    def broken(self) -> str:
        if self.backward:
            return f"so the new schema cannot read events written with {self.ver}"
        return f"so consumers using {self.ver} can no longer read new events"

    def emit(self, rule: str, steps: _Steps, message: str) -> None:
        self.changes.append(
            Change(
                path=_render(steps),
                rule=rule,
                severity=RULES[rule],
                message=message,
                against_version=self.version,
                direction=self.direction,
            )
        )

    # -- dispatch ----------------------------------------------------------------------------

    def resolve(self, reader: _Node, writer: _Node, steps: _Steps) -> None:
        if writer.kind == "union" and reader.kind == "union":
            self.union_to_union(reader, writer, steps)
        elif writer.kind == "union":
            self.union_to_single(reader, writer, steps)
        elif reader.kind == "union":
            self.single_to_union(reader, writer, steps)
        else:
            self.resolve_single(reader, writer, steps)

    def union_to_union(self, reader: _Node, writer: _Node, steps: _Steps) -> None:
        used: set[int] = set()
        for branch in writer.branches:
            chosen = _select_branch(reader, branch)
            if chosen is None:
                self.missing_branch(reader, branch, (*steps, ("branch", branch.label)))
                continue
            used.add(id(chosen))
            label = chosen.label if self.backward else branch.label
            self.resolve_single(chosen, branch, (*steps, ("branch", label)))
        self.unused_branches(reader, used, steps)

    def union_to_single(self, reader: _Node, writer: _Node, steps: _Steps) -> None:
        for branch in writer.branches:
            branch_steps = (*steps, ("branch", branch.label))
            if reader.kind == branch.kind or _matches(reader, branch):
                # Same kind: resolving reports the precise problem (name, size, items...).
                self.resolve_single(reader, branch, branch_steps)
                continue
            if self.backward:
                text = (
                    f"{_cap(_subject(steps))} could hold {_describe(branch)} in {self.ver}, but its new type "
                    f"{_describe(reader)} cannot read it, {self.broken()}."
                )
            else:
                text = (
                    f"{_cap(_subject(steps))} can now hold {_describe(branch)}, which its type in {self.ver} "
                    f"({_describe(reader)}) cannot read, {self.broken()}."
                )
            self.emit("TYPE_MISMATCH", branch_steps, text)

    def single_to_union(self, reader: _Node, writer: _Node, steps: _Steps) -> None:
        chosen = _select_branch(reader, writer)
        if chosen is None:
            self.missing_branch(reader, writer, steps)
            return
        self.resolve_single(chosen, writer, (*steps, ("branch", chosen.label)))
        self.unused_branches(reader, {id(chosen)}, steps)

    def missing_branch(self, reader: _Node, writer: _Node, steps: _Steps) -> None:
        field_steps = _without_branch(steps)
        labels = ", ".join(option.label for option in reader.branches)
        hint = ""
        same_kind = [option for option in reader.branches if option.kind == writer.kind]
        if writer.kind in _NAMED and same_kind:
            hint = (
                f" ({_describe(same_kind[0])} is there, but its name or size differs and no alias bridges it)"
            )
        if self.backward:
            text = (
                f"{_cap(_subject(field_steps))} could hold {_describe(writer)} in {self.ver}, but none of "
                f"the types in its new union ({labels}) can read it{hint}, {self.broken()}."
            )
        else:
            text = (
                f"{_cap(_subject(field_steps))} can now hold {_describe(writer)}, but none of the types in "
                f"its union in {self.ver} ({labels}) can read it{hint}, {self.broken()}."
            )
        self.emit("MISSING_UNION_BRANCH", steps, text)

    def unused_branches(self, reader: _Node, used: set[int], steps: _Steps) -> None:
        for option in reader.branches:
            if id(option) in used:
                continue
            branch_steps = (*steps, ("branch", option.label))
            if self.backward:
                text = f"{_cap(_subject(steps))} now also accepts {_describe(option)}."
                self.emit("UNION_BRANCH_ADDED", branch_steps, text)
            else:
                text = (
                    f"{_cap(_subject(steps))} no longer carries {_describe(option)}; consumers using "
                    f"{self.ver} are unaffected."
                )
                self.emit("UNION_BRANCH_REMOVED", branch_steps, text)

    def resolve_single(self, reader: _Node, writer: _Node, steps: _Steps) -> None:
        """Both sides are non-union schemas."""
        if reader.kind in _PRIMITIVES and writer.kind in _PRIMITIVES:
            self.primitive(reader, writer, steps)
        elif reader.kind != writer.kind:
            self.type_mismatch(reader, writer, steps)
        elif reader.kind in ("array", "map"):
            self.resolve(reader.inner, writer.inner, (*steps, _ITEMS if reader.kind == "array" else _VALUES))
        elif reader.kind == "fixed":
            self.fixed(reader, writer, steps)
        elif reader.kind == "enum":
            self.enum(reader, writer, steps)
        else:
            self.record(reader, writer, steps)

    def type_mismatch(self, reader: _Node, writer: _Node, steps: _Steps) -> None:
        old, new = self.old_new(reader, writer)
        text = f"{_cap(_subject(steps))} changed from {_describe(old)} to {_describe(new)}, {self.broken()}."
        self.emit("TYPE_MISMATCH", steps, text)

    # -- primitives and logical types --------------------------------------------------------

    def primitive(self, reader: _Node, writer: _Node, steps: _Steps) -> None:
        if reader.kind != writer.kind:
            lossy = _PROMOTIONS.get((writer.kind, reader.kind))
            if lossy is None:
                self.type_mismatch(reader, writer, steps)
                return
            self.promoted(reader, writer, steps, lossy)
        self.logical(reader, writer, steps)

    def promoted(self, reader: _Node, writer: _Node, steps: _Steps, lossy: bool) -> None:
        old, new = self.old_new(reader, writer)
        if self.backward:
            text = (
                f"{_cap(_subject(steps))} changed from {old.kind} to {new.kind}; the new schema reads the "
                f"{old.kind} values of {self.ver} as {new.kind}"
            )
        else:
            text = (
                f"{_cap(_subject(steps))} changed from {old.kind} to {new.kind}; consumers using {self.ver} "
                f"read the new {new.kind} values as {old.kind}"
            )
        if not lossy:
            self.emit("TYPE_PROMOTED", steps, text + ".")
            return
        if writer.kind == "bytes":
            text += ", which fails for bytes that are not valid UTF-8."
        else:
            text += (
                f", which can lose precision: {reader.kind} cannot hold every {writer.kind} value exactly."
            )
        self.emit("TYPE_PROMOTED_LOSSY", steps, text)

    def logical(self, reader: _Node, writer: _Node, steps: _Steps) -> None:
        old, new = self.old_new(reader, writer)
        if old.decimal and new.decimal and old.decimal != new.decimal and old.logical == new.logical:
            text = (
                f"{_cap(_subject(steps))} changed decimal precision/scale from {old.decimal[0]}/"
                f"{old.decimal[1]} to {new.decimal[0]}/{new.decimal[1]}; the Avro specification only "
                f"resolves decimals whose precision and scale both match, {self.broken()}."
            )
            self.emit("DECIMAL_MISMATCH", steps, text)
        elif old.logical != new.logical:
            text = (
                f"{_cap(_subject(steps))} changed logical type from {old.logical or 'none'} to "
                f"{new.logical or 'none'}; the encoded values still resolve, but their meaning changes."
            )
            self.emit("LOGICAL_TYPE_CHANGED", steps, text)

    # -- named types -------------------------------------------------------------------------

    def name(self, reader: _Node, writer: _Node, steps: _Steps) -> None:
        old, new = self.old_new(reader, writer)
        what = "the top-level record" if not steps else f"the {reader.kind} type of {_subject(steps)}"
        renamed = f"{_cap(what)} was renamed from '{old.fullname}' to '{new.fullname}'"
        if reader.name == writer.name:
            if reader.fullname != writer.fullname:
                text = (
                    f"{_cap(what)} moved from '{old.fullname}' to '{new.fullname}'; Avro matches named types "
                    "by their unqualified name, so data still resolves (generated code may need updating)."
                )
                self.emit("NAMESPACE_CHANGED", steps, text)
        elif writer.fullname in reader.aliases:
            if self.backward:
                text = f"{renamed}; its alias '{old.fullname}' keeps events written with {self.ver} readable."
            else:
                text = (
                    f"{renamed}; {self.ver} lists '{new.fullname}' as an alias, "
                    "so its consumers still read new events."
                )
            self.emit("TYPE_RENAMED", steps, text)
        elif self.backward:
            text = f"{renamed} without adding '{old.fullname}' to its aliases, {self.broken()}."
            self.emit("NAME_MISMATCH", steps, text)
        else:
            text = f"{renamed}, a name {self.ver} does not know, {self.broken()}."
            self.emit("NAME_MISMATCH", steps, text)

    def fixed(self, reader: _Node, writer: _Node, steps: _Steps) -> None:
        self.name(reader, writer, steps)
        if reader.size != writer.size:
            old, new = self.old_new(reader, writer)
            text = (
                f"{_cap(_subject(steps))} changed size from {old.size} to {new.size} bytes "
                f"(fixed '{new.fullname}'), {self.broken()}."
            )
            self.emit("FIXED_SIZE_MISMATCH", steps, text)
        self.logical(reader, writer, steps)

    def enum(self, reader: _Node, writer: _Node, steps: _Steps) -> None:
        self.name(reader, writer, steps)
        which = f"The enum '{reader.name}' of {_subject(steps)}" if steps else f"The enum '{reader.name}'"
        unknown = [symbol for symbol in writer.symbols if symbol not in reader.symbols]
        if unknown:
            self.unknown_symbols(reader, unknown, which, steps)
        extra = [symbol for symbol in reader.symbols if symbol not in writer.symbols]
        if extra and self.backward:
            self.emit("ENUM_SYMBOL_ADDED", steps, f"{which} gained {_symbols(extra)}.")
        elif extra:
            self.emit(
                "ENUM_SYMBOL_REMOVED",
                steps,
                f"{which} no longer has {_symbols(extra)}; new events will not use {_them(extra)}.",
            )

    def unknown_symbols(self, reader: _Node, unknown: list[str], which: str, steps: _Steps) -> None:
        default = reader.enum_default
        if self.backward and default is not None:
            text = (
                f"{which} no longer has {_symbols(unknown)}; events written with {self.ver} that use "
                f"{_them(unknown)} will be read as the default '{default}'."
            )
        elif default is not None:
            text = (
                f"{which} gained {_symbols(unknown)}; consumers using {self.ver} will read "
                f"{_them(unknown)} as its default '{default}'."
            )
        elif self.backward:
            text = (
                f"{which} no longer has {_symbols(unknown)} and the new enum has no default, so the new "
                f"schema cannot read events written with {self.ver} that use {_them(unknown)}."
            )
        else:
            text = (
                f"{which} gained {_symbols(unknown)}, which {self.ver} does not know and has no default for, "
                f"so consumers using {self.ver} can no longer read new events that use {_them(unknown)}."
            )
        self.emit("ENUM_DEFAULT_USED" if default is not None else "MISSING_ENUM_SYMBOLS", steps, text)

    # -- records -----------------------------------------------------------------------------

    def record(self, reader: _Node, writer: _Node, steps: _Steps) -> None:
        if not self.guard.enter(reader, writer):
            return
        try:
            self.name(reader, writer, steps)
            self.fields(reader, writer, steps)
        finally:
            self.guard.leave(reader, writer)

    def fields(self, reader: _Node, writer: _Node, steps: _Steps) -> None:
        matched: set[str] = set()
        for member in reader.fields:
            source = writer.field_named(member.name)
            alias = None
            if source is None:
                alias = next((name for name in member.aliases if writer.field_named(name) is not None), None)
                source = writer.field_named(alias) if alias is not None else None
            if source is None:
                self.reader_only_field(member, (*steps, ("field", member.name)))
                continue
            matched.add(source.name)
            new_name = member.name if self.backward else source.name
            field_steps = (*steps, ("field", new_name))
            if alias is not None:
                self.renamed_field(member, source, steps, field_steps)
            self.resolve(member.type, source.type, field_steps)
        for source in writer.fields:
            if source.name not in matched:
                self.writer_only_field((*steps, ("field", source.name)))

    def reader_only_field(self, member: _Field, steps: _Steps) -> None:
        name = _dotted(steps)
        if member.has_default and self.backward:
            text = (
                f"Field '{name}' was added with default {_json(member.default)}, which the new schema uses "
                f"for events written with {self.ver}."
            )
            self.emit("FIELD_ADDED_WITH_DEFAULT", steps, text)
        elif member.has_default:
            text = (
                f"Field '{name}' was removed; consumers using {self.ver} will see its default "
                f"{_json(member.default)} in new events."
            )
            self.emit("FIELD_REMOVED_WITH_DEFAULT", steps, text)
        elif self.backward:
            text = (
                f"Field '{name}' was added without a default, so the new schema cannot read events written "
                f"with {self.ver}, which lack it."
            )
            self.emit("READER_FIELD_MISSING_DEFAULT", steps, text)
        else:
            text = f"Field '{name}' was removed and has no default, {self.broken()}."
            self.emit("FIELD_REMOVED_WITHOUT_DEFAULT", steps, text)

    def writer_only_field(self, steps: _Steps) -> None:
        name = _dotted(steps)
        if self.backward:
            text = f"Field '{name}' was removed; the new schema ignores it in events written with {self.ver}."
            self.emit("FIELD_REMOVED", steps, text)
        else:
            self.emit(
                "FIELD_ADDED", steps, f"Field '{name}' was added; consumers using {self.ver} will ignore it."
            )

    def renamed_field(self, member: _Field, source: _Field, parent: _Steps, steps: _Steps) -> None:
        old_name = _dotted((*parent, ("field", source.name if self.backward else member.name)))
        new_name = member.name if self.backward else source.name
        if self.backward:
            text = (
                f"Field '{old_name}' was renamed to '{new_name}'; its alias '{source.name}' lets the new "
                f"schema read events written with {self.ver}."
            )
        else:
            text = (
                f"Field '{old_name}' was renamed to '{new_name}'; {self.ver} lists '{new_name}' as an alias, "
                "so its consumers still read new events."
            )
        self.emit("FIELD_RENAMED", steps, text)


def _them(symbols: Sequence[str]) -> str:
    return "it" if len(symbols) == 1 else "them"


def _symbols(symbols: Sequence[str]) -> str:
    noun = "symbol" if len(symbols) == 1 else "symbols"
    return f"{noun} {_quoted(symbols)}"


def _resolve(new: _Node, old: _Node, direction: str, version: int | None) -> list[Change]:
    resolver = _Resolver(direction, version)
    if direction == BACKWARD:
        resolver.resolve(new, old, ())
    else:
        resolver.resolve(old, new, ())
    return resolver.changes


def check_compatibility(
    new_schema: SchemaInput,
    previous_versions: Sequence[tuple[int, SchemaInput]],
    mode: str | CompatibilityMode,
) -> CompatibilityReport:
    """Check ``new_schema`` against a subject's earlier versions under ``mode``.

    ``previous_versions`` are ``(version, schema)`` pairs, oldest first (the caller passes every
    approved version). Non-transitive modes compare with the last one only, ``*_TRANSITIVE`` with
    all of them. BACKWARD resolves with reader = new and writer = old, FORWARD with reader = old and
    writer = new, FULL does both. NONE checks both directions against the last version but
    downgrades every error to a warning, so it is always compatible. No previous versions:
    compatible, no changes.

    Changes are de-duplicated on (path, rule, direction): the first one found is kept, and
    versions are visited oldest first, so ``against_version`` is the oldest version that
    triggers it. Order: errors, then warnings, then infos; within a severity, oldest version
    first, backward before forward, then schema order.

    Raises :class:`SchemaError` if the new schema (or a stored version) is invalid, and
    ValueError for an unknown mode.
    """
    level = CompatibilityMode.parse(mode)
    _, new = _compile_cached(new_schema)
    versions = list(previous_versions)
    targets = versions if level.transitive else versions[-1:]
    seen: set[tuple[str, str, str]] = set()
    changes: list[Change] = []
    latest: list[Change] = []
    for position, (version, schema) in enumerate(targets, start=1):
        old = _compile_stored(schema, version)
        for direction in level.directions:
            for change in _resolve(new, old, direction, version):
                if level is CompatibilityMode.NONE and change.severity == ERROR:
                    change = dataclasses.replace(change, severity=WARNING)
                if position == len(targets):
                    latest.append(change)
                key = _change_key(change)
                if key in seen:
                    continue
                seen.add(key)
                changes.append(change)
    changes.sort(key=lambda change: _SEVERITY_RANK[change.severity])
    latest.sort(key=lambda change: _SEVERITY_RANK[change.severity])
    compatible = not any(change.severity == ERROR for change in changes)
    return CompatibilityReport(compatible=compatible, mode=level.value, changes=changes,
                               latest_version=targets[-1][0] if targets else None, new_changes=latest)


def _change_key(change: Change) -> tuple[str, str, str]:
    return (change.path, change.rule, change.direction)


def _compile_stored(schema: SchemaInput, version: int) -> _Node:
    try:
        return _compile_cached(schema)[1]
    except SchemaError as exc:
        raise SchemaError(f"Stored version {version} is not a valid schema: {exc.message}", exc.path) from exc


def _compile_cached(schema: SchemaInput) -> tuple[Any, _Node]:
    """`_compile`, remembered by the schema's JSON text: approved versions are compiled once per process,
    not on every keystroke of the version editor (Avro's own parse is most of the cost). Callers must not
    mutate what it returns (the compiled nodes never are; `parse_schema` hands out a fresh copy)."""
    if isinstance(schema, str):
        return _compile_text(schema)
    try:
        text = json.dumps(schema, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return _compile(schema)  # not JSON-serialisable: let _compile say what is wrong
    return _compile_text(text)


@functools.lru_cache(maxsize=256)
def _compile_text(text: str) -> tuple[Any, _Node]:
    return _compile(text)


# --------------------------------------------------------------------------------------------
# Informational diff
# --------------------------------------------------------------------------------------------


class _Differ:
    """Structural differences between two schemas, regardless of compatibility mode."""

    def __init__(self, version: int | None) -> None:
        self.version = version
        self.changes: list[Change] = []
        self.guard = _PairGuard()

    def emit(self, rule: str, steps: _Steps, message: str) -> None:
        self.changes.append(Change(_render(steps), rule, INFO, message, self.version, DIFF))

    def diff(self, old: _Node, new: _Node, steps: _Steps) -> None:
        if old.kind == "union" or new.kind == "union":
            self.unions(old, new, steps)
        elif old.kind != new.kind:
            text = f"{_cap(_subject(steps))} changed type from {_describe(old)} to {_describe(new)}."
            self.emit("TYPE_CHANGED", steps, text)
        elif old.kind in ("array", "map"):
            self.diff(old.inner, new.inner, (*steps, _ITEMS if old.kind == "array" else _VALUES))
        elif old.kind == "record":
            self.record(old, new, steps)
        else:
            self.same_kind(old, new, steps)

    def same_kind(self, old: _Node, new: _Node, steps: _Steps) -> None:
        if old.kind in _NAMED:
            self.name(old, new, steps)
        if old.kind == "enum":
            self.enum(old, new, steps)
        if old.kind == "fixed" and old.size != new.size:
            text = f"{_cap(_subject(steps))} changed size from {old.size} to {new.size} bytes."
            self.emit("FIXED_SIZE_CHANGED", steps, text)
        if old.logical != new.logical or old.decimal != new.decimal:
            before = old.logical or "none"
            after = new.logical or "none"
            if old.decimal != new.decimal and old.logical == new.logical == "decimal":
                before, after = f"decimal{old.decimal}", f"decimal{new.decimal}"
            text = f"{_cap(_subject(steps))} changed logical type from {before} to {after}."
            self.emit("LOGICAL_TYPE_CHANGED", steps, text)

    def name(self, old: _Node, new: _Node, steps: _Steps) -> None:
        what = "the top-level record" if not steps else f"the {new.kind} type of {_subject(steps)}"
        if old.fullname == new.fullname:
            return
        if old.name == new.name:
            self.emit(
                "NAMESPACE_CHANGED", steps, f"{_cap(what)} moved from '{old.fullname}' to '{new.fullname}'."
            )
            return
        alias = " (with an alias for the old name)" if old.fullname in new.aliases else " (without an alias)"
        self.emit(
            "TYPE_RENAMED",
            steps,
            f"{_cap(what)} was renamed from '{old.fullname}' to '{new.fullname}'{alias}.",
        )

    def enum(self, old: _Node, new: _Node, steps: _Steps) -> None:
        which = f"The enum '{new.name}' of {_subject(steps)}" if steps else f"The enum '{new.name}'"
        added = [symbol for symbol in new.symbols if symbol not in old.symbols]
        removed = [symbol for symbol in old.symbols if symbol not in new.symbols]
        if added:
            self.emit("ENUM_SYMBOL_ADDED", steps, f"{which} gained {_symbols(added)}.")
        if removed:
            self.emit("ENUM_SYMBOL_REMOVED", steps, f"{which} lost {_symbols(removed)}.")
        if old.enum_default != new.enum_default:
            text = f"{which} changed its default from {_json(old.enum_default)} to {_json(new.enum_default)}."
            self.emit("ENUM_DEFAULT_CHANGED", steps, text)

    def unions(self, old: _Node, new: _Node, steps: _Steps) -> None:
        old_branches = list(old.branches) if old.kind == "union" else [old]
        new_branches = list(new.branches) if new.kind == "union" else [new]
        pairs: list[tuple[_Node, _Node]] = []
        for candidate in new_branches:
            partner = next((o for o in old_branches if o.label == candidate.label), None)
            if partner is None:
                partner = next(
                    (o for o in old_branches if _matches(candidate, o) or _matches(o, candidate)), None
                )
            if partner is not None:
                old_branches.remove(partner)
                pairs.append((partner, candidate))
        paired_new = {id(candidate) for _, candidate in pairs}
        subject = _cap(_subject(steps))
        for candidate in new_branches:
            if id(candidate) not in paired_new:
                text = f"{subject} now also accepts {_describe(candidate)}."
                self.emit("UNION_BRANCH_ADDED", (*steps, ("branch", candidate.label)), text)
        for gone in old_branches:
            text = f"{subject} no longer accepts {_describe(gone)}."
            self.emit("UNION_BRANCH_REMOVED", (*steps, ("branch", gone.label)), text)
        for before, after in pairs:
            self.diff(before, after, (*steps, ("branch", after.label)))

    def record(self, old: _Node, new: _Node, steps: _Steps) -> None:
        if not self.guard.enter(old, new):
            return
        try:
            self.name(old, new, steps)
            self.fields(old, new, steps)
        finally:
            self.guard.leave(old, new)

    def fields(self, old: _Node, new: _Node, steps: _Steps) -> None:
        matched: set[str] = set()
        for member in new.fields:
            field_steps = (*steps, ("field", member.name))
            before = old.field_named(member.name)
            if before is None:
                alias = next((name for name in member.aliases if old.field_named(name) is not None), None)
                before = old.field_named(alias) if alias is not None else None
                if before is not None:
                    text = (
                        f"Field '{_dotted((*steps, ('field', before.name)))}' was renamed to '{member.name}'."
                    )
                    self.emit("FIELD_RENAMED", field_steps, text)
            if before is None:
                default = (
                    f" with default {_json(member.default)}" if member.has_default else " without a default"
                )
                self.emit("FIELD_ADDED", field_steps, f"Field '{_dotted(field_steps)}' was added{default}.")
                continue
            matched.add(before.name)
            self.defaults(before, member, field_steps)
            self.diff(before.type, member.type, field_steps)
        for before in old.fields:
            if before.name not in matched:
                gone = (*steps, ("field", before.name))
                self.emit("FIELD_REMOVED", gone, f"Field '{_dotted(gone)}' was removed.")

    def defaults(self, old: _Field, new: _Field, steps: _Steps) -> None:
        name = _dotted(steps)
        if old.has_default and not new.has_default:
            self.emit("DEFAULT_REMOVED", steps, f"Field '{name}' no longer has a default.")
        elif new.has_default and not old.has_default:
            self.emit("DEFAULT_ADDED", steps, f"Field '{name}' now has default {_json(new.default)}.")
        elif old.has_default and old.default != new.default:
            text = f"Field '{name}' changed its default from {_json(old.default)} to {_json(new.default)}."
            self.emit("DEFAULT_CHANGED", steps, text)


def diff_changes(old: SchemaInput, new: SchemaInput, *, against_version: int | None = None) -> list[Change]:
    """Informational differences between two schemas, for a review page.

    Independent of any compatibility mode: every entry has severity ``info`` and direction
    ``diff`` (see :data:`DIFF_RULES`); whether a difference breaks anything is
    :func:`check_compatibility`'s job. Raises :class:`SchemaError` if either schema is invalid.
    """
    _, old_node = _compile(old)
    _, new_node = _compile(new)
    differ = _Differ(against_version)
    differ.diff(old_node, new_node, ())
    return differ.changes
