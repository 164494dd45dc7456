"""Reads that only the portal pages need: team choices and the audit log's filter options."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from portal.models import AuditRecord, Team
from portal.roles import is_admin


def teams_user_may_use(user: Any) -> QuerySet[Team]:
    """Teams a person may register sources for: their own, or every team for admins."""
    return Team.objects.all() if is_admin(user) else Team.objects.filter(members=user)


def all_teams() -> QuerySet[Team]:
    return Team.objects.all()


def audit_filter_options() -> dict[str, list[str]]:
    """The distinct actors, actions and object types present, for the filter drop-downs."""
    def distinct(field: str) -> list[str]:
        return list(AuditRecord.objects.order_by(field).values_list(field, flat=True).distinct())

    return {"actors": distinct("actor_username"), "actions": distinct("action"),
            "object_types": distinct("object_type")}
