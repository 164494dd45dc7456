# ruff: noqa: S608 - every interpolated name is a checked identifier or a constant of this module; values are bound
"""The curated models' SQL (Snowflake SQL; runs unchanged on the embedded warehouse).

Each model recomputes a set of *units* (sessions, hours, feedback events, persons, days) listed in a
work table (``ANALYTICS.WORK_*``, rewritten with ``INSERT OVERWRITE``): it deletes their rows and
inserts them again from ``CANONICAL.EVENTS``. A full rebuild lists every unit, so both paths run the same SQL.

Pure: builds strings; ``db`` is an already checked identifier.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from warehouse.modeling.identity import BLOCKED_VALUES, KIND_PRIORITY

_BLOCKED_SQL = ", ".join(f"'{v}'" for v in sorted(BLOCKED_VALUES))

#: event column holding each identifier kind
ID_COLUMNS: dict[str, str] = {
    "email_sha256": "EMAIL_SHA256",
    "platform_user_id": "PLATFORM_USER_ID",
    "device_id": "DEVICE_ID",
    "anonymous_id": "ANONYMOUS_ID",
}
USER_FACING_PLATFORMS = ("web", "ios", "android", "slack", "voice")
ESCALATION_REASONS = ("escalated", "handoff", "human_handoff")
#: Inactivity gap (seconds) after which a session id's next event starts a new session, by the
#: session's platform (docs/analytics.md, Sessions). Web: the widget's own rule (the web-chat contract
#: says 30 minutes of inactivity ends a session); the apps: the mobile-analytics convention (30 min);
#: Slack threads are answered at a human pace, so an hour; a voice session is one spoken exchange
#: (10 min of silence ends it); API-only sessions as web. ``settings.ANALYTICS_SESSION_GAP_S`` overrides.
SESSION_GAP_S: dict[str, int] = {"web": 1800, "ios": 1800, "android": 1800, "slack": 3600, "voice": 600,
                                 "api": 1800}
#: the gap of a platform not named in the settings
DEFAULT_SESSION_GAP_S = 1800
_PLATFORM_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


def usable(expr: str) -> str:
    """SQL: the identifier, or NULL when it identifies nobody (same rule as ``identity.is_blocked``)."""
    return f"CASE WHEN LOWER(TRIM({expr})) NOT IN ({_BLOCKED_SQL}) THEN {expr} END"


def session_key(alias: str = "e") -> str:
    return f"COALESCE({alias}.SESSION_ID, 'conversation:' || {alias}.CONVERSATION_ID)"


def primary_id_key(alias: str = "e") -> str:
    """SQL: ``kind:value`` of the event's highest-priority usable identifier."""
    parts = [f"'{kind}:' || {usable(f'{alias}.{ID_COLUMNS[kind]}')}" for kind in KIND_PRIORITY]
    return f"COALESCE({', '.join(parts)})"


def t(db: str, name: str) -> str:
    """Fully qualified name of an ANALYTICS or IDENTITY table (``IDENTITY.IDENTIFIERS`` style)."""
    return f"{db}.{name}"


# --------------------------------------------------------------------------------------------
# work tables
# --------------------------------------------------------------------------------------------

def new_merges_sql(db: str) -> str:
    return (
        f"INSERT OVERWRITE INTO {db}.ANALYTICS.WORK_MERGES (MERGE_ID, MERGED_AT) "
        f"SELECT DISTINCT b.MERGE_ID, b.MERGED_AT FROM {db}.RAW.MERGE_LOG b "
        f"WHERE b.MERGE_ID NOT IN (SELECT s.MERGE_ID FROM {db}.ANALYTICS.MODEL_STATE s)"
    )


def work_events_sql(db: str, *, everything: bool, recompute_filter: str | None) -> str:
    """The events this run processes: those changed by unprocessed merges (every event on a full
    rebuild), plus those a price recompute request covers."""
    if everything:
        where = "TRUE"
    else:
        where = f"e.MERGED_AT IN (SELECT m.MERGED_AT FROM {db}.ANALYTICS.WORK_MERGES m)"
        if recompute_filter:
            where = f"({where}) OR ({recompute_filter})"
    return (
        f"INSERT OVERWRITE INTO {db}.ANALYTICS.WORK_EVENTS (EVENT_ID, SESSION_KEY, EVENT_TYPE, EVENT_TIME, MESSAGE_ID) "
        f"SELECT e.EVENT_ID, {session_key()}, e.EVENT_TYPE, e.EVENT_TIME, e.MESSAGE_ID "
        f"FROM {db}.CANONICAL.EVENTS e WHERE {where}"
    )


def recompute_filter_sql(db: str, requests: list[tuple[str | None, object]]) -> str | None:
    """Events a price recompute covers: requests of the model (any when None) from the time on,
    found through EVENT_FACTS. The values are bound as ``recompute_from_<i>``/``recompute_model_<i>``."""
    clauses = []
    for i, (model, _from) in enumerate(requests):
        cond = f"f.IS_REQUEST AND f.EVENT_TIME >= CAST(%(recompute_from_{i})s AS TIMESTAMP_NTZ(6))"
        if model:
            cond += f" AND f.MODEL = %(recompute_model_{i})s"
        clauses.append(f"({cond})")
    if not clauses:
        return None
    return f"e.EVENT_ID IN (SELECT f.EVENT_ID FROM {db}.ANALYTICS.EVENT_FACTS f WHERE {' OR '.join(clauses)})"


def merged_filter(db: str, *, everything: bool) -> str:
    """SQL on alias ``e``: the events the run's merges changed (a plain column compare: cheaper
    than a semi-join on EVENT_ID over the whole table)."""
    if everything:
        return "TRUE"
    return f"e.MERGED_AT IN (SELECT m.MERGED_AT FROM {db}.ANALYTICS.WORK_MERGES m)"


