"""The quarantine and pipeline pages, and the quarantine re-drive, on the real parts: PostgreSQL, the
embedded warehouse server, moto's Kinesis and the raw archive on disk.

What a person would notice: who sees which records, the filters and counts, that a record's personal
values never reach the page, that a record fixed by a newly approved contract version lands in
CANONICAL.EVENTS exactly once when re-driven (and one that still fails stays quarantined with its new
reason), and that a dead warehouse gives a page that says so instead of a 500.
"""

from __future__ import annotations

import io
import time
import uuid

import orjson
import pytest
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.urls import reverse

from ingest_workers import redrive, services
from ingest_workers.envelope import envelope_encode
from portal.models import AuditRecord

pytestmark = pytest.mark.django_db

SECRET_TEXT = "My flight to Lisbon on the 14th was cancelled, please refund card ending 4242"
SECRET_EMAIL = "maria.santos@example.org"
SECRET_USER = "cust_7781234"
SECRET_ANON = "b7e1f0c2-3d4a-4b5c-8d9e-0f1a2b3c4d5e"
PERSONAL = (SECRET_TEXT, SECRET_EMAIL, SECRET_USER, SECRET_ANON, "Maria Santos")


# --- fixtures and helpers ------------------------------------------------------------------------------

@pytest.fixture
def people(platform_user, engineer, other_platform_user, privacy_user, admin_user, other_team):
    """One user per role, created before the demo seed so the seed reuses them."""
    from contracts.services import source_create

    source_create(actor=other_platform_user, team=other_team, name="voice-lab", platform="voice", kind="sdk")
    return {"platform": platform_user, "engineer": engineer, "other": other_platform_user,
            "privacy": privacy_user, "admin": admin_user}


@pytest.fixture
def env(settings, people, warehouse_server, tmp_path):
    """The demo contracts, this test's own warehouse database and archive folder."""
    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "database": f"T_{uuid.uuid4().hex[:12].upper()}"}
    settings.RAW_ARCHIVE_URL = f"file://{tmp_path}/archive"
    call_command("seed_demo", quiet_keys=True, force=True, stdout=io.StringIO())
    services.contract_index_current(force=True)
    return settings


@pytest.fixture
def stream_env(env, stream):
    return env


def client_for(client, user):
    client.force_login(user)
    return client


def warehouse_rows(sql: str, params=None) -> list[dict]:
    from warehouse.connection import warehouse_connection
    from warehouse.load import warehouse_query

    with warehouse_connection() as conn:
        services.warehouse_ready(conn)
        return [{k.lower(): v for k, v in row.items()} for row in warehouse_query(conn, sql, params)]


def quarantine_rows() -> dict[str, dict]:
    return {r["quarantine_id"]: r for r in warehouse_rows("SELECT * FROM RAW.QUARANTINE")}


def message_payload(*, role="user", text=SECRET_TEXT, timestamp="2026-03-01T09:30:15.250+00:00", message_id=None):
    """A web-chat `message` event as the widget SDK sends it (web-chat.chat_event v2)."""
    return {
        "messageId": message_id or str(uuid.uuid4()), "type": "message", "timestamp": timestamp,
        "sentAt": "2026-03-01T09:30:15.390Z", "anonymousId": SECRET_ANON, "userId": SECRET_USER,
        "sessionId": "ws_01JNB6Q3Z8T4XG7K2M9D5R1VCE", "conversationId": "wc_01JNB6Q9S0B2Y6H8E4P7N3K5TA",
        "context": {"library": {"name": "chatorbit-web", "version": "3.14.2"}, "tenantId": "acme-outdoor",
                    "locale": "en-GB", "timezone": "Europe/London", "userAgent": "Mozilla/5.0 (X11; Linux x86_64)",
                    "page": {"url": "https://shop.example/help", "path": "/help", "title": "Help", "referrer": None},
                    "screen": None, "widget": {"id": "wgt_1", "position": "bottom-right", "theme": None,
                                               "assistant": "Ava"}, "ip": "203.0.113.9", "campaign": None},
        "message": {"id": f"wm_{uuid.uuid4().hex[:10]}", "role": role, "format": "text", "replyTo": None,
                    "model": None, "latencyMs": None, "text": text, "attachments": []},
        "feedback": None, "chat": None, "traits": None,
    }


