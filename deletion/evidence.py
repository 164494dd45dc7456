"""The evidence record of a finished ticket, built from plain data (pure: no Django, no clock)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from deletion.erasure_types import ErasureSubject

EVIDENCE_FORMAT = "chatorbit-deletion-evidence/1"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def evidence_record(*, ticket: Mapping[str, Any], subject: ErasureSubject, steps: Sequence[Mapping[str, Any]],
                    removals: Sequence[Mapping[str, Any]], finished_at: datetime) -> dict[str, Any]:
    """Every store the job touched, what each step removed, the verification it ran afterwards and what it
    found (``remaining``), with the timestamps; the identifiers erased in clear (the only place a done ticket
    keeps them), and those the officer removed from the expansion with their reasons.

    ``ticket`` holds reference, regulation, requester_reference, received_at, due_at, filed_by, confirmed_by,
    confirmed_at, reviewed_by, reviewed_at, started_at (datetimes or None); ``steps`` name, store, attempts,
    started_at, finished_at, result (a StoreResult as a dict).
    """
    stores = []
    for step in steps:
        result = step.get("result") or {}
        stores.append({
            "step": step["name"], "store": result.get("store") or step["store"],
            "removed": result.get("removed"), "verification": result.get("verification"),
            "remaining": result.get("remaining"), "detail": result.get("detail") or {},
            "attempts": step.get("attempts"), "started_at": _iso(step.get("started_at")),
            "finished_at": _iso(step.get("finished_at")),
        })
    due = ticket["due_at"]
    return {
        "format": EVIDENCE_FORMAT,
        "ticket": ticket["reference"],
        "regulation": ticket["regulation"],
        "requester_reference": ticket["requester_reference"],
        "received_at": _iso(ticket["received_at"]),
        "due_at": _iso(due),
        "filed_by": ticket.get("filed_by"),
        "reviewed_by": ticket.get("reviewed_by"), "reviewed_at": _iso(ticket.get("reviewed_at")),
        "confirmed_by": ticket.get("confirmed_by"), "confirmed_at": _iso(ticket.get("confirmed_at")),
        "started_at": _iso(ticket.get("started_at")),
        "finished_at": _iso(finished_at),
        "within_sla": finished_at <= due,
        "identifiers_erased": [i.id_key for i in subject.identifiers],
        "person_ids": list(subject.person_ids),
        "removed_from_expansion": [dict(r) for r in removals],
        "held_for_review": list(ticket.get("held_reasons") or []),
        "stores": stores,
        "all_verified_zero_remaining": all(s["remaining"] == 0 for s in stores),
    }
