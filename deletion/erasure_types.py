"""The shared vocabulary of an erasure: who is erased (the confirmed identifiers of a deletion ticket) and what
each store's step reports (what it removed and the verification it ran afterwards).

A deletion ticket's job (deletion.services) runs an ordered list of ``ErasureStep``; each store's module
provides its own steps (``warehouse_steps()``, ``archive_steps()``, ``platform_steps()``). A step is
idempotent: run again after a crash or a retry, it removes what is left (often nothing) and verifies again.
A step raises ``TransientStoreError`` for a failure worth retrying (warehouse unreachable, a conflict) and
any other exception for one that is not.

Free of Django: the steps' pure parts (which rows, which keys) are tested on plain data.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from collections.abc import Callable, Mapping
from typing import Any


class IdentifierKind(enum.StrEnum):
    """Identifier kinds a ticket may name. Slack ``team:user`` ids and voice account ids are the canonical
    model's ``platform_user_id``; an e-mail address given in clear is reached through ``email_sha256``."""

    EMAIL = "email"
    EMAIL_SHA256 = "email_sha256"
    PLATFORM_USER_ID = "platform_user_id"
    DEVICE_ID = "device_id"
    ANONYMOUS_ID = "anonymous_id"


def email_sha256(address: str) -> str:
    """The canonical model's e-mail hash: SHA-256 of the trimmed, lower-cased address (hex)."""
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()


@dataclasses.dataclass(frozen=True, order=True)
class Identifier:
    kind: IdentifierKind
    value: str

    @property
    def id_key(self) -> str:
        """``kind:value``, as in IDENTITY.IDENTIFIERS.ID_KEY."""
        return f"{self.kind.value}:{self.value}"


@dataclasses.dataclass(frozen=True)
class ErasureSubject:
    """The confirmed subject of a ticket: every identifier to erase (an ``email`` already turned into its
    ``email_sha256`` as well) and the stitched person ids they belong to."""

    ticket_ref: str
    identifiers: tuple[Identifier, ...]
    person_ids: tuple[str, ...] = ()

    def values_of(self, kind: IdentifierKind) -> tuple[str, ...]:
        return tuple(sorted(i.value for i in self.identifiers if i.kind == kind))


@dataclasses.dataclass
class StoreResult:
    """What one step did to one store. ``remaining`` is what its verification found afterwards (0 when done);
    ``verification`` the query or check it ran, as evidence (no personal values in it: use placeholders)."""

    store: str
    removed: int
    verification: str
    remaining: int
    detail: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class TransientStoreError(Exception):
    """A store failed in a way worth retrying with backoff (unreachable, a conflict, a timeout)."""


@dataclasses.dataclass(frozen=True)
class ErasureStep:
    """``name`` is stable (stored with the ticket's progress: a resumed job skips the steps already done);
    ``store`` names the store for the evidence; ``run`` erases and verifies."""

    name: str
    store: str
    run: Callable[[ErasureSubject], StoreResult]


@dataclasses.dataclass(frozen=True)
class LinkedIdentifier:
    identifier: Identifier
    person_id: str
    platforms: tuple[str, ...]
    sources: tuple[str, ...]
    how: str            # e.g. "given", "identified (user.identified event e_…)", "co_occurrence on event e_…"
    given: bool
    group_size: int     # how many persons/identifiers this identifier connects (a shared device: many)


@dataclasses.dataclass(frozen=True)
class Expansion:
    linked: tuple[LinkedIdentifier, ...]
    held_reasons: tuple[str, ...] = ()   # non-empty: a second officer must review (unusually large group)