def quarantine_row(*, source="web-chat", reason="schema_violation", payload=None, **extra) -> dict:
    """A RAW.QUARANTINE row as the pipeline writes it (QuarantineRow's fields)."""
    sequence = str(uuid.uuid4().int)[:20]
    return {"quarantine_id": str(uuid.uuid4()), "source": source, "source_id": None,
            "contract_subject": f"{source}.chat_event" if reason == "schema_violation" else None,
            "contract_version": 2 if reason == "schema_violation" else None, "reason_code": reason,
            "reason_detail": "1 schema error against web-chat.chat_event v2: /message/role: \"robot\" is not a "
                             "symbol of enum MessageRole (allowed: user, assistant, system)",
            "error_path": "/message/role" if reason == "schema_violation" else None,
            "raw_archive_uri": "file:///nowhere/raw/gone.jsonl.zst", "raw_offset": 0, "stream": "raw-events",
            "shard_id": "shardId-000000000000", "sequence_number": sequence, "batch_id": "test-batch",
            "received_at": time.time_ns() // 1000, "payload": payload if payload is not None else message_payload(),
            **extra}


def land_quarantine(rows: list[dict]) -> list[str]:
    from warehouse.connection import warehouse_connection
    from warehouse.landing import landing_append, landing_rows_json, merge_channels

    with warehouse_connection() as conn:
        services.warehouse_ready(conn)
        landing_append(conn, channel=f"test-{uuid.uuid4().hex}", offset_token="1",
                       rows=landing_rows_json(None, orjson.dumps(rows)))
        merge_channels(conn)
    return [row["quarantine_id"] for row in rows]


def put_on_stream(payloads: list[tuple[str, object]]) -> None:
    """Raw envelopes (or raw bytes) straight onto the test's stream, as a backend service may write."""
    from ingest_workers.stream import StreamProducer

    now = time.time_ns() // 1000
    batch = [(uuid.uuid4().hex, p if isinstance(p, bytes) else
              envelope_encode(source=source, payload=p, received_at=now, request_id="test", channel="batch"))
             for source, p in payloads]
    StreamProducer().put(batch)


def approve_web_chat_v3_with_tool_role(platform_user, engineer):
    """The contract fix: a new version whose MessageRole also allows "tool" (backward compatible)."""
    from contracts.models import Contract, VersionStatus
    from contracts.selectors import latest_approved_version
    from contracts.services import contract_version_approve, contract_version_submit

    contract = Contract.objects.get(subject="web-chat.chat_event")
    current = latest_approved_version(contract)
    schema = orjson.loads(current.schema.schema)

    def widen(node):
        if isinstance(node, dict):
            if node.get("type") == "enum" and node.get("name") == "MessageRole":
                node["symbols"] = [*node["symbols"], "tool"]
            for value in node.values():
                widen(value)
        elif isinstance(node, list):
            for value in node:
                widen(value)

    widen(schema)
    version, _ = contract_version_submit(actor=platform_user, contract=contract, schema=schema,
                                         mapping_spec=current.mapping, samples=current.sample_payloads,
                                         change_summary="Tool messages (role: tool).")
    version = contract_version_approve(actor=engineer, version=version, comment="ok")
    assert version.status == VersionStatus.APPROVED
    return version


# --- who sees what, filters, counts ------------------------------------------------------------------

@pytest.fixture
def landed(env):
    rows = [quarantine_row() for _ in range(52)]
    rows += [quarantine_row(reason="mapping_failure", reason_detail="event_time: 'soon' is not an ISO-8601 timestamp",
                            error_path="/timestamp", contract_subject="web-chat.chat_event", contract_version=2)
             for _ in range(2)]
    rows.append(quarantine_row(source="voice-lab", reason="no_approved_contract",
                               reason_detail="The source 'voice-lab' has no approved contract version.",
                               payload={"utterance": "call my sister"}))
    rows.append(quarantine_row(source=None, reason="undecodable", reason_detail="Not JSON (or not UTF-8)",
                               payload={"raw_text": "\u00ff not json"}))
    ids = land_quarantine(rows)
    return {"all": ids, "web": ids[:54], "voice": ids[54], "undecodable": ids[55], "mapping": ids[52:54]}


def listed_ids(response) -> list[str]:
    import re

    return re.findall(r'data-testid="quarantine-row" data-id="([^"]+)"', response.content.decode())