def event_facts_insert_sql(db: str, *, everything: bool = False) -> str:
    """Typed attributes of the events the run's merges changed: each JSON path is read once, only
    for the event types that have it."""
    def attr(types: tuple[str, ...], path: str, sql_type: str) -> str:
        cond = " OR ".join(f"e.EVENT_TYPE = '{t}'" for t in types)
        return f"CASE WHEN {cond} THEN e.ATTRIBUTES:{path}::{sql_type} END"

    msg = ("message.sent",)
    tokens = {name: attr(msg, path, "NUMBER(38,0)") for name, path in (
        ("INPUT_TOKENS", "input_tokens"), ("CACHED_INPUT_TOKENS", "cache_read_input_tokens"),
        ("OUTPUT_TOKENS", "output_tokens"), ("REASONING_TOKENS", "reasoning_output_tokens"))}
    fb = ("feedback.submitted",)
    ends = ("session.ended", "conversation.ended")
    return f"""
INSERT INTO {db}.ANALYTICS.EVENT_FACTS (EVENT_ID, EVENT_TYPE, EVENT_TIME, HOUR, PLATFORM, PRODUCT, TENANT_ID,
  SESSION_ID, CONVERSATION_ID, MESSAGE_ID, SESSION_KEY, PRIMARY_ID_KEY, ROLE, MODEL, IS_REQUEST, INPUT_TOKENS,
  CACHED_INPUT_TOKENS, OUTPUT_TOKENS, REASONING_TOKENS, TOOL_CALL_ID, TOOL_STATUS, ERROR_TYPE, END_REASON, HANDOFF,
  RESOLVED, FEEDBACK_SCORE, FEEDBACK_KIND, FEEDBACK_RAW_VALUE, FEEDBACK_COMMENT)
WITH x AS (
  SELECT e.EVENT_ID, e.EVENT_TYPE, e.EVENT_TIME, e.PLATFORM, e.PRODUCT, e.TENANT_ID, e.SESSION_ID, e.CONVERSATION_ID,
    e.MESSAGE_ID, {session_key()} AS SESSION_KEY, {primary_id_key()} AS PRIMARY_ID_KEY,
    {attr(msg, "role", "VARCHAR")} AS ROLE,
    COALESCE({attr(msg, "request_model", "VARCHAR")}, {attr(msg, "response_model", "VARCHAR")}) AS MODEL,
    {", ".join(f"{expr} AS {name}" for name, expr in tokens.items())},
    {attr(("tool_call.started", "tool_call.completed"), "tool_call_id", "VARCHAR")} AS TOOL_CALL_ID,
    {attr(("tool_call.completed",), "status", "VARCHAR")} AS TOOL_STATUS,
    {attr(("message.sent", "session.ended", "tool_call.completed"), "error_type", "VARCHAR")} AS ERROR_TYPE,
    LOWER({attr(ends, "reason", "VARCHAR")}) AS END_REASON,
    {attr(("conversation.ended",), "handoff", "BOOLEAN")} AS HANDOFF,
    {attr(("conversation.ended",), "resolved", "BOOLEAN")} AS RESOLVED,
    {attr(fb, "score", "FLOAT")} AS FEEDBACK_SCORE,
    {attr(fb, "kind", "VARCHAR")} AS FEEDBACK_KIND,
    {attr(fb, "raw_value", "VARCHAR")} AS FEEDBACK_RAW_VALUE,
    {attr(fb, "comment", "VARCHAR")} AS FEEDBACK_COMMENT
  FROM {db}.CANONICAL.EVENTS e
  WHERE {merged_filter(db, everything=everything)}
)
SELECT EVENT_ID, EVENT_TYPE, EVENT_TIME, DATE_TRUNC('HOUR', EVENT_TIME), PLATFORM, PRODUCT, TENANT_ID, SESSION_ID,
  CONVERSATION_ID, MESSAGE_ID, SESSION_KEY, PRIMARY_ID_KEY, ROLE, MODEL,
  COALESCE(EVENT_TYPE = 'message.sent' AND ROLE = 'assistant' AND (INPUT_TOKENS IS NOT NULL
    OR CACHED_INPUT_TOKENS IS NOT NULL OR OUTPUT_TOKENS IS NOT NULL OR REASONING_TOKENS IS NOT NULL), FALSE),
  INPUT_TOKENS, CACHED_INPUT_TOKENS, OUTPUT_TOKENS, REASONING_TOKENS, TOOL_CALL_ID, TOOL_STATUS, ERROR_TYPE,
  END_REASON, HANDOFF, RESOLVED, FEEDBACK_SCORE, FEEDBACK_KIND, FEEDBACK_RAW_VALUE, FEEDBACK_COMMENT
FROM x
"""


# --------------------------------------------------------------------------------------------
# identity
# --------------------------------------------------------------------------------------------

def observations_sql(db: str, *, everything: bool = False) -> str:
    """Distinct identifier sets of the events the run's merges changed, each with its first sighting."""
    cols = {
        "ANONYMOUS_ID": usable("e.ANONYMOUS_ID"),
        "PLATFORM_USER_ID": usable("e.PLATFORM_USER_ID"),
        "DEVICE_ID": usable("e.DEVICE_ID"),
        "EMAIL_SHA256": usable("e.EMAIL_SHA256"),
        "PREVIOUS_ANONYMOUS_ID": usable("CASE WHEN e.EVENT_TYPE = 'user.identified' "
                                        "THEN e.ATTRIBUTES:previous_anonymous_id::VARCHAR END"),
    }
    names = list(cols)
    part = ", ".join(names)
    return (
        f"SELECT {part}, RULE, EVENT_TIME AS FIRST_SEEN_AT, EVENT_ID AS FIRST_EVENT_ID FROM ("
        f" SELECT {part},"
        f"  CASE WHEN MAX(IDENTIFIED) OVER (PARTITION BY {part}) = 1 THEN 'identified' ELSE 'co_occurrence' END"
        f"   AS RULE,"
        f"  EVENT_TIME, EVENT_ID,"
        f"  ROW_NUMBER() OVER (PARTITION BY {part} ORDER BY EVENT_TIME, EVENT_ID) AS RN"
        f" FROM ("
        f"  SELECT {', '.join(f'{expr} AS {name}' for name, expr in cols.items())},"
        f"   CASE WHEN e.EVENT_TYPE = 'user.identified' THEN 1 ELSE 0 END AS IDENTIFIED, e.EVENT_TIME, e.EVENT_ID"
        f"  FROM {db}.CANONICAL.EVENTS e"
        f"  WHERE {merged_filter(db, everything=everything)}"
        f" ) x WHERE COALESCE({part}) IS NOT NULL"
        f") y WHERE RN = 1"
    )


