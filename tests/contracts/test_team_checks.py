"""A team's own Soda checks on a contract version: refused with the reason when they break a rule (pure
parser, Soda's own parser, the API, the form and the CI command line), stored with the version, and shown
to the reviewer next to the schema diff."""

from __future__ import annotations

import io

import orjson
import pytest

from contracts.team_checks import TeamChecksError, version_team_checks
from quality.soda_contracts import team_checks_preview
from quality.soda_run import contract_parse_errors

GOOD_CHECKS = """\
checks:
  - missing:
      column: CONVERSATION_ID
  - invalid:
      attribute: role
      event_type: message.sent
      valid_values: [user, assistant]
  - failed_rows:
      name: Answers stay under 100k output tokens
      expression: ATTRIBUTES:output_tokens::NUMBER > 100000
"""
MESSAGE_MAPPING = {"events": [{"type": "message.sent"}, {"type": "feedback.submitted"}]}


def test_good_checks_parse_into_plain_checks():
    checks = version_team_checks(GOOD_CHECKS, MESSAGE_MAPPING)
    assert [(c.type, c.column, c.attribute, c.event_type) for c in checks] == [
        ("missing", "CONVERSATION_ID", None, None), ("invalid", None, "role", "message.sent"),
        ("failed_rows", None, None, None)]
    assert checks[1].valid_values == ("user", "assistant")
    assert checks[2].name == "Answers stay under 100k output tokens"
    assert version_team_checks("", MESSAGE_MAPPING) == [] and version_team_checks("  \n", None) == []


@pytest.mark.parametrize(("text", "path", "reason"), [
    ("checks:\n  - schema:\n", "checks[0]", "check type 'schema' is not allowed"),
    ("checks:\n  - failed_rows:\n      query: SELECT * FROM RAW.LANDING_EVENTS\n",
     "checks[0].failed_rows.query", "is not allowed in a failed_rows team check"),
    ("checks:\n  - missing:\n      column: NOT_A_COLUMN\n", "checks[0].missing.column",
     "'NOT_A_COLUMN' is not a column of CANONICAL.EVENTS"),
    ("checks:\n  - missing:\n      attribute: score\n      event_type: message.sent\n", "checks[0].missing.attribute",
     "'score' is not an attribute of the event types this version produces"),
    ("checks:\n  - missing:\n      attribute: role\n      event_type: tool_call.started\n",
     "checks[0].missing.event_type", "'tool_call.started' is not an event type this version produces"),
    ("checks:\n  - failed_rows:\n      expression: EVENT_ID IN (SELECT EVENT_ID FROM ANALYTICS.USER_FEEDBACK)\n",
     "checks[0].failed_rows.expression", "must be one condition"),
    ("checks:\n  - failed_rows:\n      expression: \"1 = 1; DELETE FROM CANONICAL.EVENTS\"\n",
     "checks[0].failed_rows.expression", "may not contain ';'"),
    ("checks:\n  - failed_rows:\n      expression: SYSTEM$CANCEL_ALL_QUERIES('x') = 1\n",
     "checks[0].failed_rows.expression", "calls SYSTEM$CANCEL_ALL_QUERIES"),
    ("checks:\n  - failed_rows:\n      expression: COUNT(*) > 10\n", "checks[0].failed_rows.expression",
     "aggregate"),
    ("checks:\n  - failed_rows:\n      expression: f.EVENT_ID = 'x'\n", "checks[0].failed_rows.expression",
     "without a table"),
    ("checks:\n  - failed_rows:\n      expression: ATTRIBUTES:nope::NUMBER > 1\n",
     "checks[0].failed_rows.expression", "ATTRIBUTES:nope is not an attribute"),
    ("checks:\n  - invalid:\n      column: PLATFORM\n", "checks[0].invalid", "needs valid_values, valid_min or"),
    ("checks:\n  - invalid:\n      column: DUPLICATE_COUNT\n      valid_min: 5\n      valid_max: 1\n",
     "checks[0].invalid.valid_min", "5 is above valid_max 1"),
    ("checks:\n  - missing:\n      column: SESSION_ID\n      threshold: {must_be: many}\n",
     "checks[0].missing.threshold.must_be", "must be a number"),
    ("checks:\n  - missing: {column: SESSION_ID\n", "", "not valid YAML"),
    ("a: &x [1, 2]\nchecks: *x\n", "", "anchors and aliases"),
    ("dataset: other/DB/S/T\nchecks: []\n", "", "Only a 'checks' list is allowed at the top, not dataset"),
    ("checks:\n" + "  - missing: {column: SESSION_ID}\n" * 26, "checks", "26 checks; at most 25"),
    ("checks:\n  - missing: {column: SESSION_ID}\n" + "# padding\n" * 2000, "", "the limit is 16,384 bytes"),
])
def test_a_bad_check_is_refused_with_its_reason(text, path, reason):
    with pytest.raises(TeamChecksError) as caught:
        version_team_checks(text, MESSAGE_MAPPING)
    assert caught.value.path == path
    assert reason in caught.value.message


