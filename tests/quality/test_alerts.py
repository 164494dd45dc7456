"""The alert engine on the real PostgreSQL with a real webhook receiver on loopback and Django's mail
backend: an alert opens once however many cycles its condition holds and resolves with exactly one
message; a rule that fails keeps its alerts open; a failing notification is retried with backoff and every
attempt is recorded; a webhook to a non-public address is refused unless an admin allowed it."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from quality.alert_core import address_is_public, alert_changes, retry_delay_s, webhook_url_problem
from quality.alert_types import Condition, Severity
from quality.alerts import (
    AlertActionForbidden,
    ChannelInvalid,
    alerts_evaluate,
    notification_channel_save,
    notifications_send_due,
)
from quality.models import Alert, AlertNotification, AlertRuleState, NotificationAttempt, NotificationChannel
from tests.quality.webhook_receiver import webhook_receiver  # noqa: F401 - the fixture

RULE = "tests.quality.test_alerts.scripted_rule"
#: what scripted_rule reports (or raises) at the next evaluation
SCRIPT: dict = {"conditions": [], "raise": None}


def scripted_rule(now: dt.datetime) -> list[Condition]:
    if SCRIPT["raise"] is not None:
        raise SCRIPT["raise"]
    return list(SCRIPT["conditions"])


def lag_condition(shard: str = "shardId-000000000001", lag_ms: int = 90_000) -> Condition:
    return Condition(rule="shard_lag", key=f"shard_lag:{shard}", subject=shard, severity=Severity.WARNING,
                     summary=f"Shard {shard} is {lag_ms // 1000} s behind", runbook="shard-lag", link="/pipeline/",
                     details={"millis_behind_latest": lag_ms})


@pytest.fixture(autouse=True)
def script_reset():
    SCRIPT.update({"conditions": [], "raise": None})
    yield
    SCRIPT.update({"conditions": [], "raise": None})


@pytest.fixture
def channels(db, admin_user, webhook_receiver):  # noqa: F811
    hook = notification_channel_save(actor=admin_user, name="ops-slack", kind="webhook", target=webhook_receiver.url,
                                     allow_private_address=True)
    mail = notification_channel_save(actor=admin_user, name="ops-mail", kind="email",
                                     target="oncall@example.com, data@example.com")
    return hook, mail


def evaluate(now: dt.datetime | None = None) -> dict:
    return alerts_evaluate(now=now, rule_paths=[RULE])


# --- pure decisions ------------------------------------------------------------------------------------

def test_changes_open_new_keys_keep_reported_ones_and_resolve_only_what_a_rule_that_ran_stopped_reporting():
    a, b = lag_condition("s1"), lag_condition("s2")
    changes = alert_changes(open_alerts={"shard_lag:s1": "r1", "gone:x": "r1", "other:y": "r2", "old:z": "removed"},
                            reported={"r1": [a, b]}, failed_rules=["r2"])
    assert [c.key for c in changes.to_open] == ["shard_lag:s2"]
    assert [c.key for c in changes.to_keep] == ["shard_lag:s1"]
    assert changes.to_resolve == ["gone:x"]  # r2 failed and "removed" did not run: theirs stay open


def test_backoff_doubles_up_to_the_cap_with_jitter_between_half_and_whole():
    assert [retry_delay_s(n, base_s=30, cap_s=600, jitter=1.0) for n in (1, 2, 3, 6)] == [30, 60, 120, 600]
    assert [retry_delay_s(n, base_s=30, cap_s=600, jitter=0.0) for n in (1, 2, 3, 6)] == [15, 30, 60, 300]


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254",
                                     "100.64.0.1", "0.0.0.0", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1",
                                     "::ffff:10.0.0.1", "2002:7f00:1::1", "224.0.0.1"])
def test_non_public_addresses_are_refused(address):
    assert not address_is_public(address)
    problem = webhook_url_problem("https://hooks.example.com/x", [address], allow_private=False)
    assert problem and "non-public address" in problem and address.split("%")[0] in problem


def test_public_addresses_pass_and_bad_urls_say_what_is_wrong():
    assert address_is_public("8.8.8.8") and address_is_public("2001:4860:4860::8888")
    assert webhook_url_problem("https://hooks.slack.com/x", ["8.8.8.8", "1.1.1.1"], allow_private=False) is None
    assert "non-public" in webhook_url_problem("https://h.example/x", ["8.8.8.8", "10.0.0.1"], allow_private=False)
    assert "https://" in webhook_url_problem("ftp://h.example/x", ["8.8.8.8"], allow_private=False)
    assert "user name" in webhook_url_problem("https://u:p@h.example/x", ["8.8.8.8"], allow_private=False)
    assert "does not resolve" in webhook_url_problem("https://nowhere.invalid/x", [], allow_private=True)


# --- the engine ------------------------------------------------------------------------------------------

def test_an_alert_opens_once_while_its_condition_holds_and_resolves_with_exactly_one_message(
        channels, webhook_receiver, mailoutbox):  # noqa: F811
    SCRIPT["conditions"] = [lag_condition(lag_ms=90_000)]
    for _ in range(4):
        evaluate()
    SCRIPT["conditions"] = [lag_condition(lag_ms=120_000)]  # still holding, worse
    evaluate()
    alert = Alert.objects.get()
    assert alert.resolved_at is None and alert.details == {"millis_behind_latest": 120_000}
    assert "120 s behind" in alert.summary
    assert len(webhook_receiver.received) == 1 and len(mailoutbox) == 1
    opened = webhook_receiver.received[0]
    assert opened["text"].startswith("[WARNING] Shard shardId-000000000001 is 90 s behind")
    assert "/quality/runbook/#shard-lag" in opened["text"] and opened["blocks"][0]["type"] == "section"
    assert mailoutbox[0].to == ["oncall@example.com", "data@example.com"]
    assert "Shard shardId-000000000001" in mailoutbox[0].subject

    SCRIPT["conditions"] = []
    for _ in range(3):
        evaluate()
    alert.refresh_from_db()
    assert alert.resolved_at is not None
    assert len(webhook_receiver.received) == 2 and len(mailoutbox) == 2
    assert webhook_receiver.texts()[1].startswith("[RESOLVED]")
    assert mailoutbox[1].subject.startswith("[ChatOrbit] Resolved:")
    assert set(AlertNotification.objects.values_list("event", "status")) == {("opened", "sent"), ("resolved", "sent")}
    assert NotificationAttempt.objects.count() == 4 and all(NotificationAttempt.objects.values_list("ok", flat=True))

    SCRIPT["conditions"] = [lag_condition()]  # it comes back: a new alert, with its own messages
    evaluate()
    assert Alert.objects.filter(resolved_at__isnull=True).count() == 1 and Alert.objects.count() == 2
    assert len(webhook_receiver.received) == 3


def test_a_rule_that_raises_is_recorded_and_its_open_alerts_stay_open(channels, webhook_receiver):  # noqa: F811
    SCRIPT["conditions"] = [lag_condition()]
    evaluate()
    SCRIPT["raise"] = ConnectionError("warehouse could not be reached")
    outcome = evaluate()
    evaluate()
    assert outcome["failed_rules"][RULE] == "ConnectionError: warehouse could not be reached"
    assert Alert.objects.get().resolved_at is None
    state = AlertRuleState.objects.get(rule_path=RULE)
    assert not state.ok and "warehouse could not be reached" in state.error and state.failing_since is not None
    assert len(webhook_receiver.received) == 1  # no resolve message for an outage
    SCRIPT["raise"] = None
    SCRIPT["conditions"] = []
    evaluate()
    state.refresh_from_db()
    assert state.ok and state.error == "" and Alert.objects.get().resolved_at is not None


def test_a_rule_that_cannot_be_imported_is_recorded(db):
    outcome = alerts_evaluate(rule_paths=["quality.alert_rules.no_such_rule"])
    assert "cannot import" in outcome["failed_rules"]["quality.alert_rules.no_such_rule"]
    assert not AlertRuleState.objects.get().ok


def test_a_failing_webhook_is_retried_with_backoff_and_every_attempt_recorded(
        channels, webhook_receiver, settings, mailoutbox):  # noqa: F811
    settings.QUALITY_ALERT_NOTIFY_BACKOFF_S = 30
    webhook_receiver.statuses[:] = [500, 503]
    SCRIPT["conditions"] = [lag_condition()]
    now = timezone.now()
    evaluate(now)
    hook = AlertNotification.objects.get(channel__kind="webhook")
    assert hook.status == "pending" and hook.attempts == 1
    first_delay = (hook.next_attempt_at - now).total_seconds()
    assert 15 <= first_delay <= 30
    assert notifications_send_due(now=now + dt.timedelta(seconds=14)) == {}  # not due yet: nothing sent
    later = hook.next_attempt_at
    assert notifications_send_due(now=later) == {"pending": 1}
    hook.refresh_from_db()
    assert 30 <= (hook.next_attempt_at - later).total_seconds() <= 60  # doubled
    assert notifications_send_due(now=hook.next_attempt_at) == {"sent": 1}
    hook.refresh_from_db()
    tries = list(hook.tries.values_list("ok", "http_status"))
    assert hook.status == "sent" and hook.attempts == 3 and tries == [(False, 500), (False, 503), (True, 200)]
    assert "receiver says no" in hook.tries.first().error
    assert len(webhook_receiver.received) == 3 and len(mailoutbox) == 1  # the email went first time


def test_a_notification_gives_up_after_its_budget(channels, webhook_receiver, settings):  # noqa: F811
    settings.QUALITY_ALERT_NOTIFY_ATTEMPTS = 2
    webhook_receiver.statuses[:] = [500, 500, 500]
    SCRIPT["conditions"] = [lag_condition()]
    now = timezone.now()
    evaluate(now)
    assert notifications_send_due(now=now + dt.timedelta(hours=1)) == {"failed": 1}
    hook = AlertNotification.objects.get(channel__kind="webhook")
    assert hook.status == "failed" and hook.get_status_display() == "gave up" and hook.tries.count() == 2
    assert notifications_send_due(now=now + dt.timedelta(days=1)) == {}


# --- SSRF ------------------------------------------------------------------------------------------------

def test_a_loopback_webhook_is_refused_unless_an_admin_allows_it(db, admin_user, engineer, webhook_receiver):  # noqa: F811
    with pytest.raises(ChannelInvalid) as refused:
        notification_channel_save(actor=admin_user, name="hook", kind="webhook", target=webhook_receiver.url)
    assert "non-public address (127.0.0.1)" in refused.value.errors["target"]
    with pytest.raises(ChannelInvalid) as by_name:
        notification_channel_save(actor=engineer, name="hook", kind="webhook", target="http://localhost:9/x")
    assert "non-public address" in by_name.value.errors["target"]
    with pytest.raises(AlertActionForbidden):
        notification_channel_save(actor=engineer, name="hook", kind="webhook", target=webhook_receiver.url,
                                  allow_private_address=True)
    channel = notification_channel_save(actor=admin_user, name="hook", kind="webhook", target=webhook_receiver.url,
                                        allow_private_address=True)
    # an engineer may edit it; the admin's permission stays as it was
    channel = notification_channel_save(actor=engineer, name="hook", kind="webhook", target=webhook_receiver.url,
                                        min_severity="critical", channel_id=channel.pk)
    assert channel.allow_private_address and channel.min_severity == "critical"
    assert not NotificationChannel.objects.filter(allow_private_address=False).exists()
    # but an engineer cannot point the admin-approved channel somewhere else private (the cloud metadata
    # address, another loopback port): the permission covered the URL the admin approved, not the channel
    for elsewhere in ("http://169.254.169.254/latest/meta-data/iam/security-credentials/",
                      webhook_receiver.url.replace("/hook", "/other") + "?x=1"):
        with pytest.raises(ChannelInvalid) as retargeted:
            notification_channel_save(actor=engineer, name="hook", kind="webhook", target=elsewhere,
                                      channel_id=channel.pk)
        assert "non-public address" in retargeted.value.errors["target"]
    channel.refresh_from_db()
    assert channel.target == webhook_receiver.url and channel.allow_private_address
    # an admin may retarget it and keep the permission
    moved = webhook_receiver.url + "?moved=1"
    channel = notification_channel_save(actor=admin_user, name="hook", kind="webhook", target=moved,
                                        channel_id=channel.pk)
    assert channel.target == moved and channel.allow_private_address
    # the audit log keeps the webhook's host, never its path (a Slack webhook's path is its credential)
    from portal.models import AuditRecord

    saved = list(AuditRecord.objects.filter(action="alert_channel.save").values_list("before", "after"))
    assert saved and all("T000" not in str(pair) for pair in saved)
    assert any("127.0.0.1" in str(after) for _, after in saved)


def test_the_address_is_checked_again_when_sending(channels, webhook_receiver):  # noqa: F811
    hook, _ = channels
    # as if the host's DNS changed after the channel was saved: the permission is what counts at send time
    NotificationChannel.objects.filter(pk=hook.pk).update(allow_private_address=False)
    SCRIPT["conditions"] = [lag_condition()]
    evaluate()
    attempt = NotificationAttempt.objects.get(notification__channel=hook)
    assert not attempt.ok and attempt.http_status is None
    assert attempt.error.startswith("refused:") and "127.0.0.1" in attempt.error
    assert webhook_receiver.received == []


def test_bad_channel_input_names_each_field(db, admin_user):
    with pytest.raises(ChannelInvalid) as bad:
        notification_channel_save(actor=admin_user, name="bad name!", kind="email",
                                  target="not-an-address, a@b.example",
                                  min_severity="apocalyptic")
    assert set(bad.value.errors) == {"name", "target", "min_severity"}
    assert "not-an-address" in bad.value.errors["target"]


def test_an_email_that_cannot_be_sent_is_recorded_and_retried(db, admin_user, settings):
    from warehouse.embedded import free_port

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()  # nothing listens there
    settings.EMAIL_USE_TLS, settings.EMAIL_TIMEOUT = False, 3
    notification_channel_save(actor=admin_user, name="ops-mail", kind="email", target="oncall@example.com")
    SCRIPT["conditions"] = [lag_condition()]
    now = timezone.now()
    evaluate(now)
    mail = AlertNotification.objects.get()
    attempt = mail.tries.get()
    assert mail.status == "pending" and mail.next_attempt_at > now
    assert not attempt.ok and attempt.error.startswith("ConnectionRefusedError")


def test_the_command_evaluates_and_prints_the_open_alerts(channels, settings):
    import io

    from django.core.management import call_command

    settings.QUALITY_ALERT_RULES = [RULE]
    SCRIPT["conditions"] = [lag_condition()]
    out = io.StringIO()
    call_command("alerts_evaluate", "--no-send", stdout=out)
    text = out.getvalue()
    assert "1 rules: 1 opened, 0 still open, 0 resolved; notifications: none" in text
    assert "[warning] Shard shardId-000000000001 is 90 s behind" in text
    assert set(AlertNotification.objects.values_list("status", flat=True)) == {"pending"}  # due, not sent


def test_an_opened_message_still_waiting_for_a_retry_is_not_sent_after_the_alert_resolved(
        channels, webhook_receiver, mailoutbox):  # noqa: F811
    webhook_receiver.statuses[:] = [500]
    SCRIPT["conditions"] = [lag_condition()]
    now = timezone.now()
    evaluate(now)
    SCRIPT["conditions"] = []
    evaluate(now + dt.timedelta(seconds=5))  # resolved before the webhook's retry was due
    assert notifications_send_due(now=now + dt.timedelta(hours=1)) == {}
    by_channel = dict(AlertNotification.objects.values_list("channel__kind", "event").filter(status="superseded"))
    assert by_channel == {"webhook": "opened"}
    assert len(webhook_receiver.received) == 1  # the failed try only: no late "opened", no lone "resolved"
    assert [m.subject.split(":")[0] for m in mailoutbox] == ["[ChatOrbit] Alert (warning)", "[ChatOrbit] Resolved"]


def test_a_host_name_is_sent_to_an_address_it_resolves_to_with_its_own_host_header(db, admin_user,
                                                                                 webhook_receiver):  # noqa: F811
    from quality.notifications import webhook_send

    url = webhook_receiver.url.replace("127.0.0.1", "localhost")  # may resolve to ::1 first: the next is tried
    outcome = webhook_send(url, {"text": "hello"}, allow_private=True, timeout_s=5)
    assert outcome.ok and outcome.http_status == 200
    assert webhook_receiver.received == [{"text": "hello"}]
    assert webhook_receiver.headers[0]["Host"] == f"localhost:{url.split(':')[2].split('/')[0]}"
    refused = webhook_send(url, {"text": "hello"}, allow_private=False, timeout_s=5)
    assert not refused.ok and refused.error.startswith("refused:") and len(webhook_receiver.received) == 1


def test_https_webhooks_verify_the_certificate(tmp_path):
    import datetime as dt_module
    import ipaddress
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from quality.notifications import webhook_send

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt_module.datetime.now(dt_module.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt_module.timedelta(days=1))
            .not_valid_after(now + dt_module.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        outcome = webhook_send(f"https://127.0.0.1:{server.server_address[1]}/hook", {"text": "x"},
                               allow_private=True, timeout_s=5)
    finally:
        server.shutdown()
        server.server_close()
    assert not outcome.ok and "CERTIFICATE_VERIFY_FAILED" in outcome.error and hits == []


def test_an_evaluation_finding_another_one_running_skips_instead_of_racing_it(channels):
    # a cycle slowed by a webhook outlasting the beat's period: a second cycle must not resolve what the first
    # just opened; it returns at once, and runs once the first has finished
    from ingest_workers.services import worker_lease_acquire, worker_lease_release
    from quality.alerts import ALERTS_LEASE

    fence = worker_lease_acquire(ALERTS_LEASE, "slow-cycle", 600)
    SCRIPT["conditions"] = [lag_condition()]
    assert evaluate() == {"skipped": "another alert evaluation is running"}
    assert not Alert.objects.exists()
    worker_lease_release(ALERTS_LEASE, "slow-cycle", fence)
    assert evaluate()["opened"] == 1


def test_a_slack_message_cannot_ping_the_channel_or_forge_a_link_through_an_alert_summary():
    from quality.alert_core import slack_payload

    alert = {"rule": "failing_check", "subject": "ANALYTICS.X", "severity": "critical", "opened_at": "2026-12-04",
             "summary": "check failed: <!channel> see <https://evil.example|the fix> & more",
             "runbook": "failing-check", "link": "/quality/"}
    payload = slack_payload(event="opened", alert=alert, base_url="https://portal.example")
    rendered = str(payload)
    assert "<!channel>" not in rendered and "<https://evil.example" not in rendered
    assert "&lt;!channel&gt;" in payload["text"] and "&amp; more" in payload["blocks"][0]["text"]["text"]
    assert "<https://portal.example/quality/alerts/|Alerts>" in rendered  # the links built here stay links
