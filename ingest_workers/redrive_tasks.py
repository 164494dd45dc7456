"""The Celery task behind large quarantine re-drives (the portal runs small ones inline).

Registered with the worker through ``ingest_workers.tasks`` (Celery autodiscovers ``tasks`` modules).
"""

from __future__ import annotations

from celery import shared_task

from ingest_workers.services import TransientError


@shared_task(bind=True, acks_late=True, autoretry_for=(TransientError,), retry_backoff=True,
             max_retries=8, ignore_result=True)
def quarantine_redrive_task(self, ids: list[str], actor_id: int | None, request_id: str | None = None) -> dict:
    """Re-drive these quarantine rows as ``actor_id`` (None: the platform itself, from an operator command).

    Retries reuse ``request_id`` (default: the task id, which a retry keeps), so a retry finishes the
    same re-drive instead of finding its own rows busy.
    """
    from django.contrib.auth import get_user_model

    from ingest_workers.redrive import quarantine_redrive
    from portal.roles import SYSTEM

    actor = SYSTEM if actor_id is None else get_user_model().objects.get(pk=actor_id)
    result = quarantine_redrive(actor=actor, quarantine_ids=ids, request_id=request_id or self.request.id)
    return result.as_audit_dict()
