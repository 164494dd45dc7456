"""Template helpers for the contract pages: JSON and Avro types made readable, counts for the nav."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.safestring import SafeString, mark_safe

from contracts import page_selectors
from contracts.avro_display import avro_type_label
from contracts.forms import COMPATIBILITY_HELP
from contracts.inline_markdown import inline_markdown_html
from contracts.line_diff import pretty_json as _pretty_json
from contracts.models import VersionStatus
from portal.roles import is_data_engineer

register = template.Library()


@register.filter
def pretty_json(value: Any) -> str:
    return _pretty_json(value)


@register.filter
def inline_markdown(value: Any) -> SafeString:
    """`code`, **bold** and [links](https://…) in descriptions; everything else escaped (no HTML passes)."""
    return mark_safe(inline_markdown_html(value))  # noqa: S308 - escaped first by inline_markdown_html


@register.filter
def avro_type(value: Any) -> str:
    return avro_type_label(value)


@register.filter
def status_label(status: str) -> str:
    """A version status value ("in_review") as people read it ("In review")."""
    return dict(VersionStatus.choices).get(status, status or "")


@register.filter
def compatibility_help(level: str) -> str:
    return COMPATIBILITY_HELP.get(level, "")


@register.filter
def error_path(error: Any) -> str:
    """Errors come as {"path", "message"} dicts from the services; plain strings are tolerated."""
    return str(error.get("path", "")) if isinstance(error, dict) else ""


@register.filter
def error_message(error: Any) -> str:
    return str(error.get("message", error)) if isinstance(error, dict) else str(error)


@register.filter
def warning_count(report: Any) -> int:
    changes = (report or {}).get("changes") or []
    return sum(1 for change in changes if change.get("severity") == "warning")


@register.filter
def error_count(report: Any) -> int:
    changes = (report or {}).get("changes") or []
    return sum(1 for change in changes if change.get("severity") == "error")


@register.filter
def problem_count(changes: Any) -> int:
    """Errors and warnings among a list of changes (what a reviewer must not miss in a collapsed group)."""
    return sum(1 for change in changes or () if change.get("severity") in ("error", "warning"))


@register.simple_tag(takes_context=True)
def review_queue_count(context: dict) -> int | None:
    """How many versions wait for review; None for people who do not review (the nav shows nothing)."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not is_data_engineer(user):
        return None
    return page_selectors.review_queue_size()
