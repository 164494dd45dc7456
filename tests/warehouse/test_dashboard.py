"""The analytics dashboard (/analytics/ and /analytics/data.json) on the embedded warehouse.

Small hand-made rows go straight into the curated tables; every expected number below was worked out
by hand from them (the comments say how). The clock is fixed at NOW, so "today" is 2026-03-10 and a
3-day window is 2026-03-08 .. 2026-03-10; rows on 2026-03-07 are outside it and must never count.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid

import orjson
import pytest
from django.urls import reverse

from warehouse import dashboard_selectors as ds
from warehouse.analytics_ddl import (
    CONVERSATION_SESSIONS,
    PLATFORM_ENGAGEMENT_DAILY,
    TOKEN_COST_USAGE,
    USER_FEEDBACK,
    analytics_ensure,
)
from warehouse.ddl import qualified

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
DAYS3 = ["2026-03-08", "2026-03-09", "2026-03-10"]
CHART_KEYS = ("active_people", "sessions", "activity_hourly", "outcomes", "messages_latency", "cost_by_day",
              "usage_by_model", "usage_by_product", "feedback_distribution", "feedback_trend", "retention")
NO_RUNS = {"succeeded_at": None, "failed": None}


# --- rows -------------------------------------------------------------------------------------------------

def _insert(conn, table, rows: list[dict], defaults: dict) -> None:
    from warehouse.load import warehouse_query

    rows = [{**defaults, **r} for r in rows]
    columns = list(rows[0])
    params, selects = {}, []
    for i, row in enumerate(rows):
        names = []
        for column in columns:
            params[f"r{i}_{column}"] = row[column]
            names.append(f"%(r{i}_{column})s")
        selects.append("SELECT " + ", ".join(names))
    warehouse_query(conn, f"INSERT INTO {qualified(conn.database, table)} ({', '.join(columns)}) "  # noqa: S608 - test-made names
                          + " UNION ALL ".join(selects), params)


def engagement(conn, *rows):
    _insert(conn, PLATFORM_ENGAGEMENT_DAILY, list(rows), {
        "PRODUCT": "support", "ACTIVE_PEOPLE": 0, "SESSIONS": 0, "MESSAGES": 0, "AVG_SESSION_S": 60.0,
        "NEW_PEOPLE": 0, "D1_RETAINED": 0, "D7_RETAINED": 0, "D30_RETAINED": 0})


def sessions(conn, *rows):
    rows = tuple({"SOURCE_SESSION_KEY": r["SESSION_KEY"], **r} for r in rows)
    _insert(conn, CONVERSATION_SESSIONS, list(rows), {
        "SESSION_ID": None, "PERSON_ID": None, "PRODUCT": "support", "TENANT_ID": "t1", "DURATION_S": 60.0,
        "EVENT_COUNT": 1, "CONVERSATION_COUNT": 1, "USER_MESSAGES": 0, "ASSISTANT_MESSAGES": 0, "TOOL_CALLS": 0,
        "TOOL_FAILURES": 0, "INPUT_TOKENS": 0, "CACHED_INPUT_TOKENS": 0, "OUTPUT_TOKENS": 0, "REASONING_TOKENS": 0,
        "COST_USD": 0, "UNPRICED_REQUESTS": 0, "FIRST_RESPONSE_LATENCY_MS": None, "MEDIAN_RESPONSE_LATENCY_MS": None,
        "OUTCOME": "completed", "FEEDBACK_COUNT": 0})


def usage(conn, *rows):
    _insert(conn, TOKEN_COST_USAGE, list(rows), {
        "TENANT_ID": "t1", "PRODUCT": "support", "PLATFORM": "web", "REQUESTS": 1, "INPUT_TOKENS": 0,
        "CACHED_INPUT_TOKENS": 0, "OUTPUT_TOKENS": 0, "REASONING_TOKENS": 0, "COST_USD": 0, "PRICED": True})


def feedback(conn, *rows):
    _insert(conn, USER_FEEDBACK, [{"FEEDBACK_EVENT_ID": f"fb-{i}", **r} for i, r in enumerate(rows)], {
        "PLATFORM": "web", "KIND": None})


@pytest.fixture
def wh(settings, warehouse_conn, warehouse_database):
    """This test's warehouse database with the analytics tables, and the portal pointed at it."""
    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "database": warehouse_database}
    analytics_ensure(warehouse_conn)
    return warehouse_conn


