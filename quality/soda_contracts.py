"""Soda Core 4 data contracts, generated from the canonical model, the warehouse DDL and the registry.

Nothing here is written by hand per table: for ``CANONICAL.EVENTS`` and each curated ``ANALYTICS.*``
table, the checks follow from data the platform already has:

* **schema**: every column of the table's DDL (``warehouse.ddl`` / ``warehouse.analytics_ddl``) with
  its type (``NUMBER(38,0)`` → ``NUMBER``: the type name, as Soda compares it);
* **row count** above zero;
* **freshness**: ``CANONICAL.EVENTS`` by ``RECEIVED_AT`` (the newest event the collectors received
  is in the warehouse; ``canonical_freshness_minutes``, 3 by default); a curated table by its first
  non-null time column (``curated_freshness_hours``; a DATE column in days);
* **missing and duplicate keys**: the canonical model's required fields must not be missing and
  ``EVENT_ID`` is unique (the model's identity: "one row per event_id"); a curated table's key
  columns (its declared primary key) must not be missing nor duplicated;
* **valid values**: the model's enums (event types, platforms; ``role``, ``kind``, ``status`` inside
  ``ATTRIBUTES`` per event type) and, in curated tables, the columns named after them;
* **ranges**: a field's ``x-range`` (feedback score in [-1, 1]); counts, tokens, durations and
  costs not negative;
* **registry**: each event's contract (subject, version) is a version the registry approved (a
  subject it does not know, or a version above the newest approved one, fails); its source is a
  registered source;
* **referential** (``failed_rows`` queries where the table's shape allows): a feedback event rates
  a message that exists; a tool call's result follows its call;
* **team checks**: the checks a team added to an approved contract version (``contracts.team_checks``),
  each scoped to the rows of that source, subject and version (a ``filter`` on column checks, the same
  condition ANDed into a ``failed_rows`` expression), so a team's rule never judges another's rows.

The generated YAML starts with the canonical model version and the contract versions it derives
from, so it changes whenever a contract version is approved or deprecated. Pure: no Django, no
network, no clock.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Any

import yaml

from contracts.canonical_model import CANONICAL_VERSION, EVENT_TYPES, PLATFORMS, load_canonical_model
from contracts.team_checks import TeamCheck
from warehouse.analytics_ddl import CURATED_TABLES, UNKNOWN
from warehouse.ddl import CANONICAL_EVENTS, Table, check_identifier

__all__ = [
    "DATA_SOURCE_NAME",
    "QUALITY_TABLES",
    "ContractRef",
    "TeamCheckSet",
    "GenerationSettings",
    "CheckSpec",
    "GeneratedContract",
    "quality_table",
    "table_label",
    "soda_contract",
    "soda_data_source",
    "sample_sql",
    "team_checks_preview",
]

#: the Soda data source name: the first segment of every generated ``dataset:``
DATA_SOURCE_NAME = "chatorbit_wh"
#: the tables the generated contracts cover, in the order pages list them
QUALITY_TABLES: tuple[Table, ...] = (CANONICAL_EVENTS, *CURATED_TABLES)
#: numeric fields whose names end so are counts, sizes, durations or tokens: never negative
NON_NEGATIVE_SUFFIXES = ("_tokens", "_ms", "_count", "_length")
_NUMERIC_AVRO = frozenset({"int", "long", "float", "double"})
#: curated columns named after (ending in) a canonical enum field take its symbols
_ENUM_FIELDS = {"PLATFORM": ("platform",), "ROLE": ("message.sent", "role"), "KIND": ("feedback.submitted", "kind")}
#: the envelope fields whose presence every event needs, beyond the model's own "required" (none yet)
_TIME_TYPES = ("TIMESTAMP", "DATE")


@dataclasses.dataclass(frozen=True, order=True)
class ContractRef:
    """One contract version events may carry (approved, or approved once and since deprecated)."""

    subject: str
    version: int
    status: str = "approved"
    source_id: str = ""
    source: str = ""

    @property
    def label(self) -> str:
        return f"{self.subject} v{self.version} ({self.status})"


@dataclasses.dataclass(frozen=True)
class TeamCheckSet:
    """The team checks of one approved contract version, and whose rows they judge."""

    subject: str
    version: int
    source_id: str
    checks: tuple[TeamCheck, ...] = ()
    #: why the stored checks were left out (they no longer validate against the canonical model)
    problem: str = ""

    @property
    def label(self) -> str:
        if self.problem:
            return f"team checks of {self.subject} v{self.version}: left out ({self.problem})"
        n = len(self.checks)
        return f"team checks of {self.subject} v{self.version} ({n} check{'' if n == 1 else 's'})"


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    database: str
    contract_versions: tuple[ContractRef, ...] = ()
    team_checks: tuple[TeamCheckSet, ...] = ()
    canonical_freshness_minutes: float = 3.0
    curated_freshness_hours: float = 2.0
    data_source_name: str = DATA_SOURCE_NAME


@dataclasses.dataclass(frozen=True)
class CheckSpec:
    """What the platform knows about one generated check: how to find its Soda result and how to
    select a sample of the rows that fail it (Soda reports counts only)."""

    key: str
    type: str
    name: str
    column: str | None = None
    qualifier: str | None = None
    #: the WHERE condition that is true for a failing row (column checks, failed_rows expressions)
    failing_condition: str | None = None
    #: a failed_rows query: its rows are the failing rows
    failing_query: str | None = None
    #: a duplicate check's columns (failing rows share their values with another row)
    duplicate_columns: tuple[str, ...] = ()
    #: columns a sample row shows
    sample_columns: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class GeneratedContract:
    table: str
    dataset: str
    document: dict
    yaml: str
    checks: tuple[CheckSpec, ...]
    derived_from: tuple[str, ...]
    canonical_version: str

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.yaml.encode()).hexdigest()

    def check(self, key: str) -> CheckSpec | None:
        return next((c for c in self.checks if c.key == key), None)


def table_label(table: Table) -> str:
    return f"{table.schema}.{table.name}"


def quality_table(label: str) -> Table:
    """The covered table named ``SCHEMA.NAME`` (case-insensitive); ValueError naming the known ones."""
    wanted = (label or "").strip().upper()
    for table in QUALITY_TABLES:
        if table_label(table) == wanted or table.name == wanted:
            return table
    known = ", ".join(table_label(t) for t in QUALITY_TABLES)
    raise ValueError(f"No quality checks cover table {label!r}; the covered tables are {known}.")


def check_key(check_type: str, column: str | None = None, qualifier: str | None = None) -> str:
    """How a Soda check result is matched to its CheckSpec: type, column and qualifier."""
    return f"{check_type}:{column or ''}:{qualifier or ''}"


def _soda_type(sql_type: str) -> str:
    return sql_type.split("(", 1)[0].strip().upper()


def _sql_list(values: Iterable[str]) -> str:
    return ", ".join("'" + str(v).replace("'", "''") + "'" for v in values)


def _slug(*parts: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", "_".join(parts).lower()).strip("_")


class _Builder:
    """Collects the columns and checks of one contract, with a CheckSpec per check."""

    def __init__(self, table: Table, sample_base: tuple[str, ...]):
        self.table = table
        self.sample_base = sample_base
        self.columns: dict[str, dict[str, Any]] = {
            c.name: {"name": c.name, "data_type": _soda_type(c.sql_type)} for c in table.columns}
        self.dataset_checks: list[dict] = [{"schema": None}, {"row_count": None}]
        self.specs: list[CheckSpec] = [
            CheckSpec(check_key("schema"), "schema", "Columns and types match the warehouse DDL"),
            CheckSpec(check_key("row_count"), "row_count", "The table has rows"),
        ]

    def _samples(self, *extra: str | None) -> tuple[str, ...]:
        cols = [*self.sample_base, *(e for e in extra if e)]
        return tuple(dict.fromkeys(c for c in cols if c in self.columns or c.startswith("(")))

    def column_check(self, column: str, check_type: str, body: dict | None, name: str, condition: str | None,
                     duplicate: bool = False, qualifier: str | None = None, shows: Sequence[str] = ()) -> None:
        checks = self.columns[column].setdefault("checks", [])
        head = {"name": name, "qualifier": qualifier} if qualifier else {"name": name}
        checks.append({check_type: {**head, **(body or {})}})
        self.specs.append(CheckSpec(
            check_key(check_type, column, qualifier), check_type, name, column=column, qualifier=qualifier,
            failing_condition=condition, duplicate_columns=(column,) if duplicate else (),
            sample_columns=self._samples(column, *shows)))

    def freshness(self, column: str, unit: str, limit: float, name: str) -> None:
        self.dataset_checks.append({"freshness": {"name": name, "column": column,
                                                  "threshold": {"unit": unit, "must_be_less_than": limit}}})
        self.specs.append(CheckSpec(check_key("freshness"), "freshness", name, column=column))

    def duplicate_rows(self, columns: Sequence[str], name: str) -> None:
        self.dataset_checks.append({"duplicate": {"name": name, "columns": list(columns)}})
        self.specs.append(CheckSpec(check_key("duplicate"), "duplicate", name, duplicate_columns=tuple(columns),
                                    sample_columns=self._samples(*columns)))

    def failed_rows(self, qualifier: str, name: str, *, expression: str | None = None, query: str | None = None,
                    shows: Sequence[str] = (), threshold: dict | None = None) -> None:
        body: dict[str, Any] = {"name": name, "qualifier": qualifier}
        if expression is not None:
            body["expression"] = expression
        else:
            body["query"] = query
        if threshold:
            body["threshold"] = threshold
        self.dataset_checks.append({"failed_rows": body})
        self.specs.append(CheckSpec(
            check_key("failed_rows", None, qualifier), "failed_rows", name, qualifier=qualifier,
            failing_condition=expression, failing_query=query,
            sample_columns=self._samples(*shows) if expression is not None else ()))


def _canonical_attribute_checks(b: _Builder) -> None:
    """Valid values and ranges of the fields inside ATTRIBUTES, per event type (from the model)."""
    model = load_canonical_model()
    for type_name in EVENT_TYPES:
        for f in model.event_types[type_name].fields:
            base = f.base_type
            is_number = isinstance(base, str) and base in _NUMERIC_AVRO
            value = f"ATTRIBUTES:{f.name}::{'FLOAT' if is_number else 'VARCHAR'}"
            where = f"EVENT_TYPE = '{type_name}' AND "
            if f.symbols:
                valid = _sql_list(f.symbols)
                condition = (f"COALESCE({value}, '') NOT IN ({valid})" if f.required
                             else f"{value} IS NOT NULL AND {value} NOT IN ({valid})")
                name = f"{type_name} {f.name} is one of {', '.join(f.symbols)}"
                kind = "valid"
            elif is_number and f.value_range:
                low, high = f.value_range
                condition = f"({value} < {low:g} OR {value} > {high:g})"
                name = f"{type_name} {f.name} is between {low:g} and {high:g}"
                kind = "range"
            elif is_number and f.name.endswith(NON_NEGATIVE_SUFFIXES):
                condition = f"{value} < 0"
                name = f"{type_name} {f.name} is not negative"
                kind = "range"
            else:
                continue
            b.failed_rows(_slug(type_name, f.name, kind), name, expression=where + condition, shows=("ATTRIBUTES",))


def _registry_checks(b: _Builder, settings: GenerationSettings) -> None:
    """Each event's contract version and source are ones the registry knows."""
    newest: dict[str, int] = {}
    for ref in settings.contract_versions:
        newest[ref.subject] = max(newest.get(ref.subject, 0), ref.version)
    whens = " ".join(f"WHEN {_sql_list([s])} THEN {int(v)}" for s, v in sorted(newest.items()))
    latest = f"CASE CONTRACT:name::VARCHAR {whens} ELSE 0 END" if whens else "0"
    b.failed_rows(
        "contract_version_approved", "The event's contract version is one the registry approved",
        expression=f"COALESCE(CONTRACT:version::NUMBER, 0) > {latest} OR CONTRACT:version::NUMBER < 1",
        shows=("CONTRACT",))
    source_ids = sorted({ref.source_id for ref in settings.contract_versions if ref.source_id})
    if source_ids:
        b.column_check("SOURCE_ID", "invalid", {"valid_values": source_ids},
                       "The source is registered with an approved contract",
                       f"SOURCE_ID IS NOT NULL AND SOURCE_ID NOT IN ({_sql_list(source_ids)})")


