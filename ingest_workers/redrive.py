"""Re-drive quarantined records through the pipeline, typically after a contract fix.

``quarantine_redrive(actor=, quarantine_ids=)`` (data engineers only), per chunk of up to 500 rows:

1. **claim** the rows with a conditional UPDATE of RAW.QUARANTINE (status ``new`` and not claimed by
   another re-drive in the last 10 minutes), so two engineers re-driving the same rows at once land
   them once; rows already re-driven, resolved, busy or unknown are reported, not touched;
2. **read the original stream record**: the archived line the row's raw pointer names
   (``archive_read_line``), else, when that line is gone, the payload the row kept;
3. run it through ``process_batch`` with the **current** contract index (so the approved fix
   applies) and the original shard id and sequence number (lineage stays true to the raw record);
4. **land** the valid events on a landing channel of their own, ``redrive-<uuid>`` (the uuid derives
   from the request id and chunk, so a retried task lands on the same channel); the events keep the
   original stream record's shard and sequence number, so a retry landing them again counts once;
5. **mark** each row: ``redriven`` with ``{"outcome": "landed", "events": n, …}`` (or ``skipped``
   when the contract now ignores the record on purpose), or, when it still fails, it **stays
   quarantined**: status ``new``, reason code, detail, path and contract version updated to the new
   failure, REDRIVEN_AT stamped and ``{"outcome": "still_quarantined", …}`` with the reasons it had
   before in ``history``. A still-failing record is never dropped;
6. ask the **merger** for one run (it holds the merger lease; when another run holds it, that one
   merges these rows within seconds), and write one audit record for the request.

A crash after landing and before marking leaves the rows claimed; the same request (same
``request_id``, as a Celery retry sends) lands again on its channel and marks them. After 10
minutes another request may take them over: its copy is the same stream record, so the merge
neither adds a row nor counts a duplicate.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import time
import uuid
from collections.abc import Iterable
from typing import Any

import orjson
from django.core.exceptions import PermissionDenied
from django.db import transaction

from ingest_workers.archive_crypto import ArchiveRecordShredded
from ingest_workers.envelope import envelope_encode
from ingest_workers.pipeline import RawRecord, process_batch
from portal.roles import is_data_engineer

__all__ = ["RedriveOutcome", "RedriveResult", "quarantine_redrive", "INLINE_MAX", "REDRIVE_CHUNK"]

#: rows per landing batch (process_batch is fastest around 1,000; re-drives also read the archive)
REDRIVE_CHUNK = 500
#: selections up to this size the portal re-drives while the person waits; larger ones go to Celery
INLINE_MAX = 500
#: a claim older than this is considered abandoned (its worker died) and may be taken over
CLAIM_STALE_SECONDS = 600
HISTORY_MAX = 20
DETAIL_KEPT = 1000
EVENT_IDS_KEPT = 20
#: bounded merges run per re-drive at most (a backlog bigger than this is the periodic merge's job)
MERGE_SECONDS = 10.0
#: uuid5 namespace of re-drive batch ids (uuid5(NAMESPACE_URL, "https://chatorbit.io/ns/redrive-batch"))
REDRIVE_BATCH_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://chatorbit.io/ns/redrive-batch")
_IDS = "SELECT value::VARCHAR FROM TABLE(FLATTEN(INPUT => PARSE_JSON(%(ids)s)))"


@dataclasses.dataclass
class RedriveOutcome:
    """What happened to one selected quarantine row."""

    quarantine_id: str
    #: landed | skipped | still_quarantined | not_found | already_redriven | resolved | busy
    #: | erased (the archived record belongs to an erased subject: unreadable, its key is shredded)
    #: | suppressed (its events carry an erased subject's identifier: dropped, not landed)
    outcome: str
    events: int = 0
    reason_code: str | None = None
    read_from: str | None = None  # archive | stored_payload


@dataclasses.dataclass
class RedriveResult:
    request_id: str
    requested: int
    outcomes: list[RedriveOutcome] = dataclasses.field(default_factory=list)
    batch_ids: list[str] = dataclasses.field(default_factory=list)
    merged: bool = False
    merge_note: str = ""

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes if o.outcome == outcome)

    @property
    def events(self) -> int:
        return sum(o.events for o in self.outcomes)

    @property
    def landed(self) -> int:
        return self.count("landed")

    @property
    def still_quarantined(self) -> int:
        return self.count("still_quarantined")

    @property
    def not_redriven(self) -> dict[str, int]:
        skipped = ("not_found", "already_redriven", "resolved", "busy")
        return {name: self.count(name) for name in skipped if self.count(name)}

    def summary(self) -> str:
        """One sentence for the person who asked."""
        parts = [f"{self.landed} record{'s' if self.landed != 1 else ''} landed ({self.events} events)"]
        if self.count("skipped"):
            parts.append(f"{self.count('skipped')} now skipped on purpose by the contract")
        if self.still_quarantined:
            parts.append(f"{self.still_quarantined} still failing (kept in quarantine, reason updated)")
        if self.count("erased"):
            parts.append(f"{self.count('erased')} records unreadable: erased subject")
        if self.count("suppressed"):
            parts.append(f"{self.count('suppressed')} dropped: they carry an erased subject's identifier")
        labels = {"not_found": "not found", "already_redriven": "already re-driven", "resolved": "resolved",
                  "busy": "being re-driven by someone else"}
        for name, n in self.not_redriven.items():
            parts.append(f"{n} left alone ({labels[name]})")
        text = "Re-drive done: " + "; ".join(parts) + "."
        if self.landed and not self.merged:
            text += f" {self.merge_note}"
        return text

    def as_audit_dict(self) -> dict:
        ids = [o.quarantine_id for o in self.outcomes]
        return {
            "request_id": self.request_id, "requested": self.requested, "batch_ids": self.batch_ids,
            "landed": self.landed, "events": self.events, "skipped": self.count("skipped"),
            "still_quarantined": self.still_quarantined, "not_redriven": self.not_redriven,
            "erased": self.count("erased"), "suppressed": self.count("suppressed"),
            "merged": self.merged, "quarantine_ids": ids[:1000], "more_ids": max(0, len(ids) - 1000),
        }


@dataclasses.dataclass
class QuarantineRedrive:
    """The audited object: one re-drive request."""

    pk: str
    requested: int

    def __str__(self) -> str:
        return f"re-drive of {self.requested} quarantined record{'s' if self.requested != 1 else ''}"


def quarantine_redrive(
    *, actor: Any, quarantine_ids: Iterable[str], request_id: str | None = None,
) -> RedriveResult:
    """Re-run the selected quarantined records through the pipeline with today's approved contracts.

    Data engineers only (``PermissionDenied`` otherwise). Raises ``TransientError`` when the
    warehouse is unreachable (retry with the same ``request_id``; nothing is lost or doubled).
    """
    from ingest_workers.services import TransientError, contract_index_current, warehouse_ready
    from warehouse.connection import WarehouseUnavailable, warehouse_connection

    if not is_data_engineer(actor):
        raise PermissionDenied("Only data engineers may re-drive quarantined records.")
    ids = sorted({str(i).strip()[:200] for i in quarantine_ids if str(i).strip()})
    result = RedriveResult(request_id=request_id or uuid.uuid4().hex, requested=len(ids))
    if not ids:
        return result
    by = actor.get_username() if hasattr(actor, "get_username") else str(actor)
    try:
        with warehouse_connection(workload="ingest") as conn:
            warehouse_ready(conn)
            index = contract_index_current(force=True)  # a contract approved a second ago must count
            for number, start in enumerate(range(0, len(ids), REDRIVE_CHUNK)):
                _redrive_chunk(conn, ids[start:start + REDRIVE_CHUNK], index=index, result=result, by=by,
                               batch_id=_batch_id(result.request_id, number))
            if result.batch_ids:
                result.merged, result.merge_note = _merge(conn)
    except WarehouseUnavailable as err:
        if result.outcomes:  # part of it happened: that part is on the record too
            _audit(actor, result, error=str(err))
        raise TransientError(f"warehouse unavailable during re-drive: {err}") from err
    _audit(actor, result)
    return result


def _audit(actor: Any, result: RedriveResult, *, error: str | None = None) -> None:
    from portal.services import audit_record_write

    after = result.as_audit_dict()
    if error:
        after["error"] = error[:500]
    with transaction.atomic():
        audit_record_write(actor=actor, action="quarantine.redrive",
                           obj=QuarantineRedrive(result.request_id, result.requested), after=after)


def _batch_id(request_id: str, chunk: int) -> str:
    return f"redrive:{uuid.uuid5(REDRIVE_BATCH_NAMESPACE, f'{request_id}/{chunk}')}"


def _merge(conn: Any) -> tuple[bool, str]:
    """One run of the merger (bounded, and never beside another: the merger lease); when another run
    holds the lease or the warehouse is away, that run or the next periodic one merges the rows."""
    from ingest_workers import services
    from warehouse.connection import WarehouseError

    later = "The events are landed; the merger moves them into CANONICAL.EVENTS within seconds."
    try:
        merged = services.warehouse_merge_run(max_seconds=MERGE_SECONDS)
    except WarehouseError:
        return False, later
    if "busy" in merged:
        return False, later
    return True, ""


def _now_text() -> str:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _micros(value: Any) -> int | None:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return (value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
    return None


# --- one chunk ---------------------------------------------------------------------------------------

def _redrive_chunk(conn: Any, ids: list[str], *, index: Any, result: RedriveResult, by: str, batch_id: str) -> None:
    token = batch_id  # the claim token: unique per request and chunk, the same on a retry
    rows = _claim(conn, ids, token=token, by=by)
    claimed = []
    found = set()
    for row in rows:
        found.add(row["quarantine_id"])
        state = _row_state(row, token)
        if state == "claimed":
            claimed.append(row)
        elif state == "done":
            done = row["redrive_result"]
            result.outcomes.append(RedriveOutcome(row["quarantine_id"], str(done.get("outcome")),
                                                  events=int(done.get("events") or 0),
                                                  reason_code=done.get("reason_code"), read_from=done.get("read_from")))
            if done.get("batch_id") and done["batch_id"] not in result.batch_ids:
                result.batch_ids.append(done["batch_id"])
        else:
            result.outcomes.append(RedriveOutcome(row["quarantine_id"], state, reason_code=row.get("reason_code")))
    result.outcomes.extend(RedriveOutcome(i, "not_found") for i in ids if i not in found)
    if not claimed:
        return
    progress = {"landed": False}
    try:
        _run_claimed(conn, claimed, index=index, result=result, by=by, batch_id=batch_id, progress=progress)
    except BaseException:
        if not progress["landed"]:
            _release(conn, token)  # nothing landed: give the rows back now rather than in 10 minutes
        raise


def _run_claimed(
    conn: Any, claimed: list[dict], *, index: Any, result: RedriveResult, by: str, batch_id: str, progress: dict,
) -> None:

    from ingest_workers.archive import ArchiveReader

    now_micros = time.time_ns() // 1000
    reader = ArchiveReader()
    # one stream record per raw pointer (two rows of the same record are re-driven once)
    records: dict[tuple[str, str, str], tuple[RawRecord, tuple[str, int], str]] = {}
    erased: set[tuple[str, str, str]] = set()  # archived records of erased subjects: never re-driven
    for row in claimed:
        key = _record_key(row)
        if key not in records and key not in erased:
            original = _original_record(row, reader)
            if original is None:
                erased.add(key)
            else:
                records[key] = original
    events: list[dict] = []
    failures: dict[tuple[str, str, str], Any] = {}
    produced: dict[tuple[str, str, str], list[dict]] = {}
    for stream in sorted({key[0] for key in records}):
        keys = [key for key in records if key[0] == stream]
        batch = process_batch([records[k][0] for k in keys], index, stream=stream, batch_id=batch_id,
                              archive_locations=[records[k][1] for k in keys], now_micros=now_micros)
        events.extend(batch.events)
        for ev in batch.events:
            lin = ev["lineage"]
            produced.setdefault((stream, lin["shard_id"], lin["sequence_number"]), []).append(ev)
        for q in batch.quarantine:
            failures[(stream, q.shard_id, q.sequence_number)] = q
    suppressed = _suppressed_records(produced, reader.keyring)
    if suppressed:
        events = [ev for ev in events if _event_key(ev) not in suppressed]

    if events:
        from warehouse.landing import landing_append, landing_rows_json

        # a fresh offset token per attempt, so the merger takes this landing even when the channel
        # merged an earlier attempt's (copies of one stream record count once whatever it lands)
        landing_append(conn, channel=_channel(batch_id), offset_token=str(time.time_ns()),
                       rows=landing_rows_json(orjson.dumps(events)), batch_id=batch_id)
        progress["landed"] = True
        result.batch_ids.append(batch_id)

    now = _now_text()
    updates = []
    for row in claimed:
        key = _record_key(row)
        if key in erased or key in suppressed:
            # the subject was erased: nothing of it comes back, and the row is not offered again
            outcome = "erased" if key in erased else "suppressed"
            updates.append({"id": row["quarantine_id"], "status": "resolved", "failed": False, "result": {
                "attempt_id": batch_id, "by": by, "at": now, "outcome": outcome, "events": 0,
                "history": _history(row, now), "attempts": _attempts(row) + 1}})
            result.outcomes.append(RedriveOutcome(row["quarantine_id"], outcome))
            continue
        read_from = records[key][2]
        base = {"attempt_id": batch_id, "by": by, "at": now, "read_from": read_from, "history": _history(row, now)}
        if key in failures:
            q = failures[key]
            updates.append({"id": row["quarantine_id"], "status": "new", "failed": True,
                            "reason_code": q.reason_code, "reason_detail": q.reason_detail,
                            "error_path": q.error_path, "contract_subject": q.contract_subject,
                            "contract_version": q.contract_version,
                            "result": {**base, "outcome": "still_quarantined", "reason_code": q.reason_code,
                                       "contract_subject": q.contract_subject,
                                       "contract_version": q.contract_version, "error_path": q.error_path,
                                       "attempts": _attempts(row) + 1}})
            result.outcomes.append(RedriveOutcome(row["quarantine_id"], "still_quarantined",
                                                  reason_code=q.reason_code, read_from=read_from))
            continue
        evs = produced.get(key, [])
        contract = (evs[0].get("contract") or {}) if evs else {}
        outcome = "landed" if evs else "skipped"
        updates.append({"id": row["quarantine_id"], "status": "redriven", "failed": False, "result": {
            **base, "outcome": outcome, "events": len(evs), "batch_id": batch_id if evs else None,
            "event_ids": [ev["event_id"] for ev in evs][:EVENT_IDS_KEPT],
            "contract_subject": contract.get("name"), "contract_version": contract.get("version"),
            "attempts": _attempts(row) + 1}})
        result.outcomes.append(RedriveOutcome(row["quarantine_id"], outcome, events=len(evs), read_from=read_from))
    _finish(conn, updates, token=batch_id, now=now)


def _event_key(ev: dict) -> tuple[str, str, str]:
    lin = ev["lineage"]
    return (lin["stream"], lin["shard_id"], lin["sequence_number"])


def _suppressed_records(produced: dict[tuple[str, str, str], list[dict]], keyring: Any) -> set[tuple[str, str, str]]:
    """The records whose events carry an identifier of an erased subject (deletion.suppression)."""
    from ingest_workers.archive_crypto import event_subjects

    return {key for key, evs in produced.items()
            if keyring.suppressed(s for ev in evs for s in event_subjects(ev))}


def _channel(batch_id: str) -> str:
    return "redrive-" + batch_id.removeprefix("redrive:")


def _release(conn: Any, token: str) -> None:
    """Undo this attempt's claims (best effort: when the warehouse is gone, they lapse in 10 minutes)."""
    from warehouse.ddl import QUARANTINE, check_identifier, qualified

    try:
        cur = conn.cursor()
        try:
            cur.execute(f"UPDATE {qualified(check_identifier(conn.database), QUARANTINE)}"  # noqa: S608
                        " SET REDRIVE_RESULT = REDRIVE_RESULT:previous"
                        " WHERE REDRIVE_RESULT:attempt_id::VARCHAR = %(token)s"
                        " AND REDRIVE_RESULT:outcome::VARCHAR = 'in_progress'", {"token": token})
        finally:
            cur.close()
    except Exception:  # noqa: BLE001,S110 - the original error is the one to report
        pass


