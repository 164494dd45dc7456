"""The review flow in a real browser: a platform team member proposes a change, a data engineer reviews
it, and the author sees the outcome on the contract page."""

from __future__ import annotations

import json

import orjson
import pytest
from playwright.sync_api import expect

from contracts.models import VersionStatus

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def propose_optional_field(page, live_server, subject: str, v1) -> None:
    """As the author: open the contract, paste a schema adding an optional field, watch the check, submit."""
    page.locator("header nav").get_by_role("link", name="Contracts", exact=True).click()
    page.wait_for_url("**/contracts/")
    page.get_by_role("link", name=subject, exact=True).click()
    expect(page.get_by_test_id("status-1")).to_have_text("Approved")
    page.get_by_test_id("propose-version").click()

    schema = orjson.loads(v1.schema.schema)
    schema["fields"].append({"name": "experiment_id", "type": ["null", "string"], "default": None,
                             "doc": "A/B experiment the session is in."})
    editor = page.locator("#id_schema")
    editor.fill(json.dumps(schema, indent=2))
    editor.press("End")  # a keystroke, as typing or pasting would give: the live check listens for keyup

    report = page.get_by_test_id("check-report")
    expect(report).to_contain_text("experiment_id", timeout=10_000)
    expect(report.get_by_test_id("verdict")).to_have_text("compatible")
    expect(report).to_contain_text("FIELD_ADDED_WITH_DEFAULT")
    expect(report.get_by_test_id("previews")).to_contain_text("canonical event")

    page.get_by_label("Change summary").fill("Add experiment_id for A/B tests")
    page.get_by_test_id("submit-for-review").click()
    expect(page.get_by_test_id("version-status")).to_have_text("In review")
    expect(page.locator(".messages")).to_contain_text("submitted for review")


def open_review(page, subject: str) -> None:
    nav_count = page.get_by_test_id("queue-count")
    expect(nav_count).to_have_text("1")
    page.get_by_role("link", name="Review queue").click()
    row = page.get_by_test_id("queue-row").filter(has_text=subject)
    expect(row).to_contain_text("v2")
    row.get_by_role("button", name="Review").click()
    diff = page.get_by_test_id("schema-diff")
    added = diff.locator("tr.diff-insert, tr.diff-replace").filter(has_text="experiment_id")
    expect(added.first).to_be_visible()


def sign_out(page) -> None:
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/accounts/login/")


def test_author_proposes_engineer_approves_author_sees_approved(
    live_server, sign_in, platform_user, engineer, chat_v1
):
    subject = chat_v1.contract.subject
    author = sign_in(platform_user)
    propose_optional_field(author, live_server, subject, chat_v1)
    sign_out(author)

    reviewer = sign_in(engineer)
    open_review(reviewer, subject)
    reviewer.get_by_test_id("approve").click()
    expect(reviewer.locator(".messages")).to_contain_text(f"Approved {subject} v2")
    expect(reviewer.get_by_test_id("review-queue")).to_contain_text("Nothing to review")

    author = sign_in(platform_user)
    author.goto(f"{live_server.url}/contracts/{subject}/")
    expect(author.get_by_test_id("status-2")).to_have_text("Approved")
    assert chat_v1.contract.versions.get(version=2).status == VersionStatus.APPROVED


def test_engineer_rejects_with_a_comment_and_the_author_sees_it(
    live_server, sign_in, platform_user, engineer, chat_v1
):
    subject = chat_v1.contract.subject
    author = sign_in(platform_user)
    propose_optional_field(author, live_server, subject, chat_v1)
    sign_out(author)

    reviewer = sign_in(engineer)
    open_review(reviewer, subject)
    reviewer.get_by_test_id("reject").click()
    expect(reviewer.locator("[data-field=comment]")).to_contain_text("Say why the version is rejected")
    reviewer.get_by_label("Comment").fill("Call it experiment_key, like the iOS app does.")
    reviewer.get_by_test_id("reject").click()
    expect(reviewer.locator(".messages")).to_contain_text(f"Rejected {subject} v2")

    author = sign_in(platform_user)
    author.goto(f"{live_server.url}/contracts/{subject}/")
    expect(author.get_by_test_id("status-2")).to_have_text("Rejected")
    expect(author.get_by_test_id("review-comment-2")).to_contain_text(
        "Call it experiment_key, like the iOS app does.")


