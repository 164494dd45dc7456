"""Running a generated contract with Soda Core on the platform's own warehouse connection.

Soda gets the connection ``warehouse.connection`` opened (the embedded fakesnow server locally,
Snowflake in production: the same YAML either way); it neither opens nor closes it. Every generated
check comes back as one ``CheckOutcome``: a check Soda did not evaluate, or that a failed query kept
from running, is an ``error`` carrying the reason, never a pass.
"""

from __future__ import annotations

import dataclasses
import math
import os
from numbers import Number
from typing import Any

from quality.soda_contracts import CheckSpec, GeneratedContract, check_key, soda_data_source

__all__ = ["CheckOutcome", "OUTCOMES", "contract_parse_errors", "contract_verify", "outcomes_all_error",
           "outcomes_from_results"]

#: worst first: how pages order checks and pick a table's worst one
OUTCOMES = ("error", "failed", "warned", "not_evaluated", "passed")
_SODA_OUTCOMES = {"PASSED": "passed", "FAILED": "failed", "WARN": "warned", "NOT_EVALUATED": "not_evaluated",
                  "EXCLUDED": "not_evaluated"}


@dataclasses.dataclass
class CheckOutcome:
    spec: CheckSpec
    outcome: str
    measured: float | None = None
    threshold: str = ""
    diagnostics: dict = dataclasses.field(default_factory=dict)
    error: str = ""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, Number):
        return None
    as_float = float(value)  # type: ignore[arg-type]
    return as_float if math.isfinite(as_float) else None


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Number):
        return _number(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def threshold_text(threshold: Any) -> str:
    """Soda's Threshold as one line: ``must be 0``, ``must be less than 3``."""
    if threshold is None:
        return ""
    parts = []
    for attr, label in (("must_be", "must be"), ("must_not_be", "must not be"),
                        ("must_be_greater_than", "must be greater than"),
                        ("must_be_greater_than_or_equal", "must be at least"),
                        ("must_be_less_than", "must be less than"),
                        ("must_be_less_than_or_equal", "must be at most")):
        value = getattr(threshold, attr, None)
        if value is not None:
            parts.append(f"{label} {value:g}" if isinstance(value, (int, float)) else f"{label} {value}")
    text = " and ".join(parts)
    level = getattr(threshold, "level", "fail")
    return f"{text} (warn)" if level == "warn" and text else text


def _schema_details(result: Any) -> dict:
    if not hasattr(result, "expected_column_names_not_actual"):
        return {}
    return {
        "missing_columns": list(result.expected_column_names_not_actual or []),
        "unexpected_columns": list(result.actual_column_names_not_expected or []),
        "type_mismatches": [{"column": m.column, "expected": m.expected_data_type, "actual": m.actual_data_type}
                            for m in result.column_data_type_mismatches or []],
    }


def outcomes_from_results(contract: GeneratedContract, check_results: list[Any],
                          errors: list[str]) -> list[CheckOutcome]:
    """Match Soda's check results to the generated checks; a generated check without a result, or not
    evaluated, is an error (with Soda's error text when it logged one). Pure."""
    reason = "; ".join(errors)[:2000]
    by_key = {check_key(r.check.type, r.check.column_name, r.check.qualifier): r for r in check_results}
    out = []
    for spec in contract.checks:
        result = by_key.get(spec.key)
        if result is None:
            out.append(CheckOutcome(spec, "error", error=reason or "Soda returned no result for this check."))
            continue
        outcome = _SODA_OUTCOMES.get(result.outcome.name, "error")
        diagnostics = _plain(dict(getattr(result, "diagnostic_metric_values", None) or {}))
        diagnostics.update(_schema_details(result))
        item = CheckOutcome(spec, outcome, measured=_number(result.threshold_value),
                            threshold=threshold_text(getattr(result.check, "threshold", None)),
                            diagnostics=diagnostics)
        if outcome == "not_evaluated" and errors:
            item.outcome, item.error = "error", reason
        elif outcome == "not_evaluated":
            item.error = "Soda did not evaluate this check (no value to compare: does the table have rows?)."
        out.append(item)
    return out


def outcomes_all_error(contract: GeneratedContract, reason: str) -> list[CheckOutcome]:
    """Every check of ``contract`` as an error with ``reason`` (the warehouse is down, the table missing)."""
    return [CheckOutcome(spec, "error", error=reason) for spec in contract.checks]


def contract_verify(conn: Any, contract: GeneratedContract, *, warehouse: str | None) -> list[CheckOutcome]:
    """Run ``contract`` with Soda Core over ``conn`` (an open ``snowflake.connector`` connection)."""
    os.environ.setdefault("SODA_CORE_TELEMETRY_ENABLED", "false")  # no calls home from a worker
    from soda_core.common.data_source_connection import DataSourceConnection
    from soda_core.common.yaml import ContractYamlSource
    from soda_core.contracts.contract_verification import ContractVerificationSession
    from soda_snowflake.common.data_sources.snowflake_data_source import SnowflakeDataSourceImpl
    from soda_snowflake.common.data_sources.snowflake_data_source_connection import (
        SnowflakeDataSource,
        SnowflakeDataSourceConnection,
    )

    class PlatformConnection(SnowflakeDataSourceConnection):
        """Soda over a connection it did not open (and will not close)."""

        def __init__(self, name: str, connection_properties: Any, connection: Any):
            DataSourceConnection.__init__(self, name, connection_properties, connection=connection)

    model = SnowflakeDataSource.model_validate(soda_data_source(warehouse=warehouse))
    data_source = SnowflakeDataSourceImpl(
        data_source_model=model, connection=PlatformConnection(model.name, model.connection_properties, conn))
    session = ContractVerificationSession.execute(
        contract_yaml_sources=[ContractYamlSource.from_str(contract.yaml)], data_source_impls=[data_source])
    errors = [str(e) for e in session.get_errors()]
    results = session.contract_verification_results
    check_results = list(results[0].check_results) if results else []
    return outcomes_from_results(contract, check_results, errors)


def contract_parse_errors(contract_yaml: str) -> list[str]:
    """What Soda Core's own contract parser says is wrong with ``contract_yaml`` (no data source, no
    query): unknown check types, a check missing what it needs, bad thresholds. [] when it parses."""
    os.environ.setdefault("SODA_CORE_TELEMETRY_ENABLED", "false")
    from soda_core.common.logs import Logs
    from soda_core.common.yaml import ContractYamlSource
    from soda_core.contracts.impl import contract_verification_impl  # noqa: F401 - registers the check types
    from soda_core.contracts.impl.contract_yaml import ContractYaml

    logs = Logs()
    try:
        ContractYaml.parse(yaml_source=ContractYamlSource.from_str(contract_yaml), provided_variable_values={})
    except Exception as err:  # noqa: BLE001 - Soda raises its parser errors as plain exceptions
        return [f"{type(err).__name__}: {err}"]
    finally:
        logs.close()
    return [str(e) for e in logs.get_errors()]
