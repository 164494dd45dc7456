"""The alert engine: evaluates the configured rules (``QUALITY_ALERT_RULES``, dotted paths of
``rule(now) -> list[Condition]``), opens one alert per condition key while it holds, resolves it the first
evaluation its rule runs and no longer reports it, and sends one "opened" and one "resolved" notification
per alert and channel. The actions people take on alerts (acknowledge, silence) and on channels are here
too.

Runs on the quality queue on a beat schedule (``QUALITY_ALERT_INTERVAL_S``) and from
``manage.py alerts_evaluate``. Notifications that fail are retried by the same cycle: each keeps a due time
(``next_attempt_at``) that backs off exponentially with jitter, up to ``QUALITY_ALERT_NOTIFY_ATTEMPTS``.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from quality.alert_core import alert_changes, retry_delay_s, severity_at_least
from quality.alert_types import AlertRule, Condition
from quality.models import Alert, AlertNotification, AlertRuleState, NotificationAttempt, NotificationChannel

__all__ = [
    "alert_rules_configured",
    "alerts_evaluate",
    "notifications_send_due",
    "alert_acknowledge",
    "alert_silence",
    "AlertActionForbidden",
    "ChannelInvalid",
    "notification_channel_save",
    "notification_channel_delete",
]

logger = logging.getLogger("quality.alerts")


# --- evaluation ------------------------------------------------------------------------------------

def alert_rules_configured(paths: Iterable[str] | None = None) -> list[tuple[str, AlertRule | None, str]]:
    """(path, rule function or None, import error) for each configured rule path."""
    rules: list[tuple[str, AlertRule | None, str]] = []
    for path in paths if paths is not None else settings.QUALITY_ALERT_RULES:
        try:
            rules.append((path, import_string(path), ""))
        except ImportError as err:
            rules.append((path, None, f"cannot import {path}: {err}"))
    return rules


def _rule_run(rule: Callable[[dt.datetime], list[Condition]], now: dt.datetime) -> list[Condition]:
    conditions = list(rule(now))
    for condition in conditions:
        if not isinstance(condition, Condition):
            raise TypeError(f"a rule must return Condition objects, not {type(condition).__name__}")
    return conditions


def _rule_state_record(path: str, now: dt.datetime, *, error: str = "", conditions: int = 0) -> None:
    state, _ = AlertRuleState.objects.get_or_create(rule_path=path, defaults={"evaluated_at": now})
    state.evaluated_at = now
    state.conditions = conditions
    if error:
        state.failing_since = state.failing_since if not state.ok and state.failing_since else now
        state.ok, state.error = False, error[-4000:]
    else:
        state.ok, state.error, state.failing_since, state.last_ok_at = True, "", None, now
    state.save()


def _alert_view(alert: Alert) -> dict[str, Any]:
    return {"rule": alert.rule, "key": alert.key, "subject": alert.subject, "severity": alert.severity,
            "summary": alert.summary, "runbook": alert.runbook, "link": alert.link,
            "opened_at": f"{alert.opened_at:%Y-%m-%d %H:%M:%S} UTC",
            "resolved_at": f"{alert.resolved_at:%Y-%m-%d %H:%M:%S} UTC" if alert.resolved_at else ""}


def _notifications_create(alert: Alert, event: str, now: dt.datetime, skip_channels: set[int] = frozenset()) -> int:
    """One notification of ``event`` per enabled channel that takes the alert's severity (once: a second
    evaluator racing this one hits the unique constraint and adds nothing)."""
    silenced = alert.silenced_until is not None and alert.silenced_until > now
    made = 0
    for channel in NotificationChannel.objects.filter(enabled=True).exclude(pk__in=skip_channels):
        if not severity_at_least(alert.severity, channel.min_severity):
            continue
        _, created = AlertNotification.objects.get_or_create(
            alert=alert, channel=channel, event=event,
            defaults={"status": AlertNotification.Status.SUPPRESSED if silenced else AlertNotification.Status.PENDING,
                      "next_attempt_at": None if silenced else now, "created_at": now})
        made += created
    return made


def _alert_open(condition: Condition, rule_path: str, now: dt.datetime) -> Alert | None:
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                rule=condition.rule, rule_path=rule_path, key=condition.key, subject=condition.subject,
                severity=str(condition.severity), summary=condition.summary, details=dict(condition.details),
                runbook=condition.runbook, link=condition.link, opened_at=now, last_seen_at=now)
            _notifications_create(alert, AlertNotification.Event.OPENED, now)
    except IntegrityError:  # another evaluator opened it a moment ago: one alert, not two
        return None
    logger.warning("alert opened: %s (%s)", condition.key, condition.summary)
    return alert


def _alert_keep(condition: Condition, now: dt.datetime) -> None:
    Alert.objects.filter(key=condition.key, resolved_at__isnull=True).update(
        last_seen_at=now, summary=condition.summary, details=dict(condition.details),
        severity=str(condition.severity), subject=condition.subject, link=condition.link)


def _alert_resolve(key: str, now: dt.datetime) -> Alert | None:
    with transaction.atomic():
        alert = Alert.objects.select_for_update().filter(key=key, resolved_at__isnull=True).first()
        if alert is None:  # resolved by another evaluator
            return None
        alert.resolved_at = now
        alert.save(update_fields=["resolved_at"])
        # an "opened" still waiting for a retry would arrive after the "resolved": neither is news then
        superseded = AlertNotification.objects.filter(alert=alert, event=AlertNotification.Event.OPENED,
                                                      status=AlertNotification.Status.PENDING)
        unsent_channels = set(superseded.values_list("channel_id", flat=True))
        superseded.update(status=AlertNotification.Status.SUPERSEDED, next_attempt_at=None)
        _notifications_create(alert, AlertNotification.Event.RESOLVED, now, skip_channels=unsent_channels)
    logger.warning("alert resolved: %s", key)
    return alert


def alerts_evaluate(*, now: dt.datetime | None = None, rule_paths: Iterable[str] | None = None,
                    send: bool = True) -> dict[str, Any]:
    """One evaluation cycle: every configured rule, then the alert changes, then the notifications due.
    Returns counts (and each failed rule's error) for the command and the task's log.

    One evaluation at a time (a lease): a cycle slowed by a webhook could otherwise outlast the beat's
    period, and a stale cycle would resolve an alert a newer one had just opened (notifications flapping).
    A cycle that finds the lease held returns at once with ``skipped``."""
    import os
    import socket

    from ingest_workers.services import worker_lease_acquire, worker_lease_release

    owner = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
    fence = worker_lease_acquire(ALERTS_LEASE, owner, ALERTS_LEASE_SECONDS)
    if fence is None:
        return {"skipped": "another alert evaluation is running"}
    try:
        return _alerts_evaluate(now=now, rule_paths=rule_paths, send=send)
    finally:
        worker_lease_release(ALERTS_LEASE, owner, fence)


#: the evaluation lease: longer than a cycle can take (rules, then at most QUALITY_ALERT_NOTIFY_ATTEMPTS
#: webhook timeouts per due notification), after which a dead evaluator's lease lapses
ALERTS_LEASE = "quality-alerts-evaluator"
ALERTS_LEASE_SECONDS = 600


def _alerts_evaluate(*, now: dt.datetime | None, rule_paths: Iterable[str] | None, send: bool) -> dict[str, Any]:
    now = now or timezone.now()
    reported: dict[str, list[Condition]] = {}
    failed: dict[str, str] = {}
    for path, rule, import_error in alert_rules_configured(rule_paths):
        if rule is None:
            failed[path] = import_error
            _rule_state_record(path, now, error=import_error)
            continue
        try:
            conditions = _rule_run(rule, now)
        except Exception as err:  # noqa: BLE001 - a rule that cannot look is recorded, not fatal to the others
            failed[path] = f"{type(err).__name__}: {err}"
            logger.warning("alert rule %s failed: %s", path, failed[path])
            _rule_state_record(path, now, error=f"{type(err).__name__}: {err}\n\n{traceback.format_exc(limit=5)}")
            continue
        reported[path] = conditions
        _rule_state_record(path, now, conditions=len(conditions))
    open_alerts = dict(Alert.objects.filter(resolved_at__isnull=True).values_list("key", "rule_path"))
    changes = alert_changes(open_alerts=open_alerts, reported=reported, failed_rules=failed)
    path_of = {c.key: path for path, conds in reported.items() for c in conds}
    opened = sum(_alert_open(c, path_of[c.key], now) is not None for c in changes.to_open)
    for condition in changes.to_keep:
        _alert_keep(condition, now)
    resolved = sum(_alert_resolve(key, now) is not None for key in changes.to_resolve)
    sent = notifications_send_due(now=now) if send else {}
    return {"rules": len(reported) + len(failed), "failed_rules": failed, "opened": opened,
            "still_open": len(changes.to_keep), "resolved": resolved, "notifications": sent}


# --- notifications ----------------------------------------------------------------------------------

def _send(notification: AlertNotification) -> Any:
    from quality import notifications

    channel, alert = notification.channel, notification.alert
    view = _alert_view(alert)
    if channel.kind == NotificationChannel.Kind.EMAIL:
        return notifications.email_send(notifications.email_targets(channel.target), event=notification.event,
                                        alert=view, base_url=settings.PORTAL_BASE_URL)
    from quality.alert_core import slack_payload

    return notifications.webhook_send(
        channel.target, slack_payload(event=notification.event, alert=view, base_url=settings.PORTAL_BASE_URL),
        allow_private=channel.allow_private_address, timeout_s=settings.QUALITY_ALERT_WEBHOOK_TIMEOUT_S)


def _claim(notification_id: int, due: dt.datetime | None, now: dt.datetime) -> bool:
    """Take a due notification (conditional UPDATE on its due time): a second sender finds it moved."""
    lease = now + dt.timedelta(seconds=settings.QUALITY_ALERT_WEBHOOK_TIMEOUT_S * 2 + 30)
    return bool(AlertNotification.objects.filter(
        pk=notification_id, status=AlertNotification.Status.PENDING, next_attempt_at=due).update(next_attempt_at=lease))


def notification_send(notification: AlertNotification, *, now: dt.datetime) -> str:
    """Try one claimed notification once, record the attempt, and set its next due time or final status."""
    alert = notification.alert
    if (alert.silenced_until is not None and alert.silenced_until > now) or not notification.channel.enabled:
        AlertNotification.objects.filter(pk=notification.pk).update(
            status=AlertNotification.Status.SUPPRESSED, next_attempt_at=None)
        return AlertNotification.Status.SUPPRESSED
    try:
        outcome = _send(notification)
    except Exception as err:  # noqa: BLE001 - a sender's bug is a failed attempt (counted, retried), not a stuck claim
        from quality.notifications import SendOutcome

        logger.exception("alert notification %s: the sender failed", notification.pk)
        outcome = SendOutcome(False, None, f"{type(err).__name__}: {err}"[:2000])
    attempts = notification.attempts + 1
    NotificationAttempt.objects.create(notification=notification, attempted_at=now, ok=outcome.ok,
                                       http_status=outcome.http_status, error=outcome.error,
                                       duration_ms=outcome.duration_ms)
    if outcome.ok:
        status, due, sent_at = AlertNotification.Status.SENT, None, now
    elif attempts >= settings.QUALITY_ALERT_NOTIFY_ATTEMPTS:
        status, due, sent_at = AlertNotification.Status.FAILED, None, None
        logger.error("alert notification gave up after %s attempts: %s", attempts, outcome.error)
    else:
        delay = retry_delay_s(attempts, base_s=settings.QUALITY_ALERT_NOTIFY_BACKOFF_S,
                              cap_s=settings.QUALITY_ALERT_NOTIFY_BACKOFF_MAX_S, jitter=random.random())  # noqa: S311
        status, due, sent_at = AlertNotification.Status.PENDING, now + dt.timedelta(seconds=delay), None
    AlertNotification.objects.filter(pk=notification.pk).update(status=status, attempts=attempts,
                                                                next_attempt_at=due, sent_at=sent_at)
    return status


def notifications_send_due(*, now: dt.datetime | None = None, limit: int = 100) -> dict[str, int]:
    """Send every pending notification whose due time has come (oldest first); counts by outcome."""
    now = now or timezone.now()
    counts: dict[str, int] = {}
    due = (AlertNotification.objects.filter(status=AlertNotification.Status.PENDING, next_attempt_at__lte=now)
           .select_related("alert", "channel").order_by("next_attempt_at", "id")[:limit])
    for notification in list(due):
        if not _claim(notification.pk, notification.next_attempt_at, now):
            continue
        status = notification_send(notification, now=now)
        counts[status] = counts.get(status, 0) + 1
    return counts


# --- what people do with alerts ---------------------------------------------------------------------

class AlertActionForbidden(PermissionError):
    """Only data engineers and admins acknowledge and silence alerts, and manage channels."""


def _may_act(actor: Any, alert: Alert | None = None) -> None:
    from portal.roles import is_data_engineer

    if alert is not None:
        from quality.alert_selectors import alert_may_act

        if not alert_may_act(actor, alert):
            raise AlertActionForbidden("Only data engineers and admins (and privacy officers, for the deletion "
                                       "SLA's alerts) may acknowledge or silence alerts.")
        return
    if not is_data_engineer(actor):
        raise AlertActionForbidden("Only data engineers and admins may acknowledge or silence alerts.")


def alert_acknowledge(*, actor: Any, alert_id: int) -> Alert:
    """Record who acknowledged the alert and when (the first acknowledgement is kept)."""
    from portal.services import audit_record_write

    with transaction.atomic():
        alert = Alert.objects.select_for_update().get(pk=alert_id)
        _may_act(actor, alert)
        if alert.acknowledged_at is None:
            alert.acknowledged_by, alert.acknowledged_at = actor, timezone.now()
            alert.save(update_fields=["acknowledged_by", "acknowledged_at"])
            audit_record_write(actor=actor, action="alert.acknowledge", obj=alert, after={"key": alert.key})
    return alert


def alert_silence(*, actor: Any, alert_id: int, minutes: int | None) -> Alert:
    """Silence the alert's notifications for ``minutes`` (None or 0 ends a silence). It is still evaluated
    and resolves as usual; the messages due while it is silenced are suppressed, not sent later."""
    from portal.services import audit_record_write

    if minutes is not None and not 0 <= minutes <= settings.QUALITY_ALERT_SILENCE_MAX_MINUTES:
        raise ValueError(f"A silence lasts from 1 to {settings.QUALITY_ALERT_SILENCE_MAX_MINUTES} minutes.")
    with transaction.atomic():
        alert = Alert.objects.select_for_update().get(pk=alert_id)
        _may_act(actor, alert)
        before = {"silenced_until": alert.silenced_until.isoformat() if alert.silenced_until else None}
        if minutes:
            alert.silenced_until, alert.silenced_by = timezone.now() + dt.timedelta(minutes=minutes), actor
        else:
            alert.silenced_until, alert.silenced_by = None, None
        alert.save(update_fields=["silenced_until", "silenced_by"])
        audit_record_write(actor=actor, action="alert.silence", obj=alert, before=before, after={
            "silenced_until": alert.silenced_until.isoformat() if alert.silenced_until else None})
    return alert


# --- channels ---------------------------------------------------------------------------------------

class ChannelInvalid(ValueError):
    """What is wrong with a channel as submitted: ``errors`` maps each field to its message."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def _channel_errors(*, name: str, kind: str, target: str, min_severity: str, allow_private: bool) -> dict[str, str]:
    from django.core.exceptions import ValidationError
    from django.core.validators import validate_email

    from quality.alert_types import Severity
    from quality.notifications import email_targets, webhook_problem

    errors: dict[str, str] = {}
    if not name or len(name) > 64 or not all(ch.isalnum() or ch in "-_." for ch in name):
        errors["name"] = "A name of 1 to 64 letters, digits, dots, dashes or underscores."
    if kind not in NotificationChannel.Kind.values:
        errors["kind"] = "The kind is email or webhook."
    if min_severity not in {s.value for s in Severity}:
        errors["min_severity"] = "The minimum severity is warning or critical."
    if kind == NotificationChannel.Kind.EMAIL:
        addresses = email_targets(target)
        bad = []
        for address in addresses:
            try:
                validate_email(address)
            except ValidationError:
                bad.append(address)
        if not addresses:
            errors["target"] = "Give at least one email address."
        elif bad:
            errors["target"] = f"Not an email address: {', '.join(bad[:5])}."
    elif kind == NotificationChannel.Kind.WEBHOOK:
        problem = webhook_problem(target, allow_private=allow_private) if len(target) <= 2000 else \
            "The webhook URL is longer than 2000 characters."
        if problem:
            errors["target"] = problem
    return errors


def _audit_target(kind: str, target: str) -> str:
    """What the audit log keeps of a channel's target: a webhook's scheme and host only (a Slack incoming
    webhook's path is its credential: anyone who reads it can post to the channel)."""
    if kind != NotificationChannel.Kind.WEBHOOK:
        return target
    from urllib.parse import urlsplit

    parts = urlsplit(target)
    return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}/…"


