"""A phone-sized screen (390×844, walkthrough F21): the nav folds behind a Menu button that opens it, and no
page lays out wider than the screen (a wide table scrolls inside its own box instead)."""

from __future__ import annotations

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from tests.portal.test_links_per_role import demo_world

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WIDTH, HEIGHT = 390, 844
#: what stands out past the right edge, for the failure message
OVERFLOWING = """() => [...document.querySelectorAll('body *')]
  .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
  .filter(e => ![...e.parentElement.closest('table, pre, .diff-wrap, .overflow-auto') ? [1] : []].length)
  .slice(0, 5).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))"""


@pytest.fixture
def phone(live_server, browser, settings, warehouse_server, tmp_path, platform_user, admin_user):
    """A signed-in admin (who sees every page) on a 390×844 screen, with the demo's data."""
    from tests.conftest import PASSWORD

    demo_world(settings, tmp_path, platform_user)
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill(admin_user.get_username())
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")
    yield page
    context.close()


def main_pages() -> list[str]:
    subject = "web-chat.chat_event"
    return [reverse("home"), reverse("source_list"), reverse("source_detail", args=["web-chat"]),
            reverse("contract_list"), reverse("contract_detail", args=[subject]),
            reverse("version_detail", args=[subject, 1]), reverse("version_create", args=[subject]),
            reverse("review_queue"), reverse("review_detail", args=[subject, 2]),
            reverse("canonical_model"), reverse("pipeline_status"), reverse("quarantine_list"),
            reverse("analytics_dashboard"), reverse("analytics_runs"), reverse("analytics_prices"),
            reverse("audit_log"), reverse("api_tokens")]


def test_no_main_page_is_wider_than_a_phone_screen(phone, live_server):
    too_wide = {}
    for url in main_pages():
        response = phone.goto(f"{live_server.url}{url}")
        assert response.status == 200, url
        width = phone.evaluate("document.documentElement.scrollWidth")
        if width > WIDTH:
            too_wide[url] = (width, phone.evaluate(OVERFLOWING))
    assert too_wide == {}


def test_the_menu_button_opens_the_folded_nav(phone, live_server):
    phone.goto(f"{live_server.url}{reverse('contract_list')}")
    menu = phone.get_by_role("button", name="Menu")
    pipeline = phone.locator("header nav").get_by_role("link", name="Pipeline")
    sign_out = phone.get_by_role("button", name="Sign out")
    expect(menu).to_be_visible()
    expect(menu).to_have_attribute("aria-expanded", "false")
    expect(pipeline).to_be_hidden()
    expect(sign_out).to_be_hidden()

    menu.click()
    expect(menu).to_have_attribute("aria-expanded", "true")
    expect(pipeline).to_be_visible()
    expect(sign_out).to_be_visible()
    assert phone.evaluate("document.documentElement.scrollWidth") <= WIDTH
    pipeline.click()
    phone.wait_for_url("**/pipeline/")
    expect(phone.get_by_role("heading", name="Pipeline", exact=True)).to_be_visible()

    phone.get_by_role("button", name="Menu").click()
    phone.keyboard.press("Escape")
    expect(phone.locator("header nav").get_by_role("link", name="Pipeline")).to_be_hidden()


def test_a_wide_screen_shows_the_nav_without_a_menu_button(live_server, sign_in, platform_user):
    page = sign_in(platform_user)  # 1366 px wide
    expect(page.get_by_role("button", name="Menu")).to_be_hidden()
    expect(page.locator("header nav").get_by_role("link", name="Pipeline")).to_be_visible()
