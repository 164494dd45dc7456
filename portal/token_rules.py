"""The rules of personal API tokens, without the database: the token's text, its hash, when it
expires, whether it may still be used, and what a refused caller is told.

A token reads `co_<prefix>_<secret>`: the prefix (8 hex characters) is public and finds the row,
the secret is only ever stored as its SHA-256. Pure: no Django, no clock (callers pass `now`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import secrets

TOKEN_PREFIX = "co"
NAME_MAX_LENGTH = 128
#: `last_used_at` is written at most this often per token, so API traffic is not a write per request.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)

#: What the create form offers, in days (None: never expires). 90 days is the default.
EXPIRY_CHOICES: dict[str, int | None] = {"30": 30, "90": 90, "365": 365, "never": None}
EXPIRY_LABELS = {"30": "in 30 days", "90": "in 90 days", "365": "in a year", "never": "never"}
DEFAULT_EXPIRY = "90"


class TokenRequestError(ValueError):
    """A token that cannot be created as asked; the message names what was wrong."""


@dataclasses.dataclass(frozen=True)
class NewSecret:
    prefix: str
    secret: str

    @property
    def text(self) -> str:
        return f"{TOKEN_PREFIX}_{self.prefix}_{self.secret}"


def new_secret() -> NewSecret:
    return NewSecret(prefix=secrets.token_hex(4), secret=secrets.token_urlsafe(32))


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(stored_hash: str, secret: str) -> bool:
    return secrets.compare_digest(stored_hash, secret_hash(secret))


def token_parts(text: str) -> tuple[str, str] | None:
    """(prefix, secret) of a token's text, or None when it is not shaped like one of ours."""
    parts = text.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def clean_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise TokenRequestError("A token needs a name, e.g. the CI job that will use it.")
    name = name.strip()
    if len(name) > NAME_MAX_LENGTH:
        raise TokenRequestError(f"A token's name is at most {NAME_MAX_LENGTH} characters (this one has {len(name)}).")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise TokenRequestError("A token's name cannot contain control characters (tabs, new lines…).")
    return name


def expiry_from_choice(choice: str, now: dt.datetime) -> dt.datetime | None:
    """When a token created `now` with the form's expiry `choice` expires (None: never)."""
    if choice not in EXPIRY_CHOICES:
        raise TokenRequestError(f"Unknown expiry {choice!r}: choose one of {', '.join(EXPIRY_CHOICES)}.")
    days = EXPIRY_CHOICES[choice]
    return None if days is None else now + dt.timedelta(days=days)


def check_expiry(expires_at: dt.datetime | None, now: dt.datetime) -> None:
    if expires_at is not None and expires_at <= now:
        raise TokenRequestError("A token's expiry must be in the future.")


def token_state(*, revoked_at: dt.datetime | None, expires_at: dt.datetime | None, now: dt.datetime) -> str:
    """"revoked", "expired" or "active". Revoked wins: it is the more deliberate of the two."""
    if revoked_at is not None:
        return "revoked"
    if expires_at is not None and expires_at <= now:
        return "expired"
    return "active"


def last_used_due(last_used_at: dt.datetime | None, now: dt.datetime) -> bool:
    """Whether a use at `now` should be written down (at most once per LAST_USED_RESOLUTION)."""
    return last_used_at is None or now - last_used_at >= LAST_USED_RESOLUTION


def _when(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def refusal_message(*, state: str, name: str, prefix: str, revoked_at: dt.datetime | None,
                    expires_at: dt.datetime | None) -> str:
    """What a caller presenting a known token that may no longer be used is told.

    Only said after the secret matched: whoever reads it already holds the token.
    """
    which = f"API token '{name}' ({TOKEN_PREFIX}_{prefix}_…)"
    if state == "revoked" and revoked_at is not None:
        return f"{which} was revoked on {_when(revoked_at)}."
    if state == "expired" and expires_at is not None:
        return f"{which} expired on {_when(expires_at)}."
    raise ValueError(f"no refusal for a token in state {state!r}")