def test_engineers_list_every_record_newest_first_with_counts_filters_and_pages(client, landed, people):
    c = client_for(client, people["engineer"])
    page1 = c.get(reverse("quarantine_list"))
    assert page1.status_code == 200
    html = page1.content.decode()
    assert 'data-testid="count-total">56<' in html
    assert 'data-testid="reason-schema_violation"' in html and "<strong>52</strong>" in html
    assert len(listed_ids(page1)) == 50 and "Page 1 of 2" in html
    page2 = c.get(reverse("quarantine_list"), {"page": 2})
    assert len(listed_ids(page2)) == 6
    assert set(listed_ids(page1)) | set(listed_ids(page2)) == set(landed["all"])
    assert "Re-drive selected" in html and 'name="ids"' in html   # engineers may re-drive

    by_reason = c.get(reverse("quarantine_list"), {"reason": "mapping_failure"})
    assert sorted(listed_ids(by_reason)) == sorted(landed["mapping"])
    assert 'data-testid="count-total">56<' in by_reason.content.decode()  # counts ignore the reason filter
    assert listed_ids(c.get(reverse("quarantine_list"), {"source": "voice-lab"})) == [landed["voice"]]
    assert listed_ids(c.get(reverse("quarantine_list"), {"status": "redriven"})) == []
    assert len(listed_ids(c.get(reverse("quarantine_list"), {"status": "new", "since": "1h"}))) == 50
    assert listed_ids(c.get(reverse("quarantine_list"), {"since": "2999-01-01"})) == []
    # nonsense in the query string is ignored, not a 500
    assert c.get(reverse("quarantine_list"), {"status": "bogus", "since": "yesterday", "page": "x"}).status_code == 200


def test_platform_members_see_only_their_teams_sources_and_cannot_redrive(client, landed, people):
    c = client_for(client, people["platform"])
    seen = listed_ids(c.get(reverse("quarantine_list")))
    assert len(seen) == 50 and landed["voice"] not in seen and landed["undecodable"] not in seen
    html = c.get(reverse("quarantine_list"), {"page": 2}).content.decode()
    assert "Re-drive selected" not in html and 'name="ids"' not in html
    assert c.get(reverse("quarantine_list"), {"source": "voice-lab"}).status_code == 200
    assert listed_ids(c.get(reverse("quarantine_list"), {"source": "voice-lab"})) == []
    assert c.get(reverse("quarantine_detail", args=[landed["voice"]])).status_code == 404
    assert c.get(reverse("quarantine_detail", args=[landed["web"][0]])).status_code == 200
    assert c.post(reverse("quarantine_redrive"), {"ids": landed["web"][:1]}).status_code == 403
    with pytest.raises(PermissionDenied):
        redrive.quarantine_redrive(actor=people["platform"], quarantine_ids=landed["web"][:1])

    other = client_for(client, people["other"])
    assert listed_ids(other.get(reverse("quarantine_list"))) == [landed["voice"]]
    assert other.get(reverse("quarantine_detail", args=[landed["web"][0]])).status_code == 404
    assert other.get(reverse("quarantine_detail", args=[landed["undecodable"]])).status_code == 404
    assert other.get(reverse("quarantine_detail", args=[landed["voice"]])).status_code == 200

    privacy = client_for(client, people["privacy"])
    assert privacy.get(reverse("quarantine_list")).status_code == 403
    assert privacy.get(reverse("quarantine_detail", args=[landed["web"][0]])).status_code == 403
    assert 'href="/quarantine/"' not in privacy.get(reverse("home")).content.decode()
    assert 'href="/quarantine/"' in client_for(client, people["engineer"]).get(reverse("home")).content.decode()
    assert quarantine_rows()[landed["web"][0]]["status"] == "new"   # nothing was touched


