"""Signed-in people without a role see one page asking for a role, whatever portal page they open.

Gate by default, so a page added later is covered without remembering to. Left through: the home page
(which is that page for them), signing in and out, the Django admin (staff only anyway), the API and
the registry (DRF views: `portal.permissions.HasPortalRole` answers there, in JSON) and the collectors
(write keys, not people).
"""

from __future__ import annotations

from django.shortcuts import render

from portal.roles import has_portal_role

OPEN_URL_NAMES = frozenset({"home", "login", "logout"})


def _is_gated(request, view_func) -> bool:
    match = request.resolver_match
    if match is None or match.url_name in OPEN_URL_NAMES or "admin" in match.namespaces:
        return False
    if hasattr(view_func, "cls"):  # a DRF view: its permission classes decide
        return False
    return not (match.url_name or "").startswith("collect_")


class RoleRequiredMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        # The path first: the collectors' hot path never loads a session or a user.
        if not _is_gated(request, view_func):
            return None
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated or has_portal_role(user):
            return None
        return render(request, "portal/no_role.html", status=403)
