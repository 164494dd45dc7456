"""A Schema-Registry-compatible subset under /registry/, so Kafka tooling works unchanged.

Wire format, paths and error codes follow Confluent Schema Registry's REST API
(content type `application/vnd.schemaregistry.v1+json`, errors `{"error_code", "message"}`).
How review states map onto registry notions (see docs/decisions.md):
- `register` creates a version *in review* (never approved) and returns the schema's global id;
  the same schema registered again returns the existing id.
- a subject's version list and `latest` skip rejected versions, so `latest` may be a version still in
  review; `?approved=true` on the version reads asks for approved versions only. `GET versions/N`
  returns any version.
- "the same schema" (lookup, registration) means the same normalized form: attribute order and a
  primitive written as an object do not matter (compatibility.normalized_schema).
- checks against `latest`/N compare with that one version whatever its review state; a check against
  the subject (no version) uses the subject's mode over its approved versions, as registration does.
"""

from __future__ import annotations

from typing import Any

import orjson
from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, renderers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from contracts import selectors, services
from contracts.errors import ContractError
from contracts.models import CompatibilityLevel, Contract, ContractVersion, VersionStatus
from portal.api_errors import ApiView
from portal.authentication import ApiTokenAuthentication, TokenBasicAuthentication
from portal.parsers import (
    RegistryGenericJSONParser,
    RegistryJSONParser,
    RegistryOctetStreamParser,
    SafeJSONParser,
)
from portal.permissions import HasPortalRole

REGISTRY_MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"
REGISTRY_GENERIC_MEDIA_TYPE = "application/vnd.schemaregistry+json"
DEFAULT_LEVEL = CompatibilityLevel.BACKWARD_TRANSITIVE

# Our domain error codes → the registry's numeric codes.
REGISTRY_CODES = {
    "subject_not_found": 40401, "source_not_found": 40401, "version_not_found": 40402,
    "schema_not_found": 40403, "incompatible": 409, "invalid_schema": 42201, "schema_too_large": 42201,
    "invalid_version": 42202, "invalid_compatibility_level": 42203, "invalid_subject": 42201,
    "forbidden": 40301, "own_change": 40301,
}


class RegistryError(Exception):
    def __init__(self, http_status: int, error_code: int, message: str):
        super().__init__(message)
        self.http_status, self.error_code, self.message = http_status, error_code, message


class RegistryJSONRenderer(renderers.JSONRenderer):
    media_type = REGISTRY_MEDIA_TYPE


class RegistryGenericJSONRenderer(renderers.JSONRenderer):
    media_type = REGISTRY_GENERIC_MEDIA_TYPE


# What Confluent's registry answers in, preferred first; `*/*`, `application/*` and no Accept header get
# the first. A request body may be any of these, or `application/octet-stream`, and is read as JSON.
REGISTRY_RENDERERS = [RegistryJSONRenderer, RegistryGenericJSONRenderer, renderers.JSONRenderer]
REGISTRY_PARSERS = [RegistryJSONParser, RegistryGenericJSONParser, SafeJSONParser, RegistryOctetStreamParser]


APPROVED_PARAMETER = OpenApiParameter(
    "approved", bool, description="`true`: only versions a data engineer approved (`latest` is then the latest "
                                  "approved one). Without it, as in Confluent's API, `latest` may be in review.")


SCHEMA_BODY = {
    "type": "object", "required": ["schema"],
    "properties": {
        "schema": {"type": "string", "description": "The Avro schema as a JSON string."},
        "schemaType": {"type": "string", "enum": ["AVRO"], "description": "AVRO (the default) is the only type."},
        "references": {"type": "array", "maxItems": 0, "description": "Not supported: inline referenced types."},
    },
}
LEVEL = {"type": "string", "enum": list(CompatibilityLevel.values)}
CONFIG_BODY = {
    "type": "object", "description": "`compatibility` or `compatibilityLevel` (as older clients send it), not both.",
    "properties": {"compatibility": LEVEL, "compatibilityLevel": LEVEL},
    "oneOf": [{"required": ["compatibility"]}, {"required": ["compatibilityLevel"]}],
}
REGISTRY_BODIES = {"schema": SCHEMA_BODY, "config": CONFIG_BODY}


