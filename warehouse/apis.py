"""REST API v1 of the curated models: the model price catalog, recompute requests, model runs.

Input serializers check shape only (a field is there, a time parses); the services decide what is
valid and allowed. Every refusal is JSON ``{"error", "message", "details"}`` whose message names the
field, and ``details`` maps the field to its messages as DRF's validation errors do.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from portal.api_errors import ApiError, ApiView, validated_body
from portal.openapi import error_responses
from portal.roles import is_data_engineer
from warehouse import selectors, services
from warehouse.models import ModelPrice, ModelRun, PriceRecompute
from warehouse.services import TOKEN_KIND_VALUES

NOT_ALLOWED = "Only data engineers and admins may change model prices or ask for a recompute."


def api_error(err: services.CatalogError) -> ApiError:
    # details has DRF's validation shape ({field: [messages]}) so clients read both kinds of 400 alike.
    return ApiError(err.code, err.message, status_code=err.status_code,
                    details={err.field: [err.message]} if err.field else None)


class CatalogErrorsMixin:
    """Turn catalog refusals into API errors in one place."""

    def handle_exception(self, exc: Exception):
        if isinstance(exc, services.CatalogError):
            exc = api_error(exc)
        return super().handle_exception(exc)  # type: ignore[misc]


def _require_engineer(request: Any) -> None:
    # Checked before the body, so a reader learns they may not write rather than how to fix the body.
    if not is_data_engineer(request.user):
        raise ApiError("forbidden", NOT_ALLOWED, status_code=403)



@extend_schema_field(OpenApiTypes.NUMBER)
class PriceValueField(serializers.Field):
    """A JSON number or a string holding one, passed on as given (the service parses it exactly)."""

    def to_internal_value(self, data: Any) -> Any:
        return data

    def to_representation(self, value: Any) -> Any:
        return value


# --- output shapes --------------------------------------------------------------------------------

class PriceOut(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", allow_null=True, default=None)

    class Meta:
        model = ModelPrice
        fields = ["model", "token_kind", "usd_per_million", "effective_from", "version", "note", "created_by",
                  "created_at"]


class RecomputeOut(serializers.ModelSerializer):
    requested_by = serializers.CharField(source="requested_by.username", allow_null=True, default=None)

    class Meta:
        model = PriceRecompute
        fields = ["id", "model", "from_time", "status", "requested_by", "requested_at", "done_run_id", "done_at"]


class ModelRunPartOut(serializers.ModelSerializer):
    class Meta:
        model = ModelRun
        fields = ["model", "status", "rows_changed", "started_at", "finished_at", "duration_ms", "error", "detail"]


class ModelRunOut(serializers.Serializer):
    run_id = serializers.UUIDField()
    trigger = serializers.CharField()
    status = serializers.CharField(help_text="running, failed (any model failed), succeeded, or skipped")
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    duration_ms = serializers.IntegerField(allow_null=True)
    rows_changed = serializers.IntegerField()
    models = ModelRunPartOut(many=True)


@extend_schema_field({"type": "string", "enum": list(TOKEN_KIND_VALUES)})
class TokenKindField(serializers.CharField):
    """Checked by the service, whose refusal lists the kinds."""


# --- prices ---------------------------------------------------------------------------------------

class PriceIn(serializers.Serializer):
    model = serializers.CharField(allow_blank=True, trim_whitespace=False, help_text=(
        "The model name exactly as requests carry it, e.g. gpt-4.1-mini: 1–128 characters, no spaces or "
        "control characters"))
    token_kind = TokenKindField(allow_blank=True)
    usd_per_million = PriceValueField()
    effective_from = serializers.DateTimeField(help_text="UTC, the start of an hour")
    note = serializers.CharField(required=False, allow_blank=True, default="")
    recompute = serializers.BooleanField(required=False, default=False,
                                         help_text="Required for a price starting before the current hour: "
                                                   "also asks the next model run to re-price those hours")


class PriceListApi(CatalogErrorsMixin, ApiView):
    @extend_schema(parameters=[OpenApiParameter("model", str, description="Only this model's prices")],
                   responses=PriceOut(many=True), summary="The model price catalog, newest change first")
    def get(self, request):
        model = (request.query_params.get("model") or "").strip() or None
        return Response(PriceOut(selectors.price_history(model=model), many=True).data)

    @extend_schema(
        request=PriceIn,
        responses={201: inline_serializer("PriceAdded", {"price": PriceOut(),
                                                         "recompute": RecomputeOut(allow_null=True)}),
                   **error_responses(409)},
        summary="Add a price (data engineers); a backdated price needs recompute=true",
    )
    def post(self, request):
        _require_engineer(request)
        data = validated_body(PriceIn, request.data)
        price, recompute = services.price_add(
            actor=request.user, model=data["model"], token_kind=data["token_kind"],
            usd_per_million=data["usd_per_million"], effective_from=data["effective_from"], note=data["note"],
            recompute=data["recompute"],
        )
        return Response({"price": PriceOut(price).data,
                         "recompute": RecomputeOut(recompute).data if recompute else None},
                        status=status.HTTP_201_CREATED)


class RecomputeIn(serializers.Serializer):
    model = serializers.CharField(required=False, allow_blank=True, default="",
                                  help_text="Blank or absent: every model")
    from_time = serializers.DateTimeField(help_text="UTC; widened to the start of its hour")


class PriceRecomputeApi(CatalogErrorsMixin, ApiView):
    @extend_schema(request=RecomputeIn, responses={201: RecomputeOut},
                   summary="Ask the next model run to re-price past hours (data engineers)")
    def post(self, request):
        _require_engineer(request)
        data = validated_body(RecomputeIn, request.data)
        recompute = services.price_recompute_request(actor=request.user, model=data["model"],
                                                     from_time=data["from_time"])
        return Response(RecomputeOut(recompute).data, status=status.HTTP_201_CREATED)


# --- model runs -----------------------------------------------------------------------------------

class ModelRunListApi(ApiView):
    @extend_schema(parameters=[OpenApiParameter("limit", {"type": "integer", "minimum": 1, "maximum": 500,
                                                          "default": 20},
                                                description="Runs to return (1–500, default 20)")],
                   responses=ModelRunOut(many=True), summary="The latest model runs, each with its models")
    def get(self, request):
        raw = request.query_params.get("limit") or "20"
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 3 and 1 <= int(raw) <= 500):
            message = "limit must be a whole number from 1 to 500."
            raise ApiError("invalid_limit", message, details={"limit": [message]})
        return Response(ModelRunOut(selectors.model_runs_recent(int(raw)), many=True).data)
