"""The CI command line: exit codes 0 / 1 / 2 and GitHub annotations, against a running portal."""

from __future__ import annotations

import copy
import io
import json
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
    assert "compatible under BACKWARD_TRANSITIVE" in out


def test_breaking_schema_exits_1_with_github_annotations(live_server, token, chat_v1, write_schema):
    path = write_schema({"name": "seats", "type": "int"})
    code, out, _ = run("check", path, "--subject", chat_v1.contract.subject, "--url", live_server.url,
                       "--token", token, "--github")
    assert code == 1
    assert "NOT compatible" in out
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
