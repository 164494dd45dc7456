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


def data_engineers(*, limit: int = 6) -> list[str]:
    """Who re-drives quarantined records and approves contracts: the active data engineers' names
    (full name where set), for pages that tell everyone else whom to ask."""
    from django.contrib.auth import get_user_model

    from portal.roles import Role

    people = (get_user_model().objects.filter(is_active=True, groups__name=Role.DATA_ENGINEER.value)
              .order_by("username").distinct()[:limit])
    return [(person.get_full_name() or person.get_username()) for person in people]
