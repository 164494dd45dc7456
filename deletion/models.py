"""Deletion's tables. This file holds the raw archive's subject keys and the suppression list
(deletion.subject_keys, deletion.suppression); the tickets live beside them."""

from __future__ import annotations

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

    def __str__(self) -> str:
        return f"{self.name}={self.value}"
