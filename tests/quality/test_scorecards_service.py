"""Scorecards on the real parts (PostgreSQL, the embedded warehouse, Soda): the hourly rollup behind the
anomaly baselines, the two alert rules reading it, snapshots and their retention, the pages and the home page's
glance, and who sees which failed-row samples (a team member only their own sources', masked)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from ingest_workers.models import PipelineMinute
from quality.models import ScorecardSnapshot, SourceHour
from quality.services import quality_run, scorecards_evaluate, source_hours_rollup
from tests.quality.conftest import clean_events, load

pytestmark = pytest.mark.django_db


@pytest.fixture
def scorecard_db(quality_db):
    """The module's warehouse database with no quarantined or landed record left by an earlier test (the
    scorecards count those in their window)."""
    database = quality_db.database
    for table in ("RAW.QUARANTINE", "RAW.LANDING_EVENTS"):
        quality_db.cursor().execute(f"TRUNCATE TABLE {database}.{table}")
    return quality_db


def minute_rows(rows: list[tuple[dt.datetime, str, int, int]]) -> None:
    from ingest_workers.models import PipelineMinute

    PipelineMinute.objects.bulk_create(
        PipelineMinute(minute=m, source=s, records=r, events=r - q, quarantined=q) for m, s, r, q in rows)


def test_the_hourly_rollup_sums_whole_hours_is_repeatable_and_keeps_eight_weeks(settings):
    now = timezone.now().replace(minute=30, second=0, microsecond=0)
    hour = now.replace(minute=0) - dt.timedelta(hours=2)
    minute_rows([(hour + dt.timedelta(minutes=i), "web-chat", 10, 1) for i in range(60)]
                + [(hour + dt.timedelta(minutes=5), "ios-app", 7, 0)])
    SourceHour.objects.create(hour=now.replace(minute=0) - dt.timedelta(days=60), source="web-chat", records=5)
    source_hours_rollup(now=now)
    source_hours_rollup(now=now)  # again: recomputed, not added
    rows = {(r.hour, r.source): r for r in SourceHour.objects.all()}
    assert set(rows) == {(hour, "web-chat"), (hour, "ios-app")}
    web = rows[(hour, "web-chat")]
    assert (web.records, web.events, web.quarantined, web.minutes) == (600, 540, 60, 60)


def test_the_rules_read_the_rollup_a_sunday_drop_and_a_rate_jump(settings):
    from quality.anomaly_rules import quarantine_rate_jump, volume_anomaly

    sunday_15 = dt.datetime(2026, 11, 29, 15, tzinfo=dt.UTC)
    rows = []
    for week in range(0, 9):
        hour = sunday_15 - dt.timedelta(weeks=week)
        rows.append(SourceHour(hour=hour, source="web-chat", records=300 + week, quarantined=1))
        rows.append(SourceHour(hour=hour, source="ios-app", records=500 + week, quarantined=1))
    SourceHour.objects.bulk_create(rows)
    SourceHour.objects.filter(hour=sunday_15, source="web-chat").update(records=120)          # -60%
    SourceHour.objects.filter(hour=sunday_15, source="ios-app").update(quarantined=20)        # 4%
    now = sunday_15 + dt.timedelta(hours=1, minutes=3)
    assert [c.key for c in volume_anomaly(now)] == ["volume_anomaly:web-chat"]
    assert [c.key for c in quarantine_rate_jump(now)] == ["quarantine_rate_jump:ios-app"]
    assert volume_anomaly(now + dt.timedelta(hours=1)) == []   # the next hour has no data: nothing to judge


@pytest.fixture
def two_teams_broken(scorecard_db, chat_contract, other_platform_user, other_team):
    """web-chat (the platform user's team) and voice-lab (another team) each send an event with negative
    tokens on an unknown platform; the checks run for real."""
    from contracts.services import source_create
    from tests.warehouse.factories import canonical_event

    voice, _ = source_create(actor=other_platform_user, team=other_team, name="voice-lab", platform="voice",
                             kind="sdk")
    web_id, voice_id = str(chat_contract.source_id), str(voice.pk)
    events = clean_events(web_id)
    received = events[0]["received_at"]
    for name, source_id in (("web", web_id), ("voice", voice_id)):
        bad = canonical_event(f"neg-{name}", template=3, source_id=source_id, received_at=received)
        bad["attributes"]["input_tokens"] = -5
        events.append(bad)
    load(scorecard_db, events)
    (run,) = quality_run(tables=["CANONICAL.EVENTS"])
    assert run.failed >= 1
    scorecards_evaluate()
    return {"web": chat_contract.source.name, "voice": "voice-lab"}


def test_a_team_member_sees_only_their_own_sources_failed_rows_masked(client, two_teams_broken, platform_user,
                                                                     other_platform_user, engineer):
    web = ScorecardSnapshot.objects.get(kind="source", subject="web-chat")
    voice = ScorecardSnapshot.objects.get(kind="source", subject="voice-lab")
    assert web.level == voice.level == "red"
    assert any(r["code"] == "check_failed" and "input_tokens" in r["key"] for r in web.reasons)

    client.force_login(platform_user)
    page = client.get(reverse("quality_scorecard", args=["platform", "platform"])).content.decode()
    assert "neg-web" in page and "neg-voice" not in page and "tent poles" not in page
    assert "‹masked string" in page and 'data-testid="sample-hidden"' in page
    listing = client.get(reverse("quality_scorecards")).content.decode()
    own = listing.split('data-testid="own-sources"')[1].split("</table>")[0]
    assert "web-chat" in own and "voice-lab" not in own           # their own sources first

    client.force_login(other_platform_user)
    page = client.get(reverse("quality_scorecard", args=["source", "web-chat"])).content.decode()
    assert "neg-web" not in page and "neg-voice" not in page
    page = client.get(reverse("quality_scorecard", args=["source", "voice-lab"])).content.decode()
    assert "neg-voice" in page and "neg-web" not in page

    client.force_login(engineer)
    page = client.get(reverse("quality_scorecard", args=["platform", "platform"])).content.decode()
    assert "neg-web" in page and "neg-voice" in page and "tent poles" not in page


def test_the_home_page_shows_the_platform_health_and_links_the_scorecards(client, two_teams_broken, platform_user):
    client.force_login(platform_user)
    home = client.get("/").content.decode()
    glance = home.split('data-testid="platform-health"')[1].split("</section>")[0]
    assert reverse("quality_scorecards") in glance and "level-red" in glance and "score" in glance
    assert "input_tokens" in glance or "failed" in glance
    assert reverse("quality_scorecards") in client.get(reverse("quality_overview")).content.decode()


def test_history_is_charted_and_snapshots_are_kept_35_days(client, scorecard_db, chat_contract, engineer, settings):
    now = timezone.now()
    old = ScorecardSnapshot.objects.create(kind="platform", subject="platform", level="green", score=100,
                                           evaluated_at=now - dt.timedelta(days=36))
    kept = ScorecardSnapshot.objects.create(kind="platform", subject="platform", level="amber", score=85,
                                            evaluated_at=now - dt.timedelta(days=29))
    scorecards_evaluate(now=now)
    assert not ScorecardSnapshot.objects.filter(pk=old.pk).exists()
    assert ScorecardSnapshot.objects.filter(pk=kept.pk).exists()
    client.force_login(engineer)
    page = client.get(reverse("quality_scorecard", args=["platform", "platform"])).content.decode()
    assert 'id="scorecard-history-data"' in page and '"scores": [85, ' in page
    assert client.get(reverse("quality_scorecard", args=["source", "no-such-source"])).status_code == 404
    assert client.get(reverse("quality_scorecard", args=["team", "platform"])).status_code == 404


def test_before_the_first_evaluation_the_pages_say_so(client, engineer):
    client.force_login(engineer)
    assert 'data-testid="no-scorecards"' in client.get(reverse("quality_scorecards")).content.decode()
    assert 'data-testid="platform-health"' not in client.get("/").content.decode()


def test_the_command_grades_and_prints_the_reasons(two_teams_broken):
    import io

    from django.core.management import call_command

    out = io.StringIO()
    call_command("quality_scorecards", "--evaluate", stdout=out)
    text = out.getvalue()
    assert "graded " in text and "source web-chat: red" in text and "critical:" in text and "since " in text
    from quality.management.commands.quality_scorecards import Command

    help_text = Command().create_parser("manage.py", "quality_scorecards").format_help()
    assert "--evaluate" in help_text and "reasons" in help_text


def test_a_path_segment_that_may_be_personal_is_masked_on_the_scorecards(client, scorecard_db, chat_contract,
                                                                         engineer):
    import time
    import uuid

    import orjson

    from tests.warehouse.factories import land_and_merge, quarantine_row

    row = quarantine_row(quarantine_id=str(uuid.uuid4()), source="web-chat", source_id=str(chat_contract.source_id),
                         error_path="/traits/maria.santos@example.org/plan", batch_id="test-path",
                         received_at=time.time_ns() // 1000)
    land_and_merge(scorecard_db, [], batch_id="test-path", quarantine=orjson.dumps([row]))
    scorecards_evaluate()
    card = ScorecardSnapshot.objects.get(kind="source", subject="web-chat")
    assert card.level == "red" and card.reasons[0]["details"]["path"].startswith("/traits/‹masked")
    client.force_login(engineer)
    page = client.get(reverse("quality_scorecard", args=["source", "web-chat"])).content.decode()
    assert "maria.santos" not in page and "/plan" in page and 'data-testid="quarantined-row"' in page


def test_a_month_of_five_minute_evaluations_is_charted_one_point_per_hour_keeping_the_worst():
    from quality.selectors import scorecard_history

    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    snaps = [ScorecardSnapshot(kind="source", subject="web-chat", level="green", score=100,
                               evaluated_at=now - dt.timedelta(minutes=5 * i)) for i in range(1, 12 * 24 * 4)]
    snaps[20] = ScorecardSnapshot(kind="source", subject="web-chat", level="red", score=45,
                                  evaluated_at=snaps[20].evaluated_at)
    ScorecardSnapshot.objects.bulk_create(snaps)
    history = scorecard_history("source", "web-chat", now=now)
    assert len(history["scores"]) == 4 * 24 and min(history["scores"]) == 45
    assert history["levels"].count("red") == 1 and history["labels"][-1].endswith(":00")


def test_a_run_asked_for_in_the_portal_grades_the_scorecards_when_the_worker_has_run_it(scorecard_db, chat_contract,
                                                                                       engineer):
    from quality.services import quality_run_execute, quality_run_request

    load(scorecard_db, clean_events(str(chat_contract.source_id)))
    run_id = quality_run_request(actor=engineer, tables=["CANONICAL.EVENTS"])
    assert not ScorecardSnapshot.objects.exists()          # queued: nothing graded yet
    quality_run_execute(run_id=run_id)                     # what the quality worker does
    assert ScorecardSnapshot.objects.get(kind="source", subject="web-chat").level == "green"
    assert ScorecardSnapshot.objects.get(kind="platform").level == "green"


def test_the_rollup_redoes_only_the_hours_since_the_last_one():
    now = timezone.now().replace(minute=30, second=0, microsecond=0)
    this_hour = now.replace(minute=0)
    minute_rows([(this_hour - dt.timedelta(hours=5), "web-chat", 10, 0), (this_hour + dt.timedelta(minutes=1),
                                                                          "web-chat", 7, 0)])
    source_hours_rollup(now=now)
    assert SourceHour.objects.count() == 2
    minute_rows([(this_hour + dt.timedelta(minutes=2), "web-chat", 5, 0)])
    SourceHour.objects.filter(hour=this_hour - dt.timedelta(hours=5)).update(records=999)   # final: not redone
    source_hours_rollup(now=now + dt.timedelta(minutes=5))
    assert dict(SourceHour.objects.values_list("hour", "records")) == {this_hour - dt.timedelta(hours=5): 999,
                                                                        this_hour: 12}


def test_recent_volume_per_source_leaves_out_minutes_the_pipeline_read_nothing_in(settings):
    from quality.selectors import volume_recent

    now = dt.datetime(2026, 12, 4, 10, 30, 20, tzinfo=dt.UTC)
    end = now.replace(second=0)
    rows = [(end - dt.timedelta(minutes=m), "web-chat", 30, 0) for m in range(1, 21)]          # steady
    rows += [(end - dt.timedelta(minutes=m), "ios-app", 20 if m > 5 else 2, 0) for m in range(1, 13)]  # dropped
    rows += [(end, "ios-app", 1, 0)]                            # the running minute: partial, not judged
    rows += [(end - dt.timedelta(minutes=m), "new-source", 5, 0) for m in range(1, 4)]  # too new to judge
    minute_rows(rows)
    for m in (8, 9):  # a pause of the consumers: nobody read anything in those minutes
        PipelineMinute.objects.filter(minute=end - dt.timedelta(minutes=m)).delete()
    volumes = volume_recent(now)
    assert set(volumes) == {"web-chat", "ios-app"}
    assert (volumes["web-chat"].per_minute, volumes["web-chat"].before_per_minute) == (30.0, 30.0)
    ios = volumes["ios-app"]
    assert (ios.per_minute, ios.before_per_minute, ios.minutes, ios.before_minutes) == (2.0, 20.0, 5, 5)