def _canonical_referential_checks(b: _Builder, events: str) -> None:
    # SQL text here and below holds only DDL identifiers and literals quoted by _sql_list: hence noqa S608
    b.failed_rows(
        "feedback_rates_existing_message", "A feedback event rates a message that exists",
        query=(f"SELECT f.EVENT_ID, f.EVENT_TYPE, f.SOURCE_ID, f.PLATFORM, f.MESSAGE_ID, f.EVENT_TIME\n"  # noqa: S608
               f"FROM {events} f\nWHERE f.EVENT_TYPE = 'feedback.submitted' AND f.MESSAGE_ID IS NOT NULL\n"
               f"  AND NOT EXISTS (SELECT 1 FROM {events} m\n"
               f"                  WHERE m.EVENT_TYPE = 'message.sent' AND m.MESSAGE_ID = f.MESSAGE_ID)\n"))
    call_id = "ATTRIBUTES:tool_call_id::VARCHAR"
    b.failed_rows(
        "tool_result_follows_call", "A tool call's result follows its call",
        query=(f"SELECT c.EVENT_ID, c.EVENT_TYPE, c.SOURCE_ID, c.PLATFORM, c.{call_id} AS TOOL_CALL_ID, c.EVENT_TIME\n"  # noqa: S608
               f"FROM {events} c\nWHERE c.EVENT_TYPE = 'tool_call.completed' AND c.{call_id} IS NOT NULL\n"
               f"  AND NOT EXISTS (SELECT 1 FROM {events} s\n"
               f"                  WHERE s.EVENT_TYPE = 'tool_call.started' AND s.{call_id} = c.{call_id}\n"
               f"                    AND s.EVENT_TIME <= c.EVENT_TIME)\n"))


