"""The anomaly baselines and the two alert rules on literal data (pure: no database).

Traffic with a weekly shape: a Monday-morning peak every week, a quiet Sunday. Compared with the same hour of the
same weekday over the past weeks, the Monday peak is normal and a Sunday 60% drop is not."""

from __future__ import annotations

import datetime as dt
import random

from quality.alert_types import Severity
from quality.anomaly import (
    hour_latency_ms,
    latency_verdict,
    rate_jump_verdict,
    robust_baseline,
    same_hour_history,
    volume_verdict,
)
from quality.anomaly_rules import evaluated_hour, quarantine_rate_conditions, volume_conditions

MONDAY_9 = dt.datetime(2026, 11, 30, 9, tzinfo=dt.UTC)      # a Monday
SUNDAY_15 = dt.datetime(2026, 11, 29, 15, tzinfo=dt.UTC)    # a Sunday


def weekly_volume(hour: dt.datetime) -> float:
    """A business-chat shape: Monday-morning peak, weekday office hours, quiet weekends and nights."""
    base = 400.0 if hour.weekday() < 5 else 120.0
    if 8 <= hour.hour < 18:
        base *= 3
    if hour.weekday() == 0 and 8 <= hour.hour < 12:
        base *= 2.5  # the Monday peak
    return base


def history_rows(source: str, *, until: dt.datetime, weeks: int = 8, seed: int = 3,
                 quarantine_rate: float = 0.002) -> dict[dt.datetime, dict]:
    rng = random.Random(seed)  # noqa: S311 - test data
    rows = {}
    hour = until - dt.timedelta(weeks=weeks)
    while hour <= until:
        records = int(weekly_volume(hour) * rng.uniform(0.9, 1.1))
        rows[hour] = {"records": records, "events": records, "quarantined": int(records * quarantine_rate),
                      "max_lag_ms": 800}
        hour += dt.timedelta(hours=1)
    return rows


def test_baseline_is_the_median_and_scaled_mad_and_one_odd_week_moves_neither():
    base = robust_baseline([100, 102, 98, 101, 99, 100, 5])   # a week with an outage
    assert base.median == 100 and round(base.spread, 3) == round(1.4826 * 1, 3) and base.samples == 7
    assert robust_baseline([]) is None


def test_same_hour_history_takes_the_same_weekday_and_hour_only():
    series = {MONDAY_9 - dt.timedelta(weeks=k): float(k) for k in range(1, 5)}
    series[MONDAY_9 - dt.timedelta(days=1)] = 999.0            # yesterday: not the same hour of the week
    assert same_hour_history(series, MONDAY_9, weeks=3) == [1.0, 2.0, 3.0]


def test_a_normal_monday_peak_is_not_flagged_and_a_sunday_drop_of_60_percent_is():
    monday = {"web-chat": history_rows("web-chat", until=MONDAY_9)}
    peak = monday["web-chat"][MONDAY_9]["records"]
    assert peak > 2 * weekly_volume(MONDAY_9 - dt.timedelta(days=3))   # far above a Friday at 9
    assert volume_conditions(monday, now=MONDAY_9 + dt.timedelta(hours=1, minutes=5)) == []

    sunday = {"web-chat": history_rows("web-chat", until=SUNDAY_15)}
    usual = robust_baseline(same_hour_history({h: r["records"] for h, r in sunday["web-chat"].items()}, SUNDAY_15,
                                              weeks=8)).median
    sunday["web-chat"][SUNDAY_15]["records"] = int(usual * 0.4)
    (condition,) = volume_conditions(sunday, now=SUNDAY_15 + dt.timedelta(hours=1, minutes=59))
    assert condition.rule == "volume_anomaly" and condition.key == "volume_anomaly:web-chat"
    assert condition.runbook == "volume-anomaly" and condition.severity == Severity.WARNING
    assert "volume down 60%" in condition.summary and condition.details["change"] < -0.59
    assert condition.link == "/quality/scorecards/source/web-chat/"


