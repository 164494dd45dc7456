"""Writes of the deletion app: file a ticket, expand it, remove a wrongly linked identifier, review a held
expansion, confirm, and run the erasure job (the durable job on the deletion queue).

Every officer action runs in one transaction with its audit record. The job is the ticket row: a task claims
it with a conditional UPDATE (lease owner + expiry on the database's clock), renews the lease by heartbeat
while a step runs, and records each step before and after it runs, so a worker killed mid-ticket leaves a
ticket that the sweeper (``deletion_resume_stale``) queues again once the lease lapses; the next worker skips
the steps done and re-runs the one that was running (steps are idempotent). A queued ticket holds a ``queued``
lease for DELETION_QUEUED_GRACE_SECONDS, which its task may claim and the sweeper respects.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import DateTimeField, ExpressionWrapper, Q
from django.db.models.functions import Coalesce, Now
from django.utils import timezone
from django.utils.module_loading import import_string

from deletion import evidence, sla, subject
from deletion.erasure_types import ErasureStep, ErasureSubject, Expansion, Identifier, TransientStoreError
from deletion.models import (
    DeletionEvidence,
    DeletionStep,
    DeletionTicket,
    Regulation,
    StepStatus,
    TicketStatus,
)
from portal.roles import SYSTEM, may_handle_deletions
from portal.services import audit_record_write

log = logging.getLogger(__name__)

MAX_REASON_LENGTH = 1000


class DeletionError(Exception):
    """A refused action, with a stable ``code``, a message for people and the form/API field it concerns."""

    def __init__(self, code: str, message: str, *, status_code: int = 400, field: str | None = None):
        super().__init__(message)
        self.code, self.message, self.status_code, self.field = code, message, status_code, field


def _require_officer(actor: Any) -> None:
    if not may_handle_deletions(actor):
        raise DeletionError("forbidden", "Only privacy officers and admins handle deletion requests.",
                            status_code=403)


def _locked(ticket: DeletionTicket) -> DeletionTicket:
    return DeletionTicket.objects.select_for_update().get(pk=ticket.pk)


def _state(ticket: DeletionTicket) -> dict[str, Any]:
    """What the audit log keeps of a ticket: no identifier values (the log outlives the ticket's hashing)."""
    return {"reference": ticket.reference, "status": ticket.status, "regulation": ticket.regulation,
            "received_at": ticket.received_at.isoformat(), "due_at": ticket.due_at.isoformat(),
            "identifiers": len(ticket.identifiers), "linked": len(ticket.expansion),
            "removed": [subject.identifier_hash(r["id_key"], key=_hash_key())[:16]
                        for r in ticket.removals if "id_key" in r]}


def _hash_key() -> bytes:
    """The platform's subject-hash key (SUBJECT_HASH_SECRET): what a done ticket's identifiers are hashed with."""
    from deletion.subject_keys import subject_hash_key

    return subject_hash_key(settings.SUBJECT_HASH_SECRET)


# --- filing and expansion -------------------------------------------------------------------------------

def ticket_file(*, actor: Any, regulation: str, identifiers: Sequence[Identifier], requester_reference: str,
                received_at: datetime, now: datetime | None = None) -> DeletionTicket:
    """File a ticket and show its expansion (``ticket_expand``; a failed expansion leaves it filed, with the
    reason, to expand again)."""
    _require_officer(actor)
    now = now or timezone.now()
    if regulation not in Regulation.values:
        raise DeletionError("invalid_regulation", f"Unknown regulation {regulation!r}: use gdpr or ccpa.",
                            field="regulation")
    reference = (requester_reference or "").strip()
    if not reference or len(reference) > 200 or any(not ch.isprintable() for ch in reference):
        raise DeletionError("invalid_requester_reference",
                            "The requester's reference is required: printable text of at most 200 characters.",
                            field="requester_reference")
    if received_at.tzinfo is None:
        raise DeletionError("invalid_received_at", "The received-at time needs a time zone.", field="received_at")
    if received_at > now + timedelta(minutes=5):
        raise DeletionError("invalid_received_at", "The received-at time is in the future.", field="received_at")
    if not identifiers:
        raise DeletionError("invalid_identifiers", "Give at least one identifier of the person to erase.",
                            field="identifiers")
    due = sla.due_at(received_at, settings.DELETION_SLA_HOURS[regulation])
    with transaction.atomic():
        ticket = DeletionTicket.objects.create(
            regulation=regulation, requester_reference=reference, received_at=received_at, due_at=due,
            identifiers=[subject.identifier_row(i) for i in identifiers], filed_by=actor)
        audit_record_write(actor=actor, action="deletion_ticket.file", obj=ticket, after=_state(ticket))
    return ticket_expand(actor=actor, ticket=ticket)


def _expander() -> Callable[[Sequence[Identifier]], Expansion]:
    return import_string(settings.DELETION_EXPANDER)


def ticket_expand(*, actor: Any, ticket: DeletionTicket) -> DeletionTicket:
    """Ask the identity graph for every identifier the given ones reach and store it for the officer. An
    expansion that reaches a large group is held for a second officer's review."""
    _require_officer(actor)
    if ticket.status not in (TicketStatus.FILED, TicketStatus.EXPANDED, TicketStatus.HELD):
        raise DeletionError("not_expandable", f"{ticket.reference} is {ticket.get_status_display().lower()}: "
                            "its expansion is final.", status_code=409)
    given = [subject.identifier_from_row(r) for r in ticket.identifiers]
    try:
        expansion = _expander()(subject.lookup_identifiers(given))
    except Exception as err:  # noqa: BLE001 - the graph may be unreachable; the officer sees why and retries
        log.warning("deletion: expansion of %s failed", ticket.reference, exc_info=True)
        with transaction.atomic():
            ticket = _locked(ticket)
            ticket.expansion_error = f"The identity graph could not be read: {type(err).__name__}: {err}"[:2000]
            ticket.save(update_fields=["expansion_error"])
        return ticket
    with transaction.atomic():
        ticket = _locked(ticket)
        before = _state(ticket)
        ticket.expansion = subject.expansion_rows(expansion, given)
        ticket.held_reasons = list(expansion.held_reasons)
        ticket.expansion_error = ""
        ticket.removals = []
        ticket.reviewed_by, ticket.reviewed_at = None, None
        ticket.status = TicketStatus.HELD if expansion.held_reasons else TicketStatus.EXPANDED
        ticket.save()
        audit_record_write(actor=actor, action="deletion_ticket.expand", obj=ticket, before=before,
                           after={**_state(ticket), "held_reasons": len(ticket.held_reasons)})
    return ticket


def _require_reviewable(ticket: DeletionTicket) -> None:
    if ticket.status not in (TicketStatus.EXPANDED, TicketStatus.HELD):
        raise DeletionError("not_open_for_confirmation",
                            f"{ticket.reference} is {ticket.get_status_display().lower()}: its expansion can no "
                            "longer change.", status_code=409)


def ticket_identifier_remove(*, actor: Any, ticket: DeletionTicket, id_key: str, reason: str) -> DeletionTicket:
    """Take a wrongly linked identifier out of the expansion, with the reason (kept in the evidence)."""
    _require_officer(actor)
    reason = (reason or "").strip()
    if not reason:
        raise DeletionError("reason_required", "Say why this identifier is wrongly linked.", field="reason")
    if len(reason) > MAX_REASON_LENGTH:
        raise DeletionError("reason_too_long", f"The reason is longer than {MAX_REASON_LENGTH} characters.",
                            field="reason")
    with transaction.atomic():
        ticket = _locked(ticket)
        _require_reviewable(ticket)
        keys = {row["id_key"] for row in ticket.expansion}
        removed = {r["id_key"] for r in ticket.removals}
        if id_key not in keys:
            raise DeletionError("unknown_identifier", "That identifier is not in this ticket's expansion.",
                                field="identifier")
        if id_key in removed:
            return ticket
        if len(keys - removed) <= 1:
            raise DeletionError("last_identifier", "At least one identifier must stay: withdraw the request "
                                "instead of removing every identifier.", field="identifier")
        before = _state(ticket)
        ticket.removals = [*ticket.removals, {"id_key": id_key, "reason": reason, "by": actor.get_username(),
                                              "at": timezone.now().isoformat()}]
        ticket.save(update_fields=["removals"])
        audit_record_write(actor=actor, action="deletion_ticket.remove_identifier", obj=ticket, before=before,
                           after={**_state(ticket), "reason_given": True})
    return ticket


def ticket_review_approve(*, actor: Any, ticket: DeletionTicket) -> DeletionTicket:
    """A second officer's review of a held expansion: not the officer who filed it. The ticket may then be
    confirmed."""
    _require_officer(actor)
    with transaction.atomic():
        ticket = _locked(ticket)
        if ticket.status != TicketStatus.HELD:
            raise DeletionError("not_held", f"{ticket.reference} is not held for review.", status_code=409)
        if ticket.filed_by_id is not None and ticket.filed_by_id == getattr(actor, "pk", None):
            raise DeletionError("same_officer", "A held expansion is reviewed by a second privacy officer, not by "
                                "the officer who filed the ticket.", status_code=403)
        before = _state(ticket)
        ticket.status = TicketStatus.EXPANDED
        ticket.reviewed_by, ticket.reviewed_at = actor, timezone.now()
        ticket.save(update_fields=["status", "reviewed_by", "reviewed_at"])
        audit_record_write(actor=actor, action="deletion_ticket.review", obj=ticket, before=before,
                           after={**_state(ticket), "held_reasons": len(ticket.held_reasons)})
    return ticket


def ticket_confirm(*, actor: Any, ticket: DeletionTicket) -> DeletionTicket:
    """Confirm the expansion (as it stands after removals) and queue the erasure job."""
    _require_officer(actor)
    with transaction.atomic():
        ticket = _locked(ticket)
        if ticket.status == TicketStatus.HELD:
            raise DeletionError("review_required", f"{ticket.reference} reaches an unusually large group ("
                                + "; ".join(ticket.held_reasons) + "): a second privacy officer must review it "
                                "before it can run.", status_code=409)
        if ticket.status == TicketStatus.FILED:
            raise DeletionError("not_expanded", f"{ticket.reference} has no expansion yet: expand it first.",
                                status_code=409)
        _require_reviewable(ticket)
        before = _state(ticket)
        ticket.status = TicketStatus.CONFIRMED
        ticket.confirmed_by, ticket.confirmed_at = actor, timezone.now()
        ticket.save(update_fields=["status", "confirmed_by", "confirmed_at"])
        audit_record_write(actor=actor, action="deletion_ticket.confirm", obj=ticket, before=before,
                           after=_state(ticket))
        ticket_id = ticket.pk
        transaction.on_commit(lambda: _enqueue(ticket_id))
    return ticket


def ticket_retry(*, actor: Any, ticket: DeletionTicket) -> DeletionTicket:
    """Run a failed ticket again: the steps done stay done, the failed one starts with fresh attempts."""
    _require_officer(actor)
    with transaction.atomic():
        ticket = _locked(ticket)
        if ticket.status != TicketStatus.FAILED:
            raise DeletionError("not_failed", f"{ticket.reference} has not failed.", status_code=409)
        before = _state(ticket)
        ticket.steps.exclude(status=StepStatus.DONE).update(status=StepStatus.PENDING, attempts=0)
        ticket.status, ticket.error = TicketStatus.CONFIRMED, ""
        ticket.save(update_fields=["status", "error"])
        audit_record_write(actor=actor, action="deletion_ticket.retry", obj=ticket, before=before,
                           after=_state(ticket))
        ticket_id = ticket.pk
        transaction.on_commit(lambda: _enqueue(ticket_id))
    return ticket


def evidence_download_record(*, actor: Any, ticket: DeletionTicket, viewed: bool = False) -> None:
    """The evidence names the person in clear: each download, and each view of its page, is in the audit log."""
    _require_officer(actor)
    audit_record_write(actor=actor, action="deletion_ticket.evidence_view" if viewed else
                       "deletion_ticket.evidence_download", obj=ticket, after=_state(ticket))


QUEUED_OWNER = "queued"


def _queued_until() -> ExpressionWrapper:
    return ExpressionWrapper(Now() + timedelta(seconds=settings.DELETION_QUEUED_GRACE_SECONDS),
                             output_field=DateTimeField())


def _enqueue(ticket_id: int) -> bool:
    """Mark the ticket queued (lease owner ``queued``, until the grace period ends) and queue its task: the
    sweeper leaves a ticket waiting in the queue alone until then, and the task may still claim it. Publishes
    only if the mark applied (a worker that claimed the ticket in between needs no task). If the publish fails
    (broker down) the mark is cleared, so the next sweep queues the ticket again instead of a grace period
    later. True when a task was published."""
    from deletion.tasks import deletion_ticket_run

    marked = DeletionTicket.objects.filter(
        Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=Now()) | Q(lease_owner=QUEUED_OWNER),
        pk=ticket_id, status__in=[TicketStatus.CONFIRMED, TicketStatus.RUNNING],
    ).update(lease_owner=QUEUED_OWNER, lease_expires_at=_queued_until())
    if not marked:
        return False
    try:
        deletion_ticket_run.delay(ticket_id)
    except Exception:
        DeletionTicket.objects.filter(pk=ticket_id, lease_owner=QUEUED_OWNER).update(lease_owner="",
                                                                                     lease_expires_at=None)
        log.exception("deletion: could not queue the task of ticket %s; the next sweep queues it again", ticket_id)
        return False
    return True