def test_a_record_page_shows_why_and_where_but_never_a_personal_value(client, env, people):
    payload = message_payload(role="robot")
    payload["traits"] = {"email": SECRET_EMAIL, "name": "Maria Santos", "plan": "pro", "isNew": False}
    detail = ('2 schema errors against web-chat.chat_event v2: /message/role: "robot" is not a symbol of enum '
              f'MessageRole (allowed: user, assistant, system); /traits/email: invalid value "{SECRET_EMAIL}"')
    row = quarantine_row(payload=payload, reason_detail=detail, received_at=1_772_357_415_250_000)
    raw = quarantine_row(source=None, reason="undecodable", payload={"raw_text": f"{SECRET_TEXT} \u00ff"})
    land_quarantine([row, raw])

    c = client_for(client, people["engineer"])
    response = c.get(reverse("quarantine_detail", args=[row["quarantine_id"]]))
    assert response.status_code == 200
    html = response.content.decode()
    for value in PERSONAL:
        assert value not in html, value
    assert "‹masked string · 12 chars›" in html      # userId: its type and length only
    assert "‹masked string · 24 chars›" in html      # the e-mail address the validator quoted, too
    assert 'data-testid="masked-count"' in html
    # why and where
    assert 'data-testid="reason-code">schema_violation<' in html and "/message/role" in html
    assert "&quot;robot&quot;" in html                # an enum value the validator quoted stays
    assert "web-chat.chat_event</code> v2" in html
    assert "file:///nowhere/raw/gone.jsonl.zst" in html and row["sequence_number"] in html
    assert "shardId-000000000000" in html and "2026-03-01 09:30:15" in html
    assert "ws_01JNB6Q3Z8T4XG7K2M9D5R1VCE" in html        # a session id is not personal: it stays
    assert "Re-drive this record" in html

    raw_html = c.get(reverse("quarantine_detail", args=[raw["quarantine_id"]])).content.decode()
    assert SECRET_TEXT not in raw_html and "undecodable" in raw_html
    # a team member sees the same masking
    team_html = client_for(client, people["platform"]).get(
        reverse("quarantine_detail", args=[row["quarantine_id"]])).content.decode()
    assert all(value not in team_html for value in PERSONAL) and "Re-drive this record" not in team_html
    assert c.get(reverse("quarantine_detail", args=["no-such-id"])).status_code == 404


def test_the_masked_paths_list_never_shows_a_personal_key(client, env, people):
    # hostile-input sweep D3: an object keyed by an e-mail address under a personal field
    payload = message_payload()
    payload["anonymousId"] = {"jane.doe@example.com": "PII-NESTED"}
    row = quarantine_row(payload=payload, error_path="/anonymousId/jane.doe@example.com")
    land_quarantine([row])

    html = client_for(client, people["engineer"]).get(
        reverse("quarantine_detail", args=[row["quarantine_id"]])).content.decode()
    assert "Masked paths" in html
    assert "jane.doe" not in html and "PII-NESTED" not in html
    assert "<code>/anonymousId/‹masked key · 20 chars›</code>" in html
    listed = client_for(client, people["engineer"]).get(reverse("quarantine_list")).content.decode()
    assert "jane.doe" not in listed and "/anonymousId/‹masked key · 20 chars›" in listed


# --- re-drive ------------------------------------------------------------------------------------------

