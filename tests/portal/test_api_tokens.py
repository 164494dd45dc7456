"""Personal API tokens: created, listed and revoked by their owner on the portal's tokens page; stored
hashed; refused by the API and the registry once expired or revoked, with a message that says so."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from portal import token_rules
from portal.models import ApiToken, AuditRecord
from portal.services import api_token_check, api_token_create, api_token_revoke
from tests.conftest import PASSWORD
from tests.portal.test_views import text_of

pytestmark = pytest.mark.django_db

TOKEN_TEXT = re.compile(r"co_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}")


def client_for(user) -> Client:
    client = Client()
    assert client.login(username=user.get_username(), password=PASSWORD)
    return client


def api_with(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def registry_with(username: str, token: str) -> APIClient:
    client = APIClient()
    basic = base64.b64encode(f"{username}:{token}".encode()).decode()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {basic}")
    return client


# --- the rules (pure) ------------------------------------------------------------------------------

NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)


def test_expiry_choices_count_days_from_now_and_never_means_none():
    assert token_rules.expiry_from_choice("30", NOW) == NOW + dt.timedelta(days=30)
    assert token_rules.expiry_from_choice("365", NOW) == NOW + dt.timedelta(days=365)
    assert token_rules.expiry_from_choice("never", NOW) is None
    with pytest.raises(token_rules.TokenRequestError, match="'7'"):
        token_rules.expiry_from_choice("7", NOW)


def test_token_state_revoked_wins_over_expired_and_expiry_is_exclusive():
    past, future = NOW - dt.timedelta(seconds=1), NOW + dt.timedelta(days=1)
    assert token_rules.token_state(revoked_at=None, expires_at=None, now=NOW) == "active"
    assert token_rules.token_state(revoked_at=None, expires_at=future, now=NOW) == "active"
    assert token_rules.token_state(revoked_at=None, expires_at=NOW, now=NOW) == "expired"
    assert token_rules.token_state(revoked_at=past, expires_at=past, now=NOW) == "revoked"


def test_names_are_required_bounded_and_single_line():
    assert token_rules.clean_name("  ci  ") == "ci"
    for bad, says in [("", "needs a name"), ("   ", "needs a name"), ("x" * 129, "at most 128"),
                      ("a\nb", "control characters"), (None, "needs a name")]:
        with pytest.raises(token_rules.TokenRequestError, match=says):
            token_rules.clean_name(bad)


# --- services --------------------------------------------------------------------------------------

def test_a_token_is_stored_only_as_a_hash_of_its_secret(platform_user):
    token, text = api_token_create(user=platform_user, name="ci")
    prefix, secret = token_rules.token_parts(text)
    assert token.prefix == prefix
    assert token.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    stored = ApiToken.objects.filter(pk=token.pk).values()[0]
    assert not any(secret in str(value) for value in stored.values())
    record = AuditRecord.objects.get(action="api_token.create")
    assert secret not in str(record.after) and record.after["prefix"] == prefix


def test_an_expiry_in_the_past_is_refused(platform_user):
    with pytest.raises(token_rules.TokenRequestError, match="in the future"):
        api_token_create(user=platform_user, name="ci", expires_at=timezone.now() - dt.timedelta(days=1))


def test_an_expired_token_is_refused_with_the_day_it_expired(platform_user):
    token, text = api_token_create(user=platform_user, name="ci", expires_at=timezone.now() + dt.timedelta(days=1))
    assert api_token_check(text).user == platform_user
    ApiToken.objects.filter(pk=token.pk).update(expires_at=dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC))
    check = api_token_check(text)
    assert check.user is None and check.refusal == "expired"
    assert "'ci'" in check.message and "expired on 2026-01-02 03:04 UTC" in check.message


def test_revoking_stops_the_token_and_is_audited_once(platform_user):
    token, text = api_token_create(user=platform_user, name="ci")
    api_token_revoke(actor=platform_user, token=token)
    api_token_revoke(actor=platform_user, token=token)  # again: nothing changes
    check = api_token_check(text)
    assert check.user is None and check.refusal == "revoked" and "was revoked on" in check.message
    records = AuditRecord.objects.filter(action="api_token.revoke")
    assert records.count() == 1 and records[0].actor_username == "platform"
    assert records[0].after["prefix"] == token.prefix


def test_only_the_owner_or_an_admin_may_revoke(platform_user, other_platform_user, admin_user):
    from django.core.exceptions import PermissionDenied

    token, _ = api_token_create(user=platform_user, name="ci")
    with pytest.raises(PermissionDenied):
        api_token_revoke(actor=other_platform_user, token=token)
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None
    api_token_revoke(actor=admin_user, token=token)
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None


def test_last_used_is_written_on_use_at_most_once_a_minute(platform_user):
    token, text = api_token_create(user=platform_user, name="ci")
    assert token.last_used_at is None
    api_token_check(text)
    first = ApiToken.objects.get(pk=token.pk).last_used_at
    assert first is not None
    api_token_check(text)
    assert ApiToken.objects.get(pk=token.pk).last_used_at == first  # within the minute: no write
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first - dt.timedelta(minutes=2))
    api_token_check(text)
    assert ApiToken.objects.get(pk=token.pk).last_used_at > first - dt.timedelta(seconds=1)


def test_a_token_made_before_expiry_existed_still_works(platform_user):
    # Rows from before this change have no expires_at; the token text format is unchanged.
    token, text = api_token_create(user=platform_user, name="old")
    ApiToken.objects.filter(pk=token.pk).update(expires_at=None)
    assert api_with(text).get("/api/v1/sources/").status_code == 200


def test_create_api_token_command_refuses_an_empty_name(platform_user):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="needs a name"):
        call_command("create_api_token", "platform", "--name", " ")


# --- the API and the registry refuse expired and revoked tokens ------------------------------------

def test_api_refuses_a_revoked_token_with_401_saying_revoked(platform_user):
    token, text = api_token_create(user=platform_user, name="ci")
    assert api_with(text).get("/api/v1/sources/").status_code == 200
    api_token_revoke(actor=platform_user, token=token)
    response = api_with(text).get("/api/v1/sources/")
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "token_revoked"
    assert "'ci'" in body["message"] and "revoked on" in body["message"]
    assert "/account/tokens/" in body["message"]


def test_api_refuses_an_expired_token_with_401_saying_expired(platform_user):
    token, text = api_token_create(user=platform_user, name="ci")
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - dt.timedelta(minutes=1))
    response = api_with(text).get("/api/v1/sources/")
    assert response.status_code == 401
    assert response.json()["error"] == "token_expired" and "expired on" in response.json()["message"]


def test_registry_basic_auth_refuses_revoked_and_expired_tokens(platform_user):
    revoked, revoked_text = api_token_create(user=platform_user, name="kafka")
    expired, expired_text = api_token_create(user=platform_user, name="old-kafka")
    assert registry_with("platform", revoked_text).get("/registry/subjects").status_code == 200
    api_token_revoke(actor=platform_user, token=revoked)
    ApiToken.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - dt.timedelta(minutes=1))
    for text, says in [(revoked_text, "revoked on"), (expired_text, "expired on")]:
        response = registry_with("platform", text).get("/registry/subjects")
        assert response.status_code == 401
        assert response.json()["error_code"] == 40101 and says in response.json()["message"]


# --- the tokens page -------------------------------------------------------------------------------

def test_tokens_page_needs_sign_in(client):
    response = client.get(reverse("api_tokens"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_creating_a_token_shows_it_once_uncached_and_it_works(platform_user):
    client = client_for(platform_user)
    response = client.post(reverse("api_tokens"), {"name": "chat CI", "expires": "30"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    (text,) = set(TOKEN_TEXT.findall(response.content.decode()))
    assert "shown only once" in text_of(response)
    token = ApiToken.objects.get(user=platform_user)
    assert token.name == "chat CI"
    assert abs(token.expires_at - (timezone.now() + dt.timedelta(days=30))) < dt.timedelta(minutes=1)
    assert api_with(text).get("/api/v1/sources/").status_code == 200

    again = client.get(reverse("api_tokens"))
    assert text not in again.content.decode() and token.prefix in again.content.decode()
    assert not any(text in str(value) for value in client.session.values())


def test_a_token_without_a_name_is_not_created_and_the_form_says_why(platform_user):
    response = client_for(platform_user).post(reverse("api_tokens"), {"name": "  ", "expires": "90"})
    assert response.status_code == 400
    assert "A token needs a name" in text_of(response)
    assert not ApiToken.objects.exists()


def test_an_unknown_expiry_choice_is_refused(platform_user):
    response = client_for(platform_user).post(reverse("api_tokens"), {"name": "ci", "expires": "9999"})
    assert response.status_code == 400 and "9999 is not one of the available choices" in text_of(response)
    assert not ApiToken.objects.exists()


def test_the_list_shows_only_my_tokens_with_their_dates_and_state(platform_user, other_platform_user):
    mine, _ = api_token_create(user=platform_user, name="mine-ci", expires_at=timezone.now() + dt.timedelta(days=9))
    gone, _ = api_token_create(user=platform_user, name="mine-old")
    api_token_revoke(actor=platform_user, token=gone)
    ApiToken.objects.filter(pk=mine.pk).update(last_used_at=timezone.now() - dt.timedelta(hours=3))
    theirs, _ = api_token_create(user=other_platform_user, name="their-ci")
    response = client_for(platform_user).get(reverse("api_tokens"))
    text = text_of(response)
    assert "mine-ci" in text and f"co_{mine.prefix}_…" in text and "3 hours ago" in text
    assert mine.expires_at.strftime("%Y-%m-%d") in text
    assert "mine-old" in text and "revoked" in text
    assert "their-ci" not in text and theirs.prefix not in response.content.decode()


def test_revoking_asks_first_then_refuses_the_token(platform_user):
    token, text = api_token_create(user=platform_user, name="ci")
    client = client_for(platform_user)
    confirm = client.get(reverse("api_token_revoke", args=[token.pk]))
    assert confirm.status_code == 200 and "Revoke token “ci”?" in text_of(confirm)
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None  # looking is not revoking
    response = client.post(reverse("api_token_revoke", args=[token.pk]), follow=True)
    assert "Token 'ci'" in text_of(response) and "revoked" in text_of(response)
    assert api_with(text).get("/api/v1/sources/").status_code == 401


def test_nobody_else_can_see_or_revoke_my_token(platform_user, other_platform_user):
    token, text = api_token_create(user=platform_user, name="ci")
    other = client_for(other_platform_user)
    assert other.get(reverse("api_token_revoke", args=[token.pk])).status_code == 404
    assert other.post(reverse("api_token_revoke", args=[token.pk])).status_code == 404
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None
    assert api_with(text).get("/api/v1/sources/").status_code == 200


def test_an_admin_revokes_anyones_token_from_the_admin(platform_user, admin_user):
    token, text = api_token_create(user=platform_user, name="ci")
    response = client_for(admin_user).post(
        reverse("admin:portal_apitoken_changelist"),
        {"action": "revoke_selected", "_selected_action": [token.pk]}, follow=True)
    assert response.status_code == 200
    assert api_with(text).get("/api/v1/sources/").status_code == 401
    assert AuditRecord.objects.get(action="api_token.revoke").actor_username == "admin"


def test_the_tokens_page_is_linked_from_the_header_the_sign_in_page_and_the_api_docs(platform_user, client):
    url = reverse("api_tokens")
    assert f'href="{url}"' in client_for(platform_user).get(reverse("home")).content.decode()
    assert f'href="{url}"' in client.get(reverse("login")).content.decode()
    schema = client_for(platform_user).get(reverse("api_schema"), {"format": "json"}).json()
    assert "(/account/tokens/)" in schema["info"]["description"]
    assert "create_api_token" not in schema["info"]["description"]
