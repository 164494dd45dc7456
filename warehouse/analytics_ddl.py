"""Tables of the identity graph (``IDENTITY.*``) and the curated models (``ANALYTICS.*``).

The meaning of every column is in its COMMENT (and in docs/analytics.md); the models that fill
them are in ``warehouse/modeling``. Pure: no Django import at module level.
"""

from __future__ import annotations

from typing import Any

from warehouse.ddl import PERSONAL_DATA_RETENTION_DAYS, Column, Table, check_identifier, qualified, table_ddl

__all__ = [
    "EVENT_FACTS",
    "IDENTITY_OBSERVATIONS",
    "IDENTITY_IDENTIFIERS",
    "IDENTITY_PERSONS",
    "IDENTITY_MERGES",
    "MODEL_PRICES",
    "MODEL_STATE",
    "CONVERSATION_SESSIONS",
    "PLATFORM_ENGAGEMENT_DAILY",
    "TOKEN_COST_USAGE",
    "USER_FEEDBACK",
    "USER_JOURNEYS",
    "ANALYTICS_TABLES",
    "CURATED_TABLES",
    "WORK_TABLES",
    "UNKNOWN",
    "analytics_ddl",
    "analytics_ensure",
]

#: group-by value for a missing product, tenant, platform or model in the aggregate tables
UNKNOWN = "unknown"

_TS = "TIMESTAMP_NTZ(6)"
_N = "NUMBER(38,0)"


def _c(name: str, sql_type: str, comment: str, not_null: bool = False) -> Column:
    return Column(name, sql_type, comment=comment, not_null=not_null)


# --------------------------------------------------------------------------------------------
# identity graph
# --------------------------------------------------------------------------------------------

IDENTITY_OBSERVATIONS = Table(
    "IDENTITY", "OBSERVATIONS",
    (
        _c("OBSERVATION_KEY", "VARCHAR", "Hash of the identifier set (the key of this row).", True),
        _c("ANONYMOUS_ID", "VARCHAR", "identifiers.anonymous_id seen on the events (blocked values removed)."),
        _c("PLATFORM_USER_ID", "VARCHAR", "identifiers.platform_user_id."),
        _c("DEVICE_ID", "VARCHAR", "identifiers.device_id."),
        _c("EMAIL_SHA256", "VARCHAR", "identifiers.email_sha256."),
        _c("PREVIOUS_ANONYMOUS_ID", "VARCHAR", "user.identified previous_anonymous_id (an alias)."),
        _c("RULE", "VARCHAR", "identified (a user.identified event) | co_occurrence (ids on one event)."),
        _c("FIRST_SEEN_AT", _TS, "Earliest EVENT_TIME of an event carrying exactly this set."),
        _c("FIRST_EVENT_ID", "VARCHAR", "The earliest such event (ties: smallest EVENT_ID)."),
        _c("LINK_GROUP", "VARCHAR", "Identifiers connected by any observation, merged or refused: "
                                    "the unit that is re-stitched when something in it changes."),
    ),
    comment="Distinct identifier sets seen together on one event: the evidence the identity graph is built from.",
    primary_key=("OBSERVATION_KEY",),
    key_constraint=False,
    transient=True,
    retention_days=PERSONAL_DATA_RETENTION_DAYS,
)

IDENTITY_IDENTIFIERS = Table(
    "IDENTITY", "IDENTIFIERS",
    (
        _c("ID_KEY", "VARCHAR", "kind:value, e.g. email_sha256:9f86d0…", True),
        _c("ID_KIND", "VARCHAR", "email_sha256 | platform_user_id | device_id | anonymous_id", True),
        _c("ID_VALUE", "VARCHAR", "The identifier as sent.", True),
        _c("PERSON_ID", "VARCHAR", "The person this identifier belongs to.", True),
        _c("LINK_GROUP", "VARCHAR", "See IDENTITY.OBSERVATIONS.LINK_GROUP.", True),
        _c("FIRST_SEEN_AT", _TS, "Earliest EVENT_TIME the identifier was seen."),
        _c("FIRST_EVENT_ID", "VARCHAR", "The event it was first seen on."),
    ),
    comment="Each identifier belongs to exactly one person.",
    primary_key=("ID_KEY",),
    key_constraint=False,
    transient=True,
    retention_days=PERSONAL_DATA_RETENTION_DAYS,
)

