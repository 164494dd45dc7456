"""What a failed-row sample keeps of a row's subject: the keyed hashes of its identifiers, so an erasure finds the
subject's sampled rows although every identifier in them is masked (deletion.platform_stores). Pure: no Django.

A sample query also selects the table's identifier columns under ``SUBJECT__<column>`` (``sample_sql``); those
never reach the stored row: they become ``subjects``, HMAC-SHA-256 of ``kind:value`` under the platform's
subject-hash key (``SUBJECT_HASH_SECRET``, the hashes of the suppression list and the archive keys), from which
no identifier can be recovered without the secret. A row whose own columns are identifiers (a check's query may
return them) is hashed from those too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ingest_workers.archive_crypto import subject_hash

#: identifier columns of the canonical and curated tables, by the kind of identifier they hold
SUBJECT_COLUMNS: dict[str, str] = {
    "EMAIL_SHA256": "email_sha256", "PLATFORM_USER_ID": "platform_user_id", "DEVICE_ID": "device_id",
    "ANONYMOUS_ID": "anonymous_id", "PREVIOUS_ANONYMOUS_ID": "anonymous_id", "PERSON_ID": "person_id",
}
SUBJECT_ALIAS_PREFIX = "SUBJECT__"


def subject_columns_of(columns: Iterable[str]) -> tuple[str, ...]:
    """The identifier columns among a table's columns, in SUBJECT_COLUMNS order."""
    present = set(columns)
    return tuple(c for c in SUBJECT_COLUMNS if c in present)


def sample_row_subjects(row: Mapping[str, Any], *, hash_key: bytes) -> tuple[dict[str, Any], list[str]]:
    """(the row without its ``SUBJECT__`` columns, the keyed hashes of every identifier it holds)."""
    shown: dict[str, Any] = {}
    hashes: set[str] = set()
    for name, value in row.items():
        column = name.removeprefix(SUBJECT_ALIAS_PREFIX)
        kind = SUBJECT_COLUMNS.get(column.upper())
        if kind is not None and isinstance(value, str) and value:
            hashes.add(subject_hash(hash_key, f"{kind}:{value}"))
        if not name.startswith(SUBJECT_ALIAS_PREFIX):
            shown[name] = value
    return shown, sorted(hashes)


def subject_id_key_hashes(id_keys: Iterable[str], person_ids: Iterable[str], *, hash_key: bytes) -> set[str]:
    """The hashes a sample of this subject carries: its identifiers (``kind:value``) and its persons."""
    return ({subject_hash(hash_key, k) for k in id_keys}
            | {subject_hash(hash_key, f"person_id:{p}") for p in person_ids})
