"""Celery tasks of the deletion app (thin wrappers over services), on the ``deletion`` queue."""

from __future__ import annotations

from celery import shared_task


@shared_task(acks_late=True)
def retention_run_scheduled() -> int:
    """Purge every store of data past its retention (deletion.retention); returns the stores that failed."""
    from deletion.retention import retention_run

    return sum(1 for r in retention_run(trigger="schedule") if r.status == "failed")
