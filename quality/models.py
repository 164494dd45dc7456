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


# --- alerts (quality.alerts, docs/quality.md "Alerts") ---------------------------------------------

class Alert(models.Model):
    """One alert: a condition a rule reported, from the evaluation that first saw it until the first
    evaluation that did not (``resolved_at``). At most one open alert per ``key`` (the constraint makes
    two evaluators racing open one alert, not two)."""

    rule = models.CharField(max_length=64)
    rule_path = models.CharField(max_length=200, help_text="Dotted path of the rule function that reported it")
    key = models.CharField(max_length=300, help_text="<rule>:<subject>: the same condition keeps the same alert")
    subject = models.CharField(max_length=200)
    severity = models.CharField(max_length=16)
    summary = models.TextField()
    details = models.JSONField(default=dict, blank=True)
    runbook = models.CharField(max_length=64, blank=True, help_text="The anchor of its section in docs/runbook.md")
    link = models.CharField(max_length=300, blank=True)
    opened_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                        related_name="+")
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    silenced_until = models.DateTimeField(null=True, blank=True)
    silenced_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")

    class Meta:
        ordering = ("-opened_at", "-id")
        constraints = [models.UniqueConstraint(fields=("key",), condition=models.Q(resolved_at__isnull=True),
                                               name="alert_one_open_per_key")]
        indexes = [models.Index(fields=("resolved_at", "-opened_at"))]

    def __str__(self) -> str:
        return f"{self.key} ({'resolved' if self.resolved_at else 'open'})"


class AlertRuleState(models.Model):
    """How each configured rule fared at its last evaluation: a rule that raised is shown on the alerts
    page with its error (its open alerts are left open: an outage is not a recovery)."""

    rule_path = models.CharField(max_length=200, unique=True, help_text="Dotted path of the rule function")
    evaluated_at = models.DateTimeField()
    ok = models.BooleanField(default=True)
    conditions = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    failing_since = models.DateTimeField(null=True, blank=True)
    last_ok_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("rule_path",)

    def __str__(self) -> str:
        return f"{self.rule_path}: {'ok' if self.ok else 'error'}"


class NotificationChannel(models.Model):
    """Where alert notifications go: an email list (Django's mail backend) or a webhook that takes
    Slack incoming-webhook JSON. A webhook whose host resolves to a non-public address is refused when
    saved and when sent, unless an admin set ``allow_private_address`` (e.g. an in-VPC relay)."""

    class Kind(models.TextChoices):
        EMAIL = "email"
        WEBHOOK = "webhook"

    name = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    target = models.TextField(help_text="Email addresses (comma-separated), or the webhook URL")
    enabled = models.BooleanField(default=True)
    min_severity = models.CharField(max_length=16, default="warning",
                                    help_text="Only alerts of this severity or worse are sent here")
    allow_private_address = models.BooleanField(
        default=False, help_text="Admins only: allow a webhook host that resolves to a loopback, link-local or "
                                 "private address")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"


class AlertNotification(models.Model):
    """One message (the alert opened, or it resolved) to one channel: created once, sent until it
    succeeds or the retry budget is spent. ``next_attempt_at`` is the due time the evaluator polls
    (exponential backoff with jitter); a sender claims it by moving it forward first."""

    class Event(models.TextChoices):
        OPENED = "opened"
        RESOLVED = "resolved"

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed", "gave up"
        SUPPRESSED = "suppressed", "suppressed (silenced or channel disabled)"
        SUPERSEDED = "superseded", "not sent (resolved first)"

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="notifications")
    channel = models.ForeignKey(NotificationChannel, on_delete=models.CASCADE, related_name="notifications")
    event = models.CharField(max_length=16, choices=Event.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("created_at", "id")
        constraints = [models.UniqueConstraint(fields=("alert", "channel", "event"),
                                               name="alert_notification_once")]
        indexes = [models.Index(fields=("status", "next_attempt_at"))]

    def __str__(self) -> str:
        return f"{self.alert.key} {self.event} → {self.channel.name}: {self.status}"


class NotificationAttempt(models.Model):
    """Every try at sending a notification: when, the outcome, the HTTP status, and the error."""

    notification = models.ForeignKey(AlertNotification, on_delete=models.CASCADE, related_name="tries")
    attempted_at = models.DateTimeField()
    ok = models.BooleanField()
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ("attempted_at", "id")

    def __str__(self) -> str:
        return f"{self.notification_id} at {self.attempted_at:%H:%M:%S}: {'ok' if self.ok else self.error[:60]}"


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
