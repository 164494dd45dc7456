"""The analytics page in a real browser: it arrives with loading skeletons, fills them from data.json,
and the latency chart keeps a readable unit and scale when one day's latency is a 22-hour outlier."""

from __future__ import annotations

import datetime as dt

import pytest
from playwright.sync_api import expect

from tests.warehouse.test_dashboard import sessions, usage
from warehouse.analytics_ddl import analytics_ensure

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def warehouse_conn(warehouse_server):
    """A database of this test's own on the embedded warehouse (tests/warehouse/conftest.py's, which
    this folder does not see)."""
    import uuid

    from warehouse.connection import warehouse_connect
    from warehouse.ddl import warehouse_ensure

    conn = warehouse_connect(database=f"T_{uuid.uuid4().hex[:12].upper()}")
    warehouse_ensure(conn)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def analytics_warehouse(settings, warehouse_conn):
    """Ten days of sessions ending today: first responses of 12 to 21 s, and one day at 22.5 hours (the
    review's impossible session), plus cost at half-dollar steps."""
    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "database": warehouse_conn.database}
    analytics_ensure(warehouse_conn)
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    rows = []
    for d in range(10):
        day = today - dt.timedelta(days=9 - d)
        latency = 81_000_000 if d == 4 else 12_000 + 1000 * d
        rows.append({"SESSION_KEY": f"s{d}", "PLATFORM": "web", "PERSON_ID": f"p{d}",
                     "STARTED_AT": f"{day:%Y-%m-%d} 00:10:00", "ENDED_AT": f"{day:%Y-%m-%d} 00:20:00",
                     "USER_MESSAGES": 3, "ASSISTANT_MESSAGES": 3, "FIRST_RESPONSE_LATENCY_MS": latency,
                     "MEDIAN_RESPONSE_LATENCY_MS": 9000.0 + 500 * d})
    sessions(warehouse_conn, *rows)
    usage(warehouse_conn, *({"HOUR": f"{today - dt.timedelta(days=d):%Y-%m-%d} 00:00:00", "MODEL": "gpt-4.1-mini",
                             "COST_USD": 0.5 * d} for d in range(10)))
    return warehouse_conn


def chart_axis(page, key: str, axis: str) -> dict:
    return page.evaluate("""([key, axis]) => {
        const chart = window.Chart.getChart(document.getElementById("chart-" + key));
        const scale = chart.scales[axis];
        return {title: scale.options.title.text, max: scale.max, labels: scale.ticks.map(t => t.label),
                values: scale.ticks.map(t => t.value)};
    }""", [key, axis])


def test_charts_load_and_latency_has_a_unit_and_a_scale_an_outlier_does_not_set(
        live_server, sign_in, platform_user, analytics_warehouse):
    page = sign_in(platform_user)
    page.goto(f"{live_server.url}/analytics/?window=14d")
    card = page.get_by_test_id("chart-messages_latency")
    expect(page.locator('#analytics[data-state="ready"]')).to_have_count(1)
    expect(card.locator('[data-state="loading"]')).to_be_hidden()
    expect(card.locator("canvas")).to_be_visible()
    expect(page.locator('[data-state="loading"]:visible')).to_have_count(0)   # every skeleton is gone

    latency = chart_axis(page, "messages_latency", "y1")
    assert latency["title"] == "latency (s)"
    # the other days' 12 to 21 s set the axis, not the 81,000 s day: it ends at 25 s, not at 90,000,000
    assert latency["max"] == 25 and max(latency["values"]) <= 25
    assert all(len(label) <= 4 for label in latency["labels"]), latency["labels"]
    expect(card.locator('[data-state="note"]')).to_contain_text("drawn at the top edge")

    money = chart_axis(page, "cost_by_day", "y")
    assert len(set(money["labels"])) == len(money["labels"]), money["labels"]     # no repeated tick label
    decimals = {len(label.partition(".")[2]) for label in money["labels"]}
    assert len(decimals) == 1 and decimals <= {0, 2}, money["labels"]             # $0.50, never $0.500
    expect(page.locator('[data-kpi="sessions"]')).to_have_text("10")

    # no hole in a grid: every row of cards is one wide card or as many cards as there are columns
    rows = page.evaluate("""() => [...document.querySelectorAll(".chart-grid")].map(grid => {
        const columns = getComputedStyle(grid).gridTemplateColumns.split(" ").length;
        const byTop = {};
        [...grid.children].forEach(card => {
            const top = Math.round(card.getBoundingClientRect().top);
            (byTop[top] = byTop[top] || []).push(card.classList.contains("chart-wide") ? columns : 1);
        });
        return Object.values(byTop).map(row => [row.reduce((a, b) => a + b, 0), columns]);
    })""")
    assert all(filled == columns for grid in rows for filled, columns in grid), rows
