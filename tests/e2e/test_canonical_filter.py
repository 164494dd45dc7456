"""The canonical model page's filter in a real browser (walkthrough F30): a word, an event type, a platform and
"personal data only" narrow the field tables as you type; the contents list follows; the address keeps the
filter so a filtered view can be shared."""

from __future__ import annotations

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from contracts.canonical_model import load_canonical_model

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

VISIBLE_ROWS = """() => [...document.querySelectorAll('section[data-event-type]:not([hidden]) tbody tr:not([hidden])')]
  .map(r => ({section: r.closest('section').dataset.eventType, field: r.dataset.field,
              personal: r.hasAttribute('data-personal'), platforms: r.dataset.platforms,
              text: r.textContent.toLowerCase()}))"""


def visible(page) -> list[dict]:
    return page.evaluate(VISIBLE_ROWS)


@pytest.fixture
def canonical_page(live_server, sign_in, privacy_user):
    page = sign_in(privacy_user)
    page.goto(f"{live_server.url}{reverse('canonical_model')}")
    expect(page.get_by_test_id("canonical-filter")).to_be_visible()
    return page


def test_a_word_narrows_the_tables_and_the_contents_as_you_type(canonical_page):
    page = canonical_page
    everything = visible(page)
    assert len(everything) > 60 and {r["section"] for r in everything} >= {"envelope", "message.sent"}

    page.get_by_label("Field").fill("input_tokens")
    expect(page.get_by_test_id("canonical-count")).to_contain_text("fields match")
    rows = visible(page)
    assert rows and all("input_tokens" in r["text"] for r in rows)
    sections = {r["section"] for r in rows}
    assert "envelope" not in sections
    # the contents list shows only the event types that still have a matching field
    shown_toc = page.locator("[data-testid=canonical-toc] a:visible").evaluate_all(
        "links => links.map(a => a.dataset.tocFor)")
    assert set(shown_toc) == sections
    assert "q=input_tokens" in page.url

    page.get_by_label("Field").fill("no field is called this")
    expect(page.get_by_test_id("canonical-none")).to_be_visible()
    assert visible(page) == []


def test_personal_data_platform_and_event_type_filters(canonical_page, live_server):
    page = canonical_page
    page.get_by_label("Personal data only").check()
    rows = visible(page)
    model = load_canonical_model()
    personal_in_message_sent = {f.name for f in model.event_types["message.sent"].fields if f.personal}
    assert rows and all(r["personal"] for r in rows)
    assert personal_in_message_sent <= {r["field"] for r in rows if r["section"] == "message.sent"}

    page.get_by_label("Personal data only").uncheck()
    page.get_by_label("Filled on platform").select_option("slack")
    rows = visible(page)
    assert rows and all(r["platforms"] == "all" or "slack" in r["platforms"].split() for r in rows)
    assert len(rows) < len(visible_all(page))

    page.get_by_label("Filled on platform").select_option("")
    page.get_by_label("Event type", exact=True).select_option("message.sent")
    rows = visible(page)
    assert {r["section"] for r in rows} == {"message.sent"}

    # the address keeps the filter: opened again, the page shows the same view
    page.goto(page.url)
    expect(page.get_by_label("Event type", exact=True)).to_have_value("message.sent")
    assert {r["section"] for r in visible(page)} == {"message.sent"}


def visible_all(page) -> list:
    return page.evaluate("() => [...document.querySelectorAll('section[data-event-type] tbody tr')]")


def test_every_field_table_has_the_same_column_widths(canonical_page):
    widths = canonical_page.evaluate("""() => [...document.querySelectorAll('table.canonical-fields')]
        .map(t => [...t.querySelectorAll('thead th')].map(th => Math.round(th.getBoundingClientRect().width)))""")
    assert len(widths) > 5
    assert all(w == widths[0] for w in widths), widths
