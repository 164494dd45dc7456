"""The contract pages as people use them: every page for the right role, 403 for the wrong one, team
isolation, form errors that name the problem, and the live check fragment."""

from __future__ import annotations

import copy
import html
import re

import orjson
import pytest
from django.test import Client
from django.urls import reverse

from contracts import services
from contracts.models import Contract, ContractVersion, Source, VersionStatus
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


# --- helpers ---------------------------------------------------------------------------------------

def client_for(user) -> Client:
    client = Client()
    assert client.login(username=user.get_username(), password=PASSWORD)
    return client


def schema_of(version: ContractVersion) -> dict:
    return orjson.loads(version.schema.schema)


def with_optional_field(schema: dict, name: str = "experiment_id") -> dict:
    new = copy.deepcopy(schema)
    new["fields"].append({"name": name, "type": ["null", "string"], "default": None})
    return new


def with_required_field(schema: dict, name: str = "tenant_tier") -> dict:
    new = copy.deepcopy(schema)
    new["fields"].append({"name": name, "type": "string"})
    return new


def version_form_data(version: ContractVersion, *, schema: dict | str | None = None, action: str = "submit",
                      mapping: dict | str | None = None, samples: list | str | None = None) -> dict:
    def text(value, default):
        value = default if value is None else value
        return value if isinstance(value, str) else orjson.dumps(value).decode()

    return {
        "schema": text(schema, schema_of(version)),
        "mapping": text(mapping, version.mapping),
        "samples": text(samples, version.sample_payloads),
        "change_summary": "test change",
        "action": action,
    }


def text_of(response) -> str:
    """The response body with tags removed and whitespace collapsed, as a reader sees it."""
    body = response.content.decode()
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)))


@pytest.fixture
def subject(chat_contract) -> str:
    return chat_contract.subject


@pytest.fixture
def in_review_v2(chat_v1, platform_user):
    version, created = services.contract_version_submit(
        actor=platform_user, contract=chat_v1.contract, schema=with_optional_field(schema_of(chat_v1)),
        mapping_spec=chat_v1.mapping, samples=chat_v1.sample_payloads, change_summary="add experiment_id",
    )
    assert created and version.status == VersionStatus.IN_REVIEW
    return version


# --- sign-in and roles -----------------------------------------------------------------------------

@pytest.mark.parametrize("url_name", ["source_list", "source_create", "contract_list", "contract_create",
                                      "review_queue", "canonical_model"])
