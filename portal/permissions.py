"""The API's default permission: signed in (a token, basic auth or a session) and holding a role."""

from __future__ import annotations

from rest_framework.permissions import IsAuthenticated

from portal.roles import has_portal_role

NO_ROLE_MESSAGE = ("Your account has no role yet, so the API shows it nothing: ask an admin to give you one "
                   "(platform team member, data engineer, privacy officer or admin).")


class HasPortalRole(IsAuthenticated):
    message = NO_ROLE_MESSAGE

    def has_permission(self, request, view) -> bool:
        return super().has_permission(request, view) and has_portal_role(request.user)
