"""The raw envelope: what collectors (and backend services writing to the stream directly) put on
Kinesis, one record per event. Pure: no Django, no network, no clock.

    {"v": 1,                      # envelope format version
     "source": "web-chat",        # the source's name (required)
     "contract": "chat_event",    # optional: the event stream (subject = "<source>.<contract>");
                                  #   needed only when the source has more than one contract
     "received_at": 1767225600000000,   # collector clock, UTC microseconds (required)
     "request_id": "9f1c…",       # the HTTP request (or producer batch) it arrived in
     "channel": "batch",          # batch | slack | voice | direct
     "payload": {…}}              # the event exactly as the source sent it (a JSON object)

Records are JSON (orjson), at most 1 MB each (Kinesis' limit); collectors refuse payloads over 64 KB.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

ENVELOPE_VERSION = 1
CHANNELS = frozenset({"batch", "slack", "voice", "direct"})
#: channels only the collectors write: they have refused integers beyond 64 bits already (json_numbers)
COLLECTOR_CHANNELS = frozenset({"batch", "slack", "voice"})
MAX_PAYLOAD_BYTES = 64 * 1024
#: received_at must be UTC microseconds between 2000-01-01 and 2100-01-01: outside that, a direct
#: writer used another unit (nanoseconds from time.time_ns() are the usual mistake) or a broken clock.
RECEIVED_AT_MIN, RECEIVED_AT_MAX = 946_684_800_000_000, 4_102_444_800_000_000


def received_at_problem(value: int) -> str:
    """Why a received_at integer is not plausible UTC microseconds (for the quarantine reason)."""
    for unit, scale in (("nanoseconds", 1000), ("milliseconds", 1 / 1000), ("seconds", 1 / 1_000_000)):
        if RECEIVED_AT_MIN <= value / scale < RECEIVED_AT_MAX:
            return (f"The envelope's 'received_at' ({value}) looks like {unit}; it must be UTC microseconds "
                    f"(e.g. time.time_ns() // 1000).")
    return (f"The envelope's 'received_at' ({value}) is not a time between 2000 and 2100 in UTC microseconds.")


class EnvelopeError(ValueError):
    """A stream record that is not a usable raw envelope; `.reason` is a quarantine reason code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclasses.dataclass(frozen=True, slots=True)
class RawEnvelope:
    source: str
    received_at: int
    payload: dict
    request_id: str = ""
    channel: str = "direct"
    contract: str | None = None


def envelope_encode(
    *, source: str, payload: Any, received_at: int, request_id: str = "", channel: str = "batch",
    contract: str | None = None,
) -> bytes:
    record: dict[str, Any] = {"v": ENVELOPE_VERSION, "source": source, "received_at": received_at,
                              "request_id": request_id, "channel": channel, "payload": payload}
    if contract:
        record["contract"] = contract
    return orjson.dumps(record)


def envelope_decode(data: bytes) -> RawEnvelope:
    """Decode one stream record; raises EnvelopeError('undecodable' | 'invalid_envelope' | 'oversize')."""
    try:
        record = orjson.loads(data)
    except orjson.JSONDecodeError as err:
        raise EnvelopeError("undecodable", f"Not JSON (or not UTF-8): {err}") from err
    if not isinstance(record, dict):
        raise EnvelopeError("invalid_envelope", "The record is not a JSON object.")
    source, received_at, payload = record.get("source"), record.get("received_at"), record.get("payload")
    if not isinstance(source, str) or not source:
        raise EnvelopeError("invalid_envelope", "The envelope has no 'source' (a source name).")
    if not isinstance(received_at, int) or isinstance(received_at, bool) or received_at <= 0:
        raise EnvelopeError("invalid_envelope", "The envelope's 'received_at' must be UTC microseconds.")
    if not RECEIVED_AT_MIN <= received_at < RECEIVED_AT_MAX:
        raise EnvelopeError("invalid_envelope", received_at_problem(received_at))
    if not isinstance(payload, dict):
        raise EnvelopeError("invalid_envelope", "The envelope's 'payload' must be a JSON object.")
    contract = record.get("contract")
    channel = record.get("channel") or "direct"
    return RawEnvelope(
        source=source, received_at=received_at, payload=payload,
        request_id=str(record.get("request_id") or ""), channel=channel if channel in CHANNELS else "direct",
        contract=contract if isinstance(contract, str) and contract else None,
    )