def test_a_record_fixed_by_a_new_contract_version_lands_once_and_one_still_failing_stays(client, stream_env, people):
    fixable = message_payload(role="tool", text="tool output: 3 parcels found")
    now_mapping_failure = message_payload(role="tool", timestamp="next tuesday")   # v3 accepts it, the mapping can't
    still_bad = message_payload(role="robot")
    put_on_stream([("web-chat", fixable), ("web-chat", now_mapping_failure), ("web-chat", still_bad),
                   ("web-chat", message_payload())])
    report = services.pipeline_drain()
    assert report.read == 4 and report.quarantined == 3 and report.merged == 1
    rows = quarantine_rows()
    assert {r["reason_code"] for r in rows.values()} == {"schema_violation"}
    by_message = {r["payload"]["messageId"]: r for r in rows.values()}
    fixed_row = by_message[fixable["messageId"]]
    failing_row = by_message[now_mapping_failure["messageId"]]
    bad_row = by_message[still_bad["messageId"]]
    assert fixed_row["contract_version"] == 2 and fixed_row["error_path"] == "/message/role"

    approve_web_chat_v3_with_tool_role(people["platform"], people["engineer"])
    c = client_for(client, people["engineer"])
    response = c.post(reverse("quarantine_redrive"), {"ids": list(rows), "next": reverse("quarantine_list")},
                      follow=True)
    assert response.status_code == 200
    html = response.content.decode()
    assert "1 record landed (1 events)" in html and "2 still failing" in html

    events = warehouse_rows("SELECT * FROM CANONICAL.EVENTS WHERE SEQUENCE_NUMBER = %(s)s AND SHARD_ID = %(sh)s",
                            {"s": fixed_row["sequence_number"], "sh": fixed_row["shard_id"]})
    assert len(events) == 1                                  # in CANONICAL.EVENTS, once
    event = events[0]
    assert event["duplicate_count"] == 0 and event["event_type"] == "message.sent"
    assert event["lineage"]["raw_archive_uri"] == fixed_row["raw_archive_uri"]      # lineage: the raw record
    assert event["lineage"]["raw_offset"] == fixed_row["raw_offset"]
    assert event["contract"]["version"] == 3 and event["batch_id"].startswith("redrive:")

    after = quarantine_rows()
    fixed = after[fixed_row["quarantine_id"]]
    assert fixed["status"] == "redriven" and fixed["redrive_result"]["events"] == 1
    assert fixed["redrive_result"]["outcome"] == "landed" and fixed["redrive_result"]["read_from"] == "archive"
    assert fixed["redrive_result"]["event_ids"] == [event["event_id"]] and fixed["redriven_at"]
    failing = after[failing_row["quarantine_id"]]
    assert failing["status"] == "new" and failing["reason_code"] == "mapping_failure"
    assert failing["contract_version"] == 3 and failing["redrive_result"]["outcome"] == "still_quarantined"
    assert failing["redrive_result"]["history"][0]["reason_code"] == "schema_violation"
    assert failing["redrive_result"]["history"][0]["contract_version"] == 2
    bad = after[bad_row["quarantine_id"]]
    assert bad["status"] == "new" and bad["reason_code"] == "schema_violation" and bad["contract_version"] == 3
    assert len(after) == 3                                     # nothing lost, nothing added
    landed = warehouse_rows("SELECT DISTINCT CHANNEL FROM RAW.LANDING_EVENTS WHERE CHANNEL LIKE 'redrive-%'")
    assert len(landed) == 1
    progress = warehouse_rows("SELECT * FROM RAW.MERGE_PROGRESS WHERE CHANNEL LIKE 'redrive-%'")
    assert [p["channel"] for p in progress] == [landed[0]["channel"]]   # merged

    audit = AuditRecord.objects.get(action="quarantine.redrive")
    assert audit.actor == people["engineer"] and audit.after["landed"] == 1 and audit.after["still_quarantined"] == 2

    # the page of the still-failing record tells its story
    page = c.get(reverse("quarantine_detail", args=[failing_row["quarantine_id"]])).content.decode()
    assert "mapping_failure" in page and "still failing" in page and "schema_violation" in page

    # re-driving the same selection again changes nothing for the landed one
    again = redrive.quarantine_redrive(actor=people["engineer"], quarantine_ids=[fixed_row["quarantine_id"]])
    assert again.not_redriven == {"already_redriven": 1} and again.landed == 0
    counts = warehouse_rows("SELECT COUNT(*) AS n, SUM(DUPLICATE_COUNT) AS d FROM CANONICAL.EVENTS")[0]
    assert counts["n"] == 2 and counts["d"] == 0


def test_redrive_uses_the_stored_payload_when_the_archive_line_is_gone(env, people):
    # quarantined while web-chat had no approved contract; it has one now
    good = quarantine_row(reason="no_approved_contract", payload=message_payload(), contract_subject=None,
                          contract_version=None, error_path=None)
    busy = quarantine_row()
    missing_id = str(uuid.uuid4())
    land_quarantine([good, busy])
    from warehouse.connection import warehouse_connection

    with warehouse_connection() as conn:   # another engineer's re-drive is working on `busy` right now
        conn.cursor().execute(
            "UPDATE RAW.QUARANTINE SET REDRIVE_RESULT = OBJECT_CONSTRUCT('outcome', 'in_progress', 'attempt_id', "
            "'someone-else', 'claimed_at', %(now)s) WHERE QUARANTINE_ID = %(id)s",
            {"id": busy["quarantine_id"], "now": "2999-01-01 00:00:00"})

    result = redrive.quarantine_redrive(actor=people["engineer"],
                                        quarantine_ids=[good["quarantine_id"], busy["quarantine_id"], missing_id])
    assert result.landed == 1 and result.events == 1 and result.merged
    assert result.not_redriven == {"busy": 1, "not_found": 1}
    rows = quarantine_rows()
    assert rows[good["quarantine_id"]]["redrive_result"]["read_from"] == "stored_payload"
    assert rows[busy["quarantine_id"]]["redrive_result"]["attempt_id"] == "someone-else"   # left alone
    event = warehouse_rows("SELECT * FROM CANONICAL.EVENTS")
    assert len(event) == 1 and event[0]["sequence_number"] == good["sequence_number"]
    assert event[0]["shard_id"] == good["shard_id"]


