"""`make run`'s command brings the whole platform up on its embedded default: the portal on SQLite with
the demo seeded and the sign-ins printed, the local AWS emulator, the embedded warehouse, Celery
workers and the traffic generator — and the generated events reach CANONICAL.EVENTS."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_embedded_serves_the_seeded_portal_on_sqlite(tmp_path):
    port = free_port()
    # the embedded default: none of the production settings (a DEBUG=0 or SNOWFLAKE_* left in the shell
    # would make this a production start-up, which refuses the embedded values)
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "DJANGO_ALLOW_ASYNC_UNSAFE", "DEBUG",
                        "RAW_ARCHIVE_URL"} and not k.startswith("SNOWFLAKE_")}
    env.update(CHATORBIT_VAR_DIR=str(tmp_path), PYTHONUNBUFFERED="1",
               AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}", SNOWFLAKE_PORT=str(free_port()),
               MODELS_RUN_INTERVAL_S="5")
    log = tmp_path / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "manage.py", "run_embedded", "--addrport", f"127.0.0.1:{port}"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/accounts/login/", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
            assert proc.poll() is None, log.read_text()
        else:
            raise AssertionError("portal did not come up:\n" + log.read_text())
        printed = log.read_text()
        assert (tmp_path / "portal.sqlite3").exists()
        keys = dict(re.findall(r"^\s+(web-chat|ios-app|android-app|llm-gateway)\s+(wk_\S+)$", printed, re.MULTILINE))
        assert set(keys) == {"web-chat", "ios-app", "android-app", "llm-gateway"}, printed
        match = re.search(r"^\s+engineer\s+(\S+)", printed, re.MULTILINE)
        assert match, printed

        session = requests.Session()
        login_page = session.get(f"{base}/accounts/login/", timeout=10)
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page.text).group(1)
        signed_in = session.post(f"{base}/accounts/login/", timeout=10, headers={"Referer": f"{base}/accounts/login/"},
                                 data={"username": "engineer", "password": match.group(1),
                                       "csrfmiddlewaretoken": csrf})
        assert signed_in.status_code == 200 and "Sign out" in signed_in.text
        contracts = session.get(f"{base}/contracts/", timeout=10)
        for source in ("web-chat", "ios-app", "android-app", "slack-bot", "voice-assistant", "llm-gateway"):
            assert source in contracts.text
        # The vendored assets are served locally.
        assert session.get(f"{base}/static/vendor/htmx-2.0.11.min.js", timeout=10).status_code == 200

        # Traffic flows: collectors → stream → workers → warehouse, merged into CANONICAL.EVENTS.
        def count(table: str) -> int:
            out = subprocess.run([sys.executable, "manage.py", "warehouse_query", f"SELECT COUNT(*) AS N FROM {table}"],
                                 cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
            return json.loads(out.stdout)[0]["N"] if out.returncode == 0 else 0

        def logs() -> str:
            return "\n".join(p.read_text()[-2000:] for p in sorted((tmp_path / "logs").glob("*.log")))

        deadline = time.monotonic() + 120
        while count("CANONICAL.EVENTS") == 0:
            assert time.monotonic() < deadline, "no events reached CANONICAL.EVENTS:\n" + logs()
            time.sleep(2)
        # /metrics sums the portal's counts (the collectors) and the workers' (the shard reader, the merger)
        # through the folder run_embedded made (docs/metrics.md)
        _wait_for_summed_metrics(base, logs)
        assert any((tmp_path / "prometheus").iterdir())
        # walkthrough F1: the printed write keys still work once the traffic generator is sending
        for source, key in keys.items():
            sent = requests.post(f"{base}/collect/v1/batch", json=[{"hello": source}], timeout=30,
                                 headers={"Authorization": f"Bearer {key}"})
            assert sent.status_code == 202, (source, sent.text)
        # The beat's model runs (every 5 s here) turn them into the curated tables the dashboard reads.
        deadline = time.monotonic() + 120
        while count("ANALYTICS.CONVERSATION_SESSIONS") == 0:
            assert time.monotonic() < deadline, "no sessions reached ANALYTICS.CONVERSATION_SESSIONS:\n" + logs()
            time.sleep(2)
        dashboard = session.get(f"{base}/analytics/data.json", timeout=30)
        assert dashboard.status_code == 200, dashboard.text
        runs = session.get(f"{base}/analytics/runs/", timeout=30)
        assert runs.status_code == 200 and "succeeded" in runs.text
    finally:
        children = _supervised_pids(tmp_path)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    _assert_gone(children, within_s=10)


def _metric_sums(base: str) -> dict[str, float]:
    """/metrics: each sample name's values added up."""
    from prometheus_client.parser import text_string_to_metric_families

    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(requests.get(f"{base}/metrics", timeout=30).text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0) + sample.value
    return sums