# --- the erasure job ------------------------------------------------------------------------------------

def erasure_steps() -> list[ErasureStep]:
    """Every step of an erasure, in the order of DELETION_STEP_PROVIDERS; names must be unique."""
    steps: list[ErasureStep] = []
    for path in settings.DELETION_STEP_PROVIDERS:
        steps.extend(import_string(path)())
    names = [s.name for s in steps]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Erasure step names must be unique; repeated: {', '.join(duplicates)}")
    return steps


def ticket_subject(ticket: DeletionTicket) -> ErasureSubject:
    return subject.confirmed_subject(ticket.reference, ticket.expansion, [r["id_key"] for r in ticket.removals])


def _lease_until() -> ExpressionWrapper:
    return ExpressionWrapper(Now() + timedelta(seconds=settings.DELETION_LEASE_SECONDS),
                             output_field=DateTimeField())


BACKOFF_OWNER = "backoff"


class StepRetryLater(TransientStoreError):
    """A step failed transiently: the ticket is held for ``seconds`` (its backoff), then run again."""

    def __init__(self, message: str, seconds: float):
        super().__init__(message)
        self.seconds = seconds


def retry_delay_seconds(attempts: int) -> float:
    """Exponential backoff after the ``attempts``-th failed attempt of a step: base, 2×base, 4×base … capped."""
    base, cap = settings.DELETION_RETRY_BASE_SECONDS, settings.DELETION_RETRY_MAX_SECONDS
    return min(cap, base * 2 ** max(0, attempts - 1))


