"""Shard leases and checkpoints: which worker reads which Kinesis shard, and how far it has got."""

from __future__ import annotations

from django.db import models


class ShardLease(models.Model):
    """One row per shard of a stream.

    A worker owns a shard while `lease_expires_at` is in the future; it renews the lease as it works.
    `lease_counter` goes up on every acquisition and checkpoint writes are conditional on it, so a
    worker whose lease was taken over cannot move the checkpoint back (fencing).
    """

    stream = models.CharField(max_length=128)
    shard_id = models.CharField(max_length=128)
    parent_shard_id = models.CharField(max_length=128, blank=True)
    adjacent_parent_shard_id = models.CharField(max_length=128, blank=True)
    # The last sequence number whose batch is archived and landed; reading resumes after it.
    checkpoint = models.CharField(max_length=128, blank=True)
    owner = models.CharField(max_length=128, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    lease_counter = models.PositiveBigIntegerField(default=0)
    # Set by Kinesis once the shard is closed by a split or merge: no record comes after it.
    ending_sequence_number = models.CharField(max_length=128, blank=True)
    # A closed shard (after resharding) that has been read to its end.
    finished_at = models.DateTimeField(null=True, blank=True)
    records_read = models.PositiveBigIntegerField(default=0)
    last_batch_at = models.DateTimeField(null=True, blank=True)
    millis_behind_latest = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["stream", "shard_id"], name="shard_lease_unique")]
        ordering = ["stream", "shard_id"]

    def __str__(self) -> str:
        return f"{self.stream}/{self.shard_id}"
