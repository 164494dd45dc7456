"""Importing a backfill: a file of one source's raw payloads, one JSON object a line (NDJSON), put on the stream
the way the collector puts them (``manage.py events_import``; docs/ingestion.md).

Each line gets the collector's up-front checks (UTF-8, JSON, an object, no integer beyond 64 bits, at most
COLLECTOR_MAX_EVENT_BYTES) and becomes one raw envelope of the source (channel as its collector would: batch,
slack or voice; ``request_id`` names the import). A refused line is listed with its number and reason and the
import goes on. Before a chunk is put, its records are mapped with the current contracts (the pure pipeline,
nothing landed) and a record whose events carry an erased subject's identifier is dropped and counted
(``deletion.suppression``, as re-drives and replays skip them): it never reaches the stream nor the archive.
A record the contracts cannot map yet is put all the same: the worker quarantines it, as it would the
collector's.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from ingest_workers import json_numbers
from ingest_workers.envelope import envelope_encode
from ingest_workers.partition import partition_key

#: lines mapped, filtered and put together
IMPORT_CHUNK = 500
#: a put may wait this long for the stream (per chunk) before the import stops
IMPORT_PUT_DEADLINE_SECONDS = 60.0
UTF8_BOM = b"\xef\xbb\xbf"


class ImportStopped(Exception):
    """The stream refused a chunk: the report says which lines were put before it (``--start-line`` resumes)."""

    def __init__(self, message: str, report: ImportReport):
        super().__init__(message)
        self.report = report


@dataclasses.dataclass
class ImportReport:
    source: str
    request_id: str
    read: int = 0
    put: int = 0
    suppressed: int = 0
    #: (line number, reason code, message) of every refused line
    rejected: list[tuple[int, str, str]] = dataclasses.field(default_factory=list)
    #: the last line handled (put, dropped or refused)
    last_line: int = 0

    def summary(self) -> str:
        return (f"{self.source}: read {self.read}, put {self.put}, suppressed {self.suppressed} "
                f"(an erased subject's), rejected {len(self.rejected)}")

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "request_id": self.request_id, "read": self.read, "put": self.put,
                "suppressed": self.suppressed, "last_line": self.last_line,
                "rejected": [{"line": n, "error": code, "message": msg} for n, code, msg in self.rejected]}


def import_line_check(line: bytes, *, max_event_bytes: int) -> tuple[dict | None, str, str]:
    """(the payload, "", "") for a line the collector would accept, else (None, reason code, message). Pure."""
    if line.startswith(UTF8_BOM):
        line = line[len(UTF8_BOM):]
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as err:
        return None, "invalid_utf8", f"The line is not valid UTF-8 (byte {err.start})."
    try:
        payload = orjson.loads(line)
    except orjson.JSONDecodeError as err:
        return None, "invalid_json", f"The line is not valid JSON: {err}."
    if not isinstance(payload, dict):
        return None, "not_an_object", f"An event must be a JSON object, not {type(payload).__name__}."
    problem = json_numbers.big_integer_problem(line)
    if problem is not None:
        return None, json_numbers.NUMBER_OUT_OF_RANGE, problem
    try:
        size = len(orjson.dumps(payload))
    except orjson.JSONEncodeError:
        return None, "too_deep", "The event is nested too deeply (over 250 levels)."
    if size > max_event_bytes:
        return None, "event_too_large", f"The event is {size} bytes as JSON; the limit is {max_event_bytes}."
    return payload, "", ""


def source_channel(source: Any) -> str:
    """The envelope channel the source's own collector writes (its payloads are read accordingly)."""
    if source.kind == "webhook":
        return "slack" if source.platform == "slack" else "voice"
    return "batch"


def events_import(
    lines: Iterable[bytes], *, source_name: str, contract: str | None = None, start_line: int = 1,
    progress: Callable[[ImportReport], None] | None = None, producer: Any = None,
) -> ImportReport:
    """Import the lines (numbered from 1; those before ``start_line`` are skipped). Raises NotFound for an
    unknown source, ValueError for a disabled one, ImportStopped when the stream stays unavailable."""
    from django.conf import settings

    from contracts.selectors import source_by_name_or_id
    from ingest_workers.stream import StreamProducer, StreamUnavailable

    source = source_by_name_or_id(source_name)
    if not source.is_active:
        raise ValueError(f"Source '{source.name}' is disabled: enable it before importing its events.")
    request_id = f"import-{uuid.uuid4().hex}"
    report = ImportReport(source=source.name, request_id=request_id)
    producer = producer or StreamProducer(deadline_seconds=IMPORT_PUT_DEADLINE_SECONDS)
    common = {"source": source.name, "request_id": request_id, "channel": source_channel(source),
              "contract": contract}
    pending: list[tuple[int, dict]] = []

    def flush() -> None:
        if not pending:
            return
        received_at = time.time_ns() // 1000
        records = [(number, partition_key(source.name, payload),
                    envelope_encode(payload=payload, received_at=received_at, **common))
                   for number, payload in pending]
        dropped = _suppressed_lines(records, now_micros=received_at)
        kept = [(key, data) for number, key, data in records if number not in dropped]
        try:
            if kept:
                producer.put(kept)
        except StreamUnavailable as err:
            raise ImportStopped(f"The stream is unavailable ({err.message}); lines {pending[0][0]}-"
                                f"{pending[-1][0]} were not put: resume with --start-line {pending[0][0]}.",
                                report) from err
        report.put += len(kept)
        report.suppressed += len(dropped)
        report.last_line = max(report.last_line, pending[-1][0])
        pending.clear()
        if progress is not None:
            progress(report)

    for number, raw in enumerate(lines, start=1):
        if number < start_line:
            continue
        line = raw.strip(b" \t\r\n")
        if not line:
            continue
        report.read += 1
        payload, code, message = import_line_check(line, max_event_bytes=settings.COLLECTOR_MAX_EVENT_BYTES)
        if payload is None:
            report.rejected.append((number, code, message))
            report.last_line = number
            continue
        pending.append((number, payload))
        if len(pending) >= IMPORT_CHUNK:
            flush()
    flush()
    return report


def _suppressed_lines(records: list[tuple[int, str, bytes]], *, now_micros: int) -> set[int]:
    """The line numbers whose record maps to an event carrying an erased subject's identifier."""
    from deletion.subject_keys import archive_keyring
    from ingest_workers.archive_crypto import event_subjects
    from ingest_workers.pipeline import RawRecord, process_batch
    from ingest_workers.services import contract_index_current

    keyring = archive_keyring()
    keyring.refresh()
    if not keyring.suppressing:
        return set()  # nobody erased: no mapping needed
    raw = [RawRecord("import", str(number), data, now_micros) for number, _, data in records]
    batch = process_batch(raw, contract_index_current(force=True), stream="import", batch_id="import",
                          archive_locations=[("", 0)] * len(raw), now_micros=now_micros)
    return {int(ev["lineage"]["sequence_number"]) for ev in batch.events
            if keyring.suppressed(event_subjects(ev))}
