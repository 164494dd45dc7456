"""Every main page works under the Content-Security-Policy (hostile-input sweep D12): loaded in Chromium,
none reports a violation (a blocked inline script, handler or style), the analytics charts draw, Swagger UI
shows the API, and the shared conventions that replaced the inline handlers work."""

from __future__ import annotations

import io
import uuid

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__cspViolations.push(e.violatedDirective + " blocked " + (e.blockedURI || "inline") + " "
                              + (e.sample || "") + " at " + e.sourceFile + ":" + e.lineNumber);
});
"""


@pytest.fixture
def portal_with_data(settings, warehouse_server, admin_user, platform_user, engineer, tmp_path):
    """The demo sources and contracts, analytics rows for the charts and one quarantined record."""
    from ingest_workers import services
    from tests.ingest_workers.test_quarantine_pages import land_quarantine, quarantine_row
    from tests.warehouse.test_dashboard import engagement, sessions, usage
    from warehouse.analytics_ddl import analytics_ensure
    from warehouse.connection import warehouse_connect

    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "database": f"T_{uuid.uuid4().hex[:12].upper()}"}
    settings.RAW_ARCHIVE_URL = f"file://{tmp_path}/archive"
    call_command("seed_demo", quiet_keys=True, force=True, stdout=io.StringIO())
    services.contract_index_current(force=True)
    conn = warehouse_connect()
    try:
        analytics_ensure(conn)
        engagement(conn, {"DAY": "2026-03-09", "PLATFORM": "web", "ACTIVE_PEOPLE": 5, "SESSIONS": 7, "NEW_PEOPLE": 4},
                   {"DAY": "2026-03-10", "PLATFORM": "ios", "ACTIVE_PEOPLE": 3, "SESSIONS": 3, "NEW_PEOPLE": 3})
        sessions(conn, {"SESSION_KEY": "s1", "PLATFORM": "web", "PERSON_ID": "p1", "STARTED_AT": "2026-03-10 10:00:00",
                        "ENDED_AT": "2026-03-10 10:10:00", "USER_MESSAGES": 3, "ASSISTANT_MESSAGES": 3,
                        "FIRST_RESPONSE_LATENCY_MS": 1000, "MEDIAN_RESPONSE_LATENCY_MS": 1200.0})
        usage(conn, {"HOUR": "2026-03-10 10:00:00", "MODEL": "gpt-4.1-mini", "REQUESTS": 3, "INPUT_TOKENS": 1000,
                     "OUTPUT_TOKENS": 300, "COST_USD": 0.0012})
    finally:
        conn.close()
    (quarantined,) = land_quarantine([quarantine_row()])
    return {"quarantine_id": quarantined}


def violations(page) -> list[str]:
    return page.evaluate("window.__cspViolations")


def test_every_main_page_runs_under_the_policy_without_a_violation(live_server, browser, portal_with_data,
                                                                  admin_user):
    from tests.conftest import PASSWORD

    context = browser.new_context(viewport={"width": 1366, "height": 900})
    context.set_default_timeout(20_000)
    context.add_init_script(RECORD_VIOLATIONS)
    console_errors: list[str] = []
    page = context.new_page()
    page.on("console", lambda msg: console_errors.append(msg.text) if "Content Security Policy" in msg.text else None)
    try:
        page.goto(f"{live_server.url}/accounts/login/")
        assert violations(page) == []
        page.get_by_label("Username").fill(admin_user.get_username())
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{live_server.url}/")

        subject = "web-chat.chat_event"
        pages = ["/", "/sources/", "/sources/new/", "/sources/web-chat/", "/contracts/", f"/contracts/{subject}/",
                 f"/contracts/{subject}/versions/1/", "/review/", "/canonical/", "/pipeline/", "/quarantine/",
                 f"/quarantine/{portal_with_data['quarantine_id']}/", "/analytics/runs/", "/analytics/prices/",
                 "/audit/", "/account/tokens/", "/api/v1/sources/", "/admin/", "/admin/contracts/contract/",
                 "/admin/auth/user/"]
        seen = {}
        for path in pages:
            response = page.goto(f"{live_server.url}{path}")
            assert response.status < 500, path
            assert "script-src 'self'" in response.headers["content-security-policy"], path
            page.wait_for_load_state("networkidle")
            seen[path] = violations(page)

        # the live check of a new version: htmx swaps in the report (no injected <style>, no eval)
        page.goto(f"{live_server.url}/contracts/{subject}/versions/new/")
        editor = page.locator("#id_schema")
        editor.press("End")
        expect(page.get_by_test_id("check-report")).to_contain_text("compatible", timeout=20_000)
        seen["version form"] = violations(page)

        # the analytics charts draw (Chart.js and analytics.js from static files)
        page.goto(f"{live_server.url}/analytics/")
        page.wait_for_function("() => window.Chart && Object.keys(window.Chart.instances).length >= 3")
        seen["/analytics/"] = violations(page)

        # Swagger UI renders the API from its split start-up script
        page.goto(f"{live_server.url}/api/v1/docs/")
        expect(page.locator(".swagger-ui .opblock").first).to_be_visible(timeout=30_000)
        seen["/api/v1/docs/"] = violations(page)

        assert {path: found for path, found in seen.items() if found} == {}
        assert console_errors == []
    finally:
        context.close()


def test_the_shared_conventions_replace_the_inline_handlers(live_server, portal_with_data, sign_in, engineer):
    page = sign_in(engineer)
    page.goto(f"{live_server.url}/sources/")
    page.locator("#filter-platform").select_option("slack")       # data-autosubmit
    page.wait_for_url("**/sources/?*platform=slack*")
    expect(page.get_by_role("link", name="slack-bot")).to_be_visible()
    expect(page.get_by_role("link", name="web-chat")).to_have_count(0)

    page.goto(f"{live_server.url}/quarantine/")
    page.get_by_label("Select all on this page").check()         # data-check-all
    boxes = page.locator("input[type=checkbox][name=ids]")
    assert boxes.count() >= 1
    assert all(boxes.nth(i).is_checked() for i in range(boxes.count()))

    page.goto(f"{live_server.url}/account/tokens/")
    page.get_by_label("Name").fill("ci")
    page.get_by_test_id("create-token").get_by_role("button").click()
    token = page.get_by_test_id("new-token-value")
    token.click()                                                 # data-select-on-click
    selected = page.evaluate("() => document.getSelection().toString() || "
                             "document.activeElement.value.substring(document.activeElement.selectionStart, "
                             "document.activeElement.selectionEnd)")
    assert selected == token.input_value() and selected.startswith("co_")
