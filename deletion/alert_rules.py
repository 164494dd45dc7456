"""The deletion SLA's alert rule for the quality alerts: one condition per ticket at risk (under 24 h left,
warning) or overdue (critical). Runbook anchor ``deletion-sla``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from deletion import sla
from quality.alert_types import Condition, Severity

RULE = "deletion_sla"
RUNBOOK = "deletion-sla"


def sla_conditions(tickets: Sequence[tuple[str, str, datetime, str]], now: datetime) -> list[Condition]:
    """Pure part: ``tickets`` are (reference, status, due, link) of tickets not done."""
    conditions = []
    for reference, status, due, link in tickets:
        state = sla.sla_state(due=due, now=now)
        if state not in (sla.SlaState.AT_RISK, sla.SlaState.OVERDUE):
            continue
        overdue = state == sla.SlaState.OVERDUE
        clock = sla.clock_text(due=due, now=now)
        conditions.append(Condition(
            rule=RULE, key=f"{RULE}:{reference}", subject=reference,
            severity=Severity.CRITICAL if overdue else Severity.WARNING,
            summary=f"Deletion {reference} is {'overdue' if overdue else 'at risk'}: {clock} (status {status}).",
            runbook=RUNBOOK, link=link,
            details={"state": state.value, "due_at": due.isoformat(), "status": status,
                     "seconds_left": int((due - now).total_seconds())}))
    return conditions


def deletion_sla(now: datetime) -> list[Condition]:
    from django.urls import reverse

    from deletion.models import DeletionTicket, TicketStatus

    rows = DeletionTicket.objects.exclude(status=TicketStatus.DONE).order_by("due_at", "pk")
    return sla_conditions([(t.reference, t.status, t.due_at, reverse("deletion_ticket", args=[t.pk]))
                           for t in rows], now)
