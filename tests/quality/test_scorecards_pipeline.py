"""Issue 11's scorecard test on the real parts: a source that starts sending a wrong-typed field turns its
scorecard red within one check cycle, with the failing field's path; fixing it turns it green.

Collectors (HTTP, write key) → moto's Kinesis → the shard consumer (``pipeline_drain``) → the embedded
warehouse (RAW.QUARANTINE, CANONICAL.EVENTS) → the scheduled check cycle (Soda checks, then the scorecards).
"""

from __future__ import annotations

import copy
import uuid

import orjson
import pytest
from django.urls import reverse

from quality.models import ScorecardSnapshot

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("collector_cache")]

BATCH = "/collect/v1/batch"


@pytest.fixture
def pipeline(settings, collector_sources, stream, warehouse_server, tmp_path, platform_user, engineer):
    """web-chat with its preset contracts approved, this test's own warehouse database and archive."""
    from contracts.presets import preset_load
    from contracts.services import preset_versions_load
    from ingest_workers import services

    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "database": f"S_{uuid.uuid4().hex[:12].upper()}"}
    settings.RAW_ARCHIVE_URL = f"file://{tmp_path}/archive"
    preset = preset_load("web-chat")
    preset_versions_load(actor=platform_user, reviewer=engineer, source=collector_sources["web"],
                         contracts=preset["contracts"])
    services.contract_index_current(force=True)
    return collector_sources


def web_message(i: int, text: object) -> dict:
    """web-chat's preset `message` sample (as the widget SDK sends it), a fresh id, ``text`` as message.text."""
    from contracts.presets import preset_load

    sample = copy.deepcopy(preset_load("web-chat")["contracts"][0]["versions"][-1]["samples"][1])
    sample["messageId"] = f"m-{uuid.uuid4().hex[:8]}-{i}"
    sample["message"]["text"] = text
    return sample


def send_and_drain(client, key: str, events: list[dict]) -> None:
    from ingest_workers import services

    response = client.post(BATCH, data=orjson.dumps(events), content_type="application/json",
                           headers={"Authorization": f"Bearer {key}"})
    assert response.status_code in (200, 202), response.content
    report = services.pipeline_drain()
    assert report.read == len(events)


def source_card(name: str) -> ScorecardSnapshot:
    return ScorecardSnapshot.objects.filter(kind="source", subject=name).order_by("-evaluated_at").first()


def test_a_wrong_typed_field_turns_the_source_red_with_its_path_and_a_fix_turns_it_green(client, pipeline, engineer):
    from quality.services import quality_run_scheduled, scorecards_evaluate

    key = pipeline["web_key"]
    send_and_drain(client, key, [web_message(i, f"hello {i}") for i in range(3)])
    scorecards_evaluate()
    assert source_card("web-chat").level == "green", source_card("web-chat").reasons

    # the source starts sending message.text as a number
    send_and_drain(client, key, [web_message(i, 7_340_001 + i) for i in range(4)])
    cycle = quality_run_scheduled()                       # one check cycle: Soda checks, then the scorecards
    assert cycle["scorecards"]["scorecards"] >= 3
    card = source_card("web-chat")
    assert card.level == "red" and card.score <= 60
    (reason,) = [r for r in card.reasons if r["code"] == "quarantine_rate"]
    assert reason["details"]["path"] == "/message/text" and reason["details"]["reason_code"] == "schema_violation"
    assert "/message/text" in reason["summary"] and reason["since"]
    assert card.facts["quarantined"] == 4 and card.facts["records"] == 4
    assert reason["details"]["contract"].startswith("web-chat.")

    # what a person sees: the scorecards page and the drill-down name the path
    client.force_login(engineer)
    page = client.get(reverse("quality_scorecards")).content.decode()
    assert "web-chat" in page and "/message/text" in page
    detail = client.get(reverse("quality_scorecard", args=["source", "web-chat"])).content.decode()
    assert "/message/text" in detail and "schema_violation" in detail
    assert "734000" not in detail                         # the payload's values stay in the (masked) quarantine

    # the source is fixed: the next cycle grades what came since the last one
    send_and_drain(client, key, [web_message(i, f"fixed {i}") for i in range(3)])
    scorecards_evaluate()
    card = source_card("web-chat")
    assert card.level == "green" and card.reasons == [] and card.facts["quarantined"] == 0
    history = ScorecardSnapshot.objects.filter(kind="source", subject="web-chat").order_by("evaluated_at")
    assert [s.level for s in history] == ["green", "red", "green"]


def test_reasons_keep_their_since_across_cycles(client, pipeline):
    from quality.services import scorecards_evaluate

    key = pipeline["web_key"]
    send_and_drain(client, key, [web_message(1, 7)])
    scorecards_evaluate()
    first = source_card("web-chat").reasons[0]
    send_and_drain(client, key, [web_message(2, 8)])
    scorecards_evaluate()
    again = source_card("web-chat").reasons[0]
    assert again["key"] == first["key"] and again["since"] == first["since"]
