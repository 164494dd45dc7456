"""The quality pages for each role: the latest run per table, a table's checks with measured values and
thresholds, failed-row samples only of the viewer's own sources, the generated contract (viewable,
downloadable, following the registry), and "Run checks now" for data engineers only."""

from __future__ import annotations

import uuid

import pytest
from django.urls import reverse

from quality.models import CheckResult, QualityRun
from tests.portal.test_api_tokens import client_for
from tests.portal.test_views import text_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def failed_run(chat_contract):
    """A finished CANONICAL.EVENTS run with one failing check whose sample holds a web-chat row and a row
    of another source (as the service stores them: masked, with the row's source id)."""
    from django.utils import timezone

    run = QualityRun.objects.create(run_id=uuid.uuid4(), table="CANONICAL.EVENTS", status="done",
                                    trigger="schedule", finished_at=timezone.now(), passed=40, failed=1,
                                    contract_versions=["web-chat.chat_event v1 (approved)"])
    CheckResult.objects.create(run=run, table=run.table, check_key="row_count::", check_type="row_count",
                               check_name="The table has rows", outcome="passed", measured_value=9,
                               threshold="must be greater than 0")
    CheckResult.objects.create(
        run=run, table=run.table, check_key="invalid:PLATFORM:", check_type="invalid", column="PLATFORM",
        check_name="PLATFORM is a canonical platform", outcome="failed", measured_value=2, threshold="must be 0",
        sample=[{"source_id": str(chat_contract.source_id), "row": {"EVENT_ID": "ours-1", "PLATFORM": "fax"}},
                {"source_id": "99999", "row": {"EVENT_ID": "theirs-1", "PLATFORM": "pager"}}])
    return run


def test_overview_lists_every_table_with_its_latest_run_and_worst_check(engineer, failed_run):
    response = client_for(engineer).get(reverse("quality_overview"))
    text = text_of(response)
    assert response.status_code == 200
    for table in ("CANONICAL.EVENTS", "ANALYTICS.CONVERSATION_SESSIONS", "ANALYTICS.USER_JOURNEYS"):
        assert table in text
    assert "PLATFORM is a canonical platform (2; must be 0)" in text
    assert 'data-testid="run-all"' in response.content.decode()
    assert f'href="{reverse("quality_overview")}"' in response.content.decode()  # the nav entry


def test_engineer_sees_measured_value_threshold_and_every_sample_row(engineer, failed_run):
    html = client_for(engineer).get(reverse("quality_table", args=["CANONICAL.EVENTS"])).content.decode()
    text = text_of_html(html)
    assert "PLATFORM is a canonical platform" in text and "must be 0" in text
    assert "ours-1" in text and "theirs-1" in text and 'data-testid="sample-hidden"' not in html
    assert 'data-testid="run-table"' in html


def test_team_member_sees_only_their_own_sources_sample_rows_and_cannot_run(platform_user, other_platform_user,
                                                                            failed_run):
    url = reverse("quality_table", args=["CANONICAL.EVENTS"])
    own = client_for(platform_user).get(url)
    text = text_of(own)
    assert own.status_code == 200 and "ours-1" in text and "theirs-1" not in text
    assert "1 sampled row of other teams' sources" in text
    assert 'data-testid="run-table"' not in own.content.decode()
    other = text_of(client_for(other_platform_user).get(url))
    assert "ours-1" not in other and "theirs-1" not in other and "2 sampled rows" in other
    assert "must be 0" in other  # the counts are for everyone
    response = client_for(platform_user).post(reverse("quality_run_now"), {"table": "CANONICAL.EVENTS"})
    assert response.status_code == 403 and not QualityRun.objects.filter(status="queued").exists()


def test_run_checks_now_queues_and_shows_the_queued_state(engineer, chat_contract, django_capture_on_commit_callbacks):
    client = client_for(engineer)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("quality_run_now"), {"table": "canonical.events"}, follow=True)
    assert response.status_code == 200 and "queued on the quality queue" in text_of(response)
    run = QualityRun.objects.get(status="queued")
    assert run.table == "CANONICAL.EVENTS" and run.requested_by == engineer
    pending = text_of(client.get(reverse("quality_overview")))
    assert "queued since" in pending and "by engineer" in pending


def test_generated_contract_is_viewable_downloadable_and_follows_approvals(engineer, platform_user, chat_contract,
                                                                          web_chat_preset, web_chat_source):
    from contracts.services import preset_versions_load

    client = client_for(platform_user)
    url = reverse("quality_contract_yaml", args=["CANONICAL.EVENTS"])
    before = client.get(url).content.decode()
    assert before.startswith("# Generated by ChatOrbit") and "web-chat.chat_event v1 (approved)" in before
    assert "dataset: chatorbit_wh/" in before
    download = client.get(url + "?download=1")
    assert download["Content-Disposition"] == 'attachment; filename="canonical_events.contract.yml"'

    spec = dict(web_chat_preset["contracts"][0])
    spec["versions"] = spec["versions"][1:2]
    (v2,) = preset_versions_load(actor=platform_user, reviewer=engineer, source=web_chat_source, contracts=[spec])
    assert v2.version == 2 and v2.status == "approved"
    after = client.get(url).content.decode()
    assert after != before and "web-chat.chat_event v2 (approved)" in after
    assert "WHEN 'web-chat.chat_event' THEN 2" in after


def test_quality_contract_command_prints_and_writes_the_yaml(chat_contract, tmp_path):
    import io

    from django.core.management import CommandError, call_command

    out = io.StringIO()
    call_command("quality_contract", "--table", "ANALYTICS.USER_FEEDBACK", stdout=out)
    assert "dataset: chatorbit_wh/" in out.getvalue() and "FEEDBACK_EVENT_ID" in out.getvalue()
    target = tmp_path / "c.yml"
    call_command("quality_contract", "--table", "CANONICAL.EVENTS", "--out", str(target), stdout=io.StringIO())
    assert "web-chat.chat_event v1" in target.read_text()
    with pytest.raises(CommandError, match="covered tables are"):
        call_command("quality_contract", "--table", "RAW.NOPE", stdout=io.StringIO())


def test_unknown_table_page_is_a_404(engineer):
    assert client_for(engineer).get(reverse("quality_table", args=["RAW.QUARANTINE"])).status_code == 404


def text_of_html(html: str) -> str:
    import html as html_lib
    import re

    return html_lib.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))
