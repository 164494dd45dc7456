"""Tests for contracts.compatibility: Avro schema resolution under every compatibility mode.

The heart is CASES, a table of old/new schema pairs with the expected verdict per direction
(backward: the new schema reads old data; forward: the old schema reads new data) and the
changes that must be reported. Every case runs under every mode, and every case's verdicts are
cross-checked against the reference implementation in the ``avro`` package. Hypothesis then
does the same cross-check on random schema pairs.

Where the ``avro`` checker disagrees with the specification, the case says so in
``avro_differs`` and the test asserts the disagreement, so a fixed ``avro`` shows up here.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import avro.schema
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from contracts.compatibility import (
    DIFF_RULES,
    RULES,
    Change,
    CompatibilityMode,
    CompatibilityReport,
    SchemaError,
    check_compatibility,
    diff_changes,
    normalized_schema,
    parse_compatibility_mode,
    parse_record_schema,
    parse_schema,
)

BW = "backward"
FW = "forward"
ALL_MODES = list(CompatibilityMode)
PRIMITIVES = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"]
PROMOTABLE = {
    ("int", "long"),
    ("int", "float"),
    ("int", "double"),
    ("long", "float"),
    ("long", "double"),
    ("float", "double"),
    ("string", "bytes"),
    ("bytes", "string"),
}
LOSSY = {("int", "float"), ("long", "float"), ("long", "double"), ("bytes", "string")}


# ------------------------------------------------------------------------------------------------
# Schema builders
# ------------------------------------------------------------------------------------------------


def rec(fields: list[dict[str, Any]], name: str = "Event", namespace: str | None = "com.acme", **extra: Any):
    schema: dict[str, Any] = {"type": "record", "name": name}
    if namespace is not None:
        schema["namespace"] = namespace
    schema["fields"] = fields
    schema.update(extra)
    return schema


def fld(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def one(type_: Any, **extra: Any) -> dict[str, Any]:
    """An Event record with an id and a field ``x`` of the given type."""
    return rec([fld("id", "long"), fld("x", type_, **extra)])


def enum_t(symbols: list[str], name: str = "Status", **extra: Any) -> dict[str, Any]:
    return {"type": "enum", "name": name, "symbols": symbols, **extra}


def fixed_t(size: int, name: str = "Hash", **extra: Any) -> dict[str, Any]:
    return {"type": "fixed", "name": name, "size": size, **extra}


def inner(fields: list[dict[str, Any]], name: str = "Detail", **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": fields, **extra}


def decimal(precision: int, scale: int) -> dict[str, Any]:
    return {"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale}


def session(*fields: dict[str, Any], name: str = "Session", **extra: Any) -> dict[str, Any]:
    return rec([fld("id", "long"), fld("session", inner(list(fields), name=name, **extra))])


def linked_list(value_type: str, *extra_fields: dict[str, Any]) -> dict[str, Any]:
    return rec(
        [fld("value", value_type), fld("next", ["null", "LongList"]), *extra_fields],
        name="LongList",
        namespace=None,
    )


# ------------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exp:
    """A change that must be reported (severity defaults to the rule's)."""

    direction: str
    rule: str
    path: str
    text: tuple[str, ...] = ()
    severity: str | None = None


def E(direction: str, rule: str, path: str, *text: str, severity: str | None = None) -> Exp:
    return Exp(direction, rule, path, text, severity)


@dataclass(frozen=True)
class Case:
    id: str
    old: Any
    new: Any
    backward: bool  # the new schema can read data written with the old one
    forward: bool  # the old schema can read data written with the new one
    expect: tuple[Exp, ...] = ()
    exact: bool = False  # the expected changes are all the changes
    avro_differs: frozenset[str] = frozenset()  # directions where avro's checker disagrees (see docs)


def primitive_cases() -> Iterator[Case]:
    for old in PRIMITIVES:
        for new in PRIMITIVES:
            backward = old == new or (old, new) in PROMOTABLE  # writer old, reader new
            forward = old == new or (new, old) in PROMOTABLE  # writer new, reader old
            expect: list[Exp] = []
            if old != new:
                for direction, ok, pair in ((BW, backward, (old, new)), (FW, forward, (new, old))):
                    if not ok:
                        rule = "TYPE_MISMATCH"
                    else:
                        rule = "TYPE_PROMOTED_LOSSY" if pair in LOSSY else "TYPE_PROMOTED"
                    expect.append(E(direction, rule, "/fields/x", "'x'", old, new))
            yield Case(
                f"primitive {old} -> {new}", one(old), one(new), backward, forward, tuple(expect), exact=True
            )


REC_A = inner([fld("a", "int")])
REC_AB = inner([fld("a", "int"), fld("b", "string")])

CASES: list[Case] = [
    *primitive_cases(),
    # --- enums ------------------------------------------------------------------------------------
    Case(
        "enum symbol added",
        one(enum_t(["A", "B"])),
        one(enum_t(["A", "B", "C"])),
        True,
        False,
        (
            E(BW, "ENUM_SYMBOL_ADDED", "/fields/x", "'C'"),
            E(FW, "MISSING_ENUM_SYMBOLS", "/fields/x", "'C'", "field 'x'", "version 1"),
        ),
        exact=True,
    ),
    Case(
        "enum symbol added, old enum has a default",
        one(enum_t(["A", "B"], default="A")),
        one(enum_t(["A", "B", "C"], default="A")),
        True,
        True,
        (E(BW, "ENUM_SYMBOL_ADDED", "/fields/x"), E(FW, "ENUM_DEFAULT_USED", "/fields/x", "'C'", "'A'")),
        exact=True,
    ),
    Case(
        "enum symbol removed",
        one(enum_t(["A", "B", "C"])),
        one(enum_t(["A", "B"])),
        False,
        True,
        (E(BW, "MISSING_ENUM_SYMBOLS", "/fields/x", "'C'"), E(FW, "ENUM_SYMBOL_REMOVED", "/fields/x", "'C'")),
        exact=True,
    ),
    Case(
        "enum symbol removed, new enum has a default",
        one(enum_t(["A", "B", "C"])),
        one(enum_t(["A", "B"], default="A")),
        True,
        True,
        (E(BW, "ENUM_DEFAULT_USED", "/fields/x", "'C'", "'A'"), E(FW, "ENUM_SYMBOL_REMOVED", "/fields/x")),
        exact=True,
    ),
    Case(
        "enum symbol removed, only the old enum has a default",
        one(enum_t(["A", "B", "C"], default="A")),
        one(enum_t(["A", "B"])),
        False,
        True,
        (E(BW, "MISSING_ENUM_SYMBOLS", "/fields/x"),),
    ),
    Case(
        "enum symbol swapped, both have defaults",
        one(enum_t(["U", "A", "B"], default="U")),
        one(enum_t(["U", "A", "C"], default="U")),
        True,
        True,
        (E(BW, "ENUM_DEFAULT_USED", "/fields/x", "'B'"), E(FW, "ENUM_DEFAULT_USED", "/fields/x", "'C'")),
    ),
    Case("enum symbols reordered", one(enum_t(["A", "B"])), one(enum_t(["B", "A"])), True, True, exact=True),
    Case(
        "enum renamed without alias",
        one(enum_t(["A"])),
        one(enum_t(["A"], name="State")),
        False,
        False,
        (
            E(BW, "NAME_MISMATCH", "/fields/x", "'com.acme.Status'", "'com.acme.State'"),
            E(FW, "NAME_MISMATCH", "/fields/x"),
        ),
    ),
    Case(
        "enum renamed with a qualified alias",
        one(enum_t(["A"])),
        one(enum_t(["A"], name="State", aliases=["com.acme.Status"])),
        True,
        False,
        (E(BW, "TYPE_RENAMED", "/fields/x"), E(FW, "NAME_MISMATCH", "/fields/x")),
    ),
    Case(
        "enum renamed with an unqualified alias (resolved in its namespace)",
        one(enum_t(["A"])),
        one(enum_t(["A"], name="State", aliases=["Status"])),
        True,
        False,
        (E(BW, "TYPE_RENAMED", "/fields/x"),),
        avro_differs=frozenset({BW}),
    ),
    Case(
        "enum to string",
        one(enum_t(["A"])),
        one("string"),
        False,
        False,
        (E(BW, "TYPE_MISMATCH", "/fields/x"),),
    ),
    # --- unions -----------------------------------------------------------------------------------
    Case(
        "union widened",
        one(["null", "string"]),
        one(["null", "string", "int"]),
        True,
        False,
        (
            E(BW, "UNION_BRANCH_ADDED", "/fields/x/[int]", "'x'"),
            E(FW, "MISSING_UNION_BRANCH", "/fields/x/[int]", "'x'", "null, string"),
        ),
        exact=True,
    ),
    Case(
        "union narrowed",
        one(["null", "string", "int"]),
        one(["null", "string"]),
        False,
        True,
        (
            E(BW, "MISSING_UNION_BRANCH", "/fields/x/[int]", "'x'"),
            E(FW, "UNION_BRANCH_REMOVED", "/fields/x/[int]"),
        ),
        exact=True,
    ),
    Case(
        "field made nullable (non-union to union)",
        one("string"),
        one(["null", "string"]),
        True,
        False,
        (
            E(BW, "UNION_BRANCH_ADDED", "/fields/x/[null]", "null"),
            E(FW, "TYPE_MISMATCH", "/fields/x/[null]", "'x'"),
        ),
        exact=True,
    ),
    Case(
        "field made non-nullable (union to non-union)",
        one(["null", "string"]),
        one("string"),
        False,
        True,
        (
            E(BW, "TYPE_MISMATCH", "/fields/x/[null]", "'x'"),
            E(FW, "UNION_BRANCH_REMOVED", "/fields/x/[null]"),
        ),
        exact=True,
    ),
    Case("union reordered", one(["null", "string"]), one(["string", "null"]), True, True, exact=True),
    Case(
        "int to a union with long",
        one("int"),
        one(["null", "long"]),
        True,
        False,
        (
            E(BW, "TYPE_PROMOTED", "/fields/x/[long]"),
            E(BW, "UNION_BRANCH_ADDED", "/fields/x/[null]"),
            E(FW, "TYPE_MISMATCH", "/fields/x/[null]"),
            E(FW, "TYPE_MISMATCH", "/fields/x/[long]"),
        ),
        exact=True,
    ),
    Case(
        "union branch promoted",
        one(["null", "int"]),
        one(["null", "long"]),
        True,
        False,
        (E(BW, "TYPE_PROMOTED", "/fields/x/[long]"), E(FW, "MISSING_UNION_BRANCH", "/fields/x/[long]")),
    ),
    Case(
        "union of int and long collapsed to long",
        one(["int", "long"]),
        one("long"),
        True,
        True,
        (E(BW, "TYPE_PROMOTED", "/fields/x/[int]"), E(FW, "UNION_BRANCH_REMOVED", "/fields/x/[int]")),
        exact=True,
    ),
    Case(
        "union to an unrelated type",
        one(["null", "string"]),
        one("int"),
        False,
        False,
        (E(BW, "TYPE_MISMATCH", "/fields/x/[null]"), E(BW, "TYPE_MISMATCH", "/fields/x/[string]")),
    ),
    Case(
        "record inside a union gains a field without default",
        one(["null", REC_A]),
        one(["null", REC_AB]),
        False,
        True,
        (
            E(BW, "READER_FIELD_MISSING_DEFAULT", "/fields/x/[com.acme.Detail]/fields/b", "'x.b'"),
            E(FW, "FIELD_ADDED", "/fields/x/[com.acme.Detail]/fields/b"),
        ),
        exact=True,
    ),
    Case(
        "record inside a union renamed without alias",
        one(["null", REC_A]),
        one(["null", inner([fld("a", "int")], name="Other")]),
        False,
        False,
        (
            E(BW, "MISSING_UNION_BRANCH", "/fields/x/[com.acme.Detail]", "'x'", "com.acme.Other"),
            E(BW, "UNION_BRANCH_ADDED", "/fields/x/[com.acme.Other]"),
            E(FW, "MISSING_UNION_BRANCH", "/fields/x/[com.acme.Other]"),
        ),
    ),
    Case(
        "array inside a union: items promoted",
        one(["null", {"type": "array", "items": "int"}]),
        one(["null", {"type": "array", "items": "long"}]),
        True,
        False,
        (
            E(BW, "TYPE_PROMOTED", "/fields/x/[array]/items"),
            E(FW, "TYPE_MISMATCH", "/fields/x/[array]/items"),
        ),
        exact=True,
    ),
    Case(
        "record to a union holding it",
        one(REC_A),
        one(["null", REC_A]),
        True,
        False,
        (E(BW, "UNION_BRANCH_ADDED", "/fields/x/[null]"), E(FW, "TYPE_MISMATCH", "/fields/x/[null]")),
        exact=True,
    ),
    # --- nested records -------------------------------------------------------------------------
    Case(
        "nested field removed without default",
        session(fld("started_at", "long"), fld("user", "string")),
        session(fld("user", "string")),
        True,
        False,
        (
            E(BW, "FIELD_REMOVED", "/fields/session/fields/started_at", "'session.started_at'"),
            E(
                FW,
                "FIELD_REMOVED_WITHOUT_DEFAULT",
                "/fields/session/fields/started_at",
                "Field 'session.started_at' was removed and has no default, so consumers using version 1 "
                "can no longer read new events.",
            ),
        ),
        exact=True,
    ),
    Case(
        "nested field removed with default",
        session(fld("started_at", "long", default=0), fld("user", "string")),
        session(fld("user", "string")),
        True,
        True,
        (
            E(BW, "FIELD_REMOVED", "/fields/session/fields/started_at"),
            E(
                FW,
                "FIELD_REMOVED_WITH_DEFAULT",
                "/fields/session/fields/started_at",
                "'session.started_at'",
                "0",
            ),
        ),
        exact=True,
    ),
    Case(
        "nested field added without default",
        session(fld("user", "string")),
        session(fld("user", "string"), fld("device", "string")),
        False,
        True,
        (
            E(
                BW,
                "READER_FIELD_MISSING_DEFAULT",
                "/fields/session/fields/device",
                "'session.device'",
                "version 1",
            ),
            E(FW, "FIELD_ADDED", "/fields/session/fields/device", "'session.device'"),
        ),
        exact=True,
    ),
    Case(
        "nested field added with default",
        session(fld("user", "string")),
        session(fld("user", "string"), fld("device", "string", default="web")),
        True,
        True,
        (
            E(BW, "FIELD_ADDED_WITH_DEFAULT", "/fields/session/fields/device", "'session.device'", '"web"'),
            E(FW, "FIELD_ADDED", "/fields/session/fields/device"),
        ),
        exact=True,
    ),
    Case(
        "type change three records deep",
        rec([fld("a", inner([fld("b", inner([fld("c", "int")], name="C"))], name="B"))]),
        rec([fld("a", inner([fld("b", inner([fld("c", "string")], name="C"))], name="B"))]),
        False,
        False,
        (
            E(BW, "TYPE_MISMATCH", "/fields/a/fields/b/fields/c", "'a.b.c'", "int", "string"),
            E(FW, "TYPE_MISMATCH", "/fields/a/fields/b/fields/c", "'a.b.c'"),
        ),
        exact=True,
    ),
    Case(
        "nested record renamed without alias",
        session(fld("user", "string")),
        session(fld("user", "string"), name="Visit"),
        False,
        False,
        (
            E(BW, "NAME_MISMATCH", "/fields/session", "'com.acme.Session'"),
            E(FW, "NAME_MISMATCH", "/fields/session"),
        ),
    ),
    Case(
        "nested record renamed with a qualified alias",
        session(fld("user", "string")),
        session(fld("user", "string"), name="Visit", aliases=["com.acme.Session"]),
        True,
        False,
        (E(BW, "TYPE_RENAMED", "/fields/session"), E(FW, "NAME_MISMATCH", "/fields/session")),
        exact=True,
    ),
    Case(
        "nested record renamed with an unqualified alias (inherits the namespace)",
        session(fld("user", "string")),
        session(fld("user", "string"), name="Visit", aliases=["Session"]),
        True,
        False,
        (E(BW, "TYPE_RENAMED", "/fields/session"),),
        avro_differs=frozenset({BW}),
    ),
    Case(
        "record field to a string",
        session(fld("user", "string")),
        rec([fld("id", "long"), fld("session", "string")]),
        False,
        False,
        (E(BW, "TYPE_MISMATCH", "/fields/session", "record 'com.acme.Session'", "string"),),
    ),
    # --- arrays and maps ------------------------------------------------------------------------
    Case(
        "array items promoted",
        one({"type": "array", "items": "int"}),
        one({"type": "array", "items": "long"}),
        True,
        False,
        (
            E(BW, "TYPE_PROMOTED", "/fields/x/items", "items of field 'x'"),
            E(FW, "TYPE_MISMATCH", "/fields/x/items"),
        ),
        exact=True,
    ),
    Case(
        "array of records: field added without default",
        rec([fld("tags", {"type": "array", "items": inner([fld("name", "string")], name="Tag")})]),
        rec(
            [
                fld(
                    "tags",
                    {
                        "type": "array",
                        "items": inner([fld("name", "string"), fld("label", "string")], name="Tag"),
                    },
                )
            ]
        ),
        False,
        True,
        (
            E(BW, "READER_FIELD_MISSING_DEFAULT", "/fields/tags/items/fields/label", "'tags[].label'"),
            E(FW, "FIELD_ADDED", "/fields/tags/items/fields/label"),
        ),
        exact=True,
    ),
    Case(
        "array of records: field removed without default",
        rec(
            [
                fld(
                    "tags",
                    {
                        "type": "array",
                        "items": inner([fld("name", "string"), fld("label", "string")], name="Tag"),
                    },
                )
            ]
        ),
        rec([fld("tags", {"type": "array", "items": inner([fld("name", "string")], name="Tag")})]),
        True,
        False,
        (E(FW, "FIELD_REMOVED_WITHOUT_DEFAULT", "/fields/tags/items/fields/label", "'tags[].label'"),),
    ),
    Case(
        "array to map",
        one({"type": "array", "items": "string"}),
        one({"type": "map", "values": "string"}),
        False,
        False,
        (
            E(BW, "TYPE_MISMATCH", "/fields/x", "array of string", "map of string"),
            E(FW, "TYPE_MISMATCH", "/fields/x"),
        ),
        exact=True,
    ),
    Case(
        "map values changed incompatibly",
        rec([fld("attrs", {"type": "map", "values": "int"})]),
        rec([fld("attrs", {"type": "map", "values": "string"})]),
        False,
        False,
        (
            E(BW, "TYPE_MISMATCH", "/fields/attrs/values", "values of field 'attrs'"),
            E(FW, "TYPE_MISMATCH", "/fields/attrs/values"),
        ),
        exact=True,
    ),
    Case(
        "map values promoted",
        rec([fld("attrs", {"type": "map", "values": "float"})]),
        rec([fld("attrs", {"type": "map", "values": "double"})]),
        True,
        False,
        (E(BW, "TYPE_PROMOTED", "/fields/attrs/values"), E(FW, "TYPE_MISMATCH", "/fields/attrs/values")),
    ),
    Case(
        "map of records: field added with default",
        rec([fld("attrs", {"type": "map", "values": REC_A})]),
        rec(
            [
                fld(
                    "attrs",
                    {"type": "map", "values": inner([fld("a", "int"), fld("b", "string", default="")])},
                )
            ]
        ),
        True,
        True,
        (
            E(BW, "FIELD_ADDED_WITH_DEFAULT", "/fields/attrs/values/fields/b", "'attrs{}.b'"),
            E(FW, "FIELD_ADDED", "/fields/attrs/values/fields/b"),
        ),
        exact=True,
    ),
    Case(
        "array of arrays: inner items changed",
        one({"type": "array", "items": {"type": "array", "items": "boolean"}}),
        one({"type": "array", "items": {"type": "array", "items": "string"}}),
        False,
        False,
        (E(BW, "TYPE_MISMATCH", "/fields/x/items/items"),),
    ),
    # --- fixed ----------------------------------------------------------------------------------
    Case(
        "fixed size changed",
        one(fixed_t(16)),
        one(fixed_t(32)),
        False,
        False,
        (
            E(BW, "FIXED_SIZE_MISMATCH", "/fields/x", "16", "32", "'x'"),
            E(FW, "FIXED_SIZE_MISMATCH", "/fields/x", "16", "32"),
        ),
        exact=True,
    ),
    Case(
        "fixed renamed without alias",
        one(fixed_t(16)),
        one(fixed_t(16, name="Digest")),
        False,
        False,
        (
            E(BW, "NAME_MISMATCH", "/fields/x", "'com.acme.Hash'", "'com.acme.Digest'"),
            E(FW, "NAME_MISMATCH", "/fields/x"),
        ),
        exact=True,
    ),
    Case(
        "fixed renamed with a qualified alias",
        one(fixed_t(16)),
        one(fixed_t(16, name="Digest", aliases=["com.acme.Hash"])),
        True,
        False,
        (E(BW, "TYPE_RENAMED", "/fields/x"), E(FW, "NAME_MISMATCH", "/fields/x")),
        exact=True,
    ),
    Case(
        "fixed to bytes", one(fixed_t(16)), one("bytes"), False, False, (E(BW, "TYPE_MISMATCH", "/fields/x"),)
    ),
    # --- record names, aliases and namespaces ---------------------------------------------------
    Case(
        "top-level record renamed without alias",
        rec([fld("a", "int")]),
        rec([fld("a", "int")], name="Evt"),
        False,
        False,
        (E(BW, "NAME_MISMATCH", "/", "'com.acme.Event'", "'com.acme.Evt'"), E(FW, "NAME_MISMATCH", "/")),
        exact=True,
    ),
    Case(
        "top-level record renamed with a qualified alias",
        rec([fld("a", "int")]),
        rec([fld("a", "int")], name="Evt", aliases=["com.acme.Event"]),
        True,
        False,
        (E(BW, "TYPE_RENAMED", "/", "'com.acme.Event'"), E(FW, "NAME_MISMATCH", "/")),
        exact=True,
    ),
    Case(
        "top-level record renamed with an unqualified alias",
        rec([fld("a", "int")]),
        rec([fld("a", "int")], name="Evt", aliases=["Event"]),
        True,
        False,
        (E(BW, "TYPE_RENAMED", "/"),),
        avro_differs=frozenset({BW}),
    ),
    Case(
        "record moved and renamed with an alias into another namespace",
        rec([fld("a", "int")]),
        rec([fld("a", "int")], name="Evt", namespace="org.other", aliases=["com.acme.Event"]),
        True,
        False,
        (E(BW, "TYPE_RENAMED", "/"),),
    ),
    Case(
        "namespace changed, same unqualified name",
        rec([fld("a", "int")]),
        rec([fld("a", "int")], namespace="org.other"),
        True,
        True,
        (E(BW, "NAMESPACE_CHANGED", "/", "'org.other.Event'"), E(FW, "NAMESPACE_CHANGED", "/")),
        exact=True,
    ),
    Case(
        "unqualified alias does not reach a type in the null namespace",
        rec([fld("a", "int")], namespace=None),
        rec([fld("a", "int")], name="Evt", aliases=["Event"]),
        False,
        False,
        (E(BW, "NAME_MISMATCH", "/"),),
        avro_differs=frozenset({BW}),
    ),
    Case(
        "nested type in its own namespace, unqualified alias resolved there",
        rec([fld("s", inner([fld("a", "int")], name="Session", namespace="com.sessions"))]),
        rec(
            [fld("s", inner([fld("a", "int")], name="Visit", namespace="com.sessions", aliases=["Session"]))]
        ),
        True,
        False,
        (E(BW, "TYPE_RENAMED", "/fields/s", "'com.sessions.Session'"),),
        avro_differs=frozenset({BW}),
    ),
    Case(
        "reference by full name across namespaces",
        rec([fld("h", fixed_t(4, namespace="com.hash")), fld("g", "com.hash.Hash")]),
        rec([fld("h", fixed_t(8, namespace="com.hash")), fld("g", "com.hash.Hash")]),
        False,
        False,
        (E(BW, "FIXED_SIZE_MISMATCH", "/fields/h"), E(BW, "FIXED_SIZE_MISMATCH", "/fields/g")),
    ),
    # --- field renames via alias -------------------------------------------------------------------
    Case(
        "field renamed via alias",
        rec([fld("user", "string")]),
        rec([fld("user_id", "string", aliases=["user"])]),
        True,
        False,
        (
            E(BW, "FIELD_RENAMED", "/fields/user_id", "'user'", "'user_id'"),
            E(FW, "FIELD_REMOVED_WITHOUT_DEFAULT", "/fields/user", "'user'"),
            E(FW, "FIELD_ADDED", "/fields/user_id"),
        ),
        exact=True,
    ),
    Case(
        "field renamed via alias, the old field had a default",
        rec([fld("user", "string", default="anon")]),
        rec([fld("user_id", "string", aliases=["user"])]),
        True,
        True,
        (
            E(BW, "FIELD_RENAMED", "/fields/user_id"),
            E(FW, "FIELD_REMOVED_WITH_DEFAULT", "/fields/user", '"anon"'),
        ),
    ),
    Case(
        "field renamed without alias",
        rec([fld("user", "string")]),
        rec([fld("user_id", "string")]),
        False,
        False,
        (
            E(BW, "READER_FIELD_MISSING_DEFAULT", "/fields/user_id", "'user_id'"),
            E(BW, "FIELD_REMOVED", "/fields/user"),
            E(FW, "FIELD_REMOVED_WITHOUT_DEFAULT", "/fields/user"),
            E(FW, "FIELD_ADDED", "/fields/user_id"),
        ),
        exact=True,
    ),
    Case(
        "field renamed via alias and promoted",
        rec([fld("count", "int")]),
        rec([fld("total", "long", aliases=["count"])]),
        True,
        False,
        (E(BW, "FIELD_RENAMED", "/fields/total"), E(BW, "TYPE_PROMOTED", "/fields/total", "'total'")),
    ),
    Case(
        "old schema already aliased the new field name",
        rec([fld("user", "string", aliases=["user_id"])]),
        rec([fld("user_id", "string")]),
        False,
        True,
        (E(FW, "FIELD_RENAMED", "/fields/user_id"),),
    ),
    # --- defaults ---------------------------------------------------------------------------------
    Case(
        "field added with default",
        rec([fld("a", "int")]),
        rec([fld("a", "int"), fld("extra", "int", default=7)]),
        True,
        True,
        (
            E(BW, "FIELD_ADDED_WITH_DEFAULT", "/fields/extra", "'extra'", "7"),
            E(FW, "FIELD_ADDED", "/fields/extra"),
        ),
        exact=True,
    ),
    Case(
        "field added without default",
        rec([fld("a", "int")]),
        rec([fld("a", "int"), fld("extra", "int")]),
        False,
        True,
        (
            E(BW, "READER_FIELD_MISSING_DEFAULT", "/fields/extra", "'extra'"),
            E(FW, "FIELD_ADDED", "/fields/extra"),
        ),
        exact=True,
    ),
    Case(
        "nullable field added with null default",
        rec([fld("a", "int")]),
        rec([fld("a", "int"), fld("note", ["null", "string"], default=None)]),
        True,
        True,
        (E(BW, "FIELD_ADDED_WITH_DEFAULT", "/fields/note", "null"),),
    ),
    Case(
        "record-typed field added with default",
        rec([fld("a", "int")]),
        rec([fld("a", "int"), fld("d", REC_A, default={"a": 1})]),
        True,
        True,
        (E(BW, "FIELD_ADDED_WITH_DEFAULT", "/fields/d"),),
    ),
    Case(
        "field removed with default",
        rec([fld("a", "int"), fld("extra", "int", default=7)]),
        rec([fld("a", "int")]),
        True,
        True,
        (E(BW, "FIELD_REMOVED", "/fields/extra"), E(FW, "FIELD_REMOVED_WITH_DEFAULT", "/fields/extra", "7")),
        exact=True,
    ),
    Case(
        "field removed without default",
        rec([fld("a", "int"), fld("extra", "int")]),
        rec([fld("a", "int")]),
        True,
        False,
        (E(BW, "FIELD_REMOVED", "/fields/extra"), E(FW, "FIELD_REMOVED_WITHOUT_DEFAULT", "/fields/extra")),
        exact=True,
    ),
    Case(
        "default added to an existing field",
        rec([fld("a", "int")]),
        rec([fld("a", "int", default=0)]),
        True,
        True,
        exact=True,
    ),
    Case(
        "default removed from an existing field",
        rec([fld("a", "int", default=0)]),
        rec([fld("a", "int")]),
        True,
        True,
        exact=True,
    ),
    Case(
        "fields reordered",
        rec([fld("a", "int"), fld("b", "string")]),
        rec([fld("b", "string"), fld("a", "int")]),
        True,
        True,
        exact=True,
    ),
    # --- logical types ------------------------------------------------------------------------------
    Case(
        "logical type added",
        one("long"),
        one({"type": "long", "logicalType": "timestamp-millis"}),
        True,
        True,
        (
            E(BW, "LOGICAL_TYPE_CHANGED", "/fields/x", "none", "timestamp-millis"),
            E(FW, "LOGICAL_TYPE_CHANGED", "/fields/x"),
        ),
        exact=True,
    ),
    Case(
        "timestamp-millis to timestamp-micros",
        one({"type": "long", "logicalType": "timestamp-millis"}),
        one({"type": "long", "logicalType": "timestamp-micros"}),
        True,
        True,
        (E(BW, "LOGICAL_TYPE_CHANGED", "/fields/x", "timestamp-millis", "timestamp-micros"),),
        exact=False,
    ),
    Case(
        "date to timestamp-millis (int to long)",
        one({"type": "int", "logicalType": "date"}),
        one({"type": "long", "logicalType": "timestamp-millis"}),
        True,
        False,
        (
            E(BW, "TYPE_PROMOTED", "/fields/x"),
            E(BW, "LOGICAL_TYPE_CHANGED", "/fields/x"),
            E(FW, "TYPE_MISMATCH", "/fields/x"),
        ),
    ),
    Case(
        "uuid annotation removed",
        one({"type": "string", "logicalType": "uuid"}),
        one("string"),
        True,
        True,
        (E(BW, "LOGICAL_TYPE_CHANGED", "/fields/x", "uuid"),),
    ),
    Case(
        "decimal unchanged",
        one(decimal(10, 2)),
        one(decimal(10, 2)),
        True,
        True,
        exact=True,
    ),
    Case(
        "decimal precision changed",
        one(decimal(10, 2)),
        one(decimal(12, 2)),
        False,
        False,
        (E(BW, "DECIMAL_MISMATCH", "/fields/x", "10/2", "12/2"), E(FW, "DECIMAL_MISMATCH", "/fields/x")),
        exact=True,
        avro_differs=frozenset({BW, FW}),
    ),
    Case(
        "decimal scale changed",
        one(decimal(10, 2)),
        one(decimal(10, 3)),
        False,
        False,
        (E(BW, "DECIMAL_MISMATCH", "/fields/x"),),
        avro_differs=frozenset({BW, FW}),
    ),
    # --- recursive and shared types -----------------------------------------------------------------
    Case("recursive type unchanged", linked_list("long"), linked_list("long"), True, True, exact=True),
    Case(
        "recursive type promoted",
        linked_list("int"),
        linked_list("long"),
        True,
        False,
        (E(BW, "TYPE_PROMOTED", "/fields/value"), E(FW, "TYPE_MISMATCH", "/fields/value")),
        exact=True,
    ),
    Case(
        "recursive type gains a field without default",
        linked_list("long"),
        linked_list("long", fld("label", "string")),
        False,
        True,
        (E(BW, "READER_FIELD_MISSING_DEFAULT", "/fields/label"), E(FW, "FIELD_ADDED", "/fields/label")),
        exact=True,
    ),
    Case(
        "recursion through an array",
        rec([fld("label", "string"), fld("children", {"type": "array", "items": "Tree"})], name="Tree"),
        rec([fld("label", "bytes"), fld("children", {"type": "array", "items": "Tree"})], name="Tree"),
        True,
        True,
        (E(BW, "TYPE_PROMOTED", "/fields/label"), E(FW, "TYPE_PROMOTED_LOSSY", "/fields/label")),
        exact=True,
    ),
    Case(
        "mutually recursive types",
        rec(
            [
                fld("x", "int"),
                fld("b", ["null", inner([fld("a", ["null", "Event"]), fld("y", "int")], name="B")]),
            ]
        ),
        rec(
            [
                fld("x", "int"),
                fld("b", ["null", inner([fld("a", ["null", "Event"]), fld("y", "long")], name="B")]),
            ]
        ),
        True,
        False,
        (E(BW, "TYPE_PROMOTED", "/fields/b/[com.acme.B]/fields/y", "'b.y'"),),
        exact=False,
    ),
    Case(
        "shared named type changed: reported at every use",
        rec([fld("home", inner([fld("street", "string")], name="Address")), fld("work", "Address")]),
        rec(
            [
                fld("home", inner([fld("street", "string"), fld("zip", "string")], name="Address")),
                fld("work", "Address"),
            ]
        ),
        False,
        True,
        (
            E(BW, "READER_FIELD_MISSING_DEFAULT", "/fields/home/fields/zip", "'home.zip'"),
            E(BW, "READER_FIELD_MISSING_DEFAULT", "/fields/work/fields/zip", "'work.zip'"),
        ),
    ),
]


def _ids(cases: list[Case]) -> list[str]:
    return [case.id for case in cases]


def expected_verdict(case: Case, mode: CompatibilityMode) -> bool:
    if mode is CompatibilityMode.NONE:
        return True
    return all(case.backward if direction == BW else case.forward for direction in mode.directions)


def avro_compatible(reader: Any, writer: Any) -> bool:
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        reader=avro.schema.parse(json.dumps(reader)), writer=avro.schema.parse(json.dumps(writer))
    )
    return result.compatibility is SchemaCompatibilityType.compatible


