"""The admin shows sources, contracts and versions; it never writes them.

Writes go through the portal's pages and the API, whose services apply the rules (loosening a
compatibility mode needs a data engineer, four eyes on a version, a source's name never changes) and
write the audit log (hostile-input sweep D4; docs/decisions.md, "The Django admin is read-only")."""

from django.contrib import admin

from contracts.models import Contract, ContractVersion, Source
from portal.admin import ReadOnlyAdmin


@admin.register(Source)
class SourceAdmin(ReadOnlyAdmin):
    list_display = ["name", "team", "platform", "kind", "is_active"]
    list_filter = ["platform", "kind", "is_active", "team"]
    exclude = ["write_key_hash", "signing_secret"]


@admin.register(Contract)
class ContractAdmin(ReadOnlyAdmin):
    list_display = ["subject", "source", "compatibility", "is_canonical"]
    list_filter = ["compatibility", "is_canonical"]


@admin.register(ContractVersion)
class ContractVersionAdmin(ReadOnlyAdmin):
    list_display = ["contract", "version", "status", "author", "reviewer", "created_at"]
    list_filter = ["status"]
