"""Reads for the analytics dashboard (``/analytics/`` and its ``data.json``): one function per chart.

Each warehouse read takes an open connection (``warehouse.connection``) and a ``DashboardWindow``,
runs one plain Snowflake SELECT on the curated tables (``warehouse.analytics_ddl``) and hands the
rows to a pure function that shapes them into what a chart draws: ``labels`` plus named
``series`` of numbers (a missing day is 0, a missing latency or retention is None, never guessed).
SQL text holds only checked table names and fixed clauses; every value is bound (hence the
``noqa: S608`` marks).

The window. A dashboard of the last 14 days by the wall clock is blank for a dataset whose newest
row is older than that (the demo data of a stopped stack, a restored backup, a test fixture), and a
blank page tells nobody anything. So the window ends today while the newest row in the curated
tables is inside it, and otherwise ends on the day of that newest row; the page then says that it
is showing older data. The 48-hour chart follows the same rule by the hour.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from warehouse.analytics_ddl import (
    CONVERSATION_SESSIONS,
    PLATFORM_ENGAGEMENT_DAILY,
    TOKEN_COST_USAGE,
    UNKNOWN,
    USER_FEEDBACK,
)
from warehouse.ddl import Table, check_identifier, qualified
from warehouse.load import warehouse_query

__all__ = [
    "DEFAULT_DAYS",
    "MAX_DAYS",
    "HOURS",
    "STALE_AFTER_S",
    "DashboardWindow",
    "window_days_clean",
    "window_clean",
    "window_auto",
    "window_pick",
    "dashboard_window",
    "engagement_and_retention",
    "messages_and_latency",
    "session_outcomes",
    "activity_by_hour",
    "token_cost_usage",
    "feedback_scores",
    "dashboard_kpis",
    "curated_tables_latest",
    "model_run_latest",
    "data_freshness",
    "dashboard_data",
    "ago_text",
]

DEFAULT_DAYS = 14
MAX_DAYS = 90
HOURS = 48
#: the hourly window (the default while there is less than a day of data)
PERIOD_HOURS = 24
#: the model runner runs every minute; five minutes without a successful run means it is stuck or stopped
STALE_AFTER_S = 300
#: platforms in the order the charts list them (others, if a source invents one, follow alphabetically)
PLATFORM_ORDER = ("web", "ios", "android", "slack", "voice", "api")
OUTCOME_ORDER = ("completed", "abandoned", "escalated", "error")
FEEDBACK_KIND_ORDER = ("thumbs", "stars", "text")
#: Scores are in [-1, 1]: thumbs map to -1/+1 and 1-5 stars to -1, -0.5, 0, 0.5, 1, so five buckets
#: centred on those values (edges halfway between them) keep every thumbs and stars score whole.
SCORE_BUCKETS: tuple[tuple[str, str], ...] = (
    ("-1", "score below -0.75"),
    ("-0.5", "-0.75 to below -0.25"),
    ("0", "-0.25 to 0.25"),
    ("+0.5", "above 0.25 to 0.75"),
    ("+1", "above 0.75"),
)
#: the per-day cost chart stacks this many models; the rest are summed as "other"
COST_CHART_MODELS = 8
RETENTION_DAYS = (1, 7, 30)
EMPTY_HELP = "No data yet: the model runner fills this every minute; run `python manage.py models_run`."


# --- the window ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DashboardWindow:
    """Days ``start``..``end`` (inclusive, UTC) and hours ``hour_start``..``hour_end`` (inclusive)."""

    days: int
    start: dt.date
    end: dt.date
    today: dt.date
    anchored_to_data: bool  # True: the data is older than the window, so it ends on the newest day with data
    hours: int
    hour_start: dt.datetime
    hour_end: dt.datetime
    hour_anchored_to_data: bool
    #: "day": the charts over time have a bar per day of start..end; "hour": a bar per hour of the
    #: last PERIOD_HOURS hours (hour_end's), for data of less than a day (start..end: the days they touch)
    granularity: str = "day"

    @property
    def hourly(self) -> bool:
        return self.granularity == "hour"

    @property
    def key(self) -> str:
        """The window's ``?window=`` value."""
        return f"{PERIOD_HOURS}h" if self.hourly else f"{self.days}d"

    @property
    def day_labels(self) -> list[str]:
        return [(self.start + dt.timedelta(days=i)).isoformat() for i in range(self.days)]

    @property
    def period_start(self) -> dt.datetime:
        return self.hour_end - dt.timedelta(hours=PERIOD_HOURS - 1)

    @property
    def labels(self) -> list[str]:
        """The time axis of the charts over time: days, or the period's hours."""
        if not self.hourly:
            return self.day_labels
        return [_hour_label(self.period_start + dt.timedelta(hours=i)) for i in range(PERIOD_HOURS)]

    def bucket(self, column: str) -> str:
        """SQL: the time bucket of a timestamp column (fixed text: ``column`` is a constant of this module)."""
        return f"DATE_TRUNC('hour', {column})" if self.hourly else f"TO_DATE({column})"

    def label_of(self, value: Any) -> str:
        """The label of a bucket value the warehouse returned."""
        return _hour_label(_timestamp(value)) if self.hourly else _date(value).isoformat()

    @property
    def hour_labels(self) -> list[str]:
        return [_hour_label(self.hour_start + dt.timedelta(hours=i)) for i in range(self.hours)]

    def bounds(self) -> dict[str, str]:
        """Bound parameters: [start, end_excl) for days, [hour_start, hour_end_excl) for hours and
        [period_start, period_end_excl) for the charts over time (the days, or the period's hours)."""
        return {
            "start": self.start.isoformat(),
            "end_excl": (self.end + dt.timedelta(days=1)).isoformat(),
            "hour_start": _naive_text(self.hour_start),
            "hour_end_excl": _naive_text(self.hour_end + dt.timedelta(hours=1)),
            "period_start": _naive_text(self.period_start) if self.hourly else self.start.isoformat(),
            "period_end_excl": _naive_text(self.hour_end + dt.timedelta(hours=1)) if self.hourly
            else (self.end + dt.timedelta(days=1)).isoformat(),
        }

    def as_json(self) -> dict[str, Any]:
        if self.hourly:
            end = self.hour_end + dt.timedelta(hours=1)
            text = (f"The last {PERIOD_HOURS} hours by the hour: {_hour_label(self.period_start)[:-1]} to "
                    f"{_hour_label(end)[:-1]} (UTC)")
            text += (", ending with the newest data: nothing newer in the curated tables." if self.hour_anchored_to_data
                     else ".")
        elif self.anchored_to_data:
            text = (f"{self.days} day{'s' if self.days != 1 else ''} up to {self.end.isoformat()}, the newest day "
                    f"with data: nothing newer in the curated tables.")
        else:
            text = f"The last {self.days} day{'s' if self.days != 1 else ''}: {self.start.isoformat()} to " \
                   f"{self.end.isoformat()} (UTC)."
        return {
            "key": self.key, "granularity": self.granularity,
            "days": self.days, "start": self.start.isoformat(), "end": self.end.isoformat(),
            "today": self.today.isoformat(), "anchored_to_data": self.anchored_to_data, "text": text,
            "hours": self.hours, "hour_start": _hour_label(self.hour_start), "hour_end": _hour_label(self.hour_end),
            "hour_anchored_to_data": self.hour_anchored_to_data,
        }


