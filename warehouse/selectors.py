"""Reads of the model price catalog, price recompute requests and model runs.

The price in force for hour H of a model and token kind is the row with the greatest
``effective_from`` at or before H (ties: the greatest ``version``). ``price_catalog_rows`` gives
the same answer as ranges, for the copy the model runner puts in the warehouse.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from typing import Any

from django.db.models import Count, Max, Min, Q, QuerySet
from django.utils import timezone

from warehouse.models import TOKEN_KINDS, ModelPrice, ModelRun, PriceRecompute

TOKEN_KIND_VALUES = tuple(value for value, _ in TOKEN_KINDS)
TOKEN_KIND_LABELS = dict(TOKEN_KINDS)


def as_utc(moment: dt.datetime) -> dt.datetime:
    """`moment` in UTC (a naive value is taken to be UTC already)."""
    if timezone.is_naive(moment):
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def hour_start(moment: dt.datetime) -> dt.datetime:
    """The start of the UTC hour containing `moment`."""
    return as_utc(moment).replace(minute=0, second=0, microsecond=0)


# --- prices ------------------------------------------------------------------------------------------

def price_history(*, model: str | None = None) -> QuerySet[ModelPrice]:
    """Every price ever added (newest change first), optionally of one model."""
    qs = ModelPrice.objects.select_related("created_by").order_by("-version")
    return qs.filter(model=model) if model else qs


def price_models() -> list[str]:
    """Models that have at least one price, by name."""
    return list(ModelPrice.objects.order_by("model").values_list("model", flat=True).distinct())


def price_in_force(model: str, kind: str, at: dt.datetime) -> ModelPrice | None:
    """The price of `model` and token `kind` for the hour containing `at` (None: not priced then)."""
    return (ModelPrice.objects.filter(model=model, token_kind=kind, effective_from__lte=hour_start(at))
            .order_by("-effective_from", "-version").first())


def _in_force(rows: list[ModelPrice], hour: dt.datetime) -> ModelPrice | None:
    """`rows` of one model and kind sorted by (effective_from, version): the last one starting by `hour`."""
    current = None
    for row in rows:
        if row.effective_from > hour:
            break
        current = row
    return current


def prices_current(*, at: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Per model: the price of each token kind in force for the hour of `at` (default now), and the
    changes already added that start later.

    Each item: ``{"model", "prices": [{"token_kind", "label", "price": ModelPrice | None}, …] in
    TOKEN_KINDS order, "scheduled": [ModelPrice, …] by effective_from}``.
    """
    hour = hour_start(at or timezone.now())
    rows = sorted(ModelPrice.objects.select_related("created_by"),
                  key=lambda r: (r.model, r.token_kind, r.effective_from, r.version))
    by_model: dict[str, dict[str, list[ModelPrice]]] = {}
    for (model, kind), group in itertools.groupby(rows, key=lambda r: (r.model, r.token_kind)):
        by_model.setdefault(model, {})[kind] = list(group)
    result = []
    for model, kinds in by_model.items():
        scheduled = sorted((r for group in kinds.values() for r in group if r.effective_from > hour),
                           key=lambda r: (r.effective_from, r.token_kind, r.version))
        result.append({
            "model": model,
            "prices": [{"token_kind": kind, "label": TOKEN_KIND_LABELS[kind],
                        "price": _in_force(kinds.get(kind, []), hour)} for kind in TOKEN_KIND_VALUES],
            "scheduled": scheduled,
        })
    return result


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    return timezone.make_naive(moment, dt.UTC) if timezone.is_aware(moment) else moment


def price_catalog_rows() -> list[dict[str, Any]]:
    """The whole catalog as plain rows for ``ANALYTICS.MODEL_PRICES``:
    ``{"model", "token_kind", "usd_per_million" (Decimal), "effective_from", "effective_to", "version"}``,
    times naive UTC (TIMESTAMP_NTZ).

    ``effective_to`` is the ``effective_from`` of the next row of the same model and kind in
    (effective_from, version) order, or None for the last one; so the price of hour H is the row with
    ``effective_from <= H < effective_to`` (or no ``effective_to``). A row overridden by a higher version
    with the same ``effective_from`` gets ``effective_to == effective_from``: never in force.
    """
    rows = ModelPrice.objects.order_by("model", "token_kind", "effective_from", "version").values(
        "model", "token_kind", "usd_per_million", "effective_from", "version")
    result: list[dict[str, Any]] = []
    for _, group in itertools.groupby(rows, key=lambda r: (r["model"], r["token_kind"])):
        items = list(group)
        for row, following in itertools.zip_longest(items, items[1:]):
            result.append({
                "model": row["model"], "token_kind": row["token_kind"], "usd_per_million": row["usd_per_million"],
                "effective_from": _naive_utc(row["effective_from"]),
                "effective_to": _naive_utc(following["effective_from"]) if following else None,
                "version": row["version"],
            })
    return result


