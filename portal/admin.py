"""The Django admin: read-only for what the portal's services own, audited where it still writes.

Sources, contracts, versions and role groups are shown, never written here: their writes go through
the portal pages and the API, whose services apply the rules and write the audit log. People and teams
are still managed here (the portal has no page for them); every such write goes into the portal's audit
log too, with the state before and after (hostile-input sweep D4; docs/decisions.md)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.db import transaction

from portal.models import ApiToken, AuditRecord, Team
from portal.services import api_token_revoke, audit_record_write


class ReadOnlyAdmin(admin.ModelAdmin):
    """Shows rows; no add, change or delete (the change page is a view page)."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class AuditedAdmin(admin.ModelAdmin):
    """Every add, change and delete made here also writes a portal AuditRecord, in the same transaction
    as the write (Django's admin saves and logs inside one atomic block): `audit_state` says what is
    recorded before and after."""

    def audit_state(self, obj: Any) -> dict:
        raise NotImplementedError

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is not None:
            request._audit_before = self.audit_state(obj)  # the state before this request's write
        return obj

    def _audit(self, request, obj, verb: str, before: dict | None, after: dict | None) -> None:
        audit_record_write(actor=request.user, action=f"{obj._meta.model_name}.{verb}", obj=obj, before=before,
                           after=after)

    def log_addition(self, request, obj, message):
        self._audit(request, obj, "create", None, {**self.audit_state(obj), "via": "admin"})
        return super().log_addition(request, obj, message)

    def log_change(self, request, obj, message):
        self._audit(request, obj, "change", getattr(request, "_audit_before", None),
                    {**self.audit_state(obj), "via": "admin"})
        return super().log_change(request, obj, message)

    def log_deletion(self, request, obj, object_repr):
        self._audit(request, obj, "delete", self.audit_state(obj), None)
        return super().log_deletion(request, obj, object_repr)

    def log_deletions(self, request, queryset):  # the bulk "delete selected" action (Django 5.1+)
        for obj in queryset:
            self._audit(request, obj, "delete", self.audit_state(obj), None)
        return super().log_deletions(request, queryset)


User = get_user_model()
admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class AuditedUserAdmin(AuditedAdmin, UserAdmin):
    """People and their roles (a role is a group). Password hashes are never recorded: only that the
    password changed."""

    def audit_state(self, obj: Any) -> dict:
        return {"username": obj.get_username(), "email": obj.email, "is_active": obj.is_active,
                "is_staff": obj.is_staff, "is_superuser": obj.is_superuser,
                "roles": sorted(obj.groups.values_list("name", flat=True)) if obj.pk else [],
                "teams": sorted(obj.teams.values_list("name", flat=True)) if obj.pk else [],
                "password": _password_fingerprint(obj.password)}

    def user_change_password(self, request, id, form_url=""):
        with transaction.atomic():  # the password and its audit record commit together
            return super().user_change_password(request, id, form_url)


def _password_fingerprint(password_hash: str) -> str:
    """Whether a password is set, and a marker that differs when it changes (never the hash itself)."""
    import hashlib

    if not password_hash or password_hash.startswith("!"):
        return "unusable"
    return "set:" + hashlib.sha256(password_hash.encode()).hexdigest()[:8]


@admin.register(Group)
class RoleGroupAdmin(ReadOnlyAdmin, GroupAdmin):
    """Roles are fixed groups (portal.roles); grant one on the person's page (audited)."""


@admin.register(Team)
class TeamAdmin(AuditedAdmin):
    list_display = ["name", "display_name"]
    filter_horizontal = ["members"]

    def audit_state(self, obj: Any) -> dict:
        return {"name": obj.name, "display_name": obj.display_name,
                "members": sorted(obj.members.values_list("username", flat=True)) if obj.pk else []}


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Admins revoke anyone's token here (with the action, so it is audited); people create and revoke
    their own on the API tokens page. Tokens are not added or edited here: a token made in a form would
    have no secret anyone could be shown."""

    list_display = ["user", "name", "prefix", "created_at", "last_used_at", "expires_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["user__username", "name", "prefix"]
    exclude = ["secret_hash"]
    readonly_fields = ["user", "name", "prefix", "created_at", "last_used_at", "expires_at", "revoked_at"]
    actions = ["revoke_selected"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # a deleted token leaves no trace; revoke it instead (audited)

    @admin.action(description="Revoke the selected tokens")
    def revoke_selected(self, request, queryset):
        tokens = list(queryset.filter(revoked_at__isnull=True))
        for token in tokens:
            api_token_revoke(actor=request.user, token=token)
        self.message_user(request, f"Revoked {len(tokens)} token(s).", messages.SUCCESS)


@admin.register(AuditRecord)
class AuditRecordAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "actor_username", "action", "object_type", "object_repr"]
    list_filter = ["action", "object_type"]
