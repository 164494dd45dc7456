"""No dead ends: every link a page shows is one its reader may follow (walkthrough F4: the privacy officer's
Pipeline page linked to /quarantine/, which answers 403 for that role).

For each role, a crawler signs in, starts at the home page and follows every same-site ``<a href>`` of every
page it reaches (the Django admin's own pages and the API docs are visited but not crawled further); every
link must end, after redirects, in a page that answers 200 and is not the sign-in page.
"""

from __future__ import annotations

import io
import re
import uuid
from collections import deque
from urllib.parse import urljoin, urlsplit

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db

HREF = re.compile(r'<a\b[^>]*?\bhref="([^"]*)"', re.IGNORECASE)
#: pages whose links are not ours to check (Django's admin, the Swagger page's client-side routes)
NOT_CRAWLED = ("/admin/", "/api/v1/docs/", "/api/v1/schema/")
#: a filter bar makes links per value; a few of each page are enough to check
QUERIES_PER_PATH = 4
MAX_PAGES = 160


def links_of(url: str, body: str) -> list[str]:
    found = []
    for href in HREF.findall(body):
        href = href.replace("&amp;", "&")
        if not href or href.startswith(("#", "mailto:", "data:")):
            continue
        target = urlsplit(urljoin(f"http://testserver{url}", href))
        if target.netloc != "testserver" or target.path.startswith("/static/"):
            continue
        found.append(target.path + (f"?{target.query}" if target.query else ""))
    return found


def dead_links(user) -> tuple[list[tuple[str, str, int | str]], int]:
    """(page, link, what it answered) for every link that does not lead to a readable page; pages seen."""
    client = Client()
    client.force_login(user)
    seen: set[str] = set()
    per_path: dict[str, int] = {}
    queue: deque[tuple[str, str]] = deque([("(start)", reverse("home"))])
    dead = []
    while queue and len(seen) < MAX_PAGES:
        origin, url = queue.popleft()
        if url in seen:
            continue
        path = urlsplit(url).path
        if "?" in url:
            if per_path.get(path, 0) >= QUERIES_PER_PATH:
                continue
            per_path[path] = per_path.get(path, 0) + 1
        seen.add(url)
        response = client.get(url, follow=True)
        final = response.request["PATH_INFO"]
        if response.status_code != 200 or final == reverse("login"):
            dead.append((origin, url, response.status_code if final != reverse("login") else "sign-in page"))
            continue
        if not response.get("Content-Type", "").startswith("text/html") or path.startswith(NOT_CRAWLED):
            continue
        queue.extend((url, link) for link in links_of(url, response.content.decode()) if link not in seen)
    return dead, len(seen)


def demo_world(settings, tmp_path, platform_user) -> None:
    """The demo seed, a warehouse with quarantined records, a version in review and a model run: every
    page has something to show and to link to. Needs the ``warehouse_server`` fixture."""
    from contracts.models import Contract
    from contracts.selectors import latest_approved_version
    from contracts.services import contract_version_submit
    from ingest_workers import services
    from tests.ingest_workers.test_quarantine_pages import land_quarantine, quarantine_row
    from tests.warehouse.test_runs_page import T, run

    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "database": f"T_{uuid.uuid4().hex[:12].upper()}"}
    settings.RAW_ARCHIVE_URL = f"file://{tmp_path}/archive"
    call_command("seed_demo", quiet_keys=True, force=True, stdout=io.StringIO())
    services.contract_index_current(force=True)
    land_quarantine([quarantine_row(), quarantine_row(reason="mapping_failure", error_path="/timestamp")])
    contract = Contract.objects.get(subject="web-chat.chat_event")
    current = latest_approved_version(contract)
    contract_version_submit(actor=platform_user, contract=contract, schema=current.schema.schema,
                            mapping_spec=current.mapping, samples=current.sample_payloads,
                            change_summary="Same schema, new samples.")
    run(T, [("identity", "succeeded", 3, 200, ""), ("conversation_sessions", "failed", 0, 900, "boom")])


@pytest.fixture
def demo(settings, warehouse_server, tmp_path, platform_user, engineer, privacy_user, admin_user):
    demo_world(settings, tmp_path, platform_user)
    return {"platform": platform_user, "engineer": engineer, "privacy": privacy_user, "admin": admin_user}


@pytest.mark.parametrize("role", ["platform", "engineer", "privacy", "admin"])
def test_every_link_on_every_page_leads_somewhere_the_role_may_go(demo, role):
    dead, pages = dead_links(demo[role])
    assert pages > 15  # the crawl got past the home page
    assert dead == [], f"{role} is shown links that do not work: {dead}"