@pytest.fixture(scope="module")
def filled_database(warehouse_server):
    """One database of hand-made rows for the module: the dashboard only reads, so tests may share it."""
    from warehouse.connection import warehouse_connect

    conn = warehouse_connect(database=f"T_{uuid.uuid4().hex[:12].upper()}")
    analytics_ensure(conn)
    engagement(
        conn,
        {"DAY": "2026-03-07", "PLATFORM": "web", "ACTIVE_PEOPLE": 100, "SESSIONS": 100},  # outside the 3 days
        {"DAY": "2026-03-08", "PLATFORM": "web", "ACTIVE_PEOPLE": 5, "SESSIONS": 7, "NEW_PEOPLE": 4,
         "D1_RETAINED": 2, "D7_RETAINED": 1},
        {"DAY": "2026-03-08", "PLATFORM": "web", "PRODUCT": "sales", "ACTIVE_PEOPLE": 2, "SESSIONS": 2,
         "NEW_PEOPLE": 2, "D1_RETAINED": 1},
        {"DAY": "2026-03-08", "PLATFORM": "ios", "ACTIVE_PEOPLE": 3, "SESSIONS": 3, "NEW_PEOPLE": 3},
        {"DAY": "2026-03-09", "PLATFORM": "web", "ACTIVE_PEOPLE": 6, "SESSIONS": 8, "NEW_PEOPLE": 2, "D1_RETAINED": 1},
        {"DAY": "2026-03-10", "PLATFORM": "slack", "ACTIVE_PEOPLE": 1, "SESSIONS": 1, "NEW_PEOPLE": 1},
        {"DAY": "2026-02-01", "PLATFORM": "web", "ACTIVE_PEOPLE": 10, "SESSIONS": 12, "NEW_PEOPLE": 10,
         "D1_RETAINED": 5, "D7_RETAINED": 3, "D30_RETAINED": 2},
    )
    sessions(
        conn,
        {"SESSION_KEY": "s0", "PLATFORM": "web", "PERSON_ID": "p9", "STARTED_AT": "2026-03-07 09:00:00",
         "ENDED_AT": "2026-03-07 09:10:00", "USER_MESSAGES": 10, "ASSISTANT_MESSAGES": 10,
         "FIRST_RESPONSE_LATENCY_MS": 99999, "MEDIAN_RESPONSE_LATENCY_MS": 99999.0},
        {"SESSION_KEY": "s1", "PLATFORM": "web", "PERSON_ID": "p1", "STARTED_AT": "2026-03-08 10:00:00",
         "ENDED_AT": "2026-03-08 10:10:00", "USER_MESSAGES": 3, "ASSISTANT_MESSAGES": 3,
         "FIRST_RESPONSE_LATENCY_MS": 1000, "MEDIAN_RESPONSE_LATENCY_MS": 1200.0},
        {"SESSION_KEY": "s2", "PLATFORM": "web", "PERSON_ID": "p2", "STARTED_AT": "2026-03-08 15:00:00",
         "ENDED_AT": "2026-03-08 15:05:00", "USER_MESSAGES": 2, "ASSISTANT_MESSAGES": 1,
         "FIRST_RESPONSE_LATENCY_MS": 3000, "MEDIAN_RESPONSE_LATENCY_MS": 3000.0, "OUTCOME": "abandoned"},
        {"SESSION_KEY": "s3", "PLATFORM": "ios", "PERSON_ID": "p1", "STARTED_AT": "2026-03-09 23:50:00",
         "ENDED_AT": "2026-03-10 00:20:00", "USER_MESSAGES": 4, "ASSISTANT_MESSAGES": 4,
         "FIRST_RESPONSE_LATENCY_MS": 500, "MEDIAN_RESPONSE_LATENCY_MS": 800.0},
        {"SESSION_KEY": "s4", "PLATFORM": "slack", "PERSON_ID": "p3", "STARTED_AT": "2026-03-10 11:00:00",
         "ENDED_AT": "2026-03-10 11:30:00", "USER_MESSAGES": 1, "OUTCOME": "escalated"},
        {"SESSION_KEY": "s5", "PLATFORM": "web", "STARTED_AT": "2026-03-10 11:30:00",
         "ENDED_AT": "2026-03-10 11:40:00", "USER_MESSAGES": 1, "ASSISTANT_MESSAGES": 1,
         "FIRST_RESPONSE_LATENCY_MS": 2000, "MEDIAN_RESPONSE_LATENCY_MS": 2000.0, "OUTCOME": "error"},
    )
    usage(
        conn,
        {"HOUR": "2026-03-07 10:00:00", "MODEL": "gpt-4.1-mini", "REQUESTS": 99, "INPUT_TOKENS": 99999, "COST_USD": 9},
        {"HOUR": "2026-03-08 10:00:00", "MODEL": "gpt-4.1-mini", "REQUESTS": 3, "INPUT_TOKENS": 1000,
         "CACHED_INPUT_TOKENS": 200, "OUTPUT_TOKENS": 300, "COST_USD": 0.0012},
        {"HOUR": "2026-03-09 23:00:00", "MODEL": "gpt-4.1-mini", "PLATFORM": "ios", "REQUESTS": 4,
         "INPUT_TOKENS": 2000, "OUTPUT_TOKENS": 500, "COST_USD": 0.002},
        {"HOUR": "2026-03-10 11:00:00", "MODEL": "claude-x", "PRODUCT": "sales", "REQUESTS": 1, "INPUT_TOKENS": 500,
         "CACHED_INPUT_TOKENS": 100, "OUTPUT_TOKENS": 1000, "REASONING_TOKENS": 400, "COST_USD": 0.015},
        {"HOUR": "2026-03-10 11:00:00", "MODEL": "mystery-model", "PLATFORM": "slack", "REQUESTS": 2,
         "INPUT_TOKENS": 100, "OUTPUT_TOKENS": 50, "COST_USD": 0, "PRICED": False},
    )
    feedback(
        conn,
        {"FEEDBACK_AT": "2026-03-07 10:00:00", "SCORE": -1.0, "KIND": "thumbs"},
        {"FEEDBACK_AT": "2026-03-08 10:05:00", "SCORE": 1.0, "KIND": "thumbs"},
        {"FEEDBACK_AT": "2026-03-08 15:03:00", "SCORE": -1.0, "KIND": "thumbs"},
        {"FEEDBACK_AT": "2026-03-09 23:55:00", "SCORE": 0.5, "KIND": "stars", "PLATFORM": "ios"},
        {"FEEDBACK_AT": "2026-03-10 11:20:00", "SCORE": 1.0, "KIND": "stars", "PLATFORM": "slack"},
        {"FEEDBACK_AT": "2026-03-10 11:35:00", "SCORE": 0.0},
    )
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def filled(settings, filled_database):
    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "database": filled_database.database}
    return filled_database


