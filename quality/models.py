"""Data-quality runs and their check results (the checks are Soda contracts generated from the
canonical model and the registry: ``quality.soda_contracts``). Kept 13 months
(``QUALITY_RESULTS_RETENTION_DAYS``); the scheduled run purges older ones."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class QualityRun(models.Model):
    """One table's checks in one run. Every table of a run shares ``run_id``. A run asked for in the
    portal is ``queued`` until a worker of the quality queue takes it."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        ERROR = "error"

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule"
        MANUAL = "manual"
        COMMAND = "command"

    run_id = models.UUIDField(db_index=True)
    table = models.CharField(max_length=96, help_text="SCHEMA.TABLE, e.g. CANONICAL.EVENTS")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.SCHEDULE)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    database = models.CharField(max_length=255, blank=True)
    contract_yaml = models.TextField(blank=True, help_text="The generated Soda contract this run verified")
    contract_fingerprint = models.CharField(max_length=64, blank=True)
    contract_versions = models.JSONField(default=list, blank=True,
                                         help_text="Canonical model and contract versions the contract derives from")
    error = models.TextField(blank=True, help_text="Why the run could not check the table (warehouse down …)")
    passed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    warned = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    not_evaluated = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ("-queued_at", "table")
        indexes = [models.Index(fields=("table", "-queued_at")), models.Index(fields=("status",))]

    def __str__(self) -> str:
        return f"{self.table} {self.status} ({self.run_id})"


class CheckResult(models.Model):
    """One generated check's outcome in one run: the measured value against the threshold, and a
    sample of the failing rows with personal fields masked."""

    class Outcome(models.TextChoices):
        PASSED = "passed"
        FAILED = "failed"
        WARNED = "warned"
        ERROR = "error"
        NOT_EVALUATED = "not_evaluated", "not evaluated"

    run = models.ForeignKey(QualityRun, on_delete=models.CASCADE, related_name="results")
    table = models.CharField(max_length=96)
    check_key = models.CharField(max_length=200, help_text="type:column:qualifier")
    check_type = models.CharField(max_length=32)
    check_name = models.CharField(max_length=300)
    column = models.CharField(max_length=128, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    measured_value = models.FloatField(null=True, blank=True)
    threshold = models.CharField(max_length=200, blank=True)
    diagnostics = models.JSONField(default=dict, blank=True)
    #: [{"source_id": …, "row": {column: masked value}}]: at most a few rows per source
    sample = models.JSONField(default=list, blank=True)
    sample_error = models.TextField(blank=True)
    error = models.TextField(blank=True)
    checked_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("run", "id")
        indexes = [models.Index(fields=("table", "check_key", "-checked_at"))]

    def __str__(self) -> str:
        return f"{self.table} {self.check_key}: {self.outcome}"


class SourceHour(models.Model):
    """One hour of one source's pipeline figures, rolled up from ``ingest_workers.PipelineMinute`` (kept only
    24 h) so that the anomaly baselines can compare an hour with the same hour of past weeks. Kept
    ``QUALITY_SOURCE_HOURS_KEEP_DAYS`` (8 weeks). ``source`` "" is the stream-wide row (merged events and the
    largest shard lag)."""

    hour = models.DateTimeField()
    source = models.CharField(max_length=64, blank=True)
    records = models.PositiveBigIntegerField(default=0)
    events = models.PositiveBigIntegerField(default=0)
    quarantined = models.PositiveBigIntegerField(default=0)
    merged = models.PositiveBigIntegerField(default=0)
    max_lag_ms = models.BigIntegerField(null=True, blank=True)
    minutes = models.PositiveSmallIntegerField(default=0, help_text="Per-minute rows the hour was rolled up from")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["hour", "source"], name="quality_source_hour_unique")]
        indexes = [models.Index(fields=["source", "hour"])]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}h {self.source or '(stream)'}: {self.records} records"


class ScorecardSnapshot(models.Model):
    """A scorecard's grade at one evaluation (after each check cycle): the history chart reads these.
    ``subject`` is "platform", a source's name, or "<contract subject> v<version>". Kept
    ``QUALITY_SCORECARD_RETENTION_DAYS`` (35)."""

    class Kind(models.TextChoices):
        PLATFORM = "platform"
        SOURCE = "source"
        CONTRACT = "contract"

    class Level(models.TextChoices):
        GREEN = "green"
        AMBER = "amber"
        RED = "red"
        UNKNOWN = "unknown", "no data"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    subject = models.CharField(max_length=200)
    evaluated_at = models.DateTimeField(default=timezone.now)
    level = models.CharField(max_length=16, choices=Level.choices)
    score = models.PositiveSmallIntegerField()
    #: [{"key", "code", "severity", "summary", "since", "details"}]: what lowered the grade, worst first
    reasons = models.JSONField(default=list, blank=True)
    #: the figures graded (records, quarantined, window …), for the drill-down
    facts = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ("kind", "subject", "-evaluated_at")
        indexes = [models.Index(fields=("kind", "subject", "-evaluated_at")), models.Index(fields=("evaluated_at",))]

    def __str__(self) -> str:
        return f"{self.kind} {self.subject}: {self.level} {self.score} at {self.evaluated_at:%Y-%m-%d %H:%M}"