IDENTITY_PERSONS = Table(
    "IDENTITY", "PERSONS",
    (
        _c("PERSON_ID", "VARCHAR", "Stable person id: p_ + hash of the anchor identifier.", True),
        _c("ANCHOR_ID_KEY", "VARCHAR", "The person’s earliest identifier (ties: kind priority, then value).", True),
        _c("IDENTIFIER_COUNT", _N, "Identifiers the person has.", True),
        _c("EMAIL_SHA256_COUNT", _N, "Of which e-mail hashes."),
        _c("PLATFORM_USER_ID_COUNT", _N, "Of which platform user ids."),
        _c("DEVICE_ID_COUNT", _N, "Of which device ids."),
        _c("ANONYMOUS_ID_COUNT", _N, "Of which anonymous ids."),
        _c("FIRST_SEEN_AT", _TS, "When the person was first seen."),
        _c("LINK_GROUP", "VARCHAR", "See IDENTITY.OBSERVATIONS.LINK_GROUP.", True),
    ),
    comment="One row per stitched person.",
    primary_key=("PERSON_ID",),
    key_constraint=False,
    transient=True,
    retention_days=PERSONAL_DATA_RETENTION_DAYS,
)

IDENTITY_MERGES = Table(
    "IDENTITY", "MERGES",
    (
        _c("MERGE_KEY", "VARCHAR", "Hash of (observation, absorbed anchor): the key of this row.", True),
        _c("EVENT_ID", "VARCHAR", "The event whose identifiers caused the merge (or the refusal).", True),
        _c("OBSERVATION_KEY", "VARCHAR", "IDENTITY.OBSERVATIONS row of that event.", True),
        _c("RULE", "VARCHAR", "identified | co_occurrence."),
        _c("DECISION", "VARCHAR", "merged | refused.", True),
        _c("REASON", "VARCHAR", "Why a merge was refused (the limit it would break)."),
        _c("PERSON_ANCHOR", "VARCHAR", "Anchor id of the person that absorbed the other (or kept apart)."),
        _c("MERGED_ANCHOR", "VARCHAR", "Anchor id of the person absorbed (or refused)."),
        _c("DECIDED_AT", _TS, "EVENT_TIME of the causing event."),
        _c("LINK_GROUP", "VARCHAR", "See IDENTITY.OBSERVATIONS.LINK_GROUP.", True),
    ),
    comment="Every merge of two persons, and every merge the rules refused, with the event that caused it.",
    primary_key=("MERGE_KEY",),
    key_constraint=False,
    transient=True,
    retention_days=PERSONAL_DATA_RETENTION_DAYS,
)

# --------------------------------------------------------------------------------------------
# runner state and reference data
# --------------------------------------------------------------------------------------------

MODEL_PRICES = Table(
    "ANALYTICS", "MODEL_PRICES",
    (
        _c("MODEL", "VARCHAR", "Model name as requested (REQUEST_MODEL, else RESPONSE_MODEL).", True),
        _c("TOKEN_KIND", "VARCHAR", "input | cached_input | output.", True),
        _c("USD_PER_MILLION", "NUMBER(20,6)", "Price in US dollars per million tokens.", True),
        _c("EFFECTIVE_FROM", _TS, "In force for hours starting at or after this (UTC).", True),
        _c("EFFECTIVE_TO", _TS, "Until the next price of the same model and kind (NULL: still in force)."),
        _c("VERSION", _N, "Catalog version of the change.", True),
    ),
    comment="Copy of the portal’s model price catalog, refreshed at the start of every model run.",
)

MODEL_STATE = Table(
    "ANALYTICS", "MODEL_STATE",
    (
        _c("MERGE_ID", "VARCHAR", "A merge into CANONICAL.EVENTS (RAW.MERGE_LOG) already modeled.", True),
        _c("MERGED_AT", _TS, "Its MERGED_AT.", True),
        _c("RUN_ID", "VARCHAR", "The model run that processed it."),
    ),
    comment="Which merges the curated models have processed: the incremental watermark.",
    primary_key=("MERGE_ID",),
    key_constraint=False,
)

