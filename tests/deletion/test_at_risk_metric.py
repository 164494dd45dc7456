"""/metrics carries ``chatorbit_deletion_requests_at_risk``: the deletion tickets at risk of their SLA and those
overdue, read from the tickets at scrape time (the alert in docs/ops/prometheus-alerts.yml sums it)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from deletion import services
from deletion.models import DeletionTicket, TicketStatus

pytestmark = pytest.mark.django_db


def at_risk_samples(client) -> dict[str, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {s.labels["state"]: s.value for family in text_string_to_metric_families(response.content.decode())
            for s in family.samples if s.name == "chatorbit_deletion_requests_at_risk"}


def test_a_ticket_at_risk_and_one_overdue_show_in_the_scrape_and_leave_it_when_done(client, deletion_env,
                                                                                    privacy_user):
    assert at_risk_samples(client) == {"at_risk": 0.0, "overdue": 0.0}
    now = timezone.now()
    ident = [services.subject.identifier_parse("anonymous_id", "anon-x")]

    def filed(hours_ago: float) -> DeletionTicket:
        return services.ticket_file(actor=privacy_user, regulation="gdpr", requester_reference=f"R-{hours_ago}",
                                    identifiers=ident, received_at=now - timedelta(hours=hours_ago))

    filed(1)                                      # open: 71 hours left
    at_risk = filed(50)                           # 22 hours left
    filed(80)                                     # 8 hours past its due time
    assert at_risk_samples(client) == {"at_risk": 1.0, "overdue": 1.0}

    DeletionTicket.objects.filter(pk=at_risk.pk).update(status=TicketStatus.DONE, finished_at=timezone.now())
    assert at_risk_samples(client) == {"at_risk": 0.0, "overdue": 1.0}
