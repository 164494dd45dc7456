"""A scorecard's 30-day history chart in a real browser: drawn from the stored snapshots by the page's own
script (no inline script under the CSP), one point per evaluation coloured by its grade, no console error."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CHART = """() => { const c = window.Chart && window.Chart.getChart(document.getElementById('scorecard-history'));
  return c ? {scores: c.data.datasets[0].data, colors: c.data.datasets[0].pointBackgroundColor} : null; }"""


def test_the_history_chart_is_drawn_with_a_point_per_evaluation(live_server, sign_in, engineer):
    from quality.models import ScorecardSnapshot

    now = timezone.now()
    for days, level, score in ((40, "green", 100), (20, "green", 100), (10, "red", 60), (1, "amber", 85)):
        ScorecardSnapshot.objects.create(
            kind="source", subject="web-chat", level=level, score=score, evaluated_at=now - dt.timedelta(days=days),
            reasons=[] if level == "green" else [{"key": "silent", "code": "silent", "severity": "warning",
                                                  "summary": "no records for 40 minutes", "since": None,
                                                  "details": {}}])
    page = sign_in(engineer)
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(f"{live_server.url}{reverse('quality_scorecard', args=['source', 'web-chat'])}")
    expect(page.get_by_test_id("level")).to_have_text("Amber")
    expect(page.get_by_test_id("reason")).to_contain_text("no records for 40 minutes")
    page.wait_for_function(CHART)
    chart = page.evaluate(CHART)
    assert chart["scores"] == [100, 60, 85]                     # the last 30 days only, oldest first
    assert chart["colors"] == ["#1b7f3b", "#b42318", "#a15c00"]  # green, red, amber
    assert errors == []