def window_clean(value: Any) -> str | None:
    """``?window=``: ``24h`` (the last 24 hours by the hour) or days as ``7d`` or ``7`` (1 to MAX_DAYS);
    None when missing or blank (the page picks: see ``window_auto``); ValueError naming the value otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = str(value).strip().lower()
    if text in (f"{PERIOD_HOURS}h", "hourly"):
        return f"{PERIOD_HOURS}h"
    digits = text[:-1] if text.endswith("d") else text
    if digits.isdigit() and 1 <= int(digits) <= MAX_DAYS:
        return f"{int(digits)}d"
    raise ValueError(f"window must be {PERIOD_HOURS}h or a number of days from 1 to {MAX_DAYS} (7d, 30d…), "
                     f"not {str(value)[:20]!r}")


def window_auto(*, oldest: dt.datetime | None, newest: dt.datetime | None) -> str:
    """The default window (pure): hourly while the curated tables hold less than a day of sessions (a
    fresh demo: 14 days would be 13 empty bars and one full one), else DEFAULT_DAYS days."""
    if oldest is not None and newest is not None and newest - oldest < dt.timedelta(days=1):
        return f"{PERIOD_HOURS}h"
    return f"{DEFAULT_DAYS}d"


def window_days_clean(value: Any, *, default: int = DEFAULT_DAYS) -> int:
    """``?days=``: a whole number from 1 to MAX_DAYS (missing or blank: ``default``); ValueError otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        days = int(str(value).strip())
    except ValueError:
        days = 0
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be a whole number from 1 to {MAX_DAYS}, not {str(value)[:20]!r}")
    return days


def window_pick(*, now: dt.datetime, days: int, hours: int, latest_day: dt.date | None,
                latest_hour: dt.datetime | None, granularity: str = "day") -> DashboardWindow:
    """The window for ``now`` (pure): ends today / this hour unless the newest data is older than the
    window. Hourly: the PERIOD_HOURS hours up to this hour (or the newest data's), and the days they touch."""
    now = _utc(now)
    today = now.date()
    end, anchored = today, False
    if latest_day is not None and latest_day < today - dt.timedelta(days=days - 1):
        end, anchored = latest_day, True
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    hour_end, hour_anchored = this_hour, False
    if latest_hour is not None:
        latest_hour = _utc(latest_hour).replace(minute=0, second=0, microsecond=0)
        if latest_hour < this_hour - dt.timedelta(hours=hours - 1):
            hour_end, hour_anchored = latest_hour, True
    start = end - dt.timedelta(days=days - 1)
    if granularity == "hour":
        start, end = (hour_end - dt.timedelta(hours=PERIOD_HOURS - 1)).date(), hour_end.date()
        days, anchored = (end - start).days + 1, hour_anchored
    return DashboardWindow(
        days=days, start=start, end=end, today=today, anchored_to_data=anchored,
        hours=hours, hour_start=hour_end - dt.timedelta(hours=hours - 1), hour_end=hour_end,
        hour_anchored_to_data=hour_anchored, granularity=granularity,
    )


