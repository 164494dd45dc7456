"""Erasure from the warehouse, on the embedded warehouse with real data: a person seen on web, iOS and Slack,
stitched into one by the models run, is expanded from their e-mail address and erased from every table;
other people's rows stay; the aggregates go down by exactly the person's share (and equal a full rebuild);
every step is idempotent; a re-merge and a models run afterwards bring nothing back."""

from __future__ import annotations

import copy

import pytest

from deletion.erasure_types import ErasureSubject, Identifier, IdentifierKind, email_sha256
from deletion.identity_expansion import HoldLimits, expand_identifiers
from deletion.warehouse_erasure import warehouse_steps
from tests.warehouse.conftest import warehouse_conn, warehouse_database  # noqa: F401 - fixtures
from tests.warehouse.factories import HOUR, SECOND, T0, land_and_merge, quarantine_row
from tests.warehouse.test_models_runner import PRICES, event, reply
from warehouse.analytics_ddl import ANALYTICS_TABLES, WORK_TABLES
from warehouse.ddl import TABLES
from warehouse.load import warehouse_query
from warehouse.modeling.runner import models_run

ALICE_EMAIL = "Alice.Liddell@Example.com"
ALICE_SHA = email_sha256(ALICE_EMAIL)
ALICE_VALUES = ("anon-alice-0001", "cust-alice", "D-alice-iphone", "T1:UALICE", ALICE_SHA, "UALICE")
BOB = {"anonymous_id": "anon-bob-0002", "platform_user_id": "cust-bob"}


def alice_and_bob() -> list[dict]:
    web = {"anonymous_id": "anon-alice-0001"}
    ios = {"platform_user_id": "cust-alice", "device_id": "D-alice-iphone"}
    slack = {"platform_user_id": "T1:UALICE"}
    return [
        # Alice on the web: anonymous, then signs in (anonymous id + account + e-mail hash)
        event("aw1", "session.started", T0, "web-a", web, {}),
        event("aw2", "message.sent", T0 + 10 * SECOND, "web-a", web, {"role": "user"}, message_id="m-aw2"),
        reply("aw3", T0 + 12 * SECOND, "web-a", (1000, 100, 200)),
        event("aw4", "user.identified", T0 + 20 * SECOND, "web-a",
              {**web, "platform_user_id": "cust-alice", "email_sha256": ALICE_SHA}, {}),
        # Alice on iOS, the same account on her phone
        event("ai1", "session.started", T0 + 2 * HOUR, "ios-a", ios, {}, platform="ios"),
        event("ai2", "message.sent", T0 + 2 * HOUR + 5 * SECOND, "ios-a", ios, {"role": "user"}, platform="ios",
              message_id="m-ai2"),
        reply("ai3", T0 + 2 * HOUR + 9 * SECOND, "ios-a", (3000, 0, 500)),
        event("ai4", "feedback.submitted", T0 + 2 * HOUR + 30 * SECOND, "ios-a", ios,
              {"score": 0.5, "kind": "stars", "raw_value": "4", "comment": "thanks, Alice here"}, platform="ios",
              message_id="ai3"),
        # Alice in Slack: identified by the same e-mail
        event("as1", "user.identified", T0 + 3 * HOUR, None, {**slack, "email_sha256": ALICE_SHA}, {},
              platform="slack", conversation="slack-c1"),
        event("as2", "message.sent", T0 + 3 * HOUR + 5 * SECOND, None, slack, {"role": "user"}, platform="slack",
              conversation="slack-c1", message_id="m-as2"),
        # Bob on the web, in the same hour and day as Alice
        event("bw1", "session.started", T0 + 60 * SECOND, "web-b", BOB, {}),
        event("bw2", "message.sent", T0 + 70 * SECOND, "web-b", BOB, {"role": "user"}, message_id="m-bw2"),
        reply("bw3", T0 + 75 * SECOND, "web-b", (500, 0, 50)),
        event("bw4", "feedback.submitted", T0 + 80 * SECOND, "web-b", BOB, {"score": 1.0, "kind": "thumbs"},
              message_id="bw3"),
    ]


def quarantined() -> list[dict]:
    return [
        # records the contracts refused: a Slack event naming Alice's team and user (Slack sends them apart),
        # a payload that was not JSON with her anonymous id in its text, and one with her address in other case
        quarantine_row(quarantine_id="q-alice-slack", sequence_number="900",
                       payload={"team_id": "T1", "event": {"user": "UALICE", "text": "hi"}}),
        quarantine_row(quarantine_id="q-alice-text", sequence_number="901", reason="undecodable",
                       payload="id=anon-alice-0001&msg=help"),
        quarantine_row(quarantine_id="q-alice-mail", sequence_number="902",
                       payload={"contact": "mail me at " + ALICE_EMAIL.upper()}),
        quarantine_row(quarantine_id="q-bob", sequence_number="903",
                       payload={"team_id": "T1", "event": {"user": "UBOB", "text": "hello"}}),
    ]