def identity_groups_sql(db: str) -> str:
    return (f"SELECT DISTINCT i.LINK_GROUP FROM {db}.IDENTITY.IDENTIFIERS i "
            f"WHERE i.ID_KEY IN (SELECT w.ID_KEY FROM {db}.ANALYTICS.WORK_IDS w)")


def changed_id_sessions_sql(db: str) -> str:
    """Sessions with an event carrying an identifier whose person changed."""
    checks = " OR ".join(
        f"e.{col} IN (SELECT c.ID_VALUE FROM {db}.ANALYTICS.WORK_CHANGED_IDS c WHERE c.ID_KIND = '{kind}')"
        for kind, col in ID_COLUMNS.items()
    )
    return (
        f"INSERT INTO {db}.ANALYTICS.WORK_EVENTS (EVENT_ID, SESSION_KEY, EVENT_TYPE, EVENT_TIME, MESSAGE_ID) "
        f"SELECT e.EVENT_ID, {session_key()}, e.EVENT_TYPE, e.EVENT_TIME, e.MESSAGE_ID "
        f"FROM {db}.CANONICAL.EVENTS e WHERE ({checks}) "
        f"AND e.EVENT_ID NOT IN (SELECT w.EVENT_ID FROM {db}.ANALYTICS.WORK_EVENTS w)"
    )


# --------------------------------------------------------------------------------------------
# shared event CTEs
# --------------------------------------------------------------------------------------------

def events_cte(db: str, where: str) -> str:
    """``ev``: EVENT_FACTS rows (filtered by ``where`` on alias ``f``) with their stitched person."""
    return (
        f"ev AS (\n"
        f"  SELECT f.*, i.PERSON_ID\n"
        f"  FROM {db}.ANALYTICS.EVENT_FACTS f\n"
        f"  LEFT JOIN {db}.IDENTITY.IDENTIFIERS i ON i.ID_KEY = f.PRIMARY_ID_KEY\n"
        f"  WHERE {where}\n"
        f")"
    )


def priced_requests_cte(db: str, source: str = "ev") -> str:
    """``req`` then ``priced``: requests (assistant messages that report tokens) with their cost at
    the prices in force at their hour (docs/analytics.md, Tokens and cost)."""
    def price_join(alias: str, kind: str) -> str:
        return (f"LEFT JOIN {db}.ANALYTICS.MODEL_PRICES {alias} ON {alias}.MODEL = r.MODEL "
                f"AND {alias}.TOKEN_KIND = '{kind}' AND {alias}.EFFECTIVE_FROM <= r.HOUR "
                f"AND ({alias}.EFFECTIVE_TO IS NULL OR r.HOUR < {alias}.EFFECTIVE_TO)")

    # A request's cost is NUMBER(18,12) (under a million dollars): sums of it stay exact decimals on
    # both engines (the embedded warehouse turns SUM over NUMBER(38,s) into a floating-point sum).
    def money(tokens: str, alias: str) -> str:
        # NUMBER(12,0) x NUMBER(14,6) x NUMBER(7,6) stays exact decimal (scale 12) on both engines
        return (f"CAST({tokens} AS NUMBER(12,0)) * CAST(COALESCE({alias}.USD_PER_MILLION, 0) AS NUMBER(14,6))"
                f" * CAST(0.000001 AS NUMBER(7,6))")

    return (
        f"req AS (\n"
        f"  SELECT s.EVENT_ID, s.SESSION_KEY, s.PLATFORM, s.TENANT_ID, s.PRODUCT, s.EVENT_TIME, s.HOUR, s.MODEL,\n"
        f"    COALESCE(s.INPUT_TOKENS, 0) AS INPUT_TOKENS, COALESCE(s.CACHED_INPUT_TOKENS, 0) AS CACHED_INPUT_TOKENS,\n"
        f"    COALESCE(s.OUTPUT_TOKENS, 0) AS OUTPUT_TOKENS, COALESCE(s.REASONING_TOKENS, 0) AS REASONING_TOKENS\n"
        f"  FROM {source} s\n"
        f"  WHERE s.IS_REQUEST\n"
        f"), priced AS (\n"
        f"  SELECT r.*,\n"
        f"    (pi.MODEL IS NOT NULL OR pc.MODEL IS NOT NULL OR po.MODEL IS NOT NULL) AS PRICED,\n"
        f"    CAST({money('GREATEST(r.INPUT_TOKENS - r.CACHED_INPUT_TOKENS, 0)', 'pi')}\n"
        f"      + {money('r.CACHED_INPUT_TOKENS', 'pc')}\n"
        f"      + {money('r.OUTPUT_TOKENS', 'po')} AS NUMBER(18,12)) AS COST_USD\n"
        f"  FROM req r\n"
        f"  {price_join('pi', 'input')}\n"
        f"  {price_join('pc', 'cached_input')}\n"
        f"  {price_join('po', 'output')}\n"
        f")"
    )


# --------------------------------------------------------------------------------------------
# CONVERSATION_SESSIONS
# --------------------------------------------------------------------------------------------

def session_gaps_clean(gaps: Mapping[str, object] | None) -> dict[str, int]:
    """The per-platform inactivity gaps (seconds) with the defaults filled in; ValueError naming the
    bad entry otherwise (a platform name is embedded in the SQL, so it must be a plain name)."""
    clean = dict(SESSION_GAP_S)
    for platform, seconds in (gaps or {}).items():
        if platform != "*" and (not isinstance(platform, str) or not _PLATFORM_NAME.match(platform)):
            raise ValueError(f"session gap: {platform!r} is not a platform name (lower-case letters, digits, _ -)")
        try:
            value = int(seconds)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            value = 0
        if not 60 <= value <= 7 * 86400 or isinstance(seconds, bool):
            raise ValueError(f"session gap for {platform}: {seconds!r} is not a whole number of seconds "
                             "from 60 to 604800")
        clean[platform] = value
    return clean


