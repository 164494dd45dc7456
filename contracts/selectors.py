"""Reads: lists, lookups, and the side-effect-free contract check used by CI, the form and submit."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import orjson
from django.conf import settings
from django.db.models import Q, QuerySet

from contracts import compatibility, mapping
from contracts.errors import ContractError, NotFound
from contracts.models import Contract, ContractVersion, SchemaText, Source, VersionStatus
from portal.roles import is_admin, user_team_ids

# A fixed clock for previews keeps the preview deterministic (the pure core takes time as input).
PREVIEW_RECEIVED_AT_MICROS = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


@dataclasses.dataclass
class ContractCheck:
    """Everything a reviewer or a CI job wants to know about a proposed schema and mapping."""

    mode: str
    schema: dict | None = None
    schema_errors: list[dict] = dataclasses.field(default_factory=list)
    report: dict | None = None
    mapping_errors: list[dict] = dataclasses.field(default_factory=list)
    previews: list[dict] = dataclasses.field(default_factory=list)

    @property
    def compatible(self) -> bool:
        return not self.schema_errors and bool(self.report and self.report["compatible"])

    @property
    def changes(self) -> list[dict]:
        return list(self.report["changes"]) if self.report else []

    @property
    def grouped_changes(self) -> dict:
        """``{"latest_version", "new", "older"}``: what this proposal changes against the newest version
        compared, apart from what only older versions differ in (already approved before)."""
        grouped = (self.report or {}).get("grouped_changes")
        return grouped if grouped else {"latest_version": None, "new": self.changes, "older": []}

    def as_api_dict(self) -> dict:
        return {
            "compatible": self.compatible,
            "mode": self.mode,
            "changes": self.changes,
            "grouped_changes": self.grouped_changes,
            "schema_errors": self.schema_errors,
            "mapping_errors": self.mapping_errors,
            "previews": self.previews,
        }


def _json_size(raw: Any) -> int:
    if isinstance(raw, str):
        return len(raw.encode())
    try:
        return len(orjson.dumps(raw))
    except TypeError:  # integers beyond 64 bits, or nesting deeper than orjson's limit
        try:
            return len(json.dumps(raw).encode())
        except RecursionError as err:
            raise ContractError("too_deep", "The document is nested too deeply.") from err


def schema_size_check(raw: Any, *, what: str = "schema") -> None:
    size = _json_size(raw)
    limit = settings.CONTRACT_SCHEMA_MAX_BYTES
    if size > limit:
        raise ContractError(
            f"{what}_too_large",
            f"The {what} is {size:,} bytes; the limit is {limit:,} bytes.",
            status_code=413,
        )


def schema_parse(raw: Any) -> dict:
    """Parse and validate a source schema (JSON text or object). Raises ContractError naming the problem."""
    schema_size_check(raw)
    try:
        return compatibility.parse_record_schema(raw)
    except compatibility.SchemaError as err:
        where = f" at {err.path}" if getattr(err, "path", "") else ""
        raise ContractError("invalid_schema", f"Invalid Avro schema{where}: {err.message}") from err


def approved_versions(contract: Contract, *, exclude_pk: int | None = None) -> list[ContractVersion]:
    qs = contract.versions.filter(status=VersionStatus.APPROVED).select_related("schema").order_by("version")
    if exclude_pk is not None:
        qs = qs.exclude(pk=exclude_pk)
    return list(qs)


def submission_scope(contract: Contract, *, exclude_pk: int | None = None) -> list[ContractVersion]:
    """What a new proposal must be compatible with: approved versions and those still in review
    (either may become what producers send), oldest first."""
    qs = contract.versions.filter(status__in=[VersionStatus.APPROVED, VersionStatus.IN_REVIEW]).select_related(
        "schema").order_by("version")
    if exclude_pk is not None:
        qs = qs.exclude(pk=exclude_pk)
    return list(qs)


def version_schema(version: ContractVersion) -> dict:
    return orjson.loads(version.schema.schema)


def source_context(contract: Contract, version_number: int) -> mapping.SourceContext:
    source = contract.source
    return mapping.SourceContext(
        source_id=str(source.pk) if source else "canonical",
        source_name=source.name if source else "canonical",
        platform=source.platform if source else "api",
        product=(source.product or None) if source else None,
        contract_name=contract.subject,
        contract_version=version_number,
        received_at_micros=PREVIEW_RECEIVED_AT_MICROS,
    )


def contract_check(
    *,
    contract: Contract,
    schema: Any,
    mapping_spec: Any = None,
    samples: Sequence[Any] = (),
    against: Sequence[ContractVersion] | None = None,
    mode: str | None = None,
    version_number: int | None = None,
) -> ContractCheck:
    """Check a proposed schema (and mapping) against a contract without saving anything.

    `against` defaults to the contract's approved and in-review versions (the scope of its
    compatibility mode at submission; approval passes the approved ones); `mode` defaults to the
    contract's own level.
    """
    mode = mode or contract.compatibility
    result = ContractCheck(mode=mode)
    try:
        result.schema = schema_parse(schema)
    except ContractError as err:
        result.schema_errors.append({"path": "/", "message": err.message, "code": err.code})
        return result
    previous = list(against) if against is not None else submission_scope(contract)
    # The stored text, not a decoded copy: the compatibility core remembers each compiled text, so the
    # approved versions are parsed once per process rather than on every keystroke of the editor.
    report = compatibility.check_compatibility(
        result.schema, [(v.version, v.schema.schema) for v in previous], compatibility.CompatibilityMode(mode)
    )
    result.report = {**report.to_dict(), "grouped_changes": report.grouped_dict()}
    if contract.is_canonical:
        return result
    if mapping_spec is None or mapping_spec == {}:
        result.mapping_errors.append(
            {"path": "/", "message": "No mapping yet: add one so ingestion knows which canonical events "
                                      "this contract produces."}
        )
        return result
    ctx = source_context(contract, version_number or next_version_number(contract))
    # One compile of the validator and the mapping for the check and every sample.
    mapping_errors, outcomes = mapping.preview_many(result.schema, mapping_spec, list(samples), ctx)
    result.mapping_errors = [dataclasses.asdict(e) for e in mapping_errors]
    if not result.mapping_errors:
        result.previews = [{"sample": index, "events": outcome.events, "errors": outcome.errors}
                           for index, outcome in enumerate(outcomes)]
    return result


def next_version_number(contract: Contract) -> int:
    last = contract.versions.order_by("-version").values_list("version", flat=True).first()
    return (last or 0) + 1


def contract_by_subject(subject: str) -> Contract:
    contract = Contract.objects.select_related("source", "source__team").filter(subject=subject).first()
    if contract is None:
        raise NotFound("subject_not_found", f"Subject '{subject}' not found.")
    return contract


def source_by_name_or_id(key: str | int) -> Source:
    lookup = Q(name=str(key))
    if str(key).isascii() and str(key).isdigit() and len(str(key)) < 19:
        lookup |= Q(pk=int(key))
    source = Source.objects.select_related("team").filter(lookup).first()
    if source is None:
        raise NotFound("source_not_found", f"Source '{key}' not found.")
    return source


def source_list(*, user: Any = None, team: str | None = None, platform: str | None = None) -> QuerySet[Source]:
    qs = Source.objects.select_related("team").order_by("name")
    if team:
        qs = qs.filter(team__name=team)
    if platform:
        qs = qs.filter(platform=platform)
    return qs


def contract_list(
    *, team: str | None = None, platform: str | None = None, status: str | None = None,
    source: str | None = None, query: str | None = None,
) -> QuerySet[Contract]:
    qs = Contract.objects.select_related("source", "source__team").order_by("-is_canonical", "subject")
    if team:
        qs = qs.filter(source__team__name=team)
    if platform:
        qs = qs.filter(source__platform=platform)
    if status:
        qs = qs.filter(versions__status=status).distinct()
    if source:
        qs = qs.filter(source__name=source)
    if query:
        qs = qs.filter(subject__icontains=query)
    return qs


def contract_versions(contract: Contract) -> QuerySet[ContractVersion]:
    return contract.versions.select_related("schema", "author", "reviewer").order_by("-version")


def contract_version_get(contract: Contract, number: int) -> ContractVersion:
    version = contract_versions(contract).filter(version=number).first()
    if version is None:
        raise NotFound("version_not_found", f"Version {number} of '{contract.subject}' not found.")
    return version


def latest_version(contract: Contract, *, statuses: Sequence[str] | None = None) -> ContractVersion | None:
    qs = contract_versions(contract)
    if statuses is not None:
        qs = qs.filter(status__in=statuses)
    return qs.first()


def latest_approved_version(contract: Contract) -> ContractVersion | None:
    return latest_version(contract, statuses=[VersionStatus.APPROVED])


def previous_version(version: ContractVersion) -> ContractVersion | None:
    """The version a reviewer compares against: the newest approved one before it, else the one before."""
    earlier = version.contract.versions.select_related("schema").filter(version__lt=version.version)
    return (
        earlier.filter(status=VersionStatus.APPROVED).order_by("-version").first()
        or earlier.order_by("-version").first()
    )


def review_queue() -> QuerySet[ContractVersion]:
    return (
        ContractVersion.objects.filter(status=VersionStatus.IN_REVIEW)
        .select_related("contract", "contract__source", "contract__source__team", "author", "schema")
        .order_by("submitted_at", "id")
    )


def user_can_edit_contract(user: Any, contract: Contract) -> bool:
    if is_admin(user):
        return True
    if contract.is_canonical or contract.source is None:
        return False
    return contract.source.team_id in user_team_ids(user)


def schema_by_id(schema_id: int) -> SchemaText:
    found = SchemaText.objects.filter(pk=schema_id).first()
    if found is None:
        raise NotFound("schema_not_found", f"Schema {schema_id} not found.")
    return found


def ingest_routing_fingerprint() -> str:
    """Changes whenever a source is enabled/disabled or a version is approved/deprecated (cheap to ask)."""
    import hashlib

    sources = list(Source.objects.order_by("pk").values_list("pk", "name", "is_active", "platform", "product"))
    versions = list(
        ContractVersion.objects.filter(status=VersionStatus.APPROVED, contract__source__isnull=False)
        .order_by("pk").values_list("pk", flat=True)
    )
    return hashlib.sha256(repr((sources, versions)).encode()).hexdigest()


def ingest_routing_sources() -> list[dict]:
    """Every source with its contracts' APPROVED versions, as plain data for the ingest pipeline."""
    versions = (
        ContractVersion.objects.filter(status=VersionStatus.APPROVED, contract__source__isnull=False)
        .select_related("contract", "schema").order_by("contract__subject", "-version")
    )
    by_source: dict[int, dict[str, dict]] = {}
    for version in versions:
        contract = version.contract
        entry = by_source.setdefault(contract.source_id, {}).setdefault(
            contract.subject, {"subject": contract.subject, "event": contract.subject.partition(".")[2],
                               "versions": []})
        entry["versions"].append({"version": version.version, "schema": orjson.loads(version.schema.schema),
                                  "mapping": version.mapping})
    return [
        {"source_id": str(source.pk), "name": source.name, "platform": source.platform,
         "product": source.product or None, "active": source.is_active,
         "contracts": list(by_source.get(source.pk, {}).values())}
        for source in Source.objects.order_by("name")
    ]


