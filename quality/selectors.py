"""Reads for the quality pages and commands: the generated contracts (from the registry as it is now)
and the stored runs, with failed-row samples cut down to what the viewer may see."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
from django.conf import settings

from quality.models import CheckResult, QualityRun
from quality.soda_contracts import (
    QUALITY_TABLES,
    ContractRef,
    GeneratedContract,
    GenerationSettings,
    TeamCheckSet,
    quality_table,
    soda_contract,
    table_label,
)
from quality.soda_run import OUTCOMES

__all__ = [
    "generation_settings",
    "contract_generated",
    "table_labels",
    "table_overview",
    "table_detail",
    "SampleScope",
    "sample_scope",
]


def generation_settings(*, database: str | None = None) -> GenerationSettings:
    """What the contracts are generated from: settings and the registry's versions in force."""
    from contracts.selectors import contract_versions_in_force

    refs = tuple(sorted(ContractRef(subject=v["subject"], version=v["version"], status=v["status"],
                                    source_id=v["source_id"], source=v["source"])
                        for v in contract_versions_in_force()))
    return GenerationSettings(
        database=database or settings.SNOWFLAKE["database"], contract_versions=refs, team_checks=team_check_sets(),
        canonical_freshness_minutes=settings.QUALITY_CANONICAL_FRESHNESS_MINUTES,
        curated_freshness_hours=settings.QUALITY_CURATED_FRESHNESS_HOURS,
    )


def team_check_sets() -> tuple[TeamCheckSet, ...]:
    """Every approved version's team checks, validated again (the canonical model may have changed since
    approval: checks that no longer validate are left out, and the contract's header says why)."""
    from contracts.selectors import team_checks_in_force
    from contracts.team_checks import TeamChecksError, version_team_checks

    sets = []
    for row in team_checks_in_force():
        try:
            checks = tuple(version_team_checks(row["team_checks"], row["mapping"]))
            problem = ""
        except TeamChecksError as err:
            checks, problem = (), str(err)
        sets.append(TeamCheckSet(subject=row["subject"], version=row["version"], source_id=row["source_id"],
                                 checks=checks, problem=problem))
    return tuple(sets)


def contract_generated(table: str, *, database: str | None = None) -> GeneratedContract:
    """The Soda contract of ``table`` (``CANONICAL.EVENTS``, ``ANALYTICS.USER_FEEDBACK`` …) as the
    registry stands now. ValueError for a table no checks cover."""
    return soda_contract(quality_table(table), generation_settings(database=database))


def table_labels() -> list[str]:
    return [table_label(t) for t in QUALITY_TABLES]


def _worst(results: list[CheckResult]) -> CheckResult | None:
    rank = {o: i for i, o in enumerate(OUTCOMES)}
    return min(results, key=lambda r: (rank.get(r.outcome, 0), r.id)) if results else None


def table_overview() -> list[dict]:
    """Per covered table: its latest finished run (counts, worst check, when) and any run waiting."""
    rows = []
    for label in table_labels():
        runs = QualityRun.objects.filter(table=label)
        latest = runs.filter(status__in=(QualityRun.Status.DONE, QualityRun.Status.ERROR)).order_by(
            "-finished_at", "-id").first()
        pending = runs.filter(status__in=(QualityRun.Status.QUEUED, QualityRun.Status.RUNNING)).order_by(
            "-queued_at").select_related("requested_by").first()
        worst = None
        if latest is not None:
            worst = _worst(list(latest.results.exclude(outcome=CheckResult.Outcome.PASSED)))
        rows.append({"table": label, "latest": latest, "pending": pending, "worst": worst})
    return rows


@dataclasses.dataclass(frozen=True)
class SampleScope:
    """Whose failed rows a viewer may see: every row, or the rows of some sources."""

    everything: bool
    source_ids: frozenset[str] = frozenset()
    source_names: frozenset[str] = frozenset()

    def allows(self, source_id: Any) -> bool:
        return self.everything or (source_id is not None and str(source_id) in self.source_ids | self.source_names)


def sample_scope(user: Any) -> SampleScope:
    """Data engineers and admins see every sample; a team member the rows of their own sources; others none."""
    from ingest_workers.page_selectors import quarantine_scope

    scope = quarantine_scope(user)  # the quarantine's rule: same people, same sources
    if scope is None:
        return SampleScope(False)
    return SampleScope(scope.everything, frozenset(scope.source_ids), frozenset(scope.source_names))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return str(value)


def table_detail(label: str, *, user: Any) -> dict:
    """A table's latest finished run with each check (worst first), samples cut to the viewer's scope."""
    table = quality_table(label)
    label = table_label(table)
    scope = sample_scope(user)
    runs = QualityRun.objects.filter(table=label)
    latest = runs.filter(status__in=(QualityRun.Status.DONE, QualityRun.Status.ERROR)).order_by(
        "-finished_at", "-id").first()
    pending = runs.filter(status__in=(QualityRun.Status.QUEUED, QualityRun.Status.RUNNING)).order_by(
        "-queued_at").first()
    rank = {o: i for i, o in enumerate(OUTCOMES)}
    checks = []
    if latest is not None:
        for result in sorted(latest.results.all(), key=lambda r: (rank.get(r.outcome, 0), r.id)):
            visible = [item for item in result.sample or [] if scope.allows(item.get("source_id"))]
            columns = list(visible[0]["row"].keys()) if visible else []
            checks.append({"result": result, "columns": columns,
                           "rows": [[_cell(item["row"].get(c)) for c in columns] for item in visible],
                           "sample_hidden": len(result.sample or []) - len(visible)})
    return {"table": label, "latest": latest, "pending": pending, "checks": checks, "scope": scope,
            "history": list(runs.filter(status__in=(QualityRun.Status.DONE, QualityRun.Status.ERROR))
                            .order_by("-finished_at")[:10])}
