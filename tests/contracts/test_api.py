"""The REST API as CI jobs and tools use it: every endpoint, every role, JSON errors that name the problem."""

from __future__ import annotations

import copy

import orjson
import pytest
from rest_framework.test import APIClient

from contracts.models import Contract, ContractVersion, Source, VersionStatus
from portal.models import AuditRecord

pytestmark = pytest.mark.django_db


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


# --- authentication --------------------------------------------------------------------------------

def test_requests_without_a_token_get_401_json():
    response = APIClient().get("/api/v1/sources/")
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"


def test_a_wrong_token_is_refused_and_named():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token co_deadbeef_not-a-real-secret")
    response = client.get("/api/v1/sources/")
    assert response.status_code == 401
    assert "API token" in response.json()["message"]


def test_a_token_acts_with_its_users_permissions(api_client_for, platform_user, chat_contract):
    response = api_client_for(platform_user).get("/api/v1/review-queue/")
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


def test_create_api_token_command_prints_only_a_working_token(platform_user, capsys):
    from django.core.management import call_command

    call_command("create_api_token", "platform")
    token = capsys.readouterr().out.strip()
    assert token.startswith("co_") and "\n" not in token
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/sources/").status_code == 200


# --- sources ---------------------------------------------------------------------------------------

def test_team_member_registers_a_source_and_gets_its_write_key_once(api_client_for, platform_user, team):
    client = api_client_for(platform_user)
    response = client.post("/api/v1/sources/", {"team": "chat-platform", "name": "desktop-app",
                                                "platform": "web", "kind": "sdk"}, format="json")
    assert response.status_code == 201, response.json()
    key = response.json()["write_key"]
    assert key.startswith("wk_")
    source = Source.objects.get(name="desktop-app")
    assert key not in source.write_key_hash and source.write_key_hash
    assert "write_key" not in client.get("/api/v1/sources/desktop-app/").json()
    assert AuditRecord.objects.filter(action="source.create", object_repr="desktop-app",
                                      actor_username="platform").exists()


@pytest.mark.parametrize("user_fixture", ["other_platform_user", "engineer", "privacy_user"])
def test_only_the_teams_members_create_its_sources(request, api_client_for, team, user_fixture):
    client = api_client_for(request.getfixturevalue(user_fixture))
    response = client.post("/api/v1/sources/", {"team": "chat-platform", "name": "sneaky",
                                                "platform": "web", "kind": "sdk"}, format="json")
    assert response.status_code == 403
    assert not Source.objects.filter(name="sneaky").exists()


def test_admin_creates_sources_for_any_team(api_client_for, admin_user, team):
    response = api_client_for(admin_user).post(
        "/api/v1/sources/", {"team": "chat-platform", "name": "kiosk", "platform": "web", "kind": "sdk"},
        format="json")
    assert response.status_code == 201


def test_bad_source_input_names_the_field(api_client_for, platform_user, team):
    client = api_client_for(platform_user)
    response = client.post("/api/v1/sources/", {"team": "chat-platform", "name": "x1", "platform": "fax",
                                                "kind": "sdk"}, format="json")
    assert response.status_code == 400
    assert "platform" in response.json()["message"]
    response = client.post("/api/v1/sources/", {"team": "chat-platform", "name": "Bad Name!", "platform": "web",
                                                "kind": "sdk"}, format="json")
    assert response.status_code == 400 and response.json()["error"] == "invalid_name"
    response = client.post("/api/v1/sources/", {"team": "nobody", "name": "ok-name", "platform": "web",
                                                "kind": "sdk"}, format="json")
    assert response.status_code == 404 and "nobody" in response.json()["message"]


def test_duplicate_source_is_a_conflict(api_client_for, platform_user, web_chat_source):
    response = api_client_for(platform_user).post(
        "/api/v1/sources/", {"team": "chat-platform", "name": "web-chat", "platform": "web", "kind": "sdk"},
        format="json")
    assert response.status_code == 409


def test_rotating_a_write_key_replaces_it(api_client_for, platform_user, other_platform_user, web_chat_source):
    from contracts.services import source_write_key_matches

    first = api_client_for(platform_user).post("/api/v1/sources/web-chat/rotate-key").json()["write_key"]
    second = api_client_for(platform_user).post("/api/v1/sources/web-chat/rotate-key").json()["write_key"]
    web_chat_source.refresh_from_db()
    assert first != second
    assert source_write_key_matches(web_chat_source, second)
    assert not source_write_key_matches(web_chat_source, first)
    assert api_client_for(other_platform_user).post("/api/v1/sources/web-chat/rotate-key").status_code == 403
    assert AuditRecord.objects.filter(action="source.rotate_write_key").count() == 2


