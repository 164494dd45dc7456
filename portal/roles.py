"""The four roles, as Django groups, and the permission questions the rest of the code asks."""

from __future__ import annotations

import enum
from typing import Any


class Role(enum.StrEnum):
    PLATFORM = "platform_team"
    DATA_ENGINEER = "data_engineer"
    PRIVACY = "privacy_officer"
    ADMIN = "admin"


ROLE_LABELS = {
    Role.PLATFORM: "Platform team member",
    Role.DATA_ENGINEER: "Data engineer",
    Role.PRIVACY: "Privacy officer",
    Role.ADMIN: "Admin",
}


class SystemActor:
    """The platform itself acting from an operator command on the server (audited as "system").

    Never produced by an HTTP request: views and APIs always pass the signed-in user.
    """

    is_authenticated = False
    is_system = True
    pk = None

    def get_username(self) -> str:
        return "system"

    def __str__(self) -> str:
        return "system"


SYSTEM = SystemActor()


def user_roles(user: Any) -> set[Role]:
    if getattr(user, "is_system", False):
        return {Role.ADMIN}
    if not getattr(user, "is_authenticated", False):
        return set()
    names = getattr(user, "_cached_role_names", None)
    if names is None:
        names = set(user.groups.values_list("name", flat=True))
        user._cached_role_names = names
    roles = {Role(name) for name in names if name in Role._value2member_map_}
    if user.is_superuser:
        roles.add(Role.ADMIN)
    return roles


def is_admin(user: Any) -> bool:
    return Role.ADMIN in user_roles(user)


def is_data_engineer(user: Any) -> bool:
    roles = user_roles(user)
    return Role.DATA_ENGINEER in roles or Role.ADMIN in roles


def user_team_ids(user: Any) -> set[int]:
    if not getattr(user, "is_authenticated", False):
        return set()
    ids = getattr(user, "_cached_team_ids", None)
    if ids is None:
        ids = set(user.teams.values_list("id", flat=True))
        user._cached_team_ids = ids
    return ids


def can_edit_team_objects(user: Any, team_id: int) -> bool:
    """Team members edit their own team's sources and contracts; admins edit any."""
    return is_admin(user) or team_id in user_team_ids(user)


def has_portal_role(user: Any) -> bool:
    """Whether the portal shows `user` anything beyond a page asking for a role.

    A role group (or superuser) counts, and so does a team membership alone: the home page and the
    quarantine already treat a team member as doing platform work. Someone with neither reads no
    sources, contracts or sample payloads, on the pages or the API (hostile-input review D15).
    """
    return bool(user_roles(user)) or bool(user_team_ids(user))


def may_see_quarantine(user: Any) -> bool:
    """Data engineers see all of the quarantine; team members their own sources' records; others none.

    `ingest_workers.page_selectors.quarantine_scope` decides what they see; this decides whether a
    link to it is worth showing.
    """
    return is_data_engineer(user) or bool(user_team_ids(user))


def may_handle_deletions(user: Any) -> bool:
    """Privacy officers and admins file, review, confirm and read deletion tickets; nobody else sees them."""
    roles = user_roles(user)
    return Role.PRIVACY in roles or Role.ADMIN in roles
