"""Reads owned by the portal app."""

from __future__ import annotations

from django.db.models import QuerySet

from portal.models import AuditRecord


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