def rows(conn, table: str, order: str = "1") -> list[dict]:
    return warehouse_query(conn, f"SELECT * FROM {conn.database}.{table} ORDER BY {order}")  # noqa: S608 - test-made names


def all_rows(conn) -> dict[str, list[dict]]:
    return {f"{t.schema}.{t.name}": rows(conn, f"{t.schema}.{t.name}")
            for t in (*TABLES, *ANALYTICS_TABLES, *WORK_TABLES)}


def mentions(value, needles: tuple[str, ...]) -> bool:
    text = repr(value).lower()
    return any(n.lower() in text for n in needles)


@pytest.fixture
def erasure_settings(settings, warehouse_conn):  # noqa: F811 - the fixture imported above
    settings.SNOWFLAKE = {**copy.deepcopy(settings.SNOWFLAKE), "database": warehouse_conn.database}
    return settings


@pytest.fixture
def stitched(warehouse_conn, erasure_settings):  # noqa: F811 - the fixture imported above
    land_and_merge(warehouse_conn, alice_and_bob(), "b1", quarantine=quarantined())
    report = models_run(warehouse_conn, prices=PRICES)
    assert report.ok, [(m.name, m.error) for m in report.models if m.error]
    return warehouse_conn


def subject_of(expansion) -> ErasureSubject:
    return ErasureSubject("DEL-1", tuple(li.identifier for li in expansion.linked),
                          tuple(sorted({li.person_id for li in expansion.linked if li.person_id})))