def session_gap_us_sql(platform: str, gaps: Mapping[str, object] | None) -> str:
    """SQL: the inactivity gap in microseconds for the platform expression ``platform``."""
    clean = session_gaps_clean(gaps)
    default = clean.pop("*", DEFAULT_SESSION_GAP_S)
    whens = " ".join(f"WHEN '{p}' THEN {g * 1_000_000}" for p, g in sorted(clean.items()))
    return f"CASE {platform} {whens} ELSE {default * 1_000_000} END"


_SPLIT_COLUMNS = (
    "EVENT_ID", "EVENT_TYPE", "EVENT_TIME", "HOUR", "PLATFORM", "PRODUCT", "TENANT_ID", "SESSION_ID", "CONVERSATION_ID",
    "MESSAGE_ID", "ROLE", "MODEL", "IS_REQUEST", "INPUT_TOKENS", "CACHED_INPUT_TOKENS", "OUTPUT_TOKENS",
    "REASONING_TOKENS", "TOOL_CALL_ID", "TOOL_STATUS", "ERROR_TYPE", "END_REASON", "HANDOFF", "RESOLVED",
    "FEEDBACK_SCORE", "FEEDBACK_KIND", "FEEDBACK_RAW_VALUE", "FEEDBACK_COMMENT", "PERSON_ID",
)


def session_split_ctes(db: str, where: str, gaps: Mapping[str, object] | None) -> str:
    """``ev`` (EVENT_FACTS rows of ``where`` with their person), ``gap`` and ``sev``: the events with
    ``SOURCE_SESSION_KEY`` (the session id, or ``conversation:<id>``) and the derived ``SESSION_KEY``.

    A session id's events, in time order, start a new session after a pause longer than the
    platform's inactivity gap (the platform of the id's first event from a user-facing platform, as
    the session's PLATFORM). The first part keeps the key; later parts get ``#2``, ``#3``… Every
    run recomputes all parts of a touched session id from all its events, so a late event joins the
    part its event time falls in (or bridges two parts into one) instead of stretching a session."""
    user_facing = ", ".join(f"'{p}'" for p in USER_FACING_PLATFORMS)
    cols = ", ".join(f"g.{c}" for c in _SPLIT_COLUMNS)
    return f"""{events_cte(db, where)},
gap AS (
  SELECT ev.*, ev.SESSION_KEY AS SOURCE_SESSION_KEY,
    CASE WHEN DATEDIFF('microsecond', LAG(ev.EVENT_TIME) OVER (PARTITION BY ev.SESSION_KEY
        ORDER BY ev.EVENT_TIME, ev.EVENT_ID), ev.EVENT_TIME)
      > {session_gap_us_sql('sp.PLATFORM', gaps)} THEN 1 ELSE 0 END AS NEW_PART
  FROM ev
  JOIN (
    SELECT SESSION_KEY, PLATFORM FROM (
      SELECT SESSION_KEY, PLATFORM, ROW_NUMBER() OVER (PARTITION BY SESSION_KEY
        ORDER BY (PLATFORM NOT IN ({user_facing})), EVENT_TIME, EVENT_ID) AS RN
      FROM ev) p WHERE RN = 1
  ) sp ON sp.SESSION_KEY = ev.SESSION_KEY
),
sev AS (
  SELECT {cols}, g.SOURCE_SESSION_KEY,
    CASE WHEN g.PART = 1 THEN g.SOURCE_SESSION_KEY ELSE g.SOURCE_SESSION_KEY || '#' || CAST(g.PART AS VARCHAR) END
      AS SESSION_KEY
  FROM (
    SELECT gap.*, CAST(1 + SUM(NEW_PART) OVER (PARTITION BY SOURCE_SESSION_KEY ORDER BY EVENT_TIME, EVENT_ID
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS NUMBER(38,0)) AS PART
    FROM gap
  ) g
)"""


