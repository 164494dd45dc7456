"""Celery tasks on the deletion queue (portal.celery routes them): thin wrappers over the services."""

from __future__ import annotations

import os
import socket

from celery import shared_task


@shared_task(bind=True, ignore_result=True, acks_late=True, max_retries=None)
def deletion_ticket_run(self, ticket_id: int) -> str:
    """Run or resume one confirmed ticket. A transient store failure is retried after the backoff the service
    chose (it holds the ticket until then); it stops retrying (the ticket fails) after
    DELETION_STEP_MAX_ATTEMPTS attempts of one step."""
    from deletion.services import StepRetryLater, ticket_execute

    try:
        return ticket_execute(ticket_id=ticket_id, worker_id=f"{socket.gethostname()}:{os.getpid()}:{ticket_id}")
    except StepRetryLater as err:
        raise self.retry(countdown=err.seconds + 1, exc=err) from err


@shared_task(ignore_result=True)
def deletion_resume_stale() -> int:
    """The beat's sweeper: tickets whose worker died are queued again."""
    from deletion.services import deletion_resume_stale as sweep

    return len(sweep())


@shared_task(acks_late=True)
def retention_run_scheduled() -> int:
    """Purge every store of data past its retention (deletion.retention); returns the stores that failed."""
    from deletion.retention import retention_run

    return sum(1 for r in retention_run(trigger="schedule") if r.status == "failed")