def _record_key(row: dict) -> tuple[str, str, str]:
    return (row.get("stream") or "", row.get("shard_id") or "", row.get("sequence_number") or row["quarantine_id"])


def _row_state(row: dict, token: str) -> str:
    claim = row.get("redrive_result") if isinstance(row.get("redrive_result"), dict) else {}
    if claim.get("attempt_id") == token:
        # ours: claimed now, or finished by an earlier try of this request (a task retry)
        return "claimed" if claim.get("outcome") == "in_progress" else "done"
    if row.get("status") == "redriven":
        return "already_redriven"
    if row.get("status") == "resolved":
        return "resolved"
    return "busy"


def _claim(conn: Any, ids: list[str], *, token: str, by: str) -> list[dict]:
    """Claim the rows that are free; return every selected row (claimed or not) as it is now."""
    from warehouse.connection import warehouse_errors
    from warehouse.ddl import QUARANTINE, check_identifier, qualified
    from warehouse.load import warehouse_query

    table = qualified(check_identifier(conn.database), QUARANTINE)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    stale = (now - dt.timedelta(seconds=CLAIM_STALE_SECONDS)).isoformat(sep=" ", timespec="microseconds")
    params = {"ids": orjson.dumps(ids).decode(), "token": token, "by": by, "stale": stale,
              "now": now.isoformat(sep=" ", timespec="microseconds")}
    with warehouse_errors():
        cur = conn.cursor()
        try:
            cur.execute(
                f"UPDATE {table} SET REDRIVE_RESULT = OBJECT_CONSTRUCT('outcome', 'in_progress', 'attempt_id', "  # noqa: S608
                "%(token)s, 'by', %(by)s, 'claimed_at', %(now)s, 'previous', REDRIVE_RESULT)"
                f" WHERE QUARANTINE_ID IN ({_IDS}) AND STATUS = 'new'"
                # not already this request's (claimed, or finished by an earlier try of it) ...
                " AND COALESCE(REDRIVE_RESULT:attempt_id::VARCHAR, '') <> %(token)s"
                # ... and not claimed by another request, unless that claim was abandoned
                " AND (COALESCE(REDRIVE_RESULT:outcome::VARCHAR, '') <> 'in_progress'"
                " OR COALESCE(REDRIVE_RESULT:claimed_at::VARCHAR, '') < %(stale)s)", params)
        finally:
            cur.close()
    rows = warehouse_query(conn, f"SELECT * FROM {table} WHERE QUARANTINE_ID IN ({_IDS})", {"ids": params["ids"]})  # noqa: S608
    return [{k.lower(): v for k, v in row.items()} for row in rows]