def _sql_value(value: Any) -> str:
    return f"{float(value):g}" if isinstance(value, (int, float)) else _sql_list([str(value)])


def _team_scope(team: TeamCheckSet, event_type: str | None) -> str:
    """The rows one version's team checks judge: its source's events of that subject and version."""
    parts = [f"SOURCE_ID = {_sql_list([team.source_id])}", f"CONTRACT:name::VARCHAR = {_sql_list([team.subject])}",
             f"CONTRACT:version::NUMBER = {int(team.version)}"]
    if event_type:
        parts.append(f"EVENT_TYPE = {_sql_list([event_type])}")
    return " AND ".join(parts)


def _failing_condition(check: TeamCheck, value: str) -> str:
    """The condition true for a row that fails a missing or invalid check on ``value`` (a column or path)."""
    if check.type == "missing":
        return f"{value} IS NULL"
    if check.valid_values is not None:
        numeric = all(isinstance(v, (int, float)) for v in check.valid_values)
        typed = f"{value}::FLOAT" if numeric and value.startswith("ATTRIBUTES:") else (
            f"{value}::VARCHAR" if value.startswith("ATTRIBUTES:") else value)
        return f"{typed} IS NOT NULL AND {typed} NOT IN ({', '.join(_sql_value(v) for v in check.valid_values)})"
    typed = f"{value}::FLOAT" if value.startswith("ATTRIBUTES:") else value
    bounds = ([f"{typed} < {check.valid_min:g}"] if check.valid_min is not None else []) + (
        [f"{typed} > {check.valid_max:g}"] if check.valid_max is not None else [])
    return "(" + " OR ".join(bounds) + ")"


