"""The model price catalog as data engineers and readers use it: which price is in force for an hour,
append-only versions, no accidental backdating, recompute requests, 403 for readers, errors that name
the field (service, page and API), and the demo catalog."""

from __future__ import annotations

import datetime as dt
import html
import io
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from portal.models import AuditRecord
from tests.conftest import PASSWORD
from warehouse import selectors, services
from warehouse.models import ModelPrice, PriceRecompute

pytestmark = pytest.mark.django_db

UTC = dt.UTC
NOW = dt.datetime(2026, 6, 15, 12, 34, tzinfo=UTC)


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def client_for(user) -> Client:
    client = Client()
    assert client.login(username=user.get_username(), password=PASSWORD)
    return client


def later_hour(hours: int = 2) -> dt.datetime:
    """An hour start safely in the future (still not in the past if the clock crosses an hour mid-test)."""
    return selectors.hour_start(timezone.now()) + dt.timedelta(hours=hours)


def earlier_hour(hours: int = 3) -> dt.datetime:
    return selectors.hour_start(timezone.now()) - dt.timedelta(hours=hours)


def add(actor, model="gpt-4.1-mini", kind="input", price="0.40", effective_from=None, **kwargs):
    return services.price_add(actor=actor, model=model, token_kind=kind, usd_per_million=price,
                              effective_from=effective_from or at(2026, 7, 1), now=kwargs.pop("now", NOW), **kwargs)


def page_text(response) -> str:
    """The page as a reader sees it: entities decoded, runs of white space as one space."""
    return " ".join(html.unescape(response.content.decode()).split())


# --- which price is in force -----------------------------------------------------------------------

def test_price_in_force_is_the_latest_effective_from_at_or_before_the_hour_and_the_highest_version_on_ties(engineer):
    add(engineer, price="0.40", effective_from=at(2026, 1, 1), recompute=True)
    add(engineer, price="0.50", effective_from=at(2026, 3, 1), recompute=True)
    add(engineer, price="0.45", effective_from=at(2026, 3, 1), recompute=True, note="correction of v2")
    add(engineer, price="0.60", effective_from=at(2026, 5, 1, 10), recompute=True)
    add(engineer, kind="output", price="1.60", effective_from=at(2026, 2, 1), recompute=True)

    def price(moment, kind="input"):
        row = selectors.price_in_force("gpt-4.1-mini", kind, moment)
        return row.usd_per_million if row else None

    assert price(at(2025, 12, 31, 23)) is None                      # before the first price
    assert price(at(2026, 1, 1)) == Decimal("0.40")                  # exact boundary hour
    assert price(at(2026, 2, 28, 23, 59)) == Decimal("0.40")
    assert price(at(2026, 3, 1)) == Decimal("0.45")                  # the correction (higher version) wins the tie
    assert price(at(2026, 5, 1, 9, 59)) == Decimal("0.45")           # still the 09:00 hour
    assert price(at(2026, 5, 1, 10)) == Decimal("0.60")
    assert price(at(2026, 5, 1, 10, 45)) == Decimal("0.60")
    assert price(at(2026, 1, 15), kind="output") is None             # the output price starts later
    assert price(at(2026, 2, 1), kind="output") == Decimal("1.60")
    assert price(at(2026, 2, 1), kind="cached_input") is None
    assert selectors.price_in_force("o4-mini", "input", at(2026, 5, 1)) is None