def sessions_insert_sql(db: str, gaps: Mapping[str, object] | None = None) -> str:
    escal = ", ".join(f"'{r}'" for r in ESCALATION_REASONS)
    user_facing = ", ".join(f"'{p}'" for p in USER_FACING_PLATFORMS)
    where = f"f.SESSION_KEY IN (SELECT w.SESSION_KEY FROM {db}.ANALYTICS.WORK_SESSIONS w)"
    return f"""
INSERT INTO {db}.ANALYTICS.CONVERSATION_SESSIONS (
  SESSION_KEY, SOURCE_SESSION_KEY, SESSION_ID, PERSON_ID, PLATFORM, PRODUCT, TENANT_ID, STARTED_AT, ENDED_AT,
  DURATION_S, EVENT_COUNT, CONVERSATION_COUNT, USER_MESSAGES, ASSISTANT_MESSAGES, TOOL_CALLS, TOOL_FAILURES,
  INPUT_TOKENS, CACHED_INPUT_TOKENS, OUTPUT_TOKENS, REASONING_TOKENS, COST_USD, UNPRICED_REQUESTS,
  FIRST_RESPONSE_LATENCY_MS, MEDIAN_RESPONSE_LATENCY_MS, OUTCOME, FEEDBACK_COUNT,
  LATEST_FEEDBACK_SCORE, LATEST_FEEDBACK_KIND)
WITH {session_split_ctes(db, where, gaps)},
{priced_requests_cte(db, "sev")},
ranked AS (
  SELECT sev.*,
    ROW_NUMBER() OVER (PARTITION BY SESSION_KEY ORDER BY (PERSON_ID IS NULL), EVENT_TIME, EVENT_ID) AS PERSON_RANK,
    ROW_NUMBER() OVER (PARTITION BY SESSION_KEY
      ORDER BY (PLATFORM NOT IN ({user_facing})), EVENT_TIME, EVENT_ID) AS PLATFORM_RANK,
    ROW_NUMBER() OVER (PARTITION BY SESSION_KEY ORDER BY (PRODUCT IS NULL), EVENT_TIME, EVENT_ID) AS PRODUCT_RANK,
    ROW_NUMBER() OVER (PARTITION BY SESSION_KEY ORDER BY (TENANT_ID IS NULL), EVENT_TIME, EVENT_ID) AS TENANT_RANK,
    ROW_NUMBER() OVER (PARTITION BY SESSION_KEY ORDER BY (SESSION_ID IS NULL), EVENT_TIME, EVENT_ID) AS SID_RANK,
    CASE WHEN EVENT_TYPE = 'feedback.submitted' THEN ROW_NUMBER() OVER (PARTITION BY SESSION_KEY
      ORDER BY (EVENT_TYPE = 'feedback.submitted') DESC, EVENT_TIME DESC, EVENT_ID DESC) END AS FEEDBACK_RANK,
    CASE WHEN EVENT_TYPE = 'message.sent' AND ROLE = 'assistant' THEN ROW_NUMBER() OVER (PARTITION BY SESSION_KEY
      ORDER BY (EVENT_TYPE = 'message.sent' AND ROLE = 'assistant') DESC, EVENT_TIME DESC, EVENT_ID DESC)
      END AS LAST_ASSISTANT_RANK,
    MAX(CASE WHEN EVENT_TYPE = 'message.sent' AND ROLE = 'user' THEN EVENT_TIME END) OVER (
      PARTITION BY SESSION_KEY ORDER BY EVENT_TIME, EVENT_ID ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
      AS LAST_USER_AT
  FROM sev
),
latency AS (
  SELECT SESSION_KEY, EVENT_TIME, EVENT_ID,
    CAST(FLOOR(DATEDIFF('microsecond', LAST_USER_AT, EVENT_TIME) / 1000) AS NUMBER(38,0)) AS LATENCY_MS,
    ROW_NUMBER() OVER (PARTITION BY SESSION_KEY ORDER BY EVENT_TIME, EVENT_ID) AS RESPONSE_RANK
  FROM ranked
  WHERE EVENT_TYPE = 'message.sent' AND ROLE = 'assistant' AND LAST_USER_AT IS NOT NULL
),
latency_by_session AS (
  SELECT SESSION_KEY, MAX(CASE WHEN RESPONSE_RANK = 1 THEN LATENCY_MS END) AS FIRST_RESPONSE_LATENCY_MS,
    MEDIAN(LATENCY_MS) AS MEDIAN_RESPONSE_LATENCY_MS
  FROM latency GROUP BY SESSION_KEY
),
cost_by_session AS (
  SELECT SESSION_KEY, SUM(INPUT_TOKENS) AS INPUT_TOKENS, SUM(CACHED_INPUT_TOKENS) AS CACHED_INPUT_TOKENS,
    SUM(OUTPUT_TOKENS) AS OUTPUT_TOKENS, SUM(REASONING_TOKENS) AS REASONING_TOKENS, SUM(COST_USD) AS COST_USD,
    SUM(CASE WHEN PRICED THEN 0 ELSE 1 END) AS UNPRICED_REQUESTS
  FROM priced GROUP BY SESSION_KEY
),
agg AS (
  SELECT SESSION_KEY, MAX(SOURCE_SESSION_KEY) AS SOURCE_SESSION_KEY,
    MAX(CASE WHEN SID_RANK = 1 THEN SESSION_ID END) AS SESSION_ID,
    MAX(CASE WHEN PERSON_RANK = 1 THEN PERSON_ID END) AS PERSON_ID,
    MAX(CASE WHEN PLATFORM_RANK = 1 THEN PLATFORM END) AS PLATFORM,
    MAX(CASE WHEN PRODUCT_RANK = 1 THEN PRODUCT END) AS PRODUCT,
    MAX(CASE WHEN TENANT_RANK = 1 THEN TENANT_ID END) AS TENANT_ID,
    MIN(EVENT_TIME) AS STARTED_AT, MAX(EVENT_TIME) AS ENDED_AT, COUNT(*) AS EVENT_COUNT,
    COUNT(DISTINCT CONVERSATION_ID) AS CONVERSATION_COUNT,
    COUNT(DISTINCT CASE WHEN EVENT_TYPE = 'message.sent' AND ROLE = 'user'
      THEN COALESCE(MESSAGE_ID, EVENT_ID) END) AS USER_MESSAGES,
    COUNT(DISTINCT CASE WHEN EVENT_TYPE = 'message.sent' AND ROLE = 'assistant'
      THEN COALESCE(MESSAGE_ID, EVENT_ID) END) AS ASSISTANT_MESSAGES,
    COUNT(DISTINCT CASE WHEN EVENT_TYPE IN ('tool_call.started', 'tool_call.completed')
      THEN COALESCE(TOOL_CALL_ID, EVENT_ID) END) AS TOOL_CALLS,
    COUNT(DISTINCT CASE WHEN EVENT_TYPE = 'tool_call.completed'
      AND TOOL_STATUS IN ('error', 'timeout')
      THEN COALESCE(TOOL_CALL_ID, EVENT_ID) END) AS TOOL_FAILURES,
    SUM(CASE WHEN EVENT_TYPE = 'feedback.submitted' THEN 1 ELSE 0 END) AS FEEDBACK_COUNT,
    MAX(CASE WHEN FEEDBACK_RANK = 1 THEN FEEDBACK_SCORE END) AS LATEST_FEEDBACK_SCORE,
    MAX(CASE WHEN FEEDBACK_RANK = 1 THEN FEEDBACK_KIND END) AS LATEST_FEEDBACK_KIND,
    MAX(CASE WHEN (EVENT_TYPE = 'session.ended' AND (ERROR_TYPE IS NOT NULL OR END_REASON = 'error'))
              OR (LAST_ASSISTANT_RANK = 1 AND ERROR_TYPE IS NOT NULL)
             THEN 1 ELSE 0 END) AS HAS_ERROR,
    MAX(CASE WHEN (EVENT_TYPE = 'conversation.ended' AND HANDOFF)
              OR (EVENT_TYPE IN ('session.ended', 'conversation.ended') AND END_REASON IN ({escal}))
             THEN 1 ELSE 0 END) AS HAS_ESCALATION,
    MAX(CASE WHEN EVENT_TYPE = 'conversation.ended' AND RESOLVED THEN 1 ELSE 0 END)
      AS HAS_RESOLVED,
    MAX(CASE WHEN EVENT_TYPE = 'message.sent' AND ROLE = 'user' THEN EVENT_TIME END) AS LAST_USER_MESSAGE_AT,
    MAX(CASE WHEN EVENT_TYPE = 'message.sent' AND ROLE = 'assistant' THEN EVENT_TIME END)
      AS LAST_ASSISTANT_MESSAGE_AT
  FROM ranked GROUP BY SESSION_KEY
)
SELECT a.SESSION_KEY, a.SOURCE_SESSION_KEY, a.SESSION_ID, a.PERSON_ID, a.PLATFORM, a.PRODUCT, a.TENANT_ID,
  a.STARTED_AT, a.ENDED_AT,
  DATEDIFF('microsecond', a.STARTED_AT, a.ENDED_AT) / 1000000.0, a.EVENT_COUNT, a.CONVERSATION_COUNT,
  a.USER_MESSAGES, a.ASSISTANT_MESSAGES, a.TOOL_CALLS, a.TOOL_FAILURES,
  COALESCE(c.INPUT_TOKENS, 0), COALESCE(c.CACHED_INPUT_TOKENS, 0), COALESCE(c.OUTPUT_TOKENS, 0),
  COALESCE(c.REASONING_TOKENS, 0), COALESCE(c.COST_USD, 0), COALESCE(c.UNPRICED_REQUESTS, 0),
  l.FIRST_RESPONSE_LATENCY_MS, l.MEDIAN_RESPONSE_LATENCY_MS,
  CASE WHEN a.HAS_ERROR = 1 THEN 'error'
       WHEN a.HAS_ESCALATION = 1 THEN 'escalated'
       WHEN a.HAS_RESOLVED = 1 OR a.LAST_ASSISTANT_MESSAGE_AT > a.LAST_USER_MESSAGE_AT THEN 'completed'
       ELSE 'abandoned' END,
  a.FEEDBACK_COUNT, a.LATEST_FEEDBACK_SCORE, a.LATEST_FEEDBACK_KIND
FROM agg a
LEFT JOIN cost_by_session c ON c.SESSION_KEY = a.SESSION_KEY
LEFT JOIN latency_by_session l ON l.SESSION_KEY = a.SESSION_KEY
"""