def _finish(conn: Any, updates: list[dict], *, token: str, now: str) -> None:
    """Write each row's outcome in one UPDATE (only rows this attempt still holds)."""
    from warehouse.connection import warehouse_errors
    from warehouse.ddl import QUARANTINE, check_identifier, qualified

    if not updates:
        return
    table = qualified(check_identifier(conn.database), QUARANTINE)
    failed = "src.value:failed::BOOLEAN"
    columns = [("REASON_CODE", "reason_code", "VARCHAR"), ("REASON_DETAIL", "reason_detail", "VARCHAR"),
               ("ERROR_PATH", "error_path", "VARCHAR"), ("CONTRACT_SUBJECT", "contract_subject", "VARCHAR"),
               ("CONTRACT_VERSION", "contract_version", "NUMBER(38,0)")]
    sets = [f"{col} = CASE WHEN {failed} THEN src.value:{key}::{sql_type} ELSE tgt.{col} END"
            for col, key, sql_type in columns]
    sql = (f"UPDATE {table} tgt SET STATUS = src.value:status::VARCHAR, REDRIVE_RESULT = src.value:result, "  # noqa: S608
           f"REDRIVEN_AT = %(now)s::TIMESTAMP_NTZ(6), {', '.join(sets)}"
           " FROM (SELECT value FROM TABLE(FLATTEN(INPUT => PARSE_JSON(%(rows)s)))) src"
           " WHERE tgt.QUARANTINE_ID = src.value:id::VARCHAR"
           " AND tgt.REDRIVE_RESULT:attempt_id::VARCHAR = %(token)s")
    with warehouse_errors():
        cur = conn.cursor()
        try:
            cur.execute(sql, {"rows": orjson.dumps(updates, default=str).decode(), "now": now, "token": token})
        finally:
            cur.close()