def test_soda_own_parser_reads_the_generated_checks():
    good = team_checks_preview(version_team_checks(GOOD_CHECKS, MESSAGE_MAPPING))
    assert contract_parse_errors(good.yaml) == []
    # the gate is Soda's real parser: what it refuses comes back as its own words
    broken = good.yaml.replace("- failed_rows:\n", "- failed_rowz:\n", 1)
    assert any("Invalid check type 'failed_rowz'" in p for p in contract_parse_errors(broken))


def test_one_comparison_per_threshold():
    # Soda would build no threshold from two comparisons and never evaluate the check: refused up front
    with pytest.raises(TeamChecksError) as caught:
        version_team_checks("checks:\n  - missing:\n      column: SESSION_ID\n"
                            "      threshold: {must_be: 0, must_be_less_than: 3}\n", None)
    assert caught.value.path == "checks[0].missing.threshold"
    assert "exactly one comparison" in caught.value.message and "must_be and must_be_less_than" in caught.value.message


# --- the service, API, form and review page ----------------------------------------------------------

def _proposal(chat_v1, team_checks: str | None) -> dict:
    body = {"schema": orjson.loads(chat_v1.schema.schema), "mapping": chat_v1.mapping,
            "samples": chat_v1.sample_payloads, "submit": True, "change_summary": "Add our checks"}
    if team_checks is not None:
        body["team_checks"] = team_checks
    return body