def test_catalog_rows_for_the_warehouse_give_the_same_price_per_hour_as_price_in_force(engineer):
    add(engineer, price="0.40", effective_from=at(2026, 1, 1), recompute=True)
    add(engineer, price="0.50", effective_from=at(2026, 3, 1), recompute=True)
    add(engineer, price="0.45", effective_from=at(2026, 3, 1), recompute=True)
    add(engineer, price="0.60", effective_from=at(2026, 5, 1, 10), recompute=True)
    add(engineer, model="o4-mini", kind="output", price="4.40", effective_from=at(2026, 2, 1), recompute=True)

    rows = selectors.price_catalog_rows()
    assert len(rows) == 5
    assert all(r["effective_from"].tzinfo is None for r in rows)     # TIMESTAMP_NTZ holds UTC
    by_version = {r["version"]: r for r in rows}
    assert by_version[4]["effective_to"] is None
    assert by_version[3]["effective_to"] == dt.datetime(2026, 5, 1, 10)
    assert by_version[2]["effective_to"] == by_version[2]["effective_from"]  # overridden by v3: never in force

    def from_ranges(model, kind, hour):
        naive = hour.replace(tzinfo=None)
        hits = [r for r in rows if r["model"] == model and r["token_kind"] == kind and r["effective_from"] <= naive
                and (r["effective_to"] is None or naive < r["effective_to"])]
        assert len(hits) <= 1
        return hits[0]["version"] if hits else None

    for hour in (at(2025, 12, 31), at(2026, 1, 1), at(2026, 3, 1), at(2026, 4, 1), at(2026, 5, 1, 9),
                 at(2026, 5, 1, 10), at(2026, 9, 1)):
        for model, kind in (("gpt-4.1-mini", "input"), ("o4-mini", "output"), ("o4-mini", "input")):
            expected = selectors.price_in_force(model, kind, hour)
            assert from_ranges(model, kind, hour) == (expected.version if expected else None), (model, kind, hour)


def test_current_prices_show_each_kind_in_force_and_the_changes_still_to_come(engineer):
    add(engineer, price="0.40", effective_from=at(2026, 1, 1), recompute=True)
    add(engineer, kind="output", price="1.60", effective_from=at(2026, 1, 1), recompute=True)
    add(engineer, price="0.35", effective_from=at(2026, 7, 1))

    (item,) = selectors.prices_current(at=NOW)
    cells = {cell["token_kind"]: cell["price"] for cell in item["prices"]}
    assert cells["input"].usd_per_million == Decimal("0.40")
    assert cells["output"].usd_per_million == Decimal("1.60")
    assert cells["cached_input"] is None
    assert [r.usd_per_million for r in item["scheduled"]] == [Decimal("0.35")]


# --- adding prices ----------------------------------------------------------------------------------

def test_every_change_gets_the_next_catalog_version_and_an_audit_record(engineer, admin_user):
    first, _ = add(engineer, model="gpt-4.1-mini", kind="input")
    second, _ = add(admin_user, model="o4-mini", kind="output", price="4.40")
    third, _ = add(engineer, model="gpt-4.1-mini", kind="input", price="0.38", effective_from=at(2026, 8, 1))
    assert (first.version, second.version, third.version) == (1, 2, 3)
    assert first.created_by == engineer and second.created_by == admin_user
    records = AuditRecord.objects.filter(action="price.add").order_by("id")
    assert [r.after["version"] for r in records] == [1, 2, 3]
    assert records[2].after["usd_per_million"] == "0.380000" and records[2].actor_username == "engineer"


@pytest.mark.django_db(transaction=True)
def test_concurrent_changes_each_get_their_own_version(engineer):
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    def add_one(i: int) -> int:
        try:
            price, _ = add(engineer, model=f"model-{i}", price="1.00")
            return price.version
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=6) as pool:
        versions = list(pool.map(add_one, range(12)))
    assert sorted(versions) == list(range(1, 13))


def test_a_price_may_start_at_the_current_hour_without_a_recompute(engineer):
    price, recompute = add(engineer, effective_from=at(2026, 6, 15, 12), now=NOW)
    assert price.effective_from == at(2026, 6, 15, 12) and recompute is None
    assert not PriceRecompute.objects.exists()


