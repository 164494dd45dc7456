"""The SLA clock on plain data: due times are 72 elapsed hours whatever the requester's zone does, and the
at-risk and overdue boundaries are exact across daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from deletion.sla import (
    ReceivedAtError,
    SlaState,
    clock_text,
    completion_stats,
    due_at,
    received_at_in_zone,
    sla_state,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
TICK = timedelta(microseconds=1)


@pytest.mark.parametrize(("received_local", "zone", "due_local", "wall_hours"), [
    # Berlin springs forward on 2026-03-29 at 02:00: 72 elapsed hours show as 73 on the wall clock
    (datetime(2026, 3, 29, 1, 30), BERLIN, datetime(2026, 4, 1, 2, 30), 73),
    # Berlin falls back on 2026-10-25 at 03:00: 72 elapsed hours show as 71
    (datetime(2026, 10, 25, 1, 59), BERLIN, datetime(2026, 10, 28, 0, 59), 71),
    # New York springs forward on 2026-03-08 at 02:00
    (datetime(2026, 3, 8, 1, 59), NEW_YORK, datetime(2026, 3, 11, 2, 59), 73),
    # New York falls back on 2026-11-01 at 02:00 (received in the first, EDT, 00:30)
    (datetime(2026, 11, 1, 0, 30), NEW_YORK, datetime(2026, 11, 3, 23, 30), 71),
])
def test_due_is_72_elapsed_hours_across_a_dst_change(received_local, zone, due_local, wall_hours):
    received = received_at_in_zone(received_local, zone.key)
    due = due_at(received, 72)
    assert due - received == timedelta(hours=72)
    assert due.tzinfo == UTC
    assert due.astimezone(zone).replace(tzinfo=None) == due_local
    assert due_local - received_local == timedelta(hours=wall_hours)


@pytest.mark.parametrize(("received_local", "zone"), [
    (datetime(2026, 3, 29, 1, 59), BERLIN), (datetime(2026, 11, 1, 0, 30), NEW_YORK),
])
def test_at_risk_and_overdue_boundaries_are_exact_across_dst(received_local, zone):
    received = received_at_in_zone(received_local, zone.key)
    due = due_at(received, 72)
    at_risk_from = due - timedelta(hours=24)
    assert sla_state(due=due, now=received) == SlaState.OPEN
    assert sla_state(due=due, now=at_risk_from - TICK) == SlaState.OPEN
    assert sla_state(due=due, now=at_risk_from) == SlaState.OPEN            # exactly 24 h left is not "under"
    assert sla_state(due=due, now=at_risk_from + TICK) == SlaState.AT_RISK
    assert sla_state(due=due, now=due - TICK) == SlaState.AT_RISK
    assert sla_state(due=due, now=due) == SlaState.OVERDUE                   # no time left
    assert sla_state(due=due, now=due + timedelta(days=3)) == SlaState.OVERDUE
    assert sla_state(due=due, now=due + timedelta(days=3), finished_at=due + TICK) == SlaState.DONE


def test_the_same_instant_gives_the_same_state_in_every_zone():
    received = datetime(2026, 3, 29, 0, 59, tzinfo=UTC)
    due = due_at(received.astimezone(BERLIN), 72)
    now_berlin = datetime(2026, 3, 31, 2, 0, tzinfo=BERLIN)                  # 00:00 UTC: 24 h 59 min left
    now_new_york = now_berlin.astimezone(NEW_YORK)
    assert due == due_at(received, 72) == due_at(received.astimezone(NEW_YORK), 72)
    assert sla_state(due=due, now=now_berlin) == sla_state(due=due, now=now_new_york) == SlaState.OPEN
    assert clock_text(due=due, now=now_new_york) == "24 h 59 min left"


def test_a_wall_clock_time_skipped_or_repeated_by_dst_is_refused_with_the_reason():
    with pytest.raises(ReceivedAtError, match="does not exist in Europe/Berlin"):
        received_at_in_zone(datetime(2026, 3, 29, 2, 30), "Europe/Berlin")
    with pytest.raises(ReceivedAtError, match="happened twice in America/New_York"):
        received_at_in_zone(datetime(2026, 11, 1, 1, 30), "America/New_York")
    with pytest.raises(ReceivedAtError, match="Unknown time zone"):
        received_at_in_zone(datetime(2026, 11, 1, 1, 30), "Mars/Olympus")


def test_naive_times_and_bad_slas_are_refused():
    with pytest.raises(ValueError, match="time zone"):
        due_at(datetime(2026, 1, 1), 72)  # noqa: DTZ001 - the naive time is the input under test
    with pytest.raises(ValueError, match="positive"):
        due_at(datetime(2026, 1, 1, tzinfo=UTC), 0)


def test_clock_text_for_open_overdue_and_done_tickets():
    due = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
    assert clock_text(due=due, now=due - timedelta(hours=41, minutes=12)) == "41 h 12 min left"
    assert clock_text(due=due, now=due + timedelta(hours=3, minutes=5)) == "3 h 05 min overdue"
    assert clock_text(due=due, now=due, finished_at=due - timedelta(hours=60)) == "done 2 d 12 h before due"
    assert clock_text(due=due, now=due, finished_at=due + timedelta(minutes=30)) == "done 0 h 30 min late"


def test_completion_median_and_p95():
    hours = [timedelta(hours=h) for h in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 70)]
    stats = completion_stats(hours)
    assert stats.count == 20
    assert stats.median == timedelta(hours=10, minutes=30)
    assert stats.p95 == timedelta(hours=19)                                  # nearest rank: the 19th of 20
    assert completion_stats([timedelta(hours=5)]).p95 == timedelta(hours=5)
    assert completion_stats([]).median is None


@pytest.mark.parametrize("local, zone", [
    (datetime(9999, 12, 31, 23, 50), "Pacific/Pago_Pago"),  # past the end of the calendar in UTC: was a 500
    (datetime(1, 1, 1, 0, 10), "UTC"),  # a typo filing a ticket 2,000 years overdue (and a critical alert)
    (datetime(1999, 12, 31, 23, 59), "Europe/Berlin"),
])
def test_a_received_at_time_with_an_impossible_year_is_refused_naming_the_year(local, zone):
    with pytest.raises(ReceivedAtError, match=f"The year {local.year} cannot be"):
        received_at_in_zone(local, zone)
