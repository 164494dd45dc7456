"""What each role is shown: the privacy officer's home speaks to their work (walkthrough F4), links a role
cannot follow are not shown, and a signed-in person with no role sees no sources, contracts or sample
payloads, on the pages or the API (hostile-input review D15)."""

from __future__ import annotations

import uuid

import pytest
from django.urls import reverse

from portal.services import api_token_create
from tests.portal.test_api_tokens import api_with, client_for, registry_with
from tests.portal.test_views import text_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def nobody(make_user):
    """Signed in, no role group, no team: the hostile-input sweep's user `nobody`."""
    return make_user("nobody")


# --- the privacy officer -----------------------------------------------------------------------------

def test_privacy_officers_home_says_what_they_can_do_and_not_to_join_a_team(privacy_user):
    response = client_for(privacy_user).get(reverse("home"))
    text = text_of(response)
    assert "Not on a team yet" not in text and "Ask an admin to add you" not in text
    assert "Personal data" in text and f'href="{reverse("canonical_model")}"' in response.content.decode()
    assert "personal values are masked" in text
    # the home leads with the deletion requests and their SLA (issue 12)
    assert text.index("Deletion requests") < text.index("Personal data")
    assert f'href="{reverse("deletion_file")}"' in response.content.decode()
    assert "audit log, which admins can open" in text


def test_a_platform_member_without_a_team_is_still_told_to_ask_for_one(make_user):
    from portal.roles import Role

    text = text_of(client_for(make_user("newcomer", Role.PLATFORM)).get(reverse("home")))
    assert "Not on a team yet" in text and "Ask an admin to add you" in text


def test_pipeline_page_links_to_quarantine_only_for_those_it_answers(
    privacy_user, engineer, settings, warehouse_server
):
    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "database": f"T_{uuid.uuid4().hex[:12].upper()}"}
    quarantine = reverse("quarantine_list")
    privacy = client_for(privacy_user)
    page = privacy.get(reverse("pipeline_status"))
    html = page.content.decode()
    assert page.status_code == 200 and 'data-testid="quarantined-new"' in html  # the numbers are there…
    assert f'href="{quarantine}' not in html                                     # …but no link to a 403
    assert privacy.get(quarantine).status_code == 403
    assert f'href="{quarantine}' not in privacy.get(reverse("pipeline_live")).content.decode()

    html = client_for(engineer).get(reverse("pipeline_status")).content.decode()
    assert f'href="{quarantine}?status=new"' in html and f'href="{quarantine}"' in html


# --- no role at all ----------------------------------------------------------------------------------

def test_someone_without_a_role_is_asked_to_get_one_and_shown_no_contracts(nobody, chat_v1):
    client = client_for(nobody)
    home = client.get(reverse("home"))
    assert home.status_code == 200
    assert "Your account has no role yet" in text_of(home) and "ask an admin" in text_of(home).lower()
    assert reverse("contract_list") not in home.content.decode()  # no nav to pages that would refuse them
    subject = chat_v1.contract.subject
    sample_value = chat_v1.sample_payloads[0]["sessionId"]
    for url in [reverse("contract_list"), reverse("contract_detail", args=[subject]),
                reverse("version_detail", args=[subject, 1]), reverse("source_list"),
                reverse("source_detail", args=["web-chat"]), reverse("analytics_dashboard"),
                reverse("pipeline_status"), reverse("api_tokens")]:
        response = client.get(url)
        assert response.status_code == 403, url
        assert "Your account has no role yet" in text_of(response), url
        assert sample_value not in response.content.decode(), url


def test_someone_without_a_role_gets_nothing_from_the_api_or_the_registry(nobody, chat_v1):
    _, token = api_token_create(user=nobody, name="bootstrapped")  # e.g. by an operator's command
    subject = chat_v1.contract.subject
    response = api_with(token).get(f"/api/v1/contracts/{subject}/versions/1/")
    assert response.status_code == 403 and "no role yet" in response.json()["message"]
    assert "sessionId" not in response.content.decode()
    registry = registry_with("nobody", token).get(f"/registry/subjects/{subject}/versions/1")
    assert registry.status_code == 403 and registry.json()["error_code"] == 40301
    assert "no role yet" in registry.json()["message"]


def test_a_role_still_reads_contracts_and_samples(engineer, chat_v1):
    # The gate is for people with no role: everyone with one reads as before.
    subject = chat_v1.contract.subject
    assert client_for(engineer).get(reverse("version_detail", args=[subject, 1])).status_code == 200
    _, token = api_token_create(user=engineer, name="ci")
    assert "sample_payloads" in api_with(token).get(f"/api/v1/contracts/{subject}/versions/1/").json()
