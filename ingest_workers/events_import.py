"""Importing a backfill: a file of one source's raw payloads, one JSON object a line (NDJSON), put on the stream
the way the collector puts them (``manage.py events_import``; docs/ingestion.md).

Each line gets the collector's up-front checks (UTF-8, JSON, an object, no integer beyond 64 bits, its
envelope encodable (orjson's nesting limit), at most COLLECTOR_MAX_EVENT_BYTES; a line is read at most
``IMPORT_LINE_READ_FACTOR`` times that limit, the rest of a longer one skipped) and becomes one raw envelope
of the source (channel as its collector would: batch, slack or voice; ``request_id`` names the import). A
refused line is listed with its number and reason and the import goes on. Before a chunk is put, its records
are mapped with the current contracts (the pure pipeline, nothing landed) and a record whose subjects
(``records_subjects``: the worker's rule) include an erased one is dropped and counted
(``deletion.suppression``): it never reaches the stream nor the archive. While the suppression list is not
empty, a line no event was mapped from (the contracts cannot map it yet) is checked by its string leaves
(``deletion.suppression.payload_leaf_subjects``) and dropped the same way if one is an erased identifier;
otherwise it is put and the worker quarantines it, as it would the collector's.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import orjson

from ingest_workers import json_numbers
from ingest_workers.envelope import envelope_encode
from ingest_workers.partition import partition_key

#: lines mapped, filtered and put together
IMPORT_CHUNK = 500
#: a put may wait this long for the stream (per chunk) before the import stops
IMPORT_PUT_DEADLINE_SECONDS = 60.0
UTF8_BOM = b"\xef\xbb\xbf"
#: a line is read at most this many times COLLECTOR_MAX_EVENT_BYTES (its JSON may be longer than the event
#: it decodes to: spaces, escapes); a longer one is skipped unread and refused as ``event_too_large``
IMPORT_LINE_READ_FACTOR = 4


class ImportSourceRefused(ValueError):
    """The source cannot take events (disabled): raised before any line is read."""


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


def import_line_check(line: bytes, *, max_event_bytes: int,
                      envelope: dict[str, Any]) -> tuple[dict | None, bytes, str, str]:
    """(the payload, its stream record, "", "") for a line the collector would accept, else (None, b"",
    reason code, message). ``envelope``: the envelope's fields but the payload. Pure."""
    if line.startswith(UTF8_BOM):
        line = line[len(UTF8_BOM):]
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as err:
        return None, b"", "invalid_utf8", f"The line is not valid UTF-8 (byte {err.start})."
    try:
        payload = orjson.loads(line)
    except orjson.JSONDecodeError as err:
        return None, b"", "invalid_json", f"The line is not valid JSON: {err}."
    if not isinstance(payload, dict):
        return None, b"", "not_an_object", f"An event must be a JSON object, not {type(payload).__name__}."
    problem = json_numbers.big_integer_problem(line)
    if problem is not None:
        return None, b"", json_numbers.NUMBER_OUT_OF_RANGE, problem
    try:  # the envelope adds a level: a payload at orjson's limit encodes alone but not in it
        data = envelope_encode(payload=payload, **envelope)
    except orjson.JSONEncodeError:
        return None, b"", "too_deep", "The event is nested too deeply (over 250 levels)."
    size = len(data) - len(envelope_encode(payload={}, **envelope)) + 2
    if size > max_event_bytes:
        return None, b"", "event_too_large", f"The event is {size} bytes as JSON; the limit is {max_event_bytes}."
    return payload, data, "", ""


def numbered_lines(handle: BinaryIO, *, limit: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number from 1, the line) for each line of a binary file; None for a line longer than
    ``limit`` bytes, whose rest is read and skipped in pieces of ``limit`` (never held whole)."""
    number = 0
    while True:
        piece = handle.readline(limit + 1)
        if not piece:
            return
        number += 1
        if len(piece) <= limit or piece.endswith(b"\n"):
            yield number, piece
            continue
        while piece and not piece.endswith(b"\n"):
            piece = handle.readline(limit)
        yield number, None


def source_channel(source: Any) -> str:
    """The envelope channel the source's own collector writes (its payloads are read accordingly)."""
    if source.kind == "webhook":
        return "slack" if source.platform == "slack" else "voice"
    return "batch"


