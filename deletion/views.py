"""Deletion pages (privacy officers and admins only; anyone else gets 403): the SLA page with every ticket's
clock, filing, a ticket's expansion and progress, its evidence (page and JSON download)."""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from deletion import selectors, services
from deletion.forms import RemoveIdentifierForm, TicketFileForm
from deletion.models import DeletionTicket, TicketStatus
from portal.roles import may_handle_deletions

FORBIDDEN = "Deletion requests are handled by privacy officers and admins only."


def _require_officer(request: HttpRequest) -> None:
    if not may_handle_deletions(request.user):
        raise PermissionDenied(FORBIDDEN)


def _ticket_or_404(pk) -> DeletionTicket:
    try:
        return selectors.ticket_get(pk)
    except DeletionTicket.DoesNotExist as err:
        raise Http404("No such deletion ticket.") from err


@require_GET
@login_required
def deletion_list(request: HttpRequest) -> HttpResponse:
    _require_officer(request)
    return render(request, "deletion/sla.html", {"sla": selectors.sla_overview(timezone.now())})


@require_http_methods(["GET", "POST"])
@login_required
def deletion_file(request: HttpRequest) -> HttpResponse:
    _require_officer(request)
    form = TicketFileForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            ticket = services.ticket_file(
                actor=request.user, regulation=data["regulation"], identifiers=data["identifiers"],
                requester_reference=data["requester_reference"], received_at=data["received_at_utc"])
        except services.DeletionError as err:
            form.add_error(err.field if err.field in form.fields else None, err.message)
        else:
            messages.success(request, f"{ticket.reference} filed. Check its expansion, then confirm it.")
            return redirect("deletion_ticket", pk=ticket.pk)
    return render(request, "deletion/file.html", {"form": form}, status=400 if form.errors else 200)


def _ticket_context(ticket: DeletionTicket) -> dict:
    now = timezone.now()
    removed = {r.get("id_key") or r.get("id_key_hash"): r for r in ticket.removals}
    # a done ticket keeps keyed hashes only (value_hash, person_id_hash): the page shows whichever it has
    rows = [{"row": row, "removal": removed.get(row.get("id_key", row.get("id_key_hash"))),
             "value": row.get("value") or row.get("value_hash", ""),
             "person": row.get("person_id") or row.get("person_id_hash") or "—"} for row in ticket.expansion]
    return {"ticket": ticket, "clock": selectors.ticket_clock(ticket, now), "rows": rows,
            "steps": list(ticket.steps.all()), "remove_form": RemoveIdentifierForm(),
            "can_change": ticket.status in (TicketStatus.FILED, TicketStatus.EXPANDED, TicketStatus.HELD),
            "running": ticket.status in (TicketStatus.CONFIRMED, TicketStatus.RUNNING)}


@require_GET
@login_required
def deletion_ticket(request: HttpRequest, pk: int) -> HttpResponse:
    _require_officer(request)
    ticket = _ticket_or_404(pk)
    return render(request, "deletion/ticket.html", _ticket_context(ticket))


@require_GET
@login_required
def deletion_ticket_progress(request: HttpRequest, pk: int) -> HttpResponse:
    """The step table, polled by htmx while the job runs."""
    _require_officer(request)
    context = _ticket_context(_ticket_or_404(pk))
    response = render(request, "deletion/_progress.html", context)
    if getattr(request, "htmx", False) and not context["running"]:
        # finished (or failed) since the page was drawn: reload it once so the header, clock and expansion
        # (hashed now) match; the reloaded page no longer polls
        response["HX-Refresh"] = "true"
    return response


def _ticket_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    _require_officer(request)
    ticket = _ticket_or_404(pk)
    try:
        if action == "expand":
            ticket = services.ticket_expand(actor=request.user, ticket=ticket)
            if ticket.expansion_error:
                messages.error(request, ticket.expansion_error)
        elif action == "remove":
            form = RemoveIdentifierForm(request.POST)
            if not form.is_valid():
                messages.error(request, "Say which identifier to remove and why.")
                return redirect("deletion_ticket", pk=ticket.pk)
            services.ticket_identifier_remove(actor=request.user, ticket=ticket,
                                              id_key=form.cleaned_data["identifier"],
                                              reason=form.cleaned_data["reason"])
            messages.success(request, "Identifier removed from the expansion; the reason is kept in the evidence.")
        elif action == "review":
            services.ticket_review_approve(actor=request.user, ticket=ticket)
            messages.success(request, "Reviewed: the ticket may now be confirmed.")
        elif action == "confirm":
            services.ticket_confirm(actor=request.user, ticket=ticket)
            messages.success(request, "Confirmed: the erasure is queued on the deletion queue.")
        elif action == "retry":
            services.ticket_retry(actor=request.user, ticket=ticket)
            messages.success(request, "Queued again: the steps already done are not redone.")
        else:
            raise Http404("Unknown action.")
    except services.DeletionError as err:
        if err.status_code == 403 and err.code == "forbidden":
            raise PermissionDenied(err.message) from err
        messages.error(request, err.message)
    return redirect("deletion_ticket", pk=ticket.pk)


@require_POST
@login_required
def deletion_ticket_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    return _ticket_action(request, pk, action)


def _evidence_or_404(ticket: DeletionTicket):
    evidence = getattr(ticket, "evidence", None) if ticket.status == TicketStatus.DONE else None
    if evidence is None:
        raise Http404(f"{ticket.reference} has no evidence yet: it is written when the erasure is done.")
    return evidence


@never_cache
@require_GET
@login_required
def deletion_evidence(request: HttpRequest, pk: int) -> HttpResponse:
    _require_officer(request)
    ticket = _ticket_or_404(pk)
    evidence = _evidence_or_404(ticket)
    if request.GET.get("format") == "json":
        services.evidence_download_record(actor=request.user, ticket=ticket)
        response = HttpResponse(json.dumps(evidence.record, indent=2, ensure_ascii=False),
                                content_type="application/json; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{ticket.reference}-evidence.json"'
        return response
    services.evidence_download_record(actor=request.user, ticket=ticket, viewed=True)
    return render(request, "deletion/evidence.html", {"ticket": ticket, "record": evidence.record})