# --------------------------------------------------------------------------------------------
# curated tables
# --------------------------------------------------------------------------------------------

EVENT_FACTS = Table(
    "ANALYTICS", "EVENT_FACTS",
    (
        _c("EVENT_ID", "VARCHAR", "CANONICAL.EVENTS.EVENT_ID.", True),
        _c("EVENT_TYPE", "VARCHAR", "Canonical event type.", True),
        _c("EVENT_TIME", _TS, "When it happened (UTC).", True),
        _c("HOUR", _TS, "EVENT_TIME truncated to the hour.", True),
        _c("PLATFORM", "VARCHAR", "Platform of the source.", True),
        _c("PRODUCT", "VARCHAR", "Product."),
        _c("TENANT_ID", "VARCHAR", "Tenant."),
        _c("SESSION_ID", "VARCHAR", "Platform session id."),
        _c("CONVERSATION_ID", "VARCHAR", "Conversation id."),
        _c("MESSAGE_ID", "VARCHAR", "Message the event is about."),
        _c("SESSION_KEY", "VARCHAR", "SESSION_ID, or conversation:<CONVERSATION_ID> "
                                     "(CONVERSATION_SESSIONS.SOURCE_SESSION_KEY)."),
        _c("PRIMARY_ID_KEY", "VARCHAR", "kind:value of the event’s highest-priority usable identifier: "
                                        "the person is IDENTITY.IDENTIFIERS.PERSON_ID of this key."),
        _c("ROLE", "VARCHAR", "message.sent: user | assistant | system | tool."),
        _c("MODEL", "VARCHAR", "message.sent: REQUEST_MODEL, else RESPONSE_MODEL."),
        _c("IS_REQUEST", "BOOLEAN", "An assistant message that reports tokens (priced in TOKEN_COST_USAGE).", True),
        _c("INPUT_TOKENS", _N, "Input tokens, cached included (0 when not reported)."),
        _c("CACHED_INPUT_TOKENS", _N, "Cache-read input tokens."),
        _c("OUTPUT_TOKENS", _N, "Output tokens, reasoning included."),
        _c("REASONING_TOKENS", _N, "Reasoning output tokens."),
        _c("TOOL_CALL_ID", "VARCHAR", "tool_call.*: the call id."),
        _c("TOOL_STATUS", "VARCHAR", "tool_call.completed: ok | error | timeout | cancelled."),
        _c("ERROR_TYPE", "VARCHAR", "message.sent, session.ended, tool_call.completed: the error type."),
        _c("END_REASON", "VARCHAR", "session.ended, conversation.ended: the reason, lower-cased."),
        _c("HANDOFF", "BOOLEAN", "conversation.ended: handed off to a person."),
        _c("RESOLVED", "BOOLEAN", "conversation.ended: resolved."),
        _c("FEEDBACK_SCORE", "FLOAT", "feedback.submitted: score in [-1, 1]."),
        _c("FEEDBACK_KIND", "VARCHAR", "feedback.submitted: thumbs | stars | text."),
        _c("FEEDBACK_RAW_VALUE", "VARCHAR", "feedback.submitted: what the platform sent."),
        _c("FEEDBACK_COMMENT", "VARCHAR", "feedback.submitted: the comment (personal data)."),
    ),
    comment="One typed row per canonical event with the attributes the curated models use (no message "
            "text): the models read it instead of re-parsing CANONICAL.EVENTS.ATTRIBUTES. Rebuildable.",
    primary_key=("EVENT_ID",),
    key_constraint=False,
    cluster_by="TO_DATE(EVENT_TIME)",
    transient=True,
    retention_days=PERSONAL_DATA_RETENTION_DAYS,
)

