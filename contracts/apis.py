"""REST API v1: sources, contracts, versions, review actions, the canonical model, and the CI check.

One small APIView per operation; input serializers validate shape, services do the work, and every
domain error comes back as JSON `{"error": code, "message": ...}` with the right status.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from contracts import canonical_model, selectors, services
from contracts.errors import ContractError, Forbidden
from contracts.models import CompatibilityLevel, Contract, ContractVersion, Platform, Source, SourceKind
from contracts.services import (
    EVENT_NAME_PATTERN,
    SIGNING_SECRET_MAX,
    SIGNING_SECRET_MIN,
    SIGNING_SECRET_PATTERN,
    SOURCE_NAME_MESSAGE,
    SOURCE_NAME_PATTERN,
)
from portal.api_errors import ApiError, ApiView, validated_body
from portal.openapi import error_responses
from portal.permissions import HasPortalRole
from portal.roles import is_admin, is_data_engineer


def api_error(err: ContractError) -> ApiError:
    return ApiError(err.code, err.message, status_code=err.status_code, details=err.details)


class ServiceErrorsMixin:
    # Domain errors become API errors in one place. (A comment, not a docstring: a docstring would be
    # every view's description in the OpenAPI document.)

    def handle_exception(self, exc: Exception):
        if isinstance(exc, ContractError):
            exc = api_error(exc)
        return super().handle_exception(exc)  # type: ignore[misc]


@extend_schema_field(OpenApiTypes.ANY)
class JsonValueField(serializers.Field):
    """Any JSON value; a string holding JSON is decoded (schemas are often sent as strings)."""

    def __init__(self, *, decode_strings: bool = True, **kwargs: Any):
        self.decode_strings = decode_strings
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> Any:
        if self.decode_strings and isinstance(data, str):
            try:
                return orjson.loads(data)
            except orjson.JSONDecodeError as err:
                raise serializers.ValidationError(f"Not valid JSON: {err}") from err
        return data

    def to_representation(self, value: Any) -> Any:
        return value


def service_checked_text(schema: dict, **kwargs: Any) -> serializers.CharField:
    """A text field whose rules the service checks (its refusal has a stable code, e.g. `invalid_name`);
    `schema` is what the OpenAPI document says about it."""
    field_class = type("ServiceCheckedText", (serializers.CharField,), {})
    return extend_schema_field({"type": "string", **schema})(field_class)(**kwargs)


def non_blank(**kwargs: Any) -> serializers.RegexField:
    """A required text field that must hold more than spaces (trimmed, then refused if blank)."""
    return serializers.RegexField(r"^[^\u0000]*\S[^\u0000]*$", **kwargs)


# Documented as the levels' enum; read by the service, which also takes them in lower case.
@extend_schema_field(serializers.ChoiceField(choices=CompatibilityLevel.choices))
class CompatibilityLevelField(serializers.CharField):
    pass


@extend_schema_field({"oneOf": [{"type": "object", "additionalProperties": True}, {"type": "string"}],
                      "description": "An Avro record schema: a JSON object, or a string holding it."})
class AvroSchemaField(JsonValueField):
    pass


@extend_schema_field({"type": "object", "additionalProperties": True, "nullable": True})
class MappingField(JsonValueField):
    pass


@extend_schema_field({"type": "array", "items": {}, "nullable": True})
class SamplesField(JsonValueField):
    pass


# --- output shapes --------------------------------------------------------------------------------

class SourceOut(serializers.ModelSerializer):
    team = serializers.CharField(source="team.name")
    has_signing_secret = serializers.SerializerMethodField()

    class Meta:
        model = Source
        fields = ["id", "name", "team", "platform", "kind", "product", "description", "is_active",
                  "write_key_prefix", "write_key_rotated_at", "has_signing_secret", "created_at"]

    def get_has_signing_secret(self, obj: Source) -> bool:
        return bool(obj.signing_secret)


class ContractOut(serializers.ModelSerializer):
    source = serializers.CharField(source="source.name", allow_null=True, default=None)
    team = serializers.CharField(source="source.team.name", allow_null=True, default=None)
    latest_version = serializers.SerializerMethodField()
    latest_approved_version = serializers.SerializerMethodField()

    class Meta:
        model = Contract
        fields = ["id", "subject", "source", "team", "compatibility", "is_canonical", "description",
                  "latest_version", "latest_approved_version", "created_at"]

    def get_latest_version(self, obj: Contract) -> int | None:
        v = selectors.latest_version(obj)
        return v.version if v else None

    def get_latest_approved_version(self, obj: Contract) -> int | None:
        v = selectors.latest_approved_version(obj)
        return v.version if v else None


class VersionOut(serializers.ModelSerializer):
    subject = serializers.CharField(source="contract.subject")
    schema_id = serializers.IntegerField(source="schema.id")
    schema = serializers.SerializerMethodField()
    author = serializers.CharField(source="author.username", allow_null=True, default=None)
    reviewer = serializers.CharField(source="reviewer.username", allow_null=True, default=None)

    class Meta:
        model = ContractVersion
        fields = ["subject", "version", "status", "schema_id", "schema", "mapping", "sample_payloads", "team_checks",
                  "compatibility_report", "mapping_errors", "change_summary", "author", "reviewer",
                  "review_comment", "created_at", "submitted_at", "reviewed_at"]

    def get_schema(self, obj: ContractVersion) -> dict:
        return orjson.loads(obj.schema.schema)


# --- sources --------------------------------------------------------------------------------------

class SourceCreateIn(serializers.Serializer):
    team = non_blank(max_length=64)
    name = service_checked_text({"pattern": SOURCE_NAME_PATTERN, "minLength": 2, "maxLength": 63},
                                trim_whitespace=False, help_text=SOURCE_NAME_MESSAGE)
    platform = serializers.ChoiceField(choices=Platform.values)
    kind = serializers.ChoiceField(choices=SourceKind.values)
    product = serializers.CharField(required=False, allow_blank=True, default="", max_length=64)
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=255)


class SourceListApi(ServiceErrorsMixin, ApiView):
    @extend_schema(
        parameters=[OpenApiParameter("team", str), OpenApiParameter("platform", str)],
        responses=SourceOut(many=True), summary="List sources",
    )
    def get(self, request):
        qs = selectors.source_list(team=request.query_params.get("team"),
                                   platform=request.query_params.get("platform"))
        return Response(SourceOut(qs, many=True).data)

    @extend_schema(
        request=SourceCreateIn,
        responses={201: inline_serializer("SourceCreated",
                                          {"source": SourceOut(),
                                           "write_key": serializers.CharField(allow_null=True)}),
                   **error_responses(404, 409)},
        summary="Register a source (returns its write key once; null for a webhook source, whose events "
                "are signed by the provider)",
    )
    def post(self, request):
        data = validated_body(SourceCreateIn, request.data)
        source, key = services.source_create(
            actor=request.user, team=services.team_get(data["team"]), name=data["name"],
            platform=data["platform"], kind=data["kind"], product=data["product"], description=data["description"],
        )
        return Response({"source": SourceOut(source).data, "write_key": key or None}, status=status.HTTP_201_CREATED)


class SourceUpdateIn(serializers.Serializer):
    description = serializers.CharField(required=False, allow_blank=True, max_length=255)
    product = serializers.CharField(required=False, allow_blank=True, max_length=64)
    is_active = serializers.BooleanField(required=False)


class SourceDetailApi(ServiceErrorsMixin, ApiView):
    @extend_schema(responses=SourceOut, summary="Get a source by name or id")
    def get(self, request, source: str):
        return Response(SourceOut(selectors.source_by_name_or_id(source)).data)

    @extend_schema(request=SourceUpdateIn, responses=SourceOut,
                   summary="Update a source (description, product, enable/disable)")
    def patch(self, request, source: str):
        data = validated_body(SourceUpdateIn, request.data)
        updated = services.source_update(actor=request.user, source=selectors.source_by_name_or_id(source), **data)
        return Response(SourceOut(updated).data)


class SourceRotateKeyApi(ServiceErrorsMixin, ApiView):
    @extend_schema(request=None, responses=inline_serializer("WriteKey", {"write_key": serializers.CharField()}),
                   summary="Rotate a source's write key (the old key stops working)")
    def post(self, request, source: str):
        key = services.source_write_key_rotate(actor=request.user, source=selectors.source_by_name_or_id(source))
        return Response({"write_key": key})


@extend_schema_field({"type": "string", "minLength": SIGNING_SECRET_MIN, "maxLength": SIGNING_SECRET_MAX,
                      "pattern": SIGNING_SECRET_PATTERN, "writeOnly": True})
class SigningSecretField(serializers.CharField):
    pass


class SigningSecretIn(serializers.Serializer):
    # Not trimmed, and checked by the service: a secret with a space around it is refused with a message
    # that says so, not silently changed.
    signing_secret = SigningSecretField(
        trim_whitespace=False,
        help_text=f"{SIGNING_SECRET_MIN}–{SIGNING_SECRET_MAX} printable ASCII characters, no space at either end "
                  "(Slack's signing secrets are 32 hex digits).",
    )


class SourceSigningSecretApi(ServiceErrorsMixin, ApiView):
    @extend_schema(request=SigningSecretIn, responses=SourceOut, summary="Store a webhook provider's signing secret",
                   description="Refused with 400 `invalid_secret`, naming the problem, unless it is "
                               f"{SIGNING_SECRET_MIN}–{SIGNING_SECRET_MAX} printable ASCII characters with no "
                               "space or line break at either end.")
    def post(self, request, source: str):
        data = validated_body(SigningSecretIn, request.data)
        updated = services.source_signing_secret_set(
            actor=request.user, source=selectors.source_by_name_or_id(source), secret=data["signing_secret"]
        )
        return Response(SourceOut(updated).data)


# --- contracts ------------------------------------------------------------------------------------

class ContractCreateIn(serializers.Serializer):
    source = non_blank(max_length=64, help_text="The source's name (or id).")
    event = service_checked_text({"pattern": EVENT_NAME_PATTERN, "maxLength": 63}, max_length=63,
                                 help_text="Lowercase letters, digits and underscores, e.g. chat_event.")
    compatibility = CompatibilityLevelField(required=False, default=CompatibilityLevel.BACKWARD_TRANSITIVE)
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=255)


class ContractListApi(ServiceErrorsMixin, ApiView):
    @extend_schema(
        parameters=[OpenApiParameter(name, str) for name in ("team", "platform", "status", "source", "q")],
        responses=ContractOut(many=True), summary="List contracts (subjects)",
    )
    def get(self, request):
        p = request.query_params
        qs = selectors.contract_list(team=p.get("team"), platform=p.get("platform"), status=p.get("status"),
                                     source=p.get("source"), query=p.get("q"))
        return Response(ContractOut(qs, many=True).data)

    @extend_schema(request=ContractCreateIn, responses={201: ContractOut, **error_responses(404, 409)},
                   summary="Create a contract for a source")
    def post(self, request):
        data = validated_body(ContractCreateIn, request.data)
        contract = services.contract_create(
            actor=request.user, source=selectors.source_by_name_or_id(data["source"]), event=data["event"],
            compatibility=data["compatibility"], description=data["description"],
        )
        return Response(ContractOut(contract).data, status=status.HTTP_201_CREATED)


class CompatibilityIn(serializers.Serializer):
    compatibility = CompatibilityLevelField()


class ContractDetailApi(ServiceErrorsMixin, ApiView):
    @extend_schema(responses=ContractOut, summary="Get a contract")
    def get(self, request, subject: str):
        return Response(ContractOut(selectors.contract_by_subject(subject)).data)

    @extend_schema(request=CompatibilityIn, responses=ContractOut, summary="Change a contract's compatibility level")
    def patch(self, request, subject: str):
        data = validated_body(CompatibilityIn, request.data)
        contract = services.contract_compatibility_set(
            actor=request.user, contract=selectors.contract_by_subject(subject), level=data["compatibility"]
        )
        return Response(ContractOut(contract).data)


TEAM_CHECKS_HELP = ("Optional: the team's own Soda checks on this contract's events in CANONICAL.EVENTS, as YAML "
                    "(a `checks:` list of missing / invalid on a column or attribute, failed_rows with an SQL "
                    "expression; docs/quality.md). Validated when sent: each problem names the check and what is "
                    "wrong.")


class CheckIn(serializers.Serializer):
    schema = AvroSchemaField(help_text="The proposed Avro record schema (JSON object, or a string holding it).")
    mapping = MappingField(required=False, allow_null=True, default=None,
                           help_text="Optional mapping to the canonical model (docs/mapping.md).")
    samples = SamplesField(required=False, allow_null=True, default=None,
                           help_text="Optional sample payloads to preview through the mapping.")
    team_checks = serializers.CharField(required=False, allow_null=True, allow_blank=True, default=None,
                                        trim_whitespace=False, help_text=TEAM_CHECKS_HELP)


CheckOut = inline_serializer("CheckResult", {
    "compatible": serializers.BooleanField(),
    "mode": serializers.CharField(),
    "changes": serializers.ListField(child=serializers.DictField()),
    "grouped_changes": inline_serializer("CheckGroupedChanges", {
        "latest_version": serializers.IntegerField(allow_null=True, help_text=(
            "The newest version the schema was compared with (null: none yet).")),
        "new": serializers.ListField(child=serializers.DictField(), help_text=(
            "Changes against latest_version: what this proposal itself changes.")),
        "older": serializers.ListField(child=serializers.DictField(), help_text=(
            "Changes found only against older versions (transitive modes): already there in latest_version.")),
    }),
    "schema_errors": serializers.ListField(child=serializers.DictField()),
    "mapping_errors": serializers.ListField(child=serializers.DictField()),
    "team_checks_errors": serializers.ListField(child=serializers.DictField(), help_text=(
        "Problems with the proposed team checks ({path, message}); empty when none were sent or all are valid.")),
    "previews": serializers.ListField(child=serializers.DictField()),
})


class ContractCheckApi(ServiceErrorsMixin, ApiView):
    """What CI calls before a contract change merges. Saves nothing."""

    @extend_schema(request=CheckIn, responses={200: CheckOut, **error_responses(413)},
                   summary="Check a proposed schema (and mapping) for CI",
                   description="Returns whether the schema is compatible under the contract's mode, every change "
                               "by field path, and mapping errors. Nothing is saved. A schema that is not valid "
                               "Avro is answered with 400 naming the problem; over 256 KB with 413.")
    def post(self, request, subject: str):
        contract = selectors.contract_by_subject(subject)
        data = validated_body(CheckIn, request.data)
        samples = data["samples"]
        if samples is not None and not isinstance(samples, list):
            raise ApiError("invalid_samples", "samples must be a JSON array of payloads.")
        if data["mapping"] is not None and not isinstance(data["mapping"], dict):
            raise ApiError("invalid_mapping", "mapping must be a JSON object (see docs/mapping.md).")
        check = selectors.contract_check(contract=contract, schema=data["schema"], mapping_spec=data["mapping"],
                                         samples=samples or [])
        if check.schema_errors:
            error = check.schema_errors[0]
            raise ApiError(error["code"], error["message"], status_code=413 if error["code"] == "schema_too_large"
                           else 400)
        if data["mapping"] is None:
            check.mapping_errors = []  # no mapping proposed: nothing to check
        team_checks_errors = []
        if data["team_checks"]:
            try:
                services.team_checks_validate(data["team_checks"], data["mapping"])
            except ContractError as err:
                team_checks_errors.append(err.details if isinstance(err.details, dict) else
                                          {"path": "", "message": err.message})
        return Response({**check.as_api_dict(), "team_checks_errors": team_checks_errors})


class VersionCreateIn(serializers.Serializer):
    schema = AvroSchemaField()
    mapping = MappingField(required=False, allow_null=True, default=None)
    samples = SamplesField(required=False, allow_null=True, default=None)
    team_checks = serializers.CharField(required=False, allow_null=True, allow_blank=True, default=None,
                                        trim_whitespace=False, help_text=TEAM_CHECKS_HELP)
    submit = serializers.BooleanField(required=False, default=True,
                                      help_text="true: straight into review; false: save as a draft.")
    change_summary = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class VersionListApi(ServiceErrorsMixin, ApiView):
    @extend_schema(responses=VersionOut(many=True), summary="List a contract's versions, newest first")
    def get(self, request, subject: str):
        contract = selectors.contract_by_subject(subject)
        return Response(VersionOut(selectors.contract_versions(contract), many=True).data)

    @extend_schema(request=VersionCreateIn, responses={201: VersionOut, 200: VersionOut, **error_responses(409, 413)},
                   summary="Propose a new version (draft or straight into review)",
                   description="An identical schema, mapping and team checks return the existing version with 200. "
                               "Team checks the platform refuses are answered with 400 `invalid_team_checks` naming "
                               "the check and the problem. "
                               "A schema that breaks the compatibility mode is refused with 409 when submitted "
                               "for review.")
    def post(self, request, subject: str):
        contract = selectors.contract_by_subject(subject)
        data = validated_body(VersionCreateIn, request.data)
        version, created = services.contract_version_submit(
            actor=request.user, contract=contract, schema=data["schema"], mapping_spec=data["mapping"],
            samples=data["samples"], submit_for_review=data["submit"], change_summary=data["change_summary"],
            team_checks=data["team_checks"],
        )
        return Response(VersionOut(version).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


def _version_from_path(subject: str, version: str) -> ContractVersion:
    contract = selectors.contract_by_subject(subject)
    if version == "latest":
        found = selectors.latest_version(contract)
        if found is None:
            raise ContractError("version_not_found", f"'{subject}' has no versions yet.", status_code=404)
        return found
    if not (version.isascii() and version.isdigit()) or len(version) > 9:
        raise ContractError("invalid_version", f"Version must be a positive number or 'latest', not '{version}'.")
    return selectors.contract_version_get(contract, int(version))


VERSION_PARAMETER = OpenApiParameter(
    "version", {"type": "string", "pattern": r"^(latest|[0-9]{1,9})$"}, OpenApiParameter.PATH,
    description="A version number, or `latest` (the newest version, whatever its review state).")


class VersionDetailApi(ServiceErrorsMixin, ApiView):
    @extend_schema(parameters=[VERSION_PARAMETER], responses=VersionOut,
                   summary="Get one version (a number or 'latest')")
    def get(self, request, subject: str, version: str):
        return Response(VersionOut(_version_from_path(subject, version)).data)


class ReviewIn(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=4000)


class RejectIn(serializers.Serializer):
    comment = non_blank(max_length=4000, help_text="Why the version is rejected, so its author can fix it.")


def _version_action_doc(summary: str, body: type[serializers.Serializer] = ReviewIn):
    return extend_schema(parameters=[VERSION_PARAMETER], request=body,
                         responses={200: VersionOut, **error_responses(409)}, summary=summary)


class VersionActionApi(ServiceErrorsMixin, ApiView):
    """A review action on one version; each subclass is one action's endpoint."""

    body: type[serializers.Serializer] = ReviewIn

    def act(self, user: Any, version: ContractVersion, comment: str) -> ContractVersion:
        raise NotImplementedError

    def post(self, request, subject: str, version: str):
        data = validated_body(self.body, request.data)
        target = _version_from_path(subject, version)
        return Response(VersionOut(self.act(request.user, target, data["comment"])).data)