class LeaseLost(Exception):
    """Another worker took the ticket over (this one stalled past its lease): stop without writing."""


class _Heartbeat(threading.Thread):
    """Renews the lease every third of it while the job runs, on its own database connection."""

    def __init__(self, ticket_id: int, owner: str):
        super().__init__(name=f"deletion-heartbeat-{ticket_id}", daemon=True)
        self.ticket_id, self.owner = ticket_id, owner
        self.stopped = threading.Event()
        self.lost = threading.Event()

    def run(self) -> None:
        # a failed renewal (a database blip) is retried at the next beat, never the end of the heartbeat: a
        # heartbeat that stopped for good would let the lease lapse under a long step, and a second worker
        # would run the same step beside this one (fencing stops its writes, not its store work)
        failing_since: float | None = None
        try:
            while not self.stopped.wait(settings.DELETION_LEASE_SECONDS / 3):
                try:
                    renewed = DeletionTicket.objects.filter(pk=self.ticket_id, lease_owner=self.owner).update(
                        lease_expires_at=_lease_until())
                except Exception:  # noqa: BLE001 - logged; renewed again at the next beat
                    log.warning("deletion: lease renewal of ticket %s failed", self.ticket_id, exc_info=True)
                    connection.close()  # a broken connection is reopened by the next query
                    failing_since = failing_since or time.monotonic()
                    if time.monotonic() - failing_since >= settings.DELETION_LEASE_SECONDS:
                        self.lost.set()  # the lease has lapsed by now: another worker may hold it
                        return
                    continue
                failing_since = None
                if not renewed:
                    self.lost.set()
                    return
        finally:
            connection.close()