def contract_versions_in_force() -> list[dict]:
    """Every approved or deprecated version of a source's contract (events may carry either), as plain
    data: ``{"subject", "version", "status", "source_id", "source"}``, by subject then version. The
    quality checks (quality/) are generated from it."""
    rows = (
        ContractVersion.objects.filter(status__in=(VersionStatus.APPROVED, VersionStatus.DEPRECATED),
                                       contract__source__isnull=False)
        .order_by("contract__subject", "version")
        .values_list("contract__subject", "version", "status", "contract__source_id", "contract__source__name")
    )
    return [{"subject": subject, "version": version, "status": status, "source_id": str(source_id), "source": name}
            for subject, version, status, source_id, name in rows]


def team_checks_in_force() -> list[dict]:
    """The team checks of every approved version of a source's contract, as plain data:
    ``{"subject", "version", "source_id", "team_checks" (YAML text), "mapping"}``. The quality checks
    (quality/) add them to the generated contract of CANONICAL.EVENTS."""
    rows = (
        ContractVersion.objects.filter(status=VersionStatus.APPROVED, contract__source__isnull=False)
        .exclude(team_checks="").order_by("contract__subject", "version")
        .values_list("contract__subject", "version", "contract__source_id", "team_checks", "mapping")
    )
    return [{"subject": subject, "version": version, "source_id": str(source_id), "team_checks": text,
             "mapping": mapping}
            for subject, version, source_id, text, mapping in rows]
def sample_payloads_matching(matches: Any) -> int:
    """How many sample payloads saved with contract versions ``matches(payload)`` says hold a person's data
    (the deletion job's verification: deletion.platform_stores)."""
    found = 0
    for samples in ContractVersion.objects.exclude(sample_payloads=[]).values_list("sample_payloads", flat=True):
        found += sum(1 for payload in samples or [] if matches(payload))
    return found