def test_a_source_silent_for_the_whole_hour_is_a_drop_when_others_sent():
    rows = {"web-chat": history_rows("web-chat", until=SUNDAY_15), "ios-app": history_rows("ios-app", until=SUNDAY_15)}
    del rows["web-chat"][SUNDAY_15]
    later = SUNDAY_15 + dt.timedelta(hours=1, minutes=10)
    assert [c.subject for c in volume_conditions(rows, now=later)] == ["web-chat"]
    # with no row at all for that hour (the pipeline itself was down) there is nothing to compare
    del rows["ios-app"][SUNDAY_15]
    assert volume_conditions(rows, now=SUNDAY_15 + dt.timedelta(hours=1, minutes=10)) == []


def test_too_little_history_or_too_few_events_gives_no_verdict():
    assert volume_verdict(10, [100, 100]) is None                      # two weeks only
    assert volume_verdict(1, [8, 9, 10, 11]) is None                   # a handful of events an hour
    assert rate_jump_verdict(3, 10, [0.0, 0.0]) is None


def test_the_current_partial_hour_is_not_judged():
    assert evaluated_hour(dt.datetime(2026, 11, 29, 15, 59, tzinfo=dt.UTC)) == dt.datetime(2026, 11, 29, 14,
                                                                                          tzinfo=dt.UTC)


def test_a_quarantine_rate_jump_is_flagged_and_the_usual_rate_is_not():
    rows = {"web-chat": history_rows("web-chat", until=MONDAY_9)}
    assert quarantine_rate_conditions(rows, now=MONDAY_9 + dt.timedelta(hours=1)) == []
    current = rows["web-chat"][MONDAY_9]
    current["quarantined"] = int(current["records"] * 0.03)
    (condition,) = quarantine_rate_conditions(rows, now=MONDAY_9 + dt.timedelta(hours=1))
    assert condition.rule == "quarantine_rate_jump" and condition.runbook == "quarantine-rate"
    assert condition.severity == Severity.WARNING and condition.details["records"] == current["records"]
    assert "3.0% of records quarantined" in condition.summary
    # at or over the red limit it is the over-limit rule's (alerted within a check cycle): no second, late alert
    current["quarantined"] = int(current["records"] * 0.08)
    assert quarantine_rate_conditions(rows, now=MONDAY_9 + dt.timedelta(hours=1), limit=0.05) == []


def test_a_small_rate_rise_within_noise_is_not_a_jump():
    history = [0.002, 0.003, 0.001, 0.002, 0.002]
    assert not rate_jump_verdict(2, 100, history).anomalous           # 2% of 100 records: 2 records
    assert rate_jump_verdict(30, 1000, history).anomalous             # 3% of 1000


def test_latency_doubles_and_exceeds_a_floor_before_it_is_anomalous():
    assert hour_latency_ms({"max_lag_ms": 1500}) == 1500.0 and hour_latency_ms({}) is None
    assert not latency_verdict(2_000, [800, 900, 850]).anomalous      # doubled but only 2 s
    assert latency_verdict(30_000, [800, 900, 850]).anomalous
    assert not latency_verdict(1_000, [800, 900, 850]).anomalous


def test_the_stream_latency_of_the_hour_is_judged_against_the_same_hour_of_past_weeks():
    from quality.anomaly_rules import latency_hour_verdict
    from quality.scorecards import SubjectFacts, platform_grade

    stream = {MONDAY_9 - dt.timedelta(weeks=k): {"max_lag_ms": 900 + 10 * k} for k in range(1, 6)}
    stream[MONDAY_9] = {"max_lag_ms": 45_000}
    verdict = latency_hour_verdict({"": stream}, now=MONDAY_9 + dt.timedelta(hours=1, minutes=2), weeks=8)
    assert verdict.anomalous and verdict.metric == "latency_ms"
    grade = platform_grade(SubjectFacts(name="platform", window_start=MONDAY_9, window_end=MONDAY_9, records=10,
                                        anomalies=(verdict.as_dict(),)), now=MONDAY_9)
    assert grade.level == "amber" and "latency 45.0 s in the last hour" in grade.reasons[0].summary
    stream[MONDAY_9] = {"max_lag_ms": 950}
    assert not latency_hour_verdict({"": stream}, now=MONDAY_9 + dt.timedelta(hours=1), weeks=8).anomalous
