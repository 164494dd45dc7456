"""The latency percentiles read from bucket counts (pure) and the in-memory counts behind every per-minute
table (folding, flushing, a database that refuses)."""

from __future__ import annotations

import math

import pytest
from django.db import DatabaseError

from ingest_workers.latency import BUCKET_LABELS, BUCKETS_S, bucket_label, latency_quantile
from ingest_workers.minute_counts import MinuteCounts, minute_of


def test_bucket_labels_are_the_bounds_as_stored():
    assert bucket_label(5) == "5" and bucket_label(0.5) == "0.5" and bucket_label(math.inf) == "+Inf"
    assert BUCKET_LABELS[-1] == "+Inf" and len(BUCKET_LABELS) == len(BUCKETS_S)


def test_quantiles_interpolate_within_the_bucket_the_rank_falls_in():
    counts = {"1": 50, "2": 40, "5": 9, "60": 1}
    assert latency_quantile(counts, 0.5) == pytest.approx(1.0)       # the 50th of 100 is the last under 1 s
    assert latency_quantile(counts, 0.9) == pytest.approx(2.0)
    assert latency_quantile(counts, 0.99) == pytest.approx(5.0)
    assert latency_quantile(counts, 1.0) == pytest.approx(60.0)
    assert latency_quantile({"10": 4}, 0.5) == pytest.approx(7.5)    # halfway through (5, 10]


def test_a_rank_in_the_unbounded_bucket_reads_as_the_largest_bound():
    assert latency_quantile({"1": 1, "+Inf": 99}, 0.99) == 3600


def test_no_copies_no_quantile_and_a_bad_quantile_is_refused():
    assert latency_quantile({}, 0.5) is None
    with pytest.raises(ValueError, match="quantile"):
        latency_quantile({"1": 1}, 0)


def test_counts_fold_by_position_and_flush_once():
    written = []
    counts = MinuteCounts(name="t", folds=("sum", "max", "last"), write=written.append, flush_seconds=3600)
    counts.add([(("m", "a"), [1, 5, "x"]), (("m", "a"), [2, 3, "y"]), (("m", "b"), [1, None, "z"])])
    counts.add([(("m", "b"), [1, 7, None])])
    assert written == []  # not due yet: a dictionary update, no write
    assert counts.flush() == 2
    assert sorted(written[0]) == [(("m", "a"), [3, 5, "y"]), (("m", "b"), [2, 7, "z"])]
    assert counts.flush() == 0 and len(written) == 1


def test_a_due_buffer_flushes_on_the_next_add():
    written = []
    counts = MinuteCounts(name="t", folds=("sum",), write=written.append, flush_seconds=0)
    counts.add([("k", [1])])
    assert written == [[("k", [1])]] and counts.pending == {}


def test_a_database_that_refuses_drops_the_counts_and_says_so(caplog):
    def refuse(rows):
        raise DatabaseError("down")

    counts = MinuteCounts(name="refused counts", folds=("sum",), write=refuse, flush_seconds=3600)
    counts.add([("k", [1])])
    assert counts.flush() == 0 and counts.pending == {}
    assert "refused counts: could not write 1 rows; dropped" in caplog.text


def test_minutes_start_on_the_minute():
    assert minute_of(125.9) == 120 and minute_of(120) == 120


def test_the_pipeline_trends_draw_latency_p50_p99_late_and_duplicates_per_minute():
    import datetime as dt

    from ingest_workers.pipeline_trends import minute_series

    now = dt.datetime(2026, 12, 4, 10, 30, 20, tzinfo=dt.UTC)
    before = now.replace(minute=29, second=0)
    metrics = [{"minute": before, "metric": "latency", "label": "2", "value": 98},
               {"minute": before, "metric": "latency", "label": "60", "value": 2},
               {"minute": before, "metric": "late", "label": "", "value": 4},
               {"minute": before, "metric": "duplicates", "label": "", "value": 1},
               {"minute": before, "metric": "merge_duplicates", "label": "", "value": 2},
               {"minute": before - dt.timedelta(hours=1), "metric": "late", "label": "", "value": 99}]
    series = minute_series([], [], now=now, minutes=3, metrics=metrics)
    assert series["latency_p50_s"] == [None, 1.5, None]   # halfway through the (1, 2] bucket
    assert series["latency_p99_s"] == [None, 52.5, None]  # the 99th of 100: the first of 2 in (45, 60]
    assert series["late"] == [0, 4, 0] and series["duplicates"] == [0, 3, 0]


def test_loading_the_apps_and_urls_does_not_import_prometheus_client():
    # prometheus_client picks single- or multiprocess mode when first imported, and run_embedded sets
    # PROMETHEUS_MULTIPROC_DIR after the apps and URLs have loaded: an import from an app's ready() put the portal
    # in single-process mode and its collectors' counts vanished from /metrics (the deletion app's gauge did)
    import subprocess
    import sys

    code = ("import os, sys; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'portal.settings'); import django; "
            "django.setup(); from django.urls import get_resolver; get_resolver().url_patterns; "
            "print('prometheus_client' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