def _team_checks(b: _Builder, sets: Sequence[TeamCheckSet]) -> None:
    """Each approved version's team checks, scoped to its rows: a column check keeps its Soda type with
    the scope as its ``filter``; an attribute or expression check is a ``failed_rows`` expression."""
    for team in sets:
        for number, check in enumerate(team.checks, 1):
            qualifier = _slug("team", team.subject, f"v{team.version}", str(number))
            name = f"[{team.subject} v{team.version}] {check.name}"
            scope = _team_scope(team, check.event_type)
            threshold = dict(check.threshold) if check.threshold else None
            if check.column is not None:
                body: dict[str, Any] = {"filter": scope}
                if check.type == "invalid":
                    body.update({k: v for k, v in (("valid_values", list(check.valid_values or []) or None),
                                                   ("valid_min", check.valid_min), ("valid_max", check.valid_max))
                                 if v is not None})
                if threshold:
                    body["threshold"] = threshold
                b.column_check(check.column, check.type, body, name,
                               f"{scope} AND {_failing_condition(check, check.column)}", qualifier=qualifier,
                               shows=("CONTRACT",))
                continue
            condition = check.expression if check.type == "failed_rows" else _failing_condition(
                check, f"ATTRIBUTES:{check.attribute}")
            b.failed_rows(qualifier, name, expression=f"{scope} AND ({condition})", shows=("CONTRACT", "ATTRIBUTES"),
                          threshold=threshold)