def dashboard_window(conn: Any, *, window: str | None = None, hours: int = HOURS,
                     now: dt.datetime) -> tuple[DashboardWindow, dict]:
    """The window (see the module doc; ``window`` as ``window_clean`` gives it, None: ``window_auto``)
    and the newest session times (for the freshness banner)."""
    latest = curated_tables_latest(conn)
    if window is None:
        window = window_auto(oldest=_timestamp(latest["session_oldest_at"]),
                             newest=_timestamp(latest["session_ended_at"]))
    hourly = window.endswith("h")
    days = 1 if hourly else int(window[:-1])
    days_seen = [d for d in (_date(latest["engagement_day"]), _date(latest["session_started_at"]),
                             _date(latest["usage_hour"]), _date(latest["feedback_at"])) if d is not None]
    hours_seen = [h for h in (_timestamp(latest["session_started_at"]), _timestamp(latest["usage_hour"]))
                  if h is not None]
    picked = window_pick(now=now, days=days, hours=hours, latest_day=max(days_seen, default=None),
                         latest_hour=max(hours_seen, default=None), granularity="hour" if hourly else "day")
    return picked, latest


def curated_tables_latest(conn: Any) -> dict[str, str | None]:
    """The newest row of each curated table the dashboard reads (ISO text, or None when empty)."""
    sessions, engagement, usage, feedback = (_table(conn, t) for t in (
        CONVERSATION_SESSIONS, PLATFORM_ENGAGEMENT_DAILY, TOKEN_COST_USAGE, USER_FEEDBACK))
    row = warehouse_query(conn, f"""SELECT
  (SELECT MAX(STARTED_AT) FROM {sessions}) AS SESSION_STARTED_AT,
  (SELECT MIN(STARTED_AT) FROM {sessions}) AS SESSION_OLDEST_AT,
  (SELECT MAX(ENDED_AT) FROM {sessions}) AS SESSION_ENDED_AT,
  (SELECT MAX(DAY) FROM {engagement}) AS ENGAGEMENT_DAY,
  (SELECT MAX(HOUR) FROM {usage}) AS USAGE_HOUR,
  (SELECT MAX(FEEDBACK_AT) FROM {feedback}) AS FEEDBACK_AT""")[0]  # noqa: S608
    return {key.lower(): value for key, value in row.items()}


# --- engagement and retention (PLATFORM_ENGAGEMENT_DAILY) -----------------------------------------------

def engagement_and_retention(conn: Any, window: DashboardWindow) -> dict[str, dict]:
    """Active people and sessions per platform per day, and the retention cohorts of the window's days."""
    rows = warehouse_query(conn, f"""SELECT DAY, PLATFORM,
  SUM(ACTIVE_PEOPLE) AS ACTIVE_PEOPLE, SUM(SESSIONS) AS SESSIONS, SUM(NEW_PEOPLE) AS NEW_PEOPLE,
  SUM(D1_RETAINED) AS D1_RETAINED, SUM(D7_RETAINED) AS D7_RETAINED,
  SUM(D30_RETAINED) AS D30_RETAINED
FROM {_table(conn, PLATFORM_ENGAGEMENT_DAILY)}
WHERE DAY >= %(start)s::DATE AND DAY < %(end_excl)s::DATE
GROUP BY DAY, PLATFORM""", window.bounds())  # noqa: S608
    if not window.hourly:
        return engagement_shape(rows, window)
    # by the hour: PLATFORM_ENGAGEMENT_DAILY has days only, so from the sessions (still one small table)
    hourly = warehouse_query(conn, f"""SELECT {window.bucket("STARTED_AT")} AS DAY, PLATFORM,
  COUNT(DISTINCT PERSON_ID) AS ACTIVE_PEOPLE, COUNT(*) AS SESSIONS
FROM {_table(conn, CONVERSATION_SESSIONS)}
WHERE STARTED_AT >= %(period_start)s::TIMESTAMP_NTZ AND STARTED_AT < %(period_end_excl)s::TIMESTAMP_NTZ
GROUP BY 1, 2""", window.bounds())  # noqa: S608
    return engagement_shape(hourly, window, retention_rows=rows)


def engagement_shape(rows: Iterable[dict], window: DashboardWindow,
                     retention_rows: Iterable[dict] | None = None) -> dict[str, dict]:
    rows = [_upper_keys(r) for r in rows]
    labels = window.labels
    platforms = _ordered({r["PLATFORM"] for r in rows}, PLATFORM_ORDER)
    charts = {}
    for name, column in (("active_people", "ACTIVE_PEOPLE"), ("sessions", "SESSIONS")):
        grid = _grid(rows, labels, window.label_of, "DAY", "PLATFORM", column)
        charts[name] = _chart(labels, [_series(p, p, [grid[p][d] for d in labels]) for p in platforms],
                              empty=not rows)
    charts["retention"] = retention_shape(rows if retention_rows is None else retention_rows, window)
    return charts


