"""Sign-in throttling, per account and per client address (hostile-input sweep D2; docs/decisions.md,
"Sign-in throttling").

Failed sign-ins are counted in Django's cache (Redis where REDIS_URL is set; the embedded default's
per-process memory, which is enough there since its portal is one process) under the username and under
the client address, for LOGIN_FAILURE_WINDOW_SECONDS. When either count reaches its limit, every sign-in
for that account (resp. from that address) is refused for LOGIN_LOCKOUT_SECONDS, the right password
included, and without checking the password at all. A successful sign-in clears the account's count (not
the address's: one's own account must not wash out guesses at others').

Both sign-in pages use it: the portal's (/accounts/login/) and the admin's (/admin/login/). A refused
attempt gets the form again with a message saying when to retry, with status 429 and Retry-After.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lockout:
    scope: str          # "account" or "address"
    retry_after: int    # seconds
    until: float        # unix time

    def message(self) -> str:
        who = "this account" if self.scope == "account" else "your network address"
        minutes = math.ceil(self.retry_after / 60)
        when = time.strftime("%H:%M:%S UTC", time.gmtime(self.until))
        return (f"Too many failed sign-ins for {who}: sign-in is locked for {minutes} more minute"
                f"{'s' if minutes != 1 else ''} (try again after {when}). Ask an admin if you forgot your password.")


def _scopes(username: str, address: str) -> list[tuple[str, str, int]]:
    """(scope, cache key part, limit) of the two counters; a limit of 0 turns that counter off."""
    account = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    return [("account", f"account:{account}", settings.LOGIN_FAILURE_LIMIT_PER_ACCOUNT),
            ("address", f"address:{address}", settings.LOGIN_FAILURE_LIMIT_PER_ADDRESS)]


def login_lockout(username: str, address: str, now: float) -> Lockout | None:
    """The lockout in force for this account or address, if any."""
    scopes = [(scope, f"login:locked:{key}") for scope, key, limit in _scopes(username, address) if limit > 0]
    found = cache.get_many([key for _, key in scopes])
    for scope, key in scopes:
        until = found.get(key)
        if until is not None and until > now:
            return Lockout(scope, max(1, math.ceil(until - now)), until)
    return None


def login_failure_record(username: str, address: str, now: float) -> Lockout | None:
    """Count a failed sign-in; the lockout it starts when a count reaches its limit."""
    started = None
    for scope, key, limit in _scopes(username, address):
        if limit <= 0:
            continue
        count_key = f"login:failures:{key}"
        cache.add(count_key, 0, timeout=settings.LOGIN_FAILURE_WINDOW_SECONDS)
        try:
            failures = cache.incr(count_key)
        except ValueError:  # expired between add and incr: this failure starts a new window
            cache.set(count_key, 1, timeout=settings.LOGIN_FAILURE_WINDOW_SECONDS)
            failures = 1
        if failures >= limit:
            until = now + settings.LOGIN_LOCKOUT_SECONDS
            cache.set(f"login:locked:{key}", until, timeout=math.ceil(settings.LOGIN_LOCKOUT_SECONDS))
            cache.delete(count_key)
            logger.warning("sign-in locked for %s %s after %d failures", scope,
                           address if scope == "address" else "(account)", failures)
            started = started or Lockout(scope, max(1, math.ceil(settings.LOGIN_LOCKOUT_SECONDS)), until)
    return started


def login_success_record(username: str, address: str) -> None:
    scope_key = _scopes(username, address)[0][1]
    cache.delete(f"login:failures:{scope_key}")


def client_address(request: Any) -> str:
    """The client's address: REMOTE_ADDR, or the last hop a trusted proxy appended to
    LOGIN_CLIENT_ADDRESS_HEADER (e.g. HTTP_X_FORWARDED_FOR behind a load balancer)."""
    header = settings.LOGIN_CLIENT_ADDRESS_HEADER
    if header and request.META.get(header):
        return request.META[header].split(",")[-1].strip()[:64]
    return (request.META.get("REMOTE_ADDR") or "unknown")[:64]


class _Throttled:
    """AuthenticationForm.clean with the throttle around it. The view answers 429 when the request has
    `login_retry_after` (``throttled_status``)."""

    request: Any
    cleaned_data: dict
    lockout_message = ""

    def clean(self) -> dict:
        username = self.cleaned_data.get("username") or ""
        address = client_address(self.request)
        now = time.time()
        try:
            lockout = login_lockout(username, address, now)
        except Exception:  # noqa: BLE001 - a cache outage must not stop people signing in (logged)
            logger.warning("sign-in throttle: cache unavailable", exc_info=True)
            return super().clean()  # type: ignore[misc]
        if lockout is not None:
            self._refuse(lockout)
        try:
            cleaned = super().clean()  # type: ignore[misc]
        except forms.ValidationError:
            lockout = login_failure_record(username, address, now)
            if lockout is not None:
                self._refuse(lockout)
            raise
        login_success_record(username, address)
        return cleaned

    def _refuse(self, lockout: Lockout) -> None:
        self.request.login_retry_after = lockout.retry_after
        self.lockout_message = lockout.message()
        raise forms.ValidationError(self.lockout_message, code="throttled")


class ThrottledAuthenticationForm(_Throttled, AuthenticationForm):
    pass


class ThrottledAdminAuthenticationForm(_Throttled, AdminAuthenticationForm):
    pass


def throttled_status(view):
    """Answer a refused (locked) sign-in with 429 and Retry-After; the page is the form and its message."""

    def wrapper(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        retry_after = getattr(request, "login_retry_after", None)
        if retry_after is not None and response.status_code == 200:
            response.status_code = 429
            response["Retry-After"] = str(retry_after)
        return response

    wrapper.__name__ = getattr(view, "__name__", "login")
    wrapper.__doc__ = view.__doc__
    return wrapper
