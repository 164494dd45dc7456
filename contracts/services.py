"""Writes for sources, contracts and versions. Each runs in one transaction with its audit record."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Sequence
from typing import Any

import orjson
from django.db import IntegrityError, transaction
from django.utils import timezone

from contracts import canonical_model, compatibility, selectors
from contracts.errors import Conflict, ContractError, Forbidden, NotFound
from contracts.models import (
    CompatibilityLevel,
    Contract,
    ContractVersion,
    Platform,
    SchemaText,
    Source,
    SourceKind,
    VersionStatus,
)
from portal.models import Team
from portal.roles import can_edit_team_objects, is_admin, is_data_engineer
from portal.services import audit_record_write

# At least one letter, so a name can never be mistaken for a source's numeric id.
SOURCE_NAME_RE = re.compile(r"^(?=.*[a-z])[a-z0-9][a-z0-9-]{1,62}$")
EVENT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,62}$")
WRITE_KEY_PREFIX = "wk"
# Words the portal's URLs use after /sources/ (e.g. /sources/new/), and words that read as "no value"
# (`?source=null` must not find a source; the canonical contract's source *is* null). docs/decisions.md.
RESERVED_SOURCE_NAMES = frozenset({"new", "canonical", "null", "none", "undefined"})
# The same rule as one pattern, for the OpenAPI document and the API's input check.
SOURCE_NAME_PATTERN = (r"^(?!(?:" + "|".join(sorted(RESERVED_SOURCE_NAMES)) + r")$)"
                       + SOURCE_NAME_RE.pattern.removeprefix("^"))
SOURCE_NAME_MESSAGE = ("Source names are 2–63 lowercase letters, digits and dashes with at least one letter, e.g. "
                       f"'web-chat' ({', '.join(repr(n) for n in sorted(RESERVED_SOURCE_NAMES))} are reserved).")
EVENT_NAME_PATTERN = EVENT_NAME_RE.pattern
# Webhook signing secrets: what providers issue (Slack: 32 hex digits) is printable ASCII; a shared HMAC
# secret shorter than 12 characters is too easy to guess. Spaces inside are allowed, not at either end:
# a pasted secret with a stray space would fail every signature, so it is refused rather than trimmed.
SIGNING_SECRET_MIN = 12
SIGNING_SECRET_MAX = 255
SIGNING_SECRET_PATTERN = r"^[!-~](?:[ -~]*[!-~])?$"
CANONICAL_SUBJECT = "canonical"
MAX_SAMPLES = 20


# --- sources --------------------------------------------------------------------------------------

def _source_state(source: Source) -> dict:
    return {
        "name": source.name, "team": source.team.name, "platform": source.platform, "kind": source.kind,
        "product": source.product, "description": source.description, "is_active": source.is_active,
        "write_key_prefix": source.write_key_prefix, "has_signing_secret": bool(source.signing_secret),
    }


def _require_team_member(actor: Any, team_id: int, what: str) -> None:
    if not can_edit_team_objects(actor, team_id):
        raise Forbidden("forbidden", f"Only members of the owning team may {what}.")


def _new_write_key() -> tuple[str, str, str]:
    prefix = secrets.token_hex(4)
    key = f"{WRITE_KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    return key, prefix, hashlib.sha256(key.encode()).hexdigest()


def source_create(
    *, actor: Any, team: Team, name: str, platform: str, kind: str, product: str = "", description: str = "",
) -> tuple[Source, str]:
    """Register a source; returns it and its write key (shown once, stored only as a hash). A webhook
    source gets no write key (""): its events are always signed by the provider."""
    _require_team_member(actor, team.pk, "create sources for this team")
    if not SOURCE_NAME_RE.match(name or "") or name in RESERVED_SOURCE_NAMES:
        raise ContractError("invalid_name", SOURCE_NAME_MESSAGE)
    if platform not in Platform.values:
        raise ContractError("invalid_platform", f"Platform must be one of {', '.join(Platform.values)}.")
    if kind not in SourceKind.values:
        raise ContractError("invalid_kind", f"Kind must be one of {', '.join(SourceKind.values)}.")
    key, prefix, digest = ("", "", "") if kind == SourceKind.WEBHOOK else _new_write_key()
    try:
        with transaction.atomic():
            source = Source.objects.create(
                team=team, name=name, platform=platform, kind=kind, product=product, description=description,
                write_key_prefix=prefix, write_key_hash=digest, write_key_rotated_at=timezone.now() if key else None,
                created_by=actor if getattr(actor, "is_authenticated", False) else None,
            )
            audit_record_write(actor=actor, action="source.create", obj=source, after=_source_state(source))
    except IntegrityError as err:
        raise Conflict("source_exists", f"A source named '{name}' already exists.") from err
    return source, key


def source_update(
    *, actor: Any, source: Source, description: str | None = None, product: str | None = None,
    is_active: bool | None = None,
) -> Source:
    _require_team_member(actor, source.team_id, "change this source")
    with transaction.atomic():
        source = Source.objects.select_for_update(of=("self",)).select_related("team").get(pk=source.pk)
        before = _source_state(source)
        if description is not None:
            source.description = description
        if product is not None:
            source.product = product
        if is_active is not None:
            source.is_active = is_active
        source.save()
        action = "source.update"
        if is_active is not None and before["is_active"] != is_active:
            action = "source.enable" if is_active else "source.disable"
        audit_record_write(actor=actor, action=action, obj=source, before=before, after=_source_state(source))
    return source


def source_write_key_rotate(*, actor: Any, source: Source) -> str:
    """Issue a new write key; the old one stops working at once."""
    _require_team_member(actor, source.team_id, "rotate this source's write key")
    if source.kind == SourceKind.WEBHOOK:
        raise ContractError("no_write_key_for_webhooks",
                            f"{source.name} is a webhook source: its events are signed by the provider with its "
                            "signing secret, so it has no write key to rotate.")
    key, prefix, digest = _new_write_key()
    with transaction.atomic():
        source = Source.objects.select_for_update(of=("self",)).select_related("team").get(pk=source.pk)
        before = _source_state(source)
        source.previous_write_key_prefix = source.write_key_prefix
        source.write_key_prefix, source.write_key_hash = prefix, digest
        source.write_key_rotated_at = timezone.now()
        source.save()
        audit_record_write(
            actor=actor, action="source.rotate_write_key", obj=source, before=before, after=_source_state(source)
        )
    return key


def source_signing_secret_set(*, actor: Any, source: Source, secret: str) -> Source:
    _require_team_member(actor, source.team_id, "set this source's signing secret")
    problem = signing_secret_problem(secret)
    if problem:
        raise ContractError("invalid_secret", problem)
    with transaction.atomic():
        source = Source.objects.select_for_update(of=("self",)).select_related("team").get(pk=source.pk)
        before = _source_state(source)
        source.signing_secret = secret
        source.save()
        audit_record_write(
            actor=actor, action="source.set_signing_secret", obj=source, before=before, after=_source_state(source)
        )
    return source


def signing_secret_problem(secret: Any) -> str | None:
    """What is wrong with a webhook signing secret, in a sentence; None when it is fine."""
    if not isinstance(secret, str) or not secret:
        return "Enter the signing secret."
    if secret != secret.strip():
        return ("The signing secret starts or ends with a space or line break; remove it (providers' secrets "
                "have none, and a stray one would make every signature fail).")
    if not (SIGNING_SECRET_MIN <= len(secret) <= SIGNING_SECRET_MAX):
        return (f"The signing secret must be {SIGNING_SECRET_MIN}–{SIGNING_SECRET_MAX} characters, not "
                f"{len(secret)} (Slack's are 32).")
    if not re.fullmatch(SIGNING_SECRET_PATTERN, secret):
        return ("The signing secret may only hold printable ASCII characters (letters, digits, punctuation, "
                "spaces inside): no control characters or non-ASCII letters. Copy it again from the provider.")
    return None


def source_write_key_matches(source: Source, key: str) -> bool:
    if not source.write_key_hash:
        return False
    return secrets.compare_digest(source.write_key_hash, hashlib.sha256(key.encode()).hexdigest())


# --- contracts ------------------------------------------------------------------------------------

def _contract_state(contract: Contract) -> dict:
    return {
        "subject": contract.subject, "compatibility": contract.compatibility,
        "source": contract.source.name if contract.source else None, "description": contract.description,
    }


def compatibility_level_parse(level: Any) -> str:
    if not isinstance(level, str) or level.upper() not in CompatibilityLevel.values:
        raise ContractError(
            "invalid_compatibility_level",
            f"Unknown compatibility level {level!r}; use one of {', '.join(CompatibilityLevel.values)}.",
        )
    return level.upper()


def subject_split(subject: str) -> tuple[str, str]:
    source_name, dot, event = subject.partition(".")
    if not dot or not SOURCE_NAME_RE.match(source_name) or not EVENT_NAME_RE.match(event):
        raise ContractError(
            "invalid_subject",
            f"Subject '{subject}' must be named '<source>.<event>', e.g. 'web-chat.chat_event' "
            "(event: lowercase letters, digits and underscores).",
        )
    return source_name, event


def contract_create(
    *, actor: Any, source: Source, event: str, compatibility: str = CompatibilityLevel.BACKWARD_TRANSITIVE,
    description: str = "",
) -> Contract:
    _require_team_member(actor, source.team_id, "create contracts for this source")
    subject = f"{source.name}.{event}"
    subject_split(subject)
    level = compatibility_level_parse(compatibility)
    try:
        with transaction.atomic():
            contract = Contract.objects.create(
                source=source, subject=subject, compatibility=level, description=description,
                created_by=actor if getattr(actor, "is_authenticated", False) else None,
            )
            audit_record_write(actor=actor, action="contract.create", obj=contract, after=_contract_state(contract))
    except IntegrityError as err:
        raise Conflict("contract_exists", f"Subject '{subject}' already exists.") from err
    return contract


def contract_for_subject_or_create(*, actor: Any, subject: str) -> Contract:
    """The registry's implicit create: registering to a new subject of your team's source creates it."""
    try:
        return selectors.contract_by_subject(subject)
    except NotFound:
        pass
    source_name, event = subject_split(subject)
    source = Source.objects.select_related("team").filter(name=source_name).first()
    if source is None:
        raise NotFound(
            "subject_not_found",
            f"Subject '{subject}' not found, and there is no source '{source_name}' to create it under.",
        )
    try:
        return contract_create(actor=actor, source=source, event=event)
    except Conflict:  # created by a concurrent registration a moment ago
        return selectors.contract_by_subject(subject)


def compatibility_level_is_at_least_as_strict(new: str, old: str) -> bool:
    """True when `new` checks everything `old` checks (same directions or more, transitive if old was)."""
    if old == CompatibilityLevel.NONE:
        return True
    if new == CompatibilityLevel.NONE:
        return False
    new_mode, old_mode = compatibility.CompatibilityMode(new), compatibility.CompatibilityMode(old)
    return set(old_mode.directions) <= set(new_mode.directions) and (new_mode.transitive or not old_mode.transitive)


def contract_compatibility_set(*, actor: Any, contract: Contract, level: Any) -> Contract:
    parsed = compatibility_level_parse(level)
    if contract.is_canonical:
        if not is_admin(actor):
            raise Forbidden("forbidden", "Only admins may change the canonical model's compatibility level.")
    elif not (is_data_engineer(actor) or selectors.user_can_edit_contract(actor, contract)):
        raise Forbidden("forbidden", "Only the owning team or a data engineer may change the compatibility level.")
    elif not is_data_engineer(actor) and not compatibility_level_is_at_least_as_strict(parsed, contract.compatibility):
        # Loosening the rules would let a breaking change through review unnoticed.
        raise Forbidden("forbidden", f"Loosening '{contract.subject}' from {contract.compatibility} to {parsed} "
                                     "needs a data engineer; a team may only make its level stricter.")
    with transaction.atomic():
        before = _contract_state(contract)
        contract.compatibility = parsed
        contract.save(update_fields=["compatibility"])
        audit_record_write(
            actor=actor, action="contract.set_compatibility", obj=contract, before=before,
            after=_contract_state(contract),
        )
    return contract


# --- versions -------------------------------------------------------------------------------------

def _version_state(version: ContractVersion) -> dict:
    return {
        "subject": version.contract.subject, "version": version.version, "status": version.status,
        "schema_id": version.schema_id, "review_comment": version.review_comment,
        "reviewer": version.reviewer.get_username() if version.reviewer else None,
    }


def _canonical_json(obj: Any) -> str:
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:  # integers beyond 64 bits (valid JSON, e.g. in a custom schema property)
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def schema_fingerprint(schema: dict) -> str:
    return hashlib.sha256(_canonical_json(schema).encode()).hexdigest()


def schema_normalized_fingerprint(schema: dict) -> str:
    """Equal for the same schema written differently: what registry lookup and registration compare."""
    return hashlib.sha256(_canonical_json(compatibility.normalized_schema(schema)).encode()).hexdigest()


def schema_text_ensure(schema: dict) -> SchemaText:
    """The stored schema with this text, else one written differently but the same: one id per schema."""
    text = _canonical_json(schema)
    fingerprint = schema_fingerprint(schema)
    normalized = schema_normalized_fingerprint(schema)
    found = (
        SchemaText.objects.filter(fingerprint=fingerprint).first()
        or SchemaText.objects.filter(normalized_fingerprint=normalized).order_by("pk").first()
    )
    if found:
        return found
    try:
        with transaction.atomic():
            return SchemaText.objects.create(fingerprint=fingerprint, normalized_fingerprint=normalized, schema=text)
    except IntegrityError:  # created by a concurrent request
        return SchemaText.objects.get(fingerprint=fingerprint)


def _content_fingerprint(schema: dict, mapping_spec: Any, team_checks: str = "") -> str:
    content: dict[str, Any] = {"schema": schema, "mapping": mapping_spec or {}}
    if team_checks:  # only when there are some: versions stored before team checks keep their fingerprint
        content["team_checks"] = team_checks
    return hashlib.sha256(_canonical_json(content).encode()).hexdigest()


def team_checks_validate(text: Any, mapping_spec: Any) -> str:
    """The team's checks as stored (stripped YAML text, "" for none), after the platform's rules and Soda's
    own parser have accepted them; ContractError("invalid_team_checks") naming the first problem."""
    from contracts.team_checks import TeamChecksError, version_team_checks

    if text is None:
        return ""
    if not isinstance(text, str):
        raise ContractError("invalid_team_checks", "The team checks must be YAML text (a 'checks:' list).")
    text = text.strip()
    try:
        checks = version_team_checks(text, mapping_spec)
    except TeamChecksError as err:
        raise ContractError("invalid_team_checks", f"Team check {err}" if err.path else str(err),
                            details={"path": err.path, "message": err.message}) from err
    if checks:
        from quality.soda_contracts import team_checks_preview
        from quality.soda_run import contract_parse_errors

        problems = contract_parse_errors(team_checks_preview(checks).yaml)
        if problems:
            raise ContractError("invalid_team_checks", "Soda refused the team checks: " + "; ".join(problems),
                                details={"path": "checks", "message": "; ".join(problems)})
    return text if checks else ""


def _samples_parse(samples: Any) -> list:
    if samples is None:
        return []
    if not isinstance(samples, list):
        raise ContractError("invalid_samples", "Sample payloads must be a JSON array of example payloads.")
    if len(samples) > MAX_SAMPLES:
        raise ContractError("invalid_samples", f"At most {MAX_SAMPLES} sample payloads per version.")
    selectors.schema_size_check(samples, what="samples")
    return samples


def _mapping_parse(mapping_spec: Any) -> dict:
    if mapping_spec is None:
        return {}
    if not isinstance(mapping_spec, dict):
        raise ContractError("invalid_mapping", "The mapping must be a JSON object (see docs/mapping.md).")
    selectors.schema_size_check(mapping_spec, what="mapping")
    return mapping_spec


def contract_version_submit(
    *, actor: Any, contract: Contract, schema: Any, mapping_spec: Any = None, samples: Any = None,
    submit_for_review: bool = True, change_summary: str = "", inherit_mapping: bool = False,
    team_checks: Any = None,
) -> tuple[ContractVersion, bool]:
    """Create a version (a draft, or straight into review). Returns (version, created).

    An identical schema and mapping already on the contract returns that version (a draft is moved
    into review if asked). Submitting for review refuses a schema that breaks the contract's
    compatibility mode; a draft may hold anything valid, so authors can save work in progress.
    """
    if not selectors.user_can_edit_contract(actor, contract):
        raise Forbidden("forbidden", f"Only members of the team that owns '{contract.subject}' may add versions.")
    parsed = selectors.schema_parse(schema)
    mapping_spec = _mapping_parse(mapping_spec)
    if inherit_mapping and not mapping_spec:
        # Registry clients send only a schema: carry the current mapping forward for the reviewer.
        current = selectors.latest_approved_version(contract) or selectors.latest_version(contract)
        mapping_spec = dict(current.mapping) if current else {}
    sample_list = _samples_parse(samples)
    if not sample_list and inherit_mapping:
        current = selectors.latest_version(contract)
        sample_list = list(current.sample_payloads) if current else []
    if team_checks is None and inherit_mapping:
        current = selectors.latest_approved_version(contract) or selectors.latest_version(contract)
        team_checks = current.team_checks if current else ""
    checks_text = team_checks_validate(team_checks, mapping_spec)
    fingerprint = _content_fingerprint(parsed, mapping_spec, checks_text)

    with transaction.atomic():
        # Lock the contract row so concurrent submissions get distinct version numbers.
        contract = Contract.objects.select_for_update(of=("self",)).select_related("source").get(pk=contract.pk)
        # A rejected version is history, not a registration: the same content may be proposed again.
        live = contract.versions.exclude(status=VersionStatus.REJECTED)
        existing = live.filter(content_fingerprint=fingerprint).order_by("-version").first()
        if existing is None and inherit_mapping:
            # Registry semantics: the same schema registered again (however it is written) is the same
            # version, whatever mapping.
            existing = (
                live.filter(schema__normalized_fingerprint=schema_normalized_fingerprint(parsed))
                .order_by("-version").first()
            )
        if existing is not None:
            if submit_for_review and existing.status == VersionStatus.DRAFT:
                return contract_version_submit_for_review(actor=actor, version=existing), False
            return existing, False

        number = selectors.next_version_number(contract)
        check = selectors.contract_check(
            contract=contract, schema=parsed, mapping_spec=mapping_spec, samples=sample_list, version_number=number
        )
        if mapping_spec and check.mapping_errors and not inherit_mapping:
            # A mapping the author wrote is checked when saved; an inherited one is left for the reviewer.
            raise ContractError(
                "invalid_mapping",
                "The mapping has errors: " + "; ".join(f"{e['path']}: {e['message']}" for e in check.mapping_errors),
                details=check.mapping_errors,
            )
        if submit_for_review and not check.compatible:
            raise Conflict(
                "incompatible",
                f"Schema is incompatible with '{contract.subject}' under {contract.compatibility}: "
                + "; ".join(f"{c['path']}: {c['message']}" for c in check.changes if c["severity"] == "error"),
                details=check.as_api_dict(),
            )
        version = ContractVersion.objects.create(
            contract=contract, version=number, schema=schema_text_ensure(parsed), mapping=mapping_spec,
            content_fingerprint=fingerprint, sample_payloads=sample_list, team_checks=checks_text,
            status=VersionStatus.IN_REVIEW if submit_for_review else VersionStatus.DRAFT,
            compatibility_report=check.report or {}, mapping_errors=check.mapping_errors,
            change_summary=change_summary[:2000],
            author=actor if getattr(actor, "is_authenticated", False) else None,
            submitted_at=timezone.now() if submit_for_review else None,
            submitted_by=actor if submit_for_review and getattr(actor, "is_authenticated", False) else None,
        )
        audit_record_write(
            actor=actor, action="contract_version.submit" if submit_for_review else "contract_version.draft",
            obj=version, after=_version_state(version),
        )
    return version, True


def contract_version_submit_for_review(*, actor: Any, version: ContractVersion) -> ContractVersion:
    if not selectors.user_can_edit_contract(actor, version.contract):
        raise Forbidden("forbidden", "Only the owning team may submit this version for review.")
    with transaction.atomic():
        version = (
            ContractVersion.objects.select_for_update(of=("self",)).select_related("contract", "schema")
            .get(pk=version.pk)
        )
        if version.status != VersionStatus.DRAFT:
            raise Conflict("invalid_state", f"Only drafts can be submitted; this version is {version.status}.")
        check = selectors.contract_check(
            contract=version.contract, schema=orjson.loads(version.schema.schema), mapping_spec=version.mapping,
            samples=version.sample_payloads, version_number=version.version,
        )
        if not check.compatible:
            raise Conflict("incompatible", "This draft breaks the contract's compatibility mode.",
                           details=check.as_api_dict())
        before = _version_state(version)
        version.status = VersionStatus.IN_REVIEW
        version.compatibility_report = check.report or {}
        version.mapping_errors = check.mapping_errors
        version.submitted_at = timezone.now()
        version.submitted_by = actor if getattr(actor, "is_authenticated", False) else None
        version.save()
        audit_record_write(
            actor=actor, action="contract_version.submit", obj=version, before=before, after=_version_state(version)
        )
    return version


def _review_guard(actor: Any, version: ContractVersion) -> None:
    if not is_data_engineer(actor):
        raise Forbidden("forbidden", "Only data engineers review contract versions.")
    if version.author_id is not None and version.author_id == getattr(actor, "pk", None):
        raise Forbidden("own_change", "You cannot review your own change; ask another data engineer.")
    if version.submitted_by_id is not None and version.submitted_by_id == getattr(actor, "pk", None):
        raise Forbidden("own_change", "You submitted this version for review, so you cannot review it; ask another "
                                      "data engineer.")
    if version.status != VersionStatus.IN_REVIEW:
        raise Conflict("invalid_state", f"Only versions in review can be reviewed; this one is {version.status}.")


def contract_version_approve(*, actor: Any, version: ContractVersion, comment: str = "") -> ContractVersion:
    """Approve a version in review. Re-checks compatibility against what is approved now."""
    with transaction.atomic():
        version = (
            ContractVersion.objects.select_for_update(of=("self",))
            .select_related("contract", "contract__source", "schema", "author").get(pk=version.pk)
        )
        _review_guard(actor, version)
        check = selectors.contract_check(
            contract=version.contract, schema=orjson.loads(version.schema.schema), mapping_spec=version.mapping,
            samples=version.sample_payloads, against=selectors.approved_versions(version.contract,
                                                                                exclude_pk=version.pk),
            version_number=version.version,
        )
        if not check.compatible:
            raise Conflict("incompatible", "Since it was submitted, this version has become incompatible with "
                           "the approved versions; reject it and ask for a new one.", details=check.as_api_dict())
        if check.mapping_errors:
            raise Conflict("mapping_invalid", "This version's mapping has errors, so ingestion could not use it: "
                           + "; ".join(f"{e['path']}: {e['message']}" for e in check.mapping_errors),
                           details=check.mapping_errors)
        before = _version_state(version)
        version.status = VersionStatus.APPROVED
        version.reviewer = actor
        version.review_comment = comment[:4000]
        version.reviewed_at = timezone.now()
        version.compatibility_report = check.report or {}
        version.save()
        audit_record_write(
            actor=actor, action="contract_version.approve", obj=version, before=before, after=_version_state(version)
        )
    return version


def contract_version_reject_comment_check(comment: Any) -> None:
    if not isinstance(comment, str) or not comment.strip():
        raise ContractError("comment_required", "Say why the version is rejected, so its author can fix it.")


def contract_version_reject(*, actor: Any, version: ContractVersion, comment: str) -> ContractVersion:
    contract_version_reject_comment_check(comment)
    with transaction.atomic():
        version = (
            ContractVersion.objects.select_for_update(of=("self",)).select_related("contract", "author")
            .get(pk=version.pk)
        )
        _review_guard(actor, version)
        before = _version_state(version)
        version.status = VersionStatus.REJECTED
        version.reviewer = actor
        version.review_comment = comment.strip()[:4000]
        version.reviewed_at = timezone.now()
        version.save()
        audit_record_write(
            actor=actor, action="contract_version.reject", obj=version, before=before, after=_version_state(version)
        )
    return version


def contract_version_deprecate(*, actor: Any, version: ContractVersion, comment: str = "") -> ContractVersion:
    if not is_data_engineer(actor):
        raise Forbidden("forbidden", "Only data engineers deprecate contract versions.")
    with transaction.atomic():
        version = ContractVersion.objects.select_for_update(of=("self",)).select_related("contract").get(pk=version.pk)
        if version.status != VersionStatus.APPROVED:
            raise Conflict("invalid_state", f"Only approved versions can be deprecated; this one is {version.status}.")
        before = _version_state(version)
        version.status = VersionStatus.DEPRECATED
        if comment:
            version.review_comment = comment[:4000]
        version.save()
        audit_record_write(
            actor=actor, action="contract_version.deprecate", obj=version, before=before,
            after=_version_state(version),
        )
    return version


# --- the canonical model --------------------------------------------------------------------------

def canonical_contract_ensure(*, actor: Any = None) -> ContractVersion:
    """Register the canonical model shipped in `contracts/canonical/` as the approved `canonical` contract."""
    model = canonical_model.load_canonical_model()
    schema = compatibility.parse_record_schema(canonical_model.canonical_avro_schema())
    with transaction.atomic():
        contract, created = Contract.objects.get_or_create(
            subject=CANONICAL_SUBJECT,
            defaults={"is_canonical": True, "compatibility": CompatibilityLevel.FULL_TRANSITIVE,
                      "description": f"The canonical event model, version {model.version}."},
        )
        if created:
            audit_record_write(actor=actor, action="contract.create", obj=contract, after=_contract_state(contract))
        fingerprint = _content_fingerprint(schema, {})
        existing = contract.versions.filter(content_fingerprint=fingerprint).first()
        if existing:
            return existing
        version = ContractVersion.objects.create(
            contract=contract, version=selectors.next_version_number(contract), schema=schema_text_ensure(schema),
            mapping={}, content_fingerprint=fingerprint, status=VersionStatus.APPROVED,
            change_summary=f"Canonical model {model.version} as shipped with the platform.",
            submitted_at=timezone.now(), reviewed_at=timezone.now(),
        )
        audit_record_write(actor=actor, action="contract_version.register_canonical", obj=version,
                           after=_version_state(version))
    return version


def preset_versions_load(
    *, actor: Any, reviewer: Any, source: Source, contracts: Sequence[dict],
) -> list[ContractVersion]:
    """Load preset contracts (schema, mapping, samples per version) and approve them. Idempotent."""
    loaded = []
    for spec in contracts:
        event = spec["subject"].partition(".")[2]
        contract = Contract.objects.filter(subject=spec["subject"]).first() or contract_create(
            actor=actor, source=source, event=event,
            compatibility=spec.get("compatibility", CompatibilityLevel.BACKWARD_TRANSITIVE),
            description=spec.get("description", ""),
        )
        for item in spec["versions"]:
            version, _ = contract_version_submit(
                actor=actor, contract=contract, schema=item["schema"], mapping_spec=item.get("mapping"),
                samples=item.get("samples", []), change_summary=item.get("change_summary", ""),
            )
            if version.status == VersionStatus.IN_REVIEW:
                version = contract_version_approve(actor=reviewer, version=version,
                                                   comment="Approved by the demo seed.")
            loaded.append(version)
    return loaded


def team_get(name: str) -> Team:
    team = Team.objects.filter(name=name).first()
    if team is None:
        raise NotFound("team_not_found", f"Team '{name}' not found.")
    return team


def sample_payloads_erase(*, matches: Any, ticket_ref: str) -> int:
    """Drop every sample payload saved with a contract version that ``matches(payload)`` says holds an erased
    person's data (a deletion ticket's step). Returns how many were dropped; each changed version is audited
    (by count, not content: the audit log must not keep the personal data being erased)."""
    from portal.roles import SYSTEM

    dropped = 0
    for pk in ContractVersion.objects.exclude(sample_payloads=[]).values_list("pk", flat=True):
        with transaction.atomic():
            version = ContractVersion.objects.select_for_update().get(pk=pk)
            kept = [payload for payload in version.sample_payloads or [] if not matches(payload)]
            removed = len(version.sample_payloads or []) - len(kept)
            if not removed:
                continue
            version.sample_payloads = kept
            version.save(update_fields=["sample_payloads"])
            audit_record_write(actor=SYSTEM, action="contract_version.samples_erase", obj=version,
                               after={"ticket": ticket_ref, "samples_removed": removed, "samples_kept": len(kept)})
            dropped += removed
    return dropped
