"""A ticket's subject on plain data: the identifiers an officer gives, the expansion as stored with the ticket,
the confirmed subject the erasure steps receive, and the hashed form a finished ticket keeps.

Pure: no Django, no network, no clock.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from deletion.erasure_types import (
    ErasureSubject,
    Expansion,
    Identifier,
    IdentifierKind,
    LinkedIdentifier,
    email_sha256,
)

KIND_LABELS = {
    IdentifierKind.EMAIL: "E-mail address",
    IdentifierKind.EMAIL_SHA256: "E-mail SHA-256",
    IdentifierKind.PLATFORM_USER_ID: "Account id (also Slack team:user, voice account)",
    IdentifierKind.DEVICE_ID: "Device id",
    IdentifierKind.ANONYMOUS_ID: "Anonymous id",
}
MAX_VALUE_LENGTH = 512
MAX_IDENTIFIERS = 50
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class IdentifierError(ValueError):
    """An identifier an officer gave that cannot be used; the message names it and says why."""


def identifier_parse(kind: str, value: str) -> Identifier:
    """One given identifier, checked: a known kind, a value of printable text, an e-mail address that looks like
    one, a SHA-256 of 64 hex digits. Surrounding blanks are dropped; an e-mail hash is lower-cased."""
    if kind not in IdentifierKind._value2member_map_:
        known = ", ".join(k.value for k in IdentifierKind)
        raise IdentifierError(f"Unknown identifier kind {kind!r}: use one of {known}.")
    id_kind = IdentifierKind(kind)
    value = (value or "").strip()
    label = KIND_LABELS[id_kind]
    if not value:
        raise IdentifierError(f"{label}: the value is empty.")
    if len(value) > MAX_VALUE_LENGTH:
        raise IdentifierError(f"{label}: the value is longer than {MAX_VALUE_LENGTH} characters.")
    if any(not ch.isprintable() for ch in value):
        raise IdentifierError(f"{label}: the value contains control characters.")
    if id_kind == IdentifierKind.EMAIL and not _EMAIL.match(value):
        raise IdentifierError(f"{label}: {value!r} is not an e-mail address.")
    if id_kind == IdentifierKind.EMAIL_SHA256:
        value = value.lower()
        if not _SHA256.match(value):
            raise IdentifierError(f"{label}: expected 64 hexadecimal digits (SHA-256 of the lower-cased address).")
    return Identifier(id_kind, value)


def identifiers_parse(pairs: Iterable[tuple[str, str]]) -> list[Identifier]:
    """The given identifiers, checked, without duplicates, in the order given; at least one."""
    found: list[Identifier] = []
    for kind, value in pairs:
        identifier = identifier_parse(kind, value)
        if identifier not in found:
            found.append(identifier)
    if not found:
        raise IdentifierError("Give at least one identifier of the person to erase.")
    if len(found) > MAX_IDENTIFIERS:
        raise IdentifierError(f"At most {MAX_IDENTIFIERS} identifiers per ticket; file several tickets.")
    return found


def lookup_identifiers(given: Sequence[Identifier]) -> list[Identifier]:
    """What the identity graph is asked about: the given identifiers, an e-mail address also as its hash
    (the canonical model only keeps the hash)."""
    out = list(given)
    for identifier in given:
        if identifier.kind == IdentifierKind.EMAIL:
            hashed = Identifier(IdentifierKind.EMAIL_SHA256, email_sha256(identifier.value))
            if hashed not in out:
                out.append(hashed)
    return out


def identifier_row(identifier: Identifier) -> dict[str, str]:
    return {"kind": identifier.kind.value, "value": identifier.value}


def identifier_from_row(row: Mapping[str, Any]) -> Identifier:
    return Identifier(IdentifierKind(row["kind"]), str(row["value"]))


def expansion_rows(expansion: Expansion, given: Sequence[Identifier]) -> list[dict[str, Any]]:
    """The expansion as the ticket stores it (JSON): one row per linked identifier, the given ones first.
    A given identifier the graph does not know is listed too (it is still erased where it appears)."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for linked in expansion.linked:
        key = linked.identifier.id_key
        if key in seen:
            continue
        seen.add(key)
        rows.append({**identifier_row(linked.identifier), "id_key": key, "person_id": linked.person_id,
                     "platforms": list(linked.platforms), "sources": list(linked.sources), "how": linked.how,
                     "given": linked.given or linked.identifier in given, "group_size": linked.group_size})
    for identifier in lookup_identifiers(given):
        if identifier.id_key not in seen:
            seen.add(identifier.id_key)
            rows.append({**identifier_row(identifier), "id_key": identifier.id_key, "person_id": "",
                         "platforms": [], "sources": [], "how": "given; not found in the identity graph",
                         "given": True, "group_size": 0})
    rows.sort(key=lambda r: (not r["given"], r["kind"], r["value"]))
    return rows


def linked_from_row(row: Mapping[str, Any]) -> LinkedIdentifier:
    return LinkedIdentifier(identifier=identifier_from_row(row), person_id=row.get("person_id", ""),
                            platforms=tuple(row.get("platforms", ())), sources=tuple(row.get("sources", ())),
                            how=row.get("how", ""), given=bool(row.get("given")),
                            group_size=int(row.get("group_size", 1)))


def confirmed_subject(ticket_ref: str, rows: Sequence[Mapping[str, Any]], removed: Iterable[str]) -> ErasureSubject:
    """What the steps erase: every expansion row not removed by the officer (an e-mail address also as its
    hash), and the stitched persons those rows belong to."""
    removed_keys = set(removed)
    identifiers: set[Identifier] = set()
    person_ids: set[str] = set()
    for row in rows:
        if row["id_key"] in removed_keys:
            continue
        identifier = identifier_from_row(row)
        identifiers.update(lookup_identifiers([identifier]))
        if row.get("person_id"):
            person_ids.add(row["person_id"])
    return ErasureSubject(ticket_ref=ticket_ref, identifiers=tuple(sorted(identifiers)),
                          person_ids=tuple(sorted(person_ids)))


def identifier_hash(id_key: str, *, key: bytes) -> str:
    """How a finished ticket keeps an identifier: HMAC-SHA-256 (hex) of ``kind:value`` under the platform's
    subject-hash key (``SUBJECT_HASH_SECRET``), matchable to a later request for the same identifier by the
    platform, never readable back. Keyed: a plain SHA-256 of an e-mail address or an account id is reversed
    with a dictionary of candidates."""
    return hmac.new(key, id_key.encode(), hashlib.sha256).hexdigest()


#: clear identifiers, and the officer's free-text reason for a removal (it may quote the person: the evidence
#: keeps it)
_CLEAR_FIELDS = ("value", "id_key", "person_id", "reason")


def rows_hashed(rows: Sequence[Mapping[str, Any]], *, key: bytes) -> list[dict[str, Any]]:
    """``rows`` with each clear identifier (value, id_key, person id) replaced by its keyed hash and a removal's
    reason dropped; the kind, platforms, sources and how it was linked stay (they name no one)."""
    out = []
    for row in rows:
        hashed = {k: v for k, v in row.items() if k not in _CLEAR_FIELDS}
        if "value" in row:
            hashed["value_hash"] = identifier_hash(f"{row['kind']}:{row['value']}", key=key)
        if "id_key" in row:
            hashed["id_key_hash"] = identifier_hash(str(row["id_key"]), key=key)
        if row.get("person_id"):
            hashed["person_id_hash"] = identifier_hash(f"person_id:{row['person_id']}", key=key)
        if "reason" in row:
            hashed["reason"] = "(kept in the evidence)"
        out.append(hashed)
    return out
