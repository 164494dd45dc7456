"""Read-only admin views of the quality runs: results are written by the checks only."""

from django.contrib import admin

from quality.models import CheckResult, QualityRun


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
