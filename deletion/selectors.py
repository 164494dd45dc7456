"""Reads of the deletion app: tickets with their SLA clocks, the SLA page's figures, a ticket's steps."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

from deletion import sla
from deletion.models import DeletionTicket, TicketStatus

COMPLETION_WINDOW = timedelta(days=30)


@dataclasses.dataclass(frozen=True)
class TicketClock:
    ticket: DeletionTicket
    state: sla.SlaState
    clock: str

    @property
    def state_label(self) -> str:
        return sla.SLA_STATE_LABELS[self.state]


def ticket_get(pk: Any) -> DeletionTicket:
    """The ticket, or DeletionTicket.DoesNotExist (also for an id that is not a number)."""
    try:
        number = int(pk)
    except (TypeError, ValueError) as err:
        raise DeletionTicket.DoesNotExist from err
    if not 1 <= number < 2**63:  # outside a bigint: no such row (and PostgreSQL would refuse the lookup)
        raise DeletionTicket.DoesNotExist
    return DeletionTicket.objects.select_related("filed_by", "reviewed_by", "confirmed_by").get(pk=number)


def ticket_clock(ticket: DeletionTicket, now: datetime) -> TicketClock:
    return TicketClock(ticket, sla.sla_state(due=ticket.due_at, now=now, finished_at=ticket.finished_at),
                       sla.clock_text(due=ticket.due_at, now=now, finished_at=ticket.finished_at))


def sla_overview(now: datetime) -> dict[str, Any]:
    """Open, at-risk and overdue tickets (soonest due first), tickets done in the last 30 days, and the median
    and 95th percentile of received-to-done time over those 30 days."""
    not_done = [ticket_clock(t, now) for t in DeletionTicket.objects.exclude(status=TicketStatus.DONE)
                .select_related("filed_by").order_by("due_at", "pk")]
    done = [ticket_clock(t, now) for t in DeletionTicket.objects.filter(
        status=TicketStatus.DONE, finished_at__gte=now - COMPLETION_WINDOW).order_by("-finished_at", "-pk")]
    stats = sla.completion_stats([c.ticket.finished_at - c.ticket.received_at for c in done])
    by_state = {state: [c for c in not_done if c.state == state]
                for state in (sla.SlaState.OVERDUE, sla.SlaState.AT_RISK, sla.SlaState.OPEN)}
    return {
        "overdue": by_state[sla.SlaState.OVERDUE], "at_risk": by_state[sla.SlaState.AT_RISK],
        "open": by_state[sla.SlaState.OPEN], "done": done, "stats": stats,
        "median_text": sla.duration_text(stats.median) if stats.median is not None else "—",
        "p95_text": sla.duration_text(stats.p95) if stats.p95 is not None else "—",
        "within_sla": sum(1 for c in done if c.ticket.finished_at <= c.ticket.due_at),
        "waiting_for_officer": [c for c in not_done if c.ticket.status in (
            TicketStatus.FILED, TicketStatus.EXPANDED, TicketStatus.HELD, TicketStatus.FAILED)],
    }


def tickets_at_risk_or_overdue(now: datetime) -> list[TicketClock]:
    clocks = [ticket_clock(t, now) for t in DeletionTicket.objects.exclude(status=TicketStatus.DONE)
              .order_by("due_at", "pk")]
    return [c for c in clocks if c.state in (sla.SlaState.AT_RISK, sla.SlaState.OVERDUE)]


def requests_at_risk_samples(now: datetime | None = None) -> list[tuple[tuple[str, ...], float]]:
    """The /metrics gauge ``chatorbit_deletion_requests_at_risk``: tickets not done, at risk and overdue, one
    sample per state (0 included, so an alert can tell "none" from "not scraped")."""
    from django.utils import timezone

    clocks = tickets_at_risk_or_overdue(now or timezone.now())
    return [((state.value,), float(sum(1 for c in clocks if c.state == state)))
            for state in (sla.SlaState.AT_RISK, sla.SlaState.OVERDUE)]
