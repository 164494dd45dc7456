"""Writes owned by the portal app: audit records, API tokens, teams and role membership."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from portal import token_rules
from portal.models import ApiToken, AuditRecord, Team
from portal.roles import Role, is_admin


def audit_record_write(
    *, actor: Any, action: str, obj: Any, before: dict | None = None, after: dict | None = None
) -> AuditRecord:
    """Record one write. Call inside the write's transaction so the two commit or fail together."""
    is_user = actor is not None and getattr(actor, "is_authenticated", False)
    return AuditRecord.objects.create(
        actor=actor if is_user else None,
        actor_username=actor.get_username() if is_user else "system",
        action=action,
        object_type=obj._meta.label_lower if hasattr(obj, "_meta") else type(obj).__name__,
        object_id=str(getattr(obj, "pk", "")),
        object_repr=str(obj)[:255],
        before=before,
        after=after,
    )


def api_token_create(
    *, user: Any, name: str = "cli", expires_at: dt.datetime | None = None, actor: Any = None
) -> tuple[ApiToken, str]:
    """Create a token for `user`; returns the row and the token text, which is never shown again.

    Raises TokenRequestError when the name is empty or too long, or the expiry is not in the future.
    """
    name = token_rules.clean_name(name)
    token_rules.check_expiry(expires_at, timezone.now())
    new = token_rules.new_secret()
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user, name=name, prefix=new.prefix, secret_hash=token_rules.secret_hash(new.secret),
            expires_at=expires_at,
        )
        # The audit record names the token by its public prefix; the secret never leaves this function
        # except as the return value.
        audit_record_write(
            actor=actor or user, action="api_token.create", obj=token,
            after={"user": user.get_username(), "name": name, "prefix": new.prefix,
                   "expires_at": expires_at.isoformat() if expires_at else None},
        )
    return token, new.text


def api_token_revoke(*, actor: Any, token: ApiToken) -> ApiToken:
    """Revoke `token` now. Its owner or an admin may; revoking a revoked token changes nothing."""
    if token.user_id != getattr(actor, "pk", None) and not is_admin(actor):
        raise PermissionDenied("Only the token's owner or an admin may revoke it.")
    with transaction.atomic():
        token = ApiToken.objects.select_for_update().get(pk=token.pk)
        if token.revoked_at is not None:
            return token
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit_record_write(
            actor=actor, action="api_token.revoke", obj=token, before={"revoked_at": None},
            after={"user": token.user.get_username(), "name": token.name, "prefix": token.prefix,
                   "revoked_at": token.revoked_at.isoformat()},
        )
    return token


@dataclasses.dataclass(frozen=True)
class TokenCheck:
    """The outcome of presenting a token: the user it signs in, or why it was refused."""

    user: Any | None
    refusal: str = ""  # "unknown", "revoked", "expired" or "user_disabled"
    message: str = ""


UNKNOWN_TOKEN = TokenCheck(None, "unknown", "Unknown API token: check it was copied whole (co_<prefix>_<secret>).")


def api_token_check(token_text: str) -> TokenCheck:
    """Who a token signs in, or why not. Constant-time on the secret; notes the use (once a minute)."""
    parts = token_rules.token_parts(token_text)
    if parts is None:
        return UNKNOWN_TOKEN
    prefix, secret = parts
    token = ApiToken.objects.select_related("user").filter(prefix=prefix).first()
    if token is None or not token_rules.secret_matches(token.secret_hash, secret):
        return UNKNOWN_TOKEN
    now = timezone.now()
    state = token_rules.token_state(revoked_at=token.revoked_at, expires_at=token.expires_at, now=now)
    if state != "active":
        return TokenCheck(None, state, token_rules.refusal_message(
            state=state, name=token.name, prefix=token.prefix, revoked_at=token.revoked_at,
            expires_at=token.expires_at))
    if not token.user.is_active:
        return TokenCheck(None, "user_disabled", "The account this API token belongs to is disabled.")
    if token_rules.last_used_due(token.last_used_at, now):
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return TokenCheck(token.user)


def role_groups_ensure() -> dict[Role, Group]:
    return {role: Group.objects.get_or_create(name=role.value)[0] for role in Role}


def team_ensure(*, name: str, display_name: str = "") -> Team:
    team, _ = Team.objects.get_or_create(name=name, defaults={"display_name": display_name or name})
    return team
