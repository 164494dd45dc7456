"""Issue 12's end-to-end test, on every real part at once: a person seen on the web, on iOS and in Slack is sent
through the real collectors (HTTP, write keys, Slack's signed webhook) → moto's Kinesis → the shard consumer
(archive encrypted per subject) → landing → merge → the models run (stitched into one person), next to another
person who must stay untouched. A privacy officer files a ticket by e-mail address, sees the linked identifiers,
confirms, and a real Celery worker of the ``deletion`` queue runs every configured step (``DELETION_STEP_PROVIDERS``
as shipped).

Then nothing of the person is left in any warehouse table, their archived records cannot be decrypted (counted as
erased, and so is the bot's reply in her Slack DM, which carries no identifier: it is under her conversation's key)
while the other person's still read (the bot's reply to him too), the aggregates are recomputed, a replay of the
whole period and a re-merge of every channel bring nothing back, a new event of the person is suppressed, and the
evidence lists every store with zero remaining."""

from __future__ import annotations

import copy
import datetime as dt
import time
import uuid

import orjson
import pytest
from django.utils import timezone

from deletion import services as deletion_services
from deletion.erasure_types import email_sha256
from deletion.models import DeletionTicket, TicketStatus
from ingest_workers import services as ingest_services
from ingest_workers.archive import ArchiveReader
from ingest_workers.archive_crypto import ArchiveRecordShredded
from ingest_workers.collector_auth import slack_signature
from tests.deletion.test_worker_resume import start_worker, stop, wait_for
from tests.ingest_workers.conftest import (  # noqa: F401 - fixtures
    aws_settings,
    collector_answers_fresh,
    collector_cache,
    collector_sources,
    kinesis,
    moto_server,
    stream,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("collector_cache")]


BATCH = "/collect/v1/batch"
SLACK = "/collect/v1/webhooks/slack/slack-bot"
TEAM = "T061EG9R6"

ALICE_EMAIL = "Alice.Liddell@Example.com"
ALICE_SHA = email_sha256(ALICE_EMAIL)
# her company's help portal (web) and app (iOS) sign in with her Slack account: one account id on all three
ALICE = {"account": f"{TEAM}:U0ALICE", "anon": "anon-alice-web-7f3e", "install": "inst_alice_ios_0001",
         "idfv": "6D1F2A8C-ALICE-IPHONE-0001", "slack_user": "U0ALICE"}
BOB = {"account": f"{TEAM}:U0BOB", "anon": "anon-bob-web-91c2", "slack_user": "U0BOB"}
ALICE_VALUES = (ALICE["account"], ALICE["anon"], ALICE["install"], ALICE["idfv"], ALICE_SHA, ALICE_EMAIL,
                "U0ALICE", "alice secret", "Hi Alice")
BOB_VALUES = (BOB["account"], BOB["anon"], BOB["slack_user"])


def preset_sample(source: str, version: int, index: int) -> dict:
    from contracts.presets import preset_load

    return copy.deepcopy(preset_load(source)["contracts"][0]["versions"][version - 1]["samples"][index])


def web_events(person: dict, *, email: str | None, text: str) -> list[dict]:
    """chat_opened, a message and (when ``email``) identify, of one person in their own session."""
    session, conversation = f"ws_{person['anon']}", f"wc_{person['anon']}"
    events = []
    for version, index in ((2, 0), (2, 1)) + (((1, 5),) if email else ()):
        event = preset_sample("web-chat", version, index)
        event.update(messageId=str(uuid.uuid4()), anonymousId=person["anon"], userId=person["account"],
                     sessionId=session, conversationId=conversation)
        if event["type"] == "message":
            event["message"] = {**event["message"], "id": f"wm_{uuid.uuid4().hex[:12]}", "text": text}
        if event["type"] == "identify":
            event["traits"] = {**event.get("traits", {}), "email": email}
        events.append(event)
    return events


