"""The Pipeline page's trends from per-minute samples (pure: literal rows, a fixed clock)."""

from __future__ import annotations

import datetime as dt

from ingest_workers.pipeline_trends import minute_series, source_breakdown

NOW = dt.datetime(2026, 12, 4, 10, 30, 15, tzinfo=dt.UTC)   # 15 s into 10:30


def at(hh_mm: str) -> dt.datetime:
    hour, minute = map(int, hh_mm.split(":"))
    return NOW.replace(hour=hour, minute=minute, second=0)


def test_rates_are_per_second_and_the_running_minute_counts_only_its_seconds():
    samples = [
        {"minute": at("10:28"), "source": "web-chat", "events": 600, "merged": 0, "max_lag_ms": None},
        {"minute": at("10:28"), "source": "ios-app", "events": 120, "merged": 0, "max_lag_ms": None},
        {"minute": at("10:28"), "source": "", "events": 0, "merged": 660, "max_lag_ms": 1500},
        {"minute": at("10:30"), "source": "web-chat", "events": 150, "merged": 0, "max_lag_ms": None},
        {"minute": at("10:30"), "source": "", "events": 0, "merged": 30, "max_lag_ms": 200},
        {"minute": at("09:00"), "source": "web-chat", "events": 9999, "merged": 0, "max_lag_ms": 9},  # too old
    ]
    accepted = [{"minute": at("10:28"), "events": 750}, {"minute": at("10:30"), "events": 165}]
    s = minute_series(samples, accepted, now=NOW, minutes=3)
    assert s["labels"] == ["10:28", "10:29", "10:30"]
    assert s["landed"] == [12.0, 0.0, 10.0]        # 720/60; nothing; 150 in the 15 s so far
    assert s["accepted"] == [12.5, 0.0, 11.0]
    assert s["merged"] == [11.0, 0.0, 2.0]
    assert s["lag_s"] == [1.5, None, 0.2]          # a minute without a read has no lag, not 0


def test_the_source_breakdown_puts_collector_answers_beside_what_the_readers_made_of_them():
    samples = [
        {"source": "web-chat", "records": 100, "events": 130, "quarantined": 2},
        {"source": "web-chat", "records": 50, "events": 60, "quarantined": 0},
        {"source": "(none)", "records": 3, "events": 0, "quarantined": 3},
        {"source": "", "records": 0, "events": 0, "quarantined": 0},          # the stream-wide row
    ]
    answers = [
        {"source": "web-chat", "code": "accepted", "requests": 10, "events": 152},
        {"source": "android-app", "code": "rotated_write_key", "requests": 40, "events": 0},
        {"source": "android-app", "code": "accepted", "requests": 1, "events": 5},
    ]
    rows = {h.source: h for h in source_breakdown(samples, answers, accepted_code="accepted")}
    assert list(rows) == ["web-chat", "android-app", "(none)"]
    web = rows["web-chat"]
    assert (web.accepted, web.refused, web.records, web.events, web.quarantined) == (152, 0, 150, 190, 2)
    android = rows["android-app"]
    assert (android.accepted, android.refused, android.records) == (5, 40, 0)
    assert rows["(none)"].quarantined == 3
