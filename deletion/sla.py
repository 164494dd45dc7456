"""The deletion SLA clock: due times, a ticket's SLA state, completion statistics, and the received-at time
an officer types in a time zone.

Pure: no Django, no clock (``now`` is passed in). Every time is an aware ``datetime``; arithmetic is on
absolute time (UTC), so "72 hours" is 72 elapsed hours even across a daylight-saving change, when the
wall clock of the requester's zone shows 71 or 73 hours between received and due.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

#: "At risk" is strictly under this much time left (issue 12: "under 24 hours left").
AT_RISK_BEFORE = timedelta(hours=24)


class SlaState(enum.StrEnum):
    OPEN = "open"
    AT_RISK = "at_risk"
    OVERDUE = "overdue"
    DONE = "done"


SLA_STATE_LABELS = {SlaState.OPEN: "Open", SlaState.AT_RISK: "At risk", SlaState.OVERDUE: "Overdue",
                    SlaState.DONE: "Done"}


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must carry a time zone (got a naive time {value.isoformat()}).")


def due_at(received_at: datetime, sla_hours: float) -> datetime:
    """When a ticket received at ``received_at`` is due: ``sla_hours`` elapsed hours later, in UTC."""
    _require_aware(received_at, "received_at")
    if not (sla_hours > 0 and math.isfinite(sla_hours)):
        raise ValueError(f"The SLA must be a positive number of hours, not {sla_hours!r}.")
    return received_at.astimezone(UTC) + timedelta(hours=sla_hours)


def sla_state(*, due: datetime, now: datetime, finished_at: datetime | None = None,
              at_risk_before: timedelta = AT_RISK_BEFORE) -> SlaState:
    """Done once finished; overdue from the due instant on (no time left); at risk while strictly less than
    ``at_risk_before`` is left; open before that."""
    _require_aware(due, "due")
    _require_aware(now, "now")
    if finished_at is not None:
        return SlaState.DONE
    left = due - now
    if left <= timedelta(0):
        return SlaState.OVERDUE
    if left < at_risk_before:
        return SlaState.AT_RISK
    return SlaState.OPEN


def clock_text(*, due: datetime, now: datetime, finished_at: datetime | None = None) -> str:
    """A ticket's clock for people: "41 h 12 min left", "3 h 05 min overdue", "done 5 h 20 min early"."""
    if finished_at is not None:
        margin = due - finished_at
        return (f"done {duration_text(margin)} before due" if margin >= timedelta(0)
                else f"done {duration_text(-margin)} late")
    left = due - now
    if left > timedelta(0):
        return f"{duration_text(left)} left"
    return f"{duration_text(-left)} overdue"


def duration_text(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    if hours >= 48:
        days, rest = divmod(hours, 24)
        return f"{days} d {rest} h"
    return f"{hours} h {minutes:02d} min"


@dataclasses.dataclass(frozen=True)
class CompletionStats:
    count: int
    median: timedelta | None
    p95: timedelta | None


def completion_stats(durations: Sequence[timedelta]) -> CompletionStats:
    """Median and 95th percentile (nearest rank: the smallest duration at least 95% of tickets took no longer
    than) of received-to-done times."""
    ordered = sorted(durations)
    if not ordered:
        return CompletionStats(0, None, None)
    n = len(ordered)
    middle = n // 2
    median = ordered[middle] if n % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    p95 = ordered[max(0, math.ceil(0.95 * n) - 1)]
    return CompletionStats(n, median, p95)


class ReceivedAtError(ValueError):
    """A received-at time that cannot be placed on the time line; the message says why."""


def zone_names() -> list[str]:
    """The IANA zones an officer may pick, UTC first."""
    return ["UTC", *sorted(name for name in available_timezones() if "/" in name and not name.startswith("Etc/"))]


EARLIEST_RECEIVED_YEAR = 2000
LATEST_RECEIVED_YEAR = 2999


def received_at_in_zone(local: datetime, zone_name: str) -> datetime:
    """The absolute time of wall-clock ``local`` (naive) in zone ``zone_name``, in UTC.

    A wall-clock time that does not exist there (skipped when clocks go forward) or happens twice (when they
    go back) is refused with a message saying so, rather than guessed: a guess shifts the due time by an hour.
    """
    if local.tzinfo is not None:
        raise ReceivedAtError("Give the received-at time as a wall-clock time and its zone separately.")
    if not EARLIEST_RECEIVED_YEAR <= local.year <= LATEST_RECEIVED_YEAR:
        # a typo in the year files a ticket already decades overdue (or due in 9999): refused, not guessed
        raise ReceivedAtError(f"The year {local.year} cannot be when a request was received: check the year.")
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ReceivedAtError(f"Unknown time zone {zone_name!r}: pick an IANA zone such as Europe/Berlin.") from err
    first, second = local.replace(tzinfo=zone, fold=0), local.replace(tzinfo=zone, fold=1)
    if first.utcoffset() != second.utcoffset():
        # fold=0 and fold=1 disagree: the time is either skipped or repeated. A skipped time does not survive
        # the round trip through UTC.
        if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != local:
            raise ReceivedAtError(f"{local:%Y-%m-%d %H:%M} does not exist in {zone_name} (the clocks went forward "
                                  "at that time): check the time, or give it in UTC.")
        raise ReceivedAtError(f"{local:%Y-%m-%d %H:%M} happened twice in {zone_name} (the clocks went back): "
                              "give it in UTC so the due time is exact.")
    return first.astimezone(UTC)
