"""Celery tasks on the deletion queue (portal.celery routes them): thin wrappers over the services."""

from __future__ import annotations

import os
import socket

from celery import shared_task

from deletion.erasure_types import TransientStoreError


@shared_task(ignore_result=True, acks_late=True, autoretry_for=(TransientStoreError,), retry_backoff=True,
             retry_backoff_max=300, max_retries=None)
def deletion_ticket_run(ticket_id: int) -> str:
    """Run or resume one confirmed ticket. A transient store failure is retried with backoff; the service
    stops retrying (the ticket fails) after DELETION_STEP_MAX_ATTEMPTS attempts of one step."""
    from deletion.services import ticket_execute

    return ticket_execute(ticket_id=ticket_id, worker_id=f"{socket.gethostname()}:{os.getpid()}:{ticket_id}")


@shared_task(ignore_result=True)
def deletion_resume_stale() -> int:
    """The beat's sweeper: tickets whose worker died are queued again."""
    from deletion.services import deletion_resume_stale as sweep

    return len(sweep())
