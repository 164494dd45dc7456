"""What each role is shown: the privacy officer's home speaks to their work (walkthrough F4), and links a
role cannot follow are not shown."""

from __future__ import annotations

import uuid

import pytest
from django.urls import reverse

from tests.portal.test_api_tokens import client_for
from tests.portal.test_views import text_of

pytestmark = pytest.mark.django_db


# --- the privacy officer -----------------------------------------------------------------------------

def test_privacy_officers_home_says_what_they_can_do_and_not_to_join_a_team(privacy_user):
    response = client_for(privacy_user).get(reverse("home"))
    text = text_of(response)
    assert "Not on a team yet" not in text and "Ask an admin to add you" not in text
    assert "Personal data" in text and f'href="{reverse("canonical_model")}"' in response.content.decode()
    assert "personal values are masked" in text
    assert "Deletion requests: coming" in text and "erases nothing" in text
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

