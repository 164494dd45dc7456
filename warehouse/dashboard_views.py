"""The analytics dashboard: ``/analytics/`` (the page) and ``/analytics/data.json`` (what its charts read).

Views are adapters: every number comes from ``warehouse.dashboard_selectors``. The page embeds the
same JSON that ``data.json`` serves, so it draws at once and then refreshes itself from
``data.json`` every 30 s (``warehouse/static/warehouse/analytics.js``). The warehouse may be down:
the page then says so (503, freshness from the portal database still shown) and ``data.json``
answers a JSON error, never a 500.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from warehouse import dashboard_selectors as selectors

log = logging.getLogger(__name__)

#: how long a page waits for the warehouse login before it says the warehouse is unreachable
PAGE_LOGIN_TIMEOUT = 5
REFRESH_SECONDS = 30
DAY_CHOICES = (1, 7, 14, 30, 60, 90)
#: databases whose analytics tables this process has made sure of (the DDL is idempotent, so a race is harmless)
_ensured_databases: set[str] = set()


@contextlib.contextmanager
def _warehouse() -> Iterator[Any]:
    from warehouse.analytics_ddl import analytics_ensure
    from warehouse.connection import pooled_connection

    # pooled: the dashboards refresh every 30 s per open tab; no warehouse login per request
    with pooled_connection(workload="dashboards", login_timeout=PAGE_LOGIN_TIMEOUT) as conn:
        # a fresh warehouse (before the first model run) gets empty tables, so the page shows its
        # empty states instead of "table does not exist"
        database = settings.SNOWFLAKE["database"]
        if database not in _ensured_databases:
            analytics_ensure(conn)
            _ensured_databases.add(database)
        yield conn


def _dashboard_data(days: int) -> dict[str, Any]:
    """The dashboard's data, or ``{"error": …}`` with the freshness the portal database still knows."""
    from warehouse.connection import WarehouseError, WarehouseUnavailable

    now = timezone.now()
    runs = selectors.model_run_latest()
    try:
        with _warehouse() as conn:
            return selectors.dashboard_data(conn, days=days, now=now, runs=runs)
    except WarehouseError as err:
        if not isinstance(err, WarehouseUnavailable):  # a refused statement or login is a bug or a config problem
            log.exception("analytics dashboard: the warehouse refused a query")
        unavailable = isinstance(err, WarehouseUnavailable)
        return {
            "error": "warehouse_unavailable" if unavailable else "warehouse_error",
            "detail": str(err) if unavailable else f"The warehouse refused the dashboard's query: {err}",
            "generated_at": now.isoformat(),
            "freshness": selectors.data_freshness(runs=runs, latest=None, now=now),
        }


@require_GET
@login_required
def analytics_dashboard(request: HttpRequest) -> HttpResponse:
    try:
        days = selectors.window_days_clean(request.GET.get("days"))
    except ValueError as err:  # a person gets the default window and a note; data.json is strict (400)
        messages.warning(request, f"{err}; showing {selectors.DEFAULT_DAYS} days.")
        days = selectors.DEFAULT_DAYS
    data = _dashboard_data(days)
    charts = data.get("charts") or {}
    context = {
        "data": data, "days": days, "charts": charts, "error": data.get("error"),
        "day_choices": sorted({*DAY_CHOICES, days}), "refresh_seconds": REFRESH_SECONDS,
        "empty_help": selectors.EMPTY_HELP, "score_buckets": selectors.SCORE_BUCKETS,
        "stale_after_min": selectors.STALE_AFTER_S // 60,
    }
    return render(request, "warehouse/analytics_dashboard.html", context, status=503 if data.get("error") else 200)


@require_GET
@login_required
def analytics_dashboard_data(request: HttpRequest) -> JsonResponse:
    try:
        days = selectors.window_days_clean(request.GET.get("days"))
    except ValueError as err:
        return JsonResponse({"error": "invalid_parameter", "parameter": "days", "detail": str(err)}, status=400)
    data = _dashboard_data(days)
    response = JsonResponse(data, status=503 if data.get("error") else 200)
    response["Cache-Control"] = "no-store"
    return response