# --------------------------------------------------------------------------------------------
# TOKEN_COST_USAGE
# --------------------------------------------------------------------------------------------

def hours_sql(db: str) -> str:
    """Hours with a request that is new or belongs to a touched session."""
    return (f"INSERT OVERWRITE INTO {db}.ANALYTICS.WORK_HOURS (HOUR) "
            f"SELECT DISTINCT f.HOUR FROM {db}.ANALYTICS.EVENT_FACTS f WHERE f.IS_REQUEST AND ("
            f"f.EVENT_ID IN (SELECT w.EVENT_ID FROM {db}.ANALYTICS.WORK_EVENTS w) "
            f"OR f.SESSION_KEY IN (SELECT s.SESSION_KEY FROM {db}.ANALYTICS.WORK_SESSIONS s))")


def token_cost_insert_sql(db: str, unknown: str) -> str:
    where = f"f.IS_REQUEST AND f.HOUR IN (SELECT h.HOUR FROM {db}.ANALYTICS.WORK_HOURS h)"
    return f"""
INSERT INTO {db}.ANALYTICS.TOKEN_COST_USAGE (HOUR, TENANT_ID, PRODUCT, PLATFORM, MODEL, REQUESTS, INPUT_TOKENS,
  CACHED_INPUT_TOKENS, OUTPUT_TOKENS, REASONING_TOKENS, COST_USD, PRICED)
WITH {events_cte(db, where)},
{priced_requests_cte(db)}
SELECT p.HOUR, COALESCE(p.TENANT_ID, s.TENANT_ID, '{unknown}'), COALESCE(p.PRODUCT, s.PRODUCT, '{unknown}'),
  COALESCE(s.PLATFORM, p.PLATFORM), COALESCE(p.MODEL, '{unknown}'), COUNT(*), SUM(p.INPUT_TOKENS),
  SUM(p.CACHED_INPUT_TOKENS), SUM(p.OUTPUT_TOKENS), SUM(p.REASONING_TOKENS), SUM(p.COST_USD),
  MIN(CASE WHEN p.PRICED THEN 1 ELSE 0 END) = 1
FROM priced p
LEFT JOIN {db}.ANALYTICS.CONVERSATION_SESSIONS s ON s.SOURCE_SESSION_KEY = p.SESSION_KEY
  AND p.EVENT_TIME BETWEEN s.STARTED_AT AND s.ENDED_AT
GROUP BY 1, 2, 3, 4, 5
"""


# --------------------------------------------------------------------------------------------
# USER_FEEDBACK
# --------------------------------------------------------------------------------------------

def feedback_units_sql(db: str) -> str:
    """Feedback that is new, belongs to a touched session, or rates a message that just arrived."""
    return (
        f"INSERT OVERWRITE INTO {db}.ANALYTICS.WORK_FEEDBACK (EVENT_ID, MESSAGE_ID, SESSION_KEY) "
        f"SELECT f.EVENT_ID, f.MESSAGE_ID, f.SESSION_KEY FROM {db}.ANALYTICS.EVENT_FACTS f "
        f"WHERE f.EVENT_TYPE = 'feedback.submitted' AND ("
        f" f.EVENT_ID IN (SELECT w.EVENT_ID FROM {db}.ANALYTICS.WORK_EVENTS w)"
        f" OR f.SESSION_KEY IN (SELECT s.SESSION_KEY FROM {db}.ANALYTICS.WORK_SESSIONS s)"
        f" OR f.MESSAGE_ID IN (SELECT w.MESSAGE_ID FROM {db}.ANALYTICS.WORK_EVENTS w"
        f"   WHERE w.EVENT_TYPE = 'message.sent' AND w.MESSAGE_ID IS NOT NULL))"
    )


