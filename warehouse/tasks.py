"""Celery tasks: thin wrappers over the warehouse services."""

from __future__ import annotations

from celery import shared_task


@shared_task(ignore_result=True)
def models_run_scheduled() -> dict:
    """The curated models' scheduled run (beat, every MODELS_RUN_INTERVAL_S). A run still going
    holds the lease, so an overlapping tick does nothing."""
    from warehouse.modeling.service import models_run_recorded

    run = models_run_recorded(trigger="schedule")
    return {"run_id": run.run_id, "ok": run.ok, "busy": bool(run.busy_holder), "error": run.error}