def test_table_ids_are_unique() -> None:
    assert len(set(_ids(CASES))) == len(CASES)


@pytest.mark.parametrize("mode", ALL_MODES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_resolution_table(case: Case, mode: CompatibilityMode) -> None:
    report = check_compatibility(case.new, [(1, case.old)], mode)
    assert report.mode == mode.value
    assert report.compatible is expected_verdict(case, mode), report.to_dict()
    assert report.compatible is not any(change.severity == "error" for change in report.changes)
    directions = set(mode.directions)
    assert {change.direction for change in report.changes} <= directions
    assert all(change.against_version == 1 for change in report.changes)

    found = {(c.direction, c.rule, c.path): c for c in report.changes}
    wanted = [exp for exp in case.expect if exp.direction in directions]
    for exp in wanted:
        change = found.get((exp.direction, exp.rule, exp.path))
        assert change is not None, f"missing {exp} in {report.to_dict()}"
        severity = exp.severity or RULES[exp.rule]
        if mode is CompatibilityMode.NONE and severity == "error":
            severity = "warning"
        assert change.severity == severity
        for text in exp.text:
            assert text in change.message, (text, change.message)
    if case.exact:
        assert set(found) == {(e.direction, e.rule, e.path) for e in wanted}, report.to_dict()


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_table_verdicts_match_avro_reference(case: Case) -> None:
    ours = {BW: case.backward, FW: case.forward}
    reference = {
        BW: avro_compatible(reader=case.new, writer=case.old),
        FW: avro_compatible(case.old, case.new),
    }
    for direction in (BW, FW):
        if direction in case.avro_differs:
            assert reference[direction] != ours[direction], "avro now agrees with the spec: drop avro_differs"
        else:
            assert reference[direction] == ours[direction], direction


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_table_directions_are_checked_individually(case: Case) -> None:
    """The table's own verdicts hold per direction (BACKWARD and FORWARD modes)."""
    assert check_compatibility(case.new, [(1, case.old)], "BACKWARD").compatible is case.backward
    assert check_compatibility(case.new, [(1, case.old)], "FORWARD").compatible is case.forward


def test_every_rule_is_exercised_by_the_table() -> None:
    seen = {exp.rule for case in CASES for exp in case.expect}
    assert seen == set(RULES)


# ------------------------------------------------------------------------------------------------
# Transitive modes, de-duplication and report shape
# ------------------------------------------------------------------------------------------------

V1 = rec([fld("a", "int")])
V2 = rec([fld("a", "int"), fld("b", "string", default="x")])
V3 = rec([fld("a", "int"), fld("b", "string")])  # reads v2 data, not v1 data


@pytest.mark.parametrize(
    ("mode", "compatible"),
    [
        ("BACKWARD", True),
        ("BACKWARD_TRANSITIVE", False),
        ("FORWARD", True),
        ("FORWARD_TRANSITIVE", True),
        ("FULL", True),
        ("FULL_TRANSITIVE", False),
        ("NONE", True),
    ],
)
def test_transitive_differs_from_non_transitive(mode: str, compatible: bool) -> None:
    report = check_compatibility(V3, [(1, V1), (2, V2)], mode)
    assert report.compatible is compatible
    if not compatible:
        (error,) = report.errors
        assert (error.rule, error.path, error.against_version) == (
            "READER_FIELD_MISSING_DEFAULT",
            "/fields/b",
            1,
        )
        assert "version 1" in error.message


def test_forward_transitive_chain() -> None:
    v1 = rec([fld("a", "int"), fld("b", "string")])
    v2 = rec([fld("a", "int"), fld("b", "string", default="x")])
    v3 = rec([fld("a", "int")])
    assert check_compatibility(v3, [(1, v1), (2, v2)], "FORWARD").compatible
    report = check_compatibility(v3, [(1, v1), (2, v2)], "FORWARD_TRANSITIVE")
    assert not report.compatible
    assert [(c.rule, c.against_version) for c in report.errors] == [("FIELD_REMOVED_WITHOUT_DEFAULT", 1)]


def test_non_transitive_uses_only_the_last_version() -> None:
    report = check_compatibility(V3, [(1, V1), (2, V2)], "FULL")
    assert report.changes == []  # v3 only drops v2's default; v1 is not consulted
    report = check_compatibility(V3, [(1, V2), (2, V1)], "FULL")
    assert {change.against_version for change in report.changes} == {2}


def test_duplicates_across_versions_are_reported_once_against_the_oldest() -> None:
    old = rec([fld("a", "int")])
    new = rec([fld("a", "int"), fld("b", "string")])
    report = check_compatibility(new, [(4, old), (5, old), (6, old)], "BACKWARD_TRANSITIVE")
    assert [(c.rule, c.against_version) for c in report.changes] == [("READER_FIELD_MISSING_DEFAULT", 4)]


def test_no_previous_versions_is_compatible_with_no_changes() -> None:
    for mode in ALL_MODES:
        report = check_compatibility(V3, [], mode)
        assert report == CompatibilityReport(compatible=True, mode=mode.value, changes=[])


def test_changes_are_ordered_errors_first_and_deterministic() -> None:
    old = session(fld("started_at", "long"), fld("user", "string"))
    new = rec([fld("id", "long"), fld("session", inner([fld("user", "bytes")], name="Session"))])
    first = check_compatibility(new, [(1, old)], "FULL")
    second = check_compatibility(copy.deepcopy(new), [(1, copy.deepcopy(old))], "FULL")
    assert first == second
    ranks = [{"error": 0, "warning": 1, "info": 2}[c.severity] for c in first.changes]
    assert ranks == sorted(ranks)


def test_none_mode_downgrades_errors_to_warnings() -> None:
    report = check_compatibility(rec([fld("a", "string")]), [(1, rec([fld("a", "int")]))], "NONE")
    assert report.compatible
    assert {(c.direction, c.rule, c.severity) for c in report.changes} == {
        (BW, "TYPE_MISMATCH", "warning"),
        (FW, "TYPE_MISMATCH", "warning"),
    }


def test_report_to_dict_shape() -> None:
    report = check_compatibility(rec([fld("a", "long")]), [(3, rec([fld("a", "int")]))], "full")
    assert report.to_dict() == {
        "compatible": False,
        "mode": "FULL",
        "changes": [
            {
                "path": "/fields/a",
                "rule": "TYPE_MISMATCH",
                "severity": "error",
                "message": "Field 'a' changed from int to long, so consumers using version 3 can no longer "
                "read new events.",
                "against_version": 3,
                "direction": "forward",
            },
            {
                "path": "/fields/a",
                "rule": "TYPE_PROMOTED",
                "severity": "info",
                "message": "Field 'a' changed from int to long; the new schema reads the int values of "
                "version 3 as long.",
                "against_version": 3,
                "direction": "backward",
            },
        ],
    }
    json.dumps(report.to_dict())  # serialisable


def test_report_groups_what_is_new_against_the_latest_version() -> None:
    opt = {"type_": ["null", "string"], "default": None}
    v1 = rec([fld("id", "long")])
    v2 = rec([fld("id", "long"), fld("experiment", **opt)])
    proposal = rec([fld("id", "long"), fld("experiment", **opt), fld("note", **opt)])
    report = check_compatibility(proposal, [(1, v1), (2, json.dumps(v2))], "BACKWARD_TRANSITIVE")
    grouped = report.grouped_dict()
    assert grouped["latest_version"] == 2
    # `note` is new: reported against v2 (the latest), though v1 triggers it first in the flat list
    assert [(c["path"], c["against_version"]) for c in grouped["new"]] == [("/fields/note", 2)]
    # `experiment` was v2's own change, approved before: only older versions differ in it
    assert [(c["path"], c["against_version"]) for c in grouped["older"]] == [("/fields/experiment", 1)]
    assert {c.path for c in report.changes} == {"/fields/note", "/fields/experiment"}


def test_an_error_against_an_older_version_only_is_grouped_as_older_and_still_breaks() -> None:
    v1 = rec([fld("id", "long"), fld("gone", "string")])
    v2 = rec([fld("id", "long")])
    report = check_compatibility(rec([fld("id", "long"), fld("gone", "int")]), [(1, v1), (2, v2)],
                                 "FORWARD_TRANSITIVE")
    grouped = report.grouped_dict()
    assert not report.compatible
    assert [c["rule"] for c in grouped["older"] if c["severity"] == "error"] == ["TYPE_MISMATCH"]
    assert all(c["severity"] != "error" for c in grouped["new"])


def test_non_transitive_modes_have_only_new_changes() -> None:
    opt = {"type_": ["null", "string"], "default": None}
    report = check_compatibility(rec([fld("id", "long"), fld("a", **opt), fld("b", **opt)]),
                                 [(1, rec([fld("id", "long")])), (2, rec([fld("id", "long"), fld("a", **opt)]))],
                                 "BACKWARD")
    assert report.grouped_dict() == {"latest_version": 2, "new": [c.to_dict() for c in report.changes],
                                     "older": []}
    assert check_compatibility(rec([fld("id", "long")]), [], "BACKWARD").grouped_dict() == {
        "latest_version": None, "new": [], "older": []}


def test_parsed_schemas_are_fresh_copies_though_compiles_are_remembered() -> None:
    schema = rec([fld("id", "long")])
    first = parse_record_schema(json.dumps(schema))
    first["fields"].append(fld("mutated", "int"))
    assert parse_record_schema(json.dumps(schema)) == schema
    assert parse_record_schema(schema) == schema


def test_inputs_may_be_json_text() -> None:
    report = check_compatibility(json.dumps(V3), [(1, json.dumps(V1))], "BACKWARD")
    assert not report.compatible


def test_an_invalid_stored_version_names_the_version() -> None:
    with pytest.raises(SchemaError, match="Stored version 2"):
        check_compatibility(V1, [(2, {"type": "record", "name": "X", "fields": [{"name": "a"}]})], "BACKWARD")


def test_an_invalid_new_schema_raises_schema_error() -> None:
    with pytest.raises(SchemaError):
        check_compatibility('{"type": "record"', [(1, V1)], "BACKWARD")


def test_change_is_frozen_and_serialisable() -> None:
    change = Change("/fields/a", "FIELD_ADDED", "info", "Field 'a' was added.", None, "forward")
    with pytest.raises(AttributeError):
        change.rule = "X"  # type: ignore[misc]
    assert change.to_dict()["against_version"] is None


# ------------------------------------------------------------------------------------------------
# Paths, severities, messages
# ------------------------------------------------------------------------------------------------


def all_table_changes() -> Iterator[Change]:
    for case in CASES:
        yield from check_compatibility(case.new, [(1, case.old)], "FULL").changes


def test_paths_use_names_not_positions() -> None:
    for change in all_table_changes():
        assert change.path.startswith("/")
        for segment in change.path.strip("/").split("/"):
            assert not segment.isdigit(), change
        assert re.fullmatch(r"/|(/(fields/[A-Za-z_]\w*|items|values|\[[\w.]+\]))+", change.path), change.path


def test_every_message_is_one_sentence_naming_its_location() -> None:
    for change in all_table_changes():
        assert change.message.endswith("."), change.message
        assert change.message[0].isupper(), change.message
        if "/fields/" in change.path:
            last_field = change.path.rsplit("/fields/", 1)[1].split("/")[0]
            assert last_field in change.message, change


def test_severities_follow_the_documented_classes() -> None:
    assert RULES["ENUM_DEFAULT_USED"] == "warning"
    assert RULES["FIELD_ADDED_WITH_DEFAULT"] == "info"
    assert RULES["TYPE_PROMOTED"] == "info"
    assert RULES["TYPE_PROMOTED_LOSSY"] == "warning"
    assert RULES["FIELD_REMOVED_WITHOUT_DEFAULT"] == "error"
    for change in all_table_changes():
        assert change.severity == RULES[change.rule]


def test_lossy_promotion_says_why() -> None:
    report = check_compatibility(one("float"), [(1, one("long"))], "BACKWARD")
    (change,) = report.changes
    assert change.rule == "TYPE_PROMOTED_LOSSY"
    assert "precision" in change.message
    report = check_compatibility(one("string"), [(1, one("bytes"))], "BACKWARD")
    assert "UTF-8" in report.changes[0].message


def test_missing_union_branch_hints_at_a_renamed_record() -> None:
    report = check_compatibility(
        one(["null", inner([], name="Other")]), [(1, one(["null", inner([])]))], "BACKWARD"
    )
    (error,) = report.errors
    assert "record 'com.acme.Other' is there" in error.message


# ------------------------------------------------------------------------------------------------
# Compatibility modes
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("BACKWARD", CompatibilityMode.BACKWARD),
        ("backward", CompatibilityMode.BACKWARD),
        (" Full_Transitive ", CompatibilityMode.FULL_TRANSITIVE),
        ("forward-transitive", CompatibilityMode.FORWARD_TRANSITIVE),
        ("none", CompatibilityMode.NONE),
        (CompatibilityMode.FULL, CompatibilityMode.FULL),
    ],
)
def test_mode_parsing(text: str, mode: CompatibilityMode) -> None:
    assert CompatibilityMode.parse(text) is mode
    assert parse_compatibility_mode(text) is mode
    assert CompatibilityMode(text) is mode