def test_every_page_asks_anonymous_visitors_to_sign_in(client, url_name):
    response = client.get(reverse(url_name))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_pages_render_for_a_platform_team_member(platform_user, chat_v1, subject):
    client = client_for(platform_user)
    pages = [
        reverse("source_list"), reverse("source_detail", args=["web-chat"]), reverse("source_create"),
        reverse("contract_list"), reverse("contract_detail", args=[subject]), reverse("contract_create"),
        reverse("version_create", args=[subject]), reverse("version_detail", args=[subject, 1]),
        reverse("canonical_model"),
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        assert b"Sign out" in response.content


def test_pages_render_for_a_data_engineer(engineer, in_review_v2, subject):
    client = client_for(engineer)
    for url in [reverse("review_queue"), reverse("review_detail", args=[subject, 2]),
                reverse("contract_detail", args=[subject]), reverse("version_detail", args=[subject, 2])]:
        assert client.get(url).status_code == 200, url


def test_the_review_queue_is_for_data_engineers_only(platform_user, privacy_user, in_review_v2, subject):
    for user in (platform_user, privacy_user):
        client = client_for(user)
        response = client.get(reverse("review_queue"))
        assert response.status_code == 403
        assert "for data engineers" in text_of(response)
        assert client.get(reverse("review_detail", args=[subject, 2])).status_code == 403
        posted = client.post(reverse("review_detail", args=[subject, 2]), {"decision": "approve"})
        assert posted.status_code == 403
    in_review_v2.refresh_from_db()
    assert in_review_v2.status == VersionStatus.IN_REVIEW


def test_unknown_contract_or_version_is_a_404_not_a_500(platform_user, subject):
    client = client_for(platform_user)
    assert client.get(reverse("contract_detail", args=["nope.nothing"])).status_code == 404
    assert client.get(reverse("version_detail", args=[subject, 99])).status_code == 404
    assert client.get(reverse("source_detail", args=["no-such-source"])).status_code == 404


# --- sources ---------------------------------------------------------------------------------------

def test_registering_a_source_shows_its_write_key_once(platform_user, team):
    client = client_for(platform_user)
    response = client.post(reverse("source_create"), {
        "team": team.pk, "name": "desktop-app", "platform": "web", "kind": "sdk", "product": "assistant"})
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    key = re.search(r'value="(wk_[^"]+)"', response.content.decode()).group(1)
    source = Source.objects.get(name="desktop-app")
    assert services.source_write_key_matches(source, key)
    assert "shown only once" in text_of(response)
    detail = client.get(reverse("source_detail", args=["desktop-app"]))
    assert key not in detail.content.decode()
    assert f"wk_{source.write_key_prefix}_" in detail.content.decode()


def test_source_team_choices_are_the_users_own_teams(platform_user, team, other_team):
    client = client_for(platform_user)
    page = client.get(reverse("source_create")).content.decode()
    assert "chat-platform" in page and "voice-team" not in page
    response = client.post(reverse("source_create"),
                           {"team": other_team.pk, "name": "sneaky", "platform": "web", "kind": "sdk"})
    assert response.status_code == 200
    assert "Select a valid choice" in text_of(response)
    assert not Source.objects.filter(name="sneaky").exists()


def test_admins_may_register_sources_for_any_team(admin_user, team, other_team):
    page = client_for(admin_user).get(reverse("source_create")).content.decode()
    assert "chat-platform" in page and "voice-team" in page


def test_a_bad_source_name_is_named_in_the_form(platform_user, team):
    response = client_for(platform_user).post(
        reverse("source_create"), {"team": team.pk, "name": "x", "platform": "web", "kind": "sdk"})
    assert response.status_code == 200
    assert "Source names are 2–63 lowercase letters" in text_of(response)
    assert not Source.objects.filter(name="x").exists()


def test_a_taken_source_name_is_named_in_the_form(platform_user, team, web_chat_source):
    response = client_for(platform_user).post(
        reverse("source_create"), {"team": team.pk, "name": "web-chat", "platform": "web", "kind": "sdk"})
    assert "already exists" in text_of(response)


def test_rotating_the_key_shows_a_new_key_and_the_old_one_stops_working(platform_user, web_chat_source):
    old_hash = web_chat_source.write_key_hash
    response = client_for(platform_user).post(reverse("source_rotate_key", args=["web-chat"]))
    assert response.status_code == 200
    key = re.search(r'value="(wk_[^"]+)"', response.content.decode()).group(1)
    web_chat_source.refresh_from_db()
    assert web_chat_source.write_key_hash != old_hash
    assert services.source_write_key_matches(web_chat_source, key)
    assert "previous key has stopped working" in text_of(response)


def test_another_team_cannot_rotate_the_key_or_change_the_source(other_platform_user, web_chat_source):
    client = client_for(other_platform_user)
    old_hash = web_chat_source.write_key_hash
    response = client.post(reverse("source_rotate_key", args=["web-chat"]))
    assert response.status_code == 403
    assert "Only members of the owning team" in text_of(response)
    assert client.post(reverse("source_set_active", args=["web-chat"]), {"is_active": "0"}).status_code == 403
    assert client.post(reverse("source_signing_secret", args=["web-chat"]),
                       {"signing_secret": "s3cret"}).status_code == 403
    web_chat_source.refresh_from_db()
    assert web_chat_source.write_key_hash == old_hash
    assert web_chat_source.is_active and not web_chat_source.signing_secret
    # The page is readable, but offers no buttons that would be refused.
    detail = client.get(reverse("source_detail", args=["web-chat"])).content.decode()
    assert "Rotate write key" not in detail


def test_owner_disables_and_enables_a_source_and_sets_a_signing_secret(platform_user, web_chat_source):
    client = client_for(platform_user)
    response = client.post(reverse("source_set_active", args=["web-chat"]), {"is_active": "0"}, follow=True)
    assert "is now disabled" in text_of(response)
    web_chat_source.refresh_from_db()
    assert not web_chat_source.is_active
    client.post(reverse("source_set_active", args=["web-chat"]), {"is_active": "1"})
    web_chat_source.refresh_from_db()
    assert web_chat_source.is_active
    slack, key = services.source_create(actor=platform_user, team=web_chat_source.team, name="slack-bot",
                                        platform="slack", kind="webhook")
    detail = reverse("source_detail", args=["slack-bot"])
    assert key == "" and "Signing secret not set" in text_of(client.get(detail))
    response = client.post(reverse("source_signing_secret", args=["slack-bot"]),
                           {"signing_secret": "slack-signing-secret-0123"}, follow=True)
    assert "Signing secret set" in text_of(response)
    assert "slack-signing-secret-0123" not in response.content.decode()


def test_source_pages_show_only_the_credentials_their_kind_uses(platform_user, web_chat_source):
    # walkthrough F24: webhook sources showed a write key and its rotate button; SDK sources a signing-secret form
    client = client_for(platform_user)
    sdk = client.get(reverse("source_detail", args=["web-chat"])).content.decode()
    assert "Rotate write key" in sdk and "signing_secret" not in sdk
    response = client.post(reverse("source_create"), {"team": web_chat_source.team.pk, "name": "slack-bot",
                                                      "platform": "slack", "kind": "webhook"}, follow=True)
    page = response.content.decode()
    assert "Set the provider&#x27;s signing secret" in page or "Set the provider's signing secret" in page
    assert "Rotate write key" not in page and "signing_secret" in page and "wk_" not in page
    assert "/collect/v1/webhooks/slack/slack-bot" in page
    refused = client.post(reverse("source_rotate_key", args=["slack-bot"]))
    assert refused.status_code == 400 and "has no write key" in text_of(refused)


def test_source_list_shows_team_platform_kind_and_contract_count(platform_user, chat_contract):
    response = client_for(platform_user).get(reverse("source_list"))
    row = re.search(r"web-chat.*?</tr>", response.content.decode(), re.S).group(0)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row))
    assert "chat-platform" in text and "Web" in text and " 1 " in text and "active" in text