def test_a_redrive_that_dies_after_landing_is_finished_by_its_retry_and_lands_once(env, people, monkeypatch):
    row = quarantine_row(reason="no_approved_contract", payload=message_payload(), contract_subject=None,
                         contract_version=None, error_path=None)
    land_quarantine([row])
    real_finish = redrive._finish
    calls = {"n": 0}

    def die_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("worker killed after landing")
        return real_finish(*args, **kwargs)

    monkeypatch.setattr(redrive, "_finish", die_once)
    with pytest.raises(RuntimeError):
        redrive.quarantine_redrive(actor=people["engineer"], quarantine_ids=[row["quarantine_id"]], request_id="r-1")
    assert quarantine_rows()[row["quarantine_id"]]["redrive_result"]["outcome"] == "in_progress"  # still claimed
    # someone else trying meanwhile leaves it alone
    other = redrive.quarantine_redrive(actor=people["admin"], quarantine_ids=[row["quarantine_id"]])
    assert other.not_redriven == {"busy": 1}
    # the task's retry (same request id) finishes the job
    result = redrive.quarantine_redrive(actor=people["engineer"], quarantine_ids=[row["quarantine_id"]],
                                        request_id="r-1")
    assert result.landed == 1 and result.merged
    assert len(warehouse_rows("SELECT DISTINCT CHANNEL FROM RAW.LANDING_EVENTS WHERE CHANNEL LIKE 'redrive-%'")) == 1
    assert warehouse_rows("SELECT DUPLICATE_COUNT FROM CANONICAL.EVENTS") == [{"duplicate_count": 0}]
    counts = warehouse_rows("SELECT COUNT(*) AS n, SUM(DUPLICATE_COUNT) AS d FROM CANONICAL.EVENTS")[0]
    assert counts["n"] == 1 and counts["d"] == 0
    assert quarantine_rows()[row["quarantine_id"]]["status"] == "redriven"


def test_a_large_selection_is_queued_for_the_replay_workers(client, env, people, monkeypatch,
                                                            django_capture_on_commit_callbacks):
    from ingest_workers.redrive_tasks import quarantine_redrive_task

    rows = [quarantine_row(reason="no_approved_contract", payload=message_payload(), contract_subject=None,
                           contract_version=None, error_path=None) for _ in range(3)]
    ids = land_quarantine(rows)
    monkeypatch.setattr(redrive, "INLINE_MAX", 2)
    sent = []
    app = quarantine_redrive_task.app

    def send_task(name, args, kwargs, **options):
        sent.append((name, args, app.amqp.router.route(options, name, args, kwargs)["queue"].name))
    monkeypatch.setattr(app, "send_task", send_task)
    c = client_for(client, people["engineer"])
    with django_capture_on_commit_callbacks(execute=True):
        response = c.post(reverse("quarantine_redrive"), {"all_matching": "1", "source": "web-chat"}, follow=True)
    assert "3 records queued for re-drive" in response.content.decode()
    ((name, (task_ids, actor_id, request_id), queue),) = sent
    assert name == "ingest_workers.redrive_tasks.quarantine_redrive_task" and queue == "replay"
    assert sorted(task_ids) == sorted(ids) and actor_id == people["engineer"].pk
    # what a replay worker then runs
    outcome = quarantine_redrive_task.apply(args=(task_ids, actor_id, request_id)).get()
    assert outcome["landed"] == 3 and outcome["events"] == 3
    assert warehouse_rows("SELECT COUNT(*) AS n FROM CANONICAL.EVENTS")[0]["n"] == 3


# --- the pipeline page ----------------------------------------------------------------------------------

def test_the_pipeline_page_shows_live_numbers_and_shards(client, stream_env, people):
    put_on_stream([("web-chat", message_payload()) for _ in range(5)] + [("web-chat", message_payload(role="robot"))]
                  + [("nobody", b"\xff not json")])
    services.pipeline_drain()
    c = client_for(client, people["platform"])
    page = c.get(reverse("pipeline_status"))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-testid="events">5<' in html and 'data-testid="quarantined-new">2<' in html
    assert 'data-testid="unmerged">0<' in html and 'data-testid="duplicates">0<' in html
    assert 'hx-trigger="every 5s' in html and reverse("pipeline_live") in html
    assert html.count('data-testid="shard-row"') == 4 and "7 records read in all" in html
    assert 'data-testid="freshness">' in html and "since the newest event was received" in html
    live = c.get(reverse("pipeline_live"))
    assert live.status_code == 200 and "<html" not in live.content.decode()
    assert 'data-testid="events">5<' in live.content.decode()


