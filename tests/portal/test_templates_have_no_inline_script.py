"""No template of the project has inline script (hostile-input sweep D12): the Content-Security-Policy
(script-src 'self') would block it. A `{{ x|json_script:"id" }}` data block and <script src> are fine."""

from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings

ROOT = Path(settings.BASE_DIR)
HANDLER = re.compile(r"<[^>]*\son[a-z]+\s*=", re.IGNORECASE | re.DOTALL)
SCRIPT = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.IGNORECASE | re.DOTALL)
STYLE = re.compile(r"<style\b|\sstyle\s*=", re.IGNORECASE)
JS_URL = re.compile(r"""(href|src|action)\s*=\s*["']?\s*javascript:""", re.IGNORECASE)


def project_templates() -> list[Path]:
    found = [p for p in ROOT.glob("*/templates/**/*.html") if ".venv" not in p.parts]
    assert len(found) > 40
    return found


def problems_in(text: str) -> list[str]:
    problems = [f"handler: {m.group(0)[-60:]}" for m in HANDLER.finditer(text)]
    for match in SCRIPT.finditer(text):
        attributes, body = match.group(1), match.group(2).strip()
        if body and "application/json" not in attributes:
            problems.append(f"inline script: {body[:60]}")
    problems += [f"inline style: {m.group(0)}" for m in STYLE.finditer(text)]
    problems += [f"javascript: URL: {m.group(0)}" for m in JS_URL.finditer(text)]
    return problems


def test_the_scan_finds_what_it_looks_for():
    assert problems_in('<select onchange="this.form.requestSubmit()">')
    assert problems_in('<input\n  readonly onclick="this.select()">')
    assert problems_in("<script>alert(1)</script>")
    assert problems_in('<p style="color: red">') and problems_in("<style>p {}</style>")
    assert problems_in('<a href="javascript:void(0)">')
    assert not problems_in('<script src="/static/portal/app.js" defer></script>')
    assert not problems_in('<script id="d" type="application/json">{"a": 1}</script>')
    assert not problems_in('<select data-autosubmit name="x"><option>one</option></select>')


def test_no_template_has_an_inline_handler_script_or_style():
    found = {str(path.relative_to(ROOT)): problems for path in project_templates()
             if (problems := problems_in(path.read_text()))}
    assert found == {}
