"""The privacy officer's first visit in a real browser (walkthrough F4): their home speaks to their role, not
"ask an admin to join a team", and no link they are shown leads to a page they may not open."""

from __future__ import annotations

import pytest
import requests
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_the_privacy_officer_home_speaks_to_the_role_and_every_link_opens(live_server, sign_in, privacy_user):
    page = sign_in(privacy_user)
    expect(page.get_by_test_id("privacy")).to_contain_text("Personal data")
    expect(page.get_by_test_id("privacy-masking")).to_contain_text("masked")
    expect(page.get_by_text("Not on a team yet")).to_have_count(0)
    expect(page.get_by_text("Ask an admin to add you")).to_have_count(0)

    # every link in the nav and on the home page opens for this role (no 403 dead ends)
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    hrefs = page.eval_on_selector_all("header nav a[href^='/'], main a[href^='/']", "els => els.map(e => e.href)")
    assert hrefs, "the home page links somewhere"
    for href in sorted(set(hrefs)):
        answer = requests.get(href, cookies=cookies, timeout=30, allow_redirects=False)
        assert answer.status_code == 200, (href, answer.status_code)

    page.get_by_role("link", name="canonical model").first.click()
    page.wait_for_url("**/canonical/**")
    expect(page.locator("main")).to_contain_text("personal")