def notification_channel_save(*, actor: Any, name: str, kind: str, target: str, enabled: bool = True,
                              min_severity: str = "warning", allow_private_address: bool | None = None,
                              channel_id: int | None = None) -> NotificationChannel:
    """Create or change a channel. Data engineers and admins manage channels; only an admin may allow a
    webhook to reach a private address (a non-admin's change keeps the flag only while the URL stays the one
    the admin approved). A webhook URL is
    resolved and refused when it reaches a non-public address without that permission."""
    from portal.roles import is_admin
    from portal.services import audit_record_write

    _may_act(actor)
    channel = NotificationChannel.objects.get(pk=channel_id) if channel_id else NotificationChannel()
    if allow_private_address is None:
        # a non-admin's change keeps the admin's permission only for the address the admin approved: a
        # new URL (or kind) on a channel allowed to reach private addresses is judged as a public one
        retargeted = channel.pk is not None and (kind != channel.kind or target.strip() != channel.target)
        allow_private_address = channel.allow_private_address and not (retargeted and not is_admin(actor))
    elif allow_private_address != channel.allow_private_address and not is_admin(actor):
        raise AlertActionForbidden("Only an admin may allow (or stop allowing) a webhook to reach a private address.")
    name, target = name.strip(), target.strip()
    errors = _channel_errors(name=name, kind=kind, target=target, min_severity=min_severity,
                             allow_private=bool(allow_private_address))
    if not errors and NotificationChannel.objects.filter(name=name).exclude(pk=channel.pk).exists():
        errors["name"] = f"A channel named {name} exists already."
    if errors:
        raise ChannelInvalid(errors)
    before = None if channel.pk is None else {"target": _audit_target(channel.kind, channel.target),
                                                "enabled": channel.enabled,
                                                "allow_private_address": channel.allow_private_address}
    channel.name, channel.kind, channel.target, channel.enabled = name, kind, target, enabled
    channel.min_severity, channel.allow_private_address = min_severity, bool(allow_private_address)
    channel.updated_at = timezone.now()
    if channel.pk is None:
        channel.created_by = actor if getattr(actor, "pk", None) else None
    with transaction.atomic():
        channel.save()
        audit_record_write(actor=actor, action="alert_channel.save", obj=channel, before=before, after={
            "target": _audit_target(channel.kind, channel.target), "enabled": channel.enabled,
            "allow_private_address": channel.allow_private_address})
    return channel


def notification_channel_delete(*, actor: Any, channel_id: int) -> None:
    from portal.services import audit_record_write

    _may_act(actor)
    with transaction.atomic():
        channel = NotificationChannel.objects.get(pk=channel_id)
        audit_record_write(actor=actor, action="alert_channel.delete", obj=channel,
                           before={"target": _audit_target(channel.kind, channel.target)})
        channel.delete()
