"""Crypto-shredding of the raw archive and suppression of erased subjects, through the real pipeline:
moto's Kinesis (and KMS), the embedded warehouse, PostgreSQL, the archive on disk or moto's S3."""

from __future__ import annotations

import copy
import datetime as dt
import logging
import threading
import time
import uuid
from pathlib import Path

import boto3
import botocore.config
import orjson
import pytest
import zstandard

from contracts.presets import preset_load
from deletion.erasure_types import ErasureSubject, Identifier, IdentifierKind
from ingest_workers import services
from ingest_workers.archive import ArchiveReader, archive_read_line
from ingest_workers.archive_crypto import ArchiveRecordShredded
from ingest_workers.envelope import envelope_encode
from tests.ingest_workers.conftest import _free_port
from tests.ingest_workers.test_consumer import _busiest_lease, _direct_write, _reader, warehouse_rows

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("keyrings_fresh")]


def local_keyring(settings):
    """A worker's keyring under the embedded default's local master key and the configured hash secret."""
    from deletion.subject_keys import LocalMasterKey, SubjectKeyring, local_master_key_load
    from ingest_workers.archive_crypto import subject_hash_key

    return SubjectKeyring(master=LocalMasterKey(local_master_key_load()),
                          hash_key=subject_hash_key(settings.SUBJECT_HASH_SECRET))


@pytest.fixture
def kms_key(aws_settings):
    """A KMS key on the moto server, set as the archive's master key."""
    kms = boto3.client("kms", endpoint_url=aws_settings.AWS_ENDPOINT_URL, region_name="us-east-1",
                       aws_access_key_id="test", aws_secret_access_key="test")
    key_id = kms.create_key(Description=f"archive test {uuid.uuid4().hex[:8]}")["KeyMetadata"]["KeyId"]
    aws_settings.ARCHIVE_ENCRYPTION = "kms"
    aws_settings.ARCHIVE_KMS_KEY_ID = key_id
    return key_id


PERSON_A = {"anon": "anon-A-7f3e", "user": "cust_A_5512"}
PERSON_B = {"anon": "anon-B-91c2", "user": "cust_B_8830"}


def person_subject(person: dict, ticket: str = "DEL-1") -> ErasureSubject:
    return ErasureSubject(ticket_ref=ticket, identifiers=(
        Identifier(IdentifierKind.ANONYMOUS_ID, person["anon"]),
        Identifier(IdentifierKind.PLATFORM_USER_ID, person["user"])))


def chat_message(person: dict, text: str) -> bytes:
    """A web-chat user message (the preset's sample) of this person, with its own ids and text."""
    sample = copy.deepcopy(preset_load("web-chat")["contracts"][0]["versions"][1]["samples"][1])
    sample.update(messageId=str(uuid.uuid4()), anonymousId=person["anon"], userId=person["user"])
    sample["message"]["id"] = f"wm_{uuid.uuid4().hex[:12]}"
    sample["message"]["text"] = text
    return envelope_encode(source="web-chat", payload=sample, received_at=time.time_ns() // 1000, channel="direct")


def send(messages: list[tuple[dict, str]]) -> None:
    """Put the messages on ONE shard (one partition key), so they share archive objects."""
    _direct_write([("one-partition", chat_message(person, text)) for person, text in messages])


def archive_files(settings) -> list[Path]:
    root = Path(settings.RAW_ARCHIVE_URL.removeprefix("file://"))
    return sorted(root.rglob("*.jsonl.zst"))


def lineages(anon: str) -> list[dict]:
    rows = warehouse_rows("SELECT ANONYMOUS_ID, LINEAGE FROM CANONICAL.EVENTS")
    return [r["LINEAGE"] for r in rows if r["ANONYMOUS_ID"] == anon]


def archived_bytes(settings) -> bytes:
    return b"".join(zstandard.ZstdDecompressor().decompressobj().decompress(p.read_bytes())
                    for p in archive_files(settings))


def erase(person: dict) -> list:
    from deletion.shredding import archive_steps

    subject = person_subject(person)
    return [(step.name, step.run(subject)) for step in archive_steps()]


def test_archived_lines_are_encrypted_and_every_reader_opens_them(ingest_env):
    from deletion.models import SubjectKey

    marker_a, marker_b = f"pole-set-A-{uuid.uuid4().hex}", f"tent-B-{uuid.uuid4().hex}"
    send([(PERSON_A, marker_a), (PERSON_B, marker_b), (PERSON_A, marker_a + "-2")])
    assert services.pipeline_drain().read == 3

    stored = archived_bytes(ingest_env)
    assert stored.count(b'"enc":2') == 3  # every line encrypted (by block: the records of one key set)
    for secret in (marker_a.encode(), marker_b.encode(), PERSON_A["anon"].encode(), PERSON_A["user"].encode()):
        assert secret not in stored
    # one key per identifier, stored under a keyed hash, never the identifier
    keys = list(SubjectKey.objects.values_list("id_hash", flat=True))
    assert len(keys) == 4 and not any(PERSON_A["anon"] in k or PERSON_A["user"] in k for k in keys)
    for lineage in lineages(PERSON_A["anon"]):
        line = archive_read_line(lineage["raw_archive_uri"], lineage["raw_offset"])
        assert line["seq"] == lineage["sequence_number"]
        assert line["record"]["payload"]["message"]["text"].startswith(marker_a)


def test_after_shredding_the_subjects_records_are_unreadable_and_the_others_in_the_same_object_read(ingest_env):
    from deletion.models import SubjectKey

    send([(PERSON_A, "A one"), (PERSON_B, "B one"), (PERSON_A, "A two"), (PERSON_B, "B two")])
    services.pipeline_drain()
    a_lines, b_lines = lineages(PERSON_A["anon"]), lineages(PERSON_B["anon"])
    assert len(a_lines) == 2 and len(b_lines) == 2
    assert {lin["raw_archive_uri"] for lin in a_lines + b_lines} == {a_lines[0]["raw_archive_uri"]}  # one object

    results = dict(erase(PERSON_A))
    assert results["archive_suppress"].remaining == 0
    shred = results["archive_shred"]
    assert shred.removed == 2 and shred.remaining == 0  # anonymous_id and platform_user_id keys
    assert SubjectKey.objects.count() == 2  # B's two keys are untouched
    again = dict(erase(PERSON_A))["archive_shred"]
    assert again.removed == 0 and again.remaining == 0  # idempotent

    reader = ArchiveReader()
    for lineage in a_lines:
        with pytest.raises(ArchiveRecordShredded):
            reader.read_line(lineage["raw_archive_uri"], lineage["raw_offset"])
    assert reader.shredded == 2
    for lineage in b_lines:
        assert reader.read_line(lineage["raw_archive_uri"], lineage["raw_offset"])["record"]["source"] == "web-chat"
    whole = ArchiveReader()
    readable = whole.object_lines(a_lines[0]["raw_archive_uri"])
    assert whole.shredded == 2 and [o for o, _ in readable] == sorted(lin["raw_offset"] for lin in b_lines)


def test_the_platform_keys_were_the_only_way_in(ingest_env):
    """Even with the master key still alive, a destroyed wrapped data key leaves nothing to decrypt
    with: the archived line names a key id that no longer exists anywhere."""
    from deletion.models import SubjectKey
    from deletion.subject_keys import archive_keyring

    send([(PERSON_A, "A only")])
    services.pipeline_drain()
    (lineage,) = lineages(PERSON_A["anon"])
    raw_line = _raw_line(lineage)
    kids = orjson.loads(raw_line)["kids"]
    assert SubjectKey.objects.filter(key_id__in=kids).count() == 2
    erase(PERSON_A)
    assert SubjectKey.objects.filter(key_id__in=kids).count() == 0
    keyring = archive_keyring()
    keyring.refresh()
    assert keyring.keys_by_id(kids) == {kid: None for kid in kids}
    assert _raw_line(lineage) == raw_line  # the object was not rewritten: the key is what went


def _raw_line(lineage: dict) -> bytes:
    from django.conf import settings

    path = Path(settings.RAW_ARCHIVE_URL.removeprefix("file://")) / lineage["raw_archive_uri"].removeprefix(
        settings.RAW_ARCHIVE_URL.rstrip("/") + "/")
    data = zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())
    return [line for line in data.split(b"\n") if line][lineage["raw_offset"]]


