"""A data engineer works an alert in a real browser under the Content-Security-Policy: opens Alerts from the
header (its badge counts the open alert), acknowledges it, silences it for an hour, follows its runbook link to
the right section, and adds an email channel (a bad address is a form error on the page)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.test_content_security_policy import RECORD_VIOLATIONS, violations

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_an_engineer_acknowledges_silences_and_follows_the_runbook(live_server, browser, engineer):
    from quality.alerts import alerts_evaluate
    from quality.models import Alert, NotificationChannel
    from tests.conftest import PASSWORD
    from tests.quality.test_alerts import RULE, SCRIPT, lag_condition

    SCRIPT.update({"conditions": [lag_condition()], "raise": None})
    try:
        alerts_evaluate(rule_paths=[RULE])
    finally:
        SCRIPT.update({"conditions": [], "raise": None})
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    context.set_default_timeout(20_000)
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/accounts/login/")
        page.get_by_label("Username").fill(engineer.get_username())
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{live_server.url}/")
        expect(page.get_by_test_id("alert-count")).to_have_text("1")
        page.get_by_test_id("nav-alerts").click()
        row = page.get_by_test_id("alert")
        expect(row.get_by_test_id("summary")).to_contain_text("Shard shardId-000000000001 is 90 s behind")

        row.get_by_test_id("acknowledge").click()
        expect(page.get_by_test_id("acknowledged")).to_contain_text("Acknowledged by engineer")
        page.get_by_label("Silence for").select_option(label="1 hour")
        page.get_by_role("button", name="Silence").click()
        expect(page.get_by_test_id("silenced")).to_contain_text("Silenced until")
        alert = Alert.objects.get()
        assert alert.acknowledged_by == engineer and alert.silenced_by == engineer
        assert violations(page) == []

        page.get_by_test_id("runbook-link").click()
        page.wait_for_url(f"{live_server.url}/quality/runbook/#shard-lag")
        expect(page.locator("#shard-lag")).to_be_in_viewport()
        assert violations(page) == []

        page.goto(f"{live_server.url}/quality/alerts/channels/")
        page.get_by_label("Name").fill("oncall")
        page.get_by_label("Kind").select_option("email")
        page.get_by_label("Target").fill("not an address")
        page.get_by_role("button", name="Add channel").click()
        expect(page.locator('[data-field="target"]')).to_contain_text("Not an email address")
        page.get_by_label("Target").fill("oncall@example.com")
        page.get_by_role("button", name="Add channel").click()
        expect(page.get_by_test_id("channel")).to_contain_text("oncall@example.com")
        assert NotificationChannel.objects.get().target == "oncall@example.com"
        assert violations(page) == []
    finally:
        context.close()
