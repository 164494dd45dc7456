"""A deletion ticket removes the person's rows from the quality checks' failed-row samples: stored masked, they
are the person's rows all the same. Each sampled row keeps the keyed hashes of its identifiers, by which the
platform erasure step (deletion.platform_stores) finds and drops them, counts them and looks again. Real Soda
run on the embedded warehouse, real PostgreSQL."""

from __future__ import annotations

import pytest

from deletion.erasure_types import ErasureSubject, Identifier, IdentifierKind
from deletion.platform_stores import platform_steps, quality_samples_erase
from quality.models import CheckResult
from quality.services import quality_run
from tests.quality.conftest import clean_events, load

pytestmark = pytest.mark.django_db

ERASED, KEPT = "anon-erased-7f3e2a", "anon-kept-91c2b4"


def fax_event(event_id: str, anonymous_id: str, source_id: str, received_at: int) -> dict:
    """An event of an unknown platform (fails invalid:PLATFORM, so it is sampled) of one anonymous visitor."""
    from tests.warehouse.factories import canonical_event

    event = canonical_event(event_id, template=0, source_id=source_id, platform="fax", received_at=received_at)
    event["identifiers"] = {**event["identifiers"], "anonymous_id": anonymous_id, "platform_user_id": None}
    return event


def platform_sample() -> list[dict]:
    return CheckResult.objects.get(check_key="invalid:PLATFORM:").sample


def test_the_erased_persons_sampled_rows_are_removed_and_counted_and_the_others_stay(quality_db, chat_contract):
    source_id = str(chat_contract.source_id)
    events = clean_events(source_id)
    load(quality_db, [*events, fax_event("fax-erased", ERASED, source_id, events[0]["received_at"]),
                      fax_event("fax-kept", KEPT, source_id, events[0]["received_at"])])
    quality_run(tables=["CANONICAL.EVENTS"])
    sample = platform_sample()
    assert sorted(item["row"]["EVENT_ID"] for item in sample) == ["fax-erased", "fax-kept"]
    assert ERASED not in str(sample) and KEPT not in str(sample)      # masked, and only hashes kept
    assert all(item["subjects"] and not any(k.startswith("SUBJECT__") for k in item["row"]) for item in sample)

    subject = ErasureSubject(ticket_ref="DEL-000001", identifiers=(Identifier(IdentifierKind.ANONYMOUS_ID, ERASED),))
    result = quality_samples_erase(subject)
    assert (result.removed, result.remaining) == (1, 0)
    assert result.detail["check_results_changed"] == 1
    assert [item["row"]["EVENT_ID"] for item in platform_sample()] == ["fax-kept"]

    again = quality_samples_erase(subject)                              # idempotent: nothing left to remove
    assert (again.removed, again.remaining) == (0, 0)
    assert "platform.quality_samples" in [step.name for step in platform_steps()]


def test_a_sample_stored_without_hashes_is_matched_by_an_unmasked_identifier(quality_db, chat_contract):
    source_id = str(chat_contract.source_id)
    events = clean_events(source_id)
    load(quality_db, [*events, fax_event("fax-erased", ERASED, source_id, events[0]["received_at"])])
    quality_run(tables=["CANONICAL.EVENTS"])
    result = CheckResult.objects.get(check_key="invalid:PLATFORM:")
    # as a sample written before samples kept hashes, with an identifier in a column the masking left alone
    result.sample = [{"source_id": source_id, "row": {"EVENT_ID": "fax-erased", "NOTE": f"seen as {ERASED}"}}]
    result.save(update_fields=["sample"])

    erased = quality_samples_erase(ErasureSubject(ticket_ref="DEL-000002",
                                                  identifiers=(Identifier(IdentifierKind.ANONYMOUS_ID, ERASED),)))
    assert (erased.removed, erased.remaining) == (1, 0) and platform_sample() == []


def test_the_sample_lookup_compiles_on_sqlite_the_embedded_defaults_portal_database():
    """`make run` keeps the portal on SQLite, which has no JSON `contains` lookup: the candidate query failed
    there with NotSupportedError and every deletion ticket of the embedded default failed at this step."""
    from django.db.backends.sqlite3.base import DatabaseWrapper

    from deletion.platform_stores import _sampled_results

    sqlite = DatabaseWrapper({"NAME": ":memory:", "ENGINE": "django.db.backends.sqlite3", "TIME_ZONE": None,
                              "OPTIONS": {}, "CONN_MAX_AGE": 0, "CONN_HEALTH_CHECKS": False, "AUTOCOMMIT": True,
                              "ATOMIC_REQUESTS": False, "USER": "", "PASSWORD": "", "HOST": "", "PORT": "",
                              "TEST": {}}, alias="sqlite-check")
    sql, _ = _sampled_results().query.get_compiler(connection=sqlite).as_sql()
    assert "quality_checkresult" in sql


def test_an_unmasked_value_the_database_stores_escaped_is_found_removed_and_verified(quality_db, chat_contract):
    """A text search of the stored sample misses a value stored escaped (a quote on PostgreSQL, any non-ASCII
    character on SQLite): the step reported removed 0, remaining 0, its verification rerunning the same search."""
    from deletion.platform_stores import _sample_items_remaining

    source_id = str(chat_contract.source_id)
    events = clean_events(source_id)
    load(quality_db, [*events, fax_event("fax-erased", ERASED, source_id, events[0]["received_at"])])
    quality_run(tables=["CANONICAL.EVENTS"])
    odd = 'anon-"zoë"-\\7f'
    result = CheckResult.objects.get(check_key="invalid:PLATFORM:")
    result.sample = [{"source_id": source_id, "row": {"EVENT_ID": "fax-odd", "NOTE": f"seen as {odd}"}}]
    result.save(update_fields=["sample"])
    subject = ErasureSubject(ticket_ref="DEL-000003", identifiers=(Identifier(IdentifierKind.ANONYMOUS_ID, odd),))

    assert _sample_items_remaining(set(), subject) == 1             # the verification sees it
    erased = quality_samples_erase(subject)
    assert (erased.removed, erased.remaining) == (1, 0) and platform_sample() == []
