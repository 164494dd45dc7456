"""Celery tasks on the quality queue (portal.celery routes them): thin wrappers over the services."""

from __future__ import annotations

from celery import shared_task


@shared_task(ignore_result=True)
def quality_run_scheduled() -> dict:
    """The beat's run (every QUALITY_RUN_INTERVAL_S): every covered table, plus the retention purge."""
    from quality.services import quality_run_scheduled as run

    return run()


@shared_task(ignore_result=True, acks_late=True)
def quality_run_queued(run_id: str) -> int:
    """A run asked for in the portal: the tables queued under ``run_id``."""
    from quality.services import quality_run_execute

    return len(quality_run_execute(run_id=run_id))


@shared_task(ignore_result=True)
def alerts_evaluate() -> dict:
    """The beat's alert cycle (every QUALITY_ALERT_INTERVAL_S): every rule, the alert changes, and the
    notifications due (first tries and retries)."""
    from quality.alerts import alerts_evaluate as run

    return run()


@shared_task(ignore_result=True)
def scorecards_evaluate() -> dict:
    """Grade the scorecards now (the scheduled check cycle does it after its checks; this is for on demand)."""
    from quality.services import scorecards_evaluate as run

    return run()
