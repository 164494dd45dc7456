"""Read-only admin views of the quality runs: results are written by the checks only."""

from django.contrib import admin

from quality.models import Alert, AlertNotification, CheckResult, NotificationChannel, QualityRun


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(QualityRun)
class QualityRunAdmin(ReadOnlyAdmin):
    list_display = ("table", "status", "trigger", "queued_at", "finished_at", "passed", "failed", "errors")
    list_filter = ("status", "trigger", "table")


@admin.register(CheckResult)
class CheckResultAdmin(ReadOnlyAdmin):
    list_display = ("table", "check_name", "outcome", "measured_value", "threshold", "checked_at")
    list_filter = ("outcome", "table", "check_type")


# Alerts are written by the engine and the alert pages (audited) only; an admin may delete the alerts of a
# retired rule, which the engine leaves open (docs/decisions.md).
@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = ("key", "severity", "opened_at", "resolved_at", "acknowledged_at", "silenced_until")
    list_filter = ("rule", "severity")


@admin.register(AlertNotification)
class AlertNotificationAdmin(ReadOnlyAdmin):
    list_display = ("alert", "channel", "event", "status", "attempts", "next_attempt_at", "sent_at")
    list_filter = ("status", "event")


@admin.register(NotificationChannel)
class NotificationChannelAdmin(ReadOnlyAdmin):
    list_display = ("name", "kind", "enabled", "min_severity", "allow_private_address")

    def has_delete_permission(self, request, obj=None):
        return False  # through the channels page (audited)