def registry_doc(operation_id: str, summary: str, *, body: str = "", approved: bool = False,
                 description: str = "", conflict: bool = False):
    """The OpenAPI entry of a registry endpoint: its wire format is Confluent's API reference, so it is brief.
    The refusals (401/403/404/422/...) with Confluent's error body are added by portal.openapi."""
    return extend_schema(
        operation_id=f"registry_{operation_id}", tags=["registry (Confluent Schema Registry subset)"],
        summary=summary, description=description,
        request={parser.media_type: REGISTRY_BODIES[body] for parser in REGISTRY_PARSERS} if body else None,
        responses={200: OpenApiTypes.ANY, **({409: OpenApiTypes.OBJECT} if conflict else {})},
        parameters=[APPROVED_PARAMETER] if approved else [],
    )


class RegistryApi(ApiView):
    # In the OpenAPI document briefly (registry_doc); the wire format is Confluent's API reference.
    authentication_classes = [TokenBasicAuthentication, ApiTokenAuthentication]
    permission_classes = [HasPortalRole]
    parser_classes = REGISTRY_PARSERS
    renderer_classes = REGISTRY_RENDERERS

    def parameter_refuse(self, message: str) -> None:
        raise RegistryError(400, 400, message)

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, ContractError):
            code = REGISTRY_CODES.get(exc.code, exc.status_code * 100)
            http_status = 422 if code // 100 == 422 else exc.status_code
            exc = RegistryError(http_status, code, exc.message)
        if isinstance(exc, RegistryError):
            return Response({"error_code": exc.error_code, "message": exc.message}, status=exc.http_status)
        if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
            response = Response({"error_code": 40101, "message": str(exc.detail)}, status=401)
            response["WWW-Authenticate"] = 'Basic realm="chatorbit-registry"'
            return response
        if isinstance(exc, exceptions.PermissionDenied):
            return Response({"error_code": 40301, "message": str(exc.detail)}, status=403)
        if isinstance(exc, exceptions.ParseError):
            return Response({"error_code": 400, "message": f"Malformed JSON body: {exc.detail}"}, status=400)
        if isinstance(exc, exceptions.UnsupportedMediaType):
            return Response({"error_code": 415, "message": str(exc.detail)}, status=415)
        if isinstance(exc, exceptions.NotAcceptable):
            return Response({"error_code": 406, "message": str(exc.detail)}, status=406)
        if isinstance(exc, exceptions.MethodNotAllowed):
            return Response({"error_code": 405, "message": str(exc.detail)}, status=405)
        return super().handle_exception(exc)


def _schema_from_body(data: Any) -> Any:
    if not isinstance(data, dict) or "schema" not in data:
        raise RegistryError(422, 42201, "The body must be a JSON object with a 'schema' string.")
    schema_type = data.get("schemaType") or "AVRO"
    if schema_type != "AVRO":
        raise RegistryError(422, 42201, f"Only AVRO schemas are supported here, not {schema_type}.")
    if data.get("references"):
        raise RegistryError(422, 42201, "Schema references are not supported: inline the referenced types.")
    raw = data["schema"]
    if isinstance(raw, str):
        try:
            orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            raise RegistryError(422, 42201, f"Invalid schema: not valid JSON ({err}).") from err
    return raw


def _approved_only(request) -> bool:
    """`?approved=true`: the client wants only versions a data engineer approved (see the README)."""
    value = request.query_params.get("approved")
    if value is None or value.lower() == "false":
        return False
    if value.lower() == "true":
        return True
    raise RegistryError(400, 400, f"'approved' must be true or false, not '{value}'.")


def _visible_versions(contract: Contract, *, approved_only: bool = False) -> list[ContractVersion]:
    versions = contract.versions.select_related("schema").order_by("version")
    if approved_only:
        return list(versions.filter(status=VersionStatus.APPROVED))
    return list(versions.exclude(status=VersionStatus.REJECTED))


def _version_lookup(contract: Contract, version: str, *, approved_only: bool = False) -> ContractVersion:
    if version == "latest" or version == "-1":
        visible = _visible_versions(contract, approved_only=approved_only)
        if not visible:
            which = "approved versions" if approved_only else "versions"
            raise RegistryError(404, 40402, f"Subject '{contract.subject}' has no {which}.")
        return visible[-1]
    if not (version.isascii() and version.isdigit()) or len(version) > 10:
        raise RegistryError(422, 42202, f"'{version}' is not a valid version: use a positive number or 'latest'.")
    number = int(version)
    if number < 1 or number > 2**31 - 1:
        raise RegistryError(422, 42202, f"'{version}' is not a valid version: use a positive number or 'latest'.")
    found = contract.versions.select_related("schema").filter(version=number).first()
    if found is None:
        raise RegistryError(404, 40402, f"Version {number} not found for subject '{contract.subject}'.")
    if approved_only and found.status != VersionStatus.APPROVED:
        raise RegistryError(404, 40402, f"Version {number} of subject '{contract.subject}' is "
                                        f"{found.get_status_display().lower()}, not approved.")
    return found


