"""Portal-side records of the curated models: the model price catalog, price recompute requests,
model runs, and the lease that keeps two model runs from overlapping.

The curated tables themselves live in the warehouse (``ANALYTICS.*``, ``IDENTITY.*``); these rows
are what people edit and read in the portal.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

TOKEN_KINDS = (
    ("input", "Input (not cached)"),
    ("cached_input", "Cached input"),
    ("output", "Output (reasoning included)"),
)


class ModelPrice(models.Model):
    """One price of one model and token kind, in force from ``effective_from`` until the next
    price of the same model and kind. Rows are never edited or deleted: a change is a new row,
    so the catalog's history is its own audit trail (``version`` orders every change)."""

    model = models.CharField(max_length=128, help_text="Model name as requested, e.g. gpt-4.1-mini")
    token_kind = models.CharField(max_length=16, choices=TOKEN_KINDS)
    usd_per_million = models.DecimalField(max_digits=14, decimal_places=6,
                                          help_text="US dollars per one million tokens")
    effective_from = models.DateTimeField(help_text="UTC; the price applies to hours starting at or after it")
    version = models.PositiveIntegerField(unique=True, help_text="Catalog version this change created")
    note = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("model", "token_kind", "-effective_from", "-version")
        indexes = [models.Index(fields=("model", "token_kind", "effective_from"))]

    def __str__(self) -> str:
        return f"{self.model} {self.token_kind} ${self.usd_per_million}/M from {self.effective_from:%Y-%m-%d %H:%M}"


class PriceRecompute(models.Model):
    """A data engineer's request to re-price past hours (after a backdated price correction).
    The next model run recomputes the hours and sessions it covers, then marks it done."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DONE = "done"

    model = models.CharField(max_length=128, blank=True, help_text="Blank: every model")
    from_time = models.DateTimeField(help_text="UTC; recompute hours starting at or after this")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    requested_at = models.DateTimeField(auto_now_add=True)
    done_run_id = models.UUIDField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-requested_at",)

    def __str__(self) -> str:
        return f"recompute {self.model or 'every model'} from {self.from_time:%Y-%m-%d %H:%M} ({self.status})"


class ModelRun(models.Model):
    """One model's part in one run of the curated models (every model of a run shares ``run_id``)."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        SKIPPED = "skipped"

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule"
        MANUAL = "manual"
        FULL_REFRESH = "full_refresh"

    run_id = models.UUIDField(default=uuid.uuid4, db_index=True)
    model = models.CharField(max_length=64)
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.SCHEDULE)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    rows_changed = models.BigIntegerField(default=0, help_text="Rows deleted plus rows inserted")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    detail = models.JSONField(default=dict, blank=True, help_text="What the model touched (keys recomputed…)")

    class Meta:
        ordering = ("-started_at", "id")
        indexes = [models.Index(fields=("model", "-started_at"))]

    def __str__(self) -> str:
        return f"{self.model} {self.status} ({self.run_id})"


class RunnerLease(models.Model):
    """At most one model run at a time, across every worker process (a lease, not a lock: a
    crashed holder's lease expires)."""

    name = models.CharField(max_length=64, primary_key=True)
    holder = models.CharField(max_length=128, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} held by {self.holder or 'nobody'}"