# --- walkthrough 2026-12 (F17, F18, F25) ---------------------------------------------------------------

def submit_v2_for_review(v1, author):
    """v2 adding an optional field, straight into review (the author's side is tested above)."""
    from contracts.services import contract_version_submit

    schema = orjson.loads(v1.schema.schema)
    schema["fields"].append({"name": "experiment_id", "type": ["null", "string"], "default": None})
    version, _ = contract_version_submit(actor=author, contract=v1.contract, schema=schema, mapping_spec=v1.mapping,
                                         samples=v1.sample_payloads, change_summary="Add experiment_id")
    assert version.status == VersionStatus.IN_REVIEW
    return version


def console_errors_of(page) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def test_submitting_the_version_editor_starts_no_check_and_logs_no_console_errors(
    live_server, sign_in, platform_user, chat_v1
):
    subject = chat_v1.contract.subject
    page = sign_in(platform_user)
    errors = console_errors_of(page)
    page.goto(f"{live_server.url}/contracts/{subject}/versions/new/")
    report = page.get_by_test_id("check-report")
    expect(report.get_by_test_id("verdict")).to_have_text("compatible")  # the check run on opening the form
    page.get_by_label("Change summary").fill("Add experiment_id")
    schema = orjson.loads(chat_v1.schema.schema)
    schema["fields"].append({"name": "experiment_id", "type": ["null", "string"], "default": None})
    # Edited, no keystroke since: pressing the button blurs the textarea, whose `change` schedules a check.
    page.locator("#id_schema").fill(json.dumps(schema, indent=2))
    checks_after_submit: list[str] = []
    page.on("request", lambda request: checks_after_submit.append(request.url) if "/check/" in request.url else None)
    page.get_by_test_id("submit-for-review").click()
    expect(page.get_by_test_id("version-status")).to_have_text("In review")
    expect(page.locator(".messages")).to_contain_text("submitted for review")
    assert checks_after_submit == []
    assert errors == []


def test_the_decision_comes_before_the_collapsed_samples(live_server, sign_in, platform_user, engineer, chat_v1):
    version = submit_v2_for_review(chat_v1, platform_user)
    page = sign_in(engineer)
    page.goto(f"{live_server.url}/review/{version.contract.subject}/{version.version}/")
    decision = page.get_by_role("heading", name="Decision")
    verdict, previews = page.get_by_test_id("compat-report"), page.get_by_test_id("previews")
    expect(verdict.get_by_test_id("verdict")).to_have_text("compatible")
    assert verdict.bounding_box()["y"] < decision.bounding_box()["y"] < previews.bounding_box()["y"]
    samples = previews.locator("details")
    assert samples.count() == len(chat_v1.sample_payloads)
    for index in range(samples.count()):
        expect(samples.nth(index)).not_to_have_attribute("open", "")
    # the samples are there when wanted
    samples.first.locator("summary").click()
    expect(samples.first.locator("pre").first).to_be_visible()


def test_rejecting_without_a_comment_shows_the_error_where_the_reviewer_is(
    live_server, sign_in, platform_user, engineer, chat_v1
):
    version = submit_v2_for_review(chat_v1, platform_user)
    page = sign_in(engineer)
    page.goto(f"{live_server.url}/review/{version.contract.subject}/{version.version}/")
    page.get_by_test_id("reject").click()
    summary = page.get_by_test_id("error-summary")
    expect(summary).to_contain_text("Your decision was not saved")
    expect(summary).to_contain_text("Say why the version is rejected")
    comment = page.get_by_label("Comment")
    expect(comment).to_be_focused()
    expect(comment).to_be_in_viewport()
    comment.fill("Call it experiment_key, like the iOS app does.")
    page.get_by_test_id("reject").click()
    expect(page.locator(".messages")).to_contain_text(f"Rejected {version.contract.subject} v2")