# --- contracts -------------------------------------------------------------------------------------

def test_creating_a_contract_names_the_subject_after_source_and_event(platform_user, web_chat_source):
    response = client_for(platform_user).post(
        reverse("contract_create"),
        {"source": "web-chat", "event": "page_view", "compatibility": "FULL", "description": "page views"})
    assert response.status_code == 302
    contract = Contract.objects.get(subject="web-chat.page_view")
    assert contract.compatibility == "FULL"
    assert response["Location"] == reverse("version_create", args=["web-chat.page_view"])


def test_a_bad_event_name_is_named_in_the_form(platform_user, web_chat_source):
    response = client_for(platform_user).post(
        reverse("contract_create"), {"source": "web-chat", "event": "Page View!", "compatibility": "FULL"})
    assert response.status_code == 200
    assert "lowercase letters, digits and underscores" in text_of(response)
    assert not Contract.objects.filter(source=web_chat_source).exists()


def test_another_team_cannot_create_contracts_for_the_source(other_platform_user, other_team,
                                                              web_chat_source):
    client = client_for(other_platform_user)
    assert "None of your teams has a source yet" in text_of(client.get(reverse("contract_create")))
    services.source_create(actor=other_platform_user, team=other_team, name="voice-app", platform="voice",
                           kind="backend")
    page = client.get(reverse("contract_create"))
    assert "voice-app" in page.content.decode() and "web-chat" not in page.content.decode()
    response = client.post(reverse("contract_create"),
                           {"source": "web-chat", "event": "sneaky", "compatibility": "FULL"})
    assert response.status_code == 200
    assert "Select a valid choice" in text_of(response)
    assert not Contract.objects.filter(subject="web-chat.sneaky").exists()


def test_contract_list_filters_by_team_platform_and_status(platform_user, chat_contract, other_platform_user,
                                                           other_team):
    voice, _ = services.source_create(actor=other_platform_user, team=other_team, name="voice-app",
                                      platform="voice", kind="backend")
    services.contract_create(actor=other_platform_user, source=voice, event="utterance")
    client = client_for(platform_user)
    everything = client.get(reverse("contract_list")).content.decode()
    assert chat_contract.subject in everything and "voice-app.utterance" in everything
    by_team = client.get(reverse("contract_list"), {"team": "voice-team"}).content.decode()
    assert "voice-app.utterance" in by_team and chat_contract.subject not in by_team
    by_platform = client.get(reverse("contract_list"), {"platform": "web"}).content.decode()
    assert chat_contract.subject in by_platform and "voice-app.utterance" not in by_platform
    approved = client.get(reverse("contract_list"), {"status": "approved"}).content.decode()
    assert chat_contract.subject in approved and "voice-app.utterance" not in approved


def test_contract_list_answers_htmx_with_just_the_table(platform_user, chat_contract):
    response = client_for(platform_user).get(reverse("contract_list"), {"team": "chat-platform"},
                                             HTTP_HX_REQUEST="true", HTTP_HX_TARGET="contract-table")
    body = response.content.decode()
    assert response.status_code == 200
    assert body.lstrip().startswith("<div id=\"contract-table\">") and "<html" not in body
    assert chat_contract.subject in body


def test_contract_page_shows_version_history_with_author_and_status(platform_user, chat_v1, in_review_v2,
                                                                    subject):
    text = text_of(client_for(platform_user).get(reverse("contract_detail", args=[subject])))
    assert "v1 Approved platform" in text and "engineer" in text
    assert "v2 In review platform" in text
    assert "Propose a new version" in text


