"""Reads for the alert pages: open and recent alerts with their notifications and attempts, the rules'
last evaluation, the channels, and the runbook rendered from docs/runbook.md."""

from __future__ import annotations

import datetime as dt
import functools
import re
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import Prefetch
from django.utils import timezone

from quality.models import Alert, AlertNotification, AlertRuleState, NotificationChannel

__all__ = ["alerts_open", "alerts_recent", "alert_rule_states", "alert_open_count", "channels",
           "runbook_html", "heading_anchor", "alert_view_rows", "RUNBOOK_PATH", "SILENCE_CHOICES"]

RUNBOOK_PATH = Path(settings.BASE_DIR) / "docs" / "runbook.md"
#: (minutes, label) offered on the alerts page; the service accepts any length up to the maximum
SILENCE_CHOICES = [(30, "30 minutes"), (60, "1 hour"), (240, "4 hours"), (1440, "1 day"), (10080, "1 week")]


def _with_notifications(alerts):
    return alerts.select_related("acknowledged_by", "silenced_by").prefetch_related(
        Prefetch("notifications", queryset=AlertNotification.objects.select_related("channel")
                 .prefetch_related("tries").order_by("created_at", "id")))


#: the deletion SLA's alerts name deletion tickets: only those who may see tickets see them (portal.roles)
DELETION_RULE = "deletion_sla"


def _visible_to(alerts, viewer: Any):
    from portal.roles import may_handle_deletions

    return alerts if viewer is None or may_handle_deletions(viewer) else alerts.exclude(rule=DELETION_RULE)


def alert_may_act(viewer: Any, alert: Alert) -> bool:
    """Data engineers and admins acknowledge and silence alerts; privacy officers those of the deletion SLA."""
    from portal.roles import is_data_engineer, may_handle_deletions

    return is_data_engineer(viewer) or (alert.rule == DELETION_RULE and may_handle_deletions(viewer))


def alerts_open(viewer: Any = None) -> list[Alert]:
    return list(_with_notifications(_visible_to(Alert.objects.filter(resolved_at__isnull=True), viewer))
                .order_by("-opened_at"))


def alerts_recent(viewer: Any = None, *, days: int = 7, limit: int = 50, now: dt.datetime | None = None) -> list[Alert]:
    since = (now or timezone.now()) - dt.timedelta(days=days)
    return list(_with_notifications(_visible_to(Alert.objects.filter(resolved_at__gte=since), viewer))
                .order_by("-resolved_at")[:limit])


def alert_open_count(viewer: Any = None) -> int:
    return _visible_to(Alert.objects.filter(resolved_at__isnull=True), viewer).count()


def alert_rule_states() -> list[AlertRuleState]:
    configured = set(settings.QUALITY_ALERT_RULES)
    return [s for s in AlertRuleState.objects.all() if s.rule_path in configured]


def channels() -> list[NotificationChannel]:
    return list(NotificationChannel.objects.order_by("name"))


def heading_anchor(text: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", text.strip().lower()))


def _unlink_portal_pages(token: Any) -> None:
    """Drop the links to portal pages from an inline token (their text stays); in-page anchors stay."""
    children, kept, dropping = token.children or [], [], 0
    for child in children:
        if child.type == "link_open" and not str(child.attrGet("href") or "").startswith("#"):
            dropping += 1
            continue
        if child.type == "link_close" and dropping:
            dropping -= 1
            continue
        kept.append(child)
    token.children = kept


@functools.lru_cache(maxsize=8)
def _rendered(path: str, mtime: float, page_links: bool) -> tuple[str, list[tuple[str, str]]]:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(Path(path).read_text(encoding="utf-8"))
    sections = []
    for i, token in enumerate(tokens):
        if token.type == "inline" and not page_links:
            _unlink_portal_pages(token)
        if token.type == "heading_open" and i + 1 < len(tokens):
            anchor = heading_anchor(tokens[i + 1].content)
            token.attrSet("id", anchor)
            if token.tag == "h2":
                sections.append((anchor, tokens[i + 1].content))
    return md.renderer.render(tokens, md.options, {}), sections


def runbook_html(*, page_links: bool) -> tuple[str, list[tuple[str, str]]]:
    """docs/runbook.md as HTML (raw HTML in it is escaped), each heading with its GitHub anchor, and the
    (anchor, title) of each section. Without ``page_links`` the links to portal pages are plain text (the
    pages it names are data engineers' pages: no link that answers 403 to its reader)."""
    return _rendered(str(RUNBOOK_PATH), RUNBOOK_PATH.stat().st_mtime, page_links)


def alert_view_rows(alerts: list[Alert], *, viewer: Any = None, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    now = now or timezone.now()
    return [{"alert": a, "silenced": bool(a.silenced_until and a.silenced_until > now),
             "notifications": list(a.notifications.all()),
             "can_act": viewer is not None and alert_may_act(viewer, a)} for a in alerts]