@pytest.mark.django_db
def test_a_person_on_web_ios_and_slack_is_erased_from_every_table_and_aggregates_drop_by_their_share(stitched):
    conn = stitched
    persons = {r["ID_KEY"]: r["PERSON_ID"] for r in rows(conn, "IDENTITY.IDENTIFIERS")}
    alice = persons["email_sha256:" + ALICE_SHA]
    assert {persons[k] for k in ("anonymous_id:anon-alice-0001", "platform_user_id:cust-alice",
                                 "device_id:D-alice-iphone", "platform_user_id:T1:UALICE")} == {alice}

    expansion = expand_identifiers([Identifier(IdentifierKind.EMAIL, ALICE_EMAIL)], conn=conn, limits=HoldLimits())
    assert expansion.held_reasons == ()
    found = {li.identifier.id_key: li for li in expansion.linked}
    assert set(found) >= {"email_sha256:" + ALICE_SHA, "anonymous_id:anon-alice-0001", "platform_user_id:cust-alice",
                          "device_id:D-alice-iphone", "platform_user_id:T1:UALICE", "email:" + ALICE_EMAIL}
    assert not any("bob" in k for k in found)
    assert found["email_sha256:" + ALICE_SHA].given and found["email_sha256:" + ALICE_SHA].platforms == ("slack", "web")
    assert found["device_id:D-alice-iphone"].platforms == ("ios",) and not found["device_id:D-alice-iphone"].given
    assert found["platform_user_id:T1:UALICE"].how.startswith("identified (user.identified event as1")

    # a client retry sent one message of each again: the copies are counted in RAW.EVENT_COPIES
    retried = [copy.deepcopy(e) for e in alice_and_bob() if e["event_id"] in ("aw2", "bw2")]
    for e in retried:
        e["lineage"]["sequence_number"] = "200"
    land_and_merge(conn, retried, "b2")
    assert {r["EVENT_ID"] for r in rows(conn, "RAW.EVENT_COPIES")} == {"aw2", "bw2"}
    bob_copies = [r for r in rows(conn, "RAW.EVENT_COPIES", "COPY_KEY") if r["EVENT_ID"] == "bw2"]
    assert len(bob_copies) == 2

    bob_events = [r for r in rows(conn, "CANONICAL.EVENTS", "EVENT_ID") if r["EVENT_ID"].startswith("b")]
    bob_sessions = [r for r in rows(conn, "ANALYTICS.CONVERSATION_SESSIONS", "SESSION_KEY")
                    if r["SESSION_KEY"] == "web-b"]
    [web_day] = [r for r in rows(conn, "ANALYTICS.PLATFORM_ENGAGEMENT_DAILY") if r["PLATFORM"] == "web"]
    assert (web_day["ACTIVE_PEOPLE"], web_day["SESSIONS"]) == (2, 2)
    hour0 = {r["PLATFORM"]: r for r in rows(conn, "ANALYTICS.TOKEN_COST_USAGE") if r["HOUR"][11:13] == "00"}
    assert hour0["web"]["REQUESTS"] == 2 and hour0["web"]["INPUT_TOKENS"] == 1500

    steps = warehouse_steps(database=conn.database)
    subject = subject_of(expansion)
    results = [step.run(subject) for step in steps]
    assert [r.remaining for r in results] == [0] * len(steps)
    by_store = {r.store: r for r in results}
    assert by_store["warehouse: CANONICAL.EVENTS"].removed == 12   # 10 events + the 2 counted copies of aw2
    assert by_store["warehouse: RAW.LANDING_EVENTS"].removed == 14     # 11 event copies + 3 quarantine rows
    assert by_store["warehouse: RAW.QUARANTINE"].removed == 3
    for r in results:   # the evidence names no personal value
        assert not mentions(r.verification, (*ALICE_VALUES, alice, ALICE_EMAIL)), r.verification

    # nothing anywhere still names Alice
    for table, table_rows in all_rows(conn).items():
        left = [r for r in table_rows if mentions(r, (*ALICE_VALUES, alice))]
        assert left == [], table
    # Bob is untouched; the aggregates went down by exactly Alice's share
    assert [r for r in rows(conn, "CANONICAL.EVENTS", "EVENT_ID")] == bob_events
    assert rows(conn, "RAW.EVENT_COPIES", "COPY_KEY") == bob_copies  # Alice's event ids are gone from it too
    assert [r for r in rows(conn, "ANALYTICS.CONVERSATION_SESSIONS", "SESSION_KEY")] == bob_sessions
    assert [q["QUARANTINE_ID"] for q in rows(conn, "RAW.QUARANTINE")] == ["q-bob"]
    [web_day] = [r for r in rows(conn, "ANALYTICS.PLATFORM_ENGAGEMENT_DAILY") if r["PLATFORM"] == "web"]
    assert (web_day["ACTIVE_PEOPLE"], web_day["SESSIONS"], web_day["MESSAGES"]) == (1, 1, 2)
    assert {r["PLATFORM"] for r in rows(conn, "ANALYTICS.PLATFORM_ENGAGEMENT_DAILY")} == {"web"}
    hour0 = {r["PLATFORM"]: r for r in rows(conn, "ANALYTICS.TOKEN_COST_USAGE") if r["HOUR"][11:13] == "00"}
    assert hour0["web"]["REQUESTS"] == 1 and hour0["web"]["INPUT_TOKENS"] == 500
    assert [r["HOUR"][11:13] for r in rows(conn, "ANALYTICS.TOKEN_COST_USAGE")] == ["00"]
    assert [f["FEEDBACK_EVENT_ID"] for f in rows(conn, "ANALYTICS.USER_FEEDBACK")] == ["bw4"]
    curated = {t: rows(conn, t) for t in ("ANALYTICS.CONVERSATION_SESSIONS", "ANALYTICS.PLATFORM_ENGAGEMENT_DAILY",
                                          "ANALYTICS.TOKEN_COST_USAGE", "ANALYTICS.USER_FEEDBACK",
                                          "ANALYTICS.USER_JOURNEYS")}

    # idempotent: a second run removes nothing and verifies again
    again = [step.run(subject) for step in steps]
    assert [(r.removed, r.remaining) for r in again] == [(0, 0)] * len(steps)

    # a re-merge of every channel from the start and a models run bring nothing back
    warehouse_query(conn, f"DELETE FROM {conn.database}.RAW.MERGE_PROGRESS")  # noqa: S608
    from tests.warehouse.factories import TEST_WINDOW_DAYS
    from warehouse.landing import merge_channels

    merge_channels(conn, window_days=TEST_WINDOW_DAYS)
    assert models_run(conn, prices=PRICES).ok
    for table, table_rows in all_rows(conn).items():
        assert not [r for r in table_rows if mentions(r, (*ALICE_VALUES, alice))], table
    # and the recomputed aggregates are what a full rebuild gives
    assert models_run(conn, prices=PRICES, full_refresh=True).ok
    assert {t: rows(conn, t) for t in curated} == curated