def retention_shape(rows: Iterable[dict], window: DashboardWindow) -> dict:
    """Per cohort day (all platforms and products together): new people and the D1/D7/D30 retention in
    percent, None until day + n has passed (the table's Dn is not final before), and per platform the
    same over the window's final cohorts."""
    rows = [_upper_keys(r) for r in rows]
    by_day: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    by_platform: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        day = _date(r["DAY"])
        cohort = by_day[day.isoformat()]
        platform = by_platform[r["PLATFORM"]]
        new = int(r["NEW_PEOPLE"] or 0)
        cohort["new"] += new
        for n in RETENTION_DAYS:
            retained = int(r[f"D{n}_RETAINED"] or 0)
            cohort[f"d{n}"] += retained
            if _retention_final(day, n, window.today):
                platform[f"new_final_d{n}"] += new
                platform[f"d{n}"] += retained
        platform["new"] += new
    labels = window.day_labels
    cohorts = []
    for label in labels:
        cohort = by_day.get(label, {})
        new = cohort.get("new", 0)
        row: dict[str, Any] = {"day": label, "new_people": new}
        for n in RETENTION_DAYS:
            final = _retention_final(dt.date.fromisoformat(label), n, window.today)
            row[f"d{n}_retained"] = cohort.get(f"d{n}", 0) if final else None
            row[f"d{n}_pct"] = _percent(cohort.get(f"d{n}", 0), new) if final else None
        cohorts.append(row)
    platforms = []
    for platform in _ordered(set(by_platform), PLATFORM_ORDER):
        totals = by_platform[platform]
        row = {"platform": platform, "new_people": totals["new"]}
        for n in RETENTION_DAYS:
            row[f"d{n}_pct"] = _percent(totals[f"d{n}"], totals[f"new_final_d{n}"])
        platforms.append(row)
    series = [_series("new_people", "New people (cohort size)", [c["new_people"] for c in cohorts])]
    series += [_series(f"d{n}_pct", f"D{n} retention %", [c[f"d{n}_pct"] for c in cohorts]) for n in RETENTION_DAYS]
    chart = _chart(labels, series, empty=not any(c["new_people"] for c in cohorts))
    chart["rows"] = [c for c in cohorts if c["new_people"]]
    chart["by_platform"] = platforms
    return chart


def _retention_final(day: dt.date, n: int, today: dt.date) -> bool:
    return day + dt.timedelta(days=n) < today


# --- sessions: messages, latency, outcomes (CONVERSATION_SESSIONS) --------------------------------------

def messages_and_latency(conn: Any, window: DashboardWindow) -> dict:
    """Per day of session start: user and assistant messages, and the response latency over sessions
    (median and p90 of FIRST_RESPONSE_LATENCY_MS, median of MEDIAN_RESPONSE_LATENCY_MS)."""
    rows = warehouse_query(conn, f"""SELECT {window.bucket("STARTED_AT")} AS DAY,
  SUM(USER_MESSAGES) AS USER_MESSAGES, SUM(ASSISTANT_MESSAGES) AS ASSISTANT_MESSAGES,
  MEDIAN(FIRST_RESPONSE_LATENCY_MS) AS FIRST_P50,
  PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY FIRST_RESPONSE_LATENCY_MS) AS FIRST_P90,
  MEDIAN(MEDIAN_RESPONSE_LATENCY_MS) AS RESPONSE_P50
FROM {_table(conn, CONVERSATION_SESSIONS)}
WHERE STARTED_AT >= %(period_start)s::TIMESTAMP_NTZ AND STARTED_AT < %(period_end_excl)s::TIMESTAMP_NTZ
GROUP BY 1""", window.bounds())  # noqa: S608
    return messages_shape(rows, window)


def messages_shape(rows: Iterable[dict], window: DashboardWindow) -> dict:
    labels = window.labels
    by_day = {window.label_of(r["DAY"]): r for r in map(_upper_keys, rows)}

    def column(name: str, *, count: bool) -> list:
        values = [by_day.get(d, {}).get(name) for d in labels]
        return [int(v or 0) for v in values] if count else [_round(v, 1) for v in values]

    chart = _chart(labels, [
        _series("user_messages", "User messages", column("USER_MESSAGES", count=True)),
        _series("assistant_messages", "Assistant messages", column("ASSISTANT_MESSAGES", count=True)),
        _series("first_response_p50_ms", "First response, median", column("FIRST_P50", count=False)),
        _series("first_response_p90_ms", "First response, p90", column("FIRST_P90", count=False)),
        _series("response_p50_ms", "Any response, median of sessions' medians", column("RESPONSE_P50", count=False)),
    ], empty=not by_day)
    latency = [v for s in chart["series"] if s["key"].endswith("_ms") for v in s["values"]]
    axis = latency_axis(latency)
    chart["latency_axis"] = axis
    if axis["clipped"]:
        chart["note"] = (f"{axis['clipped']} latency value{'s' if axis['clipped'] != 1 else ''} above "
                         f"{_number_text(axis['max'])} {axis['unit']} (far outliers) "
                         f"{'are' if axis['clipped'] != 1 else 'is'} drawn at the top edge, marked ▲: hover for the "
                         "value.")
    return chart


#: a latency axis in seconds from this many milliseconds up (of the values drawn, outliers left out)
SECONDS_FROM_MS = 10_000
#: Tukey's far-out fence: a value above Q3 + 3 × IQR of the values drawn is an outlier (with at least
#: CLIP_MIN_VALUES values); the axis then ends a little (AXIS_HEADROOM) above the largest other value
OUTLIER_IQR, CLIP_MIN_VALUES, AXIS_HEADROOM = 3.0, 4, 1.1