def model_run(*, finished: dt.datetime | None, status: str = "succeeded", model: str = "conversation_sessions",
              error: str = ""):
    from warehouse.models import ModelRun

    started = (finished or NOW) - dt.timedelta(seconds=5)
    return ModelRun.objects.create(model=model, status=status, started_at=started, finished_at=finished, error=error)


def series(chart: dict) -> dict[str, list]:
    return {s["key"]: s["values"] for s in chart["series"]}


def data3(conn, **kwargs):
    return ds.dashboard_data(conn, days=3, now=NOW, runs=kwargs.pop("runs", NO_RUNS), **kwargs)


# --- the window -------------------------------------------------------------------------------------------

def test_window_ends_today_while_the_newest_data_is_inside_it():
    window = ds.window_pick(now=NOW, days=3, hours=48, latest_day=dt.date(2026, 3, 8),
                            latest_hour=dt.datetime(2026, 3, 8, 14, tzinfo=dt.UTC))
    assert (window.start, window.end, window.anchored_to_data) == (dt.date(2026, 3, 8), dt.date(2026, 3, 10), False)
    assert (window.hour_start, window.hour_end) == (dt.datetime(2026, 3, 8, 13, tzinfo=dt.UTC), NOW)
    assert not window.hour_anchored_to_data
    assert window.day_labels == DAYS3 and len(window.hour_labels) == 48


def test_window_ends_on_the_newest_data_when_it_is_older_than_the_window():
    window = ds.window_pick(now=NOW, days=3, hours=48, latest_day=dt.date(2026, 3, 7),
                            latest_hour=dt.datetime(2026, 3, 7, 9, 30, tzinfo=dt.UTC))
    assert (window.start, window.end, window.anchored_to_data) == (dt.date(2026, 3, 5), dt.date(2026, 3, 7), True)
    assert window.hour_end == dt.datetime(2026, 3, 7, 9, tzinfo=dt.UTC) and window.hour_anchored_to_data
    assert "newest day with data" in window.as_json()["text"]
    empty = ds.window_pick(now=NOW, days=14, hours=48, latest_day=None, latest_hour=None)
    assert (empty.end, empty.anchored_to_data, empty.days) == (dt.date(2026, 3, 10), False, 14)


@pytest.mark.parametrize(("value", "days"), [(None, 14), ("", 14), ("1", 1), (" 90 ", 90), ("30", 30)])
def test_days_parameter_accepted(value, days):
    assert ds.window_days_clean(value) == days


@pytest.mark.parametrize("value", ["0", "91", "-3", "abc", "1.5", "14d"])
def test_days_parameter_refused(value):
    with pytest.raises(ValueError, match="days must be a whole number from 1 to 90"):
        ds.window_days_clean(value)


def test_ago_text():
    assert [ds.ago_text(s) for s in (None, -3, 0.4, 40, 125, 3 * 3600 + 12 * 60, 2 * 86400 + 3 * 3600 + 5)] == [
        "", "0 s", "0 s", "40 s", "2 min", "3 h 12 min", "2 d 3 h"]


# --- each chart, from hand-made rows ---------------------------------------------------------------------

def test_active_people_and_sessions_per_platform(filled):
    charts = data3(filled)["charts"]
    # web: 03-08 support 5 + sales 2, 03-09 6; ios 3 on 03-08; slack 1 on 03-10; 03-07's 100 is outside
    assert charts["active_people"]["labels"] == DAYS3
    assert series(charts["active_people"]) == {"web": [7, 6, 0], "ios": [3, 0, 0], "slack": [0, 0, 1]}
    assert [s["key"] for s in charts["active_people"]["series"]] == ["web", "ios", "slack"]
    assert series(charts["sessions"]) == {"web": [9, 8, 0], "ios": [3, 0, 0], "slack": [0, 0, 1]}
    assert not charts["sessions"]["empty"]


