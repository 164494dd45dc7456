"""Celery tasks: thin wrappers over ingest_workers.services.

Shard consumption is not a task: it runs in the ingest worker pool's long-lived consumers
(``celery -A portal worker -Q ingest --shard-consumer``, see ``ingest_workers.consumer``), so the
broker is never on the per-batch path."""

from __future__ import annotations

from celery import shared_task


@shared_task(ignore_result=True)
def warehouse_merge() -> dict:
    """Merge what landed, as the one merger (a run that finds the lease held returns at once)."""
    from ingest_workers import services

    return services.warehouse_merge_run()


# The quarantine re-drive task lives in its own module; importing it here registers it with the worker.
from ingest_workers.redrive_tasks import quarantine_redrive_task  # noqa: E402,F401