def test_a_new_event_of_an_erased_subject_is_dropped_at_the_worker(ingest_env):
    send([(PERSON_A, "before"), (PERSON_B, "before")])
    services.pipeline_drain()
    erase(PERSON_A)
    marker = f"after-{uuid.uuid4().hex}"
    send([(PERSON_A, marker), (PERSON_B, "after")])
    report = services.pipeline_drain()
    assert report.read == 2 and report.quarantined == 0
    assert len(lineages(PERSON_A["anon"])) == 1  # the one from before (the warehouse erasure is H6's step)
    assert len(lineages(PERSON_B["anon"])) == 2
    stored = archived_bytes(ingest_env)
    assert marker.encode() not in stored and stored.count(b'"suppressed":true') == 1
    # a record of only ONE of the identifiers is suppressed too
    _direct_write([("p", chat_message({"anon": "someone-new", "user": PERSON_A["user"]}, "one id"))])
    services.pipeline_drain()
    rows = warehouse_rows("SELECT ANONYMOUS_ID, PLATFORM_USER_ID FROM CANONICAL.EVENTS")
    assert rows and not any(r["PLATFORM_USER_ID"] == PERSON_A["user"] and r["ANONYMOUS_ID"] == "someone-new"
                            for r in rows)


def erased_after_the_units_refresh(person: dict, monkeypatch) -> None:
    """The person's erasure commits just after the worker's next refresh (the keyring's suppression list
    is then one erasure old for the rest of that unit)."""
    from deletion.subject_keys import archive_keyring
    from deletion.suppression import suppression_add

    keyring = archive_keyring()
    refresh = keyring.refresh

    def refresh_then_erase() -> None:
        refresh()
        monkeypatch.setattr(keyring, "refresh", refresh)
        suppression_add(subject=person_subject(person))

    monkeypatch.setattr(keyring, "refresh", refresh_then_erase)


def test_a_subject_erased_between_a_units_refresh_and_its_keys_lands_nothing_of_its_records(
        ingest_env, kinesis, monkeypatch):
    """The erasure commits after the worker refreshed for the unit: the unit's key look-up refuses the
    person's new key, and the person's record leaves its batch (the unit's other batches land whole)."""
    monkeypatch.setattr(services, "BATCH_MAX_RECORDS", 2)
    person = {"anon": f"anon-C-{uuid.uuid4().hex[:6]}", "user": f"cust_C_{uuid.uuid4().hex[:6]}"}
    erased_after_the_units_refresh(person, monkeypatch)
    marker = f"late-{uuid.uuid4().hex}"
    send([(PERSON_B, "b1"), (PERSON_B, "b2"), (person, marker), (PERSON_B, "b3")])
    reader = _reader(kinesis, _busiest_lease(kinesis, ingest_env.KINESIS_STREAM_NAME), "w1")
    outcome = reader.process_unit()
    reader.flush()
    assert (outcome.read, outcome.valid, outcome.suppressed) == (4, 3, 1)
    assert outcome.suppressed_per_source == {"web-chat": 1}
    services.pipeline_drain()
    assert not lineages(person["anon"]) and len(lineages(PERSON_B["anon"])) == 3
    stored = archived_bytes(ingest_env)
    assert marker.encode() not in stored and stored.count(b'"suppressed":true') == 1


