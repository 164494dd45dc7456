"""What the `make run` terminal shows for ordinary refusals: one line each, no traceback (walkthrough F16)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def embedded_env(var: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "DJANGO_ALLOW_ASYNC_UNSAFE", "DEBUG",
                        "RAW_ARCHIVE_URL", "LOG_LEVEL"} and not k.startswith("SNOWFLAKE_")}
    env.update(CHATORBIT_VAR_DIR=str(var), PYTHONUNBUFFERED="1")
    return env


def test_a_403_and_a_401_print_one_line_each_and_no_traceback(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    out = tmp_path / "terminal.log"
    with out.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "manage.py", "run_embedded", "--portal-only", "--addrport",
                                 f"127.0.0.1:{port}"], cwd=ROOT, env=embedded_env(tmp_path), stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
            try:
                login = requests.get(f"{base}/accounts/login/", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.3)
        session = requests.Session()
        login = session.get(f"{base}/accounts/login/", timeout=10)
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)
        password = re.search(r"^\s+platform\s+(\S+)", out.read_text(), re.MULTILINE).group(1)
        session.post(f"{base}/accounts/login/", timeout=10, headers={"Referer": f"{base}/accounts/login/"},
                     data={"username": "platform", "password": password, "csrfmiddlewaretoken": csrf})
        assert session.get(f"{base}/review/", timeout=10).status_code == 403   # for data engineers only
        assert requests.post(f"{base}/collect/v1/batch", json=[{}], timeout=10).status_code == 401
        assert session.get(f"{base}/contracts/", timeout=10).status_code == 200

        def printed() -> str:
            return out.read_text()

        deadline = time.monotonic() + 10
        while '"GET /contracts/ HTTP/1.1" 200' not in printed():   # the last request's access line
            assert time.monotonic() < deadline, printed()
            time.sleep(0.1)
        terminal = printed().partition("Quit the server with")[2]   # what the requests printed
        assert "Traceback" not in terminal, terminal
        assert len(re.findall(r"^.*/review/.*$", terminal, re.MULTILINE)) == 1, terminal
        assert len(re.findall(r"^.*/collect/v1/batch.*$", terminal, re.MULTILINE)) == 1, terminal
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
