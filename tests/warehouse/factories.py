"""Canonical events as the mapping engine produces them (from the web-chat preset's samples),
with the identity and lineage a test needs."""

from __future__ import annotations

import copy
import functools

import orjson

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in micros
SECOND = 1_000_000
HOUR = 3600 * SECOND


@functools.lru_cache(maxsize=1)
def _templates() -> tuple[dict, ...]:
    from contracts.mapping import SourceContext, preview
    from contracts.presets import preset_load

    preset = preset_load("web-chat")
    contract = preset["contracts"][0]
    version = contract["versions"][0]
    ctx = SourceContext("src-web-chat", "web-chat", preset["platform"], "support", "web-chat.chat_event", 1,
                        T0, T0 + 500)
    events: list[dict] = []
    for sample in version["samples"]:
        result = preview(version["schema"], version["mapping"], sample, ctx)
        assert not result.errors, result.errors
        events.extend(result.events)
    assert events
    return tuple(events)


def canonical_event(
    event_id: str, *, received_at: int = T0, event_time: int | None = None, shard_id: str = "shardId-000000000000",
    sequence_number: str | None = "100", raw_offset: int = 0, batch_id: str = "ingest-1", template: int = 0,
    **overrides,
) -> dict:
    templates = _templates()
    event = copy.deepcopy(templates[template % len(templates)])
    event["event_id"] = event_id
    event["received_at"] = received_at
    event["ingested_at"] = received_at + 1000
    event["event_time"] = event_time if event_time is not None else received_at - 2 * SECOND
    event["lineage"].update(
        raw_archive_uri=f"file:///archive/{shard_id}/{batch_id}.jsonl.zst", raw_offset=raw_offset, stream="raw-events",
        shard_id=shard_id, sequence_number=sequence_number, batch_id=batch_id,
    )
    event.update(overrides)
    return event


def as_json(events: list[dict]) -> bytes:
    return orjson.dumps(events)


def quarantine_row(reason: str = "schema_violation", **fields) -> dict:
    row = {
        "source": "web-chat", "source_id": "src-web-chat", "contract_subject": "web-chat.chat_event",
        "contract_version": 1, "reason_code": reason, "reason_detail": "field 'type' is required",
        "error_path": "/type", "raw_archive_uri": "file:///archive/x.jsonl.zst", "raw_offset": 3,
        "stream": "raw-events", "shard_id": "shardId-000000000000", "sequence_number": "42",
        "received_at": T0, "payload": {"messageId": "m-1", "text": "hello"},
    }
    row.update(fields)
    return row


#: a dedup window that reaches back to T0, so tests on fixed 2026-01-01 events merge them in the window
TEST_WINDOW_DAYS = 36500


def land_and_merge(conn, events: list[dict] | bytes, batch_id: str = "test", *, quarantine=None) -> object:
    """Land ``events`` on a test channel (a fresh offset token each call) and merge them: what the
    consumer and the merger do, in two calls."""
    import re
    import time

    from warehouse.landing import landing_append, landing_rows_json, merge_channels

    rows = events if isinstance(events, bytes) else orjson.dumps(events)
    channel = "test-" + re.sub(r"[^A-Za-z0-9_-]", "-", batch_id)
    landing_append(conn, channel=channel, offset_token=str(time.time_ns()), rows=landing_rows_json(rows, quarantine),
                   batch_id=batch_id)
    return merge_channels(conn, window_days=TEST_WINDOW_DAYS)
