"""`make run`'s demo, briefly: `run_embedded` with short demo-break timings (its options) and short check and
alert cycles (their settings). ios-app breaks, its scorecard page turns red naming the field's path, the Alerts
page shows one open alert for it; after the fix the card is green again and the alert is among the resolved.
Every process is real (portal, workers, beat, the embedded warehouse, the AWS emulator, the traffic
generator through the collectors); the test only reads the pages a newcomer would open."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.portal.test_embedded_default import _assert_gone, _supervised_pids, free_port

ROOT = Path(__file__).resolve().parents[2]
PATH = "/client_ts_ms"   # the field ios-app sends with the wrong type (traffic.wrong_type_path)


def _signed_in(base: str, printed: str) -> requests.Session:
    password = re.search(r"^\s+engineer\s+(\S+)", printed, re.MULTILINE).group(1)
    session = requests.Session()
    page = session.get(f"{base}/accounts/login/", timeout=10)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    answer = session.post(f"{base}/accounts/login/", timeout=10, headers={"Referer": f"{base}/accounts/login/"},
                          data={"username": "engineer", "password": password, "csrfmiddlewaretoken": csrf})
    assert answer.status_code == 200 and "Sign out" in answer.text
    return session


def _poll(what: str, check, logs, *, within_s: float) -> str:
    """Poll ``check()`` (a page's text, or None while not there yet) until it answers; fail with the logs."""
    deadline = time.monotonic() + within_s
    while True:
        text = check()
        if text is not None:
            return text
        assert time.monotonic() < deadline, f"{what} never happened:\n" + logs()
        time.sleep(2)


def test_make_run_demo_breaks_ios_app_red_with_its_path_alerts_and_resolves(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "DJANGO_ALLOW_ASYNC_UNSAFE", "DEBUG",
                        "RAW_ARCHIVE_URL"} and not k.startswith("SNOWFLAKE_")}
    env.update(CHATORBIT_VAR_DIR=str(tmp_path), PYTHONUNBUFFERED="1",
               AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}", SNOWFLAKE_PORT=str(free_port()),
               QUALITY_RUN_INTERVAL_S="20", QUALITY_ALERT_INTERVAL_S="5", MODELS_RUN_INTERVAL_S="60")
    log = tmp_path / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "run_embedded", "--addrport", f"127.0.0.1:{port}", "--traffic-rate", "20",
             "--demo-break-after", "30", "--demo-break-fix-after", "60"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def logs() -> str:
        return log.read_text()[-3000:] + "\n".join(p.read_text()[-2000:]
                                                    for p in sorted((tmp_path / "logs").glob("*.log")))

    try:
        base = f"http://127.0.0.1:{port}"

        def portal_up() -> str | None:
            assert proc.poll() is None, logs()
            try:
                return "up" if requests.get(f"{base}/accounts/login/", timeout=2).status_code == 200 else None
            except requests.ConnectionError:
                return None

        _poll("the portal coming up", portal_up, logs, within_s=120)
        session = _signed_in(base, log.read_text())
        card_url = f"{base}/quality/scorecards/source/ios-app/"

        def card(level: str) -> str | None:
            page = session.get(card_url, timeout=30)
            return page.text if page.status_code == 200 and f"badge level-{level}" in page.text else None

        def alerts(found: str) -> str | None:
            page = session.get(f"{base}/quality/alerts/", timeout=30).text
            return page if found in page else None

        red = _poll("ios-app's scorecard turning red", lambda: card("red"), logs, within_s=240)
        assert f'<code data-testid="reason-path">{PATH}</code>' in red
        page = _poll("the alert opening", lambda: alerts('data-testid="alert" data-key="quarantine_rate:ios-app"'),
                     logs, within_s=60)
        assert page.count('data-key="quarantine_rate:ios-app"') == 1 and "ios-app is red" in page and PATH in page
        _poll("ios-app's scorecard turning green after the fix", lambda: card("green"), logs, within_s=240)
        page = _poll("the alert resolving",
                     lambda: alerts('data-testid="resolved-alert" data-key="quarantine_rate:ios-app"'), logs,
                     within_s=60)
        assert 'data-testid="alert" data-key="quarantine_rate:ios-app"' not in page
    finally:
        children = _supervised_pids(tmp_path)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    _assert_gone(children, within_s=10)
