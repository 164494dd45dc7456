"""Template tags for the alert links in the header and on the home page."""

from django import template

register = template.Library()


@register.simple_tag(takes_context=True)
def open_alert_count(context) -> int:
    """How many alerts the viewer may see are open now (the header's badge)."""
    from quality.alert_selectors import alert_open_count

    request = context.get("request")
    return alert_open_count(getattr(request, "user", None))