def test_messages_and_latency_per_day(filled):
    chart = data3(filled)["charts"]["messages_latency"]
    assert chart["labels"] == DAYS3
    assert series(chart) == {
        "user_messages": [3 + 2, 4, 1 + 1],
        "assistant_messages": [3 + 1, 4, 0 + 1],
        # 03-08: first responses 1000 and 3000 -> median 2000, p90 1000 + 0.9 * 2000 = 2800
        "first_response_p50_ms": [2000.0, 500.0, 2000.0],
        "first_response_p90_ms": [2800.0, 500.0, 2000.0],
        "response_p50_ms": [2100.0, 800.0, 2000.0],   # s4 has no latency (no answer): left out, not 0
    }


def test_session_outcomes(filled):
    chart = data3(filled)["charts"]["outcomes"]
    assert series(chart) == {"completed": [1, 1, 0], "abandoned": [1, 0, 0], "escalated": [0, 0, 1],
                             "error": [0, 0, 1]}
    assert [s["key"] for s in chart["series"]] == ["completed", "abandoned", "escalated", "error"]
    assert chart["totals"] == {"completed": 2, "abandoned": 1, "escalated": 1, "error": 1}


def test_last_48_hours(filled):
    chart = data3(filled)["charts"]["activity_hourly"]
    assert chart["labels"][0] == "2026-03-08T13:00Z" and chart["labels"][-1] == "2026-03-10T12:00Z"
    values = {key: {h: v for h, v in zip(chart["labels"], vals, strict=True) if v}
              for key, vals in series(chart).items()}
    # s1 (03-08 10:00) and its usage hour are before the 48 hours; s4 and s5 both start in the 11:00 hour
    assert values["sessions"] == {"2026-03-08T15:00Z": 1, "2026-03-09T23:00Z": 1, "2026-03-10T11:00Z": 2}
    assert values["requests"] == {"2026-03-09T23:00Z": 4, "2026-03-10T11:00Z": 1 + 2}
    assert values["cost_usd"] == {"2026-03-09T23:00Z": 0.002, "2026-03-10T11:00Z": 0.015}


def test_tokens_and_cost_by_model_and_product(filled):
    charts = data3(filled)["charts"]
    by_model = charts["usage_by_model"]
    assert by_model["labels"] == ["claude-x", "gpt-4.1-mini", "mystery-model"]   # costliest first
    assert by_model["rows"] == [
        {"model": "claude-x", "requests": 1, "uncached_input_tokens": 400, "cached_input_tokens": 100,
         "output_tokens": 1000, "reasoning_tokens": 400, "cost_usd": 0.015, "unpriced_requests": 0},
        {"model": "gpt-4.1-mini", "requests": 3 + 4, "uncached_input_tokens": 800 + 2000, "cached_input_tokens": 200,
         "output_tokens": 300 + 500, "reasoning_tokens": 0, "cost_usd": 0.0032, "unpriced_requests": 0},
        {"model": "mystery-model", "requests": 2, "uncached_input_tokens": 100, "cached_input_tokens": 0,
         "output_tokens": 50, "reasoning_tokens": 0, "cost_usd": 0.0, "unpriced_requests": 2},
    ]
    assert series(by_model)["cost_usd"] == [0.015, 0.0032, 0.0]
    assert "mystery-model" in by_model["note"] and "claude-x" not in by_model["note"]
    by_product = charts["usage_by_product"]
    assert by_product["labels"] == ["sales", "support"]
    assert series(by_product) == {"uncached_input_tokens": [400, 2900], "cached_input_tokens": [100, 200],
                                  "output_tokens": [1000, 850], "cost_usd": [0.015, 0.0032]}
    assert by_product["rows"][1]["unpriced_requests"] == 2
    assert series(charts["cost_by_day"]) == {"claude-x": [0.0, 0.0, 0.015], "gpt-4.1-mini": [0.0012, 0.002, 0.0],
                                             "mystery-model": [0.0, 0.0, 0.0]}


def test_cost_per_day_keeps_the_costliest_models_and_sums_the_rest(wh):
    usage(wh, *({"HOUR": "2026-03-10 09:00:00", "MODEL": f"m{i:02d}", "COST_USD": i} for i in range(1, 11)))
    chart = data3(wh)["charts"]["cost_by_day"]
    assert [s["key"] for s in chart["series"]] == [f"m{i:02d}" for i in range(10, 2, -1)] + ["other (2 models)"]
    assert series(chart)["other (2 models)"] == [0.0, 0.0, 1 + 2]


def test_feedback_distribution_and_trend(filled):
    charts = data3(filled)["charts"]
    distribution = charts["feedback_distribution"]
    assert distribution["labels"] == ["-1", "-0.5", "0", "+0.5", "+1"]
    assert series(distribution) == {"thumbs": [1, 0, 0, 0, 1], "stars": [0, 0, 0, 1, 1], "unknown": [0, 0, 1, 0, 0]}
    trend = charts["feedback_trend"]
    # 03-08: +1 and -1; 03-09: 0.5; 03-10: 1 and 0
    assert series(trend) == {"mean_score": [0.0, 0.5, 0.5], "feedback": [2, 1, 2]}