def ios_events(person: dict, *, text: str) -> list[dict]:
    """session start, login and a chat message on the person's iPhone."""
    events = []
    for index in (0, 5, 1):
        event = preset_sample("ios-app", 1, index)
        event.update(event_uuid=str(uuid.uuid4()).upper(), install_id=person["install"], account_id=person["account"])
        event["device"] = {**event["device"], "idfv": person["idfv"]}
        event["session"] = {**event["session"], "id": f"is_{person['install']}"}
        if event["event"] == "user_login" and "login" in event:
            event["login"] = {**event["login"], "email": None}
        if event["event"] == "chat_message":
            for key in ("message", "chat"):
                if isinstance(event.get(key), dict) and "text" in event[key]:
                    event[key] = {**event[key], "text": text}
        events.append(event)
    return events


def slack_message(user: str, text: str, channel: str) -> dict:
    event = preset_sample("slack-bot", 1, 0)
    ts = f"{time.time():.6f}"
    event.update(event_id=f"Ev{uuid.uuid4().hex[:10].upper()}", event_time=int(time.time()))
    event["event"] = {**event["event"], "user": user, "text": text, "ts": ts, "event_ts": ts, "channel": channel,
                      "client_msg_id": str(uuid.uuid4())}
    event["event"].pop("blocks", None)
    return event


def slack_bot_reply(text: str, to: dict) -> dict:
    """The help bot's reply in the thread of the message ``to`` (in its channel): no user, no identifier."""
    event = preset_sample("slack-bot", 1, 3)
    ts = f"{time.time():.6f}"
    event.update(event_id=f"Ev{uuid.uuid4().hex[:10].upper()}", event_time=int(time.time()))
    event["event"] = {**event["event"], "text": text, "ts": ts, "event_ts": ts, "channel": to["event"]["channel"],
                      "thread_ts": to["event"]["ts"]}
    return event


@pytest.fixture
def pipeline(settings, collector_sources, stream, warehouse_server, tmp_path, platform_user, engineer,  # noqa: F811
             team):
    """web-chat, ios-app and slack-bot with their preset contracts approved; this test's own warehouse database,
    archive folder (encrypted with the local master key) and keys."""
    from contracts.presets import preset_load
    from contracts.services import preset_versions_load, source_create
    from deletion.subject_keys import archive_keyrings_forget

    settings.SNOWFLAKE = {**settings.SNOWFLAKE, "database": f"E_{uuid.uuid4().hex[:12].upper()}"}
    settings.RAW_ARCHIVE_URL = f"file://{tmp_path}/archive"
    settings.ARCHIVE_ENCRYPTION = "local"
    ios, ios_key = source_create(actor=platform_user, team=team, name="ios-app", platform="ios", kind="sdk",
                                 product="storefront-assistant")
    for source in (collector_sources["web"], ios, collector_sources["slack"]):
        preset_versions_load(actor=platform_user, reviewer=engineer, source=source,
                             contracts=preset_load(source.name)["contracts"])
    ingest_services.contract_index_current(force=True)
    archive_keyrings_forget()
    yield {**collector_sources, "ios": ios, "ios_key": ios_key}
    archive_keyrings_forget()


@pytest.fixture
def deletion_worker_env(settings, pipeline):
    """The environment of a deletion worker that sees this test's PostgreSQL, Redis broker, warehouse database
    and archive, with the shipped expander and steps."""
    import os

    import redis
    from django.db import connection

    assert settings.CELERY_BROKER_URL.startswith("redis"), "needs the Redis broker (CELERY_BROKER_URL=redis://…)"
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("deletion")  # no message left by an earlier run
    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_ALLOW", "DELETION_"))}
    env.update({
        "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/"
                        f"{db['NAME']}",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL, "DEBUG": "1",
        "SNOWFLAKE_PORT": str(settings.SNOWFLAKE["port"]), "SNOWFLAKE_DATABASE": settings.SNOWFLAKE["database"],
        "RAW_ARCHIVE_URL": settings.RAW_ARCHIVE_URL, "ARCHIVE_ENCRYPTION": "local",
        "SUBJECT_HASH_SECRET": settings.SUBJECT_HASH_SECRET,
    })
    return env