@pytest.mark.parametrize("text", ["", "BACK", "full transitive please", "FULLY"])
def test_unknown_mode_names_the_valid_levels(text: str) -> None:
    with pytest.raises(ValueError, match="valid levels are BACKWARD, BACKWARD_TRANSITIVE, FORWARD"):
        CompatibilityMode.parse(text)
    with pytest.raises(ValueError, match="NONE"):
        check_compatibility(V1, [], text)


def test_mode_properties() -> None:
    assert CompatibilityMode.FULL.directions == (BW, FW)
    assert CompatibilityMode.NONE.directions == (BW, FW)
    assert CompatibilityMode.FORWARD_TRANSITIVE.directions == (FW,)
    assert CompatibilityMode.BACKWARD_TRANSITIVE.transitive
    assert not CompatibilityMode.FULL.transitive
    assert str(CompatibilityMode.FULL) == "FULL"


# ------------------------------------------------------------------------------------------------
# parse_schema
# ------------------------------------------------------------------------------------------------

VALID = rec(
    [
        fld("id", "long"),
        fld("kind", enum_t(["A", "B"], default="A"), default="B"),
        fld("hash", fixed_t(2), default="\u00ff\u0000"),
        fld("tags", {"type": "array", "items": "string"}, default=[]),
        fld("attrs", {"type": "map", "values": ["null", "int"]}, default={"k": None}),
        fld("when", {"type": "long", "logicalType": "timestamp-millis"}, default=0),
        fld("amount", decimal(9, 2), default="\u0000"),
        fld("next", ["null", "Event"], default=None),
        fld("detail", inner([fld("a", "int", default=1), fld("b", "string")]), default={"b": "x"}),
        fld("same", "Detail"),
        fld("ratio", "double", default=1),
        fld("flag", "boolean", default=False, order="descending", doc="d", aliases=["flg"]),
    ]
)


