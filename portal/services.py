"""Writes owned by the portal app: audit records, API tokens, teams and role membership."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from portal.models import ApiToken, AuditRecord, Team
from portal.roles import Role

TOKEN_PREFIX = "co"


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


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def api_token_create(*, user: Any, name: str = "cli", actor: Any = None) -> tuple[ApiToken, str]:
    """Create a token for `user`; returns the row and the token text, which is never shown again."""
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ApiToken.objects.create(user=user, name=name, prefix=prefix, secret_hash=_hash_secret(secret))
        audit_record_write(
            actor=actor or user, action="api_token.create", obj=token,
            after={"user": user.get_username(), "name": name, "prefix": prefix},
        )
    return token, f"{TOKEN_PREFIX}_{prefix}_{secret}"


def api_token_user(token_text: str) -> Any | None:
    """The active user a token belongs to, or None. Constant-time on the secret."""
    parts = token_text.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        return None
    token = (
        ApiToken.objects.select_related("user").filter(prefix=parts[1], revoked_at__isnull=True).first()
    )
    if token is None or not secrets.compare_digest(token.secret_hash, _hash_secret(parts[2])):
        return None
    if not token.user.is_active:
        return None
    now = timezone.now()
    # Touch at most once a minute so API traffic does not turn every read into a write.
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user


def role_groups_ensure() -> dict[Role, Group]:
    return {role: Group.objects.get_or_create(name=role.value)[0] for role in Role}


def team_ensure(*, name: str, display_name: str = "") -> Team:
    team, _ = Team.objects.get_or_create(name=name, defaults={"display_name": display_name or name})
    return team
