"""A team's own Soda checks on a contract version: parsed and validated when the version is submitted.

A team writes Soda contract check entries for the canonical table (``CANONICAL.EVENTS``) in YAML, with
the version it drafts. They judge only the rows of that contract version (``quality.soda_contracts``
adds the scope), so the team names columns of the canonical table or attributes of the event types its
mapping produces, never a table::

    checks:
      - missing:
          column: CONVERSATION_ID
      - invalid:
          attribute: role
          event_type: message.sent
          valid_values: [user, assistant]
      - failed_rows:
          name: Answers stay under 100k output tokens
          expression: ATTRIBUTES:output_tokens::NUMBER > 100000

Allowed: ``missing`` and ``invalid`` (``valid_values``, ``valid_min``, ``valid_max``) on a ``column`` or
an ``attribute``, and ``failed_rows`` with an ``expression`` (the SQL condition that is true for a
failing row). Not allowed: ``query`` (SQL that could read other tables), subqueries, statements, unknown
functions, unknown keys. Every problem is a ``TeamChecksError`` naming where it is (``checks[2].invalid``)
and what is wrong. Pure: no Django, no network, no clock.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

__all__ = [
    "ALLOWED_CHECK_TYPES",
    "MAX_TEAM_CHECKS",
    "MAX_TEAM_CHECKS_BYTES",
    "TeamCheck",
    "TeamChecksError",
    "team_checks_parse",
    "expression_problem",
]

ALLOWED_CHECK_TYPES = ("missing", "invalid", "failed_rows")
MAX_TEAM_CHECKS_BYTES = 16 * 1024
MAX_TEAM_CHECKS = 25
MAX_EXPRESSION_CHARS = 1000
MAX_VALID_VALUES = 200
MAX_NAME_CHARS = 200
_COMMON_KEYS = frozenset({"name", "event_type", "threshold"})
_KEYS = {
    "missing": _COMMON_KEYS | {"column", "attribute"},
    "invalid": _COMMON_KEYS | {"column", "attribute", "valid_values", "valid_min", "valid_max"},
    "failed_rows": _COMMON_KEYS | {"expression"},
}
_THRESHOLD_KEYS = frozenset({"must_be", "must_be_less_than", "must_be_less_than_or_equal", "must_be_greater_than",
                             "must_be_greater_than_or_equal", "metric", "level"})
_ATTRIBUTE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
#: functions an expression may call: row-level, deterministic, no side effects (sqlglot's names, upper case)
SAFE_FUNCTIONS = frozenset({
    "ABS", "CEIL", "FLOOR", "ROUND", "MOD", "LEAST", "GREATEST", "COALESCE", "NULLIF", "IFF", "IF", "NVL", "IFNULL",
    "LOWER", "UPPER", "TRIM", "LTRIM", "RTRIM", "LENGTH", "SUBSTRING", "SUBSTR", "LEFT", "RIGHT", "CONCAT",
    "CONTAINS", "STARTSWITH", "ENDSWITH", "STARTS_WITH", "ENDS_WITH", "REGEXP_LIKE", "RLIKE", "REPLACE",
    "SPLIT_PART", "POSITION", "STRPOS", "CHARINDEX", "TRY_CAST", "TO_NUMBER", "TO_VARCHAR", "TO_CHAR",
    "TO_DOUBLE", "TO_BOOLEAN", "TRY_TO_NUMBER", "TRY_TO_DOUBLE", "TRY_TO_BOOLEAN", "ARRAY_SIZE", "TYPEOF",
    "IS_NULL_VALUE", "DATEDIFF", "TIMESTAMPDIFF", "DATEADD", "DATE_TRUNC", "TIMESTAMP_TRUNC", "DATETRUNC",
    "EXTRACT", "YEAR", "MONTH", "DAY", "HOUR", "MINUTE", "DAYOFWEEK", "TO_DATE", "TO_TIMESTAMP",
    "CHAR_LENGTH", "JSON_EXTRACT_PATH_TEXT", "GET_PATH", "GET", "PARSE_JSON", "ARRAY_CONTAINS", "SIGN", "SQRT",
    "POWER", "POW", "LN", "LOG", "EXP", "TRUNC",
})


class TeamChecksError(ValueError):
    """A team check the platform refuses: ``path`` says which one (``checks[1].invalid.valid_values``)."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


@dataclasses.dataclass(frozen=True)
class TeamCheck:
    """One validated team check, as plain data (what the generated Soda contract is built from)."""

    type: str
    name: str
    column: str | None = None
    attribute: str | None = None
    event_type: str | None = None
    expression: str | None = None
    valid_values: tuple[Any, ...] | None = None
    valid_min: float | None = None
    valid_max: float | None = None
    threshold: tuple[tuple[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, ())}
        if self.valid_values is not None:
            out["valid_values"] = list(self.valid_values)
        if self.threshold:
            out["threshold"] = dict(self.threshold)
        return out


