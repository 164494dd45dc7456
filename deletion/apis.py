"""REST API v1 of deletion tickets (privacy officers and admins; anyone else gets 403): file, get, confirm,
evidence. A ticket's expansion is shown by ``get`` right after filing; ``confirm`` may remove wrongly linked
identifiers (each with a reason) in the same call. Refusals are JSON ``{"error", "message", "details"}``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from deletion import selectors, services, subject
from deletion.erasure_types import IdentifierKind
from deletion.models import DeletionTicket, Regulation, TicketStatus
from portal.api_errors import ApiError, ApiView, validated_body
from portal.openapi import error_responses
from portal.roles import may_handle_deletions

FORBIDDEN = "Deletion requests are handled by privacy officers and admins only."


def _require_officer(request: Any) -> None:
    if not may_handle_deletions(request.user):
        raise ApiError("forbidden", FORBIDDEN, status_code=403)


def api_error(err: services.DeletionError) -> ApiError:
    return ApiError(err.code, err.message, status_code=err.status_code,
                    details={err.field: [err.message]} if err.field else None)


class DeletionErrorsMixin:
    def handle_exception(self, exc: Exception):
        if isinstance(exc, services.DeletionError):
            exc = api_error(exc)
        elif isinstance(exc, subject.IdentifierError):
            exc = ApiError("invalid_identifiers", str(exc), details={"identifiers": [str(exc)]})
        return super().handle_exception(exc)  # type: ignore[misc]


class AwareDateTimeField(serializers.DateTimeField):
    """An ISO 8601 time that must carry its UTC offset (a naive time would be read in the server's zone)."""

    def to_internal_value(self, value: Any) -> datetime:
        if not isinstance(value, str):
            self.fail("invalid", format="ISO 8601 with a UTC offset")
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise serializers.ValidationError("Not an ISO 8601 time (e.g. 2026-03-29T01:30:00+01:00).") from None
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            raise serializers.ValidationError("Give the time with its UTC offset (e.g. +01:00 or Z).")
        try:
            parsed = parsed.astimezone(UTC)
        except OverflowError:
            raise serializers.ValidationError("The time is out of range.") from None
        if parsed.year < 2000:
            raise serializers.ValidationError("The time is before 2000: check the year.")
        return parsed


class IdentifierIn(serializers.Serializer):
    kind = serializers.ChoiceField(choices=[k.value for k in IdentifierKind])
    value = serializers.CharField(max_length=subject.MAX_VALUE_LENGTH, trim_whitespace=True)


class TicketIn(serializers.Serializer):
    regulation = serializers.ChoiceField(choices=Regulation.values)
    requester_reference = serializers.CharField(max_length=200)
    received_at = AwareDateTimeField(help_text="When the request was received, ISO 8601 with its UTC offset")
    identifiers = serializers.ListField(child=IdentifierIn(), min_length=1, max_length=subject.MAX_IDENTIFIERS)


class RemovalIn(serializers.Serializer):
    identifier = serializers.CharField(max_length=600, help_text="The linked identifier's id_key (kind:value)")
    reason = serializers.CharField(max_length=services.MAX_REASON_LENGTH)


class ConfirmIn(serializers.Serializer):
    removals = serializers.ListField(child=RemovalIn(), required=False, default=list, max_length=200,
                                     help_text="Wrongly linked identifiers to leave out, each with a reason")


class StepOut(serializers.Serializer):
    name = serializers.CharField()
    store = serializers.CharField()
    status = serializers.CharField()
    attempts = serializers.IntegerField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    result = serializers.JSONField(allow_null=True)
    error = serializers.CharField(allow_blank=True)


class TicketOut(serializers.Serializer):
    id = serializers.IntegerField()
    reference = serializers.CharField()
    regulation = serializers.CharField()
    requester_reference = serializers.CharField()
    received_at = serializers.DateTimeField()
    due_at = serializers.DateTimeField()
    status = serializers.ChoiceField(choices=TicketStatus.values)
    sla_state = serializers.CharField()
    clock = serializers.CharField()
    identifiers = serializers.ListField(child=serializers.DictField(), help_text="Hashed once the ticket is done")
    expansion = serializers.ListField(child=serializers.DictField())
    held_reasons = serializers.ListField(child=serializers.CharField())
    expansion_error = serializers.CharField(allow_blank=True)
    removals = serializers.ListField(child=serializers.DictField())
    reviewed_by = serializers.CharField(allow_null=True)
    confirmed_by = serializers.CharField(allow_null=True)
    error = serializers.CharField(allow_blank=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    steps = StepOut(many=True)


def _ticket_out(ticket: DeletionTicket) -> dict:
    clock = selectors.ticket_clock(ticket, timezone.now())
    return TicketOut({
        "id": ticket.pk, "reference": ticket.reference, "regulation": ticket.regulation,
        "requester_reference": ticket.requester_reference, "received_at": ticket.received_at,
        "due_at": ticket.due_at, "status": ticket.status, "sla_state": clock.state.value, "clock": clock.clock,
        "identifiers": ticket.identifiers, "expansion": ticket.expansion, "held_reasons": ticket.held_reasons,
        "expansion_error": ticket.expansion_error, "removals": ticket.removals,
        "reviewed_by": ticket.reviewed_by.get_username() if ticket.reviewed_by else None,
        "confirmed_by": ticket.confirmed_by.get_username() if ticket.confirmed_by else None,
        "error": ticket.error, "finished_at": ticket.finished_at,
        "steps": list(ticket.steps.all()),
    }).data


TICKET_ID = OpenApiParameter("pk", {"type": "integer", "minimum": 1}, OpenApiParameter.PATH,
                             description="The ticket's number (DEL-000042 is 42)")


def _ticket(pk: Any) -> DeletionTicket:
    try:
        return selectors.ticket_get(pk)
    except DeletionTicket.DoesNotExist:
        raise ApiError("not_found", f"No deletion ticket {pk}.", status_code=404) from None


class TicketFileApi(DeletionErrorsMixin, ApiView):
    @extend_schema(request=TicketIn, responses={201: TicketOut}, operation_id="deletion_tickets_create",
                   summary="File a deletion ticket (privacy officers and admins); the answer shows its expansion")
    def post(self, request):
        _require_officer(request)
        data = validated_body(TicketIn, request.data)
        identifiers = subject.identifiers_parse((row["kind"], row["value"]) for row in data["identifiers"])
        ticket = services.ticket_file(actor=request.user, regulation=data["regulation"], identifiers=identifiers,
                                      requester_reference=data["requester_reference"],
                                      received_at=data["received_at"])
        return Response(_ticket_out(ticket), status=status.HTTP_201_CREATED)


class TicketApi(DeletionErrorsMixin, ApiView):
    @extend_schema(responses={200: TicketOut}, operation_id="deletion_tickets_retrieve", parameters=[TICKET_ID],
                   summary="A deletion ticket: its SLA clock, expansion and step progress")
    def get(self, request, pk: str):
        _require_officer(request)
        return Response(_ticket_out(_ticket(pk)))


class TicketConfirmApi(DeletionErrorsMixin, ApiView):
    @extend_schema(request=ConfirmIn, responses={202: TicketOut, **error_responses(409)},
                   operation_id="deletion_tickets_confirm", parameters=[TICKET_ID],
                   summary="Confirm a ticket's expansion (leaving out removals, each with a reason) and queue "
                           "the erasure; a held ticket needs a second officer's review in the portal first")
    def post(self, request, pk: str):
        _require_officer(request)
        ticket = _ticket(pk)
        data = validated_body(ConfirmIn, request.data if request.data else {})
        with transaction.atomic():  # all or nothing: a refused confirmation keeps none of the removals
            for removal in data["removals"]:
                ticket = services.ticket_identifier_remove(actor=request.user, ticket=ticket,
                                                           id_key=removal["identifier"], reason=removal["reason"])
            ticket = services.ticket_confirm(actor=request.user, ticket=ticket)
        return Response(_ticket_out(ticket), status=status.HTTP_202_ACCEPTED)


class TicketEvidenceApi(DeletionErrorsMixin, ApiView):
    @extend_schema(responses={200: OpenApiTypes.OBJECT}, operation_id="deletion_tickets_evidence",
                   parameters=[TICKET_ID],
                   summary="The evidence record of a done ticket (every store, removed, verification, remaining)")
    def get(self, request, pk: str):
        _require_officer(request)
        ticket = _ticket(pk)
        evidence = getattr(ticket, "evidence", None) if ticket.status == TicketStatus.DONE else None
        if evidence is None:
            raise ApiError("not_found", f"{ticket.reference} has no evidence yet: it is written when the erasure "
                           "is done.", status_code=404)
        services.evidence_download_record(actor=request.user, ticket=ticket)
        return Response(evidence.record)