def latency_axis(values_ms: Iterable[float | None]) -> dict[str, Any]:
    """How to draw latencies (pure): the unit (s when the largest value drawn, outliers left out, is
    10 s or more, else ms), the divisor from ms to it, and, when there are outliers, the axis maximum
    in that unit (the largest other value plus 10 %, rounded up to a readable step) and how many
    values are above it (drawn at the top edge). One 22-hour value then no longer flattens the rest."""
    values = sorted(float(v) for v in values_ms if v is not None)
    if not values:
        return {"unit": "ms", "divisor": 1, "max": None, "clipped": 0, "title": "latency (ms)"}
    top = values[-1]
    if len(values) >= CLIP_MIN_VALUES:
        q1, q3 = (values[max(0, math.ceil(q * len(values)) - 1)] for q in (0.25, 0.75))   # nearest rank
        fence = q3 + OUTLIER_IQR * (q3 - q1)
        top = max((v for v in values if v <= fence), default=top) * (AXIS_HEADROOM if values[-1] > fence else 1)
    unit, divisor = ("s", 1000) if top >= SECONDS_FROM_MS else ("ms", 1)
    axis_max = _nice_ceiling(top / divisor) if top > 0 else None
    clipped = sum(1 for v in values if axis_max is not None and v / divisor > axis_max)
    return {"unit": unit, "divisor": divisor, "max": axis_max if clipped else None, "clipped": clipped,
            "title": f"latency ({unit})"}


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10 × 10^k at or above ``value``."""
    exponent = math.floor(math.log10(value))
    for step in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        candidate = round(step * 10 ** exponent, 6)
        if candidate >= value:
            return candidate
    return round(10 ** (exponent + 1), 6)


def _number_text(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:g}"


def session_outcomes(conn: Any, window: DashboardWindow) -> dict:
    """Sessions per day of start and OUTCOME."""
    rows = warehouse_query(conn, f"""SELECT {window.bucket("STARTED_AT")} AS DAY, OUTCOME, COUNT(*) AS SESSIONS
FROM {_table(conn, CONVERSATION_SESSIONS)}
WHERE STARTED_AT >= %(period_start)s::TIMESTAMP_NTZ AND STARTED_AT < %(period_end_excl)s::TIMESTAMP_NTZ
GROUP BY 1, 2""", window.bounds())  # noqa: S608
    return outcomes_shape(rows, window)


def outcomes_shape(rows: Iterable[dict], window: DashboardWindow) -> dict:
    rows = [_upper_keys(r) for r in rows]
    labels = window.labels
    grid = _grid(rows, labels, window.label_of, "DAY", "OUTCOME", "SESSIONS")
    outcomes = _ordered({r["OUTCOME"] for r in rows}, OUTCOME_ORDER)
    chart = _chart(labels, [_series(o, o, [grid[o][d] for d in labels]) for o in outcomes], empty=not rows)
    chart["totals"] = {o: sum(grid[o].values()) for o in outcomes}
    return chart


def activity_by_hour(conn: Any, window: DashboardWindow) -> dict:
    """Per hour of the hour window: sessions started (CONVERSATION_SESSIONS) and cost (TOKEN_COST_USAGE)."""
    params = window.bounds()
    sessions = warehouse_query(conn, f"""SELECT DATE_TRUNC('hour', STARTED_AT) AS HOUR, COUNT(*) AS SESSIONS
FROM {_table(conn, CONVERSATION_SESSIONS)}
WHERE STARTED_AT >= %(hour_start)s::TIMESTAMP_NTZ AND STARTED_AT < %(hour_end_excl)s::TIMESTAMP_NTZ
GROUP BY DATE_TRUNC('hour', STARTED_AT)""", params)  # noqa: S608
    usage = warehouse_query(conn, f"""SELECT HOUR, SUM(REQUESTS) AS REQUESTS, SUM(COST_USD) AS COST_USD
FROM {_table(conn, TOKEN_COST_USAGE)}
WHERE HOUR >= %(hour_start)s::TIMESTAMP_NTZ AND HOUR < %(hour_end_excl)s::TIMESTAMP_NTZ
GROUP BY HOUR""", params)  # noqa: S608
    return hourly_shape(sessions, usage, window)


def hourly_shape(sessions: Iterable[dict], usage: Iterable[dict], window: DashboardWindow) -> dict:
    labels = window.hour_labels
    started = {_hour_label(_timestamp(r["HOUR"])): int(r["SESSIONS"] or 0) for r in map(_upper_keys, sessions)}
    usage_by_hour = {_hour_label(_timestamp(r["HOUR"])): r for r in map(_upper_keys, usage)}
    return _chart(labels, [
        _series("sessions", "Sessions started", [started.get(h, 0) for h in labels]),
        _series("requests", "Model requests", [int(usage_by_hour.get(h, {}).get("REQUESTS") or 0) for h in labels]),
        _series("cost_usd", "Cost (USD)", [_round(usage_by_hour.get(h, {}).get("COST_USD") or 0, 6) for h in labels]),
    ], empty=not started and not usage_by_hour)


# --- tokens and cost (TOKEN_COST_USAGE) -----------------------------------------------------------------

_USAGE_SUMS = ("REQUESTS", "UNCACHED_INPUT_TOKENS", "CACHED_INPUT_TOKENS", "OUTPUT_TOKENS", "REASONING_TOKENS",
               "COST_USD", "UNPRICED_REQUESTS")


def token_cost_usage(conn: Any, window: DashboardWindow) -> dict[str, dict]:
    """Tokens (by kind), requests and cost in the window by model and by product, and cost per day by model."""
    rows = warehouse_query(conn, f"""SELECT {window.bucket("HOUR")} AS DAY, MODEL, PRODUCT, SUM(REQUESTS) AS REQUESTS,
  SUM(INPUT_TOKENS - CACHED_INPUT_TOKENS) AS UNCACHED_INPUT_TOKENS, SUM(CACHED_INPUT_TOKENS) AS CACHED_INPUT_TOKENS,
  SUM(OUTPUT_TOKENS) AS OUTPUT_TOKENS, SUM(REASONING_TOKENS) AS REASONING_TOKENS, SUM(COST_USD) AS COST_USD,
  SUM(CASE WHEN PRICED THEN 0 ELSE REQUESTS END) AS UNPRICED_REQUESTS
