"""Quality pages: the latest checks per table, a table's checks with their failing rows (masked,
scoped to the viewer's sources), the generated Soda contract, and "Run checks now".

Anyone with a portal role reads the pages; data engineers and admins see every failed-row sample and
may queue a run; a team member sees the samples of their own sources' rows only (quality.selectors).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from portal.roles import is_data_engineer
from quality import selectors, services


def _table_or_404(table: str) -> str:
    from quality.soda_contracts import quality_table, table_label

    try:
        return table_label(quality_table(table))
    except ValueError as err:
        raise Http404(str(err)) from err


@require_GET
@login_required
def quality_overview(request: HttpRequest) -> HttpResponse:
    return render(request, "quality/overview.html", {
        "tables": selectors.table_overview(), "can_run": is_data_engineer(request.user)})


@require_GET
@login_required
def quality_table(request: HttpRequest, table: str) -> HttpResponse:
    label = _table_or_404(table)
    detail = selectors.table_detail(label, user=request.user)
    current = selectors.contract_generated(label)
    latest = detail["latest"]
    return render(request, "quality/table.html", {
        **detail, "can_run": is_data_engineer(request.user), "contract": current,
        "contract_changed": bool(latest and latest.contract_fingerprint
                                 and latest.contract_fingerprint != current.fingerprint)})


@require_GET
@login_required
def quality_contract_yaml(request: HttpRequest, table: str) -> HttpResponse:
    """The generated contract as the registry stands now; ``?download=1`` saves it as a file."""
    label = _table_or_404(table)
    contract = selectors.contract_generated(label)
    response = HttpResponse(contract.yaml, content_type="text/plain; charset=utf-8")
    if request.GET.get("download"):
        filename = label.lower().replace(".", "_") + ".contract.yml"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@require_POST
@login_required
def quality_run_now(request: HttpRequest) -> HttpResponse:
    table = (request.POST.get("table") or "").strip()
    label = _table_or_404(table) if table else None
    try:
        services.quality_run_request(actor=request.user, tables=[label] if label else None)
    except services.QualityRunForbidden as err:
        raise PermissionDenied(str(err)) from err
    what = label or "every table"
    messages.success(request, f"Checks of {what} queued on the quality queue: the page shows them as queued "
                              "until a worker has run them.")
    return redirect("quality_table", table=label) if label else redirect("quality_overview")


@require_GET
@login_required
def quality_scorecards(request: HttpRequest) -> HttpResponse:
    """Every scorecard's latest grade: the platform, the viewer's own sources first, the other sources and
    the contract versions."""
    return render(request, "quality/scorecards.html", {"cards": selectors.scorecards_latest(user=request.user)})


@require_GET
@login_required
def quality_scorecard(request: HttpRequest, kind: str, subject: str) -> HttpResponse:
    """One scorecard: its grade and reasons with since-when, the 30-day history chart, the failing checks
    (measured against threshold, failed rows masked and scoped) and the quarantined records behind it."""
    from django.utils import timezone

    from quality.models import ScorecardSnapshot

    if kind not in ScorecardSnapshot.Kind.values:
        raise Http404("No such kind of scorecard (platform, source or contract).")
    snapshot = selectors.scorecard_latest(kind, subject)
    if snapshot is None:
        raise Http404(f"No scorecard for {kind} {subject!r} yet.")
    return render(request, "quality/scorecard.html", {
        "card": snapshot, "history": selectors.scorecard_history(kind, subject, now=timezone.now()),
        "checks": selectors.scorecard_check_rows(snapshot, user=request.user),
        "quarantined": selectors.scorecard_quarantined(snapshot, user=request.user),
        "scope": selectors.sample_scope(request.user)})