def test_a_dead_warehouse_gives_pages_that_say_so_not_500s(client, env, people):
    from warehouse.embedded import free_port

    env.SNOWFLAKE = {**env.SNOWFLAKE, "port": free_port()}   # nothing listens there
    c = client_for(client, people["engineer"])
    listing = c.get(reverse("quarantine_list"))
    assert listing.status_code == 503 and "the warehouse is unreachable" in listing.content.decode()
    assert c.get(reverse("quarantine_detail", args=[str(uuid.uuid4())])).status_code == 503
    pipeline = c.get(reverse("pipeline_status"))
    assert pipeline.status_code == 200 and 'data-testid="warehouse-unreachable"' in pipeline.content.decode()
    assert c.get(reverse("pipeline_live")).status_code == 200
    redriven = c.post(reverse("quarantine_redrive"), {"ids": [str(uuid.uuid4())]})
    assert redriven.status_code == 302
    back = c.get(redriven["Location"])   # the list, which says the warehouse is down, with the message
    assert back.status_code == 503 and "unchanged and still in quarantine" in back.content.decode()
    assert not AuditRecord.objects.filter(action="quarantine.redrive").exists()


# --- what the pages say at a glance, where the error is, and whom to ask (walkthrough F29) -----------------

def card(html: str, testid: str) -> str:
    import re

    match = re.search(rf'data-testid="{testid}">([^<]*)<', html)
    assert match, testid
    return match.group(1)


def test_the_stat_cards_each_say_something_else(client, landed, people):
    c = client_for(client, people["engineer"])
    html = c.get(reverse("quarantine_list")).content.decode()
    assert card(html, "count-total") == "56"
    assert card(html, "count-reasons") == "4" and "most often <code>schema_violation</code> (52)" in html
    assert card(html, "count-waiting") == "56"
    assert card(html, "oldest-waiting") in ("under 1 s", *(f"{n} s" for n in range(1, 60)))
    assert 'data-testid="reason-mapping_failure"' in html   # the reasons are filter links below the cards

    # two records re-driven: the total stays, fewer are waiting
    warehouse_rows("UPDATE RAW.QUARANTINE SET STATUS = 'redriven' WHERE QUARANTINE_ID IN (%(a)s, %(b)s)",
                   {"a": landed["mapping"][0], "b": landed["mapping"][1]})
    html = c.get(reverse("quarantine_list")).content.decode()
    assert card(html, "count-total") == "56" and card(html, "count-waiting") == "54"
    assert f'href="?{"status=new"}"' in html
    # nothing waiting: the card says so instead of an age
    html = c.get(reverse("quarantine_list"), {"status": "redriven"}).content.decode()
    assert card(html, "count-total") == "2" and card(html, "count-waiting") == "0"
    assert card(html, "oldest-waiting") == "—" and "nothing is waiting for a re-drive" in html


def test_the_payload_highlights_the_paths_the_error_names(client, env, people):
    import re

    payload = message_payload(role="robot")
    detail = ('2 schema errors against web-chat.chat_event v2: /message/role: "robot" is not a symbol of enum '
              'MessageRole (allowed: user, assistant, system); /traits/plan: missing required field')
    row = quarantine_row(payload=payload, reason_detail=detail)
    land_quarantine([row])
    html = client_for(client, people["engineer"]).get(
        reverse("quarantine_detail", args=[row["quarantine_id"]])).content.decode()
    failing = re.findall(r'<span class="jl ([^"]*)" data-pointer="([^"]*)" data-testid="payload-failing-line">'
                         r'([^<]*)', html)
    assert [(cls, pointer) for cls, pointer, _ in failing] == [("jl-fail", "/message/role"), ("jl-missing", "/traits")]
    assert "&quot;role&quot;: &quot;robot&quot;" in failing[0][2]
    assert "missing here: /traits/plan" in html
    assert 'data-testid="failing-paths"' in html and "<code>/traits/plan</code>" in html
    assert html.count('class="jl') > 40     # every other line is there too, not highlighted


def test_those_who_cannot_redrive_are_told_who_can_and_how_to_ask(client, landed, people):
    platform = client_for(client, people["platform"])
    html = platform.get(reverse("quarantine_list"), {"reason": "mapping_failure"}).content.decode()
    assert 'data-testid="who-redrives"' in html
    assert card(html, "engineer-names") == people["engineer"].get_username()
    assert "Data engineers re-drive quarantined records" in html and "change summary" in html
    assert 'value="http://testserver/quarantine/?reason=mapping_failure"' in html   # the link to send them
    detail = platform.get(reverse("quarantine_detail", args=[landed["web"][0]])).content.decode()
    assert 'data-testid="who-redrives"' in detail and "To have it re-driven" in detail
    assert f'value="http://testserver/quarantine/{landed["web"][0]}/"' in detail

    engineer = client_for(client, people["engineer"])
    assert 'data-testid="who-redrives"' not in engineer.get(reverse("quarantine_list")).content.decode()
    assert 'data-testid="who-redrives"' not in engineer.get(
        reverse("quarantine_detail", args=[landed["web"][0]])).content.decode()