def _refuse_aliases(text: str) -> None:
    # An alias repeats a node without its text: a few hundred bytes can expand to gigabytes ("billion laughs").
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(token, (yaml.AliasToken, yaml.AnchorToken)):
                line = token.start_mark.line + 1
                raise TeamChecksError("", f"YAML anchors and aliases (& and *) are not allowed (line {line}); "
                                          "write each check out.")
    except yaml.YAMLError as err:
        raise TeamChecksError("", f"The checks are not valid YAML: {_yaml_problem(err)}") from err


def _yaml_problem(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else str(problem)


def _load(text: str) -> list[Any]:
    size = len(text.encode())
    if size > MAX_TEAM_CHECKS_BYTES:
        raise TeamChecksError("", f"The checks are {size:,} bytes; the limit is {MAX_TEAM_CHECKS_BYTES:,} bytes.")
    _refuse_aliases(text)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise TeamChecksError("", f"The checks are not valid YAML: {_yaml_problem(err)}") from err
    if doc is None:
        return []
    if isinstance(doc, dict):
        unknown = sorted(str(k) for k in doc if k != "checks")
        if unknown:
            raise TeamChecksError("", f"Only a 'checks' list is allowed at the top, not {', '.join(unknown)} "
                                      "(the platform adds the dataset and columns).")
        doc = doc.get("checks")
    if not isinstance(doc, list):
        raise TeamChecksError("checks", "Write the checks as a YAML list (`checks:` followed by `- missing: …`).")
    if len(doc) > MAX_TEAM_CHECKS:
        raise TeamChecksError("checks", f"{len(doc)} checks; at most {MAX_TEAM_CHECKS} per version.")
    return doc


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise TeamChecksError(path, f"must be a number, not {value!r}.")
    return float(value)


def _threshold(body: Mapping[str, Any], path: str) -> tuple[tuple[str, Any], ...]:
    raw = body.get("threshold")
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not raw:
        raise TeamChecksError(path, "must be a mapping such as {must_be_less_than: 10}.")
    out = []
    for key, value in raw.items():
        if key not in _THRESHOLD_KEYS:
            raise TeamChecksError(f"{path}.{key}", f"is not a threshold key; use {', '.join(sorted(_THRESHOLD_KEYS))}.")
        if key == "metric":
            if value not in ("count", "percent"):
                raise TeamChecksError(f"{path}.metric", "must be count or percent.")
        elif key == "level":
            if value not in ("fail", "warn"):
                raise TeamChecksError(f"{path}.level", "must be fail or warn.")
        else:
            value = _number(value, f"{path}.{key}")
        out.append((str(key), value))
    comparisons = [k for k, _ in out if k.startswith("must_")]
    if len(comparisons) != 1:
        # Soda builds no threshold from two comparisons: the check would never be evaluated
        raise TeamChecksError(path, "needs exactly one comparison such as must_be or must_be_less_than"
                                    + (f", not {' and '.join(comparisons)}." if comparisons else "."))
    return tuple(out)


def _target(check_type: str, body: Mapping[str, Any], path: str, columns: frozenset[str],
            attributes: frozenset[str]) -> tuple[str | None, str | None]:
    column, attribute = body.get("column"), body.get("attribute")
    if (column is None) == (attribute is None):
        raise TeamChecksError(path, f"a {check_type} check names exactly one 'column' (of CANONICAL.EVENTS) or one "
                                    "'attribute' (of the event types the mapping produces).")
    if column is not None:
        name = str(column).upper() if isinstance(column, str) else ""
        if name not in columns:
            raise TeamChecksError(f"{path}.column", f"{column!r} is not a column of CANONICAL.EVENTS; the columns "
                                                    f"are {', '.join(sorted(columns))}.")
        return name, None
    if not isinstance(attribute, str) or not _ATTRIBUTE_RE.match(attribute) or attribute not in attributes:
        known = ", ".join(sorted(attributes)) or "none"
        raise TeamChecksError(f"{path}.attribute", f"{attribute!r} is not an attribute of the event types this "
                                                   f"version produces ({known}).")
    return None, attribute


def _valid_values(body: Mapping[str, Any], path: str) -> tuple[Any, ...] | None:
    raw = body.get("valid_values")
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise TeamChecksError(f"{path}.valid_values", "must be a non-empty list of values.")
    if len(raw) > MAX_VALID_VALUES:
        raise TeamChecksError(f"{path}.valid_values", f"{len(raw)} values; at most {MAX_VALID_VALUES}.")
    for value in raw:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or (
                isinstance(value, str) and len(value) > 200):
            raise TeamChecksError(f"{path}.valid_values", f"{value!r} is not a text or number of at most 200 "
                                                          "characters.")
    return tuple(raw)


def _one_check(index: int, entry: Any, *, columns: frozenset[str], attributes: Mapping[str, frozenset[str]],
               event_types: tuple[str, ...]) -> TeamCheck:
    path = f"checks[{index}]"
    if not isinstance(entry, dict) or len(entry) != 1:
        raise TeamChecksError(path, "each check is one mapping whose only key is its type, e.g. `- missing: {column: "
                                    "SESSION_ID}`.")
    check_type, body = next(iter(entry.items()))
    if check_type not in ALLOWED_CHECK_TYPES:
        raise TeamChecksError(path, f"check type {check_type!r} is not allowed; team checks may be "
                                    f"{', '.join(ALLOWED_CHECK_TYPES)}.")
    path = f"{path}.{check_type}"
    body = body if body is not None else {}
    if not isinstance(body, dict):
        raise TeamChecksError(path, "the check's settings must be a mapping (key: value lines under it).")
    unknown = sorted(str(k) for k in body if k not in _KEYS[check_type])
    if unknown:
        raise TeamChecksError(f"{path}.{unknown[0]}", f"is not allowed in a {check_type} team check; allowed: "
                                                      f"{', '.join(sorted(_KEYS[check_type]))}.")
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS):
        raise TeamChecksError(f"{path}.name", f"must be text of 1–{MAX_NAME_CHARS} characters.")
    event_type = body.get("event_type")
    if event_type is not None and event_type not in event_types:
        raise TeamChecksError(f"{path}.event_type", f"{event_type!r} is not an event type this version produces "
                                                    f"({', '.join(event_types) or 'none'}).")
    allowed_attributes = attributes.get(event_type, frozenset()) if event_type else frozenset().union(
        *attributes.values())
    threshold = _threshold(body, f"{path}.threshold")
    if check_type == "failed_rows":
        expression = body.get("expression")
        if not isinstance(expression, str) or not expression.strip():
            raise TeamChecksError(f"{path}.expression", "is required: the SQL condition that is true for a failing "
                                                        "row (a 'query' is not allowed in team checks).")
        problem = expression_problem(expression, columns=columns, attributes=allowed_attributes)
        if problem:
            raise TeamChecksError(f"{path}.expression", problem)
        return TeamCheck("failed_rows", (name or expression.strip())[:MAX_NAME_CHARS], event_type=event_type,
                         expression=" ".join(expression.split()), threshold=threshold)
    column, attribute = _target(check_type, body, path, columns, allowed_attributes)
    return _column_or_attribute_check(check_type, body, path, name, column, attribute, event_type, threshold)