FROM {_table(conn, TOKEN_COST_USAGE)}
WHERE HOUR >= %(period_start)s::TIMESTAMP_NTZ AND HOUR < %(period_end_excl)s::TIMESTAMP_NTZ
GROUP BY 1, 2, 3""", window.bounds())  # noqa: S608
    return usage_shape(rows, window)


def usage_shape(rows: Iterable[dict], window: DashboardWindow) -> dict[str, dict]:
    rows = [_upper_keys(r) for r in rows]
    charts = {"usage_by_model": _usage_by(rows, "MODEL", "model"),
              "usage_by_product": _usage_by(rows, "PRODUCT", "product")}
    unpriced = [r["model"] for r in charts["usage_by_model"]["rows"] if r["unpriced_requests"]]
    if unpriced:
        charts["usage_by_model"]["note"] = (
            f"No price in force for {', '.join(unpriced)}: their requests count here with cost 0. "
            "Add the price in the price catalog and ask for a recompute.")
    # cost per day, the costliest models stacked and the rest as "other"
    labels = window.labels
    ranked = [r["model"] for r in charts["usage_by_model"]["rows"]]
    shown = ranked if len(ranked) <= COST_CHART_MODELS + 1 else ranked[:COST_CHART_MODELS]  # never "other (1 models)"
    other = f"other ({len(ranked) - len(shown)} models)"
    per_day: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in rows:
        model = r["MODEL"] if r["MODEL"] in shown else other
        per_day[model][window.label_of(r["DAY"])] += float(r["COST_USD"] or 0)
    series = [_series(m, m, [_round(per_day[m].get(d, 0.0), 6) for d in labels])
              for m in [*shown, *([other] if len(ranked) > len(shown) else [])]]
    charts["cost_by_day"] = _chart(labels, series, empty=not rows)
    return charts


def _usage_by(rows: list[dict], column: str, name: str) -> dict:
    totals: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(_USAGE_SUMS, 0))
    for r in rows:
        key = r[column] or UNKNOWN
        for field in _USAGE_SUMS:
            totals[key][field] += r[field] or 0
    ranked = sorted(totals, key=lambda k: (-float(totals[k]["COST_USD"]),
                                           -sum(totals[k][f] for f in _USAGE_SUMS[1:4]), k))
    table = [{name: key, **{f.lower(): (_round(v, 6) if f == "COST_USD" else int(v)) for f, v in totals[key].items()}}
             for key in ranked]
    chart = _chart(ranked, [
        _series("uncached_input_tokens", "Input tokens (not cached)", [r["uncached_input_tokens"] for r in table]),
        _series("cached_input_tokens", "Cached input tokens", [r["cached_input_tokens"] for r in table]),
        _series("output_tokens", "Output tokens", [r["output_tokens"] for r in table]),
        _series("cost_usd", "Cost (USD)", [r["cost_usd"] for r in table]),
    ], empty=not rows)
    chart["rows"] = table
    return chart


# --- feedback (USER_FEEDBACK) ---------------------------------------------------------------------------

def feedback_scores(conn: Any, window: DashboardWindow) -> dict[str, dict]:
    """Score distribution (five buckets, stacked by kind) and the daily mean score and count."""
    rows = warehouse_query(conn, f"""SELECT {window.bucket("FEEDBACK_AT")} AS DAY,
  CASE WHEN SCORE < -0.75 THEN 0 WHEN SCORE < -0.25 THEN 1 WHEN SCORE <= 0.25 THEN 2 WHEN SCORE <= 0.75 THEN 3
       ELSE 4 END AS BUCKET,
  COALESCE(KIND, '{UNKNOWN}') AS KIND, COUNT(*) AS FEEDBACK, SUM(SCORE) AS SCORE_SUM
