from django.contrib import admin

from contracts.models import Contract, ContractVersion, Source


@admin.register(Source)
class SourceAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "platform", "kind", "is_active"]
    list_filter = ["platform", "kind", "is_active", "team"]
    exclude = ["write_key_hash", "signing_secret"]
    # the name namespaces every event id the source produces: it never changes once created
    readonly_fields = ["write_key_prefix", "write_key_rotated_at"]

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "name"] if obj is not None else self.readonly_fields


@admin.register(Contract)
class ContractAdmin(admin.ModelAdmin):
    list_display = ["subject", "source", "compatibility", "is_canonical"]
    list_filter = ["compatibility", "is_canonical"]


@admin.register(ContractVersion)
class ContractVersionAdmin(admin.ModelAdmin):
    list_display = ["contract", "version", "status", "author", "reviewer", "created_at"]
    list_filter = ["status"]
    # Writes go through the review workflow (and its audit log), not the admin.
    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False
