"""Erasure steps for what the platform keeps outside the warehouse and the raw archive.

- **Sample payloads** saved with contract versions (PostgreSQL, contracts app): a sample that mentions one of
  the subject's identifiers is dropped from every version.
- **Cache entries** (Redis in production; the portal's cache): the collectors' rate-limit windows and Slack
  retry markers are keyed by source and event id, but any entry whose key or stored value holds one of the
  subject's identifiers is deleted, and the analytics dashboard's cached aggregates are dropped so the next
  view reads the recomputed curated tables.

- **Quality failed-row samples** (PostgreSQL, quality.CheckResult.sample): stored masked, but they are the
  subject's rows all the same; each sampled row keeps the keyed hashes of its identifiers (quality.samples), by
  which the subject's rows are dropped from every sample (and by an identifier value left unmasked).

Each step removes, then verifies by looking again (``remaining`` must be 0). Quarantine rows live in the
warehouse (deletion.warehouse_erasure erases them); the platform writes no export files (evidence downloads are
streamed, not stored).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from deletion.erasure_types import ErasureStep, ErasureSubject, IdentifierKind, StoreResult

#: a value this short is only matched whole (a short id inside free text would hit unrelated words)
MIN_SUBSTRING_MATCH = 6
DASHBOARD_CACHE_PREFIX = "analytics-dashboard:"


def _leaves(payload: Any) -> Iterator[str]:
    if isinstance(payload, dict):
        for value in payload.values():
            yield from _leaves(value)
    elif isinstance(payload, list):
        for value in payload:
            yield from _leaves(value)
    elif isinstance(payload, str):
        yield payload
    elif isinstance(payload, int | float) and not isinstance(payload, bool):
        yield str(payload)


def payload_mentions(payload: Any, target: ErasureSubject) -> bool:
    """Whether a JSON payload holds one of the subject's identifiers: a value equal to one, a text containing
    one (e-mail addresses in free text), or both halves of a Slack ``team:user`` id (Slack sends them apart)."""
    leaves = set(_leaves(payload))
    if not leaves:
        return False
    for identifier in target.identifiers:
        value = identifier.value
        if value in leaves:
            return True
        if len(value) >= MIN_SUBSTRING_MATCH and any(value in leaf for leaf in leaves):
            return True
        if identifier.kind == IdentifierKind.PLATFORM_USER_ID and ":" in value:
            team, _, user = value.partition(":")
            if team and user and team in leaves and user in leaves:
                return True
    for person_id in target.person_ids:
        if person_id in leaves:
            return True
    return False


def raw_mentions(data: bytes, target: ErasureSubject) -> bool:
    """Whether raw bytes (a cache key or its stored value, pickled or not) contain an identifier of the
    subject, as UTF-8. An identifier shorter than ``MIN_RAW_MATCH`` characters matches only quoted (``"42"``, as
    JSON writes it): bare, a short id occurs inside unrelated entries, and deleting those would erase other
    people's data."""
    needles = [i.value for i in target.identifiers] + list(target.person_ids)
    for needle in needles:
        if not needle:
            continue
        raw = needle.encode()
        if len(needle) >= MIN_RAW_MATCH:
            if raw in data:
                return True
        elif b'"' + raw + b'"' in data:
            return True
    return False


#: the warehouse's free-text matching uses the same floor (deletion.warehouse_erasure: 8 characters)
MIN_RAW_MATCH = 8


# --- sample payloads -------------------------------------------------------------------------------------

def sample_payloads_erase(target: ErasureSubject) -> StoreResult:
    from contracts import selectors as contract_selectors
    from contracts import services as contract_services

    def matches(payload: Any) -> bool:
        return payload_mentions(payload, target)

    removed = contract_services.sample_payloads_erase(matches=matches, ticket_ref=target.ticket_ref)
    remaining = contract_selectors.sample_payloads_matching(matches)
    return StoreResult(
        store="Portal database: contract version sample payloads", removed=removed, remaining=remaining,
        verification="every sample payload of every contract version checked again for the subject's "
                     "identifiers (equal value, value inside text, or both halves of a Slack team:user id)",
        detail={"unit": "sample payloads"})


# --- quality failed-row samples -------------------------------------------------------------------------

def _sample_item_matches(item: Any, hashes: set[str], target: ErasureSubject) -> bool:
    if not isinstance(item, dict):
        return False
    return bool(hashes.intersection(item.get("subjects") or ())) or payload_mentions(item.get("row"), target)


def _sampled_results() -> Any:
    """Every check result that keeps a failed-row sample. Scanned whole, row by row (``_sample_item_matches``),
    not prefiltered by the sample's text: a text search misses values the database stores escaped (a ``"``
    or ``\\`` on PostgreSQL; any non-ASCII character on SQLite, which stores JSON with ``ensure_ascii``), and
    a verification that reran the removal's own filter could not see what that filter missed. The table holds
    one row per check, and this is an erasure step, not a hot path."""
    from quality.models import CheckResult

    return CheckResult.objects.exclude(sample__isnull=True).only("id", "sample")


