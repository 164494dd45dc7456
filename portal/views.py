"""The home dashboard (what to do next, by role), the audit log (admins) and each person's API tokens."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from contracts import page_selectors as contract_pages
from contracts.line_diff import top_level_changes
from contracts.models import VersionStatus
from portal import page_selectors, selectors, services, token_rules
from portal.forms import ApiTokenCreateForm
from portal.roles import Role, has_portal_role, is_admin, is_data_engineer, may_handle_deletions, user_roles

AUDIT_PAGE_SIZE = 50


@require_GET
@login_required
def home(request: HttpRequest) -> HttpResponse:
    user = request.user
    if not has_portal_role(user):
        # No sources, contracts or counts: only what to ask for (hostile-input review D15).
        return render(request, "portal/no_role.html")
    roles = user_roles(user)
    context = {
        "counts": contract_pages.dashboard_counts(),
        "is_platform": Role.PLATFORM in roles or bool(user.teams.exists()),
        "is_engineer": is_data_engineer(user),
        "is_privacy": Role.PRIVACY in roles,
        # "Not on a team yet" is for platform team members only; other roles do not join product teams.
        "needs_team": Role.PLATFORM in roles and not user.teams.exists(),
        "is_admin": is_admin(user),
        "teams": user.teams.all(),
        "team_sources": contract_pages.team_sources(user),
        "my_drafts": contract_pages.versions_authored_by(user, statuses=[VersionStatus.DRAFT]),
        "my_in_review": contract_pages.versions_authored_by(user, statuses=[VersionStatus.IN_REVIEW]),
        "my_reviewed": contract_pages.versions_authored_by(
            user, statuses=[VersionStatus.APPROVED, VersionStatus.REJECTED], limit=5),
    }
    from quality.selectors import platform_health

    context["health"] = platform_health()  # the platform's grade at a glance (quality scorecards)
    if context["is_engineer"]:
        context["waiting_for_me"] = contract_pages.review_queue_waiting_for(user).count()
    if context["is_admin"]:
        context["recent_audit"] = list(selectors.audit_records()[:5])
    if may_handle_deletions(user):
        # the privacy officer's home leads with the deletion SLA (issue 12)
        from deletion.selectors import sla_overview

        context["deletion_sla"] = sla_overview(timezone.now())
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


# --- API tokens ------------------------------------------------------------------------------------

def _token_rows(user) -> list[dict]:
    now = timezone.now()
    return [{"token": token,
             "state": token_rules.token_state(revoked_at=token.revoked_at, expires_at=token.expires_at, now=now)}
            for token in selectors.api_tokens_of(user)]


@never_cache  # the POST answer holds a new token: no cache (or back button) may keep it
@require_http_methods(["GET", "POST"])
@login_required
def api_tokens(request: HttpRequest) -> HttpResponse:
    """List your tokens and create one. A new token is shown in this response only: it is never put in
    the session, a message or a log, so coming back later cannot show it again (a browser reload posts
    the form again and makes a second token: see docs/decisions.md)."""
    form = ApiTokenCreateForm(request.POST or None)
    created, new_token, status = None, None, 200
    if request.method == "POST":
        if form.is_valid():
            try:
                expires_at = token_rules.expiry_from_choice(form.cleaned_data["expires"], timezone.now())
                created, new_token = services.api_token_create(
                    user=request.user, name=form.cleaned_data["name"], expires_at=expires_at)
            except token_rules.TokenRequestError as err:
                form.add_error(None, str(err))
        if created is None:
            status = 400
        else:
            form = ApiTokenCreateForm()  # an empty form for the next one
    return render(request, "portal/api_tokens.html", {
        "form": form, "rows": _token_rows(request.user), "created": created, "new_token": new_token,
    }, status=status)


@require_http_methods(["GET", "POST"])
@login_required
def api_token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    """Confirm, then revoke one of your own tokens (another person's is a 404: we do not say it exists)."""
    token = get_object_or_404(selectors.api_tokens_of(request.user), pk=token_id)
    if request.method == "POST":
        already = token.revoked_at is not None
        services.api_token_revoke(actor=request.user, token=token)
        if already:
            messages.info(request, f"Token '{token.name}' was already revoked.")
        else:
            messages.success(request, f"Token '{token.name}' ({token.prefix}…) revoked: requests using it are "
                                      "now refused.")
        return redirect("api_tokens")
    return render(request, "portal/api_token_revoke.html", {"token": token})
