"""A team's checks, once approved with their contract version, are part of the generated Soda contract of
CANONICAL.EVENTS (named in its header) and run for real on the embedded warehouse: they fail on that
version's rows that break them, and never judge another source's or another version's rows."""

from __future__ import annotations

import orjson
import pytest

from quality.selectors import contract_generated
from quality.services import quality_run
from tests.quality.conftest import clean_events, load

pytestmark = pytest.mark.django_db

TEAM_CHECKS = """\
checks:
  - missing:
      column: CONVERSATION_ID
      name: Every chat event belongs to a conversation
  - invalid:
      attribute: role
      event_type: message.sent
      valid_values: [user, assistant]
  - failed_rows:
      name: Answers come within 4 seconds
      expression: ATTRIBUTES:latency_ms::NUMBER > 4000
"""
MISSING_KEY = "missing:CONVERSATION_ID:team_web_chat_chat_event_v2_1"
ROLE_KEY = "failed_rows::team_web_chat_chat_event_v2_2"
LATENCY_KEY = "failed_rows::team_web_chat_chat_event_v2_3"


@pytest.fixture
def chat_v2_with_checks(chat_v1, platform_user, second_engineer):
    from contracts.services import contract_version_approve, contract_version_submit

    version, created = contract_version_submit(
        actor=platform_user, contract=chat_v1.contract, schema=orjson.loads(chat_v1.schema.schema),
        mapping_spec=chat_v1.mapping, samples=chat_v1.sample_payloads, team_checks=TEAM_CHECKS)
    assert created and version.version == 2 and version.status == "in_review"
    in_review = contract_generated("CANONICAL.EVENTS")
    assert "team_web_chat" not in in_review.yaml  # not judged before a data engineer approves them
    return contract_version_approve(actor=second_engineer, version=version)


def v2(event: dict, **overrides) -> dict:
    return {**event, "contract": {"name": "web-chat.chat_event", "version": 2}, **overrides}


def test_approved_team_checks_are_in_the_generated_contract(quality_db, chat_v2_with_checks):
    contract = contract_generated("CANONICAL.EVENTS")
    assert "#   - team checks of web-chat.chat_event v2 (3 checks)" in contract.yaml.splitlines()
    assert "team checks of web-chat.chat_event v2 (3 checks)" in contract.derived_from
    source_id = chat_v2_with_checks.contract.source_id
    scope = (f"SOURCE_ID = '{source_id}' AND CONTRACT:name::VARCHAR = 'web-chat.chat_event' "
             "AND CONTRACT:version::NUMBER = 2")
    (conversation,) = [c for c in contract.document["columns"] if c["name"] == "CONVERSATION_ID"]
    assert {"missing": {"name": "[web-chat.chat_event v2] Every chat event belongs to a conversation",
                        "qualifier": "team_web_chat_chat_event_v2_1", "filter": scope}} in conversation["checks"]
    expressions = {next(iter(c.values()))["qualifier"]: next(iter(c.values())).get("expression")
                   for c in contract.document["checks"] if "failed_rows" in c}
    assert expressions["team_web_chat_chat_event_v2_3"] == f"{scope} AND (ATTRIBUTES:latency_ms::NUMBER > 4000)"
    assert expressions["team_web_chat_chat_event_v2_2"].startswith(f"{scope} AND EVENT_TYPE = 'message.sent' AND (")


def test_team_checks_fail_on_their_own_rows_only_in_a_real_soda_run(quality_db, chat_v2_with_checks):
    from tests.warehouse.factories import canonical_event

    source_id = str(chat_v2_with_checks.contract.source_id)
    ours = [v2(e) for e in clean_events(source_id)]  # one of each template: the assistant answer took 4.4 s
    received = ours[0]["received_at"]
    no_conversation = v2(canonical_event("v2-no-conv", template=0, source_id=source_id, received_at=received),
                         conversation_id=None)
    robot = v2(canonical_event("v2-robot", template=2, source_id=source_id, received_at=received))
    robot["attributes"]["role"] = "robot"
    # the same defects in rows the checks must not judge: version 1 of this source, and another source
    v1_no_conversation = canonical_event("v1-no-conv", template=0, source_id=source_id, received_at=received,
                                         conversation_id=None)
    others = [v2(canonical_event(f"other-{i}", template=t, source_id="999999", received_at=received),
                 conversation_id=None) for i, t in enumerate((0, 2, 3))]
    others[1]["attributes"]["role"] = "robot"
    load(quality_db, [*ours, no_conversation, robot, v1_no_conversation, *others])

    (run,) = quality_run(tables=["CANONICAL.EVENTS"])
    results = {r.check_key: r for r in run.results.all()}
    assert {k: (results[k].outcome, results[k].measured_value) for k in (MISSING_KEY, ROLE_KEY, LATENCY_KEY)} == {
        MISSING_KEY: ("failed", 1.0), ROLE_KEY: ("failed", 1.0), LATENCY_KEY: ("failed", 1.0)}
    assert results[MISSING_KEY].check_name == "[web-chat.chat_event v2] Every chat event belongs to a conversation"
    assert [item["row"]["EVENT_ID"] for item in results[MISSING_KEY].sample] == ["v2-no-conv"]
    assert [item["row"]["EVENT_ID"] for item in results[ROLE_KEY].sample] == ["v2-robot"]
    assert "team checks of web-chat.chat_event v2 (3 checks)" in run.contract_versions


def test_team_checks_pass_when_their_rows_are_clean(quality_db, chat_v2_with_checks):
    source_id = str(chat_v2_with_checks.contract.source_id)
    events = [v2(e) for e in clean_events(source_id) if e["attributes"].get("latency_ms") is None]
    load(quality_db, events)
    (run,) = quality_run(tables=["CANONICAL.EVENTS"])
    outcomes = dict(run.results.filter(check_key__in=(MISSING_KEY, ROLE_KEY, LATENCY_KEY))
                    .values_list("check_key", "outcome"))
    assert outcomes == {MISSING_KEY: "passed", ROLE_KEY: "passed", LATENCY_KEY: "passed"}