def test_a_subject_erased_during_a_unit_takes_the_quarantined_records_naming_it_out_too(
        ingest_env, kinesis, monkeypatch):
    """Review of the unit-wide key look-up: the erasure is learnt only when the person's new key is
    refused, after every batch was checked; a record of an unknown source naming the person (quarantined,
    in another batch) must still keep nothing of them, in RAW.QUARANTINE or in the archive."""
    monkeypatch.setattr(services, "BATCH_MAX_RECORDS", 1)
    person = {"anon": f"anon-Q-{uuid.uuid4().hex[:6]}", "user": f"cust_Q_{uuid.uuid4().hex[:6]}"}
    erased_after_the_units_refresh(person, monkeypatch)
    unmapped = envelope_encode(source=f"no-such-source-{uuid.uuid4().hex[:6]}",
                               payload={"anonymousId": person["anon"], "text": "q"},
                               received_at=time.time_ns() // 1000, channel="direct")
    _direct_write([("one-partition", unmapped), ("one-partition", chat_message(person, "mapped")),
                   ("one-partition", chat_message(PERSON_B, "kept"))])
    reader = _reader(kinesis, _busiest_lease(kinesis, ingest_env.KINESIS_STREAM_NAME), "w1")
    outcome = reader.process_unit()
    reader.flush()
    assert (outcome.read, outcome.valid, outcome.quarantined, outcome.suppressed) == (3, 1, 0, 2)
    services.pipeline_drain()
    rows = warehouse_rows("SELECT PAYLOAD FROM RAW.QUARANTINE")
    assert not any(person["anon"] in orjson.dumps(r["PAYLOAD"]).decode() for r in rows)
    assert len(lineages(PERSON_B["anon"])) == 1 and not lineages(person["anon"])
    stored = archived_bytes(ingest_env)
    assert person["anon"].encode() not in stored and stored.count(b'"suppressed":true') == 2


def test_a_worker_counts_suppressed_records_per_source(ingest_env, kinesis):
    erase(PERSON_A)
    send([(PERSON_A, "x"), (PERSON_B, "z"), (PERSON_A, "y")])
    reader = _reader(kinesis, _busiest_lease(kinesis, ingest_env.KINESIS_STREAM_NAME), "w1")
    outcome = reader.process_unit()
    reader.flush()
    assert (outcome.read, outcome.valid, outcome.quarantined) == (3, 1, 0)
    assert outcome.suppressed == 2 and outcome.suppressed_per_source == {"web-chat": 2}
    services.pipeline_drain()
    assert len(lineages(PERSON_B["anon"])) == 1 and not lineages(PERSON_A["anon"])


def test_a_redrive_brings_nothing_of_an_erased_subject_back(ingest_env, engineer, platform_user, client):
    """Records quarantined while the source was switched off are re-driven after it is back on: the
    erased person's record is dropped (suppressed), the other person's lands."""
    from contracts.models import Source
    from contracts.services import source_update
    from ingest_workers.redrive import quarantine_redrive

    web = Source.objects.get(name="web-chat")
    source_update(actor=platform_user, source=web, is_active=False)
    services.contract_index_current(force=True)
    send([(PERSON_A, "while off"), (PERSON_B, "while off")])
    services.pipeline_drain()
    quarantined = warehouse_rows("SELECT QUARANTINE_ID, REASON_CODE FROM RAW.QUARANTINE")
    assert [r["REASON_CODE"] for r in quarantined] == ["source_disabled", "source_disabled"]

    erase(PERSON_A)
    source_update(actor=platform_user, source=web, is_active=True)
    result = quarantine_redrive(actor=engineer, quarantine_ids=[r["QUARANTINE_ID"] for r in quarantined])
    assert result.count("suppressed") == 1 and result.landed == 1
    assert "dropped: they carry an erased subject's identifier" in result.summary()
    assert not lineages(PERSON_A["anon"]) and len(lineages(PERSON_B["anon"])) == 1
    dropped = next(o.quarantine_id for o in result.outcomes if o.outcome == "suppressed")
    client.force_login(engineer)
    page = client.get(f"/quarantine/{dropped}/")
    assert page.status_code == 200 and "dropped: erased subject" in page.content.decode()


def test_a_replay_of_the_whole_period_brings_nothing_of_the_subject_back(ingest_env):
    from deletion.suppression import suppression_filter
    from ingest_workers.pipeline import process_batch
    from ingest_workers.replay import archive_period_read

    send([(PERSON_A, "a1"), (PERSON_B, "b1"), (PERSON_A, "a2")])
    services.pipeline_drain()
    erase(PERSON_A)
    send([(PERSON_A, "a3"), (PERSON_B, "b2")])
    services.pipeline_drain()

    today = dt.datetime.now(dt.UTC).date()
    period = archive_period_read(day_from=today - dt.timedelta(days=1), day_to=today + dt.timedelta(days=1))
    assert period.shredded == 3 and len(period.records) == 2  # a1, a2 (keys gone) and a3 (suppressed)
    assert "3 records unreadable: erased subject" in period.summary()
    batch = process_batch([r for r, _ in period.records], services.contract_index_current(), stream="replay",
                          batch_id="replay-test", archive_locations=[loc for _, loc in period.records],
                          now_micros=time.time_ns() // 1000)
    events, dropped = suppression_filter(batch.events)
    assert dropped == 0 and events
    assert {ev["identifiers"]["anonymous_id"] for ev in events} == {PERSON_B["anon"]}


def test_the_kms_master_key_on_moto_wraps_and_shreds_the_same_way(ingest_env, kms_key):
    from deletion.models import SubjectKey
    from deletion.subject_keys import archive_keyring

    send([(PERSON_A, "kms A"), (PERSON_B, "kms B")])
    services.pipeline_drain()
    assert set(SubjectKey.objects.values_list("master_key", flat=True)) == {kms_key}
    (a_line,) = lineages(PERSON_A["anon"])
    (b_line,) = lineages(PERSON_B["anon"])
    # a fresh process: every key comes back through KMS Decrypt
    from deletion.subject_keys import archive_keyrings_forget

    archive_keyrings_forget()
    assert archive_read_line(a_line["raw_archive_uri"], a_line["raw_offset"])["record"]["source"] == "web-chat"
    assert archive_keyring().master_calls >= 2
    results = dict(erase(PERSON_A))
    assert results["archive_shred"].removed == 2 and results["archive_shred"].remaining == 0
    with pytest.raises(ArchiveRecordShredded):
        archive_read_line(a_line["raw_archive_uri"], a_line["raw_offset"])
    assert archive_read_line(b_line["raw_archive_uri"], b_line["raw_offset"])["record"]["source"] == "web-chat"


def _kms_client_counting(aws_settings) -> tuple:
    """A KMS client of its own on the moto server, and the list of the requests it sends."""
    client = boto3.client("kms", endpoint_url=aws_settings.AWS_ENDPOINT_URL, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    sent: list[str] = []
    client.meta.events.register("before-call.kms", lambda model, **kwargs: sent.append(model.name))
    return client, sent


def _kms_keyring(settings, client, key_id: str, **options):
    """A worker's keyring with the KMS master key (a fresh one is a fresh process: nothing cached)."""
    from deletion.subject_keys import KmsMasterKey, SubjectKeyring
    from ingest_workers.archive_crypto import subject_hash_key

    return SubjectKeyring(master=KmsMasterKey(client, key_id, **options),
                          hash_key=subject_hash_key(settings.SUBJECT_HASH_SECRET))


@pytest.mark.django_db(transaction=True)
def test_with_kms_new_subjects_cost_no_kms_request_each_one_key_of_the_day_wraps_them(settings, aws_settings, kms_key):
    # one GenerateDataKey per new subject cost the consumer 0.66 ms of CPU and 2 ms of waiting each on
    # the loopback, at ~9 new subjects per 100 records of demo traffic: more than the rest of the consumer
    from deletion.models import ArchiveWrappingKey, SubjectKey

    client, sent = _kms_client_counting(aws_settings)
    first = _kms_keyring(settings, client, kms_key, day=lambda: dt.date(2026, 12, 4))  # a run may cross midnight
    made = first.subject_keys([f"device_id:kms-{i}" for i in range(40)])
    made.update(first.subject_keys(["device_id:kms-later"]))
    assert len(made) == 41 and SubjectKey.objects.count() == 41
    assert sent == ["GenerateDataKey"]                     # the day's wrapping key, once
    assert ArchiveWrappingKey.objects.count() == 1
    assert set(SubjectKey.objects.values_list("master_key", flat=True)) == {kms_key}
    sent.clear()
    second = _kms_keyring(settings, client, kms_key, day=lambda: dt.date(2026, 12, 4))  # another process
    assert second.keys_by_id([kid for kid, _ in made.values()]) == dict(made.values())
    assert sent == ["Decrypt"]                             # the wrapping key, once for 41 subject keys
    second.subject_keys(["device_id:kms-second-worker"])     # its new subjects: under the same key of the day
    assert sent == ["Decrypt"] and ArchiveWrappingKey.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_with_kms_keys_of_earlier_days_and_keys_kms_wrapped_itself_still_open_each_only_as_itself(
        settings, aws_settings, kms_key):
    from cryptography.exceptions import InvalidTag

    from deletion.models import ArchiveWrappingKey, SubjectKey

    client, sent = _kms_client_counting(aws_settings)
    today = {"day": dt.date(2026, 12, 4)}
    worker = _kms_keyring(settings, client, kms_key, day=lambda: today["day"])
    ((a_kid, a_key),) = worker.subject_keys(["device_id:day-one"]).values()
    today["day"] = dt.date(2026, 12, 5)
    ((b_kid, b_key),) = worker.subject_keys(["device_id:day-two"]).values()
    assert sorted(ArchiveWrappingKey.objects.values_list("day", flat=True)) == [dt.date(2026, 12, 4),
                                                                                dt.date(2026, 12, 5)]
    # a key stored before the wrapping tier: its bytes are KMS's own CiphertextBlob
    legacy_kid = uuid.uuid4().hex
    answer = client.generate_data_key(KeyId=kms_key, KeySpec="AES_256", EncryptionContext={
        "purpose": "chatorbit-raw-archive-subject-key", "subject_key_id": legacy_kid})
    SubjectKey.objects.create(id_hash="f" * 64, key_id=legacy_kid, wrapped_key=answer["CiphertextBlob"],
                              master_key=kms_key)
    sent.clear()
    fresh = _kms_keyring(settings, client, kms_key)
    assert fresh.keys_by_id([a_kid, b_kid, legacy_kid]) == {a_kid: a_key, b_kid: b_key,
                                                            legacy_kid: answer["Plaintext"]}
    assert sorted(sent) == ["Decrypt", "Decrypt", "Decrypt"]  # two keys of the day and the old key
    a_wrapped = bytes(SubjectKey.objects.get(key_id=a_kid).wrapped_key)
    with pytest.raises(InvalidTag):
        fresh.master.unwrap(a_wrapped, b_kid)                # bound to its own key id


@pytest.mark.django_db(transaction=True)
def test_with_kms_unreachable_at_midnight_new_subjects_stay_under_the_last_days_key(settings, aws_settings, kms_key):
    from deletion.models import ArchiveWrappingKey

    client, sent = _kms_client_counting(aws_settings)
    today = {"day": dt.date(2026, 12, 4)}
    clock = {"now": 1000.0}
    worker = _kms_keyring(settings, client, kms_key, day=lambda: today["day"], clock=lambda: clock["now"])
    worker.subject_keys(["device_id:before-midnight"])
    # the day turns while KMS refuses every GenerateDataKey (here: the key it is asked for does not exist)
    worker.master.key_id = "00000000-0000-0000-0000-000000000000"
    today["day"] = dt.date(2026, 12, 5)
    ((kid, key),) = worker.subject_keys(["device_id:after-midnight"]).values()
    assert sent.count("GenerateDataKey") == 2                       # asked, refused, carried on
    assert list(ArchiveWrappingKey.objects.values_list("day", flat=True)) == [dt.date(2026, 12, 4)]
    assert _kms_keyring(settings, client, kms_key).keys_by_id([kid]) == {kid: key}
    # an unreachable KMS costs its timeouts per request: the next new subjects do not ask it again...
    clock["now"] += 59
    more = worker.subject_keys([f"device_id:in-the-outage-{i}" for i in range(5)])
    assert len(more) == 5 and sent.count("GenerateDataKey") == 2
    # ...until a minute has passed; once KMS answers, the new day has its own key
    worker.master.key_id = kms_key
    clock["now"] += 2
    worker.subject_keys(["device_id:kms-is-back"])
    assert sent.count("GenerateDataKey") == 3
    assert sorted(ArchiveWrappingKey.objects.values_list("day", flat=True)) == [dt.date(2026, 12, 4),
                                                                                dt.date(2026, 12, 5)]


@pytest.mark.django_db(transaction=True)
def test_with_kms_refusing_the_key_the_error_names_the_setting_the_code_and_that_retrying_will_not_fix_it(
        settings, aws_settings):
    from deletion.subject_keys import KeyServiceUnavailable

    client, _ = _kms_client_counting(aws_settings)
    # moto still serves a disabled key; a key id that does not exist is refused as by KMS
    missing = "11111111-2222-3333-4444-555555555555"
    worker = _kms_keyring(settings, client, missing, day=lambda: dt.date(2026, 12, 4))
    with pytest.raises(KeyServiceUnavailable) as refused:
        worker.subject_keys(["device_id:key-missing"])
    text = str(refused.value)
    assert f"ARCHIVE_KMS_KEY_ID={missing}" in text and "GenerateDataKey" in text
    assert "NotFoundException" in text and "not an outage" in text
    # an outage is told apart from a refusal: nothing listens on this port
    offline = boto3.client("kms", endpoint_url=f"http://127.0.0.1:{_free_port()}", region_name="us-east-1",
                           aws_access_key_id="test", aws_secret_access_key="test",
                           config=botocore.config.Config(connect_timeout=0.5, retries={"max_attempts": 0}))
    with pytest.raises(KeyServiceUnavailable) as unreachable:
        _kms_keyring(settings, offline, missing).subject_keys(["device_id:kms-down"])
    assert "EndpointConnectionError" in str(unreachable.value) and "not an outage" not in str(unreachable.value)


def test_a_subject_key_made_in_a_transaction_that_rolled_back_is_not_used_afterwards(settings):
    # a key cached from a rolled-back transaction has no row: the subject's later lines, sealed under it,
    # would open for nobody, as if the subject had been erased
    from django.db import transaction

    from ingest_workers.pipeline import RawRecord

    worker = local_keyring(settings)
    subjects = {"1": ("device_id:rolled-back-subject",)}
    record = RawRecord("shardId-000000000000", "1", b"{}", 1_772_400_000_000_000)
    with pytest.raises(RuntimeError), transaction.atomic():
        ((lost_kid, _),) = worker.subject_keys(["device_id:rolled-back-subject"]).values()
        assert worker.sealer([record], subjects, set()).keys_of["1"][0] == (lost_kid,)
        raise RuntimeError("the caller's transaction fails")
    ((kid, key),) = worker.subject_keys(["device_id:rolled-back-subject"]).values()
    assert kid != lost_kid
    assert worker.sealer([record], subjects, set()).keys_of["1"][0] == (kid,)   # its lines, under the new key
    assert local_keyring(settings).keys_by_id([kid, lost_kid]) == {kid: key, lost_kid: None}


@pytest.mark.django_db(transaction=True)
def test_with_kms_a_new_kms_key_wraps_the_next_key_of_the_day_and_the_earlier_days_still_open(
        settings, aws_settings, kms_key):
    from deletion.models import ArchiveWrappingKey

    client, _ = _kms_client_counting(aws_settings)
    ((old_kid, old_key),) = _kms_keyring(settings, client, kms_key).subject_keys(["device_id:before"]).values()
    new_kms_key = client.create_key(Description="the next archive key")["KeyMetadata"]["KeyId"]
    after = _kms_keyring(settings, client, new_kms_key)
    ((new_kid, new_key),) = after.subject_keys(["device_id:after"]).values()
    assert sorted(ArchiveWrappingKey.objects.values_list("master_key", flat=True)) == sorted([kms_key, new_kms_key])
    fresh = _kms_keyring(settings, client, new_kms_key)     # a process started with the new setting
    assert fresh.keys_by_id([old_kid, new_kid]) == {old_kid: old_key, new_kid: new_key}


@pytest.mark.django_db(transaction=True)
def test_with_kms_behind_an_alias_moved_to_a_new_key_the_earlier_days_still_open(settings, aws_settings, kms_key):
    # AWS's manual key rotation: ARCHIVE_KMS_KEY_ID is an alias, later pointed at a new key. KMS (and
    # moto) refuse a Decrypt naming a key other than the one that encrypted: naming the alias would lock
    # every earlier day's archive lines until the alias was moved back
    from deletion.models import ArchiveWrappingKey

    client, _ = _kms_client_counting(aws_settings)
    alias = f"alias/archive-{uuid.uuid4().hex[:8]}"
    client.create_alias(AliasName=alias, TargetKeyId=kms_key)
    today = {"day": dt.date(2026, 12, 4)}
    worker = _kms_keyring(settings, client, alias, day=lambda: today["day"])
    ((old_kid, old_key),) = worker.subject_keys(["device_id:before-rotation"]).values()
    new_kms_key = client.create_key(Description="the rotated archive key")["KeyMetadata"]
    client.update_alias(AliasName=alias, TargetKeyId=new_kms_key["KeyId"])
    today["day"] = dt.date(2026, 12, 5)
    ((new_kid, new_key),) = worker.subject_keys(["device_id:after-rotation"]).values()
    arns = dict(ArchiveWrappingKey.objects.values_list("day", "kms_key_arn"))
    assert arns[dt.date(2026, 12, 4)].endswith(kms_key) and arns[dt.date(2026, 12, 5)] == new_kms_key["Arn"]
    fresh = _kms_keyring(settings, client, alias)              # a process started after the rotation
    assert fresh.keys_by_id([old_kid, new_kid]) == {old_kid: old_key, new_kid: new_key}


@pytest.mark.django_db(transaction=True)
def test_with_kms_a_key_of_the_day_made_in_a_transaction_that_rolled_back_wraps_nothing_afterwards(
        settings, aws_settings, kms_key):
    from django.db import transaction

    from deletion.models import ArchiveWrappingKey, SubjectKey

    client, _ = _kms_client_counting(aws_settings)
    worker = _kms_keyring(settings, client, kms_key, day=lambda: dt.date(2026, 12, 4))
    with pytest.raises(RuntimeError), transaction.atomic():
        worker.subject_keys(["device_id:rolled-back"])
        assert ArchiveWrappingKey.objects.count() == 1
        raise RuntimeError("the caller's transaction fails")
    assert ArchiveWrappingKey.objects.count() == 0 and SubjectKey.objects.count() == 0
    ((kid, key),) = worker.subject_keys(["device_id:after-the-rollback"]).values()
    assert ArchiveWrappingKey.objects.count() == 1            # made again, committed this time
    assert _kms_keyring(settings, client, kms_key).keys_by_id([kid]) == {kid: key}


def test_the_raw_archive_on_s3_with_kms_is_encrypted_and_shreds(ingest_env, kms_key, moto_server):
    from ingest_workers.aws import bucket_ensure, s3_client

    bucket_ensure("raw-archive-shred")
    ingest_env.RAW_ARCHIVE_URL = "s3://raw-archive-shred/t" + uuid.uuid4().hex[:6]
    send([(PERSON_A, "s3 secret text A"), (PERSON_B, "s3 B")])
    services.pipeline_drain()
    prefix = ingest_env.RAW_ARCHIVE_URL.removeprefix("s3://raw-archive-shred/")
    s3 = s3_client()
    objects = s3.list_objects_v2(Bucket="raw-archive-shred", Prefix=prefix)["Contents"]
    body = b"".join(zstandard.ZstdDecompressor().decompressobj().decompress(
        s3.get_object(Bucket="raw-archive-shred", Key=o["Key"])["Body"].read()) for o in objects)
    assert b"s3 secret text A" not in body and body.count(b'"enc":2') == 2
    erase(PERSON_A)
    (a_line,) = lineages(PERSON_A["anon"])
    with pytest.raises(ArchiveRecordShredded):
        archive_read_line(a_line["raw_archive_uri"], a_line["raw_offset"])


@pytest.mark.django_db(transaction=True)
def test_two_workers_creating_the_same_subjects_key_at_once_end_with_one_key(settings):
    """Both generate a key for a subject neither has seen, then both insert: one row wins, and the
    loser unwraps and uses the winner's key (so both encrypt the subject's records under one key)."""
    from deletion.models import SubjectKey
    from deletion.subject_keys import LocalMasterKey, SubjectKeyring, local_master_key_load

    both_generated = threading.Barrier(2, timeout=20)

    class MeetingMasterKey(LocalMasterKey):
        def generate(self, key_id):
            made = super().generate(key_id)
            both_generated.wait()  # neither inserts before both have made a key
            return made

    answers, errors = {}, []

    def worker(name):
        from django.db import connection

        try:
            keyring = SubjectKeyring(master=MeetingMasterKey(local_master_key_load()), hash_key=b"h" * 32)
            answers[name] = keyring.subject_keys(["platform_user_id:race-1"])
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("w1", "w2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert SubjectKey.objects.count() == 1
    assert answers["w1"] == answers["w2"]
    assert answers["w1"]["platform_user_id:race-1"][0] == SubjectKey.objects.get().key_id


@pytest.mark.django_db(transaction=True)
def test_a_key_is_not_recreated_for_a_subject_suppressed_after_the_worker_last_looked(settings):
    """A worker whose suppression list is a batch old meets an erased subject: the guarded insert
    refuses the key, and the worker learns the subject is suppressed."""
    from deletion.models import SubjectKey
    from deletion.suppression import suppression_add

    keyring = local_keyring(settings)
    keyring.refresh()
    suppression_add(subject=person_subject(PERSON_A))  # after this worker's refresh
    got = keyring.subject_keys([f"anonymous_id:{PERSON_A['anon']}", "anonymous_id:someone-else"])
    assert list(got) == ["anonymous_id:someone-else"]
    assert SubjectKey.objects.count() == 1
    assert keyring.suppressed([f"anonymous_id:{PERSON_A['anon']}"])


@pytest.mark.django_db(transaction=True)
def test_new_subjects_beyond_one_statements_parameters_each_get_one_key_that_a_fresh_worker_reads_back(settings):
    """A unit with many new subjects inserts them in several multi-row statements: every subject ends
    with exactly one row, the ones that had a key keep it, and another worker unwraps the same keys."""
    from deletion.models import SubjectKey

    first = local_keyring(settings)
    first._SQL_PARAMS = 9  # three rows of three values per statement
    before = first.subject_keys(["device_id:d-0", "device_id:d-3"])
    subjects = [f"device_id:d-{i}" for i in range(11)]
    got = first.subject_keys(subjects)
    assert sorted(got) == sorted(subjects)
    assert SubjectKey.objects.count() == 11
    assert got["device_id:d-0"] == before["device_id:d-0"] and got["device_id:d-3"] == before["device_id:d-3"]
    assert len({key_id for key_id, _ in got.values()}) == 11
    assert local_keyring(settings).subject_keys(subjects) == got  # read back and unwrapped by a worker that made none


@pytest.mark.parametrize("master", ["local", "kms"])
def test_key_material_never_reaches_the_logs(ingest_env, caplog, master, request):
    """Every logger at DEBUG, botocore's included (it logs KMS answers, plaintext keys and all)."""
    from deletion.models import SubjectKey

    if master == "kms":
        request.getfixturevalue("kms_key")
    from deletion.subject_keys import archive_keyring, local_master_key_load

    caplog.set_level(logging.DEBUG)
    send([(PERSON_A, "log A"), (PERSON_B, "log B")])
    services.pipeline_drain()
    keyring = archive_keyring()
    plain = [k for _, k in keyring.subject_keys(
        [f"anonymous_id:{PERSON_A['anon']}", f"platform_user_id:{PERSON_B['user']}"]).values()]
    wrapped = [bytes(w) for w in SubjectKey.objects.values_list("wrapped_key", flat=True)]
    erase(PERSON_A)
    logged = "\n".join(r.getMessage() + repr(r.args) for r in caplog.records) + repr(keyring)
    assert "destroyed" in logged  # the shred step did log
    import base64

    secrets = [*plain, *wrapped] + ([local_master_key_load()] if master == "local" else [])
    if master == "kms":  # the wrapping key of the day, wrapped and plain
        from deletion.models import ArchiveWrappingKey
        from ingest_workers.aws import kms_client

        rows = list(ArchiveWrappingKey.objects.all())   # two if the run crossed midnight UTC
        assert rows
        for row in rows:
            secrets += [bytes(row.wrapped_key), kms_client().decrypt(
                CiphertextBlob=bytes(row.wrapped_key), EncryptionContext={
                    "purpose": "chatorbit-raw-archive-wrapping-key",
                    "wrapping_key_id": row.wrapping_key_id})["Plaintext"]]
    assert len(plain) == 2 and len(wrapped) == 4
    for secret in secrets:
        for form in (secret.hex(), base64.b64encode(secret).decode(), repr(secret)):
            assert form not in logged


def test_a_shred_reaches_the_cache_of_another_worker_at_its_next_batch(settings, warehouse_server):
    """Two keyrings stand for two worker processes: the one that did not shred still holds the key in
    memory until its next ``refresh`` (once per batch) reads the moved generation. (``erase`` runs the
    warehouse's steps too: without its own server this test passed only after another had started one.)"""

    def worker_keyring():
        keyring = local_keyring(settings)
        keyring.refresh()
        return keyring

    other = worker_keyring()
    subject = f"platform_user_id:{PERSON_A['user']}"
    key_id, _ = other.subject_keys([subject])[subject]
    assert other.keys_by_id([key_id])[key_id] is not None
    erase(PERSON_A)
    assert other.keys_by_id([key_id])[key_id] is not None  # cached: the batch in flight still encrypts
    other.refresh()
    assert other.keys_by_id([key_id]) == {key_id: None}
    assert other.suppressed([subject]) and other.subject_keys([subject]) == {}


def test_with_encryption_off_an_erased_subjects_new_record_is_still_neither_landed_nor_archived(ingest_env):
    ingest_env.ARCHIVE_ENCRYPTION = "off"
    erase(PERSON_A)
    marker_a, marker_b = f"off-A-{uuid.uuid4().hex}", f"off-B-{uuid.uuid4().hex}"
    send([(PERSON_A, marker_a), (PERSON_B, marker_b)])
    services.pipeline_drain()
    stored = archived_bytes(ingest_env)
    assert marker_b.encode() in stored and b'"enc"' not in stored  # in clear: encryption is off
    assert marker_a.encode() not in stored and stored.count(b'"suppressed":true') == 1
    assert not lineages(PERSON_A["anon"]) and len(lineages(PERSON_B["anon"])) == 1


@pytest.mark.django_db
def test_suppression_entries_committed_out_of_id_order_all_reach_a_worker(keyrings_fresh):
    # two tickets at once: ticket A takes the lower ids but commits after ticket B. A worker that refreshed
    # between the two commits must still learn A's entries (a high-water mark on the id skipped them for good,
    # and a re-drive in that process could land A's person again)
    from deletion.models import SuppressedSubject
    from deletion.subject_keys import archive_keyring, erasure_generation_bump

    keyring = archive_keyring()
    SuppressedSubject.objects.create(id=20, id_hash=keyring.hash_of("anonymous_id:anon-ticket-b"), kind="anonymous_id",
                                     ticket_ref="DEL-B")
    erasure_generation_bump()
    keyring.refresh()
    assert keyring.suppressed(["anonymous_id:anon-ticket-b"])
    SuppressedSubject.objects.create(id=15, id_hash=keyring.hash_of("anonymous_id:anon-ticket-a"), kind="anonymous_id",
                                     ticket_ref="DEL-A")
    erasure_generation_bump()
    keyring.refresh()
    assert keyring.suppressed(["anonymous_id:anon-ticket-a"]) and keyring.suppressed(["anonymous_id:anon-ticket-b"])



@pytest.mark.django_db
def test_a_generation_seen_inside_a_rolled_back_transaction_does_not_hide_the_next_suppression(keyrings_fresh):
    # a worker that refreshed inside a transaction which bumped the generation and then rolled back saw the
    # number the next real bump gives again: it took its stale list for current, and would seal and land
    # the next suppressed person's records
    from django.db import transaction

    from deletion.models import SuppressedSubject
    from deletion.subject_keys import archive_keyring, erasure_generation_bump

    keyring = archive_keyring()
    keyring.refresh()
    with pytest.raises(RuntimeError), transaction.atomic():
        SuppressedSubject.objects.create(id_hash=keyring.hash_of("anonymous_id:anon-rolled-back"),
                                         kind="anonymous_id", ticket_ref="DEL-X")
        erasure_generation_bump()
        keyring.refresh()
        assert keyring.suppressed(["anonymous_id:anon-rolled-back"])
        raise RuntimeError("the ticket's transaction fails")
    SuppressedSubject.objects.create(id_hash=keyring.hash_of("anonymous_id:anon-real"), kind="anonymous_id",
                                     ticket_ref="DEL-Y")
    erasure_generation_bump()
    keyring.refresh()
    assert keyring.suppressed(["anonymous_id:anon-real"])
    assert not keyring.suppressed(["anonymous_id:anon-rolled-back"])


def slack_thread(user: str, channel: str, reply: str) -> tuple[dict, dict]:
    """A Slack DM message of ``user`` and the help bot's reply in its thread (the reply names nobody)."""
    sample = preset_load("slack-bot")["contracts"][0]["versions"][0]["samples"]
    ts = f"{time.time():.6f}"
    message = copy.deepcopy(sample[0])
    message.update(event_id=f"Ev{uuid.uuid4().hex[:10].upper()}")
    message["event"] = {**message["event"], "user": user, "ts": ts, "event_ts": ts, "channel": channel,
                        "client_msg_id": str(uuid.uuid4())}
    return message, bot_reply(message, reply)


def bot_reply(message: dict, text: str) -> dict:
    answer = copy.deepcopy(preset_load("slack-bot")["contracts"][0]["versions"][0]["samples"][3])
    ts = f"{time.time():.6f}"
    answer.update(event_id=f"Ev{uuid.uuid4().hex[:10].upper()}")
    answer["event"] = {**answer["event"], "text": text, "ts": ts, "event_ts": ts,
                       "channel": message["event"]["channel"], "thread_ts": message["event"]["ts"]}
    return answer


def send_slack(payloads) -> None:
    _direct_write([("one-partition", envelope_encode(source="slack-bot", payload=p, received_at=time.time_ns() // 1000,
                                                     channel="direct")) for p in payloads])


def test_a_bots_reply_in_the_erased_persons_thread_is_shredded_even_by_a_retry_after_the_rows_went(
        ingest_env, monkeypatch):
    """The reply carries no identifier: it is under its conversation's key. The conversation step lists the
    conversation's hash before it destroys any key, so a retry after a crash, once the warehouse rows are
    gone, still destroys it; the other person's thread reads on. A new reply in her thread is suppressed."""
    from deletion import shredding
    from deletion.models import SuppressedSubject
    from deletion.warehouse_erasure import canonical_erase, landing_erase

    reply_a, reply_b = f"reply-A-{uuid.uuid4().hex}", f"reply-B-{uuid.uuid4().hex}"
    thread_a, thread_b = slack_thread("U0A", "D0A", reply_a), slack_thread("U0B", "D0B", reply_b)
    send_slack([*thread_a, *thread_b])
    assert services.pipeline_drain().read == 4
    rows = warehouse_rows("SELECT PLATFORM_USER_ID, LINEAGE, TO_JSON(ATTRIBUTES) AS A FROM CANONICAL.EVENTS")
    [line_a] = [r["LINEAGE"] for r in rows if reply_a in r["A"]]
    [line_b] = [r["LINEAGE"] for r in rows if reply_b in r["A"]]
    [user_a] = {r["PLATFORM_USER_ID"] for r in rows if (r["PLATFORM_USER_ID"] or "").endswith("U0A")}
    subject = ErasureSubject(ticket_ref="DEL-9", identifiers=(Identifier(IdentifierKind.PLATFORM_USER_ID, user_a),))

    # the first attempt dies after it found and listed the conversation, before any key went
    def killed(hashes, **journal):
        raise RuntimeError("worker killed")
    monkeypatch.setattr(shredding, "subject_keys_shred", killed)
    with pytest.raises(RuntimeError):
        shredding.archive_conversations_run(subject)
    monkeypatch.undo()
    assert SuppressedSubject.objects.filter(ticket_ref="DEL-9", kind="conversation").count() == 1
    assert ArchiveReader().read_line(line_a["raw_archive_uri"], line_a["raw_offset"])
    # the warehouse rows go (as the later steps would), then the step is retried
    for erase_step in (landing_erase, canonical_erase):
        assert erase_step(subject).remaining == 0
    assert not [r for r in warehouse_rows("SELECT TO_JSON(ATTRIBUTES) AS A FROM CANONICAL.EVENTS") if reply_a in r["A"]]
    result = shredding.archive_conversations_run(subject)
    assert result.remaining == 0 and result.detail["conversation_keys_destroyed"] == 1

    reader = ArchiveReader()
    with pytest.raises(ArchiveRecordShredded):
        reader.read_line(line_a["raw_archive_uri"], line_a["raw_offset"])
    assert reply_b in orjson.dumps(reader.read_line(line_b["raw_archive_uri"], line_b["raw_offset"])).decode()
    again_a, again_b = f"again-A-{uuid.uuid4().hex}", f"again-B-{uuid.uuid4().hex}"
    send_slack([bot_reply(thread_a[0], again_a), bot_reply(thread_b[0], again_b)])
    report = services.pipeline_drain()
    assert report.read == 2 and report.suppressed == 1
    stored = archived_bytes(ingest_env)
    landed = orjson.dumps(warehouse_rows("SELECT ATTRIBUTES FROM CANONICAL.EVENTS")).decode()
    assert again_a not in landed and again_b in landed
    assert stored.count(b'"suppressed":true') == 1  # her new reply's line keeps no record


def llm_call(user: str | None, content: str) -> dict:
    """One LLM gateway call whose SDK sends the placeholder ``"null"`` as session and conversation id; without
    ``user`` it names nobody (an assistant reply)."""
    call = copy.deepcopy(preset_load("llm-gateway")["contracts"][0]["versions"][-1]["samples"][0])
    call.update(call_id=f"llmc_{uuid.uuid4().hex}")
    call["origin"] = {**call["origin"], "session_id": "null", "conversation_id": "null", "user_id": user,
                      "anonymous_id": None, "user_message_id": None}
    call["response"] = {**call["response"], "id": f"resp_{uuid.uuid4().hex[:12]}",
                        "message": {**call["response"]["message"], "id": f"m_{uuid.uuid4().hex[:10]}",
                                    "content": content}}
    return call


def test_a_placeholder_session_id_is_no_conversation_one_erasure_leaves_the_others_replies(ingest_env):
    """Every call of this source carries session_id "null": that is no conversation, so erasing one user
    neither shreds nor deletes the other users' identifier-less replies (they stay under their day's key)."""
    from deletion import shredding
    from deletion.warehouse_erasure import canonical_erase, landing_erase
    from ingest_workers.archive_crypto import conversation_subject

    assert conversation_subject("llm-gateway", "null", None) is None  # falls back to the day key
    assert conversation_subject("llm-gateway", " Undefined", "0") is None
    assert conversation_subject("llm-gateway", "guest", "c-1") == "conversation:llm-gateway:conversation:c-1"

    mine, reply_a, reply_b = (f"{n}-{uuid.uuid4().hex}" for n in ("mine", "reply-A", "reply-B"))
    calls = [llm_call("cust_A", mine), llm_call(None, reply_a), llm_call("cust_B", "theirs"),
             llm_call(None, reply_b)]
    _direct_write([("one-partition", envelope_encode(source="llm-gateway", payload=c,
                                                     received_at=time.time_ns() // 1000, channel="direct"))
                   for c in calls])
    assert services.pipeline_drain().read == 4
    rows = warehouse_rows("SELECT PLATFORM_USER_ID, SESSION_ID, LINEAGE, TO_JSON(ATTRIBUTES) AS A "
                          "FROM CANONICAL.EVENTS")
    assert len(rows) == 4 and {r["SESSION_ID"] for r in rows} == {"null"}
    [user_a] = {r["PLATFORM_USER_ID"] for r in rows if (r["PLATFORM_USER_ID"] or "").endswith("cust_A")}
    [line_b] = [r["LINEAGE"] for r in rows if reply_b in r["A"]]
    subject = ErasureSubject(ticket_ref="DEL-11", identifiers=(Identifier(IdentifierKind.PLATFORM_USER_ID, user_a),))

    result = shredding.archive_conversations_run(subject)
    assert result.remaining == 0 and result.detail["conversations"] == 0
    for erase_step in (landing_erase, canonical_erase):
        assert erase_step(subject).remaining == 0

    landed = orjson.dumps(warehouse_rows("SELECT TO_JSON(ATTRIBUTES) AS A FROM CANONICAL.EVENTS")).decode()
    assert mine not in landed and reply_b in landed and reply_a in landed
    assert reply_b in orjson.dumps(ArchiveReader().read_line(line_b["raw_archive_uri"], line_b["raw_offset"])).decode()


def test_a_conversation_another_person_is_in_too_is_left_and_listed_not_shredded(ingest_env):
    """A session id another user's calls reuse is shared: erasing one of them must not shred and suppress the
    assistant replies in it for good. Her own conversation's reply is shredded."""
    from deletion import shredding
    from ingest_workers.archive_crypto import conversation_subject

    def in_session(call: dict, session: str) -> dict:
        call["origin"] = {**call["origin"], "session_id": session, "conversation_id": None}
        return call

    shared, own = f"s-shared-{uuid.uuid4().hex[:8]}", f"s-own-{uuid.uuid4().hex[:8]}"
    reply_shared, reply_own = f"reply-shared-{uuid.uuid4().hex}", f"reply-own-{uuid.uuid4().hex}"
    calls = [in_session(llm_call("cust_A", "hers"), shared), in_session(llm_call("cust_B", "his"), shared),
             in_session(llm_call(None, reply_shared), shared),
             in_session(llm_call("cust_A", "hers again"), own), in_session(llm_call(None, reply_own), own)]
    _direct_write([("one-partition", envelope_encode(source="llm-gateway", payload=c,
                                                     received_at=time.time_ns() // 1000, channel="direct"))
                   for c in calls])
    assert services.pipeline_drain().read == 5
    rows = warehouse_rows("SELECT SOURCE_ID, PLATFORM_USER_ID, LINEAGE, TO_JSON(ATTRIBUTES) AS A "
                          "FROM CANONICAL.EVENTS")
    [user_a] = {r["PLATFORM_USER_ID"] for r in rows if (r["PLATFORM_USER_ID"] or "").endswith("cust_A")}
    [line_shared] = [r["LINEAGE"] for r in rows if reply_shared in r["A"]]
    [line_own] = [r["LINEAGE"] for r in rows if reply_own in r["A"]]
    source = rows[0]["SOURCE_ID"]
    subject = ErasureSubject(ticket_ref="DEL-12", identifiers=(Identifier(IdentifierKind.PLATFORM_USER_ID, user_a),))

    result = shredding.archive_conversations_run(subject)
    assert result.remaining == 0
    assert result.detail["conversations"] == 1 and result.detail["conversation_keys_destroyed"] == 1
    assert result.detail["shared_conversations_left"] == 1
    assert result.detail["shared_conversation_hashes"] == [
        shredding.subject_hash_of(conversation_subject(source, shared, None))]
    reader = ArchiveReader()
    assert reply_shared in orjson.dumps(reader.read_line(line_shared["raw_archive_uri"],
                                                         line_shared["raw_offset"])).decode()
    with pytest.raises(ArchiveRecordShredded):
        reader.read_line(line_own["raw_archive_uri"], line_own["raw_offset"])