def test_a_backdated_price_without_a_recompute_is_refused_and_nothing_is_saved(engineer):
    with pytest.raises(services.CatalogError) as err:
        add(engineer, effective_from=at(2026, 6, 15, 11), now=NOW)
    assert err.value.field == "effective_from" and "effective_from" in err.value.message
    assert "recompute" in err.value.message
    assert not ModelPrice.objects.exists() and not AuditRecord.objects.filter(action="price.add").exists()


def test_a_backdated_price_with_a_recompute_saves_both_in_one_change(engineer):
    price, recompute = add(engineer, price="0.42", effective_from=at(2026, 3, 1), recompute=True)
    assert recompute is not None
    assert (recompute.model, recompute.from_time, recompute.status) == ("gpt-4.1-mini", at(2026, 3, 1), "pending")
    assert recompute.requested_by == engineer
    assert list(selectors.price_recomputes_pending()) == [recompute]
    assert set(AuditRecord.objects.values_list("action", flat=True)) >= {"price.add", "price_recompute.request"}


def test_a_recompute_asked_for_a_future_price_is_not_needed_and_not_saved(engineer):
    _, recompute = add(engineer, effective_from=at(2026, 7, 1), recompute=True)
    assert recompute is None and not PriceRecompute.objects.exists()


@pytest.mark.parametrize(("changes", "field", "words"), [
    ({"price": "-0.01"}, "usd_per_million", "negative"),
    ({"price": "0.1234567"}, "usd_per_million", "6 decimals"),
    ({"price": "10000"}, "usd_per_million", "below 10,000"),
    ({"price": "cheap"}, "usd_per_million", "number"),
    ({"price": "NaN"}, "usd_per_million", "finite"),
    ({"kind": "audio"}, "token_kind", "input, cached_input, output"),
    ({"model": ""}, "model", "required"),
    ({"model": "gpt 4"}, "model", "spaces"),
    ({"model": "gpt-4\x00"}, "model", "control"),
    ({"model": "m" * 129}, "model", "at most 128"),
    ({"effective_from": "2026-07-01"}, "effective_from", "date and time"),
    ({"effective_from": at(2026, 7, 1, 10, 30)}, "effective_from", "start of an hour"),
])
def test_invalid_prices_are_refused_naming_the_field(engineer, changes, field, words):
    with pytest.raises(services.CatalogError) as err:
        add(engineer, **changes)
    assert err.value.field == field
    assert field in err.value.message and words in err.value.message
    assert not ModelPrice.objects.exists()


def test_prices_keep_exactly_six_decimals_and_trailing_zeros_are_fine(engineer):
    price, _ = add(engineer, price="0.2750000")
    assert price.usd_per_million == Decimal("0.275")
    price, _ = add(engineer, kind="output", price=1.6)
    price.refresh_from_db()
    assert price.usd_per_million == Decimal("1.6")


def test_readers_may_not_add_prices_or_request_recomputes(platform_user):
    with pytest.raises(services.CatalogForbidden):
        add(platform_user)
    with pytest.raises(services.CatalogForbidden):
        services.price_recompute_request(actor=platform_user, from_time=at(2026, 3, 1), now=NOW)
    assert not ModelPrice.objects.exists() and not PriceRecompute.objects.exists()


# --- recompute requests on their own ---------------------------------------------------------------

def test_a_recompute_of_every_model_is_widened_to_the_start_of_its_hour(engineer):
    recompute = services.price_recompute_request(actor=engineer, from_time=at(2026, 3, 1, 10, 20), now=NOW)
    assert (recompute.model, recompute.from_time) == ("", at(2026, 3, 1, 10))
    assert AuditRecord.objects.filter(action="price_recompute.request").count() == 1


def test_a_recompute_of_an_unpriced_model_or_of_the_future_is_refused(engineer):
    with pytest.raises(services.CatalogError) as err:
        services.price_recompute_request(actor=engineer, model="gpt-4.1-mini", from_time=at(2026, 3, 1), now=NOW)
    assert err.value.field == "model" and "no price" in err.value.message
    with pytest.raises(services.CatalogError) as err:
        services.price_recompute_request(actor=engineer, from_time=at(2026, 7, 1), now=NOW)
    assert err.value.field == "from_time" and "future" in err.value.message
    assert not PriceRecompute.objects.exists()