def test_parse_valid_schema_round_trips() -> None:
    assert parse_schema(VALID) == VALID
    assert parse_schema(json.dumps(VALID)) == VALID
    assert parse_record_schema(json.dumps(VALID)) == VALID
    assert parse_schema(VALID) is not VALID


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ("int", "int"),
        ('"string"', "string"),
        (["null", "string"], ["null", "string"]),
        ({"type": "map", "values": "long"}, {"type": "map", "values": "long"}),
    ],
)
def test_parse_non_record_schemas(schema: Any, expected: Any) -> None:
    assert parse_schema(schema) == expected


def schema_error(schema: Any) -> SchemaError:
    with pytest.raises(SchemaError) as caught:
        parse_schema(schema)
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.message and error.path.startswith("/")
    return error


def test_invalid_json() -> None:
    error = schema_error('{"type": "record", "name": "X",')
    assert "not valid JSON" in error.message
    assert "line 1" in error.message


def test_unknown_type_names_the_field_and_suggests() -> None:
    error = schema_error(rec([fld("session", "strin")]))
    assert error.path == "/fields/session"
    assert "'strin'" in error.message and "field 'session'" in error.message
    assert "Did you mean 'string'?" in error.message


def test_unknown_type_inside_nested_record_uses_the_full_path() -> None:
    error = schema_error(rec([fld("session", inner([fld("started_at", "timestamp")]))]))
    assert error.path == "/fields/session/fields/started_at"
    assert "'session.started_at'" in error.message


