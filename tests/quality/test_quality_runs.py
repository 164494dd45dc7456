"""Soda runs for real against the embedded warehouse server: the generated contract of CANONICAL.EVENTS
passes on clean data, known defects fail exactly their checks with the right measured values, a missing
table or an unreachable warehouse is an error, and failed-row samples are masked."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from quality.models import CheckResult, QualityRun
from quality.services import quality_results_purge, quality_run, quality_run_execute, quality_run_request
from tests.quality.conftest import clean_events, load

pytestmark = pytest.mark.django_db


def not_passed(run: QualityRun) -> dict[str, CheckResult]:
    return {r.check_key: r for r in run.results.exclude(outcome="passed")}


def test_canonical_contract_passes_on_clean_loaded_data(quality_db, chat_contract):
    load(quality_db, clean_events(str(chat_contract.source_id)))
    (run,) = quality_run(tables=["CANONICAL.EVENTS"])
    assert not_passed(run) == {}
    assert run.status == "done" and run.failed == 0 and run.errors == 0 and run.passed == run.results.count() > 30
    assert "web-chat.chat_event v1 (approved)" in run.contract_versions
    freshness = run.results.get(check_type="freshness")
    assert freshness.measured_value < 3 and freshness.threshold == "must be less than 3"


def test_known_defects_fail_exactly_their_checks(quality_db, chat_contract):
    from tests.warehouse.factories import canonical_event

    source_id = str(chat_contract.source_id)
    events = clean_events(source_id)
    negative = canonical_event("neg-tokens", template=3, source_id=source_id, received_at=events[0]["received_at"])
    negative["attributes"]["input_tokens"] = -5
    fax = canonical_event("fax-1", template=0, source_id=source_id, platform="fax",
                          received_at=events[0]["received_at"])
    load(quality_db, [*events, negative, fax])
    # a duplicate EVENT_ID (the merge never writes one: as if a faulty backfill did)
    database = quality_db.database
    quality_db.cursor().execute(f"INSERT INTO {database}.CANONICAL.EVENTS "  # noqa: S608
                                f"SELECT * FROM {database}.CANONICAL.EVENTS WHERE EVENT_ID = 'e2'")
    (run,) = quality_run(tables=["CANONICAL.EVENTS"])
    failing = not_passed(run)
    assert set(failing) == {"duplicate:EVENT_ID:", "invalid:PLATFORM:", "failed_rows::message_sent_input_tokens_range"}
    assert {k: (r.outcome, r.measured_value) for k, r in failing.items()} == {
        "duplicate:EVENT_ID:": ("failed", 1.0), "invalid:PLATFORM:": ("failed", 1.0),
        "failed_rows::message_sent_input_tokens_range": ("failed", 1.0)}
    assert failing["invalid:PLATFORM:"].threshold == "must be 0"
    # the samples show the failing rows, personal fields masked
    platform_rows = [item["row"] for item in failing["invalid:PLATFORM:"].sample]
    assert [(r["EVENT_ID"], r["PLATFORM"]) for r in platform_rows] == [("fax-1", "fax")]
    (tokens,) = [item["row"] for item in failing["failed_rows::message_sent_input_tokens_range"].sample]
    assert tokens["EVENT_ID"] == "neg-tokens" and tokens["ATTRIBUTES"]["input_tokens"] == -5
    assert tokens["ATTRIBUTES"]["content"].startswith("‹masked string")
    assert "tent poles" not in str(failing["failed_rows::message_sent_input_tokens_range"].sample)
    assert {item["source_id"] for item in failing["duplicate:EVENT_ID:"].sample} == {source_id}
    assert len(failing["duplicate:EVENT_ID:"].sample) == 2


def test_a_missing_table_is_an_error_not_a_pass(quality_db, chat_contract):
    (run,) = quality_run(tables=["ANALYTICS.USER_FEEDBACK"])  # this module's database has no ANALYTICS tables
    outcomes = set(run.results.values_list("outcome", flat=True))
    assert outcomes == {"error"} and run.status == "error" and run.passed == 0
    assert "ANALYTICS.USER_FEEDBACK does not exist" in run.error
    assert all("does not exist" in e for e in run.results.values_list("error", flat=True))


def test_an_unreachable_warehouse_is_an_error_for_every_check(quality_db, settings, chat_contract):
    from warehouse.embedded import free_port

    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "port": free_port(), "login_timeout": 3}
    runs = quality_run()
    assert {r.status for r in runs} == {"error"} and len(runs) == 6
    assert set(CheckResult.objects.filter(run__in=runs).values_list("outcome", flat=True)) == {"error"}
    assert "could not be reached" in runs[0].error


def quality_queue_messages() -> list[dict]:
    """The task messages waiting on the broker's quality queue (Redis: one list per queue)."""
    import json

    import redis
    from django.conf import settings

    # the test command always runs on the Redis broker (README, .ci/run): anything else fails, never skips
    assert settings.CELERY_BROKER_URL.startswith("redis"), "needs the Redis broker (CELERY_BROKER_URL=redis://…)"
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    return [json.loads(m)["headers"] for m in client.lrange("quality", 0, -1)]


def test_a_queued_run_goes_to_the_quality_queue_and_a_worker_runs_it(quality_db, engineer, chat_contract,
                                                                     django_capture_on_commit_callbacks):
    load(quality_db, clean_events(str(chat_contract.source_id)))
    with django_capture_on_commit_callbacks(execute=True):
        run_id = quality_run_request(actor=engineer, tables=["CANONICAL.EVENTS"])
    assert any(h["task"] == "quality.tasks.quality_run_queued" and str(run_id) in h["argsrepr"]
               for h in quality_queue_messages())
    queued = QualityRun.objects.get(run_id=run_id)
    assert queued.status == "queued" and queued.requested_by == engineer and queued.trigger == "manual"
    (run,) = quality_run_execute(run_id=run_id)  # what the task does on the worker
    run.refresh_from_db()
    assert run.status == "done" and run.failed == 0 and run.errors == 0
    assert quality_run_execute(run_id=run_id) == []  # taken once


def test_results_are_kept_thirteen_months(quality_db, chat_contract):
    from quality.soda_contracts import table_label

    now = timezone.now()
    old = QualityRun.objects.create(run_id="00000000-0000-0000-0000-000000000001", table="CANONICAL.EVENTS",
                                    status="done", queued_at=now - dt.timedelta(days=397))
    CheckResult.objects.create(run=old, table=old.table, check_key="row_count::", check_type="row_count",
                               check_name="rows", outcome="passed")
    kept = QualityRun.objects.create(run_id="00000000-0000-0000-0000-000000000002", table="CANONICAL.EVENTS",
                                     status="done", queued_at=now - dt.timedelta(days=390))
    assert table_label  # the purge does not care which table
    quality_results_purge(now=now)
    assert list(QualityRun.objects.values_list("pk", flat=True)) == [kept.pk]
    assert not CheckResult.objects.filter(run_id=old.pk).exists()
