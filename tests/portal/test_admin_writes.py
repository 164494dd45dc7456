"""The Django admin never writes around the services and the audit log (hostile-input sweep D4).

Sources, contracts, versions and role groups are read-only there; people and teams are still managed
there, and each such write is in the portal's audit log with the state before and after."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from portal.models import AuditRecord, Team
from portal.roles import Role

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


def test_an_admin_cannot_loosen_a_contract_or_edit_a_source_through_the_admin(admin_client, chat_v1):
    contract = chat_v1.contract
    source = contract.source
    change = reverse("admin:contracts_contract_change", args=[contract.pk])
    page = admin_client.get(change)
    assert page.status_code == 200 and contract.subject in page.content.decode()  # still visible
    assert 'name="_save"' not in page.content.decode()
    response = admin_client.post(change, {"subject": contract.subject, "source": source.pk,
                                          "compatibility": "NONE", "_save": "Save"})
    assert response.status_code == 403
    contract.refresh_from_db()
    assert contract.compatibility != "NONE"

    response = admin_client.post(reverse("admin:contracts_source_change", args=[source.pk]),
                                 {"team": source.team_id, "platform": source.platform, "kind": source.kind,
                                  "product": "", "_save": "Save"})
    assert response.status_code == 403
    source.refresh_from_db()
    assert source.is_active
    for name in ("contracts_source_add", "contracts_contract_add", "contracts_contractversion_add", "auth_group_add"):
        assert admin_client.get(reverse(f"admin:{name}")).status_code == 403, name
    assert admin_client.post(reverse("admin:contracts_source_delete", args=[source.pk]),
                             {"post": "yes"}).status_code == 403


def test_people_and_role_grants_made_in_the_admin_are_audited(admin_client, role_groups):
    response = admin_client.post(reverse("admin:auth_user_add"), {
        "username": "newcomer", "password1": "a-long-enough-pass-123", "password2": "a-long-enough-pass-123",
        "usable_password": "true", "_save": "Save"})
    assert response.status_code == 302, response.content.decode()[:2000]
    user = get_user_model().objects.get(username="newcomer")
    created = AuditRecord.objects.get(action="user.create", object_id=str(user.pk))
    assert created.actor_username == "admin" and created.after["roles"] == []
    assert "pbkdf2" not in str(created.after)

    engineer_group = role_groups[Role.DATA_ENGINEER]
    response = admin_client.post(reverse("admin:auth_user_change", args=[user.pk]), {
        "username": "newcomer", "email": "new@example.com", "is_active": "on", "groups": [engineer_group.pk],
        "date_joined_0": "2026-12-01", "date_joined_1": "10:00:00", "initial-date_joined_0": "2026-12-01",
        "initial-date_joined_1": "10:00:00", "_save": "Save"})
    assert response.status_code == 302, response.content.decode()[:3000]
    grant = AuditRecord.objects.get(action="user.change", object_id=str(user.pk))
    assert grant.before["roles"] == [] and grant.after["roles"] == [Role.DATA_ENGINEER.value]
    assert grant.before["password"] == grant.after["password"]  # unchanged, and never the hash

    response = admin_client.post(reverse("admin:auth_user_password_change", args=[user.pk]), {
        "password1": "another-long-pass-456", "password2": "another-long-pass-456"})
    assert response.status_code == 302
    changed = AuditRecord.objects.filter(action="user.change", object_id=str(user.pk)).order_by("-pk").first()
    assert changed.before["password"] != changed.after["password"]
    assert admin_client.get(reverse("audit_log")).content.decode().count("newcomer") >= 3


def test_team_membership_changed_in_the_admin_is_audited(admin_client, team, platform_user, engineer):
    response = admin_client.post(reverse("admin:portal_team_change", args=[team.pk]), {
        "name": team.name, "display_name": team.display_name, "members": [platform_user.pk, engineer.pk],
        "_save": "Save"})
    assert response.status_code == 302
    record = AuditRecord.objects.get(action="team.change")
    assert record.before["members"] == ["platform"] and record.after["members"] == ["engineer", "platform"]
    assert Team.objects.get(pk=team.pk).members.count() == 2
