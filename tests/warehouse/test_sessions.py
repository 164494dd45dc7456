"""Sessions split at inactivity gaps (docs/analytics.md, Sessions), on the embedded warehouse.

A session id whose events pause for longer than its platform's gap is two sessions; a late event
(one that lands after the model ran) joins the part its event time belongs to, and first-response
latency is measured inside a part only, so no session lasts a day and no answer takes 22 hours.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.warehouse.factories import HOUR, SECOND, T0
from tests.warehouse.test_models_runner import PRICES, event, land, reply, table
from warehouse.load import warehouse_query
from warehouse.modeling import sql as model_sql
from warehouse.modeling.runner import models_run

MINUTE = 60 * SECOND
DAY = 24 * HOUR
WEB = {"anonymous_id": "anon-1"}


def user(eid: str, at: int, session: str, *, platform: str = "web", conversation: str | None = None) -> dict:
    return event(eid, "message.sent", at, session, WEB, {"role": "user"}, platform=platform,
                 conversation=conversation, message_id=f"m-{eid}")


def run(conn, **kwargs) -> dict[str, dict]:
    report = models_run(conn, prices=PRICES, **kwargs)
    assert report.ok, [(m.name, m.error) for m in report.models if m.error]
    return {s["SESSION_KEY"]: s for s in table(conn, "ANALYTICS.CONVERSATION_SESSIONS", "SESSION_KEY")}


def test_a_session_id_spanning_two_days_with_a_long_gap_is_two_sessions(warehouse_conn):
    # the review's worst case: a user message in the evening, the next event of the id the day after
    day1, day2 = T0 + 19 * HOUR + 36 * MINUTE, T0 + DAY + 16 * HOUR + 42 * MINUTE
    land(warehouse_conn, "b1", [
        event("s1", "session.started", day1 - 5 * SECOND, "web-1", WEB, {}),
        user("u1", day1, "web-1"),
        reply("a1", day1 + 4 * SECOND, "web-1", (100, 0, 10)),
        user("u2", day1 + 60 * SECOND, "web-1"),
        # 45 hours later: the same session id again; its reply must not be timed from u2
        reply("a2", day2, "web-1", (200, 0, 20)),
        user("u3", day2 + 30 * SECOND, "web-1"),
        reply("a3", day2 + 32 * SECOND, "web-1", (300, 0, 30)),
        event("f1", "feedback.submitted", day2 + 40 * SECOND, "web-1", WEB, {"score": 1.0, "kind": "thumbs"},
              message_id="a3"),
    ])
    sessions = run(warehouse_conn)
    assert set(sessions) == {"web-1", "web-1#2"}
    first, second = sessions["web-1"], sessions["web-1#2"]
    assert first["SOURCE_SESSION_KEY"] == second["SOURCE_SESSION_KEY"] == "web-1"
    assert first["SESSION_ID"] == second["SESSION_ID"] == "web-1"
    assert (first["DURATION_S"], first["EVENT_COUNT"], first["FIRST_RESPONSE_LATENCY_MS"]) == (65.0, 4, 4000)
    assert first["OUTCOME"] == "abandoned"     # u2 got no answer within the session
    # a2 opens the second part with no user message before it in that part: not a 45-hour latency
    assert (second["DURATION_S"], second["EVENT_COUNT"], second["FIRST_RESPONSE_LATENCY_MS"]) == (40.0, 4, 2000)
    assert second["OUTCOME"] == "completed"
    assert (first["OUTPUT_TOKENS"], second["OUTPUT_TOKENS"]) == (10, 50)
    # the downstream tables follow the parts
    feedback = table(warehouse_conn, "ANALYTICS.USER_FEEDBACK", "1")
    assert [f["SESSION_KEY"] for f in feedback] == ["web-1#2"]
    journeys = table(warehouse_conn, "ANALYTICS.USER_JOURNEYS", "SESSION_SEQ")
    assert [j["SESSION_KEY"] for j in journeys] == ["web-1", "web-1#2"]
    assert journeys[1]["GAP_FROM_PREVIOUS_S"] == (day2 - day1 - 60 * SECOND) / SECOND
    days = {str(d["DAY"]): d["SESSIONS"] for d in table(warehouse_conn, "ANALYTICS.PLATFORM_ENGAGEMENT_DAILY", "1")}
    assert days == {"2026-01-01": 1, "2026-01-02": 1}
    usage = table(warehouse_conn, "ANALYTICS.TOKEN_COST_USAGE", "HOUR")
    assert [(u["PLATFORM"], u["OUTPUT_TOKENS"]) for u in usage] == [("web", 10), ("web", 50)]


def test_a_late_event_joins_the_session_its_time_belongs_to(warehouse_conn):
    land(warehouse_conn, "b1", [
        user("u1", T0, "web-1"),
        reply("a1", T0 + 3 * SECOND, "web-1", (100, 0, 10)),
        user("u2", T0 + 50 * MINUTE, "web-1"),
        reply("a2", T0 + 50 * MINUTE + 5 * SECOND, "web-1", (100, 0, 10)),
    ])
    before = run(warehouse_conn)
    assert set(before) == {"web-1", "web-1#2"}       # 50 minutes of silence so far: two sessions
    # a mobile-style late arrival, landed after the model ran: the person was active at 10:25
    land(warehouse_conn, "b2", [event("t1", "tool_call.started", T0 + 25 * MINUTE, "web-1", WEB,
                                      {"tool_call_id": "tc-1"})])
    after = run(warehouse_conn)
    assert set(after) == {"web-1"}                   # it bridges the gap: one session, no "#2" left behind
    session = after["web-1"]
    assert session["DURATION_S"] == 50 * 60 + 5 and session["EVENT_COUNT"] == 5
    assert session["FIRST_RESPONSE_LATENCY_MS"] == 3000 and session["MEDIAN_RESPONSE_LATENCY_MS"] == 4000
    assert session["TOOL_CALLS"] == 1 and session["OUTPUT_TOKENS"] == 20
    [day] = table(warehouse_conn, "ANALYTICS.PLATFORM_ENGAGEMENT_DAILY", "1")
    assert day["SESSIONS"] == 1 and day["AVG_SESSION_S"] == 50 * 60 + 5


def test_a_late_event_of_an_old_session_does_not_stretch_the_current_one(warehouse_conn):
    land(warehouse_conn, "b1", [user("u1", T0 + DAY, "web-1"), reply("a1", T0 + DAY + 2 * SECOND, "web-1", (1, 0, 1))])
    run(warehouse_conn)
    # an event of the same id from the day before arrives now (a client resending its buffer)
    land(warehouse_conn, "b2", [user("u0", T0 + 2 * HOUR, "web-1")])
    sessions = run(warehouse_conn)
    assert {k: (str(s["STARTED_AT"])[:19], s["DURATION_S"]) for k, s in sessions.items()} == {
        "web-1": ("2026-01-01T02:00:00", 0.0), "web-1#2": ("2026-01-02T00:00:00", 2.0)}
    assert sessions["web-1#2"]["FIRST_RESPONSE_LATENCY_MS"] == 2000
    assert sessions["web-1"]["FIRST_RESPONSE_LATENCY_MS"] is None


def test_the_inactivity_gap_depends_on_the_platform(warehouse_conn):
    def pause(session: str, platform: str, minutes: int, *, conversation: str | None = None) -> list[dict]:
        name = session or conversation
        return [user(f"{name}-1", T0, session, platform=platform, conversation=conversation),
                user(f"{name}-2", T0 + minutes * MINUTE, session, platform=platform, conversation=conversation)]

    land(warehouse_conn, "b1", [
        *pause("web-a", "web", 25), *pause("web-b", "web", 35),
        *pause("voice-a", "voice", 8), *pause("voice-b", "voice", 15),
        *pause(None, "slack", 45, conversation="thread-a"), *pause(None, "slack", 90, conversation="thread-b"),
    ])
    parts = {}
    for key in run(warehouse_conn):
        source = key.split("#")[0]
        parts[source] = parts.get(source, 0) + 1
    assert parts == {"web-a": 1, "web-b": 2, "voice-a": 1, "voice-b": 2,
                     "conversation:thread-a": 1, "conversation:thread-b": 2}


def test_the_gaps_are_configurable(warehouse_conn):
    land(warehouse_conn, "b1", [user("u1", T0, "web-1"), user("u2", T0 + 12 * MINUTE, "web-1")])
    assert set(run(warehouse_conn)) == {"web-1"}
    assert set(run(warehouse_conn, full_refresh=True, session_gaps={"web": 600})) == {"web-1", "web-1#2"}


@pytest.mark.parametrize(("gaps", "message"), [
    ({"web": 10}, "session gap for web: 10 is not a whole number of seconds from 60 to 604800"),
    ({"web": "soon"}, "session gap for web: 'soon'"),
    ({"web'; DROP": 600}, "is not a platform name"),
])
def test_bad_gaps_are_refused_by_name(gaps, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        model_sql.session_gaps_clean(gaps)


def test_a_sessions_table_of_the_previous_version_is_rebuilt_with_the_parts(warehouse_conn):
    db = warehouse_conn.database
    land(warehouse_conn, "b1", [user("u1", T0, "web-1"), reply("a1", T0 + 2 * SECOND, "web-1", (1, 0, 1)),
                                user("u2", T0 + DAY, "web-1"), reply("a2", T0 + DAY + 2 * SECOND, "web-1", (1, 0, 1))])
    run(warehouse_conn)
    # the sessions table as the previous version made it: no SOURCE_SESSION_KEY, one row per session id
    warehouse_query(warehouse_conn, f"ALTER TABLE {db}.ANALYTICS.CONVERSATION_SESSIONS DROP COLUMN SOURCE_SESSION_KEY")
    warehouse_query(warehouse_conn, f"DELETE FROM {db}.ANALYTICS.CONVERSATION_SESSIONS "
                                    "WHERE SESSION_KEY <> 'web-1'")
    warehouse_query(warehouse_conn, f"UPDATE {db}.ANALYTICS.CONVERSATION_SESSIONS SET DURATION_S = 86402")
    sessions = run(warehouse_conn)      # nothing new landed: the rebuild alone remodels every event
    assert {k: s["DURATION_S"] for k, s in sessions.items()} == {"web-1": 2.0, "web-1#2": 2.0}
    [cost] = warehouse_query(warehouse_conn, f"SELECT SUM(COST_USD) AS C FROM {db}.ANALYTICS.TOKEN_COST_USAGE")
    assert Decimal(str(cost["C"])) > 0
