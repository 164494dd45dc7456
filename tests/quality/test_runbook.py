"""docs/runbook.md has a section for every alert, names only commands and portal pages that exist, and every
alert links to a section that is there."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.core.management import get_commands
from django.urls import Resolver404, resolve

from quality.alert_selectors import RUNBOOK_PATH, heading_anchor

ANCHORS = {"shard-lag", "e2e-latency", "parked-shard", "freshness", "quarantine-rate", "volume-anomaly",
           "failing-check", "model-run-failed", "deletion-sla"}
TEXT = RUNBOOK_PATH.read_text(encoding="utf-8")


def runbook_anchors() -> set[str]:
    return {heading_anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+)$", TEXT, re.MULTILINE)}


def test_every_alert_has_its_section():
    assert ANCHORS <= runbook_anchors()
    for anchor in re.findall(r"\]\(#([\w-]+)\)", TEXT):  # links inside the runbook land on a section
        assert anchor in runbook_anchors()


def test_every_command_it_names_is_a_real_command():
    named = set(re.findall(r"manage\.py\s+([a-z][a-z0-9_]*)", TEXT))
    assert {"shard_unpark", "pipeline_drain", "models_run", "quality_run"} <= named
    missing = named - set(get_commands())
    assert not missing, f"the runbook names commands that do not exist: {sorted(missing)}"


def test_every_portal_path_it_names_resolves():
    paths = set(re.findall(r"\]\((/[^)#\s]*)", TEXT)) | set(re.findall(r"`(/[a-z][^`\s]*)`", TEXT))
    assert {"/pipeline/", "/quarantine/", "/quality/alerts/", "/healthz"} <= paths
    unresolved = []
    for path in sorted(paths):
        try:
            resolve(path.split("?")[0])
        except Resolver404:
            unresolved.append(path)
    assert not unresolved, f"the runbook names pages that do not exist: {unresolved}"


def test_the_rules_link_to_sections_that_exist():
    from quality import alert_rules

    now = dt.datetime(2026, 12, 4, 12, tzinfo=dt.UTC)
    old = now - dt.timedelta(hours=1)
    shard = {"shard_id": "s1", "lag_current": False, "millis_behind_latest": 5, "last_batch_at": old,
             "created_at": old, "parked_at": old, "park_reason": "warehouse down", "state": "parked"}
    conditions = [
        *alert_rules.shard_lag_conditions([{**shard, "parked_at": None, "state": "lease expired"}], now=now,
                                          target_ms=60_000),
        *alert_rules.parked_shard_conditions([shard]),
        *alert_rules.e2e_latency_conditions(90_000, target_ms=60_000, window_minutes=5),
        *alert_rules.canonical_freshness_conditions(newest=old, accepted=[(old, old + dt.timedelta(minutes=1))],
                                                    now=now, target_minutes=3),
        *alert_rules.failing_check_conditions([{"table": "CANONICAL.EVENTS", "outcome": "failed",
                                                "check_type": "schema", "check_key": "schema::",
                                                "check_name": "schema", "run_error": ""}]),
        *alert_rules.model_run_failed_conditions([{"models": [{"model": "user_feedback", "status": "failed",
                                                               "error": "boom", "started_at": old, "run_id": "r"}]}]),
    ]
    assert {c.rule for c in conditions} == {"shard_lag", "parked_shard", "e2e_latency", "freshness", "failing_check",
                                            "model_run_failed"}
    assert {c.runbook for c in conditions} <= runbook_anchors()
    for c in conditions:
        resolve(c.link)


@pytest.mark.django_db
def test_the_portal_shows_the_runbook_with_its_anchors(client, engineer):
    client.force_login(engineer)
    response = client.get("/quality/runbook/")
    assert response.status_code == 200
    html = response.content.decode()
    for anchor in ANCHORS:
        assert f'id="{anchor}"' in html
    assert "manage.py shard_unpark" in html


@pytest.mark.django_db
def test_readers_who_are_not_engineers_see_no_links_to_pages_they_may_not_open(client, privacy_user):
    client.force_login(privacy_user)
    html = client.get("/quality/runbook/").content.decode()
    assert 'href="/quarantine/"' not in html and "Quarantine page" in html
    assert 'href="#shard-lag"' in html  # links inside the runbook stay
