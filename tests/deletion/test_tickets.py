"""Deletion tickets end to end on the real PostgreSQL (and Redis for the cache step): a privacy officer files
in the portal, sees the expansion, removes a wrongly linked identifier, confirms; the job erases step by step,
retries a transient failure, fails on a verification that finds data left; the evidence lists every store;
identifiers are hashed once done. Only privacy officers and admins see any of it, pages and API."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from deletion import services
from deletion.erasure_types import IdentifierKind, email_sha256
from deletion.models import DeletionTicket, StepStatus, TicketStatus
from portal.models import AuditRecord
from tests.deletion import steps
from tests.deletion.expanders import ALICE, ALICE_EMAIL, SHARED_DEVICE
from tests.portal.test_api_tokens import client_for
from tests.portal.test_views import text_of

pytestmark = pytest.mark.django_db


def file_form(received=None, **identifiers) -> dict:
    received = received or timezone.now() - timedelta(hours=2)
    data = {"regulation": "gdpr", "requester_reference": "CASE-2026-17",
            "received_at": received.strftime("%Y-%m-%dT%H:%M"), "received_tz": "UTC"}
    for row, (kind, value) in enumerate(identifiers.items()):
        data[f"kind_{row}"], data[f"value_{row}"] = kind, value
    return data


def run(ticket: DeletionTicket) -> str:
    """What a worker of the deletion queue does with the ticket (the worker test runs real workers)."""
    return services.ticket_execute(ticket_id=ticket.pk, worker_id="test-worker")


def backoff_elapses(ticket: DeletionTicket) -> None:
    """The clock passes the ticket's backoff (the test runs in one transaction, where the database's now() stands
    still)."""
    DeletionTicket.objects.filter(pk=ticket.pk).update(lease_expires_at=timezone.now() - timedelta(hours=1))


def test_privacy_officer_files_confirms_and_gets_evidence_and_identifiers_are_hashed(
        deletion_env, privacy_user):
    (deletion_env / "files_a" / "anon-alice-web").write_text("x")
    (deletion_env / "files_a" / "someone-else").write_text("x")
    (deletion_env / "files_b" / "T0ALICE:U0ALICE").write_text("x")
    cache.set("test:deletion:profile", {"slack": "T0ALICE:U0ALICE"}, 300)
    cache.set("test:deletion:other", {"slack": "T0BOB:U0BOB"}, 300)
    client = client_for(privacy_user)

    response = client.post(reverse("deletion_file"), file_form(email=ALICE_EMAIL))
    ticket = DeletionTicket.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("deletion_ticket", args=[ticket.pk])
    assert ticket.status == TicketStatus.EXPANDED
    assert ticket.due_at - ticket.received_at == timedelta(hours=72)
    page = text_of(client.get(reverse("deletion_ticket", args=[ticket.pk])))
    for shown in ("T0ALICE:U0ALICE", "anon-alice-web", "device-alice-iphone", "slack-bot", "ios-app",
                  "Slack profile e-mail matches the e-mail hash", "Confirm and erase"):
        assert shown in page

    removed = client.post(reverse("deletion_ticket_action", args=[ticket.pk, "remove"]),
                          {"identifier": "device_id:device-alice-iphone", "reason": "her old phone, sold in 2025"})
    assert removed.status_code == 302
    client.post(reverse("deletion_ticket_action", args=[ticket.pk, "confirm"]))
    ticket.refresh_from_db()
    assert ticket.status == TicketStatus.CONFIRMED and ticket.confirmed_by == privacy_user

    assert run(ticket) == "done"
    ticket.refresh_from_db()
    assert ticket.status == TicketStatus.DONE
    assert not (deletion_env / "files_a" / "anon-alice-web").exists()
    assert (deletion_env / "files_a" / "someone-else").exists()
    assert not (deletion_env / "files_b" / "T0ALICE:U0ALICE").exists()
    assert cache.get("test:deletion:profile") is None and cache.get("test:deletion:other") is not None

    # the ticket keeps no identifier in clear; its evidence does
    stored = json.dumps([ticket.identifiers, ticket.expansion, ticket.removals])
    for clear in (ALICE_EMAIL, "T0ALICE", "anon-alice-web", "device-alice-iphone", ALICE, email_sha256(ALICE_EMAIL),
                  "her old phone"):  # the officer's reason for a removal may quote the person: evidence only
        assert clear not in stored
    assert ticket.identifiers_hashed and all("value_hash" in row for row in ticket.identifiers)

    done_page = client.get(reverse("deletion_ticket", args=[ticket.pk])).content.decode()
    assert "identifiers are kept hashed here" in done_page and "removed by privacy" in done_page
    assert "anon-alice-web" not in done_page and ALICE_EMAIL not in done_page

    evidence_page = client.get(reverse("deletion_evidence", args=[ticket.pk]))
    assert evidence_page.status_code == 200
    download = client.get(reverse("deletion_evidence", args=[ticket.pk]), {"format": "json"})
    assert download["Content-Disposition"] == f'attachment; filename="{ticket.reference}-evidence.json"'
    record = json.loads(download.content)
    assert [s["step"] for s in record["stores"]] == [
        "platform.sample_payloads", "platform.quality_samples", "platform.cache", "test.files_a", "test.transient",
        "test.files_b"]
    assert all(s["remaining"] == 0 and s["verification"] and s["finished_at"] for s in record["stores"])
    assert record["all_verified_zero_remaining"] and record["within_sla"]
    assert {s["step"]: s["removed"] for s in record["stores"]}["test.files_a"] == 1
    assert f"email:{ALICE_EMAIL}" in record["identifiers_erased"]
    assert "device_id:device-alice-iphone" not in record["identifiers_erased"]
    assert record["removed_from_expansion"][0]["reason"] == "her old phone, sold in 2025"
    actions = set(AuditRecord.objects.filter(object_id=str(ticket.pk), object_type="deletion.deletionticket")
                  .values_list("action", flat=True))
    assert actions == {"deletion_ticket.file", "deletion_ticket.expand", "deletion_ticket.remove_identifier",
                       "deletion_ticket.confirm", "deletion_ticket.done", "deletion_ticket.evidence_view",
                       "deletion_ticket.evidence_download"}
    audited = json.dumps(list(AuditRecord.objects.values_list("before", "after")))
    assert ALICE_EMAIL not in audited and "her old phone" not in audited


def test_a_platform_team_member_cannot_file_or_see_tickets_on_pages_or_api(
        deletion_env, platform_user, engineer, privacy_user, api_client_for):
    ticket = services.ticket_file(actor=privacy_user, regulation="gdpr", requester_reference="R-1",
                                  identifiers=[services.subject.identifier_parse("email", ALICE_EMAIL)],
                                  received_at=timezone.now())
    for user in (platform_user, engineer):
        client = client_for(user)
        assert client.get(reverse("deletion_list")).status_code == 403
        assert client.get(reverse("deletion_file")).status_code == 403
        assert client.post(reverse("deletion_file"), file_form(email=ALICE_EMAIL)).status_code == 403
        assert client.get(reverse("deletion_ticket", args=[ticket.pk])).status_code == 403
        assert client.post(reverse("deletion_ticket_action", args=[ticket.pk, "confirm"])).status_code == 403
        assert reverse("deletion_list") not in client.get(reverse("home")).content.decode()
        api = api_client_for(user)
        filed = api.post(reverse("api_deletion_file"), {
            "regulation": "gdpr", "requester_reference": "R-2", "received_at": timezone.now().isoformat(),
            "identifiers": [{"kind": "email", "value": ALICE_EMAIL}]}, format="json")
        assert filed.status_code == 403 and filed.json()["error"] == "forbidden"
        assert api.get(reverse("api_deletion_ticket", args=[ticket.pk])).status_code == 403
        assert api.post(reverse("api_deletion_confirm", args=[ticket.pk]), {}, format="json").status_code == 403
    with pytest.raises(services.DeletionError):
        services.ticket_confirm(actor=platform_user, ticket=ticket)
    assert DeletionTicket.objects.count() == 1
    ticket.refresh_from_db()
    assert ticket.status == TicketStatus.EXPANDED


def test_the_api_files_gets_confirms_and_gives_the_evidence(deletion_env, privacy_user, api_client_for):
    api = api_client_for(privacy_user)
    naive = api.post(reverse("api_deletion_file"), {
        "regulation": "gdpr", "requester_reference": "R-3", "received_at": "2026-03-29T01:30:00",
        "identifiers": [{"kind": "email", "value": ALICE_EMAIL}]}, format="json")
    assert naive.status_code == 400 and "UTC offset" in naive.json()["message"]
    bad_kind = api.post(reverse("api_deletion_file"), {
        "regulation": "gdpr", "requester_reference": "R-3", "received_at": "2026-03-29T01:30:00+01:00",
        "identifiers": [{"kind": "email", "value": "not an address"}]}, format="json")
    assert bad_kind.status_code == 400 and "not an e-mail address" in bad_kind.json()["message"]

    filed = api.post(reverse("api_deletion_file"), {
        "regulation": "ccpa", "requester_reference": "R-3", "received_at": "2026-11-30T23:30:00-05:00",
        "identifiers": [{"kind": "platform_user_id", "value": "T0ALICE:U0ALICE"}]}, format="json")
    assert filed.status_code == 201, filed.content
    body = filed.json()
    assert body["due_at"] == "2026-12-04T04:30:00Z" and body["status"] == "expanded"
    assert {row["id_key"] for row in body["expansion"]} >= {f"email_sha256:{email_sha256(ALICE_EMAIL)}",
                                                           "anonymous_id:anon-alice-web"}
    ticket_id = body["id"]
    unknown = api.post(reverse("api_deletion_confirm", args=[ticket_id]), {"removals": [
        {"identifier": "anonymous_id:anon-alice-web", "reason": "x"},
        {"identifier": "device_id:nobody", "reason": "x"}]}, format="json")
    assert unknown.status_code == 400 and unknown.json()["details"] == {
        "identifier": ["That identifier is not in this ticket's expansion."]}
    assert DeletionTicket.objects.get(pk=ticket_id).removals == []           # all or nothing
    confirmed = api.post(reverse("api_deletion_confirm", args=[ticket_id]), {"removals": [
        {"identifier": "device_id:device-alice-iphone", "reason": "wrong link"}]}, format="json")
    assert confirmed.status_code == 202 and confirmed.json()["status"] == "confirmed"
    assert api.get(reverse("api_deletion_evidence", args=[ticket_id])).status_code == 404
    assert run(DeletionTicket.objects.get(pk=ticket_id)) == "done"
    got = api.get(reverse("api_deletion_ticket", args=[ticket_id])).json()
    assert got["status"] == "done" and [s["status"] for s in got["steps"]] == ["done"] * 6
    assert "T0ALICE:U0ALICE" not in json.dumps(got)
    evidence = api.get(reverse("api_deletion_evidence", args=[ticket_id])).json()
    assert "platform_user_id:T0ALICE:U0ALICE" in evidence["identifiers_erased"]
    assert all(store["remaining"] == 0 for store in evidence["stores"])
    assert api.get(reverse("api_deletion_ticket", args=[999999])).status_code == 404


def test_a_held_expansion_cannot_run_without_a_second_officer(deletion_env, privacy_user, second_privacy_user):
    officer = client_for(privacy_user)
    officer.post(reverse("deletion_file"), file_form(device_id=SHARED_DEVICE))
    ticket = DeletionTicket.objects.get()
    assert ticket.status == TicketStatus.HELD
    assert ticket.held_reasons == [f"device_id {SHARED_DEVICE} is shared by 40 people"]
    page = text_of(officer.get(reverse("deletion_ticket", args=[ticket.pk])))
    assert "Held for a second officer's review" in page and "another privacy officer reviews it" in page

    officer.post(reverse("deletion_ticket_action", args=[ticket.pk, "confirm"]))
    ticket.refresh_from_db()
    assert ticket.status == TicketStatus.HELD
    with pytest.raises(services.DeletionError, match="second privacy officer"):
        services.ticket_confirm(actor=privacy_user, ticket=ticket)
    with pytest.raises(services.DeletionError, match="not by the officer who filed"):
        services.ticket_review_approve(actor=privacy_user, ticket=ticket)
    assert run(ticket) == "nothing"                               # a held ticket is not runnable
    assert steps.runs() == []

    client_for(second_privacy_user).post(reverse("deletion_ticket_action", args=[ticket.pk, "review"]))
    ticket.refresh_from_db()
    assert ticket.status == TicketStatus.EXPANDED and ticket.reviewed_by == second_privacy_user
    officer.post(reverse("deletion_ticket_action", args=[ticket.pk, "confirm"]))
    ticket.refresh_from_db()
    assert ticket.status == TicketStatus.CONFIRMED
    assert run(ticket) == "done"
    assert DeletionTicket.objects.get().evidence.record["reviewed_by"] == "privacy2"


def test_a_transient_failure_is_retried_and_done_steps_are_not_redone(deletion_env, privacy_user, settings):
    (deletion_env / "transient_failures").write_text("2")
    ticket = services.ticket_file(actor=privacy_user, regulation="gdpr", requester_reference="R-4",
                                  identifiers=[services.subject.identifier_parse("anonymous_id", "anon-alice-web")],
                                  received_at=timezone.now())
    ticket = services.ticket_confirm(actor=privacy_user, ticket=ticket)
    for backoff in (10, 20):                                       # DELETION_RETRY_BASE_SECONDS, doubled
        with pytest.raises(services.StepRetryLater) as retry:
            run(ticket)
        assert retry.value.seconds == backoff
        assert run(ticket) == "busy"                               # held for its backoff
        assert services.deletion_resume_stale() == []               # the sweeper leaves it alone too
        backoff_elapses(ticket)
    step = ticket.steps.get(name="test.transient")
    assert step.status == StepStatus.PENDING and step.attempts == 2 and "store busy" in step.error
    assert run(ticket) == "done"
    assert steps.runs() == ["test.files_a", "test.transient", "test.transient", "test.transient", "test.files_b"]
    assert ticket.steps.get(name="test.transient").attempts == 3


def test_a_step_gives_up_after_its_attempts_and_a_verification_with_data_left_fails_the_ticket(
        deletion_env, privacy_user, settings):
    settings.DELETION_STEP_MAX_ATTEMPTS = 2
    (deletion_env / "transient_failures").write_text("5")
    ticket = services.ticket_file(actor=privacy_user, regulation="gdpr", requester_reference="R-5",
                                  identifiers=[services.subject.identifier_parse("anonymous_id", "anon-alice-web")],
                                  received_at=timezone.now())
    ticket = services.ticket_confirm(actor=privacy_user, ticket=ticket)
    with pytest.raises(services.TransientStoreError):
        run(ticket)
    backoff_elapses(ticket)
    assert run(ticket) == "failed"
    ticket.refresh_from_db()
    assert ticket.status == TicketStatus.FAILED and "test.transient" in ticket.error
    assert not hasattr(ticket, "evidence") or ticket.evidence is None

    settings.DELETION_STEP_PROVIDERS = ["tests.deletion.steps.stubborn_steps"]
    other = services.ticket_file(actor=privacy_user, regulation="gdpr", requester_reference="R-6",
                                 identifiers=[services.subject.identifier_parse("anonymous_id", "anon-2")],
                                 received_at=timezone.now())
    other = services.ticket_confirm(actor=privacy_user, ticket=other)
    assert run(other) == "failed"
    other.refresh_from_db()
    assert "the verification found 2 remaining" in other.error
    page = text_of(client_for(privacy_user).get(reverse("deletion_ticket", args=[other.pk])))
    assert "the verification found 2 remaining" in page and "Run again" in page
    assert client_for(privacy_user).get(reverse("deletion_evidence", args=[other.pk])).status_code == 404


def test_a_failed_expansion_leaves_the_ticket_filed_with_the_reason(deletion_env, privacy_user, settings):
    settings.DELETION_EXPANDER = "tests.deletion.expanders.expand_unreachable"
    client = client_for(privacy_user)
    client.post(reverse("deletion_file"), file_form(email=ALICE_EMAIL))
    ticket = DeletionTicket.objects.get()
    assert ticket.status == TicketStatus.FILED and "warehouse unreachable" in ticket.expansion_error
    assert "warehouse unreachable" in text_of(client.get(reverse("deletion_ticket", args=[ticket.pk])))
    with pytest.raises(services.DeletionError, match="no expansion yet"):
        services.ticket_confirm(actor=privacy_user, ticket=ticket)
    settings.DELETION_EXPANDER = "tests.deletion.expanders.expand_identifiers"
    client.post(reverse("deletion_ticket_action", args=[ticket.pk, "expand"]))
    ticket.refresh_from_db()
    assert ticket.status == TicketStatus.EXPANDED and not ticket.expansion_error


def test_the_filing_form_names_what_is_wrong(deletion_env, privacy_user):
    client = client_for(privacy_user)
    data = file_form(email="alice at example", device_id="")
    data.update({"received_at": "2026-03-29T02:30", "received_tz": "Europe/Berlin", "value_1": "dev-1",
                 "kind_1": ""})
    response = client.post(reverse("deletion_file"), data)
    assert response.status_code == 400
    text = text_of(response)
    assert "does not exist in Europe/Berlin" in text
    assert "'alice at example' is not an e-mail address" in text
    assert "Pick the kind of this identifier" in text
    assert DeletionTicket.objects.count() == 0
    future = client.post(reverse("deletion_file"), file_form(timezone.now() + timedelta(days=2), email=ALICE_EMAIL))
    assert future.status_code == 400 and "in the future" in text_of(future)
    far = dict(file_form(email=ALICE_EMAIL), received_at="9999-12-31T23:50", received_tz="Pacific/Pago_Pago")
    refused = client.post(reverse("deletion_file"), far)  # the end of the calendar in UTC: was a 500
    assert refused.status_code == 400 and "The year 9999 cannot be" in text_of(refused)
    empty = client.post(reverse("deletion_file"), {})  # an empty form is an error, not a fresh page
    assert empty.status_code == 400 and DeletionTicket.objects.count() == 0


def test_the_sla_page_and_home_show_each_state_and_completion_figures(deletion_env, privacy_user):
    now = timezone.now()
    ident = [services.subject.identifier_parse("anonymous_id", "anon-x")]

    def filed(hours_ago: float) -> DeletionTicket:
        return services.ticket_file(actor=privacy_user, regulation="gdpr", requester_reference=f"R-{hours_ago}",
                                    identifiers=ident, received_at=now - timedelta(hours=hours_ago))

    open_ticket, at_risk, overdue = filed(1), filed(50), filed(80)
    done = filed(30)
    DeletionTicket.objects.filter(pk=done.pk).update(status=TicketStatus.DONE, finished_at=now - timedelta(hours=20))
    page = client_for(privacy_user).get(reverse("deletion_list"))
    content = page.content.decode()
    for ticket, state in ((open_ticket, "open"), (at_risk, "at_risk"), (overdue, "overdue"), (done, "done")):
        assert f'data-ticket="{ticket.reference}" data-sla="{state}"' in content
    text = text_of(page)
    assert "10 h 00 min" in text                                  # median and p95 of the one done ticket
    home = text_of(client_for(privacy_user).get(reverse("home")))
    assert "1 overdue" in home and "1 at risk" in home and "1 open" in home

    from deletion.alert_rules import deletion_sla

    conditions = {c.subject: c for c in deletion_sla(now)}
    assert set(conditions) == {at_risk.reference, overdue.reference}
    assert conditions[overdue.reference].severity == "critical" and conditions[at_risk.reference].severity == "warning"
    assert conditions[overdue.reference].runbook == "deletion-sla"
    assert conditions[overdue.reference].link == reverse("deletion_ticket", args=[overdue.pk])


def test_sample_payloads_saved_with_contract_versions_are_erased(deletion_env, privacy_user, chat_v1):
    chat_v1.sample_payloads = [{"user": {"email": ALICE_EMAIL}, "text": "hi"}, {"user": {"email": "bob@x.org"}},
                               {"text": f"mail me at {ALICE_EMAIL} please"},
                               {"team_id": "T0ALICE", "event": {"user": "U0ALICE"}}]
    chat_v1.save(update_fields=["sample_payloads"])
    ticket = services.ticket_file(actor=privacy_user, regulation="gdpr", requester_reference="R-7",
                                  identifiers=[services.subject.identifier_parse("email", ALICE_EMAIL)],
                                  received_at=timezone.now())
    run(services.ticket_confirm(actor=privacy_user, ticket=ticket))
    chat_v1.refresh_from_db()
    assert chat_v1.sample_payloads == [{"user": {"email": "bob@x.org"}}]
    store = DeletionTicket.objects.get(pk=ticket.pk).evidence.record["stores"][0]
    assert store["step"] == "platform.sample_payloads" and store["removed"] == 3 and store["remaining"] == 0
    assert IdentifierKind.EMAIL.value == "email"


def test_the_progress_polls_while_the_job_is_queued_and_stops_once_done(deletion_env, privacy_user, admin_user):
    ticket = services.ticket_file(actor=admin_user, regulation="gdpr", requester_reference="R-8",
                                  identifiers=[services.subject.identifier_parse("anonymous_id", "anon-alice-web")],
                                  received_at=timezone.now())
    ticket = services.ticket_confirm(actor=admin_user, ticket=ticket)        # admins handle tickets too
    client = client_for(privacy_user)
    progress = reverse("deletion_ticket_progress", args=[ticket.pk])
    queued = client.get(progress).content.decode()
    assert f'hx-get="{progress}"' in queued and 'hx-trigger="every 3s"' in queued and "Queued on the deletion" in queued
    run(ticket)
    polled = client.get(progress, headers={"HX-Request": "true"})
    assert polled["HX-Refresh"] == "true"                        # the page reloads once to show the final state
    done = polled.content.decode()
    assert "hx-get" not in done and done.count('data-status="done"') == 6
    assert reverse("deletion_evidence", args=[ticket.pk]) in done
