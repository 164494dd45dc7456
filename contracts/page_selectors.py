"""Reads that only the portal pages need: list rows with counts, the dashboard, "my versions".

Kept apart from `selectors.py` (shared with the API and registry) so the pages can shape their
rows without widening the shared read API; candidates to move there if another caller needs them.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery

from contracts.models import Contract, ContractVersion, Source, VersionStatus
from portal.roles import is_admin, user_team_ids


def sources_with_contract_counts(*, team: str | None = None, platform: str | None = None) -> QuerySet[Source]:
    qs = Source.objects.select_related("team").annotate(contract_count=Count("contracts")).order_by("name")
    if team:
        qs = qs.filter(team__name=team)
    if platform:
        qs = qs.filter(platform=platform)
    return qs


def sources_user_may_edit(user: Any) -> QuerySet[Source]:
    """Sources the user's teams own (every source for admins): where they may add contracts."""
    qs = Source.objects.select_related("team").order_by("name")
    return qs if is_admin(user) else qs.filter(team_id__in=user_team_ids(user))


def with_version_summary(contracts: QuerySet[Contract]) -> QuerySet[Contract]:
    """Annotate each contract with its newest version (number, status) and newest approved number."""
    newest = ContractVersion.objects.filter(contract=OuterRef("pk")).order_by("-version")
    approved = newest.filter(status=VersionStatus.APPROVED)
    return contracts.annotate(
        latest_number=Subquery(newest.values("version")[:1]),
        latest_status=Subquery(newest.values("status")[:1]),
        approved_number=Subquery(approved.values("version")[:1]),
    )


def dashboard_counts() -> dict[str, int | bool]:
    versions = ContractVersion.objects.aggregate(
        approved=Count("id", filter=Q(status=VersionStatus.APPROVED)),
        in_review=Count("id", filter=Q(status=VersionStatus.IN_REVIEW)),
    )
    return {
        "sources": Source.objects.count(),
        "active_sources": Source.objects.filter(is_active=True).count(),
        "contracts": Contract.objects.filter(is_canonical=False).count(),  # team contracts, as Contracts lists them
        "has_canonical": Contract.objects.filter(is_canonical=True).exists(),
        "approved_versions": versions["approved"],
        "in_review": versions["in_review"],
    }


def review_queue_waiting_for(user: Any) -> QuerySet[ContractVersion]:
    """Versions in review that this person may review (everything but their own changes)."""
    return (ContractVersion.objects.filter(status=VersionStatus.IN_REVIEW).exclude(author_id=user.pk)
            .exclude(submitted_by_id=user.pk))


def review_queue_size() -> int:
    return ContractVersion.objects.filter(status=VersionStatus.IN_REVIEW).count()


def versions_authored_by(user: Any, *, statuses: list[str], limit: int = 10) -> list[ContractVersion]:
    qs = (
        ContractVersion.objects.filter(author_id=user.pk, status__in=statuses)
        .select_related("contract", "reviewer")
        .order_by("-reviewed_at", "-submitted_at", "-created_at")
    )
    return list(qs[:limit])


def team_sources(user: Any) -> QuerySet[Source]:
    return sources_with_contract_counts().filter(team_id__in=user_team_ids(user))
