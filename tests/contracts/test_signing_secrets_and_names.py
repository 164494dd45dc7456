"""Webhook signing secrets are printable ASCII of a sensible length, never trimmed silently; source names that
read as "no value" are refused; API input of the wrong JSON type or with NUL characters is a 400 naming it."""

from __future__ import annotations

import pytest
from django.urls import reverse

from contracts.services import signing_secret_problem, source_create

pytestmark = pytest.mark.django_db

SLACK_LIKE = "8f742231b10e8888abcd99aaabbb85a5"  # Slack's signing secrets are 32 hex digits


@pytest.fixture
def slack_source(platform_user, team):
    source, _ = source_create(actor=platform_user, team=team, name="slack-bot", platform="slack", kind="webhook")
    return source


@pytest.mark.parametrize("secret, words", [
    ("abc\x16defghijklm", "printable ASCII"),
    ("geheimnis-schlüssel-1", "printable ASCII"),
    (" " + SLACK_LIKE, "starts or ends with a space"),
    (SLACK_LIKE + "\n", "starts or ends with a space"),
    ("short-1", "12–255 characters, not 7"),
    ("x" * 256, "12–255 characters, not 256"),
    ("", "Enter the signing secret"),
])
def test_a_bad_signing_secret_is_named(secret, words):
    assert words in signing_secret_problem(secret)


@pytest.mark.parametrize("secret", [SLACK_LIKE, "fresh-secret", "voice signing secret with spaces!"])
def test_realistic_signing_secrets_are_fine(secret):
    assert signing_secret_problem(secret) is None


def test_the_api_refuses_a_secret_with_control_characters_and_keeps_the_old_one(api_client_for, platform_user,
                                                                                slack_source):
    client = api_client_for(platform_user)
    url = "/api/v1/sources/slack-bot/signing-secret"
    assert client.post(url, {"signing_secret": SLACK_LIKE}, format="json").status_code == 200
    response = client.post(url, {"signing_secret": "\x16x/\U000ee29b-padding-it"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_secret" and "printable ASCII" in response.json()["message"]
    slack_source.refresh_from_db()
    assert slack_source.signing_secret == SLACK_LIKE


def test_the_api_refuses_surrounding_spaces_instead_of_trimming(api_client_for, platform_user, slack_source):
    response = api_client_for(platform_user).post("/api/v1/sources/slack-bot/signing-secret",
                                                  {"signing_secret": f"  {SLACK_LIKE} "}, format="json")
    assert response.status_code == 400 and "starts or ends with a space" in response.json()["message"]
    slack_source.refresh_from_db()
    assert slack_source.signing_secret == ""


def test_the_portal_form_says_what_is_wrong_with_a_pasted_secret(client, platform_user, slack_source):
    client.force_login(platform_user)
    response = client.post(reverse("source_signing_secret", args=["slack-bot"]),
                           {"signing_secret": SLACK_LIKE + " "}, follow=True)
    assert "starts or ends with a space" in response.content.decode()
    slack_source.refresh_from_db()
    assert slack_source.signing_secret == ""


@pytest.mark.parametrize("name", ["null", "none", "undefined", "canonical", "new"])
def test_source_names_that_read_as_no_value_are_reserved(api_client_for, platform_user, team, name):
    response = api_client_for(platform_user).post(
        "/api/v1/sources/", {"team": team.name, "name": name, "platform": "web", "kind": "sdk"}, format="json")
    assert response.status_code == 400 and response.json()["error"] == "invalid_name"
    assert "'null'" in response.json()["message"]


def test_a_nul_character_in_a_query_parameter_is_a_400_not_a_500(api_client_for, engineer):
    response = api_client_for(engineer).get("/api/v1/contracts/?team=a%00b")
    # refused before any view runs (portal.middleware, for every page and API alike), naming the parameter
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_query"
    assert "'team'" in response.json()["message"] and "NUL character" in response.json()["message"]


def test_a_number_where_the_api_wants_text_or_true_false_is_refused(api_client_for, platform_user, web_chat_source):
    client = api_client_for(platform_user)
    response = client.patch("/api/v1/sources/web-chat/", {"is_active": 0}, format="json")
    assert response.status_code == 400 and response.json()["details"] == {"is_active": ["Must be true or false, "
                                                                                         "not a number."]}
    response = client.patch("/api/v1/sources/web-chat/", {"description": 12}, format="json")
    assert response.status_code == 400 and "description: Must be a string, not a number." in response.json()["message"]
    web_chat_source.refresh_from_db()
    assert web_chat_source.is_active and web_chat_source.description == ""