@pytest.mark.django_db
def test_the_api_refuses_a_bad_check_naming_it_and_saves_nothing(api_client_for, platform_user, chat_v1):
    bad = "checks:\n  - missing:\n      column: CONVERSATION_ID\n  - failed_rows:\n      expression: RANDOM() > 0.5\n"
    response = api_client_for(platform_user).post(
        f"/api/v1/contracts/{chat_v1.contract.subject}/versions/", _proposal(chat_v1, bad), format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_team_checks"
    assert "checks[1].failed_rows.expression" in body["message"] and "RAND" in body["message"]
    assert chat_v1.contract.versions.count() == 1


@pytest.mark.django_db
def test_good_checks_make_a_new_version_shown_in_the_review_diff(api_client_for, platform_user, chat_v1, client,
                                                                  second_engineer):
    api = api_client_for(platform_user)
    url = f"/api/v1/contracts/{chat_v1.contract.subject}/versions/"
    response = api.post(url, _proposal(chat_v1, GOOD_CHECKS), format="json")
    # same schema and mapping as v1, but checks added: a new version for review, checks stored as written
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["version"] == 2 and body["status"] == "in_review" and body["team_checks"] == GOOD_CHECKS.strip()
    assert api.post(url, _proposal(chat_v1, GOOD_CHECKS), format="json").status_code == 200  # the same again
    client.force_login(second_engineer)
    page = client.get(f"/review/{chat_v1.contract.subject}/2/")
    assert page.status_code == 200
    html = page.content.decode()
    diff = html[html.index('data-testid="team-checks-diff"'):]
    diff = diff[:diff.index("</table>")]
    assert "column: CONVERSATION_ID" in diff and "diff-insert" in diff
    assert html.index("team-checks-diff") < html.index("verdict-summary")  # next to the schema diff, before the verdict


@pytest.mark.django_db
def test_checks_are_immutable_a_change_is_a_new_version(api_client_for, platform_user, chat_v1):
    api = api_client_for(platform_user)
    url = f"/api/v1/contracts/{chat_v1.contract.subject}/versions/"
    assert api.post(url, _proposal(chat_v1, GOOD_CHECKS), format="json").json()["version"] == 2
    changed = GOOD_CHECKS.replace("100000", "50000")
    third = api.post(url, _proposal(chat_v1, changed), format="json").json()
    assert third["version"] == 3 and "50000" in third["team_checks"]
    assert "100000" in chat_v1.contract.versions.get(version=2).team_checks  # v2 keeps what was reviewed


@pytest.mark.django_db
def test_the_version_page_shows_its_checks(api_client_for, platform_user, chat_v1, client):
    api_client_for(platform_user).post(f"/api/v1/contracts/{chat_v1.contract.subject}/versions/",
                                       _proposal(chat_v1, GOOD_CHECKS), format="json")
    client.force_login(platform_user)
    html = client.get(f"/contracts/{chat_v1.contract.subject}/versions/2/").content.decode()
    section = html[html.index('data-testid="team-checks"'):]
    assert "column: CONVERSATION_ID" in section[:section.index("</section>")]
    v1_html = client.get(f"/contracts/{chat_v1.contract.subject}/versions/1/").content.decode()
    v1_section = v1_html[v1_html.index('data-testid="team-checks"'):]
    assert "None." in v1_section[:v1_section.index("</section>")]


@pytest.mark.django_db
def test_the_form_shows_the_reason_next_to_the_checks_and_keeps_the_input(client, platform_user, chat_v1):
    client.force_login(platform_user)
    bad = "checks:\n  - missing:\n      column: NOT_THERE\n"
    page = client.post(f"/contracts/{chat_v1.contract.subject}/versions/new/", {
        "schema": chat_v1.schema.schema, "mapping": orjson.dumps(chat_v1.mapping).decode(), "samples": "[]",
        "team_checks": bad, "action": "submit"})
    assert page.status_code == 200
    html = page.content.decode()
    assert "&#x27;NOT_THERE&#x27; is not a column of CANONICAL.EVENTS" in html
    assert "column: NOT_THERE" in html  # what the author typed is still there to fix
    assert chat_v1.contract.versions.count() == 1


@pytest.mark.django_db
def test_the_live_check_panel_names_a_bad_check(client, platform_user, chat_v1):
    client.force_login(platform_user)
    page = client.post(f"/contracts/{chat_v1.contract.subject}/check/", {
        "schema": chat_v1.schema.schema, "mapping": orjson.dumps(chat_v1.mapping).decode(), "samples": "[]",
        "team_checks": "checks:\n  - duplicate:\n      column: EVENT_ID\n"})
    assert "check type &#x27;duplicate&#x27; is not allowed" in page.content.decode()


@pytest.mark.django_db
def test_the_ci_check_reports_refused_team_checks(api_client_for, platform_user, chat_v1, settings):
    response = api_client_for(platform_user).post(
        f"/api/v1/contracts/{chat_v1.contract.subject}/check",
        {"schema": orjson.loads(chat_v1.schema.schema), "mapping": chat_v1.mapping,
         "team_checks": "checks:\n  - invalid:\n      column: PLATFORM\n"}, format="json")
    assert response.status_code == 200
    (error,) = response.json()["team_checks_errors"]
    assert error["path"] == "checks[0].invalid" and "needs valid_values" in error["message"]


def test_the_cli_exits_1_and_prints_each_refused_check():
    from contracts.cli import exit_code_for, report_print

    result = {"compatible": True, "mode": "BACKWARD", "changes": [], "schema_errors": [], "mapping_errors": [],
              "team_checks_errors": [{"path": "checks[0].invalid", "message": "an invalid check needs valid_values"}]}
    out = io.StringIO()
    report_print(result, subject="web-chat.chat_event", schema_file="s.avsc", github=True, out=out)
    lines = out.getvalue().splitlines()
    assert exit_code_for(result) == 1
    assert lines[0] == "FAIL: web-chat.chat_event: schema compatible under BACKWARD, 1 team check error"
    assert "  team check checks[0].invalid: an invalid check needs valid_values" in lines
    assert any(line.startswith("::error title=Team check error at checks[0].invalid::") for line in lines)


@pytest.mark.django_db(transaction=True)
def test_the_ci_command_line_checks_a_team_checks_file(live_server, platform_user, chat_v1, tmp_path):
    from contracts.cli import main
    from portal.services import api_token_create

    token = api_token_create(user=platform_user)[1]
    schema = tmp_path / "schema.avsc"
    schema.write_text(chat_v1.schema.schema)

    def check(team_checks: str) -> tuple[int, str]:
        path = tmp_path / "checks.yml"
        path.write_text(team_checks)
        out = io.StringIO()
        code = main(["check", str(schema), "--subject", chat_v1.contract.subject, "--url", live_server.url,
                     "--token", token, "--checks", str(path)], out=out, err_out=io.StringIO())
        return code, out.getvalue()

    code, out = check("checks:\n  - invalid:\n      column: PLATFORM\n")
    assert code == 1
    assert "  team check checks[0].invalid: an invalid check needs valid_values, valid_min or valid_max." in out
    code, out = check(GOOD_CHECKS)
    assert code == 0 and out.startswith("OK: web-chat.chat_event")