def test_a_webhook_source_is_created_without_a_write_key_and_has_none_to_rotate(api_client_for, platform_user,
                                                                                 team):
    client = api_client_for(platform_user)
    response = client.post("/api/v1/sources/", {"team": "chat-platform", "name": "slack-bot", "platform": "slack",
                                                "kind": "webhook"}, format="json")
    assert response.status_code == 201 and response.json()["write_key"] is None
    response = client.post("/api/v1/sources/slack-bot/rotate-key")
    assert response.status_code == 400 and response.json()["error"] == "no_write_key_for_webhooks"


def test_disable_and_signing_secret(api_client_for, platform_user, web_chat_source):
    client = api_client_for(platform_user)
    response = client.patch("/api/v1/sources/web-chat/", {"is_active": False}, format="json")
    assert response.status_code == 200 and response.json()["is_active"] is False
    assert AuditRecord.objects.filter(action="source.disable").exists()
    secret = "8f742231b10e8888abcd99yyyzzz85a5"  # shaped like Slack's (32 characters)
    response = client.post("/api/v1/sources/web-chat/signing-secret", {"signing_secret": secret}, format="json")
    assert response.json()["has_signing_secret"] is True
    assert secret not in response.content.decode()


def test_unknown_source_is_404_json(api_client_for, engineer):
    response = api_client_for(engineer).get("/api/v1/sources/no-such-source/")
    assert response.status_code == 404
    assert response.json() == {"error": "source_not_found", "message": "Source 'no-such-source' not found."}


# --- contracts and versions ------------------------------------------------------------------------

def test_contract_list_filters(api_client_for, engineer, chat_contract):
    client = api_client_for(engineer)
    subjects = [c["subject"] for c in client.get("/api/v1/contracts/?team=chat-platform").json()]
    assert subjects == [chat_contract.subject]
    assert client.get("/api/v1/contracts/?platform=slack").json() == []
    approved = client.get("/api/v1/contracts/?status=approved").json()
    assert chat_contract.subject in [c["subject"] for c in approved]


def test_create_contract_names_the_subject_after_source_and_event(api_client_for, platform_user, web_chat_source):
    response = api_client_for(platform_user).post(
        "/api/v1/contracts/", {"source": "web-chat", "event": "page_view", "compatibility": "FULL"}, format="json")
    assert response.status_code == 201
    assert response.json()["subject"] == "web-chat.page_view"
    assert response.json()["compatibility"] == "FULL"


def test_unknown_compatibility_level_is_named(api_client_for, platform_user, chat_contract):
    response = api_client_for(platform_user).patch(
        f"/api/v1/contracts/{chat_contract.subject}/", {"compatibility": "SIDEWAYS"}, format="json")
    assert response.status_code == 400
    assert "SIDEWAYS" in response.json()["message"] and "BACKWARD" in response.json()["message"]


