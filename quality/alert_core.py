"""The pure decisions of the alert engine and its notifications: which alerts to open, keep and resolve,
when to retry a failed notification, what a message says, and whether a webhook address is public.

No Django, no network, no clock: the engine (quality.alerts) and the senders (quality.notifications)
pass in what they read and act on what comes back.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from quality.alert_types import Condition, Severity

__all__ = [
    "AlertChanges",
    "alert_changes",
    "conditions_by_key",
    "retry_delay_s",
    "severity_at_least",
    "notification_text",
    "slack_payload",
    "email_subject",
    "address_is_public",
    "webhook_url_problem",
]


@dataclasses.dataclass(frozen=True)
class AlertChanges:
    """What one evaluation does: open alerts for new keys, refresh the ones still reported, resolve the
    ones no longer reported. Keys of rules that failed are in none of the three lists (left as they are)."""

    to_open: list[Condition]
    to_keep: list[Condition]
    to_resolve: list[str]


def conditions_by_key(conditions: Iterable[Condition]) -> dict[str, Condition]:
    """One condition per key (a rule that reports a key twice keeps the worse, then the first)."""
    by_key: dict[str, Condition] = {}
    for condition in conditions:
        held = by_key.get(condition.key)
        if held is None or (held.severity == Severity.WARNING and condition.severity == Severity.CRITICAL):
            by_key[condition.key] = condition
    return by_key


def alert_changes(*, open_alerts: Mapping[str, str], reported: Mapping[str, Sequence[Condition]],
                  failed_rules: Iterable[str]) -> AlertChanges:
    """``open_alerts``: key → rule name of each open alert; ``reported``: rule name → conditions of each
    rule that ran; ``failed_rules``: names of the rules that raised. An open alert resolves only when its
    rule ran and did not report its key; a failed rule's alerts stay open (its store being down says
    nothing about recovery), and so do the alerts of a rule no longer configured."""
    failed = set(failed_rules)
    current = conditions_by_key(c for rule, conds in reported.items() if rule not in failed for c in conds)
    to_open = [c for key, c in current.items() if key not in open_alerts]
    to_keep = [c for key, c in current.items() if key in open_alerts]
    to_resolve = sorted(key for key, rule in open_alerts.items()
                        if key not in current and rule in reported and rule not in failed)
    return AlertChanges(to_open=to_open, to_keep=to_keep, to_resolve=to_resolve)


def retry_delay_s(attempts: int, *, base_s: float, cap_s: float, jitter: float) -> float:
    """Seconds to wait after the ``attempts``-th failed try: ``base·2^(attempts-1)`` capped at ``cap_s``,
    scaled by ``jitter`` in [0, 1) into [half, whole] of it ("equal jitter"), so many failing channels
    do not retry in step yet none retries sooner than half the backoff."""
    if attempts < 1:
        return 0.0
    backoff = min(cap_s, base_s * (2 ** min(attempts - 1, 30)))
    return backoff / 2 + backoff / 2 * min(max(jitter, 0.0), 1.0)


_SEVERITY_RANK = {Severity.WARNING.value: 0, Severity.CRITICAL.value: 1}


def severity_at_least(severity: str, minimum: str) -> bool:
    return _SEVERITY_RANK.get(severity, 1) >= _SEVERITY_RANK.get(minimum, 0)


def _runbook_url(base_url: str, anchor: str) -> str:
    return f"{base_url.rstrip('/')}/quality/runbook/#{anchor}" if anchor else ""


def notification_text(*, event: str, alert: Mapping[str, Any], base_url: str) -> str:
    """The one-paragraph message of an alert event, for people (email body, webhook ``text``)."""
    head = "RESOLVED" if event == "resolved" else alert["severity"].upper()
    lines = [f"[{head}] {alert['summary']}", f"Rule: {alert['rule']} · subject: {alert['subject']}",
             f"Opened: {alert['opened_at']}"]
    if event == "resolved" and alert.get("resolved_at"):
        lines.append(f"Resolved: {alert['resolved_at']}")
    if alert.get("link"):
        lines.append(f"Start here: {base_url.rstrip('/')}{alert['link']}")
    if alert.get("runbook"):
        lines.append(f"Runbook: {_runbook_url(base_url, alert['runbook'])}")
    lines.append(f"All alerts: {base_url.rstrip('/')}/quality/alerts/")
    return "\n".join(lines)


def email_subject(*, event: str, alert: Mapping[str, Any]) -> str:
    head = "Resolved" if event == "resolved" else f"Alert ({alert['severity']})"
    return f"[ChatOrbit] {head}: {alert['summary']}"[:200]


def slack_escape(text: Any) -> str:
    """Slack's three control characters escaped (its message formatting rules): a summary quoting data (an
    error message, a table name) cannot mention ``<!channel>`` or forge a link."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(*, event: str, alert: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    """Slack incoming-webhook JSON: ``text`` (what every receiver shows) and ``blocks`` (Slack's layout).
    Every value from the alert is escaped (``slack_escape``); only the links built here are Slack markup."""
    alert = {**alert, **{key: slack_escape(alert[key]) for key in ("summary", "subject", "rule", "severity")
                         if key in alert}}
    text = notification_text(event=event, alert=alert, base_url=base_url)
    icon = ":white_check_mark:" if event == "resolved" else (
        ":rotating_light:" if alert["severity"] == Severity.CRITICAL else ":warning:")
    fields = [{"type": "mrkdwn", "text": f"*Rule*\n{alert['rule']}"},
              {"type": "mrkdwn", "text": f"*Subject*\n{alert['subject']}"},
              {"type": "mrkdwn", "text": f"*Severity*\n{alert['severity']}"},
              {"type": "mrkdwn", "text": f"*Since*\n{alert['opened_at']}"}]
    title = "Resolved" if event == "resolved" else "Alert"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} *{title}*: {alert['summary']}"}},
        {"type": "section", "fields": fields},
    ]
    links = []
    if alert.get("runbook"):
        links.append(f"<{_runbook_url(base_url, alert['runbook'])}|Runbook>")
    links.append(f"<{base_url.rstrip('/')}/quality/alerts/|Alerts>")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(links)}]})
    return {"text": text, "blocks": blocks}


def address_is_public(address: str) -> bool:
    """Whether an IP address is on the public internet: not loopback, link-local (cloud metadata at
    169.254.169.254), private, shared (CGNAT), multicast, reserved or unspecified; an IPv4 address
    mapped or embedded in IPv6 is judged as the IPv4 address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            return address_is_public(str(embedded))
    return bool(ip.is_global) and not ip.is_multicast and not ip.is_reserved and not ip.is_unspecified


def webhook_url_problem(url: str, addresses: Sequence[str] | None, *, allow_private: bool) -> str | None:
    """Why a webhook URL may not be used (None when it may). ``addresses``: what its host resolved to
    (None when it did not resolve). Every address must be public unless ``allow_private``: one private
    answer is enough to reach the inside."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        return f"The webhook URL is not a valid URL ({err})."
    if parts.scheme not in ("https", "http"):
        return "The webhook URL must start with https:// (or http://)."
    if not parts.hostname:
        return "The webhook URL names no host."
    if parts.username or parts.password:
        return "The webhook URL may not carry a user name or password before the host."
    if port is not None and not 0 < port < 65536:
        return "The webhook URL's port is out of range."
    if not addresses:
        return f"The webhook host {parts.hostname} does not resolve to any address."
    if allow_private:
        return None
    private = sorted({a for a in addresses if not address_is_public(a)})
    if private:
        return (f"The webhook host {parts.hostname} resolves to a non-public address ({', '.join(private)}): "
                "loopback, link-local and private addresses are refused unless an admin allows this channel "
                "to reach them.")
    return None
