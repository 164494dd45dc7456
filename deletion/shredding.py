"""Crypto-shredding of the raw archive: the erasure steps for the archive.

``archive_steps()``: first ``archive_suppress`` (the subject's identifiers join the suppression list,
so no worker archives or lands them again, nor recreates their keys: key creation is guarded by the
list), then ``archive_shred``: the wrapped data keys of every identifier in the confirmed expansion
are deleted from PostgreSQL, the erasure generation moves (every worker drops its cached keys before
its next batch), and the step verifies that no key row of the subject remains and that a keyring
with nothing cached can no longer open any of the destroyed keys. Every archived line of the
subject, in every object and every copy of it, was encrypted under a key derived from those keys,
so it is unreadable without rewriting an object.

Then ``archive_conversations``: the lines of records without identifiers that belong to the person's
conversations (the bot's reply in their Slack DM, an assistant reply) are under ``conversation``
subjects (``ingest_workers.archive_crypto.conversation_subject``). The step reads the subject's
conversations from the warehouse (``warehouse_erasure.subject_conversations``: the sessions and
conversations of the rows the warehouse steps will delete, so it runs before them), lists their keyed
hashes on the suppression list FIRST (kind ``conversation``, the ticket's reference: that is the step's
record of them, so a retry after the warehouse rows are gone still finds them), then destroys their
keys. New identifier-less records in those conversations are suppressed like the identifiers' records.
A conversation in which somebody else's identified events appear too (a shared thread, a reused session
id: ``warehouse_erasure.subject_conversations_shared``) is left alone and listed in the step's evidence
as a shared conversation left: shredding it would take the other people's replies, for good.

The master key (KMS) is never deleted here: it wraps every subject's key. The proof of
unreadability is that the platform's wrapped data key is gone (moto's KMS would still decrypt with a
key scheduled for deletion, and so would real KMS for the 7-30 days of its window).

Key material is never logged: only counts and random key ids are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import transaction

from deletion.erasure_types import ErasureStep, ErasureSubject, StoreResult
from deletion.subject_keys import SubjectKeyring, erasure_generation_bump, master_key_from_settings, subject_hash_of
from deletion.suppression import subject_id_keys, suppression_hashes_add, suppression_step_run

log = logging.getLogger(__name__)

STORE = "raw archive"
SHRED_STEP = "archive_shred"
CONVERSATIONS_STEP = "archive_conversations"
#: the step row's ``result`` entry listing the key ids destroyed so far (replaced by the result once done)
JOURNAL = "destroyed_key_ids_so_far"


def archive_steps() -> list[ErasureStep]:
    """The raw archive's erasure steps, in order (suppression first, so nothing comes back while the
    keys are shredded)."""
    return [
        ErasureStep(name="archive_suppress", store="suppression list", run=suppression_step_run),
        ErasureStep(name=SHRED_STEP, store=STORE, run=archive_shred_run),
        ErasureStep(name=CONVERSATIONS_STEP, store=STORE + ": conversations", run=archive_conversations_run),
    ]


def subject_keys_shred(id_hashes: list[str], *,
                       journal: Callable[[list[str]], None] | None = None) -> list[str]:
    """Delete the wrapped data keys stored under these keyed hashes; returns the destroyed key ids.
    ``journal`` is told the key ids in the same transaction as the delete (it commits with it or not at all)."""
    from deletion.models import SubjectKey

    with transaction.atomic():
        rows = list(SubjectKey.objects.select_for_update().filter(id_hash__in=id_hashes).values_list("pk", "key_id"))
        if journal is not None and rows:
            journal([kid for _, kid in rows])
        SubjectKey.objects.filter(pk__in=[pk for pk, _ in rows]).delete()
    if rows:
        erasure_generation_bump()
    return [kid for _, kid in rows]


def _journal_of(ticket_ref: str, step: str) -> tuple[Callable[[list[str]], None], Callable[[], list[str]]]:
    """(record, recorded): the key ids this ticket's shredding step ``step`` destroyed, kept on its step row
    (``result``) as they are destroyed. A worker that dies between destroying keys and recording the step's result
    leaves them there, so the resumed step counts every key the erasure destroyed, not only those it found left.
    Without a ticket's step row (a subject erased outside a ticket) nothing is kept."""
    from deletion.models import DeletionStep, DeletionTicket

    ticket_id = DeletionTicket.pk_of_reference(ticket_ref)
    rows = (DeletionStep.objects.filter(ticket_id=ticket_id, name=step) if ticket_id
            else DeletionStep.objects.none())

    def recorded() -> list[str]:
        row = rows.first()
        result = (row.result if row is not None else None) or {}
        return list(result.get(JOURNAL) or (result.get("detail") or {}).get("destroyed_key_ids") or [])

    def record(key_ids: list[str]) -> None:
        row = rows.select_for_update().first()
        if row is not None:
            before = recorded()
            row.result = {**(row.result or {}), JOURNAL: before + [k for k in key_ids if k not in before]}
            row.save(update_fields=["result"])

    return record, recorded


