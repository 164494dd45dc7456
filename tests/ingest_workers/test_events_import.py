"""manage.py events_import: a backfill file of a source's raw payloads goes onto the stream as the collector
puts them; an erased subject's records are dropped and counted (never on the stream nor in the archive), bad
lines are listed by number and reason and never stop the good ones. moto's Kinesis, the embedded warehouse."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import time
import uuid

import orjson
import pytest
from django.core.management import CommandError, call_command

from contracts.presets import preset_load
from ingest_workers import services
from ingest_workers.envelope import envelope_encode
from tests.ingest_workers.test_archive_shredding import (
    PERSON_A,
    PERSON_B,
    archived_bytes,
    erase,
    lineages,
)
from tests.ingest_workers.test_consumer import _direct_write, warehouse_rows

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("keyrings_fresh")]


def chat_payload(person: dict, text: str) -> dict:
    """A web-chat user message as the web SDK sends it (the preset's sample) of this person."""
    sample = copy.deepcopy(preset_load("web-chat")["contracts"][0]["versions"][1]["samples"][1])
    sample.update(messageId=str(uuid.uuid4()), anonymousId=person["anon"], userId=person["user"])
    sample["message"]["id"] = f"wm_{uuid.uuid4().hex[:12]}"
    sample["message"]["text"] = text
    return sample


def test_a_backfill_is_put_on_the_stream_without_the_erased_subject_and_with_its_bad_lines_listed(
        ingest_env, tmp_path, settings):
    erase(PERSON_A)                                   # erased before the backfill comes in
    erased_marker, kept_marker = f"erased-{uuid.uuid4().hex}", f"kept-{uuid.uuid4().hex}"
    big = chat_payload(PERSON_B, "x" * (settings.COLLECTOR_MAX_EVENT_BYTES + 1))
    backfill = tmp_path / "web-chat-backfill.ndjson"
    backfill.write_bytes(b"\n".join([
        orjson.dumps(chat_payload(PERSON_A, erased_marker)),
        orjson.dumps(chat_payload(PERSON_B, kept_marker)),
        b'{"type": "message", "anonymousId": ',          # cut short
        b"",                                              # blank lines are not events
        orjson.dumps(big),
        b"[1, 2]",
    ]) + b"\n")

    out, err = io.StringIO(), io.StringIO()
    call_command("events_import", str(backfill), source="web-chat", stdout=out, stderr=err)

    lines = out.getvalue().splitlines()
    assert lines[0] == "web-chat: read 5, put 1, suppressed 1 (an erased subject's), rejected 3"
    assert lines[1].startswith("  line 3: invalid_json: The line is not valid JSON")
    assert lines[2].startswith("  line 5: event_too_large: The event is ")
    assert lines[3] == "  line 6: not_an_object: An event must be a JSON object, not list."
    assert "line 6: web-chat: read 5, put 1" in err.getvalue()   # progress

    report = services.pipeline_drain()
    assert report.read == 1 and report.quarantined == 0
    assert lineages(PERSON_A["anon"]) == []
    (kept,) = lineages(PERSON_B["anon"])
    assert kept["stream"] and kept["sequence_number"]
    assert erased_marker.encode() not in archived_bytes(ingest_env)


def test_the_report_as_json_and_an_unknown_source(ingest_env, tmp_path):
    backfill = tmp_path / "b.ndjson"
    backfill.write_bytes(orjson.dumps(chat_payload(PERSON_B, "hello")) + b"\nnot json\n")
    out = io.StringIO()
    call_command("events_import", str(backfill), source="web-chat", json=True, stdout=out)
    report = json.loads(out.getvalue())
    assert (report["read"], report["put"], report["suppressed"]) == (2, 1, 0)
    assert [(r["line"], r["error"]) for r in report["rejected"]] == [(2, "invalid_json")]

    with pytest.raises(CommandError, match="Source 'no-such-source' not found. Nothing was imported."):
        call_command("events_import", str(backfill), source="no-such-source", stdout=io.StringIO())
    assert services.pipeline_drain().read == 1      # only the first import's record


def unmappable_payload(person: dict, text: str) -> dict:
    """The person's message in a shape the current contracts cannot map (an old backfill's)."""
    payload = chat_payload(person, text)
    payload["type"] = "no-such-type"
    payload["timestamp"] = "not a time"
    return payload


def quarantined_text() -> str:
    return orjson.dumps(warehouse_rows("SELECT TO_JSON(PAYLOAD) AS P FROM RAW.QUARANTINE")).decode()


def test_an_erased_subjects_line_the_contracts_cannot_map_is_not_put(ingest_env, tmp_path):
    # review r5 H1: it used to be put, quarantined by the worker and kept in clear in RAW.QUARANTINE
    erase(PERSON_A)
    erased_marker, kept_marker = f"erased-{uuid.uuid4().hex}", f"kept-{uuid.uuid4().hex}"
    backfill = tmp_path / "old-shape.ndjson"
    backfill.write_bytes(orjson.dumps(unmappable_payload(PERSON_A, erased_marker)) + b"\n"
                         + orjson.dumps(unmappable_payload(PERSON_B, kept_marker)) + b"\n")
    out = io.StringIO()
    call_command("events_import", str(backfill), source="web-chat", stdout=out, stderr=io.StringIO())
    assert out.getvalue().splitlines()[0] == "web-chat: read 2, put 1, suppressed 1 (an erased subject's), rejected 0"

    report = services.pipeline_drain()
    assert report.read == 1 and report.quarantined == 1          # only B's line reached the worker
    quarantined = quarantined_text()
    assert kept_marker in quarantined
    assert erased_marker not in quarantined and PERSON_A["anon"] not in quarantined
    assert erased_marker.encode() not in archived_bytes(ingest_env)


def test_an_erased_subjects_record_the_worker_quarantines_is_dropped_not_kept_in_clear(ingest_env):
    # review r5 H1, the live path: a record no event is mapped from carries her identifiers all the same
    erase(PERSON_A)
    erased_marker, kept_marker = f"erased-{uuid.uuid4().hex}", f"kept-{uuid.uuid4().hex}"
    _direct_write([("one-partition", envelope_encode(source="web-chat", payload=unmappable_payload(person, text),
                                                     received_at=time.time_ns() // 1000, channel="direct"))
                   for person, text in ((PERSON_A, erased_marker), (PERSON_B, kept_marker))])
    report = services.pipeline_drain()
    assert (report.read, report.quarantined, report.suppressed) == (2, 1, 1)
    assert report.suppressed_per_source == {"web-chat": 1}
    quarantined = quarantined_text()
    assert kept_marker in quarantined
    assert erased_marker not in quarantined and PERSON_A["anon"] not in quarantined
    stored = archived_bytes(ingest_env)
    assert erased_marker.encode() not in stored and stored.count(b'"suppressed":true') == 1


def test_the_leaves_of_a_payload_name_its_subjects_as_every_kind_and_slack_pairs():
    from deletion.suppression import payload_leaf_subjects

    found = payload_leaf_subjects({"team_id": "T01", "event": {"user": "U02", "text": "Mail Me@Example.com "},
                                   "ids": ["anon-9"], "n": 3, "kept_as_text": '{"anonymousId": "anon-7"}'})
    assert {"anonymous_id:anon-9", "device_id:anon-9", "platform_user_id:T01:U02", "anonymous_id:anon-7",
            "email_sha256:" + hashlib.sha256(b"mail me@example.com").hexdigest()} <= found
    assert not any(s.endswith(":3") for s in found)


def test_a_line_nested_254_levels_is_refused_and_the_others_are_put(ingest_env, tmp_path):
    # review r5 M1: the envelope adds a level; orjson refused it in the middle of a chunk (a bare TypeError)
    backfill = tmp_path / "deep.ndjson"
    backfill.write_bytes(orjson.dumps(chat_payload(PERSON_B, "ok")) + b"\n"
                         + b'{"a":' * 254 + b"1" + b"}" * 254 + b"\n"
                         + orjson.dumps(chat_payload(PERSON_B, "ok too")) + b"\n")
    out = io.StringIO()
    call_command("events_import", str(backfill), source="web-chat", stdout=out, stderr=io.StringIO())
    assert out.getvalue().splitlines() == [
        "web-chat: read 3, put 2, suppressed 0 (an erased subject's), rejected 1",
        "  line 2: too_deep: The event is nested too deeply (over 250 levels).",
    ]
    assert services.pipeline_drain().read == 2


def test_a_line_far_over_the_limit_is_refused_unread_and_the_next_line_is_put(ingest_env, tmp_path, settings):
    # review r5 L5: a file without newlines used to be read whole before the size check
    from ingest_workers.events_import import IMPORT_LINE_READ_FACTOR

    limit = IMPORT_LINE_READ_FACTOR * settings.COLLECTOR_MAX_EVENT_BYTES
    backfill = tmp_path / "long.ndjson"
    backfill.write_bytes(b'[{"a": "' + b"x" * (3 * limit) + b'"}]\n' + orjson.dumps(chat_payload(PERSON_B, "after")))
    out = io.StringIO()
    call_command("events_import", str(backfill), source="web-chat", stdout=out, stderr=io.StringIO())
    assert out.getvalue().splitlines() == [
        "web-chat: read 2, put 1, suppressed 0 (an erased subject's), rejected 1",
        f"  line 1: event_too_large: The line is over {limit} bytes; the limit is "
        f"{settings.COLLECTOR_MAX_EVENT_BYTES}.",
    ]
    assert services.pipeline_drain().read == 1