def _version_body(version: ContractVersion) -> dict:
    # No schemaType: Confluent leaves it out for Avro, and Avro is all this registry holds.
    return {"subject": version.contract.subject, "version": version.version, "id": version.schema_id,
            "schema": version.schema.schema}


def _is_true(value: str | None) -> bool:
    return (value or "").lower() == "true"


class RegistryRootApi(RegistryApi):
    """GET /registry/: `{}`, as Confluent's root answers (clients and health checks probe it)."""

    permission_classes = [AllowAny]  # AllowAny (not []) so the document says no credentials are needed

    @registry_doc("root", "Root: `{}`, as Confluent's registry answers")
    def get(self, request):
        return Response({})


class SubjectListApi(RegistryApi):
    @registry_doc("subjects_list", "List subjects (`subjectPrefix` filters)")
    def get(self, request):
        prefix = request.query_params.get("subjectPrefix") or ""
        subjects = Contract.objects.filter(subject__startswith=prefix).order_by("subject").values_list("subject",
                                                                                                        flat=True)
        return Response(list(subjects))


class SubjectVersionsApi(RegistryApi):
    @registry_doc("versions_list", "List a subject's versions (rejected ones left out)", approved=True)
    def get(self, request, subject: str):
        contract = selectors.contract_by_subject(subject)
        return Response([v.version for v in _visible_versions(contract, approved_only=_approved_only(request))])

    @registry_doc("register", "Register a schema: creates a version in review", body="schema", conflict=True,
                  description=(
        "Returns the schema's global id. The version waits for a data engineer's approval; the same schema "
        "registered again (however it is written) returns the same id."))
    def post(self, request, subject: str):
        """Register: create a version in review (or return the id of the same schema already there)."""
        raw = _schema_from_body(request.data)
        selectors.schema_parse(raw)  # an invalid schema must not create the subject first
        with transaction.atomic():  # a refused registration leaves no new, empty subject behind
            contract = services.contract_for_subject_or_create(actor=request.user, subject=subject)
            version, _ = services.contract_version_submit(
                actor=request.user, contract=contract, schema=raw, submit_for_review=True, inherit_mapping=True,
                change_summary="Registered through the Schema Registry API.",
            )
        return Response({"id": version.schema_id, "subject": contract.subject, "version": version.version})


class SubjectLookupApi(RegistryApi):
    """POST /subjects/{s}: is this schema registered under the subject?"""

    @registry_doc("lookup", "Is this schema registered under the subject?", body="schema")
    def post(self, request, subject: str):
        raw = _schema_from_body(request.data)
        contract = selectors.contract_by_subject(subject)
        parsed = selectors.schema_parse(raw)
        found = (
            contract.versions.filter(schema__normalized_fingerprint=services.schema_normalized_fingerprint(parsed))
            .select_related("schema").order_by("-version").first()
        )
        if found is None:
            raise RegistryError(404, 40403, f"Schema not found under subject '{subject}'.")
        return Response(_version_body(found))


class SubjectVersionApi(RegistryApi):
    @registry_doc("version_get", "Get a version (a number, `latest` or -1)", approved=True)
    def get(self, request, subject: str, version: str):
        contract = selectors.contract_by_subject(subject)
        return Response(_version_body(_version_lookup(contract, version, approved_only=_approved_only(request))))


class SubjectVersionSchemaApi(RegistryApi):
    """GET /subjects/{s}/versions/{v}/schema: the bare schema."""

    renderer_classes = [renderers.JSONRenderer, RegistryJSONRenderer, RegistryGenericJSONRenderer]

    @registry_doc("version_schema_get", "Get a version's bare schema", approved=True)
    def get(self, request, subject: str, version: str):
        contract = selectors.contract_by_subject(subject)
        found = _version_lookup(contract, version, approved_only=_approved_only(request))
        return Response(orjson.loads(found.schema.schema))


class SchemaByIdApi(RegistryApi):
    @registry_doc("schema_get", "Get a schema by its global id")
    def get(self, request, schema_id: int):
        if schema_id > 2**63 - 1:
            raise RegistryError(404, 40403, f"Schema {schema_id} not found.")
        try:
            schema = selectors.schema_by_id(schema_id)
        except ContractError as err:
            raise RegistryError(404, 40403, f"Schema {schema_id} not found.") from err
        return Response({"schema": schema.schema})