def events_import(
    handle: BinaryIO, *, source_name: str, contract: str | None = None, start_line: int = 1,
    progress: Callable[[ImportReport], None] | None = None, producer: Any = None,
) -> ImportReport:
    """Import the lines of a binary file (numbered from 1; those before ``start_line`` are skipped). Raises
    NotFound for an unknown source, ImportSourceRefused for a disabled one, ImportStopped when the stream
    stays unavailable."""
    from django.conf import settings

    from contracts.selectors import source_by_name_or_id
    from ingest_workers.stream import StreamProducer, StreamUnavailable

    source = source_by_name_or_id(source_name)
    if not source.is_active:
        raise ImportSourceRefused(f"Source '{source.name}' is disabled: enable it before importing its events.")
    request_id = f"import-{uuid.uuid4().hex}"
    report = ImportReport(source=source.name, request_id=request_id)
    producer = producer or StreamProducer(deadline_seconds=IMPORT_PUT_DEADLINE_SECONDS)
    common = {"source": source.name, "request_id": request_id, "channel": source_channel(source),
              "contract": contract}
    pending: list[tuple[int, dict, bytes]] = []
    max_event_bytes = settings.COLLECTOR_MAX_EVENT_BYTES
    read_limit = IMPORT_LINE_READ_FACTOR * max_event_bytes

    def flush() -> None:
        if not pending:
            return
        records = [(number, partition_key(source.name, payload), data, payload) for number, payload, data in pending]
        dropped = _suppressed_lines(records, now_micros=time.time_ns() // 1000)
        kept = [(key, data) for number, key, data, _ in records if number not in dropped]
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

    for number, raw in numbered_lines(handle, limit=read_limit):
        if number < start_line:
            continue
        checked = _line_read(raw, read_limit=read_limit, max_event_bytes=max_event_bytes, envelope=common)
        if checked is None:
            continue
        report.read += 1
        payload, data, code, message = checked
        if payload is None:
            report.rejected.append((number, code, message))
            report.last_line = number
            continue
        pending.append((number, payload, data))
        if len(pending) >= IMPORT_CHUNK:
            flush()
    flush()
    return report


def _line_read(raw: bytes | None, *, read_limit: int, max_event_bytes: int,
               envelope: dict[str, Any]) -> tuple[dict | None, bytes, str, str] | None:
    """``import_line_check`` of one line read (None: longer than ``read_limit``); None for a blank line."""
    if raw is None:
        return None, b"", "event_too_large", f"The line is over {read_limit} bytes; the limit is {max_event_bytes}."
    line = raw.strip(b" \t\r\n")
    if not line:
        return None
    return import_line_check(line, max_event_bytes=max_event_bytes,
                             envelope={**envelope, "received_at": time.time_ns() // 1000})


def _suppressed_lines(records: list[tuple[int, str, bytes, dict]], *, now_micros: int) -> set[int]:
    """The line numbers of the records the worker would suppress (``records_subjects``: the subjects of a
    record's identified events, else its conversations), and, of the lines no event was mapped from,
    those a string leaf of which is an erased identifier (``payload_leaf_subjects``)."""
    from deletion.subject_keys import archive_keyring
    from deletion.suppression import payload_leaf_subjects
    from ingest_workers.archive_crypto import records_subjects
    from ingest_workers.pipeline import RawRecord, process_batch
    from ingest_workers.services import contract_index_current

    keyring = archive_keyring()
    keyring.refresh()
    if not keyring.suppressing:
        return set()  # nobody erased: no mapping needed
    raw = [RawRecord("import", str(number), data, now_micros) for number, _, data, _ in records]
    batch = process_batch(raw, contract_index_current(force=True), stream="import", batch_id="import",
                          archive_locations=[("", 0)] * len(raw), now_micros=now_micros)
    subjects = records_subjects(batch.events)
    dropped = {int(seq) for seq, found in subjects.items() if keyring.suppressed(found)}
    mapped = {ev["lineage"]["sequence_number"] for ev in batch.events}
    dropped.update(number for number, _, _, payload in records
                   if str(number) not in mapped and keyring.suppressed_uncached(payload_leaf_subjects(payload)))
    return dropped