def test_owner_changes_the_compatibility_level_and_another_team_cannot(platform_user, other_platform_user,
                                                                       chat_contract, subject):
    url = reverse("contract_compatibility", args=[subject])
    assert client_for(other_platform_user).post(url, {"compatibility": "NONE"}).status_code == 403
    chat_contract.refresh_from_db()
    assert chat_contract.compatibility != "NONE"
    response = client_for(platform_user).post(url, {"compatibility": "FULL_TRANSITIVE"}, follow=True)
    assert "now checks new versions under FULL_TRANSITIVE" in text_of(response)
    chat_contract.refresh_from_db()
    assert chat_contract.compatibility == "FULL_TRANSITIVE"
    # Loosening is for data engineers: the page says why instead of failing.
    loosened = client_for(platform_user).post(url, {"compatibility": "BACKWARD"}, follow=True)
    assert loosened.status_code == 403 and "needs a data engineer" in text_of(loosened)


def test_a_data_engineer_may_change_any_contracts_compatibility(engineer, chat_contract, subject):
    client_for(engineer).post(reverse("contract_compatibility", args=[subject]), {"compatibility": "FULL"})
    chat_contract.refresh_from_db()
    assert chat_contract.compatibility == "FULL"


# --- the new-version form --------------------------------------------------------------------------

def test_new_version_form_is_prefilled_from_the_latest_version(platform_user, chat_v1, subject):
    body = client_for(platform_user).get(reverse("version_create", args=[subject])).content.decode()
    first_field = schema_of(chat_v1)["fields"][0]["name"]
    assert f"&quot;{first_field}&quot;" in body
    assert f'hx-post="{reverse("version_check", args=[subject])}"' in body
    assert "keyup changed delay:300ms" in body


def test_another_team_cannot_open_or_post_the_new_version_form(other_platform_user, chat_v1, subject):
    client = client_for(other_platform_user)
    response = client.get(reverse("version_create", args=[subject]))
    assert response.status_code == 403
    assert "Only members of the team that owns" in text_of(response)
    posted = client.post(reverse("version_create", args=[subject]),
                         version_form_data(chat_v1, schema=with_optional_field(schema_of(chat_v1))))
    assert posted.status_code == 403
    assert chat_v1.contract.versions.count() == 1


def test_submitting_a_compatible_version_puts_it_in_review(platform_user, chat_v1, subject):
    response = client_for(platform_user).post(
        reverse("version_create", args=[subject]),
        version_form_data(chat_v1, schema=with_optional_field(schema_of(chat_v1))), follow=True)
    version = chat_v1.contract.versions.get(version=2)
    assert version.status == VersionStatus.IN_REVIEW and version.author == platform_user
    assert response.redirect_chain[-1][0] == reverse("version_detail", args=[subject, 2])
    assert "submitted for review" in text_of(response)


def test_saving_a_draft_then_submitting_it(platform_user, chat_v1, subject):
    client = client_for(platform_user)
    client.post(reverse("version_create", args=[subject]),
                version_form_data(chat_v1, schema=with_optional_field(schema_of(chat_v1)), action="draft"))
    draft = chat_v1.contract.versions.get(version=2)
    assert draft.status == VersionStatus.DRAFT
    page = client.get(reverse("version_detail", args=[subject, 2])).content.decode()
    assert 'data-testid="submit-draft"' in page
    response = client.post(reverse("version_submit", args=[subject, 2]), follow=True)
    draft.refresh_from_db()
    assert draft.status == VersionStatus.IN_REVIEW
    assert "submitted for review" in text_of(response)


def test_uploaded_schema_file_is_used(platform_user, chat_v1, subject):
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = version_form_data(chat_v1, schema="")
    data["schema_file"] = SimpleUploadedFile(
        "event.avsc", orjson.dumps(with_optional_field(schema_of(chat_v1), "from_file")), "application/json")
    client_for(platform_user).post(reverse("version_create", args=[subject]), data)
    version = chat_v1.contract.versions.get(version=2)
    assert any(f["name"] == "from_file" for f in schema_of(version)["fields"])


def test_identical_resubmission_says_so_and_opens_the_existing_version(platform_user, chat_v1, subject):
    response = client_for(platform_user).post(reverse("version_create", args=[subject]),
                                              version_form_data(chat_v1), follow=True)
    assert response.redirect_chain[-1][0] == reverse("version_detail", args=[subject, 1])
    assert "identical to version 1" in text_of(response)
    assert chat_v1.contract.versions.count() == 1


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("schema", '{"type": "record", "name": ', "The schema is not valid JSON"),
    ("schema", '{"type": "record", "name": "X", "fields": [{"name": "a", "type": "strng"}]}',
     "Invalid Avro schema"),
    ("schema", "", "Paste or upload the Avro schema"),
    ("mapping", "{not json", "The mapping is not valid JSON"),
    ("mapping", "[1, 2]", "The mapping must be a JSON object"),
    ("samples", '{"a": 1}', "Sample payloads must be a JSON array"),
])
def test_form_errors_name_the_problem_and_nothing_is_saved(platform_user, chat_v1, subject, field, value,
                                                           expected):
    data = version_form_data(chat_v1, schema=with_optional_field(schema_of(chat_v1)))
    data[field] = value
    response = client_for(platform_user).post(reverse("version_create", args=[subject]), data)
    assert response.status_code == 200
    assert expected in text_of(response)
    assert chat_v1.contract.versions.count() == 1