CONVERSATION_SESSIONS = Table(
    "ANALYTICS", "CONVERSATION_SESSIONS",
    (
        _c("SESSION_KEY", "VARCHAR", "SOURCE_SESSION_KEY for a session's first part; #2, #3… appended for the parts "
                                     "after each inactivity gap (docs/analytics.md, Sessions).", True),
        _c("SOURCE_SESSION_KEY", "VARCHAR", "SESSION_ID, or conversation:<CONVERSATION_ID> for events without one: "
                                            "what the events carry (EVENT_FACTS.SESSION_KEY).", True),
        _c("SESSION_ID", "VARCHAR", "The platform session id (NULL for conversation-only sources such as Slack)."),
        _c("PERSON_ID", "VARCHAR", "Stitched person (IDENTITY.IDENTIFIERS) of the session’s first identified event."),
        _c("PLATFORM", "VARCHAR", "Platform of the session’s first event from a user-facing platform "
                                  "(api only when every event came from the api).", True),
        _c("PRODUCT", "VARCHAR", "First product named by the session’s events."),
        _c("TENANT_ID", "VARCHAR", "First tenant named by the session’s events."),
        _c("STARTED_AT", _TS, "Earliest EVENT_TIME in the session (UTC).", True),
        _c("ENDED_AT", _TS, "Latest EVENT_TIME in the session (UTC).", True),
        _c("DURATION_S", "FLOAT", "ENDED_AT - STARTED_AT in seconds.", True),
        _c("EVENT_COUNT", _N, "Events in the session.", True),
        _c("CONVERSATION_COUNT", _N, "Distinct conversations in the session.", True),
        _c("USER_MESSAGES", _N, "Distinct user messages (message.sent, role user).", True),
        _c("ASSISTANT_MESSAGES", _N, "Distinct assistant messages (role assistant).", True),
        _c("TOOL_CALLS", _N, "Distinct tool calls (tool_call.started or .completed).", True),
        _c("TOOL_FAILURES", _N, "Tool calls completed with status error or timeout.", True),
        _c("INPUT_TOKENS", _N, "Input tokens, cached included.", True),
        _c("CACHED_INPUT_TOKENS", _N, "Input tokens read from the cache.", True),
        _c("OUTPUT_TOKENS", _N, "Output tokens, reasoning included.", True),
        _c("REASONING_TOKENS", _N, "Reasoning output tokens.", True),
        _c("COST_USD", "NUMBER(38,12)", "Sum of the priced requests’ cost (see TOKEN_COST_USAGE).", True),
        _c("UNPRICED_REQUESTS", _N, "Requests whose model had no price in force.", True),
        _c("FIRST_RESPONSE_LATENCY_MS", _N, "First assistant message time minus the user message before it."),
        _c("MEDIAN_RESPONSE_LATENCY_MS", "FLOAT", "Median over assistant messages of that gap."),
        _c("OUTCOME", "VARCHAR", "error | escalated | completed | abandoned (docs/analytics.md).", True),
        _c("FEEDBACK_COUNT", _N, "feedback.submitted events in the session.", True),
        _c("LATEST_FEEDBACK_SCORE", "FLOAT", "Score in [-1, 1] of the latest feedback."),
        _c("LATEST_FEEDBACK_KIND", "VARCHAR", "thumbs | stars | text."),
    ),
    comment="One row per session, across platforms, with its person, counts, tokens, cost, latency and outcome.",
    primary_key=("SESSION_KEY",),
    key_constraint=False,
    cluster_by="TO_DATE(STARTED_AT)",
    transient=True,
    retention_days=PERSONAL_DATA_RETENTION_DAYS,
)