def test_feedback_buckets_at_their_edges(wh):
    feedback(wh, *({"FEEDBACK_AT": "2026-03-10 10:00:00", "SCORE": s, "KIND": "stars"}
                   for s in (-1.0, -0.76, -0.75, -0.25, 0.25, 0.26, 0.75, 0.76, 1.0)))
    assert series(data3(wh)["charts"]["feedback_distribution"]) == {"stars": [2, 1, 2, 2, 2]}


def test_retention_cohorts(filled):
    retention = data3(filled)["charts"]["retention"]
    # today 03-10: only the 03-08 cohort's day 1 (03-09) has passed
    assert retention["rows"] == [
        {"day": "2026-03-08", "new_people": 4 + 2 + 3, "d1_retained": 2 + 1 + 0, "d1_pct": 33.3,
         "d7_retained": None, "d7_pct": None, "d30_retained": None, "d30_pct": None},
        {"day": "2026-03-09", "new_people": 2, "d1_retained": None, "d1_pct": None,
         "d7_retained": None, "d7_pct": None, "d30_retained": None, "d30_pct": None},
        {"day": "2026-03-10", "new_people": 1, "d1_retained": None, "d1_pct": None,
         "d7_retained": None, "d7_pct": None, "d30_retained": None, "d30_pct": None},
    ]
    assert series(retention)["new_people"] == [9, 2, 1] and series(retention)["d1_pct"] == [33.3, None, None]
    assert retention["by_platform"] == [
        {"platform": "web", "new_people": 4 + 2 + 2, "d1_pct": 50.0, "d7_pct": None, "d30_pct": None},
        {"platform": "ios", "new_people": 3, "d1_pct": 0.0, "d7_pct": None, "d30_pct": None},
        {"platform": "slack", "new_people": 1, "d1_pct": None, "d7_pct": None, "d30_pct": None},
    ]


def test_retention_over_a_long_window_counts_only_final_cohorts(filled):
    retention = ds.dashboard_data(filled, days=40, now=NOW, runs=NO_RUNS)["charts"]["retention"]
    assert retention["rows"][0] == {"day": "2026-02-01", "new_people": 10, "d1_retained": 5, "d1_pct": 50.0,
                                    "d7_retained": 3, "d7_pct": 30.0, "d30_retained": 2, "d30_pct": 20.0}
    # web: D1 over 02-01 (5 of 10) and 03-08 (3 of 6); D7 and D30 only 02-01 has reached
    assert retention["by_platform"][0] == {"platform": "web", "new_people": 18, "d1_pct": 50.0, "d7_pct": 30.0,
                                           "d30_pct": 20.0}


def test_kpis(filled):
    kpis = data3(filled)["kpis"]
    # sessions overlapping 03-10: s3 (ended 00:20), s4, s5; people p1 and p3 (s5 has none)
    assert kpis["people_active"] == {"value": 2, "text": "2", "note": "people active today (3 sessions)"}
    assert kpis["sessions"]["value"] == 5 and kpis["sessions"]["note"] == "sessions started in the 3 days"
    assert kpis["cost_usd"]["value"] == 0.0182 and kpis["cost_usd"]["text"] == "$0.02"
    assert "(10 requests)" in kpis["cost_usd"]["note"]
    # (1 - 1 + 0.5 + 1 + 0) / 5
    assert kpis["feedback_mean"]["value"] == 0.3 and kpis["feedback_mean"]["text"] == "+0.30"
    assert "5 given" in kpis["feedback_mean"]["note"]


def test_old_data_still_shows_in_a_window_ending_on_its_newest_day(filled):
    data = ds.dashboard_data(filled, days=3, now=dt.datetime(2026, 6, 1, 8, tzinfo=dt.UTC), runs=NO_RUNS)
    assert data["window"]["anchored_to_data"] and data["window"]["end"] == "2026-03-10"
    assert data["charts"]["active_people"]["labels"] == DAYS3
    assert series(data["charts"]["sessions"])["web"] == [9, 8, 0]
    assert data["window"]["hour_end"] == "2026-03-10T11:00Z" and data["window"]["hour_anchored_to_data"]
    assert data["kpis"]["people_active"]["note"].startswith("people active on 2026-03-10 (newest day with data)")
    assert "2026-03-10, the newest day with data" in data["window"]["text"]


# --- freshness --------------------------------------------------------------------------------------------

def test_freshness_from_the_last_successful_run_and_the_newest_session(filled):
    model_run(finished=NOW - dt.timedelta(minutes=3), status="failed", model="identity", error="old failure")
    model_run(finished=NOW - dt.timedelta(seconds=40))
    data = ds.dashboard_data(filled, days=3, now=NOW)
    fresh = data["freshness"]
    # the newest session activity is s5's end, 11:40
    assert fresh["text"] == "Curated tables last refreshed 40 s ago; latest session activity 20 min ago."
    assert fresh["refreshed_at"] == "2026-03-10T11:59:20Z" and fresh["session_activity_at"] == "2026-03-10T11:40:00Z"
    assert not fresh["stale"] and fresh["warning"] is None and fresh["failure"] is None