@pytest.mark.django_db
def test_a_shared_device_id_does_not_drag_other_people_into_the_ticket_without_the_second_review(
        warehouse_conn, erasure_settings):  # noqa: F811 - the fixture imported above
    # a family tablet: Carol and Dan each sign in on it with their own account
    tablet = {"device_id": "tablet-kitchen-01"}
    land_and_merge(warehouse_conn, [
        event("c1", "user.identified", T0, "tab-c", {**tablet, "platform_user_id": "cust-carol",
                                                     "email_sha256": email_sha256("carol@example.com")}, {},
              platform="android"),
        event("d1", "user.identified", T0 + HOUR, "tab-d", {**tablet, "platform_user_id": "cust-dan",
                                                            "email_sha256": email_sha256("dan@example.com")}, {},
              platform="android"),
    ], "shared")
    assert models_run(warehouse_conn, prices=PRICES).ok

    carol = expand_identifiers([Identifier(IdentifierKind.EMAIL, "carol@example.com")], conn=warehouse_conn,
                               limits=HoldLimits(shared_id_people=1))
    keys = {li.identifier.id_key: li for li in carol.linked}
    # the tablet went to Carol (she used it first), but it was seen with Dan too: held for a second officer
    assert "device_id:tablet-kitchen-01" in keys and keys["device_id:tablet-kitchen-01"].group_size == 2
    assert carol.held_reasons and "tablet-kitchen-01" in carol.held_reasons[0] and "shared" in carol.held_reasons[0]
    assert not any("dan" in k for k in keys)
    # Dan's own expansion does not reach the tablet, and needs no review
    dan = expand_identifiers([Identifier(IdentifierKind.EMAIL, "dan@example.com")], conn=warehouse_conn,
                             limits=HoldLimits(shared_id_people=1))
    assert dan.held_reasons == () and "device_id:tablet-kitchen-01" not in {li.identifier.id_key for li in dan.linked}
    # a default id given by mistake is held too, and never matches other people's rows
    default = expand_identifiers([Identifier(IdentifierKind.DEVICE_ID, "00000000")], conn=warehouse_conn,
                                 limits=HoldLimits(blocklist=frozenset({"00000000"})))
    assert default.held_reasons and "default value" in default.held_reasons[0]


@pytest.mark.django_db
def test_the_curated_step_waits_for_a_running_model_run_and_says_so(stitched):
    from deletion.erasure_types import TransientStoreError
    from warehouse.modeling.service import lease_acquire, lease_release

    assert lease_acquire("models-run-in-progress", 60) is None
    subject = ErasureSubject("DEL-2", (Identifier(IdentifierKind.PLATFORM_USER_ID, "cust-bob"),))
    curated = next(s for s in warehouse_steps(database=stitched.database) if s.name == "warehouse.curated")
    with pytest.raises(TransientStoreError, match="model run holds the runner lease"):
        curated.run(subject)
    assert [r["SESSION_KEY"] for r in rows(stitched, "ANALYTICS.USER_JOURNEYS")].count("web-b") == 1
    lease_release("models-run-in-progress")
    result = curated.run(subject)
    assert result.remaining == 0 and result.detail["rows_removed"]["USER_JOURNEYS"] == 1
    assert "web-b" not in [r["SESSION_KEY"] for r in rows(stitched, "ANALYTICS.USER_JOURNEYS")]


def test_an_unreachable_warehouse_is_a_transient_failure_the_job_retries(warehouse_server, settings):
    from deletion.erasure_types import TransientStoreError
    from warehouse.embedded import free_port

    settings.SNOWFLAKE = {**copy.deepcopy(settings.SNOWFLAKE), "port": free_port()}
    subject = ErasureSubject("DEL-3", (Identifier(IdentifierKind.DEVICE_ID, "D-gone-0001"),))
    canonical = next(s for s in warehouse_steps(database="ANY") if s.name == "warehouse.canonical")
    with pytest.raises(TransientStoreError, match="could not be reached"):
        canonical.run(subject)


