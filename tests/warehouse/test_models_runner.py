"""The model runner and its portal side: run records, failure handling, the lease, price
recomputes, the command and the Celery task, on the embedded warehouse and PostgreSQL."""

from __future__ import annotations

import copy
import datetime as dt
import importlib
import io
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from tests.warehouse.factories import HOUR, SECOND, T0, canonical_event, land_and_merge
from warehouse.load import warehouse_query
from warehouse.modeling import runner as runner_module
from warehouse.modeling import sql as model_sql
from warehouse.modeling.runner import models_run, price_intervals
from warehouse.modeling.service import lease_acquire, lease_release, models_run_recorded
from warehouse.models import ModelPrice, ModelRun, PriceRecompute

START = dt.datetime(2026, 1, 1)
PRICES = [
    {"model": "gpt-4.1-mini", "token_kind": "input", "usd_per_million": "0.40", "effective_from": START, "version": 1},
    {"model": "gpt-4.1-mini", "token_kind": "cached_input", "usd_per_million": "0.10", "effective_from": START,
     "version": 2},
    {"model": "gpt-4.1-mini", "token_kind": "output", "usd_per_million": "1.60", "effective_from": START,
     "version": 3},
]


def event(eid: str, etype: str, at: int, session: str | None, ids: dict, attrs: dict, *, platform: str = "web",
          conversation: str | None = None, message_id: str | None = None) -> dict:
    e = canonical_event(eid, received_at=at + SECOND, event_time=at)
    e.update(event_type=etype, session_id=session, conversation_id=conversation, platform=platform,
             message_id=message_id, attributes=attrs,
             identifiers={"person_id": None, "anonymous_id": None, "platform_user_id": None, "device_id": None,
                          "tenant_id": "acme", "email_sha256": None, **ids})
    return e


def reply(eid: str, at: int, session: str, tokens: tuple[int, int, int], message_id: str | None = None) -> dict:
    inp, cached, out = tokens
    return event(eid, "message.sent", at, session, {}, {
        "role": "assistant", "request_model": "gpt-4.1-mini", "input_tokens": inp,
        "cache_read_input_tokens": cached, "output_tokens": out}, platform="api", message_id=message_id or eid)


def conversation_events() -> list[dict]:
    return [
        event("w1", "session.started", T0, "web-1", {"anonymous_id": "anon-1"}, {}),
        event("w2", "message.sent", T0 + 10 * SECOND, "web-1", {"anonymous_id": "anon-1"}, {"role": "user"},
              message_id="m-w2"),
        reply("w3", T0 + 12 * SECOND, "web-1", (1000, 100, 200)),
        event("w4", "user.identified", T0 + 20 * SECOND, "web-1",
              {"anonymous_id": "anon-1", "platform_user_id": "cust-1", "email_sha256": "E1"}, {}),
        event("i1", "session.started", T0 + 2 * HOUR, "ios-1", {"platform_user_id": "cust-1", "device_id": "D1"},
              {}, platform="ios"),
        event("i2", "message.sent", T0 + 2 * HOUR + 5 * SECOND, "ios-1", {"platform_user_id": "cust-1"},
              {"role": "user"}, platform="ios", message_id="m-i2"),
        reply("i3", T0 + 2 * HOUR + 9 * SECOND, "ios-1", (3000, 0, 500)),
        event("i4", "feedback.submitted", T0 + 2 * HOUR + 30 * SECOND, "ios-1", {"platform_user_id": "cust-1"},
              {"score": 0.5, "kind": "stars", "raw_value": "4"}, platform="ios", message_id="i3"),
    ]


def land(conn, batch_id: str, events: list[dict]) -> None:
    land_and_merge(conn, events, batch_id)


def table(conn, name: str, order: str) -> list[dict]:
    return warehouse_query(conn, f"SELECT * FROM {conn.database}.{name} ORDER BY {order}")  # noqa: S608 - test-made names


def cost(tokens: tuple[int, int, int], prices: tuple[str, str, str]) -> Decimal:
    inp, cached, out = tokens
    p_in, p_cached, p_out = (Decimal(p) for p in prices)
    return ((inp - cached) * p_in + cached * p_cached + out * p_out) / Decimal(1_000_000)


@pytest.fixture
def warehouse_settings(settings, warehouse_conn):
    """Point the portal's warehouse settings at this test's database."""
    settings.SNOWFLAKE = {**copy.deepcopy(settings.SNOWFLAKE), "database": warehouse_conn.database}
    return settings