class VersionSubmitApi(VersionActionApi):
    @_version_action_doc("Submit a draft for review (the owning team)")
    def post(self, request, subject: str, version: str):
        return super().post(request, subject, version)

    def act(self, user, version, comment):
        return services.contract_version_submit_for_review(actor=user, version=version)


class VersionApproveApi(VersionActionApi):
    @_version_action_doc("Approve a version in review (another data engineer than its author)")
    def post(self, request, subject: str, version: str):
        return super().post(request, subject, version)

    def act(self, user, version, comment):
        return services.contract_version_approve(actor=user, version=version, comment=comment)


class VersionRejectApi(VersionActionApi):
    body = RejectIn

    @_version_action_doc("Reject a version in review, saying why (data engineers)", RejectIn)
    def post(self, request, subject: str, version: str):
        comment = request.data.get("comment") if isinstance(request.data, dict) else None
        if comment is None or (isinstance(comment, str) and not comment.strip()):
            # the service's refusal (stable code `comment_required`), before the body's generic "required"
            services.contract_version_reject_comment_check(comment)
        return super().post(request, subject, version)

    def act(self, user, version, comment):
        return services.contract_version_reject(actor=user, version=version, comment=comment)


class VersionDeprecateApi(VersionActionApi):
    @_version_action_doc("Deprecate an approved version (data engineers)")
    def post(self, request, subject: str, version: str):
        return super().post(request, subject, version)

    def act(self, user, version, comment):
        return services.contract_version_deprecate(actor=user, version=version, comment=comment)