PLATFORM_ENGAGEMENT_DAILY = Table(
    "ANALYTICS", "PLATFORM_ENGAGEMENT_DAILY",
    (
        _c("DAY", "DATE", "UTC day sessions started on.", True),
        _c("PLATFORM", "VARCHAR", "Session platform.", True),
        _c("PRODUCT", "VARCHAR", "Session product (’unknown’ when none).", True),
        _c("ACTIVE_PEOPLE", _N, "Distinct people with a session that day.", True),
        _c("SESSIONS", _N, "Sessions started that day.", True),
        _c("MESSAGES", _N, "User plus assistant messages of those sessions.", True),
        _c("AVG_SESSION_S", "FLOAT", "Average session duration in seconds."),
        _c("NEW_PEOPLE", _N, "People whose first session on this platform and product started that day "
                             "(the day’s cohort).", True),
        _c("D1_RETAINED", _N, "Of the cohort, people with a session on the same platform and product on day+1.", True),
        _c("D7_RETAINED", _N, "… on day+7.", True),
        _c("D30_RETAINED", _N, "… on day+30.", True),
        _c("D1_RETENTION", "FLOAT", "D1_RETAINED / NEW_PEOPLE (NULL without a cohort)."),
        _c("D7_RETENTION", "FLOAT", "D7_RETAINED / NEW_PEOPLE."),
        _c("D30_RETENTION", "FLOAT", "D30_RETAINED / NEW_PEOPLE."),
    ),
    comment="Per day x platform x product: active people, sessions, messages, new people and their retention.",
    primary_key=("DAY", "PLATFORM", "PRODUCT"),
    key_constraint=False,
    transient=True,
    retention_days=PERSONAL_DATA_RETENTION_DAYS,
)

TOKEN_COST_USAGE = Table(
    "ANALYTICS", "TOKEN_COST_USAGE",
    (
        _c("HOUR", _TS, "UTC hour of the requests (EVENT_TIME truncated).", True),
        _c("TENANT_ID", "VARCHAR", "Tenant (’unknown’ when none).", True),
        _c("PRODUCT", "VARCHAR", "Product (’unknown’ when none).", True),
        _c("PLATFORM", "VARCHAR", "Platform of the request’s session (the event’s own when no session).", True),
        _c("MODEL", "VARCHAR", "REQUEST_MODEL, else RESPONSE_MODEL.", True),
        _c("REQUESTS", _N, "Assistant messages that reported tokens.", True),
        _c("INPUT_TOKENS", _N, "Input tokens, cached included.", True),
        _c("CACHED_INPUT_TOKENS", _N, "Input tokens read from the cache.", True),
        _c("OUTPUT_TOKENS", _N, "Output tokens, reasoning included.", True),
        _c("REASONING_TOKENS", _N, "Reasoning output tokens.", True),
        _c("COST_USD", "NUMBER(38,12)", "(input-cached) x input price + cached x cached_input price + "
                                       "output x output price, at the prices in force at HOUR.", True),
        _c("PRICED", "BOOLEAN", "False when the model had no price in force at HOUR (COST_USD is then 0).", True),
    ),
    comment="Per hour x tenant x product x platform x model: tokens by kind, requests and cost.",
    primary_key=("HOUR", "TENANT_ID", "PRODUCT", "PLATFORM", "MODEL"),
    key_constraint=False,
    transient=True,
    retention_days=PERSONAL_DATA_RETENTION_DAYS,
)

USER_FEEDBACK = Table(
    "ANALYTICS", "USER_FEEDBACK",
    (
        _c("FEEDBACK_EVENT_ID", "VARCHAR", "EVENT_ID of the feedback.submitted event.", True),
        _c("FEEDBACK_AT", _TS, "When the feedback was given (UTC).", True),
        _c("PERSON_ID", "VARCHAR", "Person who gave it."),
        _c("PLATFORM", "VARCHAR", "Platform it was given on.", True),
        _c("PRODUCT", "VARCHAR", "Product."),
        _c("TENANT_ID", "VARCHAR", "Tenant."),
        _c("SESSION_KEY", "VARCHAR", "Session (ANALYTICS.CONVERSATION_SESSIONS)."),
        _c("CONVERSATION_ID", "VARCHAR", "Conversation."),
        _c("MESSAGE_ID", "VARCHAR", "The rated message."),
        _c("SCORE", "FLOAT", "Score in [-1, 1].", True),
        _c("KIND", "VARCHAR", "thumbs | stars | text."),
        _c("RAW_VALUE", "VARCHAR", "What the platform sent (e.g. 4 stars)."),
        _c("COMMENT", "VARCHAR", "The person’s comment (personal data)."),
        _c("RATED_MESSAGE_EVENT_ID", "VARCHAR", "message.sent event of the rated message (NULL until it arrives)."),
        _c("RATED_MESSAGE_ROLE", "VARCHAR", "Role of the rated message."),
        _c("RATED_MESSAGE_AT", _TS, "When the rated message was sent."),
        _c("MODEL", "VARCHAR", "Model of the rated message, else of the last assistant reply before the feedback "
                               "in the session."),
    ),
    comment="Each feedback event with the message, model, conversation, platform and person it rates.",
    primary_key=("FEEDBACK_EVENT_ID",),
    key_constraint=False,
    transient=True,
    retention_days=PERSONAL_DATA_RETENTION_DAYS,
)

