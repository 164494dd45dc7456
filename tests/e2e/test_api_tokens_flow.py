"""API tokens in a real browser: a platform team member creates a token on the tokens page, a script uses
it against the API, then they revoke it and the script is refused with a message that says so."""

from __future__ import annotations

import pytest
import requests
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_create_use_revoke_a_token(live_server, sign_in, platform_user, chat_contract):
    page = sign_in(platform_user)
    page.locator("header nav").get_by_role("link", name="API tokens").click()
    page.wait_for_url("**/account/tokens/")

    page.get_by_label("Name").fill("chat-platform CI")
    page.get_by_label("Expires").select_option("30")
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_test_id("new-token")).to_contain_text("shown only once")
    token = page.get_by_test_id("new-token-value").input_value()
    assert token.startswith("co_")

    api = f"{live_server.url}/api/v1/contracts/{chat_contract.subject}/"
    used = requests.get(api, headers={"Authorization": f"Token {token}"}, timeout=10)
    assert used.status_code == 200 and used.json()["subject"] == chat_contract.subject

    # Back to the page (not a reload, which would post the form again): the list now says when the token
    # was used, and the token itself is not on the page any more.
    page.locator("header nav").get_by_role("link", name="API tokens").click()
    row = page.get_by_test_id("token-row").filter(has_text="chat-platform CI")
    expect(row).to_contain_text("ago")
    expect(page.get_by_test_id("new-token")).to_have_count(0)
    assert token not in page.content()

    row.get_by_test_id("revoke").click()
    expect(page.get_by_test_id("revoke-confirm")).to_contain_text("Revoke token “chat-platform CI”?")
    page.get_by_test_id("confirm-revoke").click()
    page.wait_for_url("**/account/tokens/")
    expect(page.locator(".messages")).to_contain_text("revoked")
    expect(page.get_by_test_id("token-row").filter(has_text="chat-platform CI")
           .get_by_test_id("token-state")).to_contain_text("revoked")

    refused = requests.get(api, headers={"Authorization": f"Token {token}"}, timeout=10)
    assert refused.status_code == 401
    assert refused.json()["error"] == "token_revoked" and "revoked on" in refused.json()["message"]
