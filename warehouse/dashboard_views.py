"""The analytics dashboard: ``/analytics/`` (the page) and ``/analytics/data.json`` (what its charts read).

Views are adapters: every number comes from ``warehouse.dashboard_selectors``. The page itself does
not read the warehouse: it answers at once with a loading state in each chart, KPI and table, and
``warehouse/static/warehouse/analytics.js`` fills them from ``data.json``, then refreshes every 30 s.
``data.json`` is cached per model run (the curated tables change only when a run finishes) and
window, for a minute at most. The warehouse may be down: ``data.json`` then answers a JSON error
(503, freshness from the portal database still known), never a 500, and the page says so.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from warehouse import dashboard_selectors as selectors

log = logging.getLogger(__name__)

#: how long a page waits for the warehouse login before it says the warehouse is unreachable
PAGE_LOGIN_TIMEOUT = 5
REFRESH_SECONDS = 30
#: the window select: (``?window=`` value, label)
WINDOW_CHOICES = (("24h", "Last 24 hours, by the hour"), ("1d", "1 day"), ("7d", "7 days"), ("14d", "14 days"),
                  ("30d", "30 days"), ("60d", "60 days"), ("90d", "90 days"))
#: data.json's cache: keyed by the last successful model run, so a run's numbers show at once
CACHE_SECONDS = 60
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


def _dashboard_data(window: str | None) -> dict[str, Any]:
    """The dashboard's data, or ``{"error": …}`` with the freshness the portal database still knows."""
    from warehouse.connection import WarehouseError, WarehouseUnavailable

    now = timezone.now()
    runs = selectors.model_run_latest()
    key = _cache_key(window, runs, now)
    cached = cache.get(key)
    if cached is not None:
        # the numbers are the run's; "refreshed 40 s ago" is now's
        seen = cached["freshness"]
        latest = {"session_ended_at": seen["session_activity_at"], "session_started_at": seen["session_started_at"]}
        return {**cached, "generated_at": now.isoformat().replace("+00:00", "Z"),
                "freshness": selectors.data_freshness(runs=runs, latest=latest, now=now)}
    try:
        with _warehouse() as conn:
            data = selectors.dashboard_data(conn, window=window, now=now, runs=runs)
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
    cache.set(key, data, CACHE_SECONDS)
    return data


def _cache_key(window: str | None, runs: dict[str, Any], now: Any) -> str:
    """Per database, window, the last successful model run and the hour (the window's end moves with it)."""
    succeeded = runs.get("succeeded_at")
    parts = [settings.SNOWFLAKE.get("database", ""), window or "auto", succeeded.isoformat() if succeeded else "never",
             now.strftime("%Y-%m-%dT%H")]
    return "analytics-dashboard:" + ":".join(parts)


def _window_param(request: HttpRequest) -> str | None:
    """``?window=`` (or the older ``?days=``); ValueError naming the bad value."""
    if request.GET.get("window", "").strip():
        return selectors.window_clean(request.GET["window"])
    if request.GET.get("days", "").strip():
        return f"{selectors.window_days_clean(request.GET['days'])}d"
    return None


@require_GET
@login_required
def analytics_dashboard(request: HttpRequest) -> HttpResponse:
    try:
        window = _window_param(request)
    except ValueError as err:  # a person gets the default window and a note; data.json is strict (400)
        messages.warning(request, f"{err}; showing the default window.")
        window = None
    now = timezone.now()
    context = {
        "window": window or "", "refresh_seconds": REFRESH_SECONDS,
        # a window from a link that is not in the list (?window=3d) is shown as chosen, not silently another
        "window_choices": WINDOW_CHOICES if window is None or window in dict(WINDOW_CHOICES)
        else (*WINDOW_CHOICES, (window, f"{window[:-1]} days")),
        "empty_help": selectors.EMPTY_HELP, "score_buckets": selectors.SCORE_BUCKETS,
        "stale_after_min": selectors.STALE_AFTER_S // 60,
        # from the portal database only: the page answers without waiting for the warehouse
        "freshness": selectors.data_freshness(runs=selectors.model_run_latest(), latest=None, now=now),
    }
    return render(request, "warehouse/analytics_dashboard.html", context)


@require_GET
@login_required
def analytics_dashboard_data(request: HttpRequest) -> JsonResponse:
    try:
        window = _window_param(request)
    except ValueError as err:
        name = "window" if request.GET.get("window", "").strip() else "days"
        return JsonResponse({"error": "invalid_parameter", "parameter": name, "detail": str(err)}, status=400)
    data = _dashboard_data(window)
    response = JsonResponse(data, status=503 if data.get("error") else 200)
    response["Cache-Control"] = "no-store"
    return response