def test_freshness_warns_when_the_last_success_is_older_than_5_minutes_and_names_a_failure(filled):
    model_run(finished=NOW - dt.timedelta(minutes=10))
    model_run(finished=NOW - dt.timedelta(seconds=30), status="failed", model="token_cost_usage",
              error="WarehouseUnavailable: connection refused\nTraceback …")
    fresh = ds.dashboard_data(filled, days=3, now=NOW)["freshness"]
    assert fresh["stale"] and "finished 10 min ago" in fresh["warning"]
    assert fresh["failure"] == ("The newest model run failed (token_cost_usage): "
                                "WarehouseUnavailable: connection refused")
    assert fresh["text"].startswith("Curated tables last refreshed 10 min ago")


def test_freshness_warns_when_there_has_never_been_a_run(wh):
    fresh = ds.dashboard_data(wh, days=3, now=NOW)["freshness"]
    assert fresh["stale"] and "No model run has ever succeeded" in fresh["warning"]
    assert "models_run" in fresh["warning"]
    assert fresh["text"] == "The curated tables have never been refreshed; no session activity yet."


# --- the page and data.json ----------------------------------------------------------------------------

@pytest.fixture
def signed_in(client, platform_user, monkeypatch):
    from django.utils import timezone

    monkeypatch.setattr(timezone, "now", lambda: NOW)
    client.force_login(platform_user)
    return client


def test_data_json_is_what_the_selectors_return(filled, signed_in):
    model_run(finished=NOW - dt.timedelta(seconds=40))
    response = signed_in.get(reverse("analytics_dashboard_data"), {"days": "3"})
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    data = response.json()
    assert data == orjson.loads(orjson.dumps(ds.dashboard_data(filled, days=3, now=NOW)))
    assert series(data["charts"]["active_people"])["web"] == [7, 6, 0]
    assert data["freshness"]["text"].startswith("Curated tables last refreshed 40 s ago")
    assert set(CHART_KEYS) <= set(data["charts"])
    assert signed_in.get(reverse("analytics_dashboard_data")).json()["window"]["days"] == ds.DEFAULT_DAYS


@pytest.mark.parametrize("value", ["0", "91", "abc", "2.5"])
def test_data_json_refuses_a_bad_days(signed_in, value):
    response = signed_in.get(reverse("analytics_dashboard_data"), {"days": value})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_parameter" and body["parameter"] == "days"
    assert "days must be a whole number from 1 to 90" in body["detail"]


def test_page_answers_with_loading_states_and_reads_the_numbers_from_data_json(filled, signed_in):
    model_run(finished=NOW - dt.timedelta(seconds=40))
    response = signed_in.get(reverse("analytics_dashboard"), {"window": "3d"})
    assert response.status_code == 200
    html = response.content.decode()
    for key in CHART_KEYS:
        card = _card(html, key)
        assert f'<canvas id="chart-{key}"' in card
        assert "From ANALYTICS." in card or "(ANALYTICS." in card, key   # every caption names its table
        # a loading skeleton until data.json answers; chart, empty and unavailable states hidden
        assert re.search(r'class="chart-loading" data-state="loading"', card), key
        assert re.search(r'class="chart-box"\s+hidden', card) and re.search(r'data-state="empty"\s+hidden', card)
    assert html.count('data-state="loading">Loading…</td>') == 3                      # the three tables
    assert "{#" not in html and "#}" not in html                                      # no template comment shown
    assert '<strong data-kpi="people_active" class="loading-text">…</strong>' in html
    # the freshness line comes from the portal database, without waiting for the warehouse
    assert "Curated tables last refreshed 40 s ago." in html
    assert all(_hidden(html, testid) for testid in ("freshness-warning", "warehouse-unavailable", "run-failure"))
    # the vendored chart library and the page's script, nothing from another host, no inline code
    assert '<script src="/static/vendor/chart-4.6.1.umd.min.js" defer></script>' in html
    assert '<script src="/static/warehouse/analytics.js" defer></script>' in html
    assert not re.search(r'<(script|link)\b[^>]*(src|href)\s*=\s*["\']?(https?:)?//', html, re.IGNORECASE)
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>\s*\S", html)   # no inline script with code
    assert not re.search(r"\son[a-z]+\s*=", html)                      # no onchange= and the like
    assert re.search(r'<select name="window" id="window-days" data-autosubmit>', html)
    assert 'data-data-url="/analytics/data.json"' in html and 'data-window="3d"' in html
    assert '<option value="3d" selected>3 days</option>' in html    # the link's window, shown as chosen
    # the nav link, current on this page
    assert re.search(r'<a href="/analytics/"\s+aria-current="page">Analytics</a>', html)


def test_the_page_does_not_wait_for_the_warehouse(settings, warehouse_server, signed_in):
    from warehouse.embedded import free_port

    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "port": free_port()}   # nothing listens there
    response = signed_in.get(reverse("analytics_dashboard"))
    assert response.status_code == 200 and 'data-state="loading"' in response.content.decode()