def ticket_execute(*, ticket_id: int, worker_id: str) -> str:
    """Run (or resume) a confirmed ticket's erasure. Returns ``done``, ``failed``, ``busy`` (another worker holds
    it), ``lost`` (taken over), or ``nothing`` (not runnable). Raises StepRetryLater (a TransientStoreError) with
    the backoff for the task to retry after, while the step has attempts left."""
    claimed = DeletionTicket.objects.filter(
        Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=Now()) | Q(lease_owner=QUEUED_OWNER),
        pk=ticket_id, status__in=[TicketStatus.CONFIRMED, TicketStatus.RUNNING],
    ).update(lease_owner=worker_id, lease_expires_at=_lease_until(), status=TicketStatus.RUNNING,
             started_at=Coalesce("started_at", Now()))
    if not claimed:
        exists = DeletionTicket.objects.filter(
            pk=ticket_id, status__in=[TicketStatus.CONFIRMED, TicketStatus.RUNNING]).exists()
        return "busy" if exists else "nothing"
    heartbeat = _Heartbeat(ticket_id, worker_id)
    heartbeat.start()
    try:
        return _steps_run(DeletionTicket.objects.get(pk=ticket_id), worker_id, heartbeat)
    except LeaseLost:
        log.warning("deletion: %s lost ticket %s to another worker", worker_id, ticket_id)
        return "lost"
    finally:
        heartbeat.stopped.set()
        heartbeat.join(timeout=10)
        DeletionTicket.objects.filter(pk=ticket_id, lease_owner=worker_id).update(lease_owner="",
                                                                                  lease_expires_at=None)