def test_json_errors_say_where(platform_user, chat_v1, subject):
    data = version_form_data(chat_v1, schema='{\n  "type": "record",\n  "name": oops\n}')
    text = text_of(client_for(platform_user).post(reverse("version_create", args=[subject]), data))
    assert "line 3" in text


def test_a_schema_over_the_size_limit_is_refused_by_name(platform_user, chat_v1, subject, settings):
    settings.CONTRACT_SCHEMA_MAX_BYTES = 2000
    schema = with_optional_field(schema_of(chat_v1))
    schema["doc"] = "x" * 3000
    response = client_for(platform_user).post(reverse("version_create", args=[subject]),
                                              version_form_data(chat_v1, schema=schema))
    text = text_of(response)
    assert "The schema is" in text and "the limit is 2,000 bytes" in text
    assert chat_v1.contract.versions.count() == 1


def test_submitting_a_breaking_change_is_refused_with_the_field_named(platform_user, chat_v1, subject):
    response = client_for(platform_user).post(
        reverse("version_create", args=[subject]),
        version_form_data(chat_v1, schema=with_required_field(schema_of(chat_v1))))
    assert response.status_code == 200
    text = text_of(response)
    assert "incompatible" in text.lower() and "tenant_tier" in text
    assert chat_v1.contract.versions.count() == 1


def test_a_breaking_change_may_still_be_saved_as_a_draft(platform_user, chat_v1, subject):
    client_for(platform_user).post(
        reverse("version_create", args=[subject]),
        version_form_data(chat_v1, schema=with_required_field(schema_of(chat_v1)), action="draft"))
    assert chat_v1.contract.versions.get(version=2).status == VersionStatus.DRAFT


# --- the live check (htmx) -------------------------------------------------------------------------

