"""The CI command line: exit codes 0 / 1 / 2 and GitHub annotations, against a running portal."""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from contracts.cli import main
from portal.services import api_token_create

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def token(platform_user):
    return api_token_create(user=platform_user)[1]


@pytest.fixture
def write_schema(tmp_path, chat_v1):
    def write(extra_field: dict | None = None, name: str = "schema.avsc") -> str:
        schema = orjson.loads(chat_v1.schema.schema)
        if extra_field:
            schema = copy.deepcopy(schema)
            schema["fields"].append(extra_field)
        path = tmp_path / name
        path.write_text(json.dumps(schema))
        return str(path)

    return write


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), out=out, err_out=err)
    return code, out.getvalue(), err.getvalue()


def test_compatible_schema_exits_0(live_server, token, chat_v1, write_schema):
    path = write_schema({"name": "locale", "type": ["null", "string"], "default": None})
    code, out, _ = run("check", path, "--subject", chat_v1.contract.subject, "--url", live_server.url,
                       "--token", token)
    assert code == 0
    assert out.splitlines()[0] == "OK: web-chat.chat_event: schema compatible under BACKWARD_TRANSITIVE"


@pytest.fixture
def chat_v2(chat_v1, web_chat_preset, web_chat_source, platform_user, engineer):
    """v2 of the preset approved on top of v1: it added the optional field `experiment`."""
    from contracts.services import preset_versions_load

    spec = dict(web_chat_preset["contracts"][0])
    spec["versions"] = spec["versions"][:2]
    preset_versions_load(actor=platform_user, reviewer=engineer, source=web_chat_source, contracts=[spec])
    return chat_v1.contract.versions.get(version=2)


def test_github_notices_only_for_what_is_new_against_the_latest_version(live_server, token, chat_v2, tmp_path):
    schema = orjson.loads(chat_v2.schema.schema)
    schema["fields"].append({"name": "ciNote", "type": ["null", "string"], "default": None})
    path = tmp_path / "schema.avsc"
    path.write_text(json.dumps(schema))
    code, out, _ = run("check", str(path), "--subject", chat_v2.contract.subject, "--url", live_server.url,
                       "--token", token, "--github")
    assert code == 0
    notices = [line for line in out.splitlines() if line.startswith("::notice")]
    assert len(notices) == 1 and "/fields/ciNote" in notices[0], out
    # v2's own change is still shown, apart, but is not annotated on this PR again
    new_part, _, older_part = out.partition("also checked against older versions")
    assert "new in this proposal (vs v2, the latest version): 1 change" in new_part
    assert "/fields/experiment" in older_part and "(vs v1)" in older_part
    assert "/fields/experiment" not in new_part


def test_breaking_schema_exits_1_with_github_annotations(live_server, token, chat_v1, write_schema):
    path = write_schema({"name": "seats", "type": "int"})
    code, out, _ = run("check", path, "--subject", chat_v1.contract.subject, "--url", live_server.url,
                       "--token", token, "--github")
    assert code == 1
    assert out.startswith("FAIL: web-chat.chat_event: schema NOT compatible under BACKWARD_TRANSITIVE "
                          "(1 breaking change)\n")
    escaped = path.replace(":", "%3A").replace(",", "%2C")
    assert f"::error file={escaped},title=" in out and "/fields/seats" in out


def test_mapping_errors_exit_1(live_server, token, chat_v1, write_schema, tmp_path):
    mapping = copy.deepcopy(chat_v1.mapping)
    mapping["unexpected_top_level_key"] = True
    mapping_file = tmp_path / "mapping.json"
    mapping_file.write_text(json.dumps(mapping))
    code, out, _ = run("check", write_schema(), "--subject", chat_v1.contract.subject, "--url", live_server.url,
                       "--token", token, "--mapping", str(mapping_file))
    assert code == 1
    # the first line a CI reader sees gives the overall result, not just the schema's
    assert out.splitlines()[0] == ("FAIL: web-chat.chat_event: schema compatible under BACKWARD_TRANSITIVE, "
                                   "1 mapping error")
    assert "mapping" in out


@pytest.mark.parametrize("case", ["unknown_subject", "bad_token", "missing_file", "invalid_json", "invalid_avro",
                                  "unreachable"])
def test_errors_exit_2_and_say_why(live_server, token, chat_v1, write_schema, tmp_path, case):
    subject, url, key, path = chat_v1.contract.subject, live_server.url, token, write_schema()
    expected = {"unknown_subject": "not found", "bad_token": "401", "missing_file": "cannot read",
                "invalid_json": "not valid JSON", "invalid_avro": "Invalid Avro", "unreachable": "cannot reach"}[case]
    if case == "unknown_subject":
        subject = "web-chat.nothing_here"
    elif case == "bad_token":
        key = "co_abc_wrong"
    elif case == "missing_file":
        path = str(tmp_path / "missing.avsc")
    elif case == "invalid_json":
        Path(path).write_text("{ not json")
    elif case == "invalid_avro":
        Path(path).write_text(json.dumps({"type": "record", "name": "X", "fields": [{"name": "a"}]}))
    elif case == "unreachable":
        url = "http://127.0.0.1:9"
    code, _, err = run("check", path, "--subject", subject, "--url", url, "--token", key)
    assert code == 2
    assert expected in err


def test_runs_as_a_module(live_server, token, chat_v1, write_schema):
    result = subprocess.run(
        [sys.executable, "-m", "contracts.cli", "check", write_schema(), "--subject", chat_v1.contract.subject,
         "--url", live_server.url, "--token", token, "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["compatible"] is True


def test_ci_downloads_the_cli_from_the_portal_and_runs_it_without_the_repository(
    live_server, token, chat_v1, write_schema, tmp_path, api_client_for, platform_user
):
    response = api_client_for(platform_user).get("/api/v1/cli/contracts_cli.py")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/x-python")
    assert 'filename="contracts_cli.py"' in response["Content-Disposition"]
    ci = tmp_path / "ci"
    ci.mkdir()
    (ci / "contracts_cli.py").write_bytes(b"".join(response.streaming_content) if response.streaming
                                          else response.content)
    # -I: no PYTHONPATH, no current directory on the path: only the file and the interpreter's packages
    isolated = [sys.executable, "-I", "contracts_cli.py"]
    env = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "DJANGO_SETTINGS_MODULE"}}
    helped = subprocess.run([*isolated, "--help"], cwd=ci, env=env, capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0, helped.stderr
    assert "usage: python contracts_cli.py" in helped.stdout
    checked = subprocess.run(
        [*isolated, "check", write_schema(), "--subject", chat_v1.contract.subject, "--url", live_server.url,
         "--token", token], cwd=ci, env=env, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("OK: web-chat.chat_event: schema compatible")


def test_downloading_the_cli_needs_a_token(client):
    assert client.get("/api/v1/cli/contracts_cli.py").status_code in (401, 403)