def _previous(row: dict) -> dict:
    """The row's re-drive result before this attempt claimed it (skipping abandoned claims)."""
    result = row.get("redrive_result") if isinstance(row.get("redrive_result"), dict) else {}
    while isinstance(result, dict) and result.get("outcome") == "in_progress":
        result = result.get("previous")
    return result if isinstance(result, dict) else {}


def _attempts(row: dict) -> int:
    return int(_previous(row).get("attempts") or 0)


def _history(row: dict, now: str) -> list[dict]:
    """The reasons the record had, oldest first: earlier history plus the reason it has until now."""
    earlier = list(_previous(row).get("history") or [])
    detail = row.get("reason_detail") or ""
    earlier.append({"reason_code": row.get("reason_code"), "contract_subject": row.get("contract_subject"),
                    "contract_version": row.get("contract_version"), "error_path": row.get("error_path"),
                    "reason_detail": detail[:DETAIL_KEPT], "until": now})
    return earlier[-HISTORY_MAX:]


# --- the original stream record --------------------------------------------------------------------

def _original_record(row: dict, reader: Any) -> tuple[RawRecord, tuple[str, int], str] | None:
    """(the stream record, its archive location, "archive" | "stored_payload"), or None when the
    archived record belongs to an erased subject; ``reader`` is the chunk's ``ArchiveReader`` (each
    archive object fetched once)."""
    uri = row.get("raw_archive_uri") or ""
    offset = int(row.get("raw_offset") or 0)
    shard, sequence = row.get("shard_id") or "", row.get("sequence_number") or ""
    received = _micros(row.get("received_at")) or 1
    if uri:
        try:
            line = reader.read_line(uri, offset)
        except ArchiveRecordShredded:
            return None  # an erased subject's record: no fallback to the payload the row kept
        except Exception:  # noqa: BLE001 - gone, unreadable or elsewhere: fall back to the stored payload
            line = None
        if isinstance(line, dict) and str(line.get("seq")) == sequence and line.get("shard") == shard:
            data = _line_bytes(line)
            if data is not None:
                arrival = line.get("arrival") if isinstance(line.get("arrival"), int) else received
                return RawRecord(shard, sequence, data, arrival), (uri, offset), "archive"
    return RawRecord(shard, sequence, _stored_bytes(row, received), received), (uri, offset), "stored_payload"


