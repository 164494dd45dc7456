"""The generated Soda contracts (pure: no warehouse, no database): what they check and what they derive from."""

from __future__ import annotations

import pytest
import yaml

from contracts.canonical_model import EVENT_TYPES, PLATFORMS
from quality.soda_contracts import (
    QUALITY_TABLES,
    ContractRef,
    GenerationSettings,
    check_key,
    quality_table,
    sample_sql,
    soda_contract,
    table_label,
)
from quality.soda_run import outcomes_from_results
from warehouse.analytics_ddl import USER_FEEDBACK
from warehouse.ddl import CANONICAL_EVENTS

WEB_V1 = ContractRef("web-chat.chat_event", 1, "approved", "7", "web-chat")


def generate(table=CANONICAL_EVENTS, refs=(WEB_V1,), **kw):
    return soda_contract(table, GenerationSettings(database="CHATORBIT", contract_versions=refs, **kw))


def column_checks(doc, name):
    column = next(c for c in doc["columns"] if c["name"] == name)
    return {k: v for check in column.get("checks", []) for k, v in check.items()}


def test_every_covered_table_gets_its_ddl_columns_and_types_checked():
    for table in QUALITY_TABLES:
        contract = generate(table)
        doc = yaml.safe_load(contract.yaml)
        assert doc["dataset"] == f"chatorbit_wh/CHATORBIT/{table.schema}/{table.name}"
        assert [c["name"] for c in doc["columns"]] == list(table.column_names)
        assert {"schema": None} in doc["checks"] and {"row_count": None} in doc["checks"]
        assert any("freshness" in c for c in doc["checks"]), table.name
    types = {c["name"]: c["data_type"] for c in generate().document["columns"]}
    assert types["EVENT_TIME"] == "TIMESTAMP_NTZ" and types["RAW_OFFSET"] == "NUMBER" and types["LINEAGE"] == "VARIANT"


def test_canonical_checks_come_from_the_model():
    doc = generate(canonical_freshness_minutes=3).document
    assert column_checks(doc, "EVENT_TYPE")["invalid"]["valid_values"] == list(EVENT_TYPES)
    assert column_checks(doc, "PLATFORM")["invalid"]["valid_values"] == list(PLATFORMS)
    assert "duplicate" in column_checks(doc, "EVENT_ID") and "missing" in column_checks(doc, "SOURCE_ID")
    freshness = next(c["freshness"] for c in doc["checks"] if "freshness" in c)
    assert freshness["column"] == "RECEIVED_AT" and freshness["threshold"] == {"unit": "minute", "must_be_less_than": 3}
    failed = {c["failed_rows"]["qualifier"]: c["failed_rows"] for c in doc["checks"] if "failed_rows" in c}
    assert "ATTRIBUTES:input_tokens::FLOAT < 0" in failed["message_sent_input_tokens_range"]["expression"]
    assert "'user', 'assistant', 'system', 'tool'" in failed["message_sent_role_valid"]["expression"]
    assert "< -1 OR" in failed["feedback_submitted_score_range"]["expression"]
    assert "NOT EXISTS" in failed["feedback_rates_existing_message"]["query"]
    assert "tool_call.started" in failed["tool_result_follows_call"]["query"]


def test_curated_checks_follow_the_table_shape():
    doc = generate(USER_FEEDBACK).document
    assert set(column_checks(doc, "FEEDBACK_EVENT_ID")) == {"missing", "duplicate"}
    assert column_checks(doc, "SCORE")["invalid"] == {"name": "SCORE is between -1 and 1", "valid_min": -1.0,
                                                      "valid_max": 1.0}
    assert column_checks(doc, "KIND")["invalid"]["valid_values"] == ["thumbs", "stars", "text"]
    roles = ["user", "assistant", "system", "tool"]
    assert column_checks(doc, "RATED_MESSAGE_ROLE")["invalid"]["valid_values"] == roles
    sessions = generate(quality_table("ANALYTICS.CONVERSATION_SESSIONS")).document
    assert column_checks(sessions, "COST_USD")["invalid"]["valid_min"] == 0
    assert "unknown" in column_checks(sessions, "PLATFORM")["invalid"]["valid_values"]
    daily = generate(quality_table("PLATFORM_ENGAGEMENT_DAILY")).document
    assert {"duplicate": {"name": "One row per DAY, PLATFORM, PRODUCT", "columns": ["DAY", "PLATFORM", "PRODUCT"]}} \
        in daily["checks"]


def test_the_yaml_records_and_follows_the_contract_versions():
    v1 = generate(refs=(WEB_V1,))
    v2 = generate(refs=(WEB_V1, ContractRef("web-chat.chat_event", 2, "approved", "7", "web-chat")))
    assert "#   - web-chat.chat_event v1 (approved)" in v1.yaml
    assert "web-chat.chat_event v2 (approved)" in v2.yaml and v1.fingerprint != v2.fingerprint
    approved = {c["failed_rows"]["qualifier"]: c["failed_rows"].get("expression") for c in v2.document["checks"]
                if "failed_rows" in c}["contract_version_approved"]
    assert "WHEN 'web-chat.chat_event' THEN 2" in approved
    assert column_checks(v2.document, "SOURCE_ID")["invalid"]["valid_values"] == ["7"]
    # the same inputs give the same text: a run's stored fingerprint says whether the contract changed since
    assert generate(refs=(WEB_V1,)).yaml == v1.yaml


def test_registry_values_are_quoted_in_sql():
    odd = ContractRef("it's.evil", 1, "approved", "x'y", "evil")
    contract = generate(refs=(odd,))
    assert "WHEN 'it''s.evil' THEN 1" in contract.yaml
    spec = contract.check(check_key("invalid", "SOURCE_ID"))
    assert "'x''y'" in spec.failing_condition


def test_unknown_table_is_refused_by_name():
    with pytest.raises(ValueError, match="CANONICAL.EVENTS"):
        quality_table("RAW.LANDING_EVENTS")
    assert table_label(quality_table("canonical.events")) == "CANONICAL.EVENTS"


def test_sample_sql_takes_a_few_rows_per_source():
    spec = generate().check(check_key("invalid", "PLATFORM"))
    sql = sample_sql(spec, qualified_name="DB.CANONICAL.EVENTS", has_source=True, per_source=5, limit=50)
    assert "PARTITION BY s.SOURCE_ID" in sql and "<= 5 LIMIT 50" in sql and "PLATFORM NOT IN" in sql
    assert sample_sql(generate().check(check_key("row_count")), qualified_name="x", has_source=True, per_source=1,
                      limit=1) is None


def test_a_check_soda_did_not_return_is_an_error_not_a_pass():
    contract = generate()
    outcomes = outcomes_from_results(contract, [], ["Catalog Error: Table EVENTS does not exist"])
    assert {o.outcome for o in outcomes} == {"error"}
    assert "does not exist" in outcomes[0].error