def price_recomputes_pending() -> QuerySet[PriceRecompute]:
    """Recompute requests the next model run has yet to carry out, oldest first."""
    return (PriceRecompute.objects.filter(status=PriceRecompute.Status.PENDING).select_related("requested_by")
            .order_by("requested_at", "id"))


def price_recomputes_done(*, limit: int = 10) -> list[PriceRecompute]:
    """The latest carried-out recompute requests, newest first."""
    return list(PriceRecompute.objects.filter(status=PriceRecompute.Status.DONE).select_related("requested_by")
                .order_by("-done_at", "-id")[:limit])


# --- model runs --------------------------------------------------------------------------------------

def _run_status(statuses: set[str]) -> str:
    """One word for a whole run: running while any model runs, failed if any failed, else succeeded
    (skipped only when every model was skipped)."""
    for status in (ModelRun.Status.RUNNING, ModelRun.Status.FAILED, ModelRun.Status.SUCCEEDED):
        if status in statuses:
            return status
    return ModelRun.Status.SKIPPED


def model_runs_recent(limit: int = 20, *, failed_only: bool = False) -> list[dict[str, Any]]:
    """The latest `limit` runs (with ``failed_only``: runs in which a model failed), newest first, each
    with its models' rows in the order they ran:

    ``{"run_id": UUID, "trigger", "status" (see _run_status), "started_at", "finished_at" (None while
    running), "duration_ms" (whole run; None while running), "rows_changed" (sum), "models": [ModelRun, …],
    "failed": [ModelRun, …], "succeeded_count", "skipped_count"}``.
    """
    limit = max(1, min(int(limit), 500))
    runs_qs = ModelRun.objects.all()
    if failed_only:
        runs_qs = runs_qs.filter(run_id__in=ModelRun.objects.filter(status=ModelRun.Status.FAILED).values("run_id"))
    heads = list(runs_qs.values("run_id").annotate(first=Min("started_at")).order_by("-first")[:limit])
    run_ids = [h["run_id"] for h in heads]
    by_run: dict[uuid.UUID, list[ModelRun]] = {run_id: [] for run_id in run_ids}
    for row in ModelRun.objects.filter(run_id__in=run_ids).order_by("started_at", "id"):
        by_run[row.run_id].append(row)
    runs = []
    for run_id in run_ids:
        models = by_run[run_id]
        status = _run_status({m.status for m in models})
        started = min(m.started_at for m in models)
        finished = None
        if status != ModelRun.Status.RUNNING:
            finished = max((m.finished_at for m in models if m.finished_at), default=None)
        runs.append({
            "run_id": run_id, "trigger": models[0].trigger, "status": status, "started_at": started,
            "finished_at": finished,
            "duration_ms": int((finished - started).total_seconds() * 1000) if finished else None,
            "rows_changed": sum(m.rows_changed for m in models), "models": models,
            "failed": [m for m in models if m.status == ModelRun.Status.FAILED],
            "succeeded_count": sum(m.status == ModelRun.Status.SUCCEEDED for m in models),
            "skipped_count": sum(m.status == ModelRun.Status.SKIPPED for m in models),
        })
    return runs


def model_run_last_succeeded_at() -> dt.datetime | None:
    """When the latest run in which no model failed finished (None: no such run yet)."""
    not_ok = [ModelRun.Status.RUNNING, ModelRun.Status.FAILED]
    row = (ModelRun.objects.values("run_id")
           .annotate(bad=Count("id", filter=Q(status__in=not_ok)), finished=Max("finished_at"))
           .filter(bad=0, finished__isnull=False).order_by("-finished").first())
    return row["finished"] if row else None


def model_runs_latest_by_model() -> dict[str, dict[str, Any]]:
    """Per curated model: when its last successful run finished (None: never) and whether its latest
    finished run failed (``/metrics``: model freshness and failed model runs)."""
    ok = dict(ModelRun.objects.filter(status=ModelRun.Status.SUCCEEDED).values("model")
              .annotate(at=Max("finished_at")).values_list("model", "at"))
    latest: dict[str, str] = {}
    finished = (ModelRun.Status.SUCCEEDED, ModelRun.Status.FAILED)
    for model, status in (ModelRun.objects.filter(status__in=finished, finished_at__isnull=False)
                          .order_by("model", "-finished_at", "-id").values_list("model", "status")):
        latest.setdefault(model, status)
    return {model: {"last_success_at": ok.get(model), "last_failed": latest.get(model) == ModelRun.Status.FAILED}
            for model in sorted(set(ok) | set(latest))}
