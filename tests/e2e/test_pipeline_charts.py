"""The Pipeline page's trend charts in a real browser (walkthrough F26): drawn from the per-minute sample, and
drawn again when the live section is refreshed, with no error in the console."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from tests.portal.test_links_per_role import demo_world

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CHART_POINTS = """id => { const c = window.Chart && window.Chart.getChart(document.getElementById(id));
  return c ? c.data.datasets.map(d => d.data.filter(v => v !== null).length) : null; }"""


def test_the_trend_charts_are_drawn_and_redrawn_on_each_refresh(live_server, sign_in, settings, warehouse_server,
                                                                 tmp_path, platform_user, engineer):
    from ingest_workers.models import PipelineMetricMinute, PipelineMinute

    demo_world(settings, tmp_path, platform_user)
    minute = timezone.now().replace(second=0, microsecond=0)
    for back in range(5):
        at = minute - dt.timedelta(minutes=back)
        PipelineMinute.objects.create(minute=at, source="web-chat", records=600, events=700, quarantined=3)
        PipelineMinute.objects.create(minute=at, source="", merged=690, max_lag_ms=800 + back * 100)
    for back in range(3):  # the merger's latency buckets and late copies (PipelineMetricMinute) for 3 minutes
        at = minute - dt.timedelta(minutes=back)
        for metric, label, value in (("latency", "2", 680), ("latency", "30", 10), ("late", "", 4)):
            PipelineMetricMinute.objects.create(minute=at, source="web-chat", contract="web-chat.chat_event",
                                                version=2, metric=metric, label=label, value=value)
    page = sign_in(engineer)
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(f"{live_server.url}{reverse('pipeline_status')}")
    expect(page.get_by_test_id("pipeline-trends")).to_contain_text("events/s")
    page.wait_for_function("() => window.Chart && window.Chart.getChart(document.getElementById('trend-rate'))")
    assert page.evaluate(CHART_POINTS, "trend-rate") == [30, 30, 30]     # accepted, landed, merged per minute
    assert page.evaluate(CHART_POINTS, "trend-lag") == [5]                # five minutes had a read
    assert page.evaluate(CHART_POINTS, "trend-latency") == [3, 3]        # p50 and p99 of 3 minutes that merged
    assert page.evaluate(CHART_POINTS, "trend-copies") == [30, 30]       # late and duplicates per minute
    expect(page.get_by_test_id("source-hour").filter(has_text="web-chat")).to_contain_text("3000")

    # the 5-second refresh swaps the section: the charts are drawn again on the new canvases
    page.evaluate("() => document.getElementById('trend-rate').dataset.old = '1'")
    page.wait_for_function("() => !document.getElementById('trend-rate').dataset.old", timeout=20_000)
    page.wait_for_function("() => window.Chart.getChart(document.getElementById('trend-rate'))")
    assert page.evaluate(CHART_POINTS, "trend-lag") == [5]
    assert errors == []
