from portal.roles import (
    ROLE_LABELS,
    has_portal_role,
    is_admin,
    is_data_engineer,
    may_handle_deletions,
    may_see_quarantine,
    user_roles,
)


def roles(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {
        "user_is_admin": is_admin(user),
        "user_is_engineer": is_data_engineer(user),
        "user_has_role": has_portal_role(user),
        # Links are shown only to those who may follow them (walkthrough F4: Pipeline → Quarantine → 403).
        "user_may_see_quarantine": may_see_quarantine(user),
        "user_may_handle_deletions": may_handle_deletions(user),
        "user_role_labels": [ROLE_LABELS[r] for r in sorted(user_roles(user))],
    }