# --- the runner -------------------------------------------------------------------------------


def test_every_model_runs_in_dependency_order_and_reports_what_it_did(warehouse_conn):
    land(warehouse_conn, "b1", conversation_events())
    seen: list[tuple[str, str]] = []
    report = models_run(warehouse_conn, prices=PRICES, on_model=lambda r: seen.append((r.name, r.status)))
    assert report.ok
    finished = [name for name, status in seen if status != "running"]
    assert finished == list(runner_module.DISPLAY_ORDER)
    for name, deps in runner_module.DEPENDENCIES.items():
        assert all(finished.index(d) < finished.index(name) for d in deps), name
    assert report.model("changes").detail["events"] == 8
    assert report.model("conversation_sessions").detail["inserted"] == 2
    sessions = {s["SESSION_KEY"]: s for s in table(warehouse_conn, "ANALYTICS.CONVERSATION_SESSIONS", "1")}
    assert sessions["web-1"]["PERSON_ID"] == sessions["ios-1"]["PERSON_ID"] is not None
    assert Decimal(str(sessions["web-1"]["COST_USD"])) == cost((1000, 100, 200), ("0.40", "0.10", "1.60"))
    assert sessions["ios-1"]["LATEST_FEEDBACK_SCORE"] == 0.5


def test_a_second_run_without_new_merges_changes_nothing(warehouse_conn):
    land(warehouse_conn, "b1", conversation_events())
    models_run(warehouse_conn, prices=PRICES)
    before = table(warehouse_conn, "ANALYTICS.CONVERSATION_SESSIONS", "1")
    report = models_run(warehouse_conn, prices=PRICES)
    assert report.ok and report.rows_changed == 0
    assert {m.status for m in report.models if m.name not in ("changes", "prices")} == {"skipped"}
    assert table(warehouse_conn, "ANALYTICS.CONVERSATION_SESSIONS", "1") == before


def test_a_failing_model_skips_what_depends_on_it_and_the_next_run_redoes_the_work(warehouse_conn, monkeypatch):
    land(warehouse_conn, "b1", conversation_events())
    monkeypatch.setattr(model_sql, "journeys_insert_sql", lambda db: f"SELECT * FROM {db}.ANALYTICS.NO_SUCH_TABLE")
    report = models_run(warehouse_conn, prices=PRICES)
    assert not report.ok
    journeys = report.model("user_journeys")
    assert journeys.status == "failed" and "NO_SUCH_TABLE" in journeys.error
    # siblings that don't depend on it still ran
    assert report.model("platform_engagement_daily").status == "succeeded"
    assert table(warehouse_conn, "ANALYTICS.USER_JOURNEYS", "1") == []
    assert table(warehouse_conn, "ANALYTICS.MODEL_STATE", "1") == []   # the merge stays unprocessed
    monkeypatch.undo()
    report = models_run(warehouse_conn, prices=PRICES)
    assert report.ok and report.model("changes").detail["events"] == 8
    assert len(table(warehouse_conn, "ANALYTICS.USER_JOURNEYS", "1")) == 2
    assert len(table(warehouse_conn, "ANALYTICS.CONVERSATION_SESSIONS", "1")) == 2


@pytest.mark.parametrize("json_chunk_bytes", [runner_module.JSON_CHUNK_BYTES, 300],
                         ids=["one-statement-per-table", "rows-split-across-statements"])
def test_full_refresh_rebuilds_the_same_tables(warehouse_conn, monkeypatch, json_chunk_bytes):
    monkeypatch.setattr(runner_module, "JSON_CHUNK_BYTES", json_chunk_bytes)
    events = conversation_events()
    land(warehouse_conn, "b1", events[4:])      # the iOS session first, the web one later
    models_run(warehouse_conn, prices=PRICES)
    land(warehouse_conn, "b2", events[:4])
    models_run(warehouse_conn, prices=PRICES)
    tables = {"ANALYTICS.CONVERSATION_SESSIONS": "1", "ANALYTICS.USER_JOURNEYS": "1, 2",
              "ANALYTICS.TOKEN_COST_USAGE": "1, 2, 3, 4, 5", "ANALYTICS.USER_FEEDBACK": "1",
              "ANALYTICS.PLATFORM_ENGAGEMENT_DAILY": "1, 2, 3", "IDENTITY.IDENTIFIERS": "1",
              "IDENTITY.MERGES": "1", "IDENTITY.PERSONS": "1"}
    incremental = {name: table(warehouse_conn, name, order) for name, order in tables.items()}
    report = models_run(warehouse_conn, prices=PRICES, full_refresh=True)
    assert report.ok and report.model("changes").detail["events"] == 8
    assert {name: table(warehouse_conn, name, order) for name, order in tables.items()} == incremental
    # the web events arrived after the iOS ones, but the person id is the anonymous visitor's
    [person] = {row["PERSON_ID"] for row in incremental["IDENTITY.IDENTIFIERS"]}
    assert incremental["IDENTITY.PERSONS"][0]["ANCHOR_ID_KEY"] == "anonymous_id:anon-1"
    assert person == incremental["ANALYTICS.USER_JOURNEYS"][0]["PERSON_ID"]