@pytest.mark.django_db
def test_an_identifier_the_officer_removed_as_wrongly_linked_keeps_its_events_under_a_person_of_its_own(
        warehouse_conn, erasure_settings):  # noqa: F811 - the fixture imported above
    conn = warehouse_conn
    pat = {"anonymous_id": "anon-pat-0003", "platform_user_id": "cust-pat"}
    land_and_merge(conn, [
        *alice_and_bob(),
        # Pat signs in to the app once on Alice's phone: the graph joins Pat's account to Alice
        event("pi1", "session.started", T0 + 5 * HOUR, "ios-p", {"platform_user_id": "cust-pat",
                                                                 "device_id": "D-alice-iphone"}, {}, platform="ios"),
        # and chats on the web from Pat's own browser
        event("pw1", "session.started", T0 + 6 * HOUR, "web-p", pat, {}),
        event("pw2", "message.sent", T0 + 6 * HOUR + 5 * SECOND, "web-p", pat, {"role": "user"}, message_id="m-pw2"),
    ], "b1")
    assert models_run(conn, prices=PRICES).ok
    expansion = expand_identifiers([Identifier(IdentifierKind.EMAIL, ALICE_EMAIL)], conn=conn, limits=HoldLimits())
    linked = {li.identifier.id_key: li for li in expansion.linked}
    assert {"platform_user_id:cust-pat", "anonymous_id:anon-pat-0003"} <= set(linked)
    # the phone was seen with two accounts: a second officer reviews, and removes Pat's identifiers
    assert any("D-alice-iphone" in reason for reason in expansion.held_reasons)
    alice = linked["email_sha256:" + ALICE_SHA].person_id
    subject = ErasureSubject("DEL-4", tuple(li.identifier for li in expansion.linked
                                            if "pat" not in li.identifier.value), (alice,))

    results = [step.run(subject) for step in warehouse_steps(database=conn.database)]
    assert [r.remaining for r in results] == [0] * len(results)
    for table, table_rows in all_rows(conn).items():
        assert not [r for r in table_rows if mentions(r, (*ALICE_VALUES, alice))], table
    # Pat's web chat stays, under a person of Pat's own
    ids = {r["ID_KEY"]: r["PERSON_ID"] for r in rows(conn, "IDENTITY.IDENTIFIERS")}
    assert ids["platform_user_id:cust-pat"] == ids["anonymous_id:anon-pat-0003"] != alice
    [session] = [s for s in rows(conn, "ANALYTICS.CONVERSATION_SESSIONS") if s["SESSION_KEY"] == "web-p"]
    assert session["PERSON_ID"] == ids["platform_user_id:cust-pat"] and session["EVENT_COUNT"] == 2
    # the event that carried Alice's phone is gone; a full rebuild agrees with what the erasure left
    assert [e["EVENT_ID"] for e in rows(conn, "CANONICAL.EVENTS", "EVENT_ID")] == \
        ["bw1", "bw2", "bw3", "bw4", "pw1", "pw2"]
    curated = {t: rows(conn, t) for t in ("ANALYTICS.CONVERSATION_SESSIONS", "ANALYTICS.USER_JOURNEYS",
                                          "ANALYTICS.PLATFORM_ENGAGEMENT_DAILY", "IDENTITY.IDENTIFIERS")}
    assert models_run(conn, prices=PRICES, full_refresh=True).ok
    assert {t: rows(conn, t) for t in curated} == curated


@pytest.mark.django_db
def test_erasure_leaves_the_counted_copies_of_another_persons_event_with_the_same_id_on_another_day(
        warehouse_conn, erasure_settings):  # noqa: F811 - the fixture imported above
    # review of dd0f80b: the side tables were matched on EVENT_ID alone, but (EVENT_DATE, EVENT_ID) is the key:
    # erasing Alice's "x" of one day removed the counted copies of Bob's "x" of the day before, and Bob's next
    # copy was then counted as two
    from deletion.warehouse_erasure import canonical_erase

    bob = [event("x", "session.started", T0, "web-b", BOB, {}) for _ in range(3)]
    for n, e in enumerate(bob):
        e["lineage"]["sequence_number"] = str(n + 1)
        e["received_at"] += n * SECOND
    alice = event("x", "session.started", T0 + 24 * HOUR, "web-a", {"anonymous_id": "anon-alice-0001"}, {})
    alice["lineage"]["sequence_number"] = "9"
    land_and_merge(warehouse_conn, [bob[0], bob[1], alice], "b1")
    bob_copies = rows(warehouse_conn, "RAW.EVENT_COPIES", "COPY_KEY")
    assert len(bob_copies) == 2
    result = canonical_erase(ErasureSubject("DEL-1", (Identifier(IdentifierKind.ANONYMOUS_ID, "anon-alice-0001"),)),
                             database=warehouse_conn.database)
    assert (result.removed, result.remaining) == (1, 0)
    assert rows(warehouse_conn, "RAW.EVENT_COPIES", "COPY_KEY") == bob_copies
    land_and_merge(warehouse_conn, [bob[2]], "b2")
    assert [r["DUPLICATE_COUNT"] for r in rows(warehouse_conn, "CANONICAL.EVENTS")] == [2]