def feedback_insert_sql(db: str) -> str:
    # The semi-joins on WORK_FEEDBACK keep the embedded engine from hashing every message of
    # EVENT_FACTS to find the few that feedback rates (it cannot size the ev CTE).
    fb_where = f"f.EVENT_ID IN (SELECT w.EVENT_ID FROM {db}.ANALYTICS.WORK_FEEDBACK w)"
    return f"""
INSERT INTO {db}.ANALYTICS.USER_FEEDBACK (FEEDBACK_EVENT_ID, FEEDBACK_AT, PERSON_ID, PLATFORM, PRODUCT, TENANT_ID,
  SESSION_KEY, CONVERSATION_ID, MESSAGE_ID, SCORE, KIND, RAW_VALUE, COMMENT, RATED_MESSAGE_EVENT_ID,
  RATED_MESSAGE_ROLE, RATED_MESSAGE_AT, MODEL)
WITH {events_cte(db, fb_where)},
rated AS (
  SELECT f.EVENT_ID AS FEEDBACK_EVENT_ID, m.EVENT_ID, m.ROLE, m.EVENT_TIME, m.MODEL,
    ROW_NUMBER() OVER (PARTITION BY f.EVENT_ID ORDER BY (m.MODEL IS NULL), m.EVENT_TIME, m.EVENT_ID) AS RN
  FROM ev f JOIN {db}.ANALYTICS.EVENT_FACTS m ON m.MESSAGE_ID = f.MESSAGE_ID AND m.EVENT_TYPE = 'message.sent'
  WHERE m.MESSAGE_ID IN (SELECT w.MESSAGE_ID FROM {db}.ANALYTICS.WORK_FEEDBACK w)
),
reply AS (
  SELECT f.EVENT_ID AS FEEDBACK_EVENT_ID, m.MODEL,
    ROW_NUMBER() OVER (PARTITION BY f.EVENT_ID ORDER BY m.EVENT_TIME DESC, m.EVENT_ID DESC) AS RN
  FROM ev f JOIN {db}.ANALYTICS.EVENT_FACTS m ON m.SESSION_KEY = f.SESSION_KEY
  WHERE m.EVENT_TYPE = 'message.sent' AND m.ROLE = 'assistant' AND m.MODEL IS NOT NULL
    AND m.EVENT_TIME <= f.EVENT_TIME
    AND m.SESSION_KEY IN (SELECT w.SESSION_KEY FROM {db}.ANALYTICS.WORK_FEEDBACK w)
)
SELECT f.EVENT_ID, f.EVENT_TIME, f.PERSON_ID, f.PLATFORM, f.PRODUCT, f.TENANT_ID,
  COALESCE(s.SESSION_KEY, f.SESSION_KEY), f.CONVERSATION_ID, f.MESSAGE_ID, f.FEEDBACK_SCORE, f.FEEDBACK_KIND,
  f.FEEDBACK_RAW_VALUE, f.FEEDBACK_COMMENT,
  r.EVENT_ID, r.ROLE, r.EVENT_TIME, COALESCE(r.MODEL, p.MODEL)
FROM ev f
LEFT JOIN rated r ON r.FEEDBACK_EVENT_ID = f.EVENT_ID AND r.RN = 1
LEFT JOIN reply p ON p.FEEDBACK_EVENT_ID = f.EVENT_ID AND p.RN = 1
-- the part of the session (split at inactivity gaps) the feedback was given in
LEFT JOIN {db}.ANALYTICS.CONVERSATION_SESSIONS s ON s.SOURCE_SESSION_KEY = f.SESSION_KEY
  AND f.EVENT_TIME BETWEEN s.STARTED_AT AND s.ENDED_AT
"""


# --------------------------------------------------------------------------------------------
# USER_JOURNEYS
# --------------------------------------------------------------------------------------------

def journeys_insert_sql(db: str) -> str:
    return f"""
INSERT INTO {db}.ANALYTICS.USER_JOURNEYS (PERSON_ID, SESSION_SEQ, SESSION_KEY, PLATFORM, PRODUCT, STARTED_AT,
  ENDED_AT, OUTCOME, PREVIOUS_PLATFORM, PLATFORM_SWITCH, PLATFORMS_SO_FAR, GAP_FROM_PREVIOUS_S)
WITH s AS (
  SELECT c.PERSON_ID, c.SESSION_KEY, c.PLATFORM, c.PRODUCT, c.STARTED_AT, c.ENDED_AT, c.OUTCOME,
    ROW_NUMBER() OVER (PARTITION BY c.PERSON_ID ORDER BY c.STARTED_AT, c.SESSION_KEY) AS SESSION_SEQ
  FROM {db}.ANALYTICS.CONVERSATION_SESSIONS c
  WHERE c.PERSON_ID IN (SELECT w.PERSON_ID FROM {db}.ANALYTICS.WORK_PERSONS w)
), marked AS (
  SELECT s.*,
    CASE WHEN ROW_NUMBER() OVER (PARTITION BY s.PERSON_ID, s.PLATFORM ORDER BY s.SESSION_SEQ) = 1 THEN 1 ELSE 0 END
      AS NEW_PLATFORM,
    LAG(s.PLATFORM) OVER (PARTITION BY s.PERSON_ID ORDER BY s.SESSION_SEQ) AS PREVIOUS_PLATFORM,
    LAG(s.ENDED_AT) OVER (PARTITION BY s.PERSON_ID ORDER BY s.SESSION_SEQ) AS PREVIOUS_ENDED_AT
  FROM s
)
SELECT q.PERSON_ID, q.SESSION_SEQ, q.SESSION_KEY, q.PLATFORM, q.PRODUCT, q.STARTED_AT, q.ENDED_AT, q.OUTCOME,
  q.PREVIOUS_PLATFORM, COALESCE(q.PREVIOUS_PLATFORM <> q.PLATFORM, FALSE),
  SUM(q.NEW_PLATFORM) OVER (PARTITION BY q.PERSON_ID ORDER BY q.SESSION_SEQ
    ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW),
  CASE WHEN q.PREVIOUS_ENDED_AT IS NOT NULL THEN DATEDIFF('microsecond', q.PREVIOUS_ENDED_AT, q.STARTED_AT) / 1000000.0
  END
FROM marked q
"""


# --------------------------------------------------------------------------------------------
# PLATFORM_ENGAGEMENT_DAILY
# --------------------------------------------------------------------------------------------

