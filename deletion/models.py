"""Deletion app models. (Deletion tickets live here too: they are another engineer's part.)"""

from __future__ import annotations

import uuid

from django.db import models


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