USER_JOURNEYS = Table(
    "ANALYTICS", "USER_JOURNEYS",
    (
        _c("PERSON_ID", "VARCHAR", "Person.", True),
        _c("SESSION_SEQ", _N, "1 for the person’s first session, in STARTED_AT order.", True),
        _c("SESSION_KEY", "VARCHAR", "Session.", True),
        _c("PLATFORM", "VARCHAR", "Session platform.", True),
        _c("PRODUCT", "VARCHAR", "Session product."),
        _c("STARTED_AT", _TS, "Session start.", True),
        _c("ENDED_AT", _TS, "Session end.", True),
        _c("OUTCOME", "VARCHAR", "Session outcome.", True),
        _c("PREVIOUS_PLATFORM", "VARCHAR", "Platform of the person’s previous session."),
        _c("PLATFORM_SWITCH", "BOOLEAN", "True when PLATFORM differs from PREVIOUS_PLATFORM.", True),
        _c("PLATFORMS_SO_FAR", _N, "Distinct platforms up to and including this session.", True),
        _c("GAP_FROM_PREVIOUS_S", "FLOAT", "Seconds since the previous session ended."),
    ),
    comment="Each person’s sessions across platforms, in order, with the platform switches.",
    primary_key=("PERSON_ID", "SESSION_KEY"),
    key_constraint=False,
    transient=True,
    retention_days=PERSONAL_DATA_RETENTION_DAYS,
)

CURATED_TABLES: tuple[Table, ...] = (
    CONVERSATION_SESSIONS, PLATFORM_ENGAGEMENT_DAILY, TOKEN_COST_USAGE, USER_FEEDBACK, USER_JOURNEYS,
)
IDENTITY_TABLES: tuple[Table, ...] = (IDENTITY_OBSERVATIONS, IDENTITY_IDENTIFIERS, IDENTITY_PERSONS, IDENTITY_MERGES)


# --------------------------------------------------------------------------------------------
# the model runner's work tables
# --------------------------------------------------------------------------------------------

def _work(name: str, what: str, *columns: tuple[str, str]) -> Table:
    # scratch that can hold identifiers (WORK_IDS, WORK_CHANGED_IDS): no Time Travel at all
    return Table("ANALYTICS", name, tuple(Column(n, t) for n, t in columns),
                 comment=f"Model runner scratch, rewritten by every run: {what}.", transient=True, retention_days=0)


# Created once and rewritten with INSERT OVERWRITE by each run: one statement per list instead of
# a CREATE OR REPLACE and an INSERT (each statement has a fixed cost, on Snowflake too).
WORK_TABLES: tuple[Table, ...] = (
    _work("WORK_MERGES", "the landing merges this run processes", ("MERGE_ID", "VARCHAR"), ("MERGED_AT", _TS)),
    _work("WORK_EVENTS", "the events this run processes", ("EVENT_ID", "VARCHAR"), ("SESSION_KEY", "VARCHAR"),
          ("EVENT_TYPE", "VARCHAR"), ("EVENT_TIME", _TS), ("MESSAGE_ID", "VARCHAR")),
    _work("WORK_IDS", "identifiers of the new observations", ("ID_KEY", "VARCHAR")),
    _work("WORK_GROUPS", "existing link groups the new observations touch", ("LINK_GROUP", "VARCHAR")),
    _work("WORK_CHANGED_IDS", "identifiers whose person changed", ("ID_KIND", "VARCHAR"), ("ID_VALUE", "VARCHAR")),
    _work("WORK_SESSIONS", "sessions to recompute", ("SESSION_KEY", "VARCHAR")),
    _work("WORK_OLD_SESSIONS", "those sessions as they were", ("SESSION_KEY", "VARCHAR"), ("PERSON_ID", "VARCHAR"),
          ("DAY", "DATE")),
    _work("WORK_HOURS", "hours to recompute", ("HOUR", _TS)),
    _work("WORK_FEEDBACK", "feedback to recompute, with the message and session it rates",
          ("EVENT_ID", "VARCHAR"), ("MESSAGE_ID", "VARCHAR"), ("SESSION_KEY", "VARCHAR")),
    _work("WORK_PERSONS", "persons whose journeys to recompute", ("PERSON_ID", "VARCHAR")),
    _work("WORK_DAYS", "days to recompute", ("DAY", "DATE")),
)