def days_sql(db: str, unknown: str) -> str:
    """Days whose rows can change. A touched session (as it was and as it is) changes its day and,
    through retention, the cohorts 1, 7 and 30 days before it. It can also move a person's first
    day on a platform and product, which changes that day's cohort: the earliest day of the
    person's other sessions there, when a touched session of theirs is not later than it. (Every
    session of a person whose identity changed is itself touched: ``changed_id_sessions_sql``.)"""
    w = f"{db}.ANALYTICS"
    touched_sessions = f"SELECT w.SESSION_KEY FROM {w}.WORK_SESSIONS w"
    return f"""
INSERT OVERWRITE INTO {w}.WORK_DAYS (DAY)
WITH touched AS (
  SELECT o.PERSON_ID, o.DAY FROM {w}.WORK_OLD_SESSIONS o WHERE o.DAY IS NOT NULL
  UNION
  SELECT c.PERSON_ID, TO_DATE(c.STARTED_AT) FROM {w}.CONVERSATION_SESSIONS c
  WHERE c.SOURCE_SESSION_KEY IN ({touched_sessions})
), earliest_touched AS (
  SELECT PERSON_ID, MIN(DAY) AS DAY FROM touched WHERE PERSON_ID IS NOT NULL GROUP BY PERSON_ID
), other_firsts AS (
  SELECT c.PERSON_ID, MIN(TO_DATE(c.STARTED_AT)) AS DAY FROM {w}.CONVERSATION_SESSIONS c
  WHERE c.PERSON_ID IN (SELECT p.PERSON_ID FROM {w}.WORK_PERSONS p)
    AND c.SOURCE_SESSION_KEY NOT IN ({touched_sessions})
  GROUP BY c.PERSON_ID, c.PLATFORM, COALESCE(c.PRODUCT, '{unknown}')
)
SELECT DATEADD('day', -n.N, t.DAY) FROM touched t
CROSS JOIN (SELECT 0 AS N UNION ALL SELECT 1 UNION ALL SELECT 7 UNION ALL SELECT 30) n
UNION
SELECT f.DAY FROM other_firsts f JOIN earliest_touched e ON e.PERSON_ID = f.PERSON_ID WHERE e.DAY <= f.DAY
"""


def engagement_insert_sql(db: str, unknown: str) -> str:
    return f"""
INSERT INTO {db}.ANALYTICS.PLATFORM_ENGAGEMENT_DAILY (DAY, PLATFORM, PRODUCT, ACTIVE_PEOPLE, SESSIONS, MESSAGES,
  AVG_SESSION_S, NEW_PEOPLE, D1_RETAINED, D7_RETAINED, D30_RETAINED, D1_RETENTION, D7_RETENTION, D30_RETENTION)
WITH s AS (
  SELECT TO_DATE(c.STARTED_AT) AS DAY, c.PLATFORM, COALESCE(c.PRODUCT, '{unknown}') AS PRODUCT, c.PERSON_ID,
    c.USER_MESSAGES + c.ASSISTANT_MESSAGES AS MESSAGES, c.DURATION_S
  FROM {db}.ANALYTICS.CONVERSATION_SESSIONS c
), activity AS (
  -- only people active on a recomputed day can be in one of its cohorts
  SELECT DISTINCT DAY, PLATFORM, PRODUCT, PERSON_ID FROM s WHERE PERSON_ID IN (
    SELECT a.PERSON_ID FROM s a WHERE a.DAY IN (SELECT w.DAY FROM {db}.ANALYTICS.WORK_DAYS w))
), firsts AS (
  SELECT PERSON_ID, PLATFORM, PRODUCT, MIN(DAY) AS FIRST_DAY FROM activity GROUP BY PERSON_ID, PLATFORM, PRODUCT
), cohorts AS (
  SELECT f.FIRST_DAY AS DAY, f.PLATFORM, f.PRODUCT, COUNT(*) AS NEW_PEOPLE,
    COUNT(a1.PERSON_ID) AS D1_RETAINED, COUNT(a7.PERSON_ID) AS D7_RETAINED, COUNT(a30.PERSON_ID) AS D30_RETAINED
  FROM firsts f
  LEFT JOIN activity a1 ON a1.PERSON_ID = f.PERSON_ID AND a1.PLATFORM = f.PLATFORM AND a1.PRODUCT = f.PRODUCT
    AND a1.DAY = DATEADD('day', 1, f.FIRST_DAY)
  LEFT JOIN activity a7 ON a7.PERSON_ID = f.PERSON_ID AND a7.PLATFORM = f.PLATFORM AND a7.PRODUCT = f.PRODUCT
    AND a7.DAY = DATEADD('day', 7, f.FIRST_DAY)
  LEFT JOIN activity a30 ON a30.PERSON_ID = f.PERSON_ID AND a30.PLATFORM = f.PLATFORM AND a30.PRODUCT = f.PRODUCT
    AND a30.DAY = DATEADD('day', 30, f.FIRST_DAY)
  WHERE f.FIRST_DAY IN (SELECT w.DAY FROM {db}.ANALYTICS.WORK_DAYS w)
  GROUP BY 1, 2, 3
), daily AS (
  SELECT DAY, PLATFORM, PRODUCT, COUNT(DISTINCT PERSON_ID) AS ACTIVE_PEOPLE, COUNT(*) AS SESSIONS,
    SUM(MESSAGES) AS MESSAGES, AVG(DURATION_S) AS AVG_SESSION_S
  FROM s WHERE DAY IN (SELECT w.DAY FROM {db}.ANALYTICS.WORK_DAYS w)
  GROUP BY 1, 2, 3
)
SELECT d.DAY, d.PLATFORM, d.PRODUCT, d.ACTIVE_PEOPLE, d.SESSIONS, d.MESSAGES, d.AVG_SESSION_S,
  COALESCE(c.NEW_PEOPLE, 0), COALESCE(c.D1_RETAINED, 0), COALESCE(c.D7_RETAINED, 0), COALESCE(c.D30_RETAINED, 0),
  c.D1_RETAINED / NULLIF(c.NEW_PEOPLE, 0), c.D7_RETAINED / NULLIF(c.NEW_PEOPLE, 0),
  c.D30_RETAINED / NULLIF(c.NEW_PEOPLE, 0)
FROM daily d
LEFT JOIN cohorts c ON c.DAY = d.DAY AND c.PLATFORM = d.PLATFORM AND c.PRODUCT = d.PRODUCT
"""
