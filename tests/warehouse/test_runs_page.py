"""The model runs page and API as engineers watch them: each run with its models' status, rows
changed, duration and error; the last run without failures; pending recomputes; an empty state that
says what a model run is."""

from __future__ import annotations

import datetime as dt
import html
import uuid

import pytest
from django.test import Client
from django.urls import reverse

from tests.conftest import PASSWORD
from warehouse import selectors, services
from warehouse.models import ModelRun, PriceRecompute

pytestmark = pytest.mark.django_db

UTC = dt.UTC
T = dt.datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def client_for(user) -> Client:
    client = Client()
    assert client.login(username=user.get_username(), password=PASSWORD)
    return client


def page_text(response) -> str:
    """The page as a reader sees it: entities decoded, runs of white space as one space."""
    return " ".join(html.unescape(response.content.decode()).split())


def run(started: dt.datetime, parts: list[tuple[str, str, int, int | None, str]],
        trigger: str = ModelRun.Trigger.SCHEDULE) -> uuid.UUID:
    """One run: (model, status, rows changed, duration ms or None while running, error) per model, in order."""
    run_id = uuid.uuid4()
    at = started
    for model, status, rows, ms, error in parts:
        finished = at + dt.timedelta(milliseconds=ms) if ms is not None else None
        ModelRun.objects.create(run_id=run_id, model=model, trigger=trigger, status=status, rows_changed=rows,
                                started_at=at, finished_at=finished, duration_ms=ms, error=error)
        at = finished or at
    return run_id


@pytest.fixture
def two_runs():
    good = run(T, [("identity", "succeeded", 12, 400, ""), ("conversation_sessions", "succeeded", 30, 1500, ""),
                   ("token_cost_usage", "succeeded", 8, 250, "")])
    bad = run(T + dt.timedelta(minutes=1), [
        ("identity", "succeeded", 0, 90, ""),
        ("conversation_sessions", "failed", 0, 2100, "ProgrammingError: SQL compilation error: invalid identifier "
                                                     "'SESSION_KEYZ'"),
        ("token_cost_usage", "skipped", 0, 0, ""),
    ], trigger=ModelRun.Trigger.MANUAL)
    return good, bad


def test_recent_runs_are_grouped_newest_first_with_their_models_in_order(two_runs):
    good, bad = two_runs
    runs = selectors.model_runs_recent(10)
    assert [r["run_id"] for r in runs] == [bad, good]
    latest, earlier = runs
    assert latest["status"] == "failed" and latest["trigger"] == "manual"
    assert [m.model for m in latest["models"]] == ["identity", "conversation_sessions", "token_cost_usage"]
    assert [m.model for m in latest["failed"]] == ["conversation_sessions"]
    assert earlier["status"] == "succeeded" and earlier["rows_changed"] == 50
    assert earlier["duration_ms"] == 2150
    assert selectors.model_runs_recent(1)[0]["run_id"] == bad


def test_the_last_successful_run_ignores_failed_and_running_runs(two_runs):
    good, _ = two_runs
    run(T + dt.timedelta(minutes=2), [("identity", "running", 0, None, "")])
    assert selectors.model_run_last_succeeded_at() == T + dt.timedelta(milliseconds=2150)
    runs = selectors.model_runs_recent(5)
    assert runs[0]["status"] == "running" and runs[0]["finished_at"] is None and runs[0]["duration_ms"] is None


def test_the_runs_page_shows_each_models_status_rows_duration_and_error(platform_user, two_runs):
    good, bad = two_runs
    response = client_for(platform_user).get(reverse("analytics_runs"))
    assert response.status_code == 200
    text = page_text(response)
    assert str(good) in text and str(bad) in text
    assert text.index(str(bad)) < text.index(str(good))         # newest first
    assert "invalid identifier 'SESSION_KEYZ'" in text
    assert 'data-testid="run-error"' in text
    assert ">failed<" in text and ">succeeded<" in text and ">skipped<" in text
    assert "50 rows changed" in text and "manual" in text
    assert "1.5 s" in text and "400 ms" in text
    assert 'data-testid="last-success"' in text and "Last run without failures finished 2026-11-20 09:00:02" in text
    assert 'data-testid="no-runs"' not in text


