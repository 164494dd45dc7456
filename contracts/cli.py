"""Check a proposed contract against the registry from CI, in one line.

    python contracts_cli.py check schema.avsc --subject web-chat.chat_event \\
        --url https://contracts.chatorbit.internal --token "$CHATORBIT_TOKEN" [--mapping mapping.json] \\
        [--checks team_checks.yml] [--github]

Exit codes: 0 compatible, 1 breaking (incompatible schema, mapping errors or refused team checks), 2 could not check
(unreadable file, invalid schema, unknown subject, bad token, server unreachable).
This file is self-contained (standard library and `requests`, nothing else from the portal): teams'
CI downloads it from the portal, `GET /api/v1/cli/contracts_cli.py` (the portal serves this very
file); inside the portal's repository it also runs as `python -m contracts.cli`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import requests

EXIT_COMPATIBLE, EXIT_BREAKING, EXIT_ERROR = 0, 1, 2
SEVERITY_TO_GITHUB = {"error": "error", "warning": "warning", "info": "notice"}


class CheckFailed(Exception):
    """The check could not be carried out (exit 2)."""


def _read_json(path: str, what: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise CheckFailed(f"cannot read {what} file {path}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise CheckFailed(f"{what} file {path} is not UTF-8 text") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise CheckFailed(f"{what} file {path} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") \
            from err


def _read_text(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise CheckFailed(f"cannot read {what} file {path}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise CheckFailed(f"{what} file {path} is not UTF-8 text") from err


def contract_check_request(*, url: str, token: str, subject: str, schema: Any, mapping: Any = None,
                           team_checks: str | None = None, timeout: float = 30.0) -> dict:
    body: dict[str, Any] = {"schema": schema}
    if mapping is not None:
        body["mapping"] = mapping
    if team_checks is not None:
        body["team_checks"] = team_checks
    endpoint = f"{url.rstrip('/')}/api/v1/contracts/{requests.utils.quote(subject, safe='')}/check"
    try:
        response = requests.post(endpoint, json=body, headers={"Authorization": f"Token {token}"}, timeout=timeout)
    except requests.RequestException as err:
        raise CheckFailed(f"cannot reach {url}: {err}") from err
    try:
        payload = response.json()
    except ValueError as err:
        raise CheckFailed(f"{endpoint} answered HTTP {response.status_code} without JSON") from err
    if response.status_code != 200:
        message = payload.get("message") if isinstance(payload, dict) else None
        raise CheckFailed(f"HTTP {response.status_code}: {message or payload}")
    return payload


def exit_code_for(result: dict) -> int:
    if result.get("schema_errors"):
        return EXIT_ERROR
    if not result.get("compatible") or result.get("mapping_errors") or result.get("team_checks_errors"):
        return EXIT_BREAKING
    return EXIT_COMPATIBLE


def _gh_escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_property(text: str) -> str:
    """Escape a workflow-command property value (file=…, title=…), where ':' and ',' are syntax."""
    return _gh_escape(text).replace(":", "%3A").replace(",", "%2C")


def change_groups(result: dict) -> tuple[int | None, list[dict], list[dict]]:
    """(latest version, changes new in this proposal, changes only against older versions).

    The server groups them (``grouped_changes``); an older server that does not is read as "all new"."""
    grouped = result.get("grouped_changes")
    if isinstance(grouped, dict) and isinstance(grouped.get("new"), list):
        return grouped.get("latest_version"), grouped["new"], list(grouped.get("older") or [])
    return None, list(result.get("changes", [])), []


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def headline(result: dict, *, subject: str) -> str:
    """One line with the overall result first: what a CI reader sees before anything else."""
    mode = result.get("mode")
    breaking = sum(1 for change in result.get("changes", []) if change.get("severity") == "error")
    mapping_errors = len(result.get("mapping_errors", []))
    if result.get("schema_errors"):
        return f"FAIL: {subject}: invalid schema, {_count(len(result['schema_errors']), 'schema error')}"
    if result.get("compatible"):
        schema = f"schema compatible under {mode}"
    else:
        schema = f"schema NOT compatible under {mode} ({_count(breaking, 'breaking change')})"
    outcome = "OK" if exit_code_for(result) == EXIT_COMPATIBLE else "FAIL"
    mapping = f", {_count(mapping_errors, 'mapping error')}" if mapping_errors else ""
    checks_errors = len(result.get("team_checks_errors") or [])
    checks = f", {_count(checks_errors, 'team check error')}" if checks_errors else ""
    return f"{outcome}: {subject}: {schema}{mapping}{checks}"


def _print_change(change: dict, *, show_version: bool, out: TextIO) -> None:
    against = change.get("against_version")
    suffix = f"  (vs v{against})" if show_version and against is not None else ""
    out.write(f"    {change['severity']:<7} {change['path']}  {change['rule']}: {change['message']}{suffix}\n")


def _annotate(change: dict, *, schema_file: str, out: TextIO) -> None:
    level = SEVERITY_TO_GITHUB.get(change["severity"], "notice")
    title = f"{change['rule']} at {change['path']}"
    where = _gh_property(schema_file)
    out.write(f"::{level} file={where},title={_gh_property(title)}::{_gh_escape(change['message'])}\n")


def report_print(result: dict, *, subject: str, schema_file: str, github: bool, out: TextIO) -> None:
    out.write(headline(result, subject=subject) + "\n")
    for err in result.get("schema_errors", []):
        out.write(f"  schema error {err.get('path', '/')}: {err.get('message')}\n")
        if github:
            where = _gh_property(schema_file)
            out.write(f"::error file={where},title=Invalid schema::{_gh_escape(err.get('message', ''))}\n")
    latest, new, older = change_groups(result)
    if new or latest is not None:
        against = f" (vs v{latest}, the latest version)" if latest is not None else ""
        out.write(f"  new in this proposal{against}: {_count(len(new), 'change') if new else 'no schema changes'}\n")
    for change in new:
        _print_change(change, show_version=latest is None, out=out)
        if github:
            _annotate(change, schema_file=schema_file, out=out)
    if older:
        out.write(f"  also checked against older versions (already in v{latest}): {_count(len(older), 'change')}\n")
    for change in older:
        _print_change(change, show_version=True, out=out)
        # Only what breaks is annotated again: notes on changes approved long ago would follow every PR.
        if github and change["severity"] == "error":
            _annotate(change, schema_file=schema_file, out=out)
    _errors_print(result, github=github, out=out)


def _errors_print(result: dict, *, github: bool, out: TextIO) -> None:
    """Mapping errors and refused team checks, one line each (and an annotation in GitHub Actions)."""
    for label, key in (("mapping", "mapping_errors"), ("team check", "team_checks_errors")):
        for err in result.get(key) or []:
            where = str(err.get("path") or "(file)")
            out.write(f"  {label} {where}: {err.get('message')}\n")
            if github:
                title = f"{label.capitalize()} error at {where}"
                out.write(f"::error title={_gh_property(title)}::{_gh_escape(str(err.get('message')))}\n")


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, err_out: TextIO = sys.stderr) -> int:
    prog = "python -m contracts.cli" if __package__ == "contracts" else f"python {Path(sys.argv[0]).name}"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="check a schema (and mapping) against a subject")
    check.add_argument("schema_file", help="the proposed Avro schema (.avsc / .json)")
    check.add_argument("--subject", required=True, help="subject name, e.g. web-chat.chat_event")
    check.add_argument("--mapping", help="optional mapping file (JSON) to validate too")
    check.add_argument("--checks", help="optional team checks file (Soda YAML, docs/quality.md) to validate too")
    check.add_argument("--url", default=os.environ.get("CHATORBIT_URL"),
                       help="portal base URL (default: $CHATORBIT_URL)")
    check.add_argument("--token", default=os.environ.get("CHATORBIT_TOKEN"),
                       help="API token (default: $CHATORBIT_TOKEN)")
    check.add_argument("--github", action="store_true", default=os.environ.get("GITHUB_ACTIONS") == "true",
                       help="also print GitHub Actions annotations (default on inside GitHub Actions)")
    check.add_argument("--json", action="store_true", help="print the raw JSON result instead of text")
    args = parser.parse_args(argv)
    try:
        if not args.url:
            raise CheckFailed("no --url given and CHATORBIT_URL is not set")
        if not args.token:
            raise CheckFailed("no --token given and CHATORBIT_TOKEN is not set")
        schema = _read_json(args.schema_file, "schema")
        mapping = _read_json(args.mapping, "mapping") if args.mapping else None
        team_checks = _read_text(args.checks, "team checks") if args.checks else None
        result = contract_check_request(url=args.url, token=args.token, subject=args.subject, schema=schema,
                                        mapping=mapping, team_checks=team_checks)
    except CheckFailed as err:
        err_out.write(f"error: {err}\n")
        if args.github:
            out.write(f"::error title=Contract check failed::{_gh_escape(str(err))}\n")
        return EXIT_ERROR
    if args.json:
        out.write(json.dumps(result, indent=2) + "\n")
    else:
        report_print(result, subject=args.subject, schema_file=args.schema_file, github=args.github, out=out)
    return exit_code_for(result)


if __name__ == "__main__":
    sys.exit(main())