def _canonical_checks(b: _Builder, settings: GenerationSettings, qualified_name: str) -> None:
    model = load_canonical_model()
    required = [f.name.upper() for f in model.envelope if f.required and f.name.upper() in b.columns]
    for column in required:
        b.column_check(column, "missing", None, f"{column} is present (required by the canonical model)",
                       f"{column} IS NULL")
    for col in b.table.columns:
        if col.not_null and col.name not in required:
            b.column_check(col.name, "missing", None, f"{col.name} is present", f"{col.name} IS NULL")
    b.column_check("EVENT_ID", "duplicate", None, "One row per EVENT_ID", None, duplicate=True)
    b.column_check("EVENT_TYPE", "invalid", {"valid_values": list(EVENT_TYPES)}, "EVENT_TYPE is a canonical type",
                   f"EVENT_TYPE IS NOT NULL AND EVENT_TYPE NOT IN ({_sql_list(EVENT_TYPES)})")
    b.column_check("PLATFORM", "invalid", {"valid_values": list(PLATFORMS)}, "PLATFORM is a canonical platform",
                   f"PLATFORM IS NOT NULL AND PLATFORM NOT IN ({_sql_list(PLATFORMS)})")
    b.column_check("DUPLICATE_COUNT", "invalid", {"valid_min": 0}, "DUPLICATE_COUNT is not negative",
                   "DUPLICATE_COUNT < 0")
    b.freshness("RECEIVED_AT", "minute", settings.canonical_freshness_minutes,
                f"The newest event was received less than {settings.canonical_freshness_minutes:g} minutes ago")
    _registry_checks(b, settings)
    _canonical_attribute_checks(b)
    _canonical_referential_checks(b, qualified_name)
    _team_checks(b, [t for t in settings.team_checks if not t.problem])


def _enum_values(column: str) -> tuple[str, ...] | None:
    model = load_canonical_model()
    for suffix, where in _ENUM_FIELDS.items():
        if column == suffix or column.endswith("_" + suffix):
            if len(where) == 1:
                field = model.envelope_field(where[0])
            else:
                field = model.event_types[where[0]].field(where[1])
            return field.symbols if field is not None else None
    return None


