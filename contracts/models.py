"""Sources, contracts (subjects), their versions, and the registry's schema ids."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Platform(models.TextChoices):
    WEB = "web", "Web"
    IOS = "ios", "iOS"
    ANDROID = "android", "Android"
    SLACK = "slack", "Slack"
    VOICE = "voice", "Voice"
    API = "api", "Backend API"


class SourceKind(models.TextChoices):
    SDK = "sdk", "SDK"
    BACKEND = "backend", "Backend service"
    WEBHOOK = "webhook", "Webhook"


class CompatibilityLevel(models.TextChoices):
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"
    NONE = "NONE"


class VersionStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    IN_REVIEW = "in_review", "In review"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    DEPRECATED = "deprecated", "Deprecated"


class Source(models.Model):
    """Something that emits events: an app, a bot, a backend. Owned by one team."""

    team = models.ForeignKey("portal.Team", on_delete=models.PROTECT, related_name="sources")
    name = models.SlugField(max_length=64, unique=True)
    description = models.CharField(max_length=255, blank=True)
    platform = models.CharField(max_length=16, choices=Platform.choices)
    kind = models.CharField(max_length=16, choices=SourceKind.choices)
    product = models.CharField(max_length=64, blank=True, help_text="Product line, e.g. assistant, support")
    # The write key is shown once; only its SHA-256 is kept. The prefix helps people tell keys apart.
    write_key_prefix = models.CharField(max_length=16, blank=True)
    write_key_hash = models.CharField(max_length=64, blank=True)
    write_key_rotated_at = models.DateTimeField(null=True, blank=True)
    # The prefix of the key before the last rotation: requests still sending it are counted against
    # this source ("rotated_write_key") instead of as an unknown key.
    previous_write_key_prefix = models.CharField(max_length=16, blank=True)
    # A webhook provider's signing secret must be kept readable: it verifies each request's HMAC.
    signing_secret = models.CharField(max_length=255, blank=True)
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Contract(models.Model):
    """One event stream of one source: a "subject" in Schema Registry terms (`<source>.<event>`)."""

    source = models.ForeignKey(Source, null=True, blank=True, on_delete=models.PROTECT, related_name="contracts")
    subject = models.CharField(max_length=160, unique=True)
    description = models.CharField(max_length=255, blank=True)
    compatibility = models.CharField(
        max_length=24, choices=CompatibilityLevel.choices, default=CompatibilityLevel.BACKWARD_TRANSITIVE
    )
    is_canonical = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["subject"]

    def __str__(self) -> str:
        return self.subject


class SchemaText(models.Model):
    """A distinct schema, registry-wide. Its id is the Schema Registry's global schema id."""

    fingerprint = models.CharField(max_length=64, unique=True)
    # SHA-256 of the normalized form: the registry's "same schema" (attribute order, named primitives).
    # Not unique: texts stored before it existed may share one.
    normalized_fingerprint = models.CharField(max_length=64, db_index=True, default="")
    schema = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"schema {self.pk}"


class ContractVersion(models.Model):
    contract = models.ForeignKey(Contract, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    schema = models.ForeignKey(SchemaText, on_delete=models.PROTECT, related_name="versions")
    mapping = models.JSONField(default=dict, blank=True)
    # Identical schema + mapping resubmitted returns this version instead of a new one.
    content_fingerprint = models.CharField(max_length=64)
    sample_payloads = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=VersionStatus.choices, default=VersionStatus.DRAFT)
    compatibility_report = models.JSONField(default=dict, blank=True)
    mapping_errors = models.JSONField(default=list, blank=True)
    change_summary = models.TextField(blank=True)
    # The team's own Soda checks (YAML, as written; contracts.team_checks validates them when submitted).
    # Immutable like the schema: a change is a new version, reviewed and approved with it.
    team_checks = models.TextField(blank=True, default="")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    review_comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    # Who moved it to review: like its author, they may not review it (four eyes on every change).
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["contract", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["contract", "version"], name="contract_version_unique"),
        ]
        indexes = [models.Index(fields=["contract", "content_fingerprint"]), models.Index(fields=["status"])]

    def __str__(self) -> str:
        return f"{self.contract.subject} v{self.version}"