# --- the prices page --------------------------------------------------------------------------------

def test_a_reader_sees_current_prices_and_history_but_no_form(platform_user, engineer):
    add(engineer, price="0.40", effective_from=at(2026, 1, 1), recompute=True, note="list price")
    response = client_for(platform_user).get(reverse("analytics_prices"))
    assert response.status_code == 200
    text = page_text(response)
    assert 'data-testid="current-prices"' in text and "$0.40" in text
    assert 'data-testid="price-history"' in text and "list price" in text and ">engineer<" in text
    assert 'data-testid="backdating-rule"' in text and "recompute past hours" in text
    assert 'data-testid="price-form"' not in text and 'data-testid="recompute-form"' not in text


def test_an_engineer_sees_the_form_with_the_backdating_rule(engineer):
    response = client_for(engineer).get(reverse("analytics_prices"))
    assert response.status_code == 200
    text = page_text(response)
    assert 'data-testid="price-form"' in text and 'data-testid="recompute-form"' in text
    assert "Backdated: recompute past hours" in text
    assert 'data-testid="no-prices"' in text  # the empty catalog says what that means


def price_post(**overrides) -> dict:
    data = {"model": "gpt-4.1-mini", "token_kind": "input", "usd_per_million": "0.40",
            "effective_from": later_hour().strftime("%Y-%m-%dT%H:%M"), "note": "provider list"}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_an_engineer_adds_a_price_from_the_page(engineer):
    client = client_for(engineer)
    response = client.post(reverse("analytics_price_add"), price_post(), follow=True)
    assert response.status_code == 200
    text = page_text(response)
    assert "Price added: gpt-4.1-mini" in text and "catalog version 1" in text
    price = ModelPrice.objects.get()
    assert (price.usd_per_million, price.effective_from, price.note) == (Decimal("0.4"), later_hour(), "provider list")


def test_the_page_refuses_a_backdated_price_unless_recompute_is_ticked(engineer):
    client = client_for(engineer)
    past = earlier_hour().strftime("%Y-%m-%dT%H:%M")
    response = client.post(reverse("analytics_price_add"), price_post(effective_from=past))
    assert response.status_code == 400
    text = page_text(response)
    assert 'data-field="effective_from"' in text and "is before the current hour" in text
    assert not ModelPrice.objects.exists()

    response = client.post(reverse("analytics_price_add"), price_post(effective_from=past, recompute="on"),
                           follow=True)
    assert response.status_code == 200 and "Recompute requested from" in page_text(response)
    assert ModelPrice.objects.count() == 1
    assert PriceRecompute.objects.get().from_time == earlier_hour()


@pytest.mark.parametrize(("overrides", "field"), [
    ({"usd_per_million": "-1"}, "usd_per_million"),
    ({"usd_per_million": "0.1234567"}, "usd_per_million"),
    ({"token_kind": "audio"}, "token_kind"),
    ({"model": ""}, "model"),
    ({"effective_from": "next tuesday"}, "effective_from"),
])
def test_the_page_shows_bad_input_next_to_its_field(engineer, overrides, field):
    response = client_for(engineer).post(reverse("analytics_price_add"), price_post(**overrides))
    assert response.status_code == 400
    assert f'data-field="{field}"' in response.content.decode()
    assert not ModelPrice.objects.exists()


def test_an_engineer_requests_a_recompute_from_the_page(engineer):
    response = client_for(engineer).post(reverse("analytics_recompute"),
                                         {"model": "", "from_time": earlier_hour().strftime("%Y-%m-%dT%H:%M")},
                                         follow=True)
    assert response.status_code == 200
    assert "Recompute requested for every model" in page_text(response)
    assert PriceRecompute.objects.get().model == ""


