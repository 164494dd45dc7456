"""Sending alert notifications: email through Django's mail backend, and webhooks (Slack incoming-webhook
JSON) over HTTP(S) to an address checked just before sending.

The webhook's host is resolved here, every address it resolves to must be public (unless an admin allowed
the channel to reach private ones), and the request goes to the address that was checked (the TLS name
and the Host header stay the URL's), so a DNS answer that changes between the check and the connection
cannot send it inside. Redirects are not followed (a public host could redirect inside).
"""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson

from quality.alert_core import email_subject, notification_text, webhook_url_problem

__all__ = ["SendOutcome", "host_addresses", "webhook_problem", "webhook_send", "email_send", "email_targets"]


@dataclasses.dataclass(frozen=True)
class SendOutcome:
    ok: bool
    http_status: int | None = None
    error: str = ""
    duration_ms: int = 0


def host_addresses(url: str) -> list[str]:
    """Every address the URL's host resolves to now (empty when it does not resolve)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return []
    if not host:
        return []
    try:
        infos = socket.getaddrinfo(host, port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def webhook_problem(url: str, *, allow_private: bool) -> str | None:
    """Why ``url`` may not be used as a webhook now (resolving its host), or None."""
    return webhook_url_problem(url, host_addresses(url), allow_private=allow_private)


def email_targets(target: str) -> list[str]:
    return [a.strip() for a in target.replace(";", ",").split(",") if a.strip()]


def webhook_send(url: str, payload: Mapping[str, Any], *, allow_private: bool, timeout_s: float) -> SendOutcome:
    """POST ``payload`` as JSON to ``url``; a 2xx answer is success. The address is checked again now."""
    import urllib3

    started = time.monotonic()

    def done(ok: bool, status: int | None = None, error: str = "") -> SendOutcome:
        return SendOutcome(ok, status, error[:2000], int((time.monotonic() - started) * 1000))

    addresses = host_addresses(url)
    problem = webhook_url_problem(url, addresses, allow_private=allow_private)
    if problem:
        return done(False, None, f"refused: {problem}")
    parts = urlsplit(url)
    host = parts.hostname or ""
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        host_header = f"{host_header}:{parts.port}"
    body = orjson.dumps(dict(payload))
    error = ""
    for address in addresses:  # each checked address in turn until one takes the connection
        pool = _pool_for(address, parts, timeout_s)
        try:
            response = pool.urlopen("POST", path, body=body, redirect=False, preload_content=True,
                                    headers={"Host": host_header, "Content-Type": "application/json",
                                             "User-Agent": "chatorbit-alerts/1"})
            break
        except urllib3.exceptions.NewConnectionError as err:  # not listening there: the next address
            error = f"{type(err).__name__}: {err}"
        except urllib3.exceptions.HTTPError as err:
            return done(False, None, f"{type(err).__name__}: {err}")
        finally:
            pool.close()
    else:
        return done(False, None, error)
    if 200 <= response.status < 300:
        return done(True, response.status)
    answer = response.data[:300].decode("utf-8", "replace")
    return done(False, response.status, f"HTTP {response.status}: {answer}".strip())


def _pool_for(address: str, parts: Any, timeout_s: float) -> Any:
    """A one-connection pool to the checked ``address``; for HTTPS the certificate must name the URL's host."""
    import certifi
    import urllib3

    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    timeout = urllib3.Timeout(connect=min(timeout_s, 5.0), read=timeout_s)
    if https:
        return urllib3.HTTPSConnectionPool(address, port, timeout=timeout, retries=False, maxsize=1,
                                           server_hostname=parts.hostname, assert_hostname=parts.hostname,
                                           cert_reqs="CERT_REQUIRED", ca_certs=certifi.where())
    return urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False, maxsize=1)


def email_send(recipients: Sequence[str], *, event: str, alert: Mapping[str, Any], base_url: str) -> SendOutcome:
    """Send the message through Django's configured mail backend (EMAIL_BACKEND)."""
    from django.conf import settings
    from django.core.mail import send_mail

    started = time.monotonic()
    try:
        send_mail(email_subject(event=event, alert=alert), notification_text(event=event, alert=alert,
                                                                             base_url=base_url),
                  settings.DEFAULT_FROM_EMAIL, list(recipients), fail_silently=False)
    except Exception as err:  # noqa: BLE001 - every backend error (SMTP, socket …) is a failed attempt, recorded
        return SendOutcome(False, None, f"{type(err).__name__}: {err}"[:2000], int((time.monotonic() - started) * 1000))
    return SendOutcome(True, None, "", int((time.monotonic() - started) * 1000))
