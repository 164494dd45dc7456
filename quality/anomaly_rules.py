"""Alert rules ``volume_anomaly`` and ``quarantine_rate_jump`` (``quality.alert_types``: ``rule(now) ->
list[Condition]``), over the hourly rollup per source (``quality.models.SourceHour``).

Each looks at the last *complete* hour (a partial hour would read as a drop) and compares it with the same
hour of the same weekday over the past ``QUALITY_ANOMALY_WEEKS`` weeks (``quality.anomaly``). The pure part
(``*_conditions``) takes the rows; the rule functions only fetch them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from quality.alert_types import Condition, Severity
from quality.anomaly import (
    Verdict,
    hour_floor,
    hour_latency_ms,
    latency_verdict,
    rate_jump_verdict,
    same_hour_history,
    volume_verdict,
)

__all__ = ["volume_anomaly", "quarantine_rate_jump", "volume_conditions", "quarantine_rate_conditions",
           "evaluated_hour", "hour_verdicts", "latency_hour_verdict"]

#: {source name: {hour (UTC, on the hour): {"records", "events", "quarantined", "max_lag_ms"}}}
HourRows = Mapping[str, Mapping[dt.datetime, Mapping[str, Any]]]


def evaluated_hour(now: dt.datetime) -> dt.datetime:
    """The last complete hour at ``now``."""
    return hour_floor(now) - dt.timedelta(hours=1)


def _hours_seen(rows: HourRows) -> set[dt.datetime]:
    return {hour for per_source in rows.values() for hour in per_source}


def _link(source: str) -> str:
    return f"/quality/scorecards/source/{source}/"


class _Column:
    """One figure of the hourly rows, read on demand (``same_hour_history`` looks up a few hours only)."""

    def __init__(self, rows: Mapping[dt.datetime, Mapping[str, Any]], figure: Callable[[Mapping[str, Any]], Any]):
        self.rows, self.figure = rows, figure

    def get(self, hour: dt.datetime) -> Any:
        row = self.rows.get(hour)
        return None if row is None else self.figure(row)


def _volume(per_hour: Mapping[dt.datetime, Mapping[str, Any]], hour: dt.datetime, *, pipeline_ran: bool,
            weeks: int) -> tuple[float, Verdict | None]:
    current = per_hour.get(hour)
    if current is None and not pipeline_ran:
        return 0.0, None
    value = float((current or {}).get("records") or 0)
    history = same_hour_history(_Column(per_hour, lambda r: r.get("records") or 0), hour, weeks=weeks)
    return value, volume_verdict(value, history)


def _rate(per_hour: Mapping[dt.datetime, Mapping[str, Any]], hour: dt.datetime, *, weeks: int) -> Verdict | None:
    current = per_hour.get(hour)
    if current is None:
        return None
    past = _Column(per_hour, lambda r: (r.get("quarantined") or 0) / r["records"] if r.get("records") else None)
    return rate_jump_verdict(int(current.get("quarantined") or 0), int(current.get("records") or 0),
                             same_hour_history(past, hour, weeks=weeks))


def hour_verdicts(rows: HourRows, *, now: dt.datetime, weeks: int = 8) -> dict[str, tuple[Verdict | None, ...]]:
    """Per source: (volume verdict, quarantine-rate verdict) of the last complete hour (None: no verdict)."""
    hour = evaluated_hour(now)
    pipeline_ran = hour in _hours_seen(rows)
    return {source: (_volume(per_hour, hour, pipeline_ran=pipeline_ran, weeks=weeks)[1],
                     _rate(per_hour, hour, weeks=weeks))
            for source, per_hour in rows.items() if source}


def latency_hour_verdict(rows: HourRows, *, now: dt.datetime, weeks: int = 8) -> Verdict | None:
    """The stream's latency (``anomaly.hour_latency_ms`` of the stream-wide row) in the last complete hour
    against the same hour of past weeks."""
    per_hour = rows.get("", {})
    hour = evaluated_hour(now)
    current = per_hour.get(hour)
    value = None if current is None else hour_latency_ms(current)
    if value is None:
        return None
    history = same_hour_history(_Column(per_hour, hour_latency_ms), hour, weeks=weeks)
    return latency_verdict(value, history)


def volume_conditions(rows: HourRows, *, now: dt.datetime, weeks: int = 8) -> list[Condition]:
    """A source whose records in the last complete hour are far from its usual same-hour volume. An hour the
    rollup saw (some source sent) without a row for a source counts as 0 for it: a source that went silent
    is the drop to catch."""
    hour = evaluated_hour(now)
    out = []
    for source, (verdict, _) in sorted(hour_verdicts(rows, now=now, weeks=weeks).items()):
        if verdict is None or not verdict.anomalous:
            continue
        direction = "down" if verdict.change < 0 else "up"
        out.append(Condition(
            rule="volume_anomaly", key=f"volume_anomaly:{source}", subject=source, severity=Severity.WARNING,
            summary=(f"{source}: volume {direction} {abs(verdict.change) * 100:.0f}% in the hour from "
                     f"{hour:%a %H:00} UTC ({verdict.value:g} records against a usual {verdict.baseline.median:g})"),
            runbook="volume-anomaly", link=_link(source),
            details={**verdict.as_dict(), "hour": hour.isoformat(), "source": source}))
    return out


def quarantine_rate_conditions(rows: HourRows, *, now: dt.datetime, weeks: int = 8,
                               limit: float = 0.05) -> list[Condition]:
    """A source whose quarantine rate in the last complete hour jumped above its usual same-hour rate, yet
    stayed under ``limit`` (QUALITY_SCORECARD_QUARANTINE_RED): a rate at or over it is the
    ``quality.alert_rules.quarantine_over_limit`` rule's, which alerts within a check cycle, without history,
    and resolves with the fix; judging the same hour again here would open a second, late alert for it."""
    hour = evaluated_hour(now)
    out = []
    for source, (_, verdict) in sorted(hour_verdicts(rows, now=now, weeks=weeks).items()):
        if verdict is None or not verdict.anomalous or verdict.value >= limit:
            continue
        current = rows[source][hour]
        out.append(Condition(
            rule="quarantine_rate_jump", key=f"quarantine_rate_jump:{source}", subject=source,
            severity=Severity.WARNING,
            summary=(f"{source}: {verdict.value * 100:.1f}% of records quarantined in the hour from "
                     f"{hour:%a %H:00} UTC against a usual {verdict.baseline.median * 100:.1f}%"),
            runbook="quarantine-rate", link=_link(source),
            details={**verdict.as_dict(), "hour": hour.isoformat(), "source": source,
                     "quarantined": int(current.get("quarantined") or 0), "records": int(current.get("records") or 0)}))
    return out


def _rows(now: dt.datetime) -> tuple[HourRows, int]:
    from django.conf import settings

    from quality.selectors import source_hours

    weeks = settings.QUALITY_ANOMALY_WEEKS
    return source_hours(since=evaluated_hour(now) - dt.timedelta(weeks=weeks), until=now), weeks


def volume_anomaly(now: dt.datetime) -> list[Condition]:
    """Alert rule: sources whose last complete hour's volume is anomalous for that hour of the week."""
    rows, weeks = _rows(now)
    return volume_conditions(rows, now=now, weeks=weeks)


def quarantine_rate_jump(now: dt.datetime) -> list[Condition]:
    """Alert rule: sources whose last complete hour's quarantine rate jumped above that hour of the week's (under
    the red limit: over it is ``quarantine_over_limit``'s)."""
    from django.conf import settings

    rows, weeks = _rows(now)
    return quarantine_rate_conditions(rows, now=now, weeks=weeks, limit=settings.QUALITY_SCORECARD_QUARANTINE_RED)
