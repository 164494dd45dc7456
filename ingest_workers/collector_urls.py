"""Collector routes, mounted at /collect/v1/ (a trailing slash is accepted too: webhook URLs get pasted)."""

from django.urls import re_path

from ingest_workers import collectors

SOURCE = r"(?P<source_id>[A-Za-z0-9_-]{1,64})"

urlpatterns = [
    re_path(r"^batch/?$", collectors.batch, name="collect_batch"),
    re_path(rf"^webhooks/slack/{SOURCE}/?$", collectors.slack_webhook, name="collect_slack"),
    re_path(rf"^webhooks/voice/{SOURCE}/?$", collectors.voice_webhook, name="collect_voice"),
    re_path(r"^[\s\S]*$", collectors.not_found, name="collect_not_found"),  # any path, newlines too
]