def _column_or_attribute_check(check_type: str, body: Mapping[str, Any], path: str, name: str | None,
                               column: str | None, attribute: str | None, event_type: str | None,
                               threshold: tuple[tuple[str, Any], ...]) -> TeamCheck:
    what = column or f"attribute {attribute}"
    if check_type == "missing":
        return TeamCheck("missing", name or f"{what} is present", column=column, attribute=attribute,
                         event_type=event_type, threshold=threshold)
    values = _valid_values(body, path)
    low = None if body.get("valid_min") is None else _number(body["valid_min"], f"{path}.valid_min")
    high = None if body.get("valid_max") is None else _number(body["valid_max"], f"{path}.valid_max")
    if values is None and low is None and high is None:
        raise TeamChecksError(path, "an invalid check needs valid_values, valid_min or valid_max.")
    if low is not None and high is not None and low > high:
        raise TeamChecksError(f"{path}.valid_min", f"{low:g} is above valid_max {high:g}.")
    if values is not None and (low is not None or high is not None):
        raise TeamChecksError(path, "use either valid_values or valid_min/valid_max, not both.")
    if values is not None:
        default = f"{what} is one of {', '.join(map(str, values))}"
    elif low is not None and high is not None:
        default = f"{what} is between {low:g} and {high:g}"
    else:
        default = f"{what} is at least {low:g}" if low is not None else f"{what} is at most {high:g}"
    return TeamCheck("invalid", (name or default)[:MAX_NAME_CHARS], column=column, attribute=attribute,
                     event_type=event_type, valid_values=values, valid_min=low, valid_max=high, threshold=threshold)


def team_checks_parse(text: str | None, *, columns: Iterable[str], attributes: Mapping[str, Iterable[str]]
                      ) -> list[TeamCheck]:
    """Validate a team's checks (YAML text) against the canonical table's ``columns`` and the
    ``attributes`` of each event type the version produces (``{event_type: field names}``).
    Returns the checks; raises TeamChecksError naming the first problem. Empty text: no checks."""
    if text is None or not text.strip():
        return []
    doc = _load(text)
    cols = frozenset(c.upper() for c in columns)
    attrs = {k: frozenset(v) for k, v in attributes.items()}
    event_types = tuple(sorted(attrs))
    return [_one_check(i, entry, columns=cols, attributes=attrs, event_types=event_types)
            for i, entry in enumerate(doc)]