# --- the pipeline page's trends and stale lag (walkthrough F26; hostile-input review "Stale lag") ----------

def test_the_pipeline_page_shows_per_minute_trends_and_a_per_source_hour(client, stream_env, people):
    import json
    import re

    from ingest_workers.models import PipelineMinute

    put_on_stream([("web-chat", message_payload()) for _ in range(5)] + [("web-chat", message_payload(role="robot"))]
                  + [("nobody", b"\xff not json")])
    services.pipeline_drain()
    page = client_for(client, people["privacy"]).get(reverse("pipeline_status"))
    html = page.content.decode()
    # the sample the readers and the merger wrote
    web = PipelineMinute.objects.filter(source="web-chat")
    assert sum(r.records for r in web) == 6 and sum(r.events for r in web) == 5 and sum(r.quarantined for r in web) == 1
    assert sum(r.merged for r in PipelineMinute.objects.filter(source="")) == 5
    # the per-source table of the last hour
    row = re.search(r'data-testid="source-hour" data-source="web-chat">(.*?)</tr>', html, re.S).group(1)
    assert [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td>(.*?)</td>", row, re.S)] == [
        "web-chat", "0", "0", "6", "5", "1"]
    assert 'data-source="(none)"' in html and "no source named" in html
    # the charts' data: events/s per minute over the last 30 minutes, the running minute last
    series = json.loads(re.search(r'<script id="pipeline-trend-data" type="application/json">(.*?)</script>',
                                  html, re.S).group(1))
    # the running minute last; the drain may have landed in the minute before (a run that crossed a
    # minute boundary between the drain and the page failed in CI: landed 0.0 in the new minute)
    assert len(series["labels"]) == 30
    assert sum(series["landed"][-2:]) > 0 and sum(series["merged"][-2:]) > 0
    assert all(v == 0 for v in series["landed"][:-2])     # nothing before the drain
    assert series["lag_s"][-1] is not None and all(v is None for v in series["lag_s"][:-2])
    assert 'data-testid="trend-now"' in html and "events/s" in html
    assert "chart-4.6.1.umd.min.js" in html and "ingest_workers/pipeline.js" in html and "<script>" not in html


def test_a_shard_whose_lease_expired_shows_its_lag_as_stale_not_as_the_current_lag(client, env, people):
    import re
    from datetime import timedelta

    from django.utils import timezone

    from ingest_workers.models import ShardLease

    now = timezone.now()
    stream = env.KINESIS_STREAM_NAME
    ShardLease.objects.create(stream=stream, shard_id="shardId-000000000000", owner="worker-a",
                              lease_expires_at=now + timedelta(seconds=20), millis_behind_latest=2500,
                              last_batch_at=now - timedelta(seconds=1), records_read=10)
    ShardLease.objects.create(stream=stream, shard_id="shardId-000000000001", owner="worker-dead",
                              lease_expires_at=now - timedelta(minutes=3), millis_behind_latest=0,
                              last_batch_at=now - timedelta(minutes=3, seconds=30), records_read=10)
    html = client_for(client, people["engineer"]).get(reverse("pipeline_live")).content.decode()
    lags = re.findall(r'data-testid="shard-lag">(.*?)</td>', html, re.S)
    assert lags[0] == "2 s"
    # "ago" is counted from the page's own clock: a loaded machine may render it a few seconds after `now`
    def seconds_after_3_min(pattern: str, text: str) -> int:
        found = re.search(pattern, text)
        assert found, f"{pattern!r} not in {text!r}"
        return int(found.group(1))

    assert "stale: under 1 s" in lags[1]
    assert 30 <= seconds_after_3_min(r"3 min (\d+) s ago, not being read", lags[1]) <= 40
    assert "largest lag of the shards being read 2 s" in html          # not the dead shard's "under 1 s"
    assert 'data-testid="stale-shards"' in html and "1 shard is not being read" in html
    assert 30 <= seconds_after_3_min(r"up to 3 min (\d+) s ago", html) <= 40

    ShardLease.objects.filter(owner="worker-a").update(lease_expires_at=now - timedelta(seconds=1))
    html = client_for(client, people["engineer"]).get(reverse("pipeline_live")).content.decode()
    assert "largest lag" not in html and "2 shards are not being read" in html
