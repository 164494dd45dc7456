"""Collector authentication: write keys and webhook signatures. Pure: no Django, no network, no clock
(`now` is passed in), so every rule here is tested with literal bytes.

- SDKs and backends send the source's write key: `Authorization: Bearer wk_<prefix>_<secret>`
  (or HTTP basic auth with the key as the user name, which is what Segment-style SDKs send).
- Slack signs `v0:{X-Slack-Request-Timestamp}:{body}` with the app's signing secret (HMAC-SHA256) and
  sends `X-Slack-Signature: v0=<hex>`.
- The voice collector expects `X-ChatOrbit-Timestamp: <unix seconds>` and
  `X-ChatOrbit-Signature: sha256=<hex HMAC-SHA256 of "{timestamp}.{body}">`.

A webhook timestamp more than `max_age` seconds away from `now` (either way) is refused, so a
captured request cannot be replayed later.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

WRITE_KEY_RE = re.compile(r"^wk_([0-9a-f]{8})_[A-Za-z0-9_-]{16,128}$")
SLACK_VERSION = "v0"


class AuthError(Exception):
    """A request that does not prove who sent it; `.code` is the JSON error code (HTTP 401)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def write_key_from_authorization(header: str | None) -> str:
    """The write key in an Authorization header (`Bearer <key>`, or basic auth with the key as user)."""
    if not header or not header.strip():
        raise AuthError("missing_write_key", "Send the source's write key as 'Authorization: Bearer <write key>'.")
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        return credentials
    if scheme.lower() == "basic" and credentials:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthError("invalid_write_key", "The basic-auth credentials are not valid base64.") from None
        user = decoded.partition(":")[0]
        if user:
            return user
    raise AuthError("missing_write_key", "Send the source's write key as 'Authorization: Bearer <write key>'.")


def write_key_prefix(key: str) -> str:
    """The prefix that finds the source of a well-formed write key (`wk_<8 hex>_<secret>`)."""
    match = WRITE_KEY_RE.match(key)
    if match is None:
        raise AuthError("invalid_write_key", "The write key is not valid.")
    return match.group(1)


def _timestamp_check(timestamp: str | None, *, now: float, max_age: int, header: str) -> int:
    if not timestamp:
        raise AuthError("missing_timestamp", f"The {header} header is missing.")
    try:
        value = int(timestamp.strip())
    except ValueError:
        raise AuthError("invalid_timestamp", f"The {header} header must be unix seconds.") from None
    if abs(now - value) > max_age:
        raise AuthError(
            "stale_timestamp",
            f"The request timestamp is more than {max_age} seconds from the collector's clock; "
            "a replayed or delayed request is refused.",
        )
    return value


def _hmac_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def slack_signature(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Slack-Signature` value Slack sends for `body` (also used by tests and the docs)."""
    return f"{SLACK_VERSION}=" + _hmac_hex(secret, f"{SLACK_VERSION}:{timestamp}:".encode() + body)


def slack_request_verify(
    *, secret: str, timestamp: str | None, signature: str | None, body: bytes, now: float, max_age: int,
) -> None:
    """Raise AuthError unless Slack's v0 signature over the raw body is right and fresh."""
    if not signature:
        raise AuthError("missing_signature", "The X-Slack-Signature header is missing.")
    _timestamp_check(timestamp, now=now, max_age=max_age, header="X-Slack-Request-Timestamp")
    expected = slack_signature(secret, str(timestamp).strip(), body)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode("utf-8", "replace")):
        raise AuthError("invalid_signature", "The X-Slack-Signature does not match the body and the signing secret.")


def voice_signature(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-ChatOrbit-Signature` value for `body` sent at `timestamp`."""
    return "sha256=" + _hmac_hex(secret, f"{timestamp}.".encode() + body)


def voice_request_verify(
    *, secret: str, timestamp: str | None, signature: str | None, body: bytes, now: float, max_age: int,
) -> None:
    """Raise AuthError unless `X-ChatOrbit-Signature` is the HMAC of "{timestamp}.{body}" and fresh."""
    if not signature:
        raise AuthError("missing_signature", "The X-ChatOrbit-Signature header is missing.")
    _timestamp_check(timestamp, now=now, max_age=max_age, header="X-ChatOrbit-Timestamp")
    expected = voice_signature(secret, str(timestamp).strip(), body)
    if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode("utf-8", "replace")):
        raise AuthError(
            "invalid_signature", "The X-ChatOrbit-Signature does not match the body and the signing secret."
        )