def _reject_node(node: Any, columns: frozenset[str], attributes: frozenset[str]) -> str | None:
    from sqlglot import exp

    forbidden = (exp.Subquery, exp.Select, exp.Union, exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create,
                 exp.Drop, exp.Alter, exp.Command, exp.Table, exp.Join, exp.Window, exp.AggFunc, exp.Placeholder,
                 exp.Parameter)
    if isinstance(node, forbidden):
        kind = "an aggregate or window function" if isinstance(node, (exp.AggFunc, exp.Window)) else \
            f"{node.key.upper()} (another table or statement)"
        return f"may not contain {kind}: a team check is a condition on one row of its own events."
    if isinstance(node, exp.Column):
        if node.table:
            return f"refers to {node.sql(dialect='snowflake')}: name columns of CANONICAL.EVENTS without a table."
        if node.name.upper() not in columns:
            return f"{node.name!r} is not a column of CANONICAL.EVENTS."
    if isinstance(node, exp.JSONPathKey) and node.parent is not None and isinstance(
            node.parent.parent, exp.JSONExtract):
        extract = node.parent.parent
        base = extract.this
        first = node.parent.expressions[1] if len(node.parent.expressions) > 1 else None
        if isinstance(base, exp.Column) and base.name.upper() == "ATTRIBUTES" and node is first and \
                node.this not in attributes:
            return f"ATTRIBUTES:{node.this} is not an attribute of the event types this version produces."
    if isinstance(node, exp.Anonymous) or (isinstance(node, exp.Func) and not isinstance(
            node, (exp.Binary, exp.Unary, exp.Predicate, exp.Cast, exp.JSONExtract, exp.Case, exp.If, exp.Paren))):
        name = str(node.this if isinstance(node, exp.Anonymous) else node.sql_name()).upper()
        if name not in SAFE_FUNCTIONS:
            return f"calls {name}, which team checks may not use (docs/quality.md lists the functions they may)."
    return None


def expression_problem(expression: str, *, columns: Iterable[str], attributes: Iterable[str]) -> str | None:
    """What is wrong with a failed_rows ``expression`` (None: fine): it must be one condition over a row
    of CANONICAL.EVENTS, in Snowflake SQL, naming only its columns and the version's attributes."""
    import sqlglot
    from sqlglot.errors import ParseError, TokenError

    if len(expression) > MAX_EXPRESSION_CHARS:
        return f"is {len(expression)} characters; the limit is {MAX_EXPRESSION_CHARS}."
    if ";" in expression or "--" in expression or "/*" in expression:
        return "may not contain ';' or SQL comments: one condition only."
    try:
        # parsed to inspect it, never run
        statement = sqlglot.parse_one(f"SELECT 1 FROM __team_check_rows WHERE {expression}",  # noqa: S608
                                      read="snowflake")
    except (ParseError, TokenError) as err:
        return f"is not a SQL condition Snowflake would accept: {str(err).splitlines()[0]}"
    where = statement.args.get("where") if isinstance(statement, sqlglot.exp.Select) else None
    if where is None or statement.args.get("group") or statement.args.get("limit") or \
            len(list(statement.find_all(sqlglot.exp.Table))) != 1:
        return "must be one condition (what follows WHERE), not a clause or statement."
    cols, attrs = frozenset(c.upper() for c in columns), frozenset(attributes)
    for node in where.this.walk():
        problem = _reject_node(node, cols, attrs)
        if problem:
            return problem
    return None


def version_attributes(mapping_spec: Any) -> dict[str, frozenset[str]]:
    """``{event_type: attribute names}`` for the event types a mapping produces (every type when the
    mapping names none): what a team check of that version may name."""
    from contracts.canonical_model import EVENT_TYPES, load_canonical_model

    model = load_canonical_model()
    rules = mapping_spec.get("events") if isinstance(mapping_spec, dict) else None
    produced = {r.get("type") for r in rules if isinstance(r, dict)} if isinstance(rules, list) else set()
    types = [t for t in EVENT_TYPES if t in produced] or list(EVENT_TYPES)
    return {t: frozenset(f.name for f in model.event_types[t].fields) for t in types}


def canonical_columns() -> frozenset[str]:
    """The columns of CANONICAL.EVENTS a team check may name."""
    from warehouse.ddl import CANONICAL_EVENTS

    return frozenset(c.name for c in CANONICAL_EVENTS.columns)


def version_team_checks(text: str | None, mapping_spec: Any) -> list[TeamCheck]:
    """A version's team checks validated against the canonical table and what its mapping produces."""
    return team_checks_parse(text, columns=canonical_columns(), attributes=version_attributes(mapping_spec))
