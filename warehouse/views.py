"""Portal pages of the curated models: the model price catalog and the model runs.

Views are adapters: reads through ``warehouse.selectors``, writes through ``warehouse.services``, and a
service's refusal is shown next to the field it names (the data engineer's form is re-shown with a
400). Anyone signed in reads both pages; only data engineers and admins change prices.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from portal.roles import Role, is_data_engineer, user_roles
from warehouse import selectors, services
from warehouse.models import TOKEN_KINDS

HISTORY_SHOWN = 300
RUNS_SHOWN = 25
NOT_ALLOWED = "Only data engineers and admins may change model prices or ask for a recompute."
_DATETIME_WIDGET = forms.DateTimeInput(attrs={"type": "datetime-local", "step": 3600}, format="%Y-%m-%dT%H:%M")


class PriceAddForm(forms.Form):
    """Shape only (a time that parses, a known kind); the service checks the rest and names the field."""

    model = forms.CharField(required=False, strip=True, widget=forms.TextInput(attrs={"list": "known-models"}),
                            help_text="As requests carry it (request_model), e.g. gpt-4.1-mini.")
    token_kind = forms.ChoiceField(choices=TOKEN_KINDS, label="Token kind",
                                   help_text="Input excludes cached input; output includes reasoning tokens.")
    usd_per_million = forms.CharField(required=False, label="USD per million tokens",
                                      widget=forms.TextInput(attrs={"inputmode": "decimal", "placeholder": "0.40"}),
                                      help_text="At most 6 decimals, below 10,000.")
    effective_from = forms.DateTimeField(label="Effective from (UTC)", widget=_DATETIME_WIDGET,
                                         help_text="The start of an hour, in UTC.")
    note = forms.CharField(required=False, max_length=services.NOTE_MAX,
                           help_text="Why: e.g. the provider's price list of 1 December.")
    recompute = forms.BooleanField(required=False, label="Backdated: recompute past hours",
                                   help_text="Required when the price starts before the current hour.")


class RecomputeForm(forms.Form):
    model = forms.CharField(required=False, strip=True, widget=forms.TextInput(attrs={"list": "known-models"}),
                            help_text="Leave blank to recompute every model.")
    from_time = forms.DateTimeField(label="Recompute hours from (UTC)", widget=_DATETIME_WIDGET,
                                    help_text="Widened to the start of its hour.")

    def __init__(self, *args: Any, **kwargs: Any):
        # Its own element ids: it shares the page with PriceAddForm, which also has a "model" field.
        kwargs.setdefault("auto_id", "recompute_%s")
        super().__init__(*args, **kwargs)


def _next_hour() -> dt.datetime:
    return selectors.hour_start(timezone.now()) + dt.timedelta(hours=1)


def price_text(value: Decimal | None) -> str:
    """0.4 → "0.40", 0.275 → "0.275", 12 → "12.00": cents always, more decimals only when set."""
    if value is None:
        return ""
    text = f"{value.normalize():f}"
    whole, _, decimals = text.partition(".")
    return f"{whole}.{decimals.ljust(2, '0')}"


def duration_text(ms: int | None) -> str:
    """850 ms, 1.2 s, 2 min 5 s ("" for None)."""
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    seconds = ms // 1000
    return f"{seconds // 60} min {seconds % 60} s"


def _require_engineer(request: HttpRequest) -> None:
    if not is_data_engineer(request.user):
        raise PermissionDenied(NOT_ALLOWED)


def _prices_page(request: HttpRequest, *, price_form: PriceAddForm | None = None,
                 recompute_form: RecomputeForm | None = None, status: int = 200) -> HttpResponse:
    can_edit = is_data_engineer(request.user)
    current = selectors.prices_current()
    for item in current:
        for cell in item["prices"]:
            cell["text"] = price_text(cell["price"].usd_per_million) if cell["price"] else ""
        for row in item["scheduled"]:
            row.price_text = price_text(row.usd_per_million)
    history_qs = selectors.price_history()
    history = list(history_qs[:HISTORY_SHOWN])
    for row in history:
        row.price_text = price_text(row.usd_per_million)
    context: dict[str, Any] = {
        "current": current, "history": history, "history_total": history_qs.count(),
        "history_shown": HISTORY_SHOWN, "pending": list(selectors.price_recomputes_pending()),
        "can_edit": can_edit, "current_hour": selectors.hour_start(timezone.now()),
        "known_models": selectors.price_models(), "token_kinds": TOKEN_KINDS,
    }
    if can_edit:
        context["price_form"] = price_form or PriceAddForm(initial={"effective_from": _next_hour()})
        context["recompute_form"] = recompute_form or RecomputeForm()
    return render(request, "warehouse/prices.html", context, status=status)


@require_GET
@login_required
def prices(request: HttpRequest) -> HttpResponse:
    return _prices_page(request)


@require_POST
@login_required
def price_add(request: HttpRequest) -> HttpResponse:
    _require_engineer(request)
    form = PriceAddForm(request.POST)
    if not form.is_valid():
        return _prices_page(request, price_form=form, status=400)
    data = form.cleaned_data
    try:
        price, recompute = services.price_add(
            actor=request.user, model=data["model"], token_kind=data["token_kind"],
            usd_per_million=data["usd_per_million"], effective_from=data["effective_from"], note=data["note"],
            recompute=data["recompute"],
        )
    except services.CatalogForbidden as err:
        raise PermissionDenied(err.message) from err
    except services.CatalogError as err:
        form.add_error(err.field if err.field in form.fields else None, err.message)
        return _prices_page(request, price_form=form, status=err.status_code)
    text = (f"Price added: {price.model} {price.get_token_kind_display().lower()} "
            f"${price_text(price.usd_per_million)} per million tokens from "
            f"{price.effective_from:%Y-%m-%d %H:%M} UTC (catalog version {price.version}).")
    if recompute is not None:
        text += (f" Recompute requested from {recompute.from_time:%Y-%m-%d %H:%M} UTC: the next model run "
                 "re-prices those hours.")
    messages.success(request, text)
    return redirect("analytics_prices")


@require_POST
@login_required
def price_recompute(request: HttpRequest) -> HttpResponse:
    _require_engineer(request)
    form = RecomputeForm(request.POST)
    if not form.is_valid():
        return _prices_page(request, recompute_form=form, status=400)
    data = form.cleaned_data
    try:
        recompute = services.price_recompute_request(actor=request.user, model=data["model"],
                                                     from_time=data["from_time"])
    except services.CatalogForbidden as err:
        raise PermissionDenied(err.message) from err
    except services.CatalogError as err:
        form.add_error(err.field if err.field in form.fields else None, err.message)
        return _prices_page(request, recompute_form=form, status=err.status_code)
    messages.success(request, f"Recompute requested for {recompute.model or 'every model'} from "
                              f"{recompute.from_time:%Y-%m-%d %H:%M} UTC: the next model run re-prices those hours.")
    return redirect("analytics_prices")


@require_GET
@login_required
def runs(request: HttpRequest) -> HttpResponse:
    failed_only = request.GET.get("status") == "failed"
    recent = selectors.model_runs_recent(RUNS_SHOWN, failed_only=failed_only)
    for run in recent:
        run["duration_text"] = duration_text(run["duration_ms"])
        for row in run["models"]:
            row.duration_text = duration_text(row.duration_ms)
    return render(request, "warehouse/runs.html", {
        "runs": recent, "runs_shown": RUNS_SHOWN, "failed_only": failed_only,
        "last_succeeded_at": selectors.model_run_last_succeeded_at(),
        "pending": list(selectors.price_recomputes_pending()), "done": selectors.price_recomputes_done(limit=5),
        # the retention runs page is for data engineers, privacy officers and admins
        "may_see_retention": is_data_engineer(request.user) or Role.PRIVACY in user_roles(request.user),
    })