def _wait_for_summed_metrics(base: str, logs) -> None:
    """Poll /metrics until it counts the portal's collectors and the workers' reader and merger."""
    deadline = time.monotonic() + 60
    wanted = ("chatorbit_collector_events_total", "chatorbit_pipeline_records_total",
              "chatorbit_merge_events_inserted_total")
    while not all((sums := _metric_sums(base)).get(name, 0) > 0 for name in wanted):
        assert time.monotonic() < deadline, f"/metrics never counted every process: {sums}\n" + logs()
        time.sleep(1)


def _supervised_pids(var: Path) -> list[int]:
    """The pids of run_embedded's children, from the status file its supervisor keeps for the pipeline page."""
    body = json.loads((var / "processes.json").read_text())
    return [child["pid"] for child in body["children"] if child["pid"]]


def _assert_gone(pids: list[int], within_s: float) -> None:
    """Poll until no process (nor any process group a child led) of these pids is left."""
    deadline = time.monotonic() + within_s
    while True:
        left = []
        for pid in pids:
            try:
                os.killpg(pid, 0)      # each child leads its own group: its pool processes included
                left.append(pid)
            except ProcessLookupError:
                try:
                    os.kill(pid, 0)
                    left.append(pid)
                except ProcessLookupError:
                    pass
        if not left:
            return
        assert time.monotonic() < deadline, f"still running after {within_s:g} s: {left}"
        time.sleep(0.2)


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_make_run_restarts_a_killed_child_and_ctrl_c_stops_everything(tmp_path):
    """Through `make run` as a person starts it: SIGKILL the beat and it comes back, reported in the
    terminal and on the pipeline page; then Ctrl-C (SIGINT to the terminal's process group) stops it all."""
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "DJANGO_ALLOW_ASYNC_UNSAFE", "DEBUG",
                        "RAW_ARCHIVE_URL"} and not k.startswith("SNOWFLAKE_")}
    env.update(CHATORBIT_VAR_DIR=str(tmp_path), PYTHONUNBUFFERED="1",
               AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}", SNOWFLAKE_PORT=str(free_port()))
    log = tmp_path / "terminal.log"
    # `-o install`: the venv is this interpreter's (PY=), not one for make to create
    with log.open("w") as out:
        make = subprocess.Popen(["make", "-o", "install", "run", f"PY={sys.executable}",
                                 f"RUN_ARGS=--no-traffic --addrport 127.0.0.1:{port}"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                # as a terminal's shell starts it: Ctrl-C delivered. A suite started in the
                                # background by a non-interactive shell (`cmd &`) inherits SIGINT ignored,
                                # and so would make and everything under it
                                preexec_fn=_sigint_default)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert make.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                requests.get(f"{base}/accounts/login/", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.5)
        from portal.supervision import processes_for_page

        rows = {row["name"]: row for row in processes_for_page(tmp_path)}
        assert set(rows) == {"local_aws", "warehouse_server", "ingest", "worker", "beat"}
        assert {row["state"] for row in rows.values()} == {"running"}, rows
        killed = rows["beat"]["pid"]
        os.kill(killed, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not (rows["beat"]["restarts"] == 1 and rows["beat"]["state"] == "running"):
            assert time.monotonic() < deadline, (rows, log.read_text())
            time.sleep(0.2)
            rows = {row["name"]: row for row in processes_for_page(tmp_path)}
        assert rows["beat"]["pid"] != killed
        os.kill(rows["beat"]["pid"], 0)                                  # the new beat runs
        assert "beat exited (signal SIGKILL)" in log.read_text()

        session = requests.Session()
        login = session.get(f"{base}/accounts/login/", timeout=10)
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)
        password = re.search(r"^\s+engineer\s+(\S+)", log.read_text(), re.MULTILINE).group(1)
        session.post(f"{base}/accounts/login/", timeout=10, headers={"Referer": f"{base}/accounts/login/"},
                     data={"username": "engineer", "password": password, "csrfmiddlewaretoken": csrf})
        page = session.get(f"{base}/pipeline/live/", timeout=30)
        assert page.status_code == 200
        assert 'data-name="beat" data-restarts="1" data-state="running"' in page.text, page.text
        assert 'data-name="worker" data-restarts="0" data-state="running"' in page.text

        children = _supervised_pids(tmp_path)
        supervisor = json.loads((tmp_path / "processes.json").read_text())["supervisor_pid"]
        os.killpg(make.pid, signal.SIGINT)                               # Ctrl-C in make's terminal
        # make waited, then reports the interrupt; the supervisor's own bound is ~65 s (each tier's grace, then
        # SIGKILL: portal.supervision.stop_all), reached only when the machine is loaded
        assert make.wait(timeout=90) != 0
        _assert_gone([supervisor, *children], within_s=1)
        states = {row["name"]: row["state"] for row in
                  json.loads((tmp_path / "processes.json").read_text())["children"]}
        assert set(states.values()) == {"stopped"}, states
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGTERM)
            make.wait(timeout=60)