def _fenced(ticket_id: int, worker_id: str, heartbeat: _Heartbeat) -> None:
    """Raise LeaseLost unless this worker still holds the ticket (checked inside the caller's transaction)."""
    held = DeletionTicket.objects.select_for_update().filter(pk=ticket_id, lease_owner=worker_id).exists()
    if heartbeat.lost.is_set() or not held:
        raise LeaseLost


def _step_rows(ticket: DeletionTicket, steps: Sequence[ErasureStep]) -> list[DeletionStep]:
    rows = []
    for position, step in enumerate(steps):
        row, _ = DeletionStep.objects.get_or_create(ticket=ticket, name=step.name,
                                                    defaults={"position": position, "store": step.store})
        rows.append(row)
    return rows


def _steps_run(ticket: DeletionTicket, worker_id: str, heartbeat: _Heartbeat) -> str:
    try:
        steps = erasure_steps()
    except Exception as err:  # noqa: BLE001 - a configuration error: the ticket fails and says why
        log.exception("deletion: the erasure steps could not be loaded")
        return _ticket_fail(ticket, worker_id, heartbeat, f"The erasure steps could not be loaded: {err}")
    rows = _step_rows(ticket, steps)
    target = ticket_subject(ticket)
    for step, row in zip(steps, rows, strict=True):
        if row.status == StepStatus.DONE:
            continue  # done before a crash or a retry: not redone
        outcome = _step_run(ticket, row, step, target, worker_id, heartbeat)
        if outcome is not None:
            return outcome
    return _ticket_finish(ticket, worker_id, heartbeat)