def test_a_work_table_left_by_an_older_version_is_replaced_before_the_run(warehouse_conn):
    db = warehouse_conn.database
    land(warehouse_conn, "b1", conversation_events())
    models_run(warehouse_conn, prices=PRICES)
    # an older runner kept only the feedback event id in its work table
    warehouse_query(warehouse_conn,
                    f"CREATE OR REPLACE TRANSIENT TABLE {db}.ANALYTICS.WORK_FEEDBACK (EVENT_ID VARCHAR)")
    land(warehouse_conn, "b2", [event("i5", "feedback.submitted", T0 + 3 * HOUR, "ios-1",
                                      {"platform_user_id": "cust-1"}, {"score": -1.0, "kind": "thumbs"},
                                      platform="ios", message_id="i3")])
    report = models_run(warehouse_conn, prices=PRICES)
    assert report.ok, [(m.name, m.error) for m in report.models if m.error]
    feedback = {r["FEEDBACK_EVENT_ID"]: r for r in table(warehouse_conn, "ANALYTICS.USER_FEEDBACK", "1")}
    assert set(feedback) == {"i4", "i5"} and feedback["i5"]["MODEL"] == "gpt-4.1-mini"
    columns = warehouse_query(warehouse_conn, f"SELECT COLUMN_NAME FROM {db}.INFORMATION_SCHEMA.COLUMNS "
                                              "WHERE TABLE_SCHEMA = 'ANALYTICS' AND TABLE_NAME = 'WORK_FEEDBACK'")
    assert {c["COLUMN_NAME"] for c in columns} == {"EVENT_ID", "MESSAGE_ID", "SESSION_KEY"}


def test_a_price_added_later_does_not_reprice_hours_already_computed(warehouse_conn):
    land(warehouse_conn, "b1", conversation_events())
    models_run(warehouse_conn, prices=PRICES)
    hours_before = table(warehouse_conn, "ANALYTICS.TOKEN_COST_USAGE", "1")
    later = [*PRICES, {"model": "gpt-4.1-mini", "token_kind": "output", "usd_per_million": "9.99",
                       "effective_from": START + dt.timedelta(hours=2), "version": 4}]
    report = models_run(warehouse_conn, prices=later)
    assert report.model("prices").detail["changed"] is True
    assert table(warehouse_conn, "ANALYTICS.TOKEN_COST_USAGE", "1") == hours_before


def test_price_intervals_end_where_the_next_price_of_the_same_model_and_kind_starts():
    rows = price_intervals([
        *PRICES,
        {"model": "gpt-4.1-mini", "token_kind": "output", "usd_per_million": "2.00",
         "effective_from": "2026-02-01T00:00:00Z", "version": 7},
        {"model": "gpt-4.1-mini", "token_kind": "output", "usd_per_million": "2.10",
         "effective_from": "2026-02-01T00:00:00Z", "version": 9},
    ])
    output = [r for r in rows if r["token_kind"] == "output"]
    assert [(str(r["usd_per_million"]), r["effective_to"]) for r in output] == [
        ("1.60", dt.datetime(2026, 2, 1)), ("2.00", dt.datetime(2026, 2, 1)), ("2.10", None)]
    with pytest.raises(ValueError, match="unknown token kind"):
        price_intervals([{**PRICES[0], "token_kind": "audio"}])


# --- the portal side --------------------------------------------------------------------------


def _catalog() -> None:
    for p in PRICES:
        ModelPrice.objects.create(model=p["model"], token_kind=p["token_kind"], usd_per_million=p["usd_per_million"],
                                  effective_from=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), version=p["version"])