def test_the_runs_page_explains_model_runs_when_there_are_none(platform_user):
    response = client_for(platform_user).get(reverse("analytics_runs"))
    assert response.status_code == 200
    text = page_text(response)
    assert 'data-testid="no-runs"' in text and "No model run has been recorded yet" in text
    assert "curated tables" in text and "models_run" in text
    assert "No run has finished without failures yet" in text
    assert "No price recompute is waiting" in text


def test_the_runs_page_lists_pending_recomputes(engineer, platform_user):
    services.price_add(actor=engineer, model="o4-mini", token_kind="output", usd_per_million="4.40",
                       effective_from=dt.datetime(2026, 3, 1, tzinfo=UTC), recompute=True)
    recompute = PriceRecompute.objects.get()
    text = page_text(client_for(platform_user).get(reverse("analytics_runs")))
    assert 'data-testid="pending-recomputes"' in text
    assert "o4-mini" in text and "2026-03-01 00:00" in text and "engineer" in text

    PriceRecompute.objects.filter(pk=recompute.pk).update(status="done", done_at=T, done_run_id=uuid.uuid4())
    text = page_text(client_for(platform_user).get(reverse("analytics_runs")))
    assert 'data-testid="pending-recomputes"' not in text and "Recently carried-out recomputes" in text


def test_the_model_runs_api_lists_runs_with_their_models(api_client_for, platform_user, two_runs):
    good, bad = two_runs
    client = api_client_for(platform_user)
    body = client.get("/api/v1/model-runs/").json()
    assert [r["run_id"] for r in body] == [str(bad), str(good)]
    failed = next(m for m in body[0]["models"] if m["status"] == "failed")
    assert failed["model"] == "conversation_sessions" and "SESSION_KEYZ" in failed["error"]
    assert [r["run_id"] for r in client.get("/api/v1/model-runs/", {"limit": 1}).json()] == [str(bad)]
    response = client.get("/api/v1/model-runs/", {"limit": "lots"})
    assert response.status_code == 400 and "limit" in response.json()["message"]


def run_lines(response) -> dict[str, str]:
    """Each run's one-line summary (what shows before it is opened), by run id."""
    import re

    body = response.content.decode()
    lines = {}
    for run_id, summary in re.findall(r'<details class="run"[^>]*data-run-id="([^"]+)"[^>]*>\s*<summary[^>]*>(.*?)'
                                      r'</summary>', body, re.S):
        lines[run_id] = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", summary)).split()).replace(" ,", ",")
    return lines


def test_each_run_is_one_line_that_opens_to_its_models(platform_user, two_runs):
    good, bad = two_runs
    response = client_for(platform_user).get(reverse("analytics_runs"))
    lines = run_lines(response)
    assert list(lines) == [str(bad), str(good)]       # one line per run, newest first
    assert lines[str(good)] == "2026-11-20 09:00:00 2.1 s succeeded 3 ok 50 rows changed schedule"
    assert lines[str(bad)] == "2026-11-20 09:01:00 2.2 s failed 1 ok, 1 failed, 1 skipped 0 rows changed manual"
    body = response.content.decode()
    assert 'class="run" data-testid="run"' in body and "<article" not in body  # folded, not a card per run
    assert f'data-run-id="{bad}" data-status="failed" open' in body           # the newest run failed: open


def test_the_failed_filter_lists_only_runs_in_which_a_model_failed(platform_user, two_runs):
    good, bad = two_runs
    client = client_for(platform_user)
    page = client.get(reverse("analytics_runs"))
    assert f'href="{reverse("analytics_runs")}?status=failed"' in page.content.decode()
    failed = client.get(reverse("analytics_runs"), {"status": "failed"})
    assert list(run_lines(failed)) == [str(bad)]
    assert "SESSION_KEYZ" in page_text(failed)
    ModelRun.objects.filter(run_id=bad).delete()
    text = page_text(client.get(reverse("analytics_runs"), {"status": "failed"}))
    assert "No recorded run has a failed model" in text and 'data-testid="no-runs"' not in text
    assert list(selectors.model_runs_recent(5, failed_only=True)) == []
    assert [r["run_id"] for r in selectors.model_runs_recent(5)] == [good]