VERSION_ACTION_APIS = {"submit": VersionSubmitApi, "approve": VersionApproveApi, "reject": VersionRejectApi,
                       "deprecate": VersionDeprecateApi}


class ReviewQueueApi(ServiceErrorsMixin, ApiView):
    @extend_schema(responses=VersionOut(many=True), summary="Versions waiting for review (data engineers)")
    def get(self, request):
        if not is_data_engineer(request.user):
            raise api_error(Forbidden("forbidden", "The review queue is for data engineers."))
        return Response(VersionOut(selectors.review_queue(), many=True).data)


# --- canonical model ------------------------------------------------------------------------------

def _field_dict(field: Any) -> dict:
    return dataclasses.asdict(field) if dataclasses.is_dataclass(field) else dict(field)


class CanonicalModelApi(ApiView):
    @extend_schema(responses=inline_serializer("CanonicalModel", {
        "version": serializers.CharField(), "envelope": serializers.ListField(child=serializers.DictField()),
        "event_types": serializers.DictField(), "avro_schema": serializers.DictField()}),
        summary="The canonical event model: envelope, event types and their fields")
    def get(self, request):
        model = canonical_model.load_canonical_model()
        return Response({
            "version": model.version,
            "envelope": [_field_dict(f) for f in model.envelope],
            "event_types": {
                name: {"name": et.name, "doc": et.doc, "fields": [_field_dict(f) for f in et.fields]}
                for name, et in model.event_types.items()
            },
            "avro_schema": canonical_model.canonical_avro_schema(),
        })


class AuditListApi(ApiView):
    permission_classes = [HasPortalRole]

    @extend_schema(parameters=[OpenApiParameter("action", str), OpenApiParameter("actor", str)],
                   responses=inline_serializer("AuditRecord", {"id": serializers.IntegerField()}, many=True),
                   summary="Audit records, newest first (admins)")
    def get(self, request):
        from portal.selectors import audit_records

        if not is_admin(request.user):
            raise ApiError("forbidden", "The audit log is for admins.", status_code=403)
        records = audit_records(action=request.query_params.get("action"), actor=request.query_params.get("actor"))
        return Response([
            {"id": r.id, "actor": r.actor_username, "action": r.action, "object_type": r.object_type,
             "object_id": r.object_id, "object": r.object_repr, "before": r.before, "after": r.after,
             "at": r.created_at.isoformat()}
            for r in records[:500]
        ])


