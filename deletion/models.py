"""Deletion tickets (GDPR/CCPA erasure requests), each step of their erasure job, and their evidence; the raw
archive's subject keys and the suppression list (deletion.subject_keys, deletion.suppression).

A ticket is the durable job itself (issue 12): the task that runs it claims it with a lease (owner + expiry on
the database's clock) and renews it by heartbeat; a run whose lease lapsed (its worker died) is taken over by
the next task the sweeper queues. Steps are rows so that a resumed run skips the ones already done.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class SubjectKey(models.Model):
    """One subject identifier's data key, wrapped by the master key (KMS or the local key).

    ``id_hash`` is the keyed hash of the identifier (``kind:value``), never the identifier; ``key_id``
    is random and is what archive lines name, so a line links to nobody once its key is gone.
    Deleting the row is the crypto-shredding: nothing else holds the wrapped key."""

    id_hash = models.CharField(max_length=64, unique=True)
    key_id = models.CharField(max_length=32, unique=True)
    wrapped_key = models.BinaryField()
    #: which master key wrapped it ("local:<fingerprint>" or the KMS key id)
    master_key = models.CharField(max_length=256)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"subject key {self.key_id}"


class ArchiveWrappingKey(models.Model):
    """A key that wraps subject data keys under ``ARCHIVE_ENCRYPTION=kms``: one per UTC day and KMS key,
    itself wrapped by KMS (``GenerateDataKey``, the encryption context naming it). A new subject costs an
    AES-GCM wrap under the day's key, not a KMS request; a process asks KMS once per wrapping key it
    meets (``Decrypt``). Never deleted, like the KMS key: shredding deletes the subject's ``SubjectKey``
    row, the only place its data key is kept (docs/decisions.md, "Subject keys wrapped under a key of
    the day")."""

    wrapping_key_id = models.CharField(max_length=32, unique=True)
    #: the UTC day whose new subject keys it wraps
    day = models.DateField()
    #: the KMS CiphertextBlob of the key
    wrapped_key = models.BinaryField()
    #: the KMS key that wrapped it, as configured (``ARCHIVE_KMS_KEY_ID``: an id, an ARN or an alias)
    master_key = models.CharField(max_length=256)
    #: the ARN of the key KMS actually used (``GenerateDataKey``'s ``KeyId``): ``Decrypt`` names it, so a
    #: key behind an alias that was later pointed at another key still opens (empty: made before this field)
    kms_key_arn = models.CharField(max_length=2048, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "master_key"], name="one_wrapping_key_per_day")]

    def __str__(self) -> str:
        return f"archive wrapping key {self.wrapping_key_id} ({self.day})"


class SuppressedSubject(models.Model):
    """A keyed hash of an erased subject's identifier: events carrying it are dropped at the worker,
    and re-drives, replays and imports skip them."""

    id_hash = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=32)
    ticket_ref = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"suppressed {self.kind} ({self.ticket_ref})"


class ErasureGeneration(models.Model):
    """One row: goes up whenever keys are shredded or subjects suppressed. Every worker compares it
    once per batch and drops its caches when it moved (the cache invalidation reaches every process)."""

    name = models.CharField(max_length=32, unique=True)
    value = models.BigIntegerField(default=0)
    # new at every bump: a worker that read a value inside a transaction that then rolled back would see the
    # same value again at the next real bump; with the token it cannot mistake that one for what it holds
    token = models.CharField(max_length=32, default="", blank=True)

    def __str__(self) -> str:
        return f"{self.name}={self.value}"


class Regulation(models.TextChoices):
    GDPR = "gdpr", "GDPR"
    CCPA = "ccpa", "CCPA"


class TicketStatus(models.TextChoices):
    FILED = "filed", "Filed"                 # expansion not yet shown (or it failed: see expansion_error)
    EXPANDED = "expanded", "Expanded"        # waiting for the officer's confirmation
    HELD = "held", "Held for review"         # reaches a large group: a second officer must review it
    CONFIRMED = "confirmed", "Confirmed"     # queued on the deletion queue
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


