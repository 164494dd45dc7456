"""Signed-in people without a role see one page asking for a role, whatever portal page they open.

Gate by default, so a page added later is covered without remembering to. Left through: the home page
(which is that page for them), signing in and out, the Django admin (staff only anyway), the API and
the registry (DRF views: `portal.permissions.HasPortalRole` answers there, in JSON) and the collectors
(write keys, not people).
"""

from __future__ import annotations

import json

from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.views.defaults import page_not_found

from portal.roles import has_portal_role

OPEN_URL_NAMES = frozenset({"home", "login", "logout", "admin_login"})


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


# --- NUL characters in the address --------------------------------------------------------------------

#: Paths that answer JSON (and the registry's own error shape); everything else is a page.
_JSON_PREFIXES = ("/api/", "/collect/")
_REGISTRY_PREFIX = "/registry/"


def _json_refusal(path: str, status: int, code: str, message: str) -> HttpResponse:
    if path.startswith(_REGISTRY_PREFIX):
        body = {"error_code": 40400 if status == 404 else 40000, "message": message}
        return HttpResponse(json.dumps(body), status=status, content_type="application/vnd.schemaregistry.v1+json")
    return HttpResponse(json.dumps({"error": code, "message": message}), status=status,
                        content_type="application/json")


def nul_refusal(request) -> HttpResponse | None:
    """The answer to a NUL character (%00) in the path or a query parameter, before any view runs, or None.

    No name, subject or filter value the portal stores can contain one, and PostgreSQL refuses it in a
    query (a 500 otherwise). The path gets 404 (nothing lives there: a collector's unknown source stays
    a 404), a query parameter 400 naming it."""
    path = request.path
    json_answer = path.startswith((*_JSON_PREFIXES, _REGISTRY_PREFIX))
    if "\x00" in path:
        message = "Nothing lives at an address with a NUL character (%00) in it."
        if json_answer:
            return _json_refusal(path, 404, "not_found", message)
        return page_not_found(request, Http404(message))  # the portal's 404 page (this runs before any view)
    bad = next((key for key, values in request.GET.lists()
                if "\x00" in key or any("\x00" in value for value in values)), None)
    if bad is None:
        return None
    message = (f"The query parameter '{bad.replace(chr(0), '%00')}' contains a NUL character (%00), "
               "which no parameter accepts.")
    if json_answer:
        return _json_refusal(path, 400, "invalid_query", message)
    return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")


# --- Content-Security-Policy and Permissions-Policy ---------------------------------------------------

#: Every page's scripts and styles come from the portal's own static files: no inline script, no on*=
#: handler, no inline <style> (htmx is told not to inject its indicator styles: base.html), no plugin, no
#: framing, forms post only here. Images may be data: URLs (Pico's icons, the empty favicon, Swagger UI).
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'self'",
    "frame-ancestors 'none'",
    "form-action 'self'",
])
#: The portal uses none of these browser features.
PERMISSIONS_POLICY = ", ".join(f"{feature}=()" for feature in (
    "accelerometer", "camera", "display-capture", "geolocation", "gyroscope", "magnetometer", "microphone",
    "midi", "payment", "publickey-credentials-get", "screen-wake-lock", "serial", "usb", "xr-spatial-tracking",
))


def _probe_answer(request):
    """``/healthz`` and ``/metrics`` answered here, before Django's host check: a load balancer, a Kubernetes
    probe or a Prometheus scrape addresses the instance by its IP, which ALLOWED_HOSTS does not list (and
    should not: every other page must keep refusing unknown hosts). Neither builds a URL from the host."""
    if request.path == "/healthz":
        from portal.health import healthz

        return healthz(request)
    if request.path == "/metrics":
        from portal.prometheus import metrics

        return metrics(request)
    return None


class RequestGuardMiddleware:
    """Refuses a NUL character in the address (``nul_refusal``) and puts the Content-Security-Policy and
    Permissions-Policy on every answer (docs/decisions.md, "Content-Security-Policy"): a future escaping
    slip cannot run script, and a page cannot be framed. One middleware for both: each one adds stack
    frames under every view, and deeply nested JSON bodies are parsed near Python's recursion limit."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = nul_refusal(request) or _probe_answer(request) or self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        return response
