"""The home dashboard (what to do next, by role) and the audit log (admins)."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from contracts import page_selectors as contract_pages
from contracts.line_diff import top_level_changes
from contracts.models import VersionStatus
from portal import page_selectors, selectors
from portal.roles import Role, is_admin, is_data_engineer, user_roles

AUDIT_PAGE_SIZE = 50


@require_GET
@login_required
def home(request: HttpRequest) -> HttpResponse:
    user = request.user
    roles = user_roles(user)
    context = {
        "counts": contract_pages.dashboard_counts(),
        "is_platform": Role.PLATFORM in roles or bool(user.teams.exists()),
        "is_engineer": is_data_engineer(user),
        "is_privacy": Role.PRIVACY in roles,
        "is_admin": is_admin(user),
        "teams": user.teams.all(),
        "team_sources": contract_pages.team_sources(user),
        "my_drafts": contract_pages.versions_authored_by(user, statuses=[VersionStatus.DRAFT]),
        "my_in_review": contract_pages.versions_authored_by(user, statuses=[VersionStatus.IN_REVIEW]),
        "my_reviewed": contract_pages.versions_authored_by(
            user, statuses=[VersionStatus.APPROVED, VersionStatus.REJECTED], limit=5),
    }
    if context["is_engineer"]:
        context["waiting_for_me"] = contract_pages.review_queue_waiting_for(user).count()
    if context["is_admin"]:
        context["recent_audit"] = list(selectors.audit_records()[:5])
    return render(request, "portal/home.html", context)


@require_GET
@login_required
def audit_log(request: HttpRequest) -> HttpResponse:
    if not is_admin(request.user):
        raise PermissionDenied("The audit log is for admins.")
    filters = {key: request.GET.get(key, "").strip() for key in ("actor", "action", "object_type")}
    records = selectors.audit_records(
        actor=filters["actor"] or None, action=filters["action"] or None,
        object_type=filters["object_type"] or None,
    )
    page = Paginator(records, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    rows = [{"record": record, "changes": top_level_changes(record.before, record.after)} for record in page]
    # Page links keep the filters; only the page number changes.
    query = urlencode({key: value for key, value in filters.items() if value})
    return render(request, "portal/audit_log.html", {
        "page": page, "rows": rows, "filters": filters, "options": page_selectors.audit_filter_options(),
        "filter_query": query,
    })
