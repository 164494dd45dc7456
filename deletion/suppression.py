"""The suppression list: keyed hashes of erased subjects' identifiers, and of their conversations (the
``conversation`` subjects of ``ingest_workers.archive_crypto``, added by the ``archive_conversations`` step).

New events carrying any of them (an event without identifiers: in an erased conversation) are dropped at
the worker (``ingest_workers.services``: counted per source as ``suppressed``; not landed, and archived
as a line without its record), and re-drives, replays (``suppression_filter``) and imports
(``ingest_workers.events_import``) skip them. Workers keep the list as an in-memory set of hashes
(``deletion.subject_keys.SubjectKeyring``), refreshed when ``ErasureGeneration`` moves: one set lookup per
identifier per event, nothing at all while the list is empty.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

import orjson
from django.db import transaction

from deletion.erasure_types import ErasureSubject, IdentifierKind, StoreResult
from deletion.subject_keys import archive_keyring, erasure_generation_bump, subject_hash_of
from ingest_workers.archive_crypto import SUBJECT_KINDS, event_subjects

STORE = "suppression list"


def subject_id_keys(subject: ErasureSubject) -> list[str]:
    """``kind:value`` of every identifier of the subject that canonical events carry (an e-mail in clear
    is reached through its ``email_sha256``, which the confirmed subject already holds)."""
    keys = {i.id_key for i in subject.identifiers if i.kind.value in SUBJECT_KINDS}
    keys.update(f"{IdentifierKind.EMAIL_SHA256.value}:{i.value}"
                for i in subject.identifiers if i.kind == IdentifierKind.EMAIL_SHA256)
    return sorted(keys)


def suppression_add(*, subject: ErasureSubject) -> int:
    """Add the subject's identifiers to the suppression list (idempotent); returns how many were new.
    Moves the erasure generation so every worker loads them before its next batch."""
    from deletion.models import SuppressedSubject

    rows = [SuppressedSubject(id_hash=subject_hash_of(id_key), kind=id_key.split(":", 1)[0],
                              ticket_ref=subject.ticket_ref[:128]) for id_key in subject_id_keys(subject)]
    with transaction.atomic():
        before = SuppressedSubject.objects.filter(id_hash__in=[r.id_hash for r in rows]).count()
        SuppressedSubject.objects.bulk_create(rows, ignore_conflicts=True)
    erasure_generation_bump()
    return len(rows) - before


def suppression_hashes_add(id_hashes: Iterable[str], *, kind: str, ticket_ref: str) -> int:
    """Add keyed hashes already computed (conversation subjects) to the list (idempotent: a hash another
    ticket listed first keeps that ticket's row); returns how many were new. Moves the erasure generation."""
    from deletion.models import SuppressedSubject

    rows = [SuppressedSubject(id_hash=h, kind=kind, ticket_ref=ticket_ref[:128]) for h in sorted(set(id_hashes))]
    if not rows:
        return 0
    with transaction.atomic():
        before = SuppressedSubject.objects.filter(id_hash__in=[r.id_hash for r in rows]).count()
        SuppressedSubject.objects.bulk_create(rows, ignore_conflicts=True)
    erasure_generation_bump()
    return len(rows) - before


def suppression_step_run(subject: ErasureSubject) -> StoreResult:
    """The erasure step: suppress, then verify every identifier's hash is on the list."""
    from deletion.models import SuppressedSubject

    added = suppression_add(subject=subject)
    hashes = [subject_hash_of(k) for k in subject_id_keys(subject)]
    listed = SuppressedSubject.objects.filter(id_hash__in=hashes).count()
    return StoreResult(
        store=STORE, removed=0,
        verification=f"SELECT COUNT(*) FROM deletion_suppressedsubject WHERE id_hash IN (<{len(hashes)} keyed "  # noqa: S608 - evidence text
                     f"hashes>) -- expected {len(hashes)}",
        remaining=len(hashes) - listed, detail={"identifiers_suppressed": len(hashes), "newly_added": added})


def suppression_filter(events: Iterable[dict]) -> tuple[list[dict], int]:
    """(the events that carry no erased subject's identifier, nor, for an event without identifiers, an
    erased conversation; how many were dropped): for re-drives, replays and imports."""
    keyring = archive_keyring()
    keyring.refresh()
    kept, dropped = [], 0
    for event in events:
        if keyring.suppressed(event_subjects(event)):
            dropped += 1
        else:
            kept.append(event)
    return kept, dropped


#: keys whose string value names a Slack team, and a Slack user: a payload holding both may carry the
#: person's ``platform_user_id`` only as the pair ``T:U`` (the Slack preset's template ``{team_id}:{event.user}``)
_TEAM_KEYS = frozenset(("team_id", "team"))
_USER_KEYS = frozenset(("user", "user_id"))
#: a string literal of JSON text (a payload kept as text: undecodable, or a number beyond 64 bits)
_JSON_STRING = re.compile(rb'"((?:[^"\\]|\\.)*)"')


def payload_leaf_subjects(payload: Any) -> set[str]:
    """Every subject a raw payload the contracts could not map might name: each string leaf as each
    ``SUBJECT_KINDS`` kind (and as ``email_sha256`` of the trimmed lower-cased text when it holds an "@"),
    and every Slack team+user pair as ``platform_user_id:T:U``. A leaf that is JSON text (a record kept as
    text) adds its string literals. Pure; used where a record of an erased person could otherwise be kept in
    clear because no event was mapped from it (quarantine at the worker, imports)."""
    leaves: set[str] = set()
    teams: set[str] = set()
    users: set[str] = set()
    stack = [payload]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, str) and item:
                    if key in _TEAM_KEYS:
                        teams.add(item)
                    elif key in _USER_KEYS:
                        users.add(item)
                stack.append(item)
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str) and value:
            leaves.add(value)
            if value[:1] in ("{", "["):
                leaves.update(_json_string_literals(value))
    subjects = {f"{kind}:{leaf}" for leaf in leaves for kind in SUBJECT_KINDS}
    subjects.update(f"{IdentifierKind.EMAIL_SHA256.value}:"
                    + hashlib.sha256(leaf.strip().lower().encode("utf-8")).hexdigest()
                    for leaf in leaves if "@" in leaf)
    subjects.update(f"{IdentifierKind.PLATFORM_USER_ID.value}:{team}:{user}" for team in teams for user in users)
    return subjects


def _json_string_literals(text: str) -> set[str]:
    out = set()
    for match in _JSON_STRING.finditer(text.encode("utf-8", "surrogatepass")):
        literal = match.group(1)
        try:
            decoded = orjson.loads(b'"' + literal + b'"')
        except orjson.JSONDecodeError:
            decoded = literal.decode("utf-8", "replace")
        if decoded:
            out.add(decoded)
    return out