def test_reference_before_definition_is_unknown() -> None:
    error = schema_error(rec([fld("a", "Later"), fld("b", inner([], name="Later"))]))
    assert "unknown type 'Later'" in error.message


def test_reference_from_the_wrong_namespace_is_explained() -> None:
    schema = rec([fld("h", fixed_t(4, namespace="com.hash")), fld("g", "Hash")])
    error = schema_error(schema)
    assert "com.hash.Hash" in error.message and "full name" in error.message


def test_bad_default_names_field_and_type() -> None:
    error = schema_error(rec([fld("count", "int", default="zero")]))
    assert error.path == "/fields/count/default"
    assert "'count'" in error.message and '"zero"' in error.message and "int" in error.message


@pytest.mark.parametrize(
    ("field_type", "default", "needle"),
    [
        ("int", 2**31, "int"),
        ("long", 1.5, "long"),
        ("boolean", 0, "boolean"),
        ("bytes", "\u0100", "bytes"),
        ("null", 0, "null"),
        ({"type": "array", "items": "int"}, [1, "x"], "item 1"),
        ({"type": "map", "values": "int"}, {"k": "v"}, "value 'k'"),
        (enum_t(["A"]), "B", "symbols"),
        (fixed_t(2), "abc", "2 bytes"),
        (inner([fld("a", "int")]), {}, "lacks field 'a'"),
        (inner([fld("a", "int")]), {"a": "x"}, "field 'a'"),
        (["string", "null"], None, "first type"),
    ],
)
def test_invalid_defaults(field_type: Any, default: Any, needle: str) -> None:
    error = schema_error(rec([fld("f", field_type, default=default)]))
    assert needle in error.message
    assert "'f'" in error.message


