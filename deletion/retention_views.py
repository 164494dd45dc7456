"""The retention runs page (privacy officers, data engineers, admins)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from portal.roles import Role, is_data_engineer, user_roles

RUNS_SHOWN = 100


def can_see_retention(user) -> bool:
    return is_data_engineer(user) or Role.PRIVACY in user_roles(user)


@require_GET
@login_required
def retention_runs(request: HttpRequest) -> HttpResponse:
    from django.conf import settings

    from deletion.retention import policy_from_settings, retention_runs_recent

    if not can_see_retention(request.user):
        raise PermissionDenied("The retention runs are for privacy officers, data engineers and admins.")
    policy = policy_from_settings()
    return render(request, "deletion/retention_runs.html", {
        "runs": retention_runs_recent(RUNS_SHOWN), "runs_shown": RUNS_SHOWN,
        "policy": [("archive", "Raw archive", policy.archive, "whole objects of older dt= partitions"),
                   ("landing", "Landing table", policy.landing, "rows already merged into CANONICAL.EVENTS"),
                   ("quarantine", "Quarantine payloads", policy.quarantine,
                    "payload and reason text cleared; the row and its reason code stay"),
                   ("curated", "Canonical and curated tables", policy.curated, "rows older than that")],
        "interval_hours": round(float(getattr(settings, "RETENTION_RUN_INTERVAL_S", 86400)) / 3600, 1),
    })
