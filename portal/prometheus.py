"""``GET /metrics``: the platform's metrics in the Prometheus text format (docs/metrics.md).

Who may scrape: with ``METRICS_TOKEN`` set, only a client sending ``Authorization: Bearer <METRICS_TOKEN>``
(production: Prometheus's ``authorization.credentials_file``); without it, a client on the loopback (the
embedded default, a sidecar). Anyone else gets 403 in the project's JSON error shape: the series
name sources, contract versions and shards, which are not for the whole network. (Decision in
docs/decisions.md, "/metrics answers the loopback, or a bearer token".)

With ``PROMETHEUS_MULTIPROC_DIR`` the process-counted series are the sum of every process's files in
that directory (prometheus_client's multiprocess mode); without it, this process's own counts.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_safe

# prometheus_client is imported on the first scrape, never when the URLs load: it picks single- or
# multiprocess mode from PROMETHEUS_MULTIPROC_DIR when imported, and run_embedded sets that variable in
# its handle(), after Django's checks have loaded the URLs


def multiproc_dir() -> str:
    """The shared directory of the multiprocess mode ("" when this process counts alone)."""
    return getattr(settings, "PROMETHEUS_MULTIPROC_DIR", "") or os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


class _ThisProcess:
    """The process-counted series as this process has them (single-process mode)."""

    def collect(self) -> Iterator:
        from ingest_workers.metrics import REGISTRY

        return iter(REGISTRY.collect())


def metrics_registry() -> Any:
    """A registry for one scrape: the process-counted series and the gauges read from the database."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    from ingest_workers.metrics import PipelineStateCollector

    registry = CollectorRegistry(auto_describe=False)
    path = multiproc_dir()
    if path:
        MultiProcessCollector(registry, path=path)
    else:
        registry.register(_ThisProcess())
    registry.register(PipelineStateCollector())
    return registry


def _client_allowed(request: HttpRequest) -> bool:
    token = getattr(settings, "METRICS_TOKEN", "")
    if token:
        # with a token set, only the token: behind a reverse proxy on the same host every request comes
        # from the loopback, so the address proves nothing there
        sent = request.headers.get("Authorization", "")
        return sent.startswith("Bearer ") and hmac.compare_digest(sent[7:].strip().encode(), token.encode())
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    if not _client_allowed(request):
        return JsonResponse({"error": "metrics_forbidden", "message": (
            "The metrics are served to a client sending 'Authorization: Bearer "
            "<METRICS_TOKEN>', or without METRICS_TOKEN set to the loopback (docs/metrics.md).")}, status=403)
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    response = HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