def test_union_default_must_match_the_first_branch_and_says_how_to_fix() -> None:
    error = schema_error(rec([fld("note", ["null", "string"], default="hello")]))
    assert "first type" in error.message and "list string first" in error.message


def test_missing_name() -> None:
    error = schema_error(rec([fld("session", {"type": "record", "fields": []})]))
    assert error.path == "/fields/session"
    assert "without a 'name'" in error.message


def test_missing_field_name() -> None:
    error = schema_error(rec([{"type": "int"}]))
    assert error.path == "/fields/#1"
    assert "Field number 1" in error.message and "no 'name'" in error.message


def test_duplicate_field() -> None:
    error = schema_error(rec([fld("a", "int"), fld("a", "long")]))
    assert error.path == "/fields/a"
    assert "more than one field named 'a'" in error.message


def test_duplicate_type_name() -> None:
    error = schema_error(rec([fld("a", inner([])), fld("b", inner([]))]))
    assert "'com.acme.Detail' is defined more than once" in error.message


@pytest.mark.parametrize(
    ("schema", "path", "needle"),
    [
        ({"type": "record", "name": "X"}, "/", "'fields' list"),
        (rec([fld("a", "int")], name="1bad"), "/", "not a valid record name"),
        (rec([fld("a-b", "int")]), "/fields/a-b", "not a valid field name"),
        (rec([fld("a", "int", order="up")]), "/fields/a", "ascending"),
        (rec([{"name": "a"}]), "/fields/a", "no 'type'"),
        (rec([fld("u", ["null", "null"])]), "/fields/u/[null]", "more than once"),
        (rec([fld("u", ["null", ["int"]])]), "/fields/u/[#2]", "union inside a union"),
        (rec([fld("u", [])]), "/fields/u", "empty union"),
        (
            rec([fld("u", ["null", {"type": "array", "items": "int"}, {"type": "array", "items": "long"}])]),
            "/fields/u/[array]",
            "more than once",
        ),
        (rec([fld("e", enum_t(["A", "A"]))]), "/fields/e/symbols", "repeats"),
        (rec([fld("e", enum_t(["A", "b-c"]))]), "/fields/e/symbols", "invalid symbol 'b-c'"),
        (rec([fld("e", enum_t(["A"], default="Z"))]), "/fields/e/default", "not one of its symbols"),
        (rec([fld("h", fixed_t(-1))]), "/fields/h/size", "non-negative integer"),
        (rec([fld("h", {"type": "fixed", "name": "H"})]), "/fields/h/size", "'size'"),
        (rec([fld("xs", {"type": "array"})]), "/fields/xs", "without 'items'"),
        (rec([fld("m", {"type": "map"})]), "/fields/m", "without 'values'"),
        (rec([fld("t", {"name": "T"})]), "/fields/t", "without a 'type'"),
        (rec([fld("t", {"type": "string", "logicalType": 5})]), "/fields/t", "logicalType"),
        (rec([fld("t", {"type": {"type": "string"}})]), "/fields/t", "type name string"),
        (rec([fld("t", {"type": "Event"})]), "/fields/t", 'plain string "Event"'),
        (rec([fld("t", "record")]), "/fields/t", '{"type": "record", ...}'),
        (rec([fld("t", 5)]), "/fields/t", "not a number"),
        (rec([fld("t", inner([], name="int"))]), "/fields/t", "reserved"),
        ({"type": "error", "name": "E", "fields": []}, "/", "protocols"),
        ({"type": "union"}, "/", "JSON arrays"),
        (rec([fld("a", "int")], aliases="Old"), "/", "aliases"),
    ],
)
def test_invalid_schemas(schema: Any, path: str, needle: str) -> None:
    error = schema_error(schema)
    assert error.path == path, error
    assert needle in error.message, error.message


def test_schema_error_str_includes_path() -> None:
    error = schema_error(rec([fld("a", "nope")]))
    assert str(error).endswith("(at /fields/a)")


def test_not_json_serialisable_input() -> None:
    error = schema_error({"type": "record", "name": "X", "fields": [], "x": {1, 2}})
    assert "not JSON" in error.message


def test_parse_record_schema_requires_a_record() -> None:
    with pytest.raises(SchemaError, match="must be an Avro record at the top level, not map of long"):
        parse_record_schema({"type": "map", "values": "long"})
    with pytest.raises(SchemaError, match="not a union"):
        parse_record_schema(["null", "string"])


def test_valid_schemas_are_accepted_by_avro_too() -> None:
    for case in CASES:
        for schema in (case.old, case.new):
            parse_record_schema(schema)
            avro.schema.parse(json.dumps(schema))


# ------------------------------------------------------------------------------------------------
# diff_changes
# ------------------------------------------------------------------------------------------------


def test_diff_changes_lists_informational_differences() -> None:
    old = rec(
        [
            fld("id", "long"),
            fld("user", "string", default=""),
            fld("status", enum_t(["A", "B"])),
            fld("x", ["null", "int"], default=None),
            fld("gone", "int"),
        ]
    )
    new = rec(
        [
            fld("id", "int", default=0),
            fld("user_id", "string", aliases=["user"]),
            fld("status", enum_t(["A", "C"], default="A")),
            fld("x", ["null", "int", "string"], default=None),
            fld("new", "int", default=1),
        ],
        name="Evt",
    )
    changes = diff_changes(old, new, against_version=2)
    got = {(c.rule, c.path) for c in changes}
    assert got == {
        ("TYPE_RENAMED", "/"),
        ("TYPE_CHANGED", "/fields/id"),
        ("DEFAULT_ADDED", "/fields/id"),
        ("FIELD_RENAMED", "/fields/user_id"),
        ("DEFAULT_REMOVED", "/fields/user_id"),
        ("ENUM_SYMBOL_ADDED", "/fields/status"),
        ("ENUM_SYMBOL_REMOVED", "/fields/status"),
        ("ENUM_DEFAULT_CHANGED", "/fields/status"),
        ("UNION_BRANCH_ADDED", "/fields/x/[string]"),
        ("FIELD_ADDED", "/fields/new"),
        ("FIELD_REMOVED", "/fields/gone"),
    }
    assert {(c.severity, c.direction, c.against_version) for c in changes} == {("info", "diff", 2)}
    assert {c.rule for c in changes} <= DIFF_RULES


def test_diff_of_identical_schemas_is_empty() -> None:
    for case in CASES:
        assert diff_changes(case.old, case.old) == []


