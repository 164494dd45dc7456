"""The conversation step's evidence counts every conversation key the erasure destroyed, also when the worker
died after destroying them and before it recorded the step's result, and the resumed step moves the erasure
generation (the dead worker may not have): the resumed step finds no key left, and used to report 0."""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone

from deletion import services, shredding
from deletion.models import ErasureGeneration, StepStatus, SubjectKey, TicketStatus
from deletion.subject_keys import archive_keyring, archive_keyrings_forget, subject_hash_of
from deletion.suppression import suppression_hashes_add
from tests.deletion.expanders import ALICE_EMAIL

pytestmark = pytest.mark.django_db

CONVERSATIONS = ("conversation:slack-bot:D0A-thread", "conversation:web:conversation:c-77")


@pytest.fixture
def archive_only(deletion_env, warehouse_server, settings):
    """The archive's steps only, against this test's own (empty) warehouse database."""
    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "database": f"T_{uuid.uuid4().hex[:12].upper()}"}
    settings.DELETION_STEP_PROVIDERS = ["deletion.shredding.archive_steps"]
    archive_keyrings_forget()
    yield
    archive_keyrings_forget()


def generation() -> int:
    row = ErasureGeneration.objects.first()
    return row.value if row is not None else 0


def test_conversation_keys_destroyed_before_a_crash_are_in_the_evidence_of_the_resumed_erasure(
        archive_only, privacy_user, monkeypatch):
    ticket = services.ticket_file(actor=privacy_user, regulation="gdpr", requester_reference="R-conv",
                                  identifiers=[services.subject.identifier_parse("email", ALICE_EMAIL)],
                                  received_at=timezone.now())
    ticket = services.ticket_confirm(actor=privacy_user, ticket=ticket)
    keys = archive_keyring().subject_keys(list(CONVERSATIONS))  # the archive's keys of her conversations
    key_ids = sorted(kid for kid, _ in keys.values())
    assert len(key_ids) == 2
    # the step's own record of her conversations, as a first attempt lists them before any key goes
    # (the warehouse rows it found them by are gone by now)
    suppression_hashes_add({subject_hash_of(c) for c in CONVERSATIONS}, kind="conversation",
                           ticket_ref=ticket.reference)

    bump = shredding.erasure_generation_bump

    def dies_after_the_conversation_keys_went() -> int:
        if SubjectKey.objects.filter(key_id__in=key_ids).exists():
            return bump()  # the identifiers' shred step: not this one
        monkeypatch.setattr(shredding, "erasure_generation_bump", bump)
        raise RuntimeError("worker killed right after destroying the conversation keys")

    monkeypatch.setattr(shredding, "erasure_generation_bump", dies_after_the_conversation_keys_went)
    assert services.ticket_execute(ticket_id=ticket.pk, worker_id="w1") == "failed"
    assert SubjectKey.objects.filter(key_id__in=key_ids).count() == 0     # destroyed, but nothing recorded
    assert ticket.steps.get(name="archive_conversations").status == StepStatus.FAILED
    crashed_at = generation()

    services.ticket_retry(actor=privacy_user, ticket=ticket)
    assert services.ticket_execute(ticket_id=ticket.pk, worker_id="w2") == "done"

    ticket.refresh_from_db()
    assert ticket.status == TicketStatus.DONE
    (step,) = [s for s in ticket.evidence.record["stores"] if s["step"] == "archive_conversations"]
    assert step["removed"] == 2 and step["remaining"] == 0
    assert step["detail"]["conversation_keys_destroyed"] == 2
    assert sorted(step["detail"]["destroyed_key_ids"]) == key_ids
    assert generation() > crashed_at       # a reader that cached a conversation key drops it
    assert "destroyed_key_ids_so_far" not in ticket.steps.get(name="archive_conversations").result