def test_data_json_is_cached_until_the_next_model_run(wh, signed_in):
    model_run(finished=NOW - dt.timedelta(minutes=2))
    sessions(wh, {"SESSION_KEY": "a", "SOURCE_SESSION_KEY": "a", "PLATFORM": "web",
                  "STARTED_AT": "2026-03-10 09:00:00", "ENDED_AT": "2026-03-10 09:01:00"})

    def count():
        return signed_in.get(reverse("analytics_dashboard_data"), {"window": "3d"}).json()["kpis"]["sessions"]["value"]

    assert count() == 1
    sessions(wh, {"SESSION_KEY": "b", "SOURCE_SESSION_KEY": "b", "PLATFORM": "web",
                  "STARTED_AT": "2026-03-10 10:00:00", "ENDED_AT": "2026-03-10 10:01:00"})
    assert count() == 1                     # the same model run: the same numbers, not read again
    model_run(finished=NOW - dt.timedelta(seconds=5))
    assert count() == 2                     # a run finished: its numbers at once


def test_vendored_chart_library_is_in_static_with_its_licence():
    from django.contrib.staticfiles import finders

    library = finders.find("vendor/chart-4.6.1.umd.min.js")
    licence = finders.find("vendor/CHARTJS-LICENSE.md")
    assert library and licence and finders.find("warehouse/analytics.js") and finders.find("warehouse/analytics.css")
    with open(library, encoding="utf-8") as f:
        text = f.read()
    assert text.startswith("/*!\n * Chart.js v4.6.1") and "sourceMappingURL" not in text
    with open(licence, encoding="utf-8") as f:
        assert "MIT License" in f.read()


def test_data_json_with_empty_tables(wh, signed_in):
    data = signed_in.get(reverse("analytics_dashboard_data")).json()
    assert all(data["charts"][key]["empty"] for key in CHART_KEYS)
    assert data["kpis"]["sessions"]["value"] == 0 and data["kpis"]["feedback_mean"]["text"] == "—"
    assert "No model run has ever succeeded" in data["freshness"]["warning"]
    assert data["empty_help"].startswith("No data yet: the model runner fills this every minute")
    html = signed_in.get(reverse("analytics_dashboard")).content.decode()
    assert "No model run has ever succeeded" in html and not _hidden(html, "freshness-warning")


def test_page_creates_missing_analytics_tables(settings, warehouse_server, signed_in):
    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "database": f"T_{uuid.uuid4().hex[:12].upper()}"}
    response = signed_in.get(reverse("analytics_dashboard_data"))
    assert response.status_code == 200 and response.json()["charts"]["sessions"]["empty"]


def test_warehouse_down(settings, warehouse_server, signed_in):
    from warehouse.embedded import free_port

    model_run(finished=NOW - dt.timedelta(seconds=40))
    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "port": free_port()}   # nothing listens there
    html = signed_in.get(reverse("analytics_dashboard")).content.decode()
    # the page has the messages analytics.js shows when data.json answers 503
    assert "No numbers: the warehouse could not be read." in html and "could not be reached" in html
    assert "Curated tables last refreshed 40 s ago." in html   # from the portal database, still known
    data = signed_in.get(reverse("analytics_dashboard_data"))
    assert data.status_code == 503 and data["Content-Type"] == "application/json"
    assert data.json()["error"] == "warehouse_unavailable"
    assert data.json()["freshness"]["refreshed_at"] == "2026-03-10T11:59:20Z"


