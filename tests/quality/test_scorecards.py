"""Grading on literal facts (pure: no database): what lowers a grade, by how much, and since when."""

from __future__ import annotations

import datetime as dt

from quality.scorecards import (
    CheckFact,
    QuarantineFact,
    Reason,
    SubjectFacts,
    Thresholds,
    VolumeRecent,
    contract_grade,
    grade_from,
    platform_grade,
    reasons_since,
    source_grade,
)

NOW = dt.datetime(2026, 12, 4, 10, 0, tzinfo=dt.UTC)
START = NOW - dt.timedelta(minutes=5)


def facts(**kw) -> SubjectFacts:
    return SubjectFacts(name=kw.pop("name", "web-chat"), window_start=START, window_end=NOW, **kw)


def failed_check(outcome="failed", **kw) -> CheckFact:
    return CheckFact(table="CANONICAL.EVENTS", check_key="invalid:PLATFORM:", check_name="PLATFORM valid values",
                     outcome=outcome, measured=3.0, threshold="must be 0", checked_at=NOW, result_id=7,
                     column="PLATFORM", **kw)


def test_a_clean_source_is_green_100_and_one_without_data_is_unknown():
    assert source_grade(facts(records=500, last_seen_at=NOW), now=NOW) == grade_from([])
    assert source_grade(facts(records=500), now=NOW).level == "green"
    assert source_grade(facts(), now=NOW).level == "unknown"


def test_quarantine_names_each_reason_and_path_and_the_rate_sets_the_severity():
    v2 = "web-chat.chat_event v2"
    q = (QuarantineFact("schema_violation", "/message/text", 40, START + dt.timedelta(seconds=30), v2),
         QuarantineFact("mapping_failure", "/timestamp", 2, START, v2))
    grade = source_grade(facts(records=100, quarantined=42, quarantine=q), now=NOW)
    assert grade.level == "red" and grade.score == 20
    assert [r.details["path"] for r in grade.reasons] == ["/message/text", "/timestamp"]
    first = grade.reasons[0]
    assert first.key == "quarantine:schema_violation:/message/text" and first.since == START + dt.timedelta(seconds=30)
    assert f"40 of 100 records quarantined for schema_violation at /message/text ({v2})" in first.summary

    amber = source_grade(facts(records=1000, quarantined=20, quarantine=q[:1]), now=NOW)
    assert amber.level == "amber" and amber.score == 85
    assert source_grade(facts(records=1000, quarantined=5, quarantine=q[:1]), now=NOW).level == "green"  # 0.5%
    stricter = Thresholds(quarantine_amber=0.001, quarantine_red=0.004)
    strict = source_grade(facts(records=1000, quarantined=5, quarantine=q[:1]), now=NOW, thresholds=stricter)
    assert strict.level == "red"


def test_failed_checks_on_the_sources_rows_lower_it_and_check_errors_only_the_platform():
    grade = source_grade(facts(records=10, checks=(failed_check(),)), now=NOW)
    assert grade.level == "red" and grade.reasons[0].code == "check_failed"
    assert grade.reasons[0].details["measured"] == 3.0 and grade.reasons[0].details["threshold"] == "must be 0"
    assert "PLATFORM valid values on CANONICAL.EVENTS failed: measured 3 (must be 0)" in grade.reasons[0].summary
    assert source_grade(facts(records=10, checks=(failed_check("warned"),)), now=NOW).level == "amber"

    broken = failed_check("error", error="Table ANALYTICS.USER_FEEDBACK does not exist.")
    assert source_grade(facts(records=10, checks=(broken,)), now=NOW).level == "green"
    platform = platform_grade(facts(name="platform", records=10, checks=(broken,)), now=NOW)
    assert platform.level == "amber" and "could not run" in platform.reasons[0].summary


def test_contract_grade_reads_its_own_checks_and_quarantine():
    q = (QuarantineFact("schema_violation", "/sentAt", 3, START, "web-chat.chat_event v2"),)
    grade = contract_grade(facts(name="web-chat.chat_event v2", records=3, quarantined=3, quarantine=q), now=NOW)
    assert grade.level == "red" and grade.reasons[0].details["contract"] == "web-chat.chat_event v2"


