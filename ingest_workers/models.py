"""Shard leases and checkpoints: which worker reads which Kinesis shard, and how far it has got."""

from __future__ import annotations

from django.db import models


class ShardLease(models.Model):
    """One row per shard of a stream.

    A worker owns a shard while `lease_expires_at` (compared with the DATABASE's clock, never a
    worker's) is in the future; a heartbeat renews it. `lease_counter` is the fencing token: it goes
    up on EVERY acquisition, by the same owner too, and every renewal and checkpoint is conditional
    on it, so a worker whose lease was taken over (or a redelivered task) cannot move anything.
    A shard whose batches keep failing is parked (`parked_at`, `park_reason`) instead of spun on.
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
    # Consecutive failed attempts at the current unit, when the next may start, and why it failed.
    failures = models.PositiveIntegerField(default=0)
    retry_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # Set after the retry budget is spent: nobody reads the shard until an operator unparks it.
    parked_at = models.DateTimeField(null=True, blank=True)
    park_reason = models.TextField(blank=True)
    last_batch_at = models.DateTimeField(null=True, blank=True)
    millis_behind_latest = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["stream", "shard_id"], name="shard_lease_unique")]
        ordering = ["stream", "shard_id"]

    def __str__(self) -> str:
        return f"{self.stream}/{self.shard_id}"


class IngestWorker(models.Model):
    """A live consumer process (or the merger): the lease taker counts these to compute each one's
    fair share of the shards, like the Kinesis Client Library's worker table."""

    worker_id = models.CharField(max_length=128, unique=True)
    stream = models.CharField(max_length=128)
    heartbeat_at = models.DateTimeField()
    started_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["stream", "worker_id"]

    def __str__(self) -> str:
        return self.worker_id


class WorkerLease(models.Model):
    """A named singleton role (the merger): one holder at a time, a fencing token per acquisition,
    renewed by a heartbeat, expiring on the database's clock."""

    name = models.CharField(max_length=64, unique=True)
    owner = models.CharField(max_length=128, blank=True)
    fence = models.PositiveBigIntegerField(default=0)
    expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} held by {self.owner or 'nobody'}"


class CollectorAnswer(models.Model):
    """What the collectors answered, per source, minute and answer code ("accepted", or the error code
    of a refusal: invalid_write_key, rotated_write_key, payload_too_large …): the source and pipeline
    pages show the last hour, so a sender being turned away (a rotated key, a bad payload) is seen at
    once. ``source`` is "" when the request named no source we know (an unknown key)."""

    source = models.CharField(max_length=64, blank=True)
    minute = models.DateTimeField()
    code = models.CharField(max_length=64)
    status = models.PositiveSmallIntegerField()
    requests = models.PositiveIntegerField(default=0)
    events = models.PositiveIntegerField(default=0)
    last_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "minute", "code"], name="collector_answer_unique")]
        indexes = [models.Index(fields=["minute"])]

    def __str__(self) -> str:
        return f"{self.source or '?'} {self.minute:%H:%M} {self.code}: {self.requests}"


class PipelineMinute(models.Model):
    """A small per-minute sample of the pipeline, for the Pipeline page's trends (last hour) and its
    per-source breakdown; written by the shard readers and the merger (``ingest_workers.pipeline_stats``),
    kept ``pipeline_stats.KEEP_HOURS``. Not the data quality metrics store: just what the page draws.

    Per source (``source`` is the name the records gave, "(none)" when they gave none): the records
    read, the canonical events landed (every copy) and the records quarantined. On the stream-wide row
    (``source`` ""): the events the merger inserted into CANONICAL.EVENTS and the largest shard lag read.
    """

    minute = models.DateTimeField()
    source = models.CharField(max_length=64, blank=True)
    records = models.PositiveBigIntegerField(default=0)
    events = models.PositiveBigIntegerField(default=0)
    quarantined = models.PositiveBigIntegerField(default=0)
    merged = models.PositiveBigIntegerField(default=0)
    max_lag_ms = models.BigIntegerField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["minute", "source"], name="pipeline_minute_unique")]
        indexes = [models.Index(fields=["minute"])]

    def __str__(self) -> str:
        return f"{self.minute:%H:%M} {self.source or '(stream)'}: {self.events} events"


class PipelineMetricMinute(models.Model):
    """The pipeline's metrics per minute, source and contract version (``ingest_workers.pipeline_stats``;
    docs/metrics.md): one value per ``metric`` (``pipeline_stats.METRICS``) and ``label`` (a quarantine
    reason, a latency bucket's upper bound in seconds, a shard; "" when the metric has none). ``contract``
    is the subject the pipeline validated against ("" when not known), ``version`` its version (0: none);
    ``source`` "" is the stream-wide row. Counts add up over processes; lags and timestamps keep the
    maximum. Written every few seconds from in-memory counts, kept ``PIPELINE_METRICS_KEEP_HOURS``; the
    portal's charts, scorecards and anomaly baselines read it (``ingest_workers.selectors``).
    """

    minute = models.DateTimeField()
    source = models.CharField(max_length=64, blank=True)
    contract = models.CharField(max_length=128, blank=True)
    version = models.PositiveIntegerField(default=0)
    metric = models.CharField(max_length=32)
    label = models.CharField(max_length=64, blank=True)
    value = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["minute", "source", "contract", "version", "metric", "label"],
                                               name="pipeline_metric_minute_unique")]
        indexes = [models.Index(fields=["minute"]), models.Index(fields=["metric", "minute"])]

    def __str__(self) -> str:
        return f"{self.minute:%H:%M} {self.source or '(stream)'} {self.contract}@{self.version} {self.metric}" \
               f"{'[' + self.label + ']' if self.label else ''}={self.value}"