OPEN_STATUSES = (TicketStatus.FILED, TicketStatus.EXPANDED, TicketStatus.HELD, TicketStatus.CONFIRMED,
                 TicketStatus.RUNNING, TicketStatus.FAILED)


class DeletionTicket(models.Model):
    regulation = models.CharField(max_length=8, choices=Regulation.choices)
    requester_reference = models.CharField(max_length=200, help_text="The requester's reference (case number)")
    received_at = models.DateTimeField(help_text="When the request was received (the SLA clock starts here)")
    due_at = models.DateTimeField(db_index=True)
    status = models.CharField(max_length=16, choices=TicketStatus.choices, default=TicketStatus.FILED,
                              db_index=True)
    #: the identifiers given [{kind, value}]; once done [{kind, value_hash}] (keyed hashes; clear only in the evidence)
    identifiers = models.JSONField(default=list)
    #: the expansion shown to the officer [{kind, value, id_key, person_id, platforms, sources, how, given,
    #: group_size}]; hashed like ``identifiers`` once done
    expansion = models.JSONField(default=list, blank=True)
    held_reasons = models.JSONField(default=list, blank=True)
    expansion_error = models.TextField(blank=True)
    #: identifiers the officer removed from the expansion [{id_key, reason, by, at}]
    removals = models.JSONField(default=list, blank=True)
    identifiers_hashed = models.BooleanField(default=False)
    filed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    reviewed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    reviewed_at = models.DateTimeField(null=True, blank=True)
    confirmed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    confirmed_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("due_at", "id")

    def __str__(self) -> str:
        return f"{self.reference} ({self.get_regulation_display()}, {self.get_status_display()})"

    @property
    def reference(self) -> str:
        return f"DEL-{self.pk:06d}" if self.pk else "DEL-new"

    @staticmethod
    def pk_of_reference(reference: str) -> int | None:
        """The ticket id a reference (``DEL-000042``) names, None for anything else."""
        number = reference.removeprefix("DEL-")
        return int(number) if number != reference and number.isdigit() else None


class StepStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class DeletionStep(models.Model):
    ticket = models.ForeignKey(DeletionTicket, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveIntegerField()
    name = models.CharField(max_length=120)
    store = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=StepStatus.choices, default=StepStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    #: the step's StoreResult: {store, removed, verification, remaining, detail}
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ("ticket", "position")
        constraints = [models.UniqueConstraint(fields=["ticket", "name"], name="deletion_step_unique_name")]

    def __str__(self) -> str:
        return f"{self.ticket.reference} {self.name}: {self.status}"


class DeletionEvidence(models.Model):
    """The evidence record of a done ticket: every store, what was removed, the verification and its result,
    timestamps, and the identifiers erased (in clear: the one place a done ticket keeps them)."""

    ticket = models.OneToOneField(DeletionTicket, on_delete=models.CASCADE, related_name="evidence")
    record = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"evidence of {self.ticket.reference}"


class RetentionRun(models.Model):
    """One retention purge of one store: what it removed, with the cut-off it applied (deletion/retention.py)."""

    class Store(models.TextChoices):
        ARCHIVE = "archive", "Raw archive (objects by dt= partition)"
        LANDING = "landing", "Landing table (merged rows)"
        QUARANTINE = "quarantine", "Quarantine payloads"
        CURATED = "curated", "Canonical and curated tables"

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    run_id = models.UUIDField(db_index=True, help_text="The invocation this store's purge was part of.")
    store = models.CharField(max_length=20, choices=Store.choices)
    trigger = models.CharField(max_length=20, default="schedule", help_text="schedule | command")
    keep_days = models.PositiveIntegerField(help_text="The retention applied, in days.")
    cutoff = models.DateTimeField(help_text="Data older than this (UTC) was removed.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    removed = models.BigIntegerField(default=0, help_text="Rows (or objects, for the archive) removed.")
    detail = models.JSONField(default=dict, blank=True, help_text="Removed per table or partition.")
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-started_at", "store")
        indexes = [models.Index(fields=("store", "-started_at"))]

    def __str__(self) -> str:
        return f"retention {self.store} {self.started_at:%Y-%m-%d %H:%M} {self.status}"