def test_platform_lag_and_overall_quarantine():
    assert platform_grade(facts(name="platform", records=100, lag_s=30), now=NOW).level == "green"
    amber = platform_grade(facts(name="platform", records=100, lag_s=90), now=NOW)
    assert amber.level == "amber" and "90 s behind" in amber.reasons[0].summary
    assert platform_grade(facts(name="platform", records=100, lag_s=400), now=NOW).level == "red"
    assert platform_grade(facts(name="platform", records=100, quarantined=10), now=NOW).level == "red"


def test_a_source_silent_after_sending_today_is_amber():
    quiet = source_grade(facts(last_seen_at=NOW - dt.timedelta(minutes=40)), now=NOW)
    assert quiet.level == "amber" and quiet.reasons[0].code == "silent" and "40 minutes" in quiet.reasons[0].summary
    assert quiet.reasons[0].since == NOW - dt.timedelta(minutes=40)
    assert source_grade(facts(records=3, last_seen_at=NOW - dt.timedelta(minutes=2)), now=NOW).level == "green"


def test_anomalies_are_warnings():
    verdict = {"metric": "volume", "value": 140.0, "median": 350.0, "spread": 20.0, "weeks": 8, "score": -10.5,
               "change": -0.6, "anomalous": True}
    grade = source_grade(facts(records=140, anomalies=(verdict,)), now=NOW)
    assert grade.level == "amber" and "-60% against a usual 350" in grade.reasons[0].summary
    assert source_grade(facts(records=140, anomalies=({**verdict, "anomalous": False},)), now=NOW).level == "green"


def test_since_carries_over_for_the_same_key_and_starts_now_for_a_new_one():
    earlier = NOW - dt.timedelta(hours=3)
    reasons = [Reason("silent", "silent", "warning", "quiet"), Reason("lag", "shard_lag", "warning", "behind"),
               Reason("q", "quarantine_rate", "critical", "q", since=START)]
    out = {r.key: r.since for r in reasons_since(reasons, {"silent": earlier, "gone": earlier}, NOW)}
    assert out == {"silent": earlier, "lag": NOW, "q": START}


def test_worst_reason_first_and_the_score_never_below_zero():
    many = [Reason(f"w{i}", "x", "warning", "w") for i in range(3)] + [
        Reason(f"c{i}", "x", "critical", "c") for i in range(3)]
    grade = grade_from(many)
    assert grade.score == 0 and [r.severity for r in grade.reasons][:3] == ["critical"] * 3


def test_a_drop_of_the_last_minutes_volume_against_the_hour_before_is_amber_without_any_history():
    dropped = VolumeRecent(per_minute=4.0, before_per_minute=20.0, minutes=5, before_minutes=12)
    grade = source_grade(facts(records=20, last_seen_at=NOW, volume_recent=dropped), now=NOW)
    (reason,) = grade.reasons
    assert grade.level == "amber" and reason.code == "volume_drop" and reason.details["change"] == -0.8
    assert reason.summary == "volume down 80%: 4.0 records/min in the last 5 min against 20.0/min in the 12 min before"
    # a usual wobble, a trickle, or a weekly verdict already speaking: no drop reason
    wobble = VolumeRecent(per_minute=14.0, before_per_minute=20.0, minutes=5, before_minutes=12)
    trickle = VolumeRecent(per_minute=0.2, before_per_minute=0.6, minutes=5, before_minutes=12)
    assert source_grade(facts(records=20, last_seen_at=NOW, volume_recent=wobble), now=NOW).level == "green"
    assert source_grade(facts(records=20, last_seen_at=NOW, volume_recent=trickle), now=NOW).level == "green"
    weekly = {"metric": "volume", "anomalous": True, "value": 400.0, "median": 2000.0, "change": -0.8}
    (only,) = source_grade(facts(records=20, last_seen_at=NOW, volume_recent=dropped, anomalies=(weekly,)),
                           now=NOW).reasons
    assert only.code == "volume_anomaly"
    # silent for long: the silence says it, not a second reason
    silent = source_grade(facts(last_seen_at=NOW - dt.timedelta(minutes=30),
                                volume_recent=VolumeRecent(0.0, 20.0, 5, 12)), now=NOW)
    assert [r.code for r in silent.reasons] == ["silent"]