def archive_shred_run(subject: ErasureSubject) -> StoreResult:
    """Destroy the subject's data keys and verify they are gone and cannot be opened (idempotent: a
    second run destroys nothing and verifies again; the keys an earlier, interrupted run of the ticket
    destroyed are counted from its journal)."""
    from deletion.models import SubjectKey

    hashes = [subject_hash_of(k) for k in subject_id_keys(subject)]
    record, recorded = _journal_of(subject.ticket_ref, SHRED_STEP)
    earlier = recorded()
    now = subject_keys_shred(hashes, journal=record)
    destroyed = earlier + [kid for kid in now if kid not in earlier]
    if earlier and not now:
        erasure_generation_bump()  # the interrupted run may have died before it moved the generation
    log.info("ticket %s: %d archive data key(s) destroyed (%d by this run)", subject.ticket_ref, len(destroyed),
             len(now))
    remaining = SubjectKey.objects.filter(id_hash__in=hashes).count()
    # a keyring that has cached nothing, as any worker has after the generation moved
    fresh = SubjectKeyring(master=master_key_from_settings(), hash_key=b"verification")
    still_open = sum(1 for key in fresh.keys_by_id(destroyed).values() if key is not None)
    return StoreResult(
        store=STORE, removed=len(destroyed),
        verification=(f"SELECT COUNT(*) FROM deletion_subjectkey WHERE id_hash IN (<{len(hashes)} keyed hashes>) "  # noqa: S608 - evidence text, never run
                      f"-- expected 0; destroyed key ids opened by an uncached keyring -- expected 0"),
        remaining=remaining + still_open,
        detail={"keys_destroyed": len(destroyed), "destroyed_key_ids": destroyed,
                "identifiers": len(hashes)})


CONVERSATION_KIND = "conversation"


def archive_conversations_run(subject: ErasureSubject) -> StoreResult:
    """Suppress, then destroy the keys of, the subject's conversation subjects (module docstring). Idempotent
    and resumable: the hashes found are listed before any key goes, and a run lists again what it finds plus
    what the ticket listed before (the warehouse rows may be gone by a retry); the keys an earlier, interrupted
    run destroyed are counted from its journal, as in ``archive_shred_run``."""
    from deletion.models import SubjectKey, SuppressedSubject
    from deletion.warehouse_erasure import subject_conversations, subject_conversations_shared
    from ingest_workers.archive_crypto import conversation_subject

    shared = {conversation_subject(*row) for row in subject_conversations_shared(subject)} - {None}
    found = {conversation_subject(*row) for row in subject_conversations(subject)} - {None} - shared
    shared_hashes = sorted(subject_hash_of(s) for s in shared)
    hashes = {subject_hash_of(s) for s in found}
    added = suppression_hashes_add(hashes, kind=CONVERSATION_KIND, ticket_ref=subject.ticket_ref)
    hashes.update(SuppressedSubject.objects.filter(kind=CONVERSATION_KIND, ticket_ref=subject.ticket_ref[:128])
                  .values_list("id_hash", flat=True))
    ordered = sorted(hashes)
    record, recorded = _journal_of(subject.ticket_ref, CONVERSATIONS_STEP)
    earlier = recorded()
    now = subject_keys_shred(ordered, journal=record)
    destroyed = earlier + [kid for kid in now if kid not in earlier]
    if earlier and not now:
        erasure_generation_bump()  # the interrupted run may have died before it moved the generation
    log.info("ticket %s: %d conversation key(s) destroyed of %d conversation(s) (%d by this run)",
             subject.ticket_ref, len(destroyed), len(ordered), len(now))
    remaining = SubjectKey.objects.filter(id_hash__in=ordered).count()
    unlisted = len(ordered) - SuppressedSubject.objects.filter(id_hash__in=ordered).count()
    return StoreResult(
        store=STORE + ": conversations", removed=len(destroyed),
        verification=(f"SELECT COUNT(*) FROM deletion_subjectkey WHERE id_hash IN (<{len(ordered)} keyed hashes of "  # noqa: S608 - evidence text, never run
                      f"conversations>) -- expected 0; the same hashes on deletion_suppressedsubject -- expected "
                      f"{len(ordered)}"),
        remaining=remaining + unlisted,
        detail={"conversations": len(ordered), "conversation_keys_destroyed": len(destroyed),
                "destroyed_key_ids": destroyed, "conversations_newly_suppressed": added,
                # somebody else's identified events are in them too: not shredded nor suppressed (docs/privacy.md)
                "shared_conversations_left": len(shared_hashes), "shared_conversation_hashes": shared_hashes})


def archive_unattributed_keys_shred(*, before_day: int, days_back: int = 3660) -> int:
    """Destroy the ``unattributed`` day keys (records with no known identifier: quarantined records
    and identifier-less events) of the days before ``before_day`` (days since the epoch), for the
    retention job. Returns how many keys were destroyed."""
    from ingest_workers.archive_crypto import UNATTRIBUTED

    hashes = [subject_hash_of(f"{UNATTRIBUTED}:{day}") for day in range(before_day - days_back, before_day)]
    return len(subject_keys_shred(hashes))