def _line_bytes(line: dict) -> bytes | None:
    if "record" in line:
        try:
            return orjson.dumps(line["record"])
        except TypeError:  # orjson's encode error: an integer beyond 64 bits (archive_line_parse kept it
            try:           # exact) or nesting orjson does not write; Python's writer keeps both as sent
                return json.dumps(line["record"], separators=(",", ":"), ensure_ascii=False).encode()
            except (TypeError, ValueError, RecursionError):
                return None
    if isinstance(line.get("record_b64"), str):
        return base64.b64decode(line["record_b64"])
    return None


def _stored_bytes(row: dict, received_micros: int) -> bytes:
    """Rebuild the stream record from what the quarantine row kept (see pipeline.QuarantineRow.payload)."""
    payload = row.get("payload")
    if isinstance(payload, str):  # stored as text when it was not JSON
        return payload.encode("utf-8", "replace")
    if isinstance(payload, dict) and set(payload) <= {"raw_text", "raw_base64", "truncated_from"}:
        if isinstance(payload.get("raw_text"), str):
            return payload["raw_text"].encode("utf-8")
        if isinstance(payload.get("raw_base64"), str):
            return base64.b64decode(payload["raw_base64"])
    if row.get("reason_code") == "invalid_envelope" or not row.get("source"):
        return orjson.dumps(payload)  # the whole decoded record was kept
    return envelope_encode(source=row["source"], payload=payload, received_at=received_micros, channel="direct")
