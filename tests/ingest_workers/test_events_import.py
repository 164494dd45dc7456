"""manage.py events_import: a backfill file of a source's raw payloads goes onto the stream as the collector
puts them; an erased subject's records are dropped and counted (never on the stream nor in the archive), bad
lines are listed by number and reason and never stop the good ones. moto's Kinesis, the embedded warehouse."""

from __future__ import annotations

import copy
import io
import json
import uuid

import orjson
import pytest
from django.core.management import CommandError, call_command

from contracts.presets import preset_load
from ingest_workers import services
from tests.ingest_workers.test_archive_shredding import (  # noqa: F401 - fixtures
    PERSON_A,
    PERSON_B,
    archived_bytes,
    erase,
    ingest_env,
    keyrings_fresh,
    lineages,
)

pytestmark = pytest.mark.django_db


def chat_payload(person: dict, text: str) -> dict:
    """A web-chat user message as the web SDK sends it (the preset's sample) of this person."""
    sample = copy.deepcopy(preset_load("web-chat")["contracts"][0]["versions"][1]["samples"][1])
    sample.update(messageId=str(uuid.uuid4()), anonymousId=person["anon"], userId=person["user"])
    sample["message"]["id"] = f"wm_{uuid.uuid4().hex[:12]}"
    sample["message"]["text"] = text
    return sample


def test_a_backfill_is_put_on_the_stream_without_the_erased_subject_and_with_its_bad_lines_listed(
        ingest_env, tmp_path, settings):  # noqa: F811 - the fixture
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


def test_the_report_as_json_and_an_unknown_source(ingest_env, tmp_path):  # noqa: F811 - the fixture
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