def test_diff_covers_size_namespace_logical_and_recursion() -> None:
    old = rec(
        [fld("h", fixed_t(4)), fld("t", "long"), fld("next", ["null", "Event"]), fld("d", decimal(4, 1))]
    )
    new = rec(
        [
            fld("h", fixed_t(8)),
            fld("t", {"type": "long", "logicalType": "timestamp-micros"}),
            fld("next", ["null", "Event"]),
            fld("d", decimal(5, 1)),
        ],
        namespace="org.other",
    )
    got = {(c.rule, c.path) for c in diff_changes(old, new)}
    assert got == {
        ("NAMESPACE_CHANGED", "/"),
        ("NAMESPACE_CHANGED", "/fields/h"),
        ("FIXED_SIZE_CHANGED", "/fields/h"),
        ("LOGICAL_TYPE_CHANGED", "/fields/t"),
        ("LOGICAL_TYPE_CHANGED", "/fields/d"),
    }


def test_diff_union_to_single() -> None:
    got = {(c.rule, c.path) for c in diff_changes(one(["null", "string"]), one("string"))}
    assert got == {("UNION_BRANCH_REMOVED", "/fields/x/[null]")}


# ------------------------------------------------------------------------------------------------
# Hypothesis: random schema pairs against the avro reference checker
# ------------------------------------------------------------------------------------------------

NAME_POOL = {"record": ["Inner", "Detail"], "enum": ["Color", "Shade"], "fixed": ["Hash", "Digest"]}
FIELD_POOL = ["a", "b", "c", "d"]
SYMBOL_POOL = ["A", "B", "C", "D"]
NAMESPACES = ["com.acme", "org.other"]
LOGICALS = [
    {"type": "long", "logicalType": "timestamp-millis"},
    {"type": "long", "logicalType": "timestamp-micros"},
    {"type": "int", "logicalType": "date"},
    {"type": "string", "logicalType": "uuid"},
]
SIMPLE_VALUES = {
    "null": None,
    "boolean": True,
    "int": 1,
    "long": 2,
    "float": 1.5,
    "double": 2.5,
    "bytes": "\u00ff",
    "string": "s",
}


class NoValue(Exception):
    pass


def qualify(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


class SchemaGen:
    """Draws a random, valid record schema.

    References are always written as full names, named-type aliases are fully qualified (the
    unqualified-alias quirk of the avro checker is covered by the table), and a union holds at
    most one named type per kind (so the spec's "first matching branch" and avro's "any
    compatible branch" cannot pick different branches).
    """

    def __init__(self, draw: Callable[[Any], Any]) -> None:
        self.draw = draw
        self.defined: dict[str, dict[str, Any]] = {}
        self.in_progress: set[str] = set()

    def pick(self, options: list[Any]) -> Any:
        return self.draw(st.sampled_from(options))

    def chance(self, percent: int) -> bool:
        return self.draw(st.integers(0, 99)) < percent

    def top(self) -> dict[str, Any]:
        namespace = self.pick([None, *NAMESPACES])
        schema: dict[str, Any] = {"type": "record", "name": "Event"}
        if namespace:
            schema["namespace"] = namespace
        self.in_progress.add(qualify("Event", namespace))
        schema["fields"] = self.fields(2, namespace)
        self.defined[qualify("Event", namespace)] = schema
        return schema

    def fields(self, depth: int, namespace: str | None) -> list[dict[str, Any]]:
        names = self.draw(st.lists(st.sampled_from(FIELD_POOL), min_size=1, max_size=3, unique=True))
        result = []
        for name in names:
            member: dict[str, Any] = {"name": name, "type": self.schema(depth, namespace)}
            if self.chance(20):
                member["aliases"] = [self.pick([f for f in FIELD_POOL if f != name])]
            if self.chance(40):
                try:
                    member["default"] = self.value(member["type"], 3)
                except NoValue:
                    pass
            result.append(member)
        return result

    def schema(self, depth: int, namespace: str | None, in_union: bool = False) -> Any:
        kinds = ["primitive"] * 4 + ["logical", "enum", "fixed"]
        if depth > 0:
            kinds += ["record", "array", "map"] + ([] if in_union else ["union", "union"])
        kind = self.pick(kinds)
        if kind == "primitive":
            return self.pick(PRIMITIVES)
        if kind == "logical":
            return dict(self.pick(LOGICALS))
        if kind == "array":
            return {"type": "array", "items": self.schema(depth - 1, namespace)}
        if kind == "map":
            return {"type": "map", "values": self.schema(depth - 1, namespace)}
        if kind == "union":
            return self.union(depth, namespace)
        return self.named(kind, depth, namespace)

    def named(self, kind: str, depth: int, namespace: str | None) -> Any:
        name = self.pick(NAME_POOL[kind])
        own = self.pick(["inherit", *NAMESPACES])
        space = namespace if own == "inherit" else own
        full = qualify(name, space)
        if full in self.defined or full in self.in_progress:
            if "." not in full and namespace:  # a null-namespace name cannot be referenced from here
                return "string"
            return full
        schema: dict[str, Any] = {"type": kind, "name": name}
        if own != "inherit":
            schema["namespace"] = own
        if self.chance(25):
            schema["aliases"] = [qualify(self.pick(NAME_POOL[kind]), space)]
        if kind == "enum":
            symbols = self.draw(st.lists(st.sampled_from(SYMBOL_POOL), min_size=1, max_size=4, unique=True))
            schema["symbols"] = symbols
            if self.chance(40):
                schema["default"] = self.pick(symbols)
        elif kind == "fixed":
            schema["size"] = self.pick([2, 4, 8])
        else:
            self.in_progress.add(full)
            schema["fields"] = self.fields(depth - 1, space)
            self.in_progress.discard(full)
        self.defined[full] = schema
        return schema

    def union(self, depth: int, namespace: str | None) -> list[Any]:
        branches: list[Any] = []
        labels: set[str] = set()
        for _ in range(self.draw(st.integers(1, 3))):
            snapshot = dict(self.defined)
            branch = self.schema(depth - 1, namespace, in_union=True)
            label, kind = self.label(branch, namespace)
            if label in labels or (kind in NAME_POOL and kind in labels):
                self.defined = snapshot
                continue
            labels.update({label, kind})
            branches.append(branch)
        return branches

    def label(self, branch: Any, namespace: str | None) -> tuple[str, str]:
        if isinstance(branch, str):
            if branch in PRIMITIVES:
                return branch, branch
            return branch, self.defined[branch]["type"] if branch in self.defined else "record"
        kind = branch["type"]
        if kind in NAME_POOL:
            return qualify(branch["name"], branch.get("namespace", namespace)), kind
        return kind, kind

    def value(self, schema: Any, depth: int) -> Any:
        if depth < 0:
            raise NoValue
        if isinstance(schema, list):
            return self.value(schema[0], depth)
        if isinstance(schema, str):
            if schema in SIMPLE_VALUES:
                return SIMPLE_VALUES[schema]
            if schema not in self.defined:
                raise NoValue  # a record still being defined
            return self.value(self.defined[schema], depth)
        kind = schema["type"]
        if kind in SIMPLE_VALUES:
            return SIMPLE_VALUES[kind]
        if kind == "enum":
            return schema["symbols"][-1]
        if kind == "fixed":
            return "\u0000" * schema["size"]
        if kind == "array":
            return [] if self.chance(50) else [self.value(schema["items"], depth - 1)]
        if kind == "map":
            return {} if self.chance(50) else {"k": self.value(schema["values"], depth - 1)}
        if kind == "record":
            return {member["name"]: self.value(member["type"], depth - 1) for member in schema["fields"]}
        raise NoValue


def walk_named(schema: Any, namespace: str | None, out: list[tuple[dict[str, Any], str]]) -> None:
    """(definition, full name) for every named type defined in ``schema``."""
    if isinstance(schema, list):
        for branch in schema:
            walk_named(branch, namespace, out)
        return
    if not isinstance(schema, dict):
        return
    kind = schema.get("type")
    if kind in NAME_POOL or kind == "record":
        name = schema["name"]
        full = qualify(name, schema.get("namespace", namespace))
        out.append((schema, full))
        namespace = full.rpartition(".")[0] or None
    for member in schema.get("fields", []):
        walk_named(member["type"], namespace, out)
    for key in ("items", "values"):
        if key in schema:
            walk_named(schema[key], namespace, out)


def slots(schema: Any) -> list[tuple[Any, Any]]:
    """(container, key) for every place a schema sits: field types, items, values, union branches."""
    found: list[tuple[Any, Any]] = []

    def visit(container: Any, key: Any) -> None:
        found.append((container, key))
        node = container[key]
        if isinstance(node, list):
            for index in range(len(node)):
                visit(node, index)
        elif isinstance(node, dict):
            for member in node.get("fields", []):
                visit(member, "type")
            for inner_key in ("items", "values"):
                if inner_key in node:
                    visit(node, inner_key)

    holder = [schema]
    visit(holder, 0)
    return found[1:]


def rename_refs(schema: Any, mapping: dict[str, str]) -> None:
    for container, key in slots(schema):
        value = container[key]
        if isinstance(value, str) and value in mapping:
            container[key] = mapping[value]


def records_of(schema: Any) -> list[dict[str, Any]]:
    out: list[tuple[dict[str, Any], str]] = []
    walk_named(schema, None, out)
    return [definition for definition, _ in out if definition["type"] == "record"]


@st.composite
def mutated(draw: Callable[[Any], Any], schema: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(schema)
    gen = SchemaGen(draw)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["field", "field", "slot", "slot", "slot", "enum", "fixed", "rename"]))
        if op == "field":
            mutate_fields(draw, gen, draw(st.sampled_from(records_of(result))))
        elif op == "slot":
            places = slots(result)
            if places:
                container, key = draw(st.sampled_from(places))
                mutate_slot(draw, gen, container, key)
        elif op in ("enum", "fixed"):
            mutate_named(draw, result, op)
        else:
            rename_named(draw, result)
    return result