FROM {_table(conn, USER_FEEDBACK)}
WHERE FEEDBACK_AT >= %(period_start)s::TIMESTAMP_NTZ AND FEEDBACK_AT < %(period_end_excl)s::TIMESTAMP_NTZ
GROUP BY 1, 2, 3""", window.bounds())  # noqa: S608
    return feedback_shape(rows, window)


def feedback_shape(rows: Iterable[dict], window: DashboardWindow) -> dict[str, dict]:
    rows = [_upper_keys(r) for r in rows]
    kinds = _ordered({r["KIND"] for r in rows}, FEEDBACK_KIND_ORDER)
    buckets: dict[str, list[int]] = {k: [0] * len(SCORE_BUCKETS) for k in kinds}
    count: dict[str, int] = defaultdict(int)
    total: dict[str, float] = defaultdict(float)
    for r in rows:
        buckets[r["KIND"]][int(r["BUCKET"])] += int(r["FEEDBACK"])
        day = window.label_of(r["DAY"])
        count[day] += int(r["FEEDBACK"])
        total[day] += float(r["SCORE_SUM"] or 0)
    distribution = _chart([label for label, _ in SCORE_BUCKETS], [_series(k, k, buckets[k]) for k in kinds],
                          empty=not rows)
    distribution["bucket_ranges"] = [rng for _, rng in SCORE_BUCKETS]
    labels = window.labels
    trend = _chart(labels, [
        _series("mean_score", "Mean score", [_round(total[d] / count[d], 3) if count.get(d) else None for d in labels]),
        _series("feedback", "Feedback given", [count.get(d, 0) for d in labels]),
    ], empty=not rows)
    return {"feedback_distribution": distribution, "feedback_trend": trend}


# --- KPI tiles --------------------------------------------------------------------------------------------

def dashboard_kpis(conn: Any, window: DashboardWindow) -> dict[str, dict]:
    """People and sessions active on the window's last day, sessions, cost and mean feedback in the window."""
    bounds = window.bounds()
    # the period's people: those active on its last day, or in its hours when it is hourly
    params = {**bounds, "day": bounds["period_start"] if window.hourly else window.end.isoformat(),
              "day_end_excl": bounds["period_end_excl"]}
    sessions, usage, feedback = (_table(conn, t) for t in (CONVERSATION_SESSIONS, TOKEN_COST_USAGE, USER_FEEDBACK))
    # "active on a day" = a session overlapping it, so a conversation that began before midnight counts
    row = _upper_keys(warehouse_query(conn, f"""SELECT
  (SELECT COUNT(DISTINCT PERSON_ID) FROM {sessions}
     WHERE STARTED_AT < %(day_end_excl)s::TIMESTAMP_NTZ AND ENDED_AT >= %(day)s::TIMESTAMP_NTZ) AS PEOPLE_DAY,
  (SELECT COUNT(*) FROM {sessions}
     WHERE STARTED_AT < %(day_end_excl)s::TIMESTAMP_NTZ AND ENDED_AT >= %(day)s::TIMESTAMP_NTZ) AS SESSIONS_DAY,
  (SELECT COUNT(*) FROM {sessions}
     WHERE STARTED_AT >= %(period_start)s::TIMESTAMP_NTZ AND STARTED_AT < %(period_end_excl)s::TIMESTAMP_NTZ)
     AS SESSIONS_WINDOW,
  (SELECT SUM(COST_USD) FROM {usage}
     WHERE HOUR >= %(period_start)s::TIMESTAMP_NTZ AND HOUR < %(period_end_excl)s::TIMESTAMP_NTZ) AS COST_WINDOW,
  (SELECT SUM(REQUESTS) FROM {usage}
     WHERE HOUR >= %(period_start)s::TIMESTAMP_NTZ AND HOUR < %(period_end_excl)s::TIMESTAMP_NTZ) AS REQUESTS_WINDOW,
  (SELECT AVG(SCORE) FROM {feedback}
     WHERE FEEDBACK_AT >= %(period_start)s::TIMESTAMP_NTZ AND FEEDBACK_AT < %(period_end_excl)s::TIMESTAMP_NTZ)
     AS SCORE_MEAN,
  (SELECT COUNT(*) FROM {feedback}
     WHERE FEEDBACK_AT >= %(period_start)s::TIMESTAMP_NTZ AND FEEDBACK_AT < %(period_end_excl)s::TIMESTAMP_NTZ)
     AS FEEDBACK_WINDOW
""", params)[0])  # noqa: S608
    return kpis_shape(row, window)


def kpis_shape(row: dict, window: DashboardWindow) -> dict[str, dict]:
    day = "today" if window.end == window.today else f"on {window.end.isoformat()} (newest day with data)"
    period = f"in the {window.days} day{'s' if window.days != 1 else ''}"
    if window.hourly:
        day = period = f"in the {PERIOD_HOURS} hours"
    people, sessions_day = int(row.get("PEOPLE_DAY") or 0), int(row.get("SESSIONS_DAY") or 0)
    sessions, requests = int(row.get("SESSIONS_WINDOW") or 0), int(row.get("REQUESTS_WINDOW") or 0)
    cost, feedback = float(row.get("COST_WINDOW") or 0), int(row.get("FEEDBACK_WINDOW") or 0)
    mean = _round(row.get("SCORE_MEAN"), 3) if feedback else None
    return {
        "people_active": {"value": people, "text": f"{people:,}",
                          "note": f"people active {day} ({sessions_day:,} session{'s' if sessions_day != 1 else ''})"},
        "sessions": {"value": sessions, "text": f"{sessions:,}", "note": f"sessions started {period}"},
        "cost_usd": {"value": _round(cost, 6), "text": _usd(cost),
                     "note": f"model cost {period} ({requests:,} request{'s' if requests != 1 else ''})"},
        "feedback_mean": {"value": mean, "text": f"{mean:+.2f}" if mean is not None else "—",
                          "note": f"mean feedback score (-1 to 1) {period}, {feedback:,} given"},
    }


# --- freshness --------------------------------------------------------------------------------------------

def model_run_latest() -> dict[str, Any]:
    """The latest successful model run's finish and, if the newest run failed, that failure (portal DB)."""
    from warehouse.models import ModelRun

    succeeded = (ModelRun.objects.filter(status=ModelRun.Status.SUCCEEDED, finished_at__isnull=False)
                 .order_by("-finished_at").values("finished_at", "model", "run_id").first())
    newest = ModelRun.objects.order_by("-started_at", "-id").values(
        "status", "model", "error", "started_at", "finished_at").first()
    failed = newest if newest and newest["status"] == ModelRun.Status.FAILED else None
    return {"succeeded_at": succeeded["finished_at"] if succeeded else None,
            "failed": {"model": failed["model"], "at": failed["finished_at"] or failed["started_at"],
                       "error": (failed["error"] or "").strip().splitlines()[0][:300] if failed["error"] else ""}
            if failed else None}