def _curated_checks(b: _Builder, settings: GenerationSettings) -> None:
    table = b.table
    score_range = load_canonical_model().event_types["feedback.submitted"].field("score").value_range
    for column in table.primary_key:
        b.column_check(column, "missing", None, f"Key column {column} is present", f"{column} IS NULL")
    if len(table.primary_key) == 1:
        b.column_check(table.primary_key[0], "duplicate", None, f"One row per {table.primary_key[0]}", None,
                       duplicate=True)
    elif table.primary_key:
        b.duplicate_rows(table.primary_key, f"One row per {', '.join(table.primary_key)}")
    for col in table.columns:
        values = _enum_values(col.name)
        sql_type = _soda_type(col.sql_type)
        if values is not None:
            allowed = [*values, UNKNOWN] if col.name == "PLATFORM" else list(values)
            b.column_check(col.name, "invalid", {"valid_values": allowed}, f"{col.name} is one of {', '.join(allowed)}",
                           f"{col.name} IS NOT NULL AND {col.name} NOT IN ({_sql_list(allowed)})")
        elif col.name.endswith("SCORE") and score_range:
            low, high = score_range
            b.column_check(col.name, "invalid", {"valid_min": low, "valid_max": high},
                           f"{col.name} is between {low:g} and {high:g}",
                           f"({col.name} < {low:g} OR {col.name} > {high:g})")
        elif sql_type == "NUMBER":  # every NUMBER of a curated table is a count, tokens or a cost
            b.column_check(col.name, "invalid", {"valid_min": 0}, f"{col.name} is not negative", f"{col.name} < 0")
    time_column = next((c for c in table.columns if c.not_null and _soda_type(c.sql_type).startswith(_TIME_TYPES)),
                       None)
    if time_column is not None:
        if _soda_type(time_column.sql_type) == "DATE":
            days = max(2, int(-(-settings.curated_freshness_hours // 24)) + 1)
            b.freshness(time_column.name, "day", days, f"The newest {time_column.name} is less than {days} days old")
        else:
            hours = settings.curated_freshness_hours
            b.freshness(time_column.name, "hour", hours,
                        f"The newest {time_column.name} is less than {hours:g} hours old")
    if {"MESSAGE_ID", "RATED_MESSAGE_EVENT_ID"} <= set(b.columns):
        b.failed_rows("rated_message_exists", "The rated message exists",
                      expression="MESSAGE_ID IS NOT NULL AND RATED_MESSAGE_EVENT_ID IS NULL",
                      shows=("MESSAGE_ID", "RATED_MESSAGE_EVENT_ID"))


def _sample_base(table: Table) -> tuple[str, ...]:
    if table is CANONICAL_EVENTS:
        return ("EVENT_ID", "EVENT_TYPE", "SOURCE_ID", "PLATFORM", "EVENT_TIME", "RECEIVED_AT")
    return (*table.primary_key, *(c for c in ("PLATFORM", "SOURCE_ID") if c in table.column_index))


class _ContractDumper(yaml.SafeDumper):
    """SQL queries as literal blocks (``|``), readable in the portal and in a diff."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ContractDumper.add_representer(str, _str_representer)


def soda_contract(table: Table, settings: GenerationSettings) -> GeneratedContract:
    """The Soda contract of ``table`` (one of ``QUALITY_TABLES``) as a document, its YAML and its checks."""
    if table not in QUALITY_TABLES:
        raise ValueError(f"No quality checks are generated for {table_label(table)}.")
    database = check_identifier(settings.database)
    qualified_name = f"{database}.{table.schema}.{table.name}"
    b = _Builder(table, _sample_base(table))
    if table is CANONICAL_EVENTS:
        _canonical_checks(b, settings, qualified_name)
    else:
        _curated_checks(b, settings)
    refs = sorted(set(settings.contract_versions))
    team_sets = sorted(settings.team_checks, key=lambda t: (t.subject, t.version)) if table is CANONICAL_EVENTS else []
    derived_from = (f"canonical model v{CANONICAL_VERSION}", *(r.label for r in refs), *(t.label for t in team_sets))
    return _rendered(table, b, settings, derived_from, qualified_name, len(refs))


def _rendered(table: Table, b: _Builder, settings: GenerationSettings, derived_from: tuple[str, ...],
              qualified_name: str, n_refs: int) -> GeneratedContract:
    database = qualified_name.split(".", 1)[0]
    dataset = f"{settings.data_source_name}/{database}/{table.schema}/{table.name}"
    document = {
        "dataset": dataset,
        "description": f"{table_label(table)}: generated from the canonical model v{CANONICAL_VERSION}, the warehouse "
                       f"DDL and {n_refs} contract version(s) of the registry. Do not edit: regenerate.",
        "columns": list(b.columns.values()),
        "checks": b.dataset_checks,
    }
    header = ["# Generated by ChatOrbit (quality/soda_contracts.py): do not edit by hand.",
              f"# Table: {qualified_name}", "# Derived from:", *(f"#   - {item}" for item in derived_from)]
    text = "\n".join(header) + "\n" + yaml.dump(document, Dumper=_ContractDumper, sort_keys=False, allow_unicode=True,
                                                width=4096)
    return GeneratedContract(table=table_label(table), dataset=dataset, document=document, yaml=text,
                             checks=tuple(b.specs), derived_from=derived_from, canonical_version=CANONICAL_VERSION)


def team_checks_preview(checks: Sequence[TeamCheck], *, subject: str = "team-checks.preview", version: int = 1,
                        source_id: str = "0", database: str = "PREVIEW") -> GeneratedContract:
    """A contract of CANONICAL.EVENTS holding only ``checks`` (plus schema and row count): what Soda's
    own parser reads when a version is submitted, before anything is saved."""
    team = TeamCheckSet(subject=subject, version=version, source_id=source_id, checks=tuple(checks))
    b = _Builder(CANONICAL_EVENTS, _sample_base(CANONICAL_EVENTS))
    _team_checks(b, [team])
    qualified_name = f"{check_identifier(database)}.{CANONICAL_EVENTS.schema}.{CANONICAL_EVENTS.name}"
    return _rendered(CANONICAL_EVENTS, b, GenerationSettings(database=database), (team.label,), qualified_name, 0)


def soda_data_source(*, warehouse: str | None, name: str = DATA_SOURCE_NAME) -> dict:
    """The Soda data source model the contracts run with. The connection itself is the platform's own
    (``warehouse.connection``): these credentials are never used. ``warehouse`` is always set: without
    one Soda runs ``SELECT CURRENT_WAREHOUSE()``, which the embedded warehouse (fakesnow) lacks."""
    return {"type": "snowflake", "name": name,
            "connection": {"account": "from-warehouse-connection", "user": "unused", "password": "unused",
                           "warehouse": warehouse or "EMBEDDED_WH"}}


def sample_sql(spec: CheckSpec, *, qualified_name: str, has_source: bool, per_source: int, limit: int,
               subject_columns: Sequence[str] = ()) -> str | None:
    """SQL selecting up to ``per_source`` failing rows of each source (``limit`` in all) for ``spec``, or
    None when the check has no rows to show (schema, row count, freshness). ``subject_columns`` (the table's
    identifier columns) are selected too, as ``SUBJECT__<column>``: the sample keeps them only as keyed hashes
    (quality.samples), so an erasure finds the subject's sampled rows."""
    if spec.failing_query is not None:
        inner = f"SELECT * FROM (\n{spec.failing_query.rstrip()}\n) q"  # noqa: S608
    elif spec.sample_columns and (spec.failing_condition or spec.duplicate_columns):
        cols = ", ".join([*spec.sample_columns,
                          *(f"{check_identifier(c)} AS SUBJECT__{check_identifier(c)}" for c in subject_columns)])
        if spec.duplicate_columns:
            keys = ", ".join(spec.duplicate_columns)
            not_null = " AND ".join(f"{c} IS NOT NULL" for c in spec.duplicate_columns)
            inner = (f"SELECT {cols} FROM {qualified_name} WHERE {not_null} "  # noqa: S608
                     f"QUALIFY COUNT(*) OVER (PARTITION BY {keys}) > 1")
        else:
            inner = f"SELECT {cols} FROM {qualified_name} WHERE {spec.failing_condition}"  # noqa: S608
    else:
        return None
    if has_source:
        return (f"SELECT * FROM ({inner}) s QUALIFY ROW_NUMBER() OVER (PARTITION BY s.SOURCE_ID ORDER BY "  # noqa: S608
                f"s.SOURCE_ID) <= {int(per_source)} LIMIT {int(limit)}")
    return f"SELECT * FROM ({inner}) s LIMIT {int(limit)}"  # noqa: S608
