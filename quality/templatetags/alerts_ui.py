"""Template tags for the alert links in the header and on the home page."""

from django import template

register = template.Library()


@register.simple_tag
def open_alert_count() -> int:
    """How many alerts are open now (the header's badge)."""
    from quality.alert_selectors import alert_open_count

    return alert_open_count()