def data_freshness(*, runs: dict[str, Any], latest: dict[str, Any] | None, now: dt.datetime) -> dict[str, Any]:
    """The freshness banner (pure): when the curated tables were last refreshed, how old the newest
    session activity is, and a warning when the runner has not succeeded for STALE_AFTER_S."""
    now = _utc(now)
    succeeded = _timestamp(runs.get("succeeded_at"))
    run_age = (now - succeeded).total_seconds() if succeeded else None
    activity = _timestamp((latest or {}).get("session_ended_at"))
    activity_age = (now - activity).total_seconds() if activity else None
    parts = [f"Curated tables last refreshed {ago_text(run_age)} ago" if succeeded
             else "The curated tables have never been refreshed"]
    if latest is not None:
        parts.append(f"latest session activity {ago_text(activity_age)} ago" if activity
                     else "no session activity yet")
    warning = None
    if succeeded is None:
        warning = ("No model run has ever succeeded, so these tables are empty or out of date. Run "
                   "`python manage.py models_run`, or start the workers and beat (`make run`).")
    elif run_age is not None and run_age > STALE_AFTER_S:
        warning = (f"The last successful model run finished {ago_text(run_age)} ago (it runs every minute): the "
                   "numbers below are not current. Check that Celery beat and a worker are running.")
    failed = runs.get("failed")
    failure = None
    if failed:
        failure = f"The newest model run failed ({failed['model']}): {failed['error'] or 'no error recorded'}"
    return {
        "refreshed_at": _iso(succeeded), "refreshed_age_s": _round(run_age, 1),
        "session_activity_at": _iso(activity), "session_activity_age_s": _round(activity_age, 1),
        "session_started_at": _iso(_timestamp((latest or {}).get("session_started_at"))),
        "stale": warning is not None, "warning": warning, "failure": failure,
        "text": "; ".join(parts) + ".", "checked_at": _iso(now),
    }


def ago_text(seconds: float | None) -> str:
    """40 s, 2 min, 3 h 12 min, 2 d 3 h ("" for None; a time slightly in the future reads 0 s)."""
    if seconds is None:
        return ""
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


# --- everything the page draws ----------------------------------------------------------------------------

def dashboard_data(conn: Any, *, days: int | None = None, window: str | None = None, now: dt.datetime,
                   runs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole dashboard as JSON-able data (what ``/analytics/data.json`` returns). ``window`` as
    ``window_clean`` gives it (``days``: the same as ``{days}d``); neither: the default (``window_auto``)."""
    if days is not None:
        window = f"{days}d"
    window, latest = dashboard_window(conn, window=window, now=now)
    charts: dict[str, dict] = {}
    charts.update(engagement_and_retention(conn, window))
    charts["messages_latency"] = messages_and_latency(conn, window)
    charts["outcomes"] = session_outcomes(conn, window)
    charts["activity_hourly"] = activity_by_hour(conn, window)
    charts.update(token_cost_usage(conn, window))
    charts.update(feedback_scores(conn, window))
    return {
        "generated_at": _iso(_utc(now)),
        "window": window.as_json(),
        "freshness": data_freshness(runs=runs if runs is not None else model_run_latest(), latest=latest, now=now),
        "kpis": dashboard_kpis(conn, window),
        "charts": charts,
        "empty_help": EMPTY_HELP,
    }


# --- helpers ----------------------------------------------------------------------------------------------

def _table(conn: Any, table: Table) -> str:
    return qualified(check_identifier(conn.database), table)


def _chart(labels: list[str], series: list[dict], *, empty: bool) -> dict:
    return {"labels": labels, "series": series, "empty": empty}


def _series(key: str, label: str, values: list) -> dict:
    return {"key": key, "label": label, "values": values}


def _grid(rows: list[dict], labels: list[str], label_of: Any, day_field: str, key_field: str,
          value_field: str) -> dict[str, dict[str, int]]:
    """{key: {label: value}} with every label of ``labels`` present (0 when no row)."""
    grid: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(labels, 0))
    for r in rows:
        day = label_of(r[day_field])
        if day in grid[r[key_field]]:
            grid[r[key_field]][day] += int(r[value_field] or 0)
    return grid


def _ordered(keys: set[str], order: tuple[str, ...]) -> list[str]:
    keys = {k if k is not None else UNKNOWN for k in keys}
    return [k for k in order if k in keys] + sorted(keys - set(order))


def _upper_keys(row: dict) -> dict:
    return {k.upper(): v for k, v in row.items()}


def _percent(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None


def _round(value: Any, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def _usd(value: float) -> str:
    if value and abs(value) < 0.01:
        return f"${value:.4f}"
    return f"${value:,.2f}"


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _date(value: Any) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return _utc(value).date()
    if isinstance(value, dt.date):
        return value
    text = str(value)
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC).date() if "T" in text or " " in text \
        else dt.date.fromisoformat(text)


def _timestamp(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return _utc(value)
    return _utc(dt.datetime.fromisoformat(str(value)))


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def _hour_label(moment: dt.datetime) -> str:
    return _utc(moment).strftime("%Y-%m-%dT%H:00Z")


def _naive_text(moment: dt.datetime) -> str:
    """A bound TIMESTAMP_NTZ value: UTC wall time without an offset."""
    return _utc(moment).replace(tzinfo=None).isoformat(sep=" ")