ANALYTICS_TABLES: tuple[Table, ...] = (*IDENTITY_TABLES, MODEL_PRICES, MODEL_STATE, EVENT_FACTS, *CURATED_TABLES)
ANALYTICS_SCHEMAS: tuple[str, ...] = ("IDENTITY", "ANALYTICS")


def analytics_ddl(database: str) -> list[str]:
    db = check_identifier(database)
    return [
        *(f"CREATE SCHEMA IF NOT EXISTS {db}.{s}" for s in ANALYTICS_SCHEMAS),
        *(table_ddl(t, db) for t in (*ANALYTICS_TABLES, *WORK_TABLES)),
    ]


def analytics_ensure(conn: Any, *, database: str | None = None) -> int:
    """Create the IDENTITY and ANALYTICS schemas and tables if missing, and replace a work table
    whose columns are not this version's (idempotent). Returns the number of statements run."""
    from warehouse.connection import warehouse_errors

    db = check_identifier(database or conn.database)
    with warehouse_errors():
        cur = conn.cursor()
        try:
            # one query when everything exists already (every model run starts here)
            schemas = ", ".join(f"'{s}'" for s in ANALYTICS_SCHEMAS)
            cur.execute(f"SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM {db}.INFORMATION_SCHEMA.COLUMNS "  # noqa: S608
                        f"WHERE TABLE_SCHEMA IN ({schemas})")
            have: dict[tuple[str, str], set[str]] = {}
            for schema, name, column in cur.fetchall():
                have.setdefault((schema.upper(), name.upper()), set()).add(column.upper())
            stale = [t for t in WORK_TABLES if have.get((t.schema, t.name), set()) != {c.name for c in t.columns}]
            # A curated table of an older version (its columns differ) is rebuilt: dropped with every
            # other curated table and the processed-merge state, so the next run remodels every event.
            if any((t.schema, t.name) in have and have[(t.schema, t.name)] != {c.name for c in t.columns}
                   for t in CURATED_TABLES):
                stale += [t for t in (*CURATED_TABLES, MODEL_STATE) if t not in stale]
            if all((t.schema, t.name) in have for t in ANALYTICS_TABLES) and not stale:
                return 0
            statements = [
                *(f"DROP TABLE IF EXISTS {qualified(db, t)}" for t in stale if (t.schema, t.name) in have),
                *analytics_ddl(db),
            ]
            for sql in statements:
                cur.execute(sql)
        finally:
            cur.close()
    return len(statements)


def analytics_recreate(conn: Any, tables: tuple[Table, ...], *, database: str | None = None) -> None:
    """Drop and create ``tables`` empty (a full refresh: much faster than deleting every row of a
    table with a primary key on the embedded warehouse)."""
    from warehouse.connection import warehouse_errors

    db = check_identifier(database or conn.database)
    with warehouse_errors():
        cur = conn.cursor()
        try:
            for table in tables:
                cur.execute(f"DROP TABLE IF EXISTS {qualified(db, table)}")
                cur.execute(table_ddl(table, db))
        finally:
            cur.close()


def table_name(database: str, table: Table) -> str:
    return qualified(database, table)