def test_new_version_goes_into_review_and_identical_resubmission_returns_it(
        api_client_for, platform_user, chat_v1):
    client = api_client_for(platform_user)
    body = {"schema": with_optional_field(schema_of(chat_v1)), "mapping": chat_v1.mapping,
            "samples": chat_v1.sample_payloads}
    url = f"/api/v1/contracts/{chat_v1.contract.subject}/versions/"
    created = client.post(url, body, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["version"] == 2 and created.json()["status"] == "in_review"
    again = client.post(url, body, format="json")
    assert again.status_code == 200 and again.json()["version"] == 2
    assert ContractVersion.objects.filter(contract=chat_v1.contract).count() == 2


def test_breaking_version_is_refused_with_the_report_and_nothing_saved(api_client_for, platform_user, chat_v1):
    response = api_client_for(platform_user).post(
        f"/api/v1/contracts/{chat_v1.contract.subject}/versions/",
        {"schema": with_required_field(schema_of(chat_v1)), "mapping": chat_v1.mapping}, format="json")
    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "incompatible"
    errors = [c for c in body["details"]["changes"] if c["severity"] == "error"]
    assert errors and errors[0]["path"] == "/fields/tenant_tier"
    assert ContractVersion.objects.filter(contract=chat_v1.contract).count() == 1


def test_a_draft_may_break_compatibility_but_cannot_be_submitted(api_client_for, platform_user, chat_v1):
    client = api_client_for(platform_user)
    subject = chat_v1.contract.subject
    draft = client.post(f"/api/v1/contracts/{subject}/versions/",
                        {"schema": with_required_field(schema_of(chat_v1)), "mapping": chat_v1.mapping,
                         "submit": False}, format="json")
    assert draft.status_code == 201 and draft.json()["status"] == "draft"
    assert draft.json()["compatibility_report"]["compatible"] is False
    submit = client.post(f"/api/v1/contracts/{subject}/versions/2/submit")
    assert submit.status_code == 409
    assert ContractVersion.objects.get(contract=chat_v1.contract, version=2).status == VersionStatus.DRAFT


def test_mapping_to_unknown_canonical_fields_is_refused(api_client_for, platform_user, chat_v1):
    mapping = copy.deepcopy(chat_v1.mapping)
    response = api_client_for(platform_user).post(
        f"/api/v1/contracts/{chat_v1.contract.subject}/check",
        {"schema": schema_of(chat_v1), "mapping": mapping_with_unknown_target(mapping)}, format="json")
    assert response.status_code == 200
    assert any("no_such_canonical_field" in e["path"] + e["message"] for e in response.json()["mapping_errors"])
    saved = api_client_for(platform_user).post(
        f"/api/v1/contracts/{chat_v1.contract.subject}/versions/",
        {"schema": with_optional_field(schema_of(chat_v1)), "mapping": mapping_with_unknown_target(mapping)},
        format="json")
    assert saved.status_code == 400 and saved.json()["error"] == "invalid_mapping"
    assert ContractVersion.objects.filter(contract=chat_v1.contract).count() == 1


def mapping_with_unknown_target(mapping: dict) -> dict:
    """Add a target that is not in the canonical model to the mapping's first event."""
    new = copy.deepcopy(mapping)
    events = new["events"]
    first = events[0] if isinstance(events, list) else next(iter(events.values()))
    first["fields"]["no_such_canonical_field"] = {"const": "x"}
    return new


def test_other_team_cannot_add_versions(api_client_for, other_platform_user, chat_v1):
    response = api_client_for(other_platform_user).post(
        f"/api/v1/contracts/{chat_v1.contract.subject}/versions/",
        {"schema": with_optional_field(schema_of(chat_v1)), "mapping": chat_v1.mapping}, format="json")
    assert response.status_code == 403
    assert ContractVersion.objects.filter(contract=chat_v1.contract).count() == 1


def test_review_actions_by_role(api_client_for, platform_user, engineer, chat_v1):
    subject = chat_v1.contract.subject
    author = api_client_for(platform_user)
    author.post(f"/api/v1/contracts/{subject}/versions/",
                {"schema": with_optional_field(schema_of(chat_v1)), "mapping": chat_v1.mapping}, format="json")
    assert author.post(f"/api/v1/contracts/{subject}/versions/2/approve").status_code == 403
    queue = api_client_for(engineer).get("/api/v1/review-queue/").json()
    assert [(v["subject"], v["version"]) for v in queue] == [(subject, 2)]
    approved = api_client_for(engineer).post(f"/api/v1/contracts/{subject}/versions/2/approve",
                                             {"comment": "looks good"}, format="json")
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    assert approved.json()["reviewer"] == "engineer"
    assert api_client_for(engineer).get("/api/v1/review-queue/").json() == []
    deprecated = api_client_for(engineer).post(f"/api/v1/contracts/{subject}/versions/1/deprecate")
    assert deprecated.json()["status"] == "deprecated"


def test_reject_needs_a_comment_and_the_author_sees_it(api_client_for, platform_user, engineer, chat_v1):
    subject = chat_v1.contract.subject
    api_client_for(platform_user).post(
        f"/api/v1/contracts/{subject}/versions/",
        {"schema": with_optional_field(schema_of(chat_v1)), "mapping": chat_v1.mapping}, format="json")
    reviewer = api_client_for(engineer)
    no_comment = reviewer.post(f"/api/v1/contracts/{subject}/versions/2/reject")
    assert no_comment.status_code == 400 and no_comment.json()["error"] == "comment_required"
    reviewer.post(f"/api/v1/contracts/{subject}/versions/2/reject", {"comment": "name it experiment_key"},
                  format="json")
    seen = api_client_for(platform_user).get(f"/api/v1/contracts/{subject}/versions/2/").json()
    assert seen["status"] == "rejected" and seen["review_comment"] == "name it experiment_key"


def test_an_author_never_approves_their_own_change(api_client_for, admin_user, chat_v1):
    subject = chat_v1.contract.subject
    admin = api_client_for(admin_user)
    admin.post(f"/api/v1/contracts/{subject}/versions/",
               {"schema": with_optional_field(schema_of(chat_v1)), "mapping": chat_v1.mapping}, format="json")
    response = admin.post(f"/api/v1/contracts/{subject}/versions/2/approve")
    assert response.status_code == 403 and response.json()["error"] == "own_change"


def test_version_lookup_errors(api_client_for, engineer, chat_v1):
    client = api_client_for(engineer)
    subject = chat_v1.contract.subject
    assert client.get(f"/api/v1/contracts/{subject}/versions/latest/").json()["version"] == 1
    assert client.get(f"/api/v1/contracts/{subject}/versions/9/").status_code == 404
    assert client.get(f"/api/v1/contracts/{subject}/versions/abc/").status_code == 400


# --- the CI check ----------------------------------------------------------------------------------

def test_check_reports_compatible_and_breaking_changes_by_path(api_client_for, platform_user, chat_v1):
    client = api_client_for(platform_user)
    url = f"/api/v1/contracts/{chat_v1.contract.subject}/check"
    ok = client.post(url, {"schema": with_optional_field(schema_of(chat_v1))}, format="json").json()
    assert ok["compatible"] is True and ok["mode"] == "BACKWARD_TRANSITIVE" and ok["mapping_errors"] == []
    assert any(c["severity"] == "info" and c["path"] == "/fields/experiment_id" for c in ok["changes"])
    bad = client.post(url, {"schema": orjson.dumps(with_required_field(schema_of(chat_v1))).decode()},
                      format="json").json()
    assert bad["compatible"] is False
    assert {"path", "rule", "severity", "message"} <= set(bad["changes"][0])
    assert ContractVersion.objects.filter(contract=chat_v1.contract).count() == 1


def test_check_bad_input(api_client_for, platform_user, chat_v1, settings):
    client = api_client_for(platform_user)
    url = f"/api/v1/contracts/{chat_v1.contract.subject}/check"
    unknown = client.post("/api/v1/contracts/nope.nothing/check", {"schema": {}}, format="json")
    assert unknown.status_code == 404 and "nope.nothing" in unknown.json()["message"]
    not_json = client.post(url, {"schema": "{not json"}, format="json")
    assert not_json.status_code == 400 and "JSON" in not_json.json()["message"]
    not_avro = client.post(url, {"schema": {"type": "record", "name": "X", "fields": [{"name": "a",
                                                                                      "type": "strnig"}]}},
                           format="json")
    assert not_avro.status_code == 400 and not_avro.json()["error"] == "invalid_schema"
    assert "strnig" in not_avro.json()["message"]
    raw_body = client.post(url, data="this is not json", content_type="application/json")
    assert raw_body.status_code == 400
    settings.CONTRACT_SCHEMA_MAX_BYTES = 1000
    huge = with_optional_field(schema_of(chat_v1))
    huge["doc"] = "x" * 2000
    too_big = client.post(url, {"schema": huge}, format="json")
    assert too_big.status_code == 413 and "limit" in too_big.json()["message"]


# --- canonical model, audit, docs ------------------------------------------------------------------

def test_canonical_model_is_served(api_client_for, privacy_user):
    body = api_client_for(privacy_user).get("/api/v1/canonical/").json()
    assert {"user.identified", "session.started", "session.ended", "conversation.started", "conversation.ended",
            "message.sent", "tool_call.started", "tool_call.completed", "feedback.submitted"} <= set(
        body["event_types"])
    assert "event_id" in [f["name"] for f in body["envelope"]]


def test_canonical_contract_is_registered(db):
    from contracts.services import canonical_contract_ensure

    version = canonical_contract_ensure()
    assert version.status == VersionStatus.APPROVED
    assert canonical_contract_ensure().pk == version.pk
    assert Contract.objects.get(subject="canonical").compatibility == "FULL_TRANSITIVE"


def test_audit_log_is_for_admins(api_client_for, admin_user, engineer, web_chat_source):
    assert api_client_for(engineer).get("/api/v1/audit/").status_code == 403
    records = api_client_for(admin_user).get("/api/v1/audit/").json()
    create = next(r for r in records if r["action"] == "source.create")
    assert create["actor"] == "platform" and create["after"]["name"] == "web-chat" and create["before"] is None


def test_openapi_document_and_docs_are_served_without_a_cdn(api_client_for, engineer, client):
    api = api_client_for(engineer)
    document = api.get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()
    assert document["openapi"].startswith("3.")
    assert "/api/v1/contracts/{subject}/check" in document["paths"]
    client.force_login(engineer)
    page = client.get("/api/v1/docs/").content.decode()
    assert "swagger" in page.lower() and "cdn" not in page.lower()


def test_the_api_docs_cover_the_registry_subset(api_client_for, engineer):
    document = api_client_for(engineer).get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()
    register = document["paths"]["/registry/subjects/{subject}/versions"]["post"]
    assert "in review" in register["summary"]
    latest = document["paths"]["/registry/subjects/{subject}/versions/{version}"]["get"]
    assert "approved" in {parameter["name"] for parameter in latest["parameters"]}
    assert document["components"]["securitySchemes"]["registryBasic"]["scheme"] == "basic"


def test_the_api_docs_cover_the_collectors_with_their_auth_and_every_answer(api_client_for, engineer):
    # walkthrough F14: the collectors were only in docs/ingestion.md
    document = api_client_for(engineer).get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()
    batch = document["paths"]["/collect/v1/batch"]["post"]
    assert batch["security"] == [{"writeKey": []}]
    assert set(batch["responses"]) == {"202", "400", "401", "403", "413", "415", "429", "503"}
    assert "Retry-After" in batch["responses"]["503"]["headers"]
    for path, scheme in (("/collect/v1/webhooks/slack/{source}", "slackSignature"),
                         ("/collect/v1/webhooks/voice/{source}", "voiceSignature")):
        webhook = document["paths"][path]["post"]
        assert webhook["security"] == [{scheme: []}] and scheme in document["components"]["securitySchemes"]
        assert {"401", "403", "404", "503"} <= set(webhook["responses"])


def test_every_api_operation_documents_its_refusals_with_the_error_body(api_client_for, engineer):
    # hostile report D9 (ST103): only 200/201 were documented
    document = api_client_for(engineer).get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()
    for path, item in document["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        for method, operation in item.items():
            assert {"401", "403"} <= set(operation["responses"]), (method, path)
            assert operation["responses"]["403"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"}
    assert document["components"]["schemas"]["Error"]["required"] == ["error", "message"]
    check = document["paths"]["/api/v1/contracts/{subject}/check"]["post"]["responses"]
    assert {"400", "404", "413", "415"} <= set(check)
    version = document["paths"]["/api/v1/contracts/{subject}/versions/{version}/"]["get"]["parameters"]
    assert next(p for p in version if p["name"] == "version")["schema"]["pattern"] == r"^(latest|[0-9]{1,9})$"
    patch = document["components"]["schemas"]["CompatibilityIn"]
    assert patch["required"] == ["compatibility"]


def test_the_api_docs_link_back_to_the_portal_and_run_no_inline_script(client, engineer):
    client.force_login(engineer)
    page = client.get("/api/v1/docs/").content.decode()
    assert "<script>" not in page  # the start-up code is a file (CSP script-src 'self')
    document = client.get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()
    assert "[← Back to the portal](/)" in document["info"]["description"]


def test_deeply_nested_bodies_are_400_not_500(api_client_for, platform_user, chat_v1):
    client = api_client_for(platform_user)
    response = client.post(f"/api/v1/contracts/{chat_v1.contract.subject}/check", data="[" * 5000 + "]" * 5000,
                           content_type="application/json")
    assert response.status_code == 400 and "nested too deeply" in response.json()["message"]
    deep_schema = '"string"'
    for level in range(300):  # ~900 JSON levels: parses, but is far deeper than any real schema
        deep_schema = f'{{"type": "record", "name": "R{level}", "fields": [{{"name": "f", "type": {deep_schema}}}]}}'
    response = client.post(f"/api/v1/contracts/{chat_v1.contract.subject}/check", data=f'{{"schema": {deep_schema}}}',
                           content_type="application/json")
    assert response.status_code == 400 and response.json()["error"] in {"invalid_schema", "too_deep"}


def test_schemas_with_huge_integer_properties_are_accepted(api_client_for, platform_user, chat_v1):
    schema = with_optional_field(schema_of(chat_v1))
    schema["x-owner-id"] = 10**30
    response = api_client_for(platform_user).post(
        f"/api/v1/contracts/{chat_v1.contract.subject}/versions/", {"schema": schema, "mapping": chat_v1.mapping},
        format="json")
    assert response.status_code == 201, response.json()


def test_non_ascii_digits_are_not_version_numbers(api_client_for, engineer, chat_v1):
    client = api_client_for(engineer)
    assert client.get(f"/api/v1/contracts/{chat_v1.contract.subject}/versions/\u00b2/").status_code == 400
    assert client.get(f"/api/v1/contracts/{chat_v1.contract.subject}/versions/\u0661/").status_code == 400
    assert client.get("/api/v1/sources/\u00b2/").status_code == 404


def test_source_names_need_a_letter(api_client_for, platform_user, team):
    response = api_client_for(platform_user).post(
        "/api/v1/sources/", {"team": "chat-platform", "name": "10", "platform": "web", "kind": "sdk"}, format="json")
    assert response.status_code == 400 and response.json()["error"] == "invalid_name"
