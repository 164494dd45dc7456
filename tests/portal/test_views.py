"""The home dashboard, sign-in/out and the audit log, as each role sees them."""

from __future__ import annotations

import copy
import html
import re

import orjson
import pytest
from django.test import Client
from django.urls import reverse

from contracts import services
from portal.models import AuditRecord
from portal.services import audit_record_write
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:
    client = Client()
    assert client.login(username=user.get_username(), password=PASSWORD)
    return client


def text_of(response) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode())))


def submit_v2(chat_v1, author):
    schema = copy.deepcopy(orjson.loads(chat_v1.schema.schema))
    schema["fields"].append({"name": "experiment_id", "type": ["null", "string"], "default": None})
    version, _ = services.contract_version_submit(
        actor=author, contract=chat_v1.contract, schema=schema, mapping_spec=chat_v1.mapping,
        samples=chat_v1.sample_payloads)
    return version


# --- sign-in ---------------------------------------------------------------------------------------

def test_login_page_explains_the_portal_and_signs_in(client, platform_user):
    page = client.get(reverse("login"))
    assert page.status_code == 200
    assert "register event sources" in text_of(page)
    response = client.post(reverse("login"), {"username": "platform", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == reverse("home")


def test_a_wrong_password_is_explained(client, platform_user):
    response = client.post(reverse("login"), {"username": "platform", "password": "nope"})
    assert response.status_code == 200
    assert "didn't match" in text_of(response)


def test_home_needs_sign_in(client):
    response = client.get(reverse("home"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_sign_out_is_a_post_form_in_the_header(platform_user):
    client = client_for(platform_user)
    page = client.get(reverse("home")).content.decode()
    assert f'<form method="post" action="{reverse("logout")}"' in page
    client.post(reverse("logout"))
    assert client.get(reverse("home")).status_code == 302


def test_base_page_uses_only_vendored_assets_and_sends_csrf_with_htmx(platform_user):
    page = client_for(platform_user).get(reverse("home")).content.decode()
    assert "vendor/pico-2.1.1.min.css" in page and "vendor/htmx-2.0.11.min.js" in page
    assert not re.search(r'<(?:script|link)[^>]+(?:src|href)="(?:https?:)?//', page)
    assert re.search(r"<body hx-headers='\{\"X-CSRFToken\": \"[A-Za-z0-9]+\"\}'>", page)


# --- the dashboard ---------------------------------------------------------------------------------

def test_home_shows_the_user_their_roles_and_the_counts(platform_user, chat_contract):
    response = client_for(platform_user).get(reverse("home"))
    body, text = response.content.decode(), text_of(response)
    assert "platform" in text and "Platform team member" in text
    assert re.search(r'data-testid="count-sources">1<', body)
    assert re.search(r'data-testid="count-contracts">1<', body)
    assert re.search(r'data-testid="count-approved">1<', body)


def test_platform_member_sees_their_teams_sources_and_their_changes(platform_user, chat_v1, engineer):
    v2 = submit_v2(chat_v1, platform_user)
    services.contract_version_reject(actor=engineer, version=v2, comment="Use a shorter name.")
    text = text_of(client_for(platform_user).get(reverse("home")))
    assert "Your team's sources" in text and "web-chat" in text
    assert "Recently reviewed" in text and "Rejected" in text and "Use a shorter name." in text
    assert "waiting for your review" not in text


def test_engineer_sees_how_many_versions_wait_for_their_review(engineer, platform_user, chat_v1):
    submit_v2(chat_v1, platform_user)
    response = client_for(engineer).get(reverse("home"))
    assert "1 version waiting for your review" in text_of(response)
    assert re.search(r'data-testid="queue-count">\s*1\s*<', response.content.decode())


def test_engineer_is_not_asked_to_review_their_own_change(engineer, team, chat_v1):
    team.members.add(engineer)
    submit_v2(chat_v1, engineer)
    text = text_of(client_for(engineer).get(reverse("home")))
    assert "Nothing is waiting for your review" in text
    assert "Waiting for a reviewer" in text


def test_admin_sees_the_audit_log_link_and_recent_changes(admin_user, chat_contract):
    response = client_for(admin_user).get(reverse("home"))
    assert "Audit log" in text_of(response) and "Recent changes" in text_of(response)
    assert "contract.create" in text_of(response)


def test_non_admins_have_no_audit_log_link(platform_user, engineer):
    for user in (platform_user, engineer):
        assert reverse("audit_log") not in client_for(user).get(reverse("home")).content.decode()


# --- audit log -------------------------------------------------------------------------------------

def test_audit_log_is_for_admins_only(platform_user, engineer, privacy_user):
    for user in (platform_user, engineer, privacy_user):
        response = client_for(user).get(reverse("audit_log"))
        assert response.status_code == 403
        assert "for admins" in text_of(response)


def test_audit_log_shows_who_did_what_with_before_and_after(admin_user, platform_user, web_chat_source):
    services.source_update(actor=platform_user, source=web_chat_source, is_active=False)
    response = client_for(admin_user).get(reverse("audit_log"), {"action": "source.disable"})
    body, text = response.content.decode(), text_of(response)
    assert response.status_code == 200
    assert "platform" in text and "source.disable" in text and "web-chat" in text
    changed = re.search(r'<tr class="kv-changed">(.*?)</tr>', body, re.S).group(1)
    assert "is_active" in changed and "true" in changed and "false" in changed
    assert len(re.findall(r'data-testid="audit-record"', body)) == 1


def test_audit_log_filters_by_actor_action_and_object_type(admin_user, platform_user, engineer, chat_v1):
    client = client_for(admin_user)
    by_actor = text_of(client.get(reverse("audit_log"), {"actor": "engineer"}))
    assert "contract_version.approve" in by_actor
    page = client.get(reverse("audit_log"), {"actor": "engineer"}).content.decode()
    records = re.findall(r'data-testid="audit-record"', page)
    assert len(records) == AuditRecord.objects.filter(actor_username="engineer").count()
    by_type = client.get(reverse("audit_log"), {"object_type": "contracts.source"}).content.decode()
    assert len(re.findall(r'data-testid="audit-record"', by_type)) == AuditRecord.objects.filter(
        object_type="contracts.source").count()


def test_audit_log_is_paginated_and_keeps_the_filters(admin_user, web_chat_source):
    for index in range(60):
        audit_record_write(actor=admin_user, action="test.bulk", obj=web_chat_source, after={"n": index})
    client = client_for(admin_user)
    first = client.get(reverse("audit_log"), {"action": "test.bulk"})
    assert len(re.findall(r'data-testid="audit-record"', first.content.decode())) == 50
    assert "Page 1 of 2" in text_of(first)
    assert "?action=test.bulk&page=2" in first.content.decode()
    second = client.get(reverse("audit_log"), {"action": "test.bulk", "page": 2})
    assert len(re.findall(r'data-testid="audit-record"', second.content.decode())) == 10


def test_the_favicon_is_ours_on_every_page_the_admin_included(client, platform_user):
    """The Django admin names no icon, so browsers ask for /favicon.ico: it must lead to the portal's icon,
    not to a 404 in the console (walkthrough, page 66)."""
    from django.contrib.staticfiles import finders

    answer = client.get("/favicon.ico")
    assert answer.status_code == 301
    assert answer["Location"].endswith("portal/favicon.svg")
    assert finders.find("portal/favicon.svg")
    page = client_for(platform_user).get("/")
    assert 'rel="icon"' in page.content.decode() and "portal/favicon.svg" in page.content.decode()