def _sample_items_remaining(hashes: set[str], target: ErasureSubject) -> int:
    """How many sampled rows, in every check result, are still the subject's (the step's verification)."""
    return sum(1 for result in _sampled_results().iterator()
               for item in result.sample or [] if _sample_item_matches(item, hashes, target))


def quality_samples_erase(target: ErasureSubject) -> StoreResult:
    """Drop the subject's rows from the quality checks' failed-row samples (masked, but the subject's rows all
    the same): matched by the keyed hashes of their identifiers the sample keeps (quality.samples), or by an
    identifier value left unmasked; then look again."""
    from django.conf import settings
    from django.db import transaction

    from deletion.suppression import subject_id_keys
    from ingest_workers.archive_crypto import subject_hash_key
    from quality.samples import subject_id_key_hashes

    hashes = subject_id_key_hashes(subject_id_keys(target), target.person_ids,
                                   hash_key=subject_hash_key(settings.SUBJECT_HASH_SECRET))
    holding = [result.pk for result in _sampled_results().iterator()
               if any(_sample_item_matches(item, hashes, target) for item in result.sample or [])]
    removed = results = 0
    with transaction.atomic():  # only the results that hold the subject's rows are locked, then matched again
        for result in _sampled_results().filter(pk__in=holding).select_for_update(of=("self",)):
            kept = [item for item in result.sample or [] if not _sample_item_matches(item, hashes, target)]
            if len(kept) != len(result.sample or []):
                removed += len(result.sample) - len(kept)
                results += 1
                result.sample = kept
                result.save(update_fields=["sample"])
    remaining = _sample_items_remaining(hashes, target)
    return StoreResult(
        store="Portal database: quality check failed-row samples", removed=removed, remaining=remaining,
        verification="every failed-row sample of every check result checked again, row by row (one of the "
                     "subject's keyed identifier hashes in the row's subjects, equal value, or value inside text)",
        detail={"unit": "sampled rows", "check_results_changed": results})


# --- cache entries -------------------------------------------------------------------------------------

class _CacheEntries:
    """Every entry of the portal's default cache as raw bytes: Redis through SCAN (django's RedisCache), the
    per-process memory cache of the embedded default by its dict. Django's cache API cannot list keys, hence
    the backend's own client."""

    def __init__(self) -> None:
        from django.core.cache import cache

        self.cache = cache
        self.redis = None
        backend = getattr(cache, "_cache", None)
        if backend is not None and hasattr(backend, "get_client"):
            self.redis = backend.get_client(write=True)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        if self.redis is not None:
            # only the cache's own keys (":1:…"): the broker may share the Redis database, and its lists and
            # hashes are not cache entries
            for key in self.redis.scan_iter(match=self.cache.make_key("*"), count=1000):
                value = self.redis.get(key)
                yield (key if isinstance(key, bytes) else str(key).encode()), (value or b"")
            return
        store = getattr(self.cache, "_cache", {})
        for key, value in list(store.items()):
            yield str(key).encode(), value if isinstance(value, bytes) else repr(value).encode()

    def delete(self, raw_key: bytes) -> None:
        if self.redis is not None:
            self.redis.delete(raw_key)
            return
        store = getattr(self.cache, "_cache", {})
        store.pop(raw_key.decode(), None)
        getattr(self.cache, "_expire_info", {}).pop(raw_key.decode(), None)


def cache_entries_erase(target: ErasureSubject) -> StoreResult:
    entries = _CacheEntries()
    removed = dashboards = 0
    for key, value in entries.items():
        if raw_mentions(key, target) or raw_mentions(value, target):
            entries.delete(key)
            removed += 1
        elif DASHBOARD_CACHE_PREFIX.encode() in key:
            entries.delete(key)  # aggregates that counted the person: the next view reads the recomputed tables
            dashboards += 1
    remaining = sum(1 for key, value in entries.items() if raw_mentions(key, target) or raw_mentions(value, target))
    return StoreResult(
        store="Portal cache (Redis; memory in the embedded default): rate limits, collector markers, cached pages",
        removed=removed, remaining=remaining,
        verification="SCAN of every cache key; GET of each; count of keys whose name or value contains one of the "
                     "subject's identifiers",
        detail={"unit": "cache entries", "dashboard_entries_dropped": dashboards})


def platform_steps() -> list[ErasureStep]:
    return [
        ErasureStep(name="platform.sample_payloads", store="Portal database: contract sample payloads",
                    run=sample_payloads_erase),
        ErasureStep(name="platform.quality_samples", store="Portal database: quality failed-row samples",
                    run=quality_samples_erase),
        ErasureStep(name="platform.cache", store="Portal cache", run=cache_entries_erase),
    ]
