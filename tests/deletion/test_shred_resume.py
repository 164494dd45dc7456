"""The evidence counts every archive data key an erasure destroyed, also when the worker died after destroying
them and before it recorded the step's result: the resumed step finds no key left, and used to report 0."""

from __future__ import annotations

import pytest
from django.utils import timezone

from deletion import services, shredding
from deletion.models import StepStatus, SubjectKey, TicketStatus
from deletion.subject_keys import SubjectKeyring, archive_keyring, archive_keyrings_forget, master_key_from_settings
from deletion.suppression import subject_id_keys
from tests.deletion.expanders import ALICE_EMAIL

pytestmark = pytest.mark.django_db


@pytest.fixture
def archive_only(deletion_env, settings, warehouse_server):
    # the archive's steps include archive_conversations, which reads the person's conversations from the
    # warehouse: without its own server this file passed only after another file had started one
    settings.DELETION_STEP_PROVIDERS = ["deletion.shredding.archive_steps"]
    archive_keyrings_forget()
    yield
    archive_keyrings_forget()


def test_keys_destroyed_before_a_crash_are_in_the_evidence_of_the_resumed_erasure(archive_only, privacy_user,
                                                                                  monkeypatch):
    ticket = services.ticket_file(actor=privacy_user, regulation="gdpr", requester_reference="R-shred",
                                  identifiers=[services.subject.identifier_parse("email", ALICE_EMAIL)],
                                  received_at=timezone.now())
    ticket = services.ticket_confirm(actor=privacy_user, ticket=ticket)
    keys = archive_keyring().subject_keys(subject_id_keys(services.ticket_subject(ticket)))  # the archive's
    key_ids = sorted(kid for kid, _ in keys.values())
    assert len(key_ids) >= 3

    bump = shredding.erasure_generation_bump

    def dies_after_the_destroy() -> int:
        monkeypatch.setattr(shredding, "erasure_generation_bump", bump)
        raise RuntimeError("worker killed right after destroying the keys")

    monkeypatch.setattr(shredding, "erasure_generation_bump", dies_after_the_destroy)
    assert services.ticket_execute(ticket_id=ticket.pk, worker_id="w1") == "failed"
    assert SubjectKey.objects.filter(key_id__in=key_ids).count() == 0     # destroyed, but nothing recorded
    assert ticket.steps.get(name="archive_shred").status == StepStatus.FAILED

    services.ticket_retry(actor=privacy_user, ticket=ticket)
    assert services.ticket_execute(ticket_id=ticket.pk, worker_id="w2") == "done"

    ticket.refresh_from_db()
    assert ticket.status == TicketStatus.DONE
    (shred,) = [s for s in ticket.evidence.record["stores"] if s["step"] == "archive_shred"]
    assert shred["removed"] == len(key_ids) and shred["remaining"] == 0
    assert shred["detail"]["keys_destroyed"] == len(key_ids)
    assert sorted(shred["detail"]["destroyed_key_ids"]) == key_ids
    assert shred["attempts"] == 1                                          # the retry's own attempt
    fresh = SubjectKeyring(master=master_key_from_settings(), hash_key=b"unused")
    assert set(fresh.keys_by_id(key_ids).values()) == {None}


def test_an_uninterrupted_erasure_counts_its_keys_once(archive_only, privacy_user):
    ticket = services.ticket_file(actor=privacy_user, regulation="gdpr", requester_reference="R-shred-2",
                                  identifiers=[services.subject.identifier_parse("email", ALICE_EMAIL)],
                                  received_at=timezone.now())
    ticket = services.ticket_confirm(actor=privacy_user, ticket=ticket)
    keys = archive_keyring().subject_keys(subject_id_keys(services.ticket_subject(ticket)))
    assert services.ticket_execute(ticket_id=ticket.pk, worker_id="w1") == "done"
    ticket.refresh_from_db()
    (shred,) = [s for s in ticket.evidence.record["stores"] if s["step"] == "archive_shred"]
    assert shred["removed"] == len(keys) == len(set(shred["detail"]["destroyed_key_ids"]))
    assert "destroyed_key_ids_so_far" not in ticket.steps.get(name="archive_shred").result