def test_a_reader_posting_to_the_page_gets_403_and_nothing_is_saved(platform_user):
    client = client_for(platform_user)
    response = client.post(reverse("analytics_price_add"), price_post())
    assert response.status_code == 403
    assert "data engineers" in page_text(response)
    response = client.post(reverse("analytics_recompute"), {"from_time": earlier_hour().strftime("%Y-%m-%dT%H:%M")})
    assert response.status_code == 403
    assert not ModelPrice.objects.exists() and not PriceRecompute.objects.exists()


def test_the_pages_need_sign_in():
    response = Client().get(reverse("analytics_prices"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# --- the API ----------------------------------------------------------------------------------------

def api_body(**overrides) -> dict:
    body = {"model": "gpt-4.1-mini", "token_kind": "input", "usd_per_million": 0.4,
            "effective_from": later_hour().isoformat()}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def test_the_api_adds_and_lists_prices(api_client_for, engineer, platform_user):
    client = api_client_for(engineer)
    response = client.post("/api/v1/prices/", api_body(), format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["price"]["version"] == 1 and body["price"]["usd_per_million"] == "0.400000"
    assert body["price"]["created_by"] == "engineer" and body["recompute"] is None
    client.post("/api/v1/prices/", api_body(model="o4-mini", usd_per_million="1.10"), format="json")

    reader = api_client_for(platform_user)
    listed = reader.get("/api/v1/prices/").json()
    assert [p["model"] for p in listed] == ["o4-mini", "gpt-4.1-mini"]   # newest change first
    only = reader.get("/api/v1/prices/", {"model": "o4-mini"}).json()
    assert [(p["model"], p["usd_per_million"]) for p in only] == [("o4-mini", "1.100000")]


def test_the_api_backdated_price_needs_recompute_true(api_client_for, engineer):
    client = api_client_for(engineer)
    body = api_body(effective_from="2026-03-01T00:00:00Z")
    response = client.post("/api/v1/prices/", body, format="json")
    assert response.status_code == 400
    error = response.json()
    assert error["error"] == "backdated" and list(error["details"]) == ["effective_from"]
    assert "effective_from" in error["message"] and '"recompute": true' in error["message"]
    assert not ModelPrice.objects.exists()

    response = client.post("/api/v1/prices/", {**body, "recompute": True}, format="json")
    assert response.status_code == 201
    assert response.json()["recompute"]["from_time"] == "2026-03-01T00:00:00Z"
    assert response.json()["recompute"]["status"] == "pending"


@pytest.mark.parametrize(("overrides", "field"), [
    ({"usd_per_million": -0.5}, "usd_per_million"),
    ({"usd_per_million": "0.1234567"}, "usd_per_million"),
    ({"usd_per_million": True}, "usd_per_million"),
    ({"usd_per_million": None}, "usd_per_million"),
    ({"token_kind": "reasoning"}, "token_kind"),
    ({"model": ""}, "model"),
    ({"model": None}, "model"),
    ({"model": "gpt\u00a04.1"}, "model"),
    ({"effective_from": "yesterday-ish"}, "effective_from"),
    ({"effective_from": "2026-12-01T10:15:00Z"}, "effective_from"),
])
def test_the_api_refuses_bad_input_naming_the_field(api_client_for, engineer, overrides, field):
    response = api_client_for(engineer).post("/api/v1/prices/", api_body(**overrides), format="json")
    assert response.status_code == 400, response.json()
    error = response.json()
    assert set(error) >= {"error", "message"}
    assert field in error["message"]
    assert list(error["details"]) == [field]
    assert not ModelPrice.objects.exists()


@pytest.mark.parametrize("raw", [b'{"model": "gpt-4.1-mini", ', b"[1, 2]", b'"just text"'])
def test_the_api_refuses_garbage_json_with_400(api_client_for, engineer, raw):
    response = api_client_for(engineer).post("/api/v1/prices/", raw, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"] in {"parse_error", "invalid_body"}
    assert not ModelPrice.objects.exists()


def test_the_api_refuses_readers_with_403_and_saves_nothing(api_client_for, platform_user):
    client = api_client_for(platform_user)
    response = client.post("/api/v1/prices/", api_body(), format="json")
    assert response.status_code == 403 and response.json()["error"] == "forbidden"
    response = client.post("/api/v1/prices/recompute/", {"from_time": "2026-03-01T00:00:00Z"}, format="json")
    assert response.status_code == 403
    assert not ModelPrice.objects.exists() and not PriceRecompute.objects.exists()


def test_the_api_requests_a_recompute(api_client_for, engineer):
    client = api_client_for(engineer)
    response = client.post("/api/v1/prices/recompute/", {"from_time": "2026-03-01T07:30:00Z"}, format="json")
    assert response.status_code == 201
    assert response.json()["model"] == "" and response.json()["from_time"] == "2026-03-01T07:00:00Z"
    response = client.post("/api/v1/prices/recompute/", {"model": "nope", "from_time": "2026-03-01T00:00:00Z"},
                           format="json")
    assert response.status_code == 400 and list(response.json()["details"]) == ["model"]
    response = client.post("/api/v1/prices/recompute/", {}, format="json")
    assert response.status_code == 400 and "from_time" in response.json()["message"]
    assert PriceRecompute.objects.count() == 1


# --- the demo catalog -------------------------------------------------------------------------------

def _demo_models() -> set[str]:
    """Every request and response model the demo sources' sample payloads produce."""
    from contracts.mapping import SourceContext, preview
    from contracts.presets import demo_presets

    found: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("request_model", "response_model") and isinstance(value, str) and value:
                    found.add(value)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for preset in demo_presets():
        for contract in preset["contracts"]:
            for number, version in enumerate(contract["versions"], start=1):
                ctx = SourceContext("src", preset["source"], preset["platform"], "demo", contract["subject"], number,
                                    0, 1)
                for sample in version["samples"]:
                    walk(preview(version["schema"], version["mapping"], sample, ctx).events)
    return found


def test_seed_demo_prices_every_demo_model_from_2026_and_a_second_run_adds_nothing():
    call_command("seed_demo", quiet_keys=True, force=True, stdout=io.StringIO())
    count = ModelPrice.objects.count()
    models = _demo_models()
    assert {"gpt-4.1-mini", "o4-mini"} <= models
    for model in models:
        for kind in ("input", "cached_input", "output"):
            row = selectors.price_in_force(model, kind, timezone.now())
            assert row is not None, (model, kind)
            assert row.effective_from == at(2026, 1, 1)
    assert selectors.price_in_force("gpt-4.1-mini", "output", timezone.now()).usd_per_million == Decimal("1.6")
    assert selectors.price_in_force("o4-mini", "cached_input", timezone.now()).usd_per_million == Decimal("0.275")

    call_command("seed_demo", quiet_keys=True, force=True, stdout=io.StringIO())
    assert ModelPrice.objects.count() == count
    assert not PriceRecompute.objects.exists()
    assert AuditRecord.objects.filter(action="price.seed").count() == count


def test_seed_demo_leaves_a_price_an_engineer_changed_alone():
    call_command("seed_demo", quiet_keys=True, force=True, stdout=io.StringIO())
    demo_engineer = ModelPrice.objects.first().created_by
    services.price_add(actor=demo_engineer, model="gpt-4.1-mini", token_kind="input", usd_per_million="0.35",
                       effective_from=later_hour())
    count = ModelPrice.objects.count()
    call_command("seed_demo", quiet_keys=True, force=True, stdout=io.StringIO())
    assert ModelPrice.objects.count() == count
    assert selectors.price_in_force("gpt-4.1-mini", "input", later_hour()).usd_per_million == Decimal("0.35")
