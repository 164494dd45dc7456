"""The stale-ticket sweeper (deletion_resume_stale, every minute by the beat) queues a ticket again when its
worker died or its task was lost, not while it merely waits in the deletion queue: every sweep used to add one
more task for each waiting ticket, a pile of duplicates behind a busy queue. Real Redis broker, real PostgreSQL."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from deletion import services
from deletion.models import DeletionTicket, TicketStatus

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def deletion_queue(deletion_env):
    assert settings.CELERY_BROKER_URL.startswith("redis"), "needs the Redis broker (CELERY_BROKER_URL=redis://…)"
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("deletion")

    def queued_tickets() -> list[int]:
        """The ticket ids of the deletion_ticket_run tasks waiting in the queue."""
        messages = [json.loads(m) for m in broker.lrange("deletion", 0, -1)]
        return [json.loads(base64.b64decode(m["body"]))[0][0] for m in messages
                if m["headers"]["task"] == "deletion.tasks.deletion_ticket_run"]

    yield queued_tickets
    broker.delete("deletion")


def confirmed_ticket(privacy_user, reference: str) -> DeletionTicket:
    ticket = services.ticket_file(actor=privacy_user, regulation="gdpr", requester_reference=reference,
                                  identifiers=[services.subject.identifier_parse("anonymous_id", "anon-1")],
                                  received_at=timezone.now())
    return services.ticket_confirm(actor=privacy_user, ticket=ticket)   # its task is queued on commit


def test_a_ticket_waiting_in_the_queue_is_not_queued_again_by_every_sweep(deletion_queue, privacy_user):
    ticket = confirmed_ticket(privacy_user, "R-wait")
    assert deletion_queue() == [ticket.pk]
    for _ in range(3):                                       # three minutes of beat, no worker free
        assert services.deletion_resume_stale() == []
    assert deletion_queue() == [ticket.pk]

    # the task, when a worker gets to it, still takes the ticket
    assert services.ticket_execute(ticket_id=ticket.pk, worker_id="w1") == "done"
    assert DeletionTicket.objects.get(pk=ticket.pk).status == TicketStatus.DONE


def test_a_ticket_whose_worker_died_or_whose_task_was_lost_is_queued_again_once(deletion_queue, privacy_user):
    died = confirmed_ticket(privacy_user, "R-died")
    lost = confirmed_ticket(privacy_user, "R-lost")
    assert sorted(deletion_queue()) == sorted([died.pk, lost.pk])
    # a worker took the first and died holding it: its lease lapsed
    DeletionTicket.objects.filter(pk=died.pk).update(status=TicketStatus.RUNNING, lease_owner="host:123:1",
                                                     lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert services.deletion_resume_stale() == [died.pk]
    assert services.deletion_resume_stale() == []            # queued now: not again on the next sweep
    # the second's task vanished (a broker restart): after the grace period it is queued again, once
    DeletionTicket.objects.filter(pk=lost.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=settings.DELETION_QUEUED_GRACE_SECONDS))
    assert services.deletion_resume_stale() == [lost.pk]
    assert services.deletion_resume_stale() == []
    assert sorted(deletion_queue()) == sorted([died.pk, lost.pk, died.pk, lost.pk])


def test_a_ticket_whose_task_could_not_be_published_is_queued_again_by_the_next_sweep(deletion_queue, privacy_user,
                                                                                      monkeypatch):
    from deletion.tasks import deletion_ticket_run

    lost = confirmed_ticket(privacy_user, "R-broker")
    assert deletion_queue() == [lost.pk]
    DeletionTicket.objects.filter(pk=lost.pk).update(        # its task vanished; the grace period is over
        lease_expires_at=timezone.now() - timedelta(seconds=settings.DELETION_QUEUED_GRACE_SECONDS))

    def broker_down(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    with monkeypatch.context() as patched:
        patched.setattr(deletion_ticket_run, "delay", broker_down)
        assert services.deletion_resume_stale() == []        # nothing was published
    # the queued mark did not stay behind for a whole grace period: the next sweep publishes it
    assert services.deletion_resume_stale() == [lost.pk]
    assert deletion_queue() == [lost.pk, lost.pk]