def test_page_with_a_bad_days_falls_back_with_a_note(wh, signed_in):
    response = signed_in.get(reverse("analytics_dashboard"), {"days": "500"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "days must be a whole number from 1 to 90" in html and 'data-window=""' in html
    assert "showing the default window" in html


@pytest.mark.parametrize("value", ["1x", "0d", "91d", "48h", "week"])
def test_a_bad_window_is_named_on_the_page_and_refused_by_data_json(wh, signed_in, value):
    html = signed_in.get(reverse("analytics_dashboard"), {"window": value}).content.decode()
    assert f"window must be 24h or a number of days from 1 to 90 (7d, 30d…), not &#x27;{value}&#x27;" in html
    assert "showing the default window" in html and 'data-window=""' in html
    response = signed_in.get(reverse("analytics_dashboard_data"), {"window": value})
    assert response.status_code == 400 and response.json()["parameter"] == "window"


@pytest.mark.parametrize(("value", "window"), [("24h", "24h"), ("1d", "1d"), ("1", "1d"), (" 30D ", "30d"),
                                               (None, None), ("", None)])
def test_window_parameter_accepted(value, window):
    assert ds.window_clean(value) == window


def test_the_default_window_is_hourly_while_there_is_less_than_a_day_of_data():
    at = dt.datetime(2026, 3, 10, 9, tzinfo=dt.UTC)
    assert ds.window_auto(oldest=at, newest=at + dt.timedelta(hours=23)) == "24h"
    assert ds.window_auto(oldest=at, newest=at + dt.timedelta(hours=25)) == "14d"
    assert ds.window_auto(oldest=None, newest=None) == "14d"


def test_a_fresh_demo_gets_the_last_24_hours_by_the_hour(wh, signed_in):
    # 40 minutes of data, as after `make run`: not 13 empty days and one full one
    sessions(wh, *({"SESSION_KEY": f"s{i}", "SOURCE_SESSION_KEY": f"s{i}", "PLATFORM": "web",
                    "STARTED_AT": f"2026-03-10 11:{20 + i:02d}:00", "ENDED_AT": f"2026-03-10 11:{21 + i:02d}:00",
                    "USER_MESSAGES": 1, "ASSISTANT_MESSAGES": 1, "FIRST_RESPONSE_LATENCY_MS": 1500}
                   for i in range(30)))
    usage(wh, {"HOUR": "2026-03-10 11:00:00", "MODEL": "gpt-4.1-mini", "REQUESTS": 30, "COST_USD": 0.5})
    data = signed_in.get(reverse("analytics_dashboard_data")).json()
    window = data["window"]
    assert (window["key"], window["granularity"]) == ("24h", "hour")
    assert window["text"] == "The last 24 hours by the hour: 2026-03-09T13:00 to 2026-03-10T13:00 (UTC)."
    labels = data["charts"]["sessions"]["labels"]
    assert len(labels) == 24 and labels[0] == "2026-03-09T13:00Z" and labels[-1] == "2026-03-10T12:00Z"
    assert series(data["charts"]["sessions"])["web"][-2:] == [30, 0]
    assert series(data["charts"]["messages_latency"])["user_messages"][-2] == 30
    assert series(data["charts"]["cost_by_day"])["gpt-4.1-mini"][-2] == 0.5
    assert data["kpis"]["sessions"]["note"] == "sessions started in the 24 hours"
    assert data["kpis"]["people_active"]["note"].startswith("people active in the 24 hours")
    # asked for explicitly, the days are still there
    assert len(signed_in.get(reverse("analytics_dashboard_data"), {"window": "14d"}).json()["charts"]["sessions"]
               ["labels"]) == 14


# --- latency: units and outliers ---------------------------------------------------------------------------

def test_latency_in_ms_while_small_and_in_s_from_10_s():
    assert ds.latency_axis([800, 1500, 2800, None]) == {"unit": "ms", "divisor": 1, "max": None, "clipped": 0,
                                                         "title": "latency (ms)"}
    assert ds.latency_axis([4000, 9000, 12000, 15000])["unit"] == "s"
    assert ds.latency_axis([None, None])["unit"] == "ms"


def test_a_far_outlier_does_not_flatten_the_other_latencies():
    # the review's case: p90 of ~81,000,000 ms (22.5 h) next to values of a few seconds
    axis = ds.latency_axis([1200, 1500, 1800, 2100, 2500, 2600, 2900, 3000, 3100, 81_000_000])
    assert axis == {"unit": "ms", "divisor": 1, "max": 4000, "clipped": 1, "title": "latency (ms)"}
    seconds = ds.latency_axis([9000, 12000, 14000, 15000, 16000, 18000, 20000, 58_000_000])
    assert (seconds["unit"], seconds["max"], seconds["clipped"]) == ("s", 25, 1)


def test_the_latency_chart_says_when_it_clips(wh):
    sessions(wh, *({"SESSION_KEY": f"s{d}", "SOURCE_SESSION_KEY": f"s{d}", "PLATFORM": "web",
                    "STARTED_AT": f"2026-03-{d:02d} 10:00:00", "ENDED_AT": f"2026-03-{d:02d} 10:05:00",
                    "FIRST_RESPONSE_LATENCY_MS": 81_000_000 if d == 9 else 2000 + 100 * d,
                    "MEDIAN_RESPONSE_LATENCY_MS": 1500.0} for d in range(1, 11)))
    chart = ds.dashboard_data(wh, window="10d", now=NOW, runs=NO_RUNS)["charts"]["messages_latency"]
    assert chart["latency_axis"]["unit"] == "ms" and chart["latency_axis"]["clipped"] == 2   # median and p90
    assert series(chart)["first_response_p90_ms"][8] == 81_000_000.0      # the data keeps the real value
    assert chart["note"].startswith("2 latency values above 4,000 ms (far outliers) are drawn at the top edge")


def test_anonymous_is_sent_to_sign_in(client):
    for name in ("analytics_dashboard", "analytics_dashboard_data"):
        response = client.get(reverse(name))
        assert response.status_code == 302 and response["Location"].startswith(reverse("login")), name


def test_every_role_may_see_it_and_an_account_without_one_may_not(wh, client, engineer, privacy_user, admin_user,
                                                                  make_user):
    for user in (engineer, privacy_user, admin_user):
        client.force_login(user)
        assert client.get(reverse("analytics_dashboard")).status_code == 200, user
    # No role and no team: the page asking for a role instead (hostile-input review D15).
    client.force_login(make_user("norole"))
    response = client.get(reverse("analytics_dashboard"))
    assert response.status_code == 403 and "Your account has no role yet" in response.content.decode()


def _card(html: str, key: str) -> str:
    match = re.search(rf'<article class="chart-card[^"]*" data-chart="{key}".*?</article>', html, re.S)
    assert match, key
    return match.group(0)


def _hidden(html: str, testid: str) -> bool:
    """Whether the element with this data-testid carries the hidden attribute."""
    match = re.search(rf'<[a-z]+\b[^>]*data-testid="{testid}"[^>]*>', html)
    assert match, testid
    return re.search(r"\shidden(\s|>|=)", match.group(0)) is not None
