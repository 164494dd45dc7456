"""Issue 11's demo, end to end on the real parts: the traffic generator's break switch makes ios-app send a
field with the wrong type, then drop its volume, then recover. Its scorecard turns red within one check cycle
naming the field's path, an alert opens once however many cycles it holds (one "opened" message at a real
webhook receiver on 127.0.0.1), and after the fix the scorecard turns green and the alert resolves with one
message.

Real records from ``ingest_workers.traffic`` → moto's Kinesis (raw envelopes, as ``generate_traffic --via
stream``) → ``pipeline_drain`` → the embedded warehouse → ``quality_run_scheduled`` (real Soda, then the
scorecards) → ``alerts_evaluate`` with every configured rule.

The generator's clock is passed in (it is pure): the test plays the break's phases at chosen seconds of a
clock set 15 minutes back, so the events are a few minutes old, never in the future.
"""

from __future__ import annotations

import io
import time
import uuid

import pytest
from django.core.management import call_command

from quality.models import Alert, ScorecardSnapshot
from tests.quality.webhook_receiver import webhook_receiver  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db

BROKEN = "ios-app"
#: the phases, in seconds of the generator's clock: broken at 100, its volume down to a fifth at 200, fixed at 400
PLAN = {"after_s": 100.0, "drop_after_s": 100.0, "volume_fraction": 0.2, "fix_after_s": 300.0}
SECOND = 1_000_000


@pytest.fixture
def demo(settings, stream, warehouse_server, tmp_path, admin_user, webhook_receiver):  # noqa: F811
    """Seeded demo sources and contracts, this test's own warehouse database, archive and stream, and a webhook
    channel to the receiver."""
    from ingest_workers import services
    from quality.alerts import notification_channel_save

    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "database": f"D_{uuid.uuid4().hex[:12].upper()}"}
    settings.RAW_ARCHIVE_URL = f"file://{tmp_path}/archive"
    call_command("seed_demo", quiet_keys=True, force=True, stdout=io.StringIO())
    services.contract_index_current(force=True)
    notification_channel_save(actor=admin_user, name="demo-hook", kind="webhook", target=webhook_receiver.url,
                              allow_private_address=True)
    return webhook_receiver


class Traffic:
    """The demo traffic with ios-app's break, played at chosen seconds of the generator's clock."""

    def __init__(self) -> None:
        from contracts import presets
        from ingest_workers.management.commands.generate_traffic import StreamSender
        from ingest_workers.traffic import BreakPlan, TrafficGenerator, templates_from_preset

        self.templates = [t for p in presets.demo_presets() for t in templates_from_preset(p)]
        self.generator = TrafficGenerator(self.templates, seed=11, duplicate_fraction=0.0, malformed_fraction=0.0,
                                          late_fraction=0.0, out_of_order_fraction=0.0,
                                          break_plan=BreakPlan(BROKEN, **PLAN))
        self.sender = StreamSender()
        self.start = time.time_ns() // 1000 - 900 * SECOND

    def send(self, at_s: float, count: int = 140) -> list:
        """Generate ``count`` records (fewer once ios-app has dropped its volume) at ``at_s`` and drain them."""
        from ingest_workers import services

        records = list(self.generator.records(count, now_micros=self.start + int(at_s * SECOND)))
        self.sender.send(records)
        report = services.pipeline_drain()
        assert report.read == len(records)
        return records


def card(name: str) -> ScorecardSnapshot:
    return ScorecardSnapshot.objects.filter(kind="source", subject=name).order_by("-evaluated_at").first()


def messages(receiver, about: str) -> tuple[list[str], list[str]]:
    """The webhook texts about ``about``: (opened, resolved)."""
    texts = [t for t in receiver.texts() if about in t.splitlines()[0]]
    return [t for t in texts if not t.startswith("[RESOLVED]")], [t for t in texts if t.startswith("[RESOLVED]")]


def cycle() -> None:
    """One check cycle (Soda, then the scorecards) and an alert evaluation after it, as the beat runs them."""
    from quality.alerts import alerts_evaluate
    from quality.services import quality_run_scheduled

    quality_run_scheduled()
    alerts_evaluate()


def test_the_broken_source_turns_red_with_its_path_alerts_once_and_resolves_once_after_the_fix(demo):
    from ingest_workers.traffic import wrong_type_path
    from quality.alerts import alerts_evaluate

    (ios_template,) = [t for t in Traffic().templates if t.source == BROKEN]
    path = "/" + wrong_type_path(ios_template).replace(".", "/")
    traffic = Traffic()

    # a few minutes of normal traffic first (enough that each feedback's rated message has been sent too)
    sent = traffic.send(0, count=420)
    cycle()
    assert card(BROKEN).level == "green", [r["summary"] for r in card(BROKEN).reasons]
    assert not Alert.objects.filter(subject=BROKEN).exists()
    normal_volume = sum(1 for r in sent if r.source == BROKEN) / 3

    # the bad release: every ios-app event now carries client_ts_ms as text
    sent = traffic.send(120)
    assert {r.kind for r in sent if r.source == BROKEN} == {"broken"}
    cycle()                                                   # one check cycle later: red, naming the path
    red = card(BROKEN)
    assert red.level == "red"
    (reason,) = [r for r in red.reasons if r["code"] == "quarantine_rate"]
    assert reason["details"]["path"] == path and reason["details"]["reason_code"] == "schema_violation"
    assert path in reason["summary"] and reason["since"]
    assert card("web-chat").level == "green"                  # the others keep flowing
    (alert,) = Alert.objects.filter(subject=BROKEN)
    assert alert.rule == "quarantine_rate" and alert.resolved_at is None and alert.runbook == "quarantine-rate"
    assert path in alert.summary and alert.details["paths"] == [path]
    opened, resolved = messages(demo, BROKEN)
    assert len(opened) == 1 and not resolved
    assert opened[0].startswith("[CRITICAL]") and path in opened[0]
    assert f"/quality/scorecards/source/{BROKEN}/" in opened[0] and "/quality/runbook/#quarantine-rate" in opened[0]

    # it stays broken and its volume drops: more cycles, the same alert, no second message
    sent = traffic.send(250)
    dropped_volume = sum(1 for r in sent if r.source == BROKEN)
    assert 0 < dropped_volume < normal_volume / 2
    cycle()
    alerts_evaluate()
    assert card(BROKEN).level == "red"
    assert Alert.objects.filter(subject=BROKEN).count() == 1
    assert messages(demo, BROKEN) == (opened, [])

    # the fix: valid again, green at the next cycle, the alert resolved with one message
    sent = traffic.send(450)
    assert BROKEN in {r.source for r in sent} and "broken" not in {r.kind for r in sent}
    cycle()
    assert card(BROKEN).level == "green", card(BROKEN).reasons
    alert.refresh_from_db()
    assert alert.resolved_at is not None
    traffic.send(460)
    cycle()
    alerts_evaluate()
    opened_after, resolved = messages(demo, BROKEN)
    assert opened_after == opened and len(resolved) == 1
    assert path in resolved[0] and Alert.objects.filter(subject=BROKEN).count() == 1