def test_check_returns_the_report_fragment_for_a_compatible_change(platform_user, chat_v1, subject):
    response = client_for(platform_user).post(
        reverse("version_check", args=[subject]),
        version_form_data(chat_v1, schema=with_optional_field(schema_of(chat_v1))), HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body
    text = text_of(response)
    assert "compatible" in text and "incompatible" not in text
    assert "experiment_id" in text and "FIELD_ADDED_WITH_DEFAULT" in text
    assert 'data-testid="previews"' in body and "canonical event" in text
    assert chat_v1.contract.versions.count() == 1  # a check saves nothing


def test_check_reports_a_breaking_change_with_path_rule_and_severity(platform_user, chat_v1, subject):
    response = client_for(platform_user).post(
        reverse("version_check", args=[subject]),
        version_form_data(chat_v1, schema=with_required_field(schema_of(chat_v1))), HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert "incompatible" in text_of(response)
    assert "tenant_tier" in body and 'class="severity severity-error"' in body


def test_check_shows_json_errors_and_mapping_errors_with_paths(platform_user, chat_v1, subject):
    client = client_for(platform_user)
    broken = client.post(reverse("version_check", args=[subject]),
                         version_form_data(chat_v1, schema='{"type": '), HTTP_HX_REQUEST="true")
    assert "Schema: The schema is not valid JSON" in text_of(broken)
    mapping = copy.deepcopy(chat_v1.mapping)
    events = mapping["events"]
    first = events[0] if isinstance(events, list) else next(iter(events.values()))
    first["fields"]["no_such_canonical_field"] = {"const": "x"}
    response = client.post(reverse("version_check", args=[subject]),
                           version_form_data(chat_v1, mapping=mapping), HTTP_HX_REQUEST="true")
    assert 'data-testid="mapping-errors"' in response.content.decode()
    assert "no_such_canonical_field" in text_of(response)


def test_check_preview_names_the_error_path_for_a_bad_sample(platform_user, chat_v1, subject):
    response = client_for(platform_user).post(
        reverse("version_check", args=[subject]),
        version_form_data(chat_v1, samples=[{"completely": "wrong"}]), HTTP_HX_REQUEST="true")
    text = text_of(response)
    assert "Sample 1" in text and "error" in text


# --- version detail and review ---------------------------------------------------------------------

def test_version_page_shows_schema_mapping_samples_preview_and_report(platform_user, in_review_v2, subject):
    body = client_for(platform_user).get(reverse("version_detail", args=[subject, 2])).content.decode()
    assert "experiment_id" in body
    for testid in ("schema", "compat-report", "mapping-report", "previews", "outcome"):
        assert f'data-testid="{testid}"' in body
    assert "Waiting for review" in body


def test_review_queue_lists_versions_in_review(engineer, in_review_v2, subject):
    text = text_of(client_for(engineer).get(reverse("review_queue")))
    assert subject in text and "v2" in text and "platform" in text and "compatible" in text


def test_nav_shows_the_queue_count_to_engineers_only(engineer, platform_user, in_review_v2):
    engineer_page = client_for(engineer).get(reverse("contract_list")).content.decode()
    assert re.search(r'data-testid="queue-count">\s*1\s*<', engineer_page)
    assert "Review queue" not in client_for(platform_user).get(reverse("contract_list")).content.decode()


def test_review_page_shows_the_side_by_side_schema_diff(engineer, in_review_v2, subject):
    response = client_for(engineer).get(reverse("review_detail", args=[subject, 2]))
    body = response.content.decode()
    assert 'data-testid="schema-diff"' in body
    inserted = re.findall(r'<tr class="diff-(?:insert|replace)">(.*?)</tr>', body, re.S)
    assert any("experiment_id" in row for row in inserted)
    assert "compared with v1" in text_of(response)
    assert "The mapping is unchanged" in text_of(response)


def test_engineer_approves_and_the_author_sees_it(engineer, platform_user, in_review_v2, subject):
    response = client_for(engineer).post(reverse("review_detail", args=[subject, 2]),
                                         {"decision": "approve", "comment": "looks good"}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("review_queue")
    assert "Approved" in text_of(response)
    in_review_v2.refresh_from_db()
    assert in_review_v2.status == VersionStatus.APPROVED and in_review_v2.reviewer == engineer
    contract_page = text_of(client_for(platform_user).get(reverse("contract_detail", args=[subject])))
    assert "v2 Approved" in contract_page


def test_rejecting_needs_a_comment_and_the_author_sees_it(engineer, platform_user, in_review_v2, subject):
    client = client_for(engineer)
    response = client.post(reverse("review_detail", args=[subject, 2]),
                           {"decision": "reject", "comment": " "})
    assert response.status_code == 200
    assert "Say why the version is rejected" in text_of(response)
    in_review_v2.refresh_from_db()
    assert in_review_v2.status == VersionStatus.IN_REVIEW
    client.post(reverse("review_detail", args=[subject, 2]),
                {"decision": "reject", "comment": "Please name it experiment_key instead."})
    in_review_v2.refresh_from_db()
    assert in_review_v2.status == VersionStatus.REJECTED
    contract_page = client_for(platform_user).get(reverse("contract_detail", args=[subject]))
    assert "v2 Rejected" in text_of(contract_page)
    assert "Please name it experiment_key instead." in text_of(contract_page)
    version_page = client_for(platform_user).get(reverse("version_detail", args=[subject, 2]))
    assert "Please name it experiment_key instead." in text_of(version_page)


def test_an_engineer_cannot_approve_their_own_change(engineer, team, chat_v1, subject):
    team.members.add(engineer)
    version, _ = services.contract_version_submit(
        actor=engineer, contract=chat_v1.contract, schema=with_optional_field(schema_of(chat_v1)),
        mapping_spec=chat_v1.mapping, samples=chat_v1.sample_payloads)
    client = client_for(engineer)
    page = client.get(reverse("review_detail", args=[subject, version.version]))
    assert "another data engineer has to review it" in text_of(page)
    response = client.post(reverse("review_detail", args=[subject, version.version]), {"decision": "approve"})
    assert response.status_code == 200
    assert "You cannot review your own change" in text_of(response)
    version.refresh_from_db()
    assert version.status == VersionStatus.IN_REVIEW


# --- canonical model -------------------------------------------------------------------------------

def test_canonical_model_browser_explains_each_field(privacy_user):
    from contracts.canonical_model import load_canonical_model

    model = load_canonical_model()
    response = client_for(privacy_user).get(reverse("canonical_model"))
    assert response.status_code == 200
    text = text_of(response)
    assert "Envelope" in text
    for name in model.event_types:
        assert name in text
    message_sent = model.event_types["message.sent"]
    for field in message_sent.fields:
        assert field.name in text
    assert "personal" in text and "timestamp" in text and "optional" in text
    assert "filled by the pipeline" in text.lower() or "pipeline" in text


def test_a_refused_action_explains_itself_instead_of_failing(platform_user, chat_v1, subject):
    # v1 is approved, not a draft: submitting it again is refused with the reason, and nothing changes.
    response = client_for(platform_user).post(reverse("version_submit", args=[subject, 1]), follow=True)
    assert response.status_code == 200
    assert "Only drafts can be submitted" in text_of(response)
    chat_v1.refresh_from_db()
    assert chat_v1.status == VersionStatus.APPROVED


def test_not_found_pages_say_what_was_missing(platform_user, subject):
    client = client_for(platform_user)
    assert f"Version 99 of '{subject}' not found" in text_of(
        client.get(reverse("version_detail", args=[subject, 99])))
    assert "There is no page at this address" in text_of(client.get("/no/such/page/"))


def test_an_engineer_who_submitted_a_teammates_draft_cannot_review_it(engineer, second_engineer, platform_user, team,
                                                                      chat_v1, subject):
    team.members.add(engineer, platform_user)
    draft, _ = services.contract_version_submit(
        actor=platform_user, contract=chat_v1.contract, schema=with_optional_field(schema_of(chat_v1)),
        mapping_spec=chat_v1.mapping, samples=chat_v1.sample_payloads, submit_for_review=False)
    services.contract_version_submit_for_review(actor=engineer, version=draft)
    client = client_for(engineer)
    page = client.get(reverse("review_detail", args=[subject, draft.version]))
    assert "You submitted this version for review, so another data engineer has to review it" in text_of(page)
    assert "Nothing is waiting for your review" in text_of(client.get(reverse("home")))
    for decision in ("approve", "reject"):
        response = client.post(reverse("review_detail", args=[subject, draft.version]),
                               {"decision": decision, "comment": "looks fine to me"})
        assert "You submitted this version for review, so you cannot review it" in text_of(response)
    draft.refresh_from_db()
    assert draft.status == VersionStatus.IN_REVIEW and draft.reviewer is None
    # any other data engineer can
    services.contract_version_approve(actor=second_engineer, version=draft)
    draft.refresh_from_db()
    assert draft.status == VersionStatus.APPROVED and draft.reviewer == second_engineer


# --- walkthrough 2026-12: the report groups what is new, the review page, the contract page ------------

@pytest.fixture
def chat_v2(chat_v1, web_chat_preset, web_chat_source, platform_user, engineer):
    """The preset's v2 approved on top of v1: it added the optional field `experiment`."""
    spec = dict(web_chat_preset["contracts"][0])
    spec["versions"] = spec["versions"][:2]
    services.preset_versions_load(actor=platform_user, reviewer=engineer, source=web_chat_source, contracts=[spec])
    return chat_v1.contract.versions.get(version=2)


def _between(body: str, start: str, end: str | None = None) -> str:
    part = body[body.index(start):]
    return part[:part.index(end)] if end else part


def test_live_check_shows_what_is_new_apart_from_changes_older_versions_made(platform_user, chat_v2, subject):
    response = client_for(platform_user).post(
        reverse("version_check", args=[subject]),
        version_form_data(chat_v2, schema=with_optional_field(schema_of(chat_v2), "ciNote")), HTTP_HX_REQUEST="true")
    body = response.content.decode()
    new = _between(body, 'data-testid="changes-new"', 'data-testid="changes-older"')
    older = _between(body, 'data-testid="changes-older"', "</details>")
    assert "compared with v2" in text_of(response)
    assert "/fields/ciNote" in new and "/fields/experiment" not in new
    assert "/fields/experiment" in older and "(vs v1" in older and "/fields/ciNote" not in older
    # nothing breaking among the older ones: that group starts collapsed
    assert re.search(r'<details class="change-group" data-testid="changes-older"\s*>', body)


def test_check_api_groups_changes_and_keeps_the_flat_list(api_client_for, platform_user, chat_v2, subject):
    response = api_client_for(platform_user).post(
        f"/api/v1/contracts/{subject}/check", {"schema": with_optional_field(schema_of(chat_v2), "ciNote")},
        format="json")
    body = response.json()
    assert response.status_code == 200 and body["compatible"]
    assert {c["path"] for c in body["changes"]} == {"/fields/ciNote", "/fields/experiment"}
    grouped = body["grouped_changes"]
    assert grouped["latest_version"] == 2
    assert [c["path"] for c in grouped["new"]] == ["/fields/ciNote"]
    assert [(c["path"], c["against_version"]) for c in grouped["older"]] == [("/fields/experiment", 1)]


def test_typing_the_change_summary_does_not_run_the_check(platform_user, chat_v1, subject):
    body = client_for(platform_user).get(reverse("version_create", args=[subject])).content.decode()
    checked = _between(body, 'data-testid="checked-inputs"', 'name="change_summary"')
    assert 'name="schema"' in checked and 'name="samples"' in checked
    # the checked inputs' <div> is closed before the summary: typing it triggers no check
    assert checked.count("</div>") == checked.count("<div") + 1
    assert "contracts/version_editor.js" in body


def test_review_page_puts_the_decision_after_the_verdict_and_before_the_samples(engineer, in_review_v2, subject):
    body = client_for(engineer).get(reverse("review_detail", args=[subject, 2])).content.decode()
    order = [body.index(marker) for marker in ('data-testid="schema-diff"', 'data-testid="verdict-summary"',
                                               'id="decision"', 'data-testid="previews"', 'data-testid="mapping-diff"'
                                               if 'data-testid="mapping-diff"' in body else 'The mapping is unchanged')]
    assert order == sorted(order)
    previews = _between(body, 'data-testid="previews"', "</section>")
    assert previews.count('data-testid="preview"') >= 1
    assert " open>" not in previews and "open " not in previews.replace("<details", "")  # all collapsed


def test_rejecting_without_a_comment_says_so_at_the_top_and_focuses_the_comment(engineer, in_review_v2, subject):
    response = client_for(engineer).post(reverse("review_detail", args=[subject, 2]), {"decision": "reject"})
    body = response.content.decode()
    summary = _between(body, 'data-testid="error-summary"', "</div>")
    assert "Your decision was not saved" in summary and "Say why the version is rejected" in summary
    assert 'href="#decision"' in summary
    assert body.index('data-testid="error-summary"') < body.index('data-testid="schema-diff"')
    assert re.search(r'<textarea name="comment"[^>]*autofocus', body)
    # a plain visit focuses nothing
    assert "autofocus" not in client_for(engineer).get(reverse("review_detail", args=[subject, 2])).content.decode()


def test_contract_page_shows_the_current_approved_schema(platform_user, chat_v2, subject):
    services.contract_version_submit(
        actor=platform_user, contract=chat_v2.contract, schema=with_optional_field(schema_of(chat_v2), "inReview"),
        mapping_spec=chat_v2.mapping, samples=chat_v2.sample_payloads)
    response = client_for(platform_user).get(reverse("contract_detail", args=[subject]))
    body = response.content.decode()
    fields = _between(body, 'data-testid="current-fields"', "</table>")
    assert "Current schema: " in text_of(response) and ">v2</a>" in body  # the approved one, not v3 in review
    experiment = _between(fields, 'data-testid="field-experiment"', "</tr>")
    assert "optional string" in experiment and "<code>null</code>" in experiment
    assert "A/B test variant the widget rendered" in experiment
    assert "inReview" not in fields
    session = _between(fields, 'data-testid="field-sessionId"', "</tr>")
    assert "none (required)" in session and "personal" not in session
    # the mapping feeds message.text into the canonical `content` (personal): flagged, nested under message.
    text_row = _between(fields, 'data-testid="field-message.text"', "</tr>")
    assert ">personal<" in text_row and "message." in text_row


def test_descriptions_render_code_bold_and_links_but_no_html(platform_user, chat_contract, subject):
    chat_contract.description = ('Every `type` is **listed** in [the docs](https://docs.example/x?a=1&b=2); '
                                 '<script>alert(1)</script> <img src=x onerror=alert(2)> [x](javascript:alert(3))')
    chat_contract.save()
    body = client_for(platform_user).get(reverse("contract_detail", args=[subject])).content.decode()
    assert ('Every <code>type</code> is <strong>listed</strong> in <a href="https://docs.example/x?a=1&amp;b=2"'
            in body)
    assert "<script>alert(1)" not in body and "<img src=x" not in body and 'href="javascript:' not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body and "[x](javascript:alert(3))" in body


def test_contract_list_lists_the_canonical_model_apart_and_home_counts_team_contracts(platform_user, chat_contract):
    services.canonical_contract_ensure()
    client = client_for(platform_user)
    listing = client.get(reverse("contract_list")).content.decode()
    team_rows = _between(listing, 'data-testid="team-contracts"', "</tbody>")
    assert team_rows.count('data-testid="contract-row"') == 1 and "canonical" not in team_rows
    assert 'data-testid="team-contract-count">1<' in team_rows
    assert 'data-testid="canonical-row"' in _between(listing, 'data-testid="canonical-contracts"', "</tbody>")
    home = client.get(reverse("home"))
    assert re.search(r'data-testid="count-contracts">1<', home.content.decode())
    assert "1 team contracts + the canonical model" in text_of(home)
    canonical = client.get(reverse("contract_detail", args=["canonical"]))
    assert canonical.status_code == 200 and "Current schema: v1" in text_of(canonical)
