"""Server time of the version editor's live check (`POST /contracts/<subject>/check/`, what runs as you type).

    .venv/bin/python bench/bench_check.py [--versions 6] [--repeats 30] [--json]

A fresh SQLite portal in a temporary folder: the web-chat demo source and its `web-chat.chat_event`
contract under BACKWARD_TRANSITIVE, with ``--versions`` approved versions (the preset's two, then
each adding an optional field). Through Django's test client, signed in as the owning team's member,
the editor's form (schema with one more field, the latest mapping, the preset v2's four samples) is posted
the way the page does it: the first check after opening the form ("cold": no schema compiled yet in
this process), then ``--repeats`` checks that each change the schema (a new doc string each time: what
typing does; the samples stay the same), timed with ``time.perf_counter`` around the request. Reports
the cold time, the median and p90 of the typing checks and the median of this process's CPU time per
check (steadier than wall time on a shared machine), and the same for the CI endpoint
(`POST /api/v1/contracts/<subject>/check`). Goal: a typing check well under 300 ms, so that with the
300 ms debounce the panel refreshes within about half a second of the last keystroke.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SUBJECT = "web-chat.chat_event"


def setup_portal(var: Path, versions: int) -> dict:
    """Migrate a fresh SQLite portal and load the contract with `versions` approved versions."""
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    os.environ.update(CHATORBIT_VAR_DIR=str(var), DATABASE_URL=f"sqlite:///{var / 'portal.sqlite3'}", DEBUG="1",
                      LOG_LEVEL="WARNING")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    settings.ALLOWED_HOSTS = ["*"]
    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    from contracts import presets, services
    from portal.roles import Role
    from portal.services import role_groups_ensure, team_ensure

    groups = role_groups_ensure()
    team = team_ensure(name="chat-platform", display_name="Chat platform")
    users = get_user_model().objects
    author = users.create_user("platform", password="bench-pass-123")
    author.groups.add(groups[Role.PLATFORM])
    team.members.add(author)
    reviewer = users.create_user("engineer", password="bench-pass-123")
    reviewer.groups.add(groups[Role.DATA_ENGINEER])
    preset = presets.preset_load("web-chat")
    source, _ = services.source_create(actor=author, team=team, name="web-chat", platform=preset["platform"],
                                       kind=preset["kind"], product=preset.get("product", ""))
    spec = copy.deepcopy(next(c for c in preset["contracts"] if c["subject"] == SUBJECT))
    latest = spec["versions"][-1]
    for number in range(len(spec["versions"]) + 1, versions + 1):
        schema = copy.deepcopy(latest["schema"])
        schema["fields"].append({"name": f"benchField{number}", "type": ["null", "string"], "default": None,
                                 "doc": f"Added in v{number}."})
        latest = {**latest, "schema": schema, "change_summary": f"Add benchField{number}"}
        spec["versions"].append(latest)
    services.preset_versions_load(actor=author, reviewer=reviewer, source=source, contracts=[spec])
    return {"author": author, "latest": latest}


CPU_MS: list[float] = []  # this process's CPU time of each timed call: steadier than wall time on a shared machine


def timed(fn) -> tuple[float, object]:
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    CPU_MS.append((time.process_time() - cpu) * 1000)
    return (time.perf_counter() - start) * 1000, result


def summary(cold: float, typing: list[float], cpu: list[float]) -> dict:
    ordered = sorted(typing)
    return {"cold_ms": round(cold, 1), "median_ms": round(statistics.median(ordered), 1),
            "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 1),
            "cpu_median_ms": round(statistics.median(cpu[1:]), 1)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--versions", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    var = Path(tempfile.mkdtemp(prefix="bench-check-"))
    loaded = setup_portal(var, args.versions)
    from django.test import Client
    from rest_framework.test import APIClient

    from portal.services import api_token_create

    latest = loaded["latest"]

    def proposal(n: int) -> dict:
        schema = copy.deepcopy(latest["schema"])
        schema["fields"].append({"name": "ciNote", "type": ["null", "string"], "default": None,
                                 "doc": f"Typed so far: {n}"})
        return schema

    form = {"mapping": json.dumps(latest["mapping"], indent=2), "samples": json.dumps(latest["samples"], indent=2),
            "change_summary": ""}
    page = Client()
    page.force_login(loaded["author"])
    url = f"/contracts/{SUBJECT}/check/"

    def check(n: int):
        response = page.post(url, {**form, "schema": json.dumps(proposal(n), indent=2)}, HTTP_HX_REQUEST="true")
        assert response.status_code == 200 and b"verdict-good" in response.content, response.content[:2000]
        return response

    page.get(f"/contracts/{SUBJECT}/versions/new/")  # opening the editor (untimed) loads the page's code
    from contracts import compatibility

    if hasattr(compatibility, "_compile_text"):  # loading the versions compiled them: start cold, as a new process
        compatibility._compile_text.cache_clear()
    cold, _ = timed(lambda: check(0))
    typing = [timed(lambda n=n: check(n))[0] for n in range(1, args.repeats + 1)]
    form_cpu = list(CPU_MS)
    CPU_MS.clear()

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=loaded['author'], name='bench')[1]}")
    api_url = f"/api/v1/contracts/{SUBJECT}/check"

    def api_check(n: int):
        response = api.post(api_url, {"schema": proposal(n), "mapping": latest["mapping"]}, format="json")
        assert response.status_code == 200 and response.json()["compatible"], response.content[:2000]
        return response

    api_cold, _ = timed(lambda: api_check(0))
    api_typing = [timed(lambda n=n: api_check(n))[0] for n in range(1, args.repeats + 1)]

    form_figures, api_figures = summary(cold, typing, form_cpu), summary(api_cold, api_typing, CPU_MS)
    result = {
        "check_versions": args.versions,
        "check_form_cold_ms": form_figures["cold_ms"],
        "check_form_median_ms": form_figures["median_ms"],
        "check_form_p90_ms": form_figures["p90_ms"],
        "check_form_cpu_median_ms": form_figures["cpu_median_ms"],
        "check_api_median_ms": api_figures["median_ms"],
        "check_api_p90_ms": api_figures["p90_ms"],
        "check_api_cpu_median_ms": api_figures["cpu_median_ms"],
    }
    print(f"{SUBJECT}, {args.versions} approved versions, BACKWARD_TRANSITIVE, "
          f"{len(latest['samples'])} samples, {args.repeats} checks after the first")
    for label, figures in (("editor check /check/     ", form_figures), ("CI check /api/v1/…/check", api_figures)):
        print(f"  {label} cold {figures['cold_ms']:7.1f} ms   median {figures['median_ms']:7.1f} ms   p90 "
              f"{figures['p90_ms']:7.1f} ms   CPU median {figures['cpu_median_ms']:6.1f} ms")
    if args.json:
        print(json.dumps(result))
    if os.environ.get("BENCH_PROFILE"):
        import cProfile

        cProfile.runctx("for n in range(200, 220): check(n)", globals(), {"check": check},
                        os.environ["BENCH_PROFILE"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
