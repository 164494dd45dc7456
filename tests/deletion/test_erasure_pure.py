"""The pure parts of erasure: which tables keep little Time Travel and which are transient (the DDL text),
what a subject matches (values, payload needles, defaults never), and how an expansion is built and held."""

from __future__ import annotations

import datetime as dt

from deletion.erasure_types import ErasureSubject, Identifier, IdentifierKind, email_sha256
from deletion.identity_expansion import HoldLimits, expansion_build
from deletion.warehouse_erasure import match_terms, placeholders
from warehouse.analytics_ddl import (
    CURATED_TABLES,
    EVENT_FACTS,
    IDENTITY_TABLES,
    MODEL_PRICES,
    MODEL_STATE,
    WORK_TABLES,
    analytics_ddl,
)
from warehouse.ddl import CANONICAL_EVENTS, LANDING_EVENTS, MERGE_LOG, QUARANTINE, table_ddl, warehouse_ddl

PERSONAL = (LANDING_EVENTS, QUARANTINE, CANONICAL_EVENTS, EVENT_FACTS, *IDENTITY_TABLES, *CURATED_TABLES)


def test_tables_with_personal_data_keep_at_most_one_day_of_time_travel_and_the_rebuildable_ones_are_transient():
    statements = {s.split("(")[0].split()[-1]: s for s in (*warehouse_ddl("DB"), *analytics_ddl("DB"))
                  if s.startswith("CREATE") and "TABLE" in s.split("(")[0]}
    for table in PERSONAL:
        ddl = statements[f"DB.{table.schema}.{table.name}"]
        days = int(ddl.split("DATA_RETENTION_TIME_IN_DAYS = ")[1].split()[0])
        assert days <= 1, table.name
    # rebuilt from CANONICAL.EVENTS by a full models run, or from the archive (landing): no Fail-safe
    for table in (LANDING_EVENTS, EVENT_FACTS, *IDENTITY_TABLES, *CURATED_TABLES, *WORK_TABLES):
        assert table_ddl(table, "DB").startswith("CREATE TRANSIENT TABLE"), table.name
    # scratch that can hold identifiers keeps no Time Travel at all
    assert all("DATA_RETENTION_TIME_IN_DAYS = 0" in table_ddl(t, "DB") for t in WORK_TABLES)
    # the events (rebuilt only by replaying the archive) and quarantine (its statuses) stay permanent
    for table in (CANONICAL_EVENTS, QUARANTINE):
        assert table_ddl(table, "DB").startswith("CREATE TABLE"), table.name
    # tables without personal data keep the account default
    for table in (MERGE_LOG, MODEL_PRICES, MODEL_STATE):
        assert "DATA_RETENTION_TIME_IN_DAYS" not in table_ddl(table, "DB")
    # the options come after the column list, where Snowflake takes them
    ddl = table_ddl(CANONICAL_EVENTS, "DB")
    assert ddl.index("CLUSTER BY") < ddl.index("DATA_RETENTION_TIME_IN_DAYS") < ddl.index("COMMENT =")


def test_a_subject_matches_its_values_by_kind_and_its_payload_needles_but_never_a_default_value():
    subject = ErasureSubject("DEL-1", (
        Identifier(IdentifierKind.EMAIL, "Ann@Example.com"),
        Identifier(IdentifierKind.EMAIL_SHA256, email_sha256("ann@example.com")),
        Identifier(IdentifierKind.PLATFORM_USER_ID, "T9:U42"),
        Identifier(IdentifierKind.DEVICE_ID, "0"),             # a default: identifies nobody
        Identifier(IdentifierKind.ANONYMOUS_ID, "a1"),
    ), ("p_1",))
    terms = match_terms(subject)
    assert terms.values["platform_user_id"] == ("T9:U42",) and terms.values["device_id"] == ()
    assert terms.values["email_sha256"] == (email_sha256("ann@example.com"),)
    assert terms.skipped_default_values == 1 and terms.person_ids == ("p_1",)
    needles = {parts: lower for parts, lower in terms.needles}
    assert needles[("ann@example.com",)] is True                 # an address in any letter case
    assert needles[('"a1"',)] is False                           # a short id only as a whole JSON string
    assert needles[('"T9"', '"U42"')] is False                    # Slack sends team and user apart
    assert email_sha256("ann@example.com") in {p[0] for p in needles}   # long values match inside free text
    assert "0" not in terms.binds()["device_id"]
    assert placeholders("SELECT 1 WHERE X IN %(device_id)s AND CONTAINS(Y, %(needle_0_0)s)") == \
        "SELECT 1 WHERE X IN :device_id AND CONTAINS(Y, :needle_0_0)"


T = dt.datetime(2026, 3, 1)


def test_an_expansion_lists_how_each_identifier_was_linked_and_holds_a_person_with_too_many_identifiers():
    sha = email_sha256("bo@example.com")
    ids = [
        {"id_key": f"email_sha256:{sha}", "person_id": "p_bo"},
        {"id_key": "platform_user_id:cust-bo", "person_id": "p_bo"},
        {"id_key": "anonymous_id:anon-bo", "person_id": "p_bo"},
    ]
    observations = [
        {"email_sha256": sha, "platform_user_id": "cust-bo", "rule": "identified", "first_seen_at": T,
         "first_event_id": "e_login"},
        {"anonymous_id": "anon-bo", "platform_user_id": "cust-bo", "rule": "co_occurrence",
         "first_seen_at": T + dt.timedelta(minutes=5), "first_event_id": "e_chat"},
    ]
    expansion = expansion_build(
        [Identifier(IdentifierKind.EMAIL, "Bo@Example.com")], identifier_rows=ids,
        person_rows=[{"person_id": "p_bo", "identifier_count": 3}], observation_rows=observations,
        observed_person_of={i["id_key"]: "p_bo" for i in ids},
        seen_on={"anonymous_id:anon-bo": (["web"], ["src-web"])}, limits=HoldLimits(person_identifiers=3))
    linked = {li.identifier.id_key: li for li in expansion.linked}
    assert linked[f"email_sha256:{sha}"].how == "given (as an e-mail address, matched by its SHA-256)"
    assert linked["email:Bo@Example.com"].given
    assert linked["platform_user_id:cust-bo"].how == "identified (user.identified event e_login)"
    assert linked["anonymous_id:anon-bo"].how == "co_occurrence on event e_chat"
    anon = linked["anonymous_id:anon-bo"]
    assert (anon.platforms, anon.sources) == (("web",), ("src-web",))
    assert expansion.held_reasons == ()
    held = expansion_build(
        [Identifier(IdentifierKind.EMAIL, "Bo@Example.com")], identifier_rows=ids,
        person_rows=[{"person_id": "p_bo", "identifier_count": 3}], observation_rows=observations,
        observed_person_of={}, seen_on={}, limits=HoldLimits(person_identifiers=2))
    assert held.held_reasons == ("person p_bo has 3 identifiers (more than 2): the graph may have joined several "
                                 "people",)