@pytest.mark.django_db
def test_a_recorded_run_writes_one_row_per_model(warehouse_settings, warehouse_conn):
    _catalog()
    land(warehouse_conn, "b1", conversation_events())
    run = models_run_recorded(trigger="manual")
    assert run.ok
    rows = {r.model: r for r in ModelRun.objects.filter(run_id=run.run_id)}
    assert set(rows) == set(runner_module.DISPLAY_ORDER)
    assert all(r.status == "succeeded" and r.finished_at and r.duration_ms is not None for r in rows.values())
    assert rows["conversation_sessions"].rows_changed == 2
    assert rows["changes"].detail["events"] == 8


@pytest.mark.django_db
def test_a_recompute_request_reprices_the_hours_from_its_time_and_is_marked_done(warehouse_settings, warehouse_conn):
    _catalog()
    land(warehouse_conn, "b1", conversation_events())
    models_run_recorded()
    # a correction: output was really 2.00 from 01:00 on, and a recompute from then is asked for
    ModelPrice.objects.create(model="gpt-4.1-mini", token_kind="output", usd_per_million="2.00",
                              effective_from=dt.datetime(2026, 1, 1, 1, tzinfo=dt.UTC), version=4)
    request = PriceRecompute.objects.create(model="gpt-4.1-mini", from_time=dt.datetime(2026, 1, 1, 1, tzinfo=dt.UTC))
    run = models_run_recorded()
    assert run.ok, [(m.name, m.error) for m in run.report.models if m.error]
    hours = {r["HOUR"][:13]: Decimal(str(r["COST_USD"])) for r in table(warehouse_conn,
                                                                         "ANALYTICS.TOKEN_COST_USAGE", "1")}
    assert hours["2026-01-01T00"] == cost((1000, 100, 200), ("0.40", "0.10", "1.60"))   # before: untouched
    assert hours["2026-01-01T02"] == cost((3000, 0, 500), ("0.40", "0.10", "2.00"))     # after: repriced
    sessions = {s["SESSION_KEY"]: Decimal(str(s["COST_USD"])) for s in table(
        warehouse_conn, "ANALYTICS.CONVERSATION_SESSIONS", "1")}
    assert sessions["ios-1"] == hours["2026-01-01T02"]
    request.refresh_from_db()
    assert request.status == "done" and str(request.done_run_id) == run.run_id


@pytest.mark.django_db
def test_a_run_while_another_holds_the_lease_runs_nothing(warehouse_settings, warehouse_conn):
    assert lease_acquire("other-worker:1", 300) is None
    try:
        run = models_run_recorded()
        assert run.busy_holder == "other-worker:1" and not run.ok
        assert not ModelRun.objects.exists()
        with pytest.raises(CommandError, match="Another model run is in progress"):
            call_command("models_run", stdout=io.StringIO())
    finally:
        lease_release("other-worker:1")
    assert models_run_recorded().ok   # released: the next run goes ahead


@pytest.mark.django_db
def test_an_unreachable_warehouse_is_recorded_as_a_failed_run(settings):
    from warehouse.embedded import free_port

    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "port": free_port(), "login_timeout": 2}
    run = models_run_recorded()
    assert not run.ok and "warehouse unavailable" in run.error
    rows = {r.model: r for r in ModelRun.objects.filter(run_id=run.run_id)}
    assert rows["changes"].status == "failed" and "warehouse unavailable" in rows["changes"].error
    assert {rows[n].status for n in runner_module.DISPLAY_ORDER[1:]} == {"skipped"}


@pytest.mark.django_db
def test_models_run_command_prints_each_model_and_full_refresh(warehouse_settings, warehouse_conn):
    _catalog()
    land(warehouse_conn, "b1", conversation_events())
    out = io.StringIO()
    call_command("models_run", stdout=out)
    text = out.getvalue()
    for name in runner_module.DISPLAY_ORDER:
        assert name in text
    assert "8 new or changed events" in text
    out = io.StringIO()
    call_command("models_run", "--full-refresh", stdout=out)
    assert "full refresh" in out.getvalue() and "8 new or changed events" in out.getvalue()
    assert ModelRun.objects.filter(trigger="full_refresh").count() == len(runner_module.DISPLAY_ORDER)


@pytest.mark.django_db
def test_the_scheduled_task_runs_the_models_and_beat_runs_it_every_minute(warehouse_settings, warehouse_conn):
    from portal.celery import app
    from warehouse.tasks import models_run_scheduled

    _catalog()
    land(warehouse_conn, "b1", conversation_events())
    result = models_run_scheduled.apply().get()
    assert result["ok"] is True
    assert ModelRun.objects.filter(trigger="schedule", model="conversation_sessions", status="succeeded").exists()
    entry = app.conf.beat_schedule["models-run"]
    assert entry["task"] == "warehouse.tasks.models_run_scheduled" and entry["schedule"] == 60.0