class SchemaSubjectsApi(RegistryApi):
    @registry_doc("schema_subjects_list", "List the subjects that use a schema id")
    def get(self, request, schema_id: int):
        if schema_id > 2**63 - 1:
            raise RegistryError(404, 40403, f"Schema {schema_id} not found.")
        versions = ContractVersion.objects.filter(schema_id=schema_id).select_related("contract")
        subjects = sorted({v.contract.subject for v in versions})
        if not subjects:
            raise RegistryError(404, 40403, f"Schema {schema_id} not found.")
        return Response(subjects)


def _check_response(check: selectors.ContractCheck, verbose: bool) -> Response:
    if check.schema_errors:
        raise RegistryError(422, 42201, check.schema_errors[0]["message"])
    body: dict[str, Any] = {"is_compatible": check.compatible}
    if verbose:
        body["messages"] = [
            f"{c['severity'].upper()} {c['rule']} at {c['path']}: {c['message']}"
            for c in check.changes if c["severity"] == "error"
        ]
    return Response(body)


class CompatibilityVersionApi(RegistryApi):
    @registry_doc("compatibility_version_check", "Check a schema against one version", body="schema")
    def post(self, request, subject: str, version: str):
        raw = _schema_from_body(request.data)
        contract = selectors.contract_by_subject(subject)
        target = _version_lookup(contract, version)
        # Against one named version the mode's direction applies, without its transitive scope.
        mode = contract.compatibility.replace("_TRANSITIVE", "")
        check = selectors.contract_check(contract=contract, schema=raw, against=[target], mode=mode)
        return _check_response(check, _is_true(request.query_params.get("verbose")))


class CompatibilitySubjectApi(RegistryApi):
    @registry_doc("compatibility_subject_check", "Check a schema against the subject's mode", body="schema")
    def post(self, request, subject: str):
        raw = _schema_from_body(request.data)
        contract = selectors.contract_by_subject(subject)
        check = selectors.contract_check(contract=contract, schema=raw)
        return _check_response(check, _is_true(request.query_params.get("verbose")))


class SubjectConfigApi(RegistryApi):
    @registry_doc("subject_config_get", "Get a subject's compatibility level")
    def get(self, request, subject: str):
        contract = selectors.contract_by_subject(subject)
        return Response({"compatibilityLevel": contract.compatibility})

    @registry_doc("subject_config_set", "Set a subject's compatibility level (creates the subject if new)",
                 body="config")
    def put(self, request, subject: str):
        data = request.data if isinstance(request.data, dict) else {}
        given = [data[key] for key in ("compatibility", "compatibilityLevel") if key in data]
        if len(given) > 1:
            raise RegistryError(422, 42203, "Send the level as 'compatibility' or 'compatibilityLevel', not both.")
        level = given[0] if given else None
        services.compatibility_level_parse(level)  # a bad level must not create the subject first
        # As in Confluent's registry, a subject's level may be set before its first version: that creates
        # the subject, under the same team rules as a registration.
        with transaction.atomic():
            contract = services.contract_for_subject_or_create(actor=request.user, subject=subject)
            services.contract_compatibility_set(actor=request.user, contract=contract, level=level)
        return Response({"compatibility": contract.compatibility})


class GlobalConfigApi(RegistryApi):
    @registry_doc("global_config_get", "Get the global level (BACKWARD_TRANSITIVE)")
    def get(self, request):
        return Response({"compatibilityLevel": DEFAULT_LEVEL})

    @registry_doc("global_config_set", "Set the global level: refused, it is fixed", body="config")
    def put(self, request):
        raise RegistryError(403, 40301, "The global default (BACKWARD_TRANSITIVE) is fixed; set levels per subject.")


class SchemaTypesApi(RegistryApi):
    @registry_doc("schema_types_list", "List schema types (AVRO only)")
    def get(self, request):
        return Response(["AVRO"])


class UnknownRegistryPathApi(RegistryApi):
    """Anything else under /registry/: a registry-style 404, so clients show a real message."""

    schema = None  # a catch-all, not an endpoint
    permission_classes: list = []

    def _not_found(self, request, *args, **kwargs):
        raise RegistryError(404, 404, f"No such Schema Registry endpoint here: {request.path} "
                                      "(this server implements a subset; see the README).")

    get = post = put = delete = _not_found