def _step_run(ticket: DeletionTicket, row: DeletionStep, step: ErasureStep, target: ErasureSubject,
              worker_id: str, heartbeat: _Heartbeat) -> str | None:
    """Run one step and record it. None when it is done (next step); otherwise the job's outcome."""
    if row.attempts >= settings.DELETION_STEP_MAX_ATTEMPTS:
        return _step_fail(ticket, row, worker_id, heartbeat,
                          f"gave up after {row.attempts} attempts: {row.error or 'no error recorded'}")
    with transaction.atomic():
        _fenced(ticket.pk, worker_id, heartbeat)
        row.status, row.attempts, row.error = StepStatus.RUNNING, row.attempts + 1, ""
        row.started_at, row.finished_at = timezone.now(), None
        row.save(update_fields=["status", "attempts", "error", "started_at", "finished_at"])
    try:
        result = step.run(target)
    except TransientStoreError as err:
        if row.attempts >= settings.DELETION_STEP_MAX_ATTEMPTS:
            return _step_fail(ticket, row, worker_id, heartbeat, f"{type(err).__name__}: {err}")
        delay = retry_delay_seconds(row.attempts)
        with transaction.atomic():
            _fenced(ticket.pk, worker_id, heartbeat)
            row.status, row.error = StepStatus.PENDING, f"{type(err).__name__}: {err}"[:2000]
            row.save(update_fields=["status", "error"])
            # held for the backoff: neither the sweeper nor a duplicate task takes it before the retry is due
            DeletionTicket.objects.filter(pk=ticket.pk).update(
                lease_owner=BACKOFF_OWNER, lease_expires_at=ExpressionWrapper(
                    Now() + timedelta(seconds=delay), output_field=DateTimeField()))
        raise StepRetryLater(str(err), delay) from err
    except Exception as err:  # noqa: BLE001 - not transient: the ticket fails, the officer sees why and retries
        log.exception("deletion: step %s of %s failed", step.name, ticket.reference)
        return _step_fail(ticket, row, worker_id, heartbeat, f"{type(err).__name__}: {err}")
    result_row = {"store": result.store, "removed": result.removed, "verification": result.verification,
                  "remaining": result.remaining, "detail": dict(result.detail)}
    if result.remaining != 0:
        return _step_fail(ticket, row, worker_id, heartbeat,
                          f"the verification found {result.remaining} remaining after the erasure", result=result_row)
    with transaction.atomic():
        _fenced(ticket.pk, worker_id, heartbeat)
        row.status, row.result, row.finished_at = StepStatus.DONE, result_row, timezone.now()
        row.save(update_fields=["status", "result", "finished_at"])
    return None


def _step_fail(ticket: DeletionTicket, row: DeletionStep, worker_id: str, heartbeat: _Heartbeat,
               error: str, *, result: dict[str, Any] | None = None) -> str:
    """Fail the step (and the ticket). Its ``result`` is written only when given: a step may have kept a
    journal there while it ran (deletion.shredding), which this worker's copy of the row has not seen."""
    with transaction.atomic():
        _fenced(ticket.pk, worker_id, heartbeat)
        row.status, row.error, row.finished_at = StepStatus.FAILED, error[:2000], timezone.now()
        fields = ["status", "error", "finished_at"]
        if result is not None:
            row.result = result
            fields.append("result")
        row.save(update_fields=fields)
    return _ticket_fail(ticket, worker_id, heartbeat, f"Step {row.name} ({row.store}) failed: {error}")


