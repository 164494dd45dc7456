"""The demo's broken source: `generate_traffic --break-source` makes one source send a field with the wrong
type (quarantined by the real pipeline, naming the field), then drop its volume, then recover; `make run`
(run_embedded) turns it on for one demo source unless told not to. Pure: the clock is passed in."""

from __future__ import annotations

import pytest
from django.core.management.base import CommandError

from ingest_workers.management.commands.generate_traffic import break_plan_from
from ingest_workers.traffic import BreakPlan, TrafficGenerator, wrong_type_path
from portal.management.commands.run_embedded import DEMO_BREAK_SOURCE, traffic_argv
from tests.ingest_workers.test_traffic import NOW, SEED, TEMPLATES, run_pipeline

SECOND = 1_000_000
PLAN = BreakPlan("ios-app", after_s=120, drop_after_s=60, volume_fraction=0.1, fix_after_s=600)


def test_the_plan_breaks_then_drops_then_recovers():
    assert [PLAN.phase(s) for s in (0, 119.9, 120, 179.9, 180, 719.9, 720, 10_000)] == [
        "normal", "normal", "wrong_type", "wrong_type", "dropped", "dropped", "fixed", "fixed"]
    never_fixed = BreakPlan("ios-app", after_s=0, fix_after_s=None)
    assert never_fixed.phase(10**9) == "dropped"
    with pytest.raises(ValueError, match="volume_fraction"):
        BreakPlan("ios-app", after_s=0, volume_fraction=1.5)


def batches(generator: TrafficGenerator, seconds: list[float], count: int = 800) -> dict[float, list]:
    """What the generator sends in a batch at each of ``seconds`` after its first batch."""
    return {s: list(generator.records(count, now_micros=NOW + int(s * SECOND))) for s in seconds}


def test_a_broken_source_sends_a_wrong_typed_field_that_the_pipeline_quarantines_naming_it():
    generator = TrafficGenerator(TEMPLATES, seed=SEED, break_plan=PLAN)
    sent = batches(generator, [0, 130, 200, 800])
    ios = {s: [r for r in records if r.source == "ios-app"] for s, records in sent.items()}
    assert ios[0] and all(r.kind != "broken" for r in ios[0])
    # every record it makes now is broken (a re-send of one of its earlier events may still come along)
    assert ios[130] and {r.kind for r in ios[130]} == {"broken", "duplicate"}
    assert all(r.kind != "broken" for s in sent for r in sent[s] if r.source != "ios-app")

    (template,) = [t for t in TEMPLATES if t.source == "ios-app"]
    path = wrong_type_path(template)
    broken = [r for r in ios[130] if r.kind == "broken"]
    results = run_pipeline(broken)
    quarantined = [q for result in results for q in result.quarantine]
    assert len(quarantined) == len(broken) and sum(len(r.events) for r in results) == 0
    assert {q.error_path for q in quarantined} == {"/" + path.replace(".", "/")}
    # the others keep flowing: only the broken source's events are refused
    others = [r for r in sent[130] if r.source != "ios-app" and r.kind == "new"]
    assert [q for result in run_pipeline(others) for q in result.quarantine] == []


def test_its_volume_drops_and_comes_back_when_fixed():
    generator = TrafficGenerator(TEMPLATES, seed=SEED, break_plan=PLAN)
    sent = batches(generator, [0, 130, 200, 800], count=4000)
    # the generator rotates over the templates: ios-app's turns in a batch
    slots = sum(1 for i in range(4000) if TEMPLATES[i % len(TEMPLATES)].source == "ios-app")
    made = {s: sum(1 for r in records if r.source == "ios-app" and r.kind != "duplicate")
            for s, records in sent.items()}
    assert made[0] > 0.9 * slots           # normal (a few of its turns are re-sends of any source's events)
    assert made[130] == slots              # broken: every turn, the same volume
    assert 0 < made[200] < 0.2 * slots     # dropped to about a tenth (0.1)
    assert made[800] > 0.9 * slots         # fixed: back to its volume ...
    fixed = [r for r in sent[800] if r.source == "ios-app"]
    assert "broken" not in {r.kind for r in fixed}           # ... and valid again
    assert [q.reason_code for result in run_pipeline([r for r in fixed if r.kind == "new"])
            for q in result.quarantine] == []


def test_only_a_generated_source_can_be_broken():
    with pytest.raises(ValueError, match="cannot break 'fax-app'"):
        TrafficGenerator(TEMPLATES, break_plan=BreakPlan("fax-app", after_s=0))
    assert TrafficGenerator(TEMPLATES).break_phase(NOW) == "normal"


def options(**overrides) -> dict:
    return {"break_source": "ios-app", "break_after": 180.0, "break_drop_after": 60.0, "break_volume": 0.1,
            "break_fix_after": 600.0, **overrides}


def test_the_command_line_switch():
    assert break_plan_from(options(break_source=None)) is None
    assert break_plan_from(options()) == BreakPlan("ios-app", 180.0, 60.0, 0.1, 600.0)
    assert break_plan_from(options(break_fix_after=0)).fix_after_s is None   # 0: never fixed
    with pytest.raises(CommandError, match="--break-volume must be between 0 and 1"):
        break_plan_from(options(break_volume=2))
    with pytest.raises(CommandError, match="must be >= 0"):
        break_plan_from(options(break_after=-1))


def test_make_run_breaks_one_demo_source_unless_told_not_to():
    manage = ["python", "manage.py"]
    argv = traffic_argv(manage, "127.0.0.1:8000", rate=40, break_source=DEMO_BREAK_SOURCE, break_after=300,
                        break_fix_after=600)
    assert argv[argv.index("--break-source") + 1] == "ios-app"
    assert argv[argv.index("--break-after") + 1] == "300" and argv[argv.index("--break-fix-after") + 1] == "600"
    assert "--break-source" not in traffic_argv(manage, "127.0.0.1:8000", rate=40, break_source=None,
                                                break_after=300, break_fix_after=600)


def test_make_run_refuses_an_unknown_break_source():
    from django.core.management import call_command

    with pytest.raises(CommandError, match="--demo-break-source 'fax-app' is not a demo source"):
        call_command("run_embedded", "--demo-break-source", "fax-app", "--portal-only")