def test_demo_write_keys_are_kept_not_rotated_and_a_persons_rotation_stands(db, settings, tmp_path):
    from django.core.management import call_command

    from contracts.management.commands.seed_demo import demo_write_keys_ensure, demo_write_keys_path
    from contracts.models import Source
    from contracts.services import source_write_key_matches, source_write_key_rotate
    from portal.models import AuditRecord

    settings.VAR_DIR = tmp_path
    call_command("seed_demo", quiet_keys=True, force=True, stdout=io.StringIO())
    first = demo_write_keys_ensure()
    assert set(first) == {"web-chat", "ios-app", "android-app", "llm-gateway"}   # webhook sources have none
    assert oct(demo_write_keys_path().stat().st_mode & 0o777) == "0o600"
    rotations = AuditRecord.objects.filter(action="source.rotate_write_key").count()
    assert demo_write_keys_ensure() == first                      # kept: nothing rotated to get them
    assert AuditRecord.objects.filter(action="source.rotate_write_key").count() == rotations
    web = Source.objects.get(name="web-chat")
    mine = source_write_key_rotate(actor=web.team.members.first(), source=web)   # a person rotates one
    again = demo_write_keys_ensure()
    assert again["web-chat"] is None and again["ios-app"] == first["ios-app"]
    web.refresh_from_db()
    assert source_write_key_matches(web, mine)                    # the person's key still works


@pytest.mark.parametrize("addrport, refused", [
    ("127.0.0.1:8000", False), ("8001", False), ("localhost:8000", False), ("[::1]:8000", False),
    ("0.0.0.0:8000", True), ("192.168.1.20:8000", True), ("[::]:8000", True), ("demo.example.com:80", True),
])
def test_the_embedded_demo_refuses_an_address_other_hosts_can_reach(addrport, refused):
    from portal.management.commands.run_embedded import exposed_demo_refusal

    reason = exposed_demo_refusal(addrport, debug=True, allowed=False)
    assert (reason is not None) == refused
    if refused:
        assert addrport in reason and "--allow-other-hosts" in reason and "DEBUG" in reason
    assert exposed_demo_refusal(addrport, debug=True, allowed=True) is None


def test_run_embedded_stops_before_starting_anything_on_an_exposed_address(tmp_path, settings):
    from django.core.management import CommandError, call_command

    settings.VAR_DIR = tmp_path / "var"
    with pytest.raises(CommandError, match="other hosts"):
        call_command("run_embedded", addrport="0.0.0.0:8123")
    assert not (tmp_path / "var").exists()  # nothing was started or written
