"""The alert pages: data engineers acknowledge and silence alerts (a silenced alert is still evaluated and
resolves, its messages suppressed); others read only; admins alone let a webhook reach a private address;
bad channel input is a form error naming the field, never a 500."""

from __future__ import annotations

import pytest

from quality.alerts import alerts_evaluate, notification_channel_save
from quality.models import Alert, AlertNotification, NotificationChannel
from tests.quality.test_alerts import RULE, SCRIPT, lag_condition, script_reset  # noqa: F401 - fixture
from tests.quality.webhook_receiver import webhook_receiver  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db


@pytest.fixture
def hook(admin_user, webhook_receiver):  # noqa: F811
    return notification_channel_save(actor=admin_user, name="ops-slack", kind="webhook", target=webhook_receiver.url,
                                     allow_private_address=True)


def open_alert() -> Alert:
    SCRIPT["conditions"] = [lag_condition()]
    alerts_evaluate(rule_paths=[RULE])
    return Alert.objects.get(resolved_at__isnull=True)


def test_the_page_lists_open_alerts_with_runbook_link_and_notification_attempts(client, platform_user, hook):
    alert = open_alert()
    client.force_login(platform_user)
    html = client.get("/quality/alerts/").content.decode()
    assert alert.summary in html and 'href="/quality/runbook/#shard-lag"' in html
    assert 'data-event="opened" data-status="sent"' in html and "(HTTP 200)" in html
    assert 'data-testid="acknowledge"' not in html and 'data-testid="silence-form"' not in html  # reads only
    assert client.post(f"/quality/alerts/{alert.pk}/acknowledge/").status_code == 403
    assert client.post(f"/quality/alerts/{alert.pk}/silence/", {"minutes": "60"}).status_code == 403
    assert 'data-testid="alert-count">1<' in client.get("/").content.decode()  # the header's badge


def test_an_engineer_acknowledges_an_alert(client, engineer, hook):
    alert = open_alert()
    client.force_login(engineer)
    response = client.post(f"/quality/alerts/{alert.pk}/acknowledge/", follow=True)
    alert.refresh_from_db()
    assert alert.acknowledged_by == engineer and alert.acknowledged_at is not None
    assert "Acknowledged by engineer" in response.content.decode()


def test_a_silenced_alert_is_still_evaluated_and_resolves_without_a_message(client, engineer, hook,
                                                                          webhook_receiver):  # noqa: F811
    alert = open_alert()
    client.force_login(engineer)
    response = client.post(f"/quality/alerts/{alert.pk}/silence/", {"minutes": "60"}, follow=True)
    assert "Silenced until" in response.content.decode()
    alert.refresh_from_db()
    assert alert.silenced_by == engineer and alert.silenced_until is not None
    SCRIPT["conditions"] = []
    alerts_evaluate(rule_paths=[RULE])
    alert.refresh_from_db()
    assert alert.resolved_at is not None
    assert len(webhook_receiver.received) == 1  # the opening only
    assert AlertNotification.objects.get(event="resolved").status == "suppressed"
    html = client.get("/quality/alerts/").content.decode()
    assert 'data-testid="no-open-alerts"' in html and 'data-testid="resolved-alert"' in html
    assert 'data-event="resolved" data-status="suppressed"' in html


def test_ending_a_silence_and_bad_silence_input(client, engineer, hook):
    alert = open_alert()
    client.force_login(engineer)
    client.post(f"/quality/alerts/{alert.pk}/silence/", {"minutes": "60"})
    client.post(f"/quality/alerts/{alert.pk}/silence/", {"minutes": "0"})
    alert.refresh_from_db()
    assert alert.silenced_until is None
    response = client.post(f"/quality/alerts/{alert.pk}/silence/", {"minutes": "forever"}, follow=True)
    assert response.status_code == 200 and "Choose how long" in response.content.decode()
    assert client.post("/quality/alerts/999999/silence/", {"minutes": "60"}).status_code == 404


def test_an_engineer_cannot_allow_a_private_address_and_gets_a_form_error(client, engineer, webhook_receiver):  # noqa: F811
    client.force_login(engineer)
    page = client.get("/quality/alerts/channels/").content.decode()
    assert "allow_private_address" not in page
    response = client.post("/quality/alerts/channels/", {
        "name": "hook", "kind": "webhook", "target": webhook_receiver.url, "min_severity": "warning", "enabled": "on",
        "allow_private_address": "on"})
    assert response.status_code == 400
    assert "non-public address (127.0.0.1)" in response.content.decode()
    assert not NotificationChannel.objects.exists()
    response = client.post("/quality/alerts/channels/", {
        "name": "mail", "kind": "email", "target": "oncall@example.com", "min_severity": "critical", "enabled": "on"})
    assert response.status_code == 302 and NotificationChannel.objects.get().min_severity == "critical"


def test_an_admin_allows_a_loopback_webhook(client, admin_user, webhook_receiver):  # noqa: F811
    client.force_login(admin_user)
    response = client.post("/quality/alerts/channels/", {
        "name": "hook", "kind": "webhook", "target": webhook_receiver.url, "min_severity": "warning", "enabled": "on",
        "allow_private_address": "on"})
    assert response.status_code == 302
    channel = NotificationChannel.objects.get()
    assert channel.allow_private_address
    page = client.get(f"/quality/alerts/channels/{channel.pk}/").content.decode()
    assert webhook_receiver.url in page


def test_team_members_do_not_manage_channels(client, platform_user):
    client.force_login(platform_user)
    assert client.get("/quality/alerts/channels/").status_code == 403


def test_a_failing_rule_shows_on_the_page(client, engineer, settings):
    SCRIPT["raise"] = ConnectionError("warehouse could not be reached")
    alerts_evaluate(rule_paths=[RULE])
    client.force_login(engineer)
    # the page lists the configured rules' states: make the scripted rule a configured one
    settings.QUALITY_ALERT_RULES = [RULE]
    html = client.get("/quality/alerts/").content.decode()
    assert 'data-testid="rule-error"' in html and "warehouse could not be reached" in html


def test_deletion_sla_alerts_are_seen_and_handled_by_the_privacy_team_only(client, platform_user, engineer,
                                                                           privacy_user):
    # a deletion SLA alert names a deletion ticket: only those who may see tickets see it, and privacy officers
    # (who cannot act on other alerts) acknowledge it
    import datetime as dt

    from django.utils import timezone

    from deletion.alert_rules import sla_conditions

    due = timezone.now() - dt.timedelta(hours=2)
    SCRIPT["conditions"] = sla_conditions([("DEL-000042", "running", due, "/deletions/42/")], timezone.now())
    alerts_evaluate(rule_paths=[RULE])
    alert = Alert.objects.get(resolved_at__isnull=True)
    assert alert.rule == "deletion_sla"
    for outsider in (platform_user, engineer):
        client.force_login(outsider)
        assert "DEL-000042" not in client.get("/quality/alerts/").content.decode()
        assert 'data-testid="alert-count">1<' not in client.get("/").content.decode()
        assert client.post(f"/quality/alerts/{alert.pk}/acknowledge/").status_code == 404
    client.force_login(privacy_user)
    page = client.get("/quality/alerts/").content.decode()
    assert "DEL-000042" in page and 'data-testid="acknowledge"' in page
    client.post(f"/quality/alerts/{alert.pk}/acknowledge/")
    alert.refresh_from_db()
    assert alert.acknowledged_by == privacy_user