def mutate_fields(draw: Callable[[Any], Any], gen: SchemaGen, record: dict[str, Any]) -> None:
    fields = record["fields"]
    action = draw(st.sampled_from(["add", "remove", "rename", "default"]))
    unused = [name for name in FIELD_POOL if all(f["name"] != name for f in fields)]
    if action == "add" and unused:
        member: dict[str, Any] = {
            "name": draw(st.sampled_from(unused)),
            "type": draw(st.sampled_from(PRIMITIVES)),
        }
        if draw(st.booleans()):
            member["default"] = SIMPLE_VALUES[member["type"]]
        fields.append(member)
    elif action == "remove" and fields:
        fields.pop(draw(st.integers(0, len(fields) - 1)))
    elif action == "rename" and fields and unused:
        member = draw(st.sampled_from(fields))
        old = member["name"]
        member["name"] = draw(st.sampled_from(unused))
        if draw(st.booleans()):
            member["aliases"] = [old]
    elif action == "default" and fields:
        member = draw(st.sampled_from(fields))
        if "default" in member:
            del member["default"]
        else:
            try:
                member["default"] = gen.value(member["type"], 3)
            except (NoValue, KeyError):
                pass


def mutate_slot(draw: Callable[[Any], Any], gen: SchemaGen, container: Any, key: Any) -> None:
    node = container[key]
    action = draw(st.sampled_from(["primitive", "wrap", "unwrap", "branch", "swap", "reverse"]))
    if action == "primitive":
        container[key] = draw(st.sampled_from(PRIMITIVES + LOGICALS))
    elif action == "wrap" and not isinstance(node, list):
        container[key] = ["null", node] if node != "null" else ["null", "string"]
    elif action == "unwrap" and isinstance(node, list) and node:
        container[key] = draw(st.sampled_from(node))
    elif action == "branch" and isinstance(node, list):
        extra = draw(st.sampled_from(PRIMITIVES))
        if len(node) > 1 and draw(st.booleans()):
            node.pop(draw(st.integers(0, len(node) - 1)))
        elif extra not in node:
            node.append(extra)
    elif action == "swap" and isinstance(node, dict) and node.get("type") in ("array", "map"):
        inner_schema = node.pop("items", None) or node.pop("values")
        if node["type"] == "array":
            node.update(type="map", values=inner_schema)
        else:
            node.update(type="array", items=inner_schema)
    elif action == "reverse" and isinstance(node, list):
        node.reverse()
    if isinstance(container, dict) and "default" in container and draw(st.booleans()):
        del container["default"]


def mutate_named(draw: Callable[[Any], Any], schema: Any, kind: str) -> None:
    found: list[tuple[dict[str, Any], str]] = []
    walk_named(schema, None, found)
    targets = [definition for definition, _ in found if definition["type"] == kind]
    if not targets:
        return
    target = draw(st.sampled_from(targets))
    if kind == "fixed":
        target["size"] = draw(st.sampled_from([2, 4, 8, 16]))
        return
    action = draw(st.sampled_from(["add", "remove", "default"]))
    symbols = target["symbols"]
    if action == "add":
        missing = [s for s in SYMBOL_POOL if s not in symbols]
        if missing:
            symbols.insert(draw(st.integers(0, len(symbols))), draw(st.sampled_from(missing)))
    elif action == "remove" and len(symbols) > 1:
        symbols.remove(draw(st.sampled_from(symbols)))
        if target.get("default") not in symbols:
            target.pop("default", None)
    elif action == "default":
        if "default" in target:
            del target["default"]
        else:
            target["default"] = draw(st.sampled_from(symbols))


def rename_named(draw: Callable[[Any], Any], schema: Any) -> None:
    before: list[tuple[dict[str, Any], str]] = []
    walk_named(schema, None, before)
    target, old_full = draw(st.sampled_from(before))
    action = draw(st.sampled_from(["name", "namespace"]))
    if action == "name":
        pool = NAME_POOL.get(target["type"], ["Event", "Renamed"]) + ["Renamed"]
        target["name"] = draw(st.sampled_from(pool))
    else:
        space = draw(st.sampled_from([None, *NAMESPACES]))
        if space is None:
            target.pop("namespace", None)
        else:
            target["namespace"] = space
    after: list[tuple[dict[str, Any], str]] = []
    walk_named(schema, None, after)
    mapping = {old: new for (_, old), (_, new) in zip(before, after, strict=True) if old != new}
    rename_refs(schema, mapping)
    if mapping.get(old_full) and draw(st.booleans()):
        target["aliases"] = [old_full]


def is_valid(schema: Any) -> bool:
    try:
        parse_record_schema(schema)
    except SchemaError:
        return False
    return True


@st.composite
def schema_pairs(draw: Callable[[Any], Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    old = SchemaGen(draw).top()
    assume(is_valid(old))
    if draw(st.integers(0, 9)) < 2:
        new = SchemaGen(draw).top()
    else:
        new = draw(mutated(old))
    assume(is_valid(new))
    return old, new


def unqualified_alias_to_null_namespace(schema: Any) -> bool:
    """True if an alias has no dot but its type sits in a namespace (the avro-checker quirk)."""
    found: list[tuple[dict[str, Any], str]] = []
    walk_named(schema, None, found)
    return any("." in full and any("." not in a for a in d.get("aliases", [])) for d, full in found)


HYPOTHESIS = settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


@HYPOTHESIS
@given(schema_pairs())
def test_random_pairs_agree_with_avro_reference(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    old, new = pair
    assume(not unqualified_alias_to_null_namespace(old) and not unqualified_alias_to_null_namespace(new))
    backward = check_compatibility(new, [(1, old)], "BACKWARD")
    forward = check_compatibility(new, [(1, old)], "FORWARD")
    assert backward.compatible == avro_compatible(reader=new, writer=old), backward.to_dict()
    assert forward.compatible == avro_compatible(reader=old, writer=new), forward.to_dict()


@HYPOTHESIS
@given(schema_pairs())
def test_random_pairs_report_invariants(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    old, new = pair
    backward = check_compatibility(new, [(1, old)], "BACKWARD")
    forward = check_compatibility(new, [(1, old)], "FORWARD")
    full = check_compatibility(new, [(1, old)], "FULL")
    none = check_compatibility(new, [(1, old)], "NONE")
    assert full.compatible == (backward.compatible and forward.compatible)
    assert none.compatible
    assert {c.to_dict()["path"] for c in full.changes} == {c.path for c in backward.changes + forward.changes}
    for change in full.changes:
        assert change.rule in RULES
        assert change.severity == RULES[change.rule]
        assert not any(segment.isdigit() for segment in change.path.split("/")), change.path
    assert check_compatibility(old, [(1, old)], "FULL").changes == []
    assert diff_changes(old, old) == []


# ------------------------------------------------------------------------------------------------
# Robustness
# ------------------------------------------------------------------------------------------------


def shared_chain(levels: int, leaf: str) -> dict[str, Any]:
    """L0 has two fields of type L1, L1 two of type L2, ...: 2**levels paths to the leaf."""
    node: Any = {"type": "record", "name": f"L{levels}", "fields": [fld("v", leaf)]}
    for level in range(levels - 1, -1, -1):
        node = {"type": "record", "name": f"L{level}", "fields": [fld("l", node), fld("r", f"L{level + 1}")]}
    return node


def test_shared_types_at_many_paths_stay_fast() -> None:
    import time

    old, new = shared_chain(40, "int"), shared_chain(40, "string")
    started = time.perf_counter()
    report = check_compatibility(new, [(1, old)], "FULL")
    diff = diff_changes(old, new)
    assert time.perf_counter() - started < 5
    assert not report.compatible
    assert "/fields/l" * 40 + "/fields/v" in {c.path for c in report.changes}
    assert diff


def test_deeply_nested_schema_is_a_schema_error() -> None:
    schema: Any = "int"
    for _ in range(200):
        schema = {"type": "array", "items": schema}
    error = schema_error(rec([fld("deep", schema)]))
    assert "nested more than 64 levels" in error.message
    with pytest.raises(SchemaError, match="nested"):
        parse_schema("[" * 100_000 + "]" * 100_000)


# --- normalized form (the registry's "same schema") -------------------------------------------


def normalized_text(schema: Any) -> str:
    return json.dumps(normalized_schema(parse_schema(schema)), sort_keys=True)


def test_one_schema_written_differently_has_one_normalized_form() -> None:
    plain = {"type": "record", "name": "Chat", "namespace": "com.acme", "fields": [
        {"name": "n", "type": "int"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
        {"name": "again", "type": ["null", "Kind"], "default": None},
    ]}
    written_otherwise = {"fields": [
        {"type": {"type": "int", "name": "n"}, "name": "n", "order": "ascending"},
        {"type": {"items": {"type": "string"}, "type": "array"}, "name": "tags", "aliases": []},
        {"name": "kind", "type": {"symbols": ["A", "B"], "name": "com.acme.Kind", "type": "enum"}},
        {"default": None, "name": "again", "type": ["null", "com.acme.Kind"]},
    ], "name": "com.acme.Chat", "type": "record"}
    assert normalized_text(plain) == normalized_text(written_otherwise)


def test_what_a_reader_sees_still_makes_schemas_different() -> None:
    base = {"type": "record", "name": "Chat", "fields": [{"name": "n", "type": ["null", "int"], "default": None}]}
    variants = [
        {**base, "doc": "A chat."},
        {**base, "fields": [{"name": "n", "type": ["null", "int"]}]},  # no default
        {**base, "fields": [{"name": "n", "type": ["null", "int"], "default": None, "aliases": ["m"]}]},
        {**base, "fields": [{"name": "n", "type": ["null", "int"], "default": None, "order": "descending"}]},
        {**base, "fields": [{"name": "n", "type": ["null", {"type": "int", "logicalType": "date"}],
                             "default": None}]},
        {**base, "namespace": "com.acme"},
    ]
    forms = {normalized_text(base), *(normalized_text(v) for v in variants)}
    assert len(forms) == len(variants) + 1