def _ticket_fail(ticket: DeletionTicket, worker_id: str, heartbeat: _Heartbeat, error: str) -> str:
    with transaction.atomic():
        _fenced(ticket.pk, worker_id, heartbeat)
        ticket = _locked(ticket)
        before = _state(ticket)
        ticket.status, ticket.error = TicketStatus.FAILED, error[:4000]
        ticket.save(update_fields=["status", "error"])
        audit_record_write(actor=SYSTEM, action="deletion_ticket.fail", obj=ticket, before=before,
                           after={**_state(ticket), "error": ticket.error})
    return "failed"


def _ticket_finish(ticket: DeletionTicket, worker_id: str, heartbeat: _Heartbeat) -> str:
    """Write the evidence and hash the ticket's identifiers, in one transaction."""
    with transaction.atomic():
        _fenced(ticket.pk, worker_id, heartbeat)
        ticket = _locked(ticket)
        before = _state(ticket)
        finished = timezone.now()
        name = (lambda user: user.get_username() if user else None)  # noqa: E731
        record = evidence.evidence_record(
            ticket={"reference": ticket.reference, "regulation": ticket.get_regulation_display(),
                    "requester_reference": ticket.requester_reference, "received_at": ticket.received_at,
                    "due_at": ticket.due_at, "filed_by": name(ticket.filed_by),
                    "reviewed_by": name(ticket.reviewed_by), "reviewed_at": ticket.reviewed_at,
                    "confirmed_by": name(ticket.confirmed_by), "confirmed_at": ticket.confirmed_at,
                    "started_at": ticket.started_at, "held_reasons": list(ticket.held_reasons)},
            subject=ticket_subject(ticket),
            steps=list(ticket.steps.order_by("position").values("name", "store", "attempts", "started_at",
                                                                  "finished_at", "result")),
            removals=ticket.removals, finished_at=finished)
        DeletionEvidence.objects.update_or_create(ticket=ticket, defaults={"record": record})
        key = _hash_key()
        ticket.identifiers = subject.rows_hashed(ticket.identifiers, key=key)
        ticket.expansion = subject.rows_hashed(ticket.expansion, key=key)
        ticket.removals = subject.rows_hashed(ticket.removals, key=key)
        # the reasons a second review was needed name the shared identifier: the evidence keeps them
        ticket.held_reasons = [f"{len(ticket.held_reasons)} reason(s) for a second review: see the evidence"] \
            if ticket.held_reasons else []
        ticket.identifiers_hashed = True
        ticket.status, ticket.finished_at, ticket.error = TicketStatus.DONE, finished, ""
        ticket.save()
        audit_record_write(actor=SYSTEM, action="deletion_ticket.done", obj=ticket, before=before,
                           after={"reference": ticket.reference, "status": ticket.status,
                                  "finished_at": finished.isoformat(), "within_sla": record["within_sla"]})
    return "done"


def deletion_resume_stale() -> list[int]:
    """Queue again every confirmed or running ticket nobody holds (its worker died, or its task was lost): the
    task that takes it resumes after the last step done. Run by the beat every DELETION_RESUME_INTERVAL_S.

    A ticket merely waiting in the queue is held by its ``queued`` mark (``_enqueue``) and is left alone until
    DELETION_QUEUED_GRACE_SECONDS pass without a worker taking it (its task was lost, or the queue is that
    far behind): one more task then, not one per sweep. Returns the tickets it queued a task for."""
    stale = list(DeletionTicket.objects.filter(
        Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=Now()),
        status__in=[TicketStatus.CONFIRMED, TicketStatus.RUNNING]).values_list("pk", flat=True))
    return [ticket_id for ticket_id in stale if _enqueue(ticket_id)]
