"""A privacy officer's deletion in a real browser: file with identifiers of two kinds and a time zone, read the
expansion, remove a wrong link with a reason, confirm; the progress updates by itself (htmx polling) while a
worker runs the erasure; the evidence opens and downloads. No Content-Security-Policy violation on the way."""

from __future__ import annotations

import json

import pytest
import redis
from django.conf import settings
from playwright.sync_api import expect

from deletion import services
from deletion.models import DeletionTicket, TicketStatus
from tests.deletion import conftest as deletion_fixtures
from tests.deletion.expanders import ALICE_EMAIL
from tests.e2e.test_content_security_policy import RECORD_VIOLATIONS, violations

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("deletion_env")]
deletion_env = deletion_fixtures.deletion_env  # the deletion tests' graph and steps


def test_a_privacy_officer_files_confirms_watches_and_downloads_the_evidence(live_server, sign_in, privacy_user):
    page = sign_in(privacy_user)
    page.add_init_script(RECORD_VIOLATIONS)
    expect(page.get_by_test_id("deletion-sla")).to_contain_text("Deletion requests")
    page.get_by_role("button", name="File a deletion request").first.click()
    page.get_by_label("Regulation").select_option("gdpr")
    page.get_by_label("Requester's reference").fill("CASE-E2E-1")
    page.get_by_label("Received at (wall-clock time)").fill("2026-12-01T09:30")
    page.get_by_label("Time zone of that time").select_option("Europe/Berlin")
    page.get_by_label("Identifier 1: kind").select_option("email")
    page.get_by_label("Identifier 1: value").fill(ALICE_EMAIL)
    page.get_by_label("Identifier 2: kind").select_option("platform_user_id")
    page.get_by_label("Identifier 2: value").fill("T0ALICE:U0ALICE")
    page.get_by_role("button", name="File and show the expansion").click()

    expect(page.get_by_test_id("expansion")).to_contain_text("device-alice-iphone")
    assert violations(page) == []                                            # each page load starts a new list
    expect(page.get_by_test_id("ticket-clock")).to_contain_text("2026-12-04 08:30")   # 09:30 CET + 72 h, in UTC
    row = page.get_by_test_id("linked").filter(has_text="device-alice-iphone")
    row.get_by_label("Reason").fill("a phone she sold")
    row.get_by_role("button", name="Remove").click()
    expect(page.get_by_test_id("removed")).to_contain_text("a phone she sold")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("confirm").click()
    expect(page.get_by_test_id("ticket-status")).to_have_text("Confirmed")

    ticket = DeletionTicket.objects.get()
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("deletion")       # the task the page queued: run here
    assert services.ticket_execute(ticket_id=ticket.pk, worker_id="e2e") == "done"
    expect(page.get_by_test_id("ticket-status")).to_have_text("Done", timeout=20_000)   # polled by htmx
    expect(page.get_by_test_id("ticket-clock")).to_contain_text("Done")         # the page reloaded once
    expect(page.get_by_test_id("expansion")).not_to_contain_text("device-alice-iphone")  # hashed now
    assert violations(page) == []
    page.get_by_test_id("evidence-link").click()
    expect(page.get_by_test_id("evidence-store")).to_have_count(ticket.steps.count())   # one row per step run
    assert ticket.steps.count() == len(services.erasure_steps())
    with page.expect_download() as download:
        page.get_by_test_id("download").click()
    record = json.loads(open(download.value.path()).read())
    assert record["ticket"] == ticket.reference and record["all_verified_zero_remaining"]
    assert DeletionTicket.objects.get().status == TicketStatus.DONE
    assert violations(page) == []
