"""Reads owned by the portal app."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from portal.models import ApiToken, AuditRecord


def audit_records(
    *, action: str | None = None, actor: str | None = None, object_type: str | None = None
) -> QuerySet[AuditRecord]:
    qs = AuditRecord.objects.all()
    if action:
        qs = qs.filter(action__startswith=action)
    if actor:
        qs = qs.filter(actor_username=actor)
    if object_type:
        qs = qs.filter(object_type=object_type)
    return qs


def api_tokens_of(user: Any) -> QuerySet[ApiToken]:
    """A person's own tokens, newest first. The tokens page reads only these, so nobody sees or
    revokes another person's token there (admins do that in the Django admin)."""
    return ApiToken.objects.filter(user=user).order_by("-created_at", "-id")