def collect(client, sources: dict, *, web: list[dict] = (), ios: list[dict] = (), slack: list[dict] = ()) -> int:
    for key, events in ((sources["web_key"], web), (sources["ios_key"], ios)):
        if events:
            response = client.post(BATCH, data=orjson.dumps(list(events)), content_type="application/json",
                                   headers={"Authorization": f"Bearer {key}"})
            assert response.status_code in (200, 202), response.content
    for event in slack:
        body, ts = orjson.dumps(event), str(int(time.time()))
        response = client.post(SLACK, data=body, content_type="application/json", headers={
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": slack_signature(sources["slack"].signing_secret, ts, body)})
        assert response.status_code == 200, response.content
    return len(web) + len(ios) + len(slack)


def warehouse_tables() -> dict[str, list[dict]]:
    from warehouse.analytics_ddl import ANALYTICS_TABLES, WORK_TABLES
    from warehouse.connection import warehouse_connect
    from warehouse.ddl import TABLES
    from warehouse.load import warehouse_query

    with warehouse_connect() as conn:
        return {f"{t.schema}.{t.name}": warehouse_query(conn, f"SELECT * FROM {conn.database}.{t.schema}.{t.name}")  # noqa: S608 - our table names
                for t in (*TABLES, *ANALYTICS_TABLES, *WORK_TABLES)}


def mentioning(table_rows: list[dict], needles: tuple[str, ...]) -> list[dict]:
    return [r for r in table_rows if any(n.lower() in repr(r).lower() for n in needles)]


def models_run() -> None:
    from warehouse.modeling.service import models_run_recorded

    run = models_run_recorded()
    assert run.ok, run


def daily_web(tables) -> dict:
    [row] = [r for r in tables["ANALYTICS.PLATFORM_ENGAGEMENT_DAILY"] if r["PLATFORM"] == "web"]
    return row


def test_a_person_on_web_ios_and_slack_is_erased_from_every_store_by_the_real_job(
        client, pipeline, privacy_user, deletion_worker_env, tmp_path):
    sources = pipeline
    alice_dm, bob_dm = slack_message("U0ALICE", "alice secret in slack", "D0ALICEDM"), \
        slack_message("U0BOB", "bob in slack", "D0BOBDM")
    bob_reply_text = f"Hi there, ticket IT-2 is open {uuid.uuid4().hex}"
    sent = collect(client, sources,
                   web=web_events(ALICE, email=ALICE_EMAIL, text="alice secret: my order 48213")
                   + web_events(BOB, email=None, text="bob asks about tents"),
                   ios=ios_events(ALICE, text="alice secret from the app"),
                   slack=[alice_dm, slack_bot_reply("Hi Alice, ticket IT-1 is open", alice_dm),
                          bob_dm, slack_bot_reply(bob_reply_text, bob_dm)])
    report = ingest_services.pipeline_drain()
    assert report.read == sent and report.quarantined == 0, report
    models_run()

    before = warehouse_tables()
    persons = {r["ID_KEY"]: r["PERSON_ID"] for r in before["IDENTITY.IDENTIFIERS"]}
    alice = persons[f"email_sha256:{ALICE_SHA}"]
    assert {persons[f"platform_user_id:{ALICE['account']}"], persons[f"anonymous_id:{ALICE['anon']}"],
            persons[f"anonymous_id:{ALICE['install']}"], persons[f"device_id:{ALICE['idfv']}"]} == {alice}
    alice_platforms = {r["PLATFORM"] for r in before["CANONICAL.EVENTS"] if r["PERSON_ID"] == alice
                       or r["PLATFORM_USER_ID"] == ALICE["account"]}
    assert alice_platforms == {"web", "ios", "slack"}
    assert daily_web(before)["ACTIVE_PEOPLE"] == 2
    bob_events = sorted(r["EVENT_ID"] for r in before["CANONICAL.EVENTS"] if mentioning([r], BOB_VALUES))
    assert bob_events
    archived = {r["EVENT_ID"]: r["LINEAGE"] for r in before["CANONICAL.EVENTS"]}
    id_columns = ("ANONYMOUS_ID", "PLATFORM_USER_ID", "DEVICE_ID", "EMAIL_SHA256")
    # the archive lines of her events: those that carry an identifier, and the bot's reply in her Slack DM, which
    # carries none (it is under her conversation's key, not its day's)
    alice_lines = {(r["LINEAGE"]["raw_archive_uri"], r["LINEAGE"]["raw_offset"]) for r in before["CANONICAL.EVENTS"]
                   if r["EVENT_ID"] not in bob_events and any(r[c] for c in id_columns)}
    assert len(alice_lines) == 7  # web: opened, message, identify; iOS: start, login, message; Slack: message
    [alice_reply] = [r for r in before["CANONICAL.EVENTS"] if mentioning([r], ("Hi Alice",))]
    [bob_reply] = [r for r in before["CANONICAL.EVENTS"] if mentioning([r], (bob_reply_text,))]
    for reply in (alice_reply, bob_reply):
        assert not any(reply[c] for c in id_columns), reply
    alice_lines.add((alice_reply["LINEAGE"]["raw_archive_uri"], alice_reply["LINEAGE"]["raw_offset"]))
    assert mentioning([ArchiveReader().read_line(*sorted(alice_lines)[0])], ALICE_VALUES)  # readable until erased

    # the privacy officer files by e-mail address and sees every linked identifier
    ticket = deletion_services.ticket_file(
        actor=privacy_user, regulation="gdpr", requester_reference="R-e2e",
        identifiers=[deletion_services.subject.identifier_parse("email", ALICE_EMAIL)], received_at=timezone.now())
    assert ticket.status == TicketStatus.EXPANDED, (ticket.expansion_error, ticket.held_reasons)
    linked = {row["kind"] + ":" + row["value"] for row in ticket.expansion}
    assert linked >= {f"email_sha256:{ALICE_SHA}", f"platform_user_id:{ALICE['account']}",
                      f"anonymous_id:{ALICE['anon']}", f"anonymous_id:{ALICE['install']}",
                      f"device_id:{ALICE['idfv']}"}
    assert not mentioning([{"linked": sorted(linked)}], BOB_VALUES)

    # the job runs on a real worker of the deletion queue, with every step as configured
    env = deletion_worker_env
    log = tmp_path / "deletion-worker.log"
    worker = start_worker(env, "erasure", log)
    try:
        deletion_services.ticket_confirm(actor=privacy_user, ticket=ticket)
        wait_for(lambda: DeletionTicket.objects.get(pk=ticket.pk).status in (TicketStatus.DONE, TicketStatus.FAILED),
                 timeout=240, what="the deletion worker to finish the ticket", logs=[log])
    finally:
        stop(worker)
    ticket.refresh_from_db()
    assert ticket.status == TicketStatus.DONE, (ticket.error, log.read_text()[-3000:])
    configured = [s.name for s in deletion_services.erasure_steps()]
    assert [s.name for s in ticket.steps.order_by("position")] == configured

    # the evidence lists every store with zero remaining
    evidence = ticket.evidence.record
    assert [s["step"] for s in evidence["stores"]] == configured
    assert all(s["remaining"] == 0 for s in evidence["stores"]), evidence["stores"]
    assert evidence["all_verified_zero_remaining"] and evidence["within_sla"]
    stores = {s["step"]: s for s in evidence["stores"]}
    assert stores["archive_shred"]["detail"]["keys_destroyed"] >= 5
    # her conversations' keys (the Slack DM thread the bot replied in among them)
    assert stores["archive_conversations"]["detail"]["conversation_keys_destroyed"] >= 1
    assert stores["warehouse.canonical"]["removed"] > 0 and stores["warehouse.curated"]["removed"] > 0

    # zero rows of her in every warehouse table; Bob's are all there; the aggregates went down by her share
    after = warehouse_tables()
    for table, table_rows in after.items():
        assert not mentioning(table_rows, (*ALICE_VALUES, alice)), table
    assert sorted(r["EVENT_ID"] for r in after["CANONICAL.EVENTS"] if mentioning([r], BOB_VALUES)) == bob_events
    assert not [r for r in after["CANONICAL.EVENTS"] if r["PLATFORM"] == "ios"]
    assert daily_web(after)["ACTIVE_PEOPLE"] == 1

    # her archived records cannot be decrypted (counted as erased); Bob's still read
    reader = ArchiveReader()
    for uri, offset in sorted(alice_lines):
        with pytest.raises(ArchiveRecordShredded):
            reader.read_line(uri, offset)
    assert reader.shredded == len(alice_lines)
    for event_id in bob_events:
        line = reader.read_line(archived[event_id]["raw_archive_uri"], archived[event_id]["raw_offset"])
        assert mentioning([line], BOB_VALUES)
    # the bot's reply to Bob, without identifiers too, is under his conversation's key: it still reads and lands
    assert mentioning([reader.read_line(bob_reply["LINEAGE"]["raw_archive_uri"], bob_reply["LINEAGE"]["raw_offset"])],
                      (bob_reply_text,))
    assert [r["EVENT_ID"] for r in after["CANONICAL.EVENTS"] if mentioning([r], (bob_reply_text,))] == \
        [bob_reply["EVENT_ID"]]

    # a replay of the whole period and a re-merge of every channel bring nothing of her back
    from deletion.suppression import suppression_filter
    from ingest_workers.pipeline import process_batch
    from ingest_workers.replay import archive_period_read

    today = dt.datetime.now(dt.UTC).date()
    period = archive_period_read(day_from=today - dt.timedelta(days=1), day_to=today + dt.timedelta(days=1))
    assert period.shredded == len(alice_lines)
    assert f"{len(alice_lines)} records unreadable: erased subject" in period.summary()
    batch = process_batch([r for r, _ in period.records], ingest_services.contract_index_current(), stream="replay",
                          batch_id="replay-e2e", archive_locations=[loc for _, loc in period.records],
                          now_micros=time.time_ns() // 1000)
    replayed, dropped = suppression_filter(batch.events)
    assert replayed and not mentioning(replayed, (*ALICE_VALUES, alice))
    assert mentioning(replayed, (bob_reply_text,))
    from tests.warehouse.factories import TEST_WINDOW_DAYS
    from warehouse.connection import warehouse_connect
    from warehouse.landing import merge_channels
    from warehouse.load import warehouse_query

    with warehouse_connect() as conn:
        warehouse_query(conn, f"DELETE FROM {conn.database}.RAW.MERGE_PROGRESS")  # noqa: S608 - our table
        merge_channels(conn, window_days=TEST_WINDOW_DAYS)
    models_run()
    for table, table_rows in warehouse_tables().items():
        assert not mentioning(table_rows, (*ALICE_VALUES, alice)), table

    # a new event with one of her identifiers, and a new bot reply in her DM thread, are suppressed: counted, not
    # landed, not archived readable; a new bot reply to Bob lands
    marker = f"alice secret after erasure {uuid.uuid4().hex}"
    reply_marker, bob_marker = f"Hi Alice again {uuid.uuid4().hex}", f"bob reply again {uuid.uuid4().hex}"
    sent = collect(client, sources, web=web_events(BOB, email=None, text="bob again"),
                   slack=[slack_message("U0ALICE", marker, "D0ALICEDM"), slack_bot_reply(reply_marker, alice_dm),
                          slack_bot_reply(bob_marker, bob_dm)])
    report = ingest_services.pipeline_drain()
    assert report.read == sent and report.quarantined == 0
    assert report.suppressed == 2 and report.suppressed_per_source == {"slack-bot": 2}
    final = warehouse_tables()
    assert not mentioning(final["CANONICAL.EVENTS"] + final["RAW.LANDING_EVENTS"],
                          (marker, reply_marker, ALICE["account"]))
    assert len([r for r in final["CANONICAL.EVENTS"] if mentioning([r], BOB_VALUES)]) > len(bob_events)
    assert mentioning(final["CANONICAL.EVENTS"], (bob_marker,))
    everything = archive_period_read(day_from=today - dt.timedelta(days=1), day_to=today + dt.timedelta(days=1))
    assert not [r for r, _ in everything.records if marker.encode() in r.data or reply_marker.encode() in r.data]