@pytest.mark.parametrize(("task", "queue"), [
    ("warehouse.tasks.models_run_scheduled", "models"),
    ("ingest_workers.redrive_tasks.quarantine_redrive_task", "replay"),
    ("ingest_workers.tasks.warehouse_merge", "default"),
])
def test_each_task_is_routed_to_the_queue_its_workers_serve(task, queue):
    from portal.celery import app

    importlib.import_module(task.rsplit(".", 1)[0])   # what a worker's autodiscovery imports
    assert task in app.tasks
    assert app.amqp.router.route({}, task)["queue"].name == queue


# --- a run whose process dies (hostile-input sweep D10) ------------------------------------------------

DYING_RUN = """
import os, django
django.setup()
from warehouse.modeling.service import models_run_recorded

def die_inside_the_first_model(result):
    if result.status == "running":
        os._exit(17)  # the worker is killed: no finally, no lease release, no record closed

models_run_recorded(progress=die_inside_the_first_model)
"""


def _run_in_a_process_that_dies(warehouse_server, warehouse_conn, lease_seconds: float) -> None:
    import os
    import subprocess
    import sys

    from django.conf import settings
    from django.db import connection

    db = connection.settings_dict
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings",
           "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "SNOWFLAKE_PORT": str(warehouse_server.port), "SNOWFLAKE_DATABASE": warehouse_conn.database,
           "MODELS_RUN_LEASE_SECONDS": str(lease_seconds)}
    done = subprocess.run([sys.executable, "-c", DYING_RUN], env=env, cwd=settings.BASE_DIR, timeout=300,
                          capture_output=True, text=True)
    assert done.returncode == 17, done.stderr[-3000:]


@pytest.mark.django_db(transaction=True)
def test_a_run_whose_process_died_is_marked_failed_when_the_next_run_takes_over(
        warehouse_server, warehouse_settings, warehouse_conn):
    warehouse_settings.MODELS_RUN_LEASE_SECONDS = 2
    land(warehouse_conn, "b1", conversation_events())
    _run_in_a_process_that_dies(warehouse_server, warehouse_conn, lease_seconds=2)
    (dead,) = ModelRun.objects.all()
    assert (dead.model, dead.status, dead.finished_at) == ("changes", "running", None)

    # the dead run's short lease is not renewed any more: a scheduled run gets it within seconds
    import time

    deadline = time.monotonic() + 120
    run = models_run_recorded(trigger="schedule")
    while run.busy_holder and time.monotonic() < deadline:
        time.sleep(0.2)
        run = models_run_recorded(trigger="schedule")
    assert run.ok, run
    dead.refresh_from_db()
    assert dead.status == "failed" and dead.finished_at is not None
    assert dead.error.startswith("abandoned: the run stopped without finishing")
    assert not ModelRun.objects.filter(status="running").exists()
    assert set(ModelRun.objects.filter(run_id=run.run_id).values_list("status", flat=True)) == {"succeeded"}


@pytest.mark.django_db(transaction=True)
def test_a_live_run_keeps_its_short_lease_by_heartbeat(warehouse_settings, warehouse_conn, monkeypatch):
    from warehouse.models import RunnerLease

    warehouse_settings.MODELS_RUN_LEASE_SECONDS = 2
    land(warehouse_conn, "b1", conversation_events())
    seen: list = []
    original = runner_module._Run.changes

    def slow_changes(self):
        # a model longer than the lease: the heartbeat renews it meanwhile, so nobody can take over
        import time

        first = RunnerLease.objects.get().expires_at
        deadline = time.monotonic() + 60
        while len(seen) < 3 and time.monotonic() < deadline:
            expires = RunnerLease.objects.get().expires_at
            if expires > (seen[-1] if seen else first):
                seen.append(expires)
                assert lease_acquire("another-worker:1", 2) == RunnerLease.objects.get().holder
            time.sleep(0.05)
        return original(self)

    monkeypatch.setattr(runner_module._Run, "changes", slow_changes)
    assert models_run_recorded().ok
    assert len(seen) == 3  # renewed three times while the model ran
    assert RunnerLease.objects.get().holder == ""  # released at the end
