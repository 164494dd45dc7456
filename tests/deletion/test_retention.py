"""Retention purges with real data of several ages: the raw archive (a local folder and S3 on the moto
server), merged landing rows, quarantine payloads and the curated tables; each run is recorded per store,
a second run removes nothing more, and the runs page shows them to the people who may see it."""

from __future__ import annotations

import copy
import datetime as dt
import io
import uuid

import boto3
import obstore
import pytest
from django.core.management import call_command

from deletion.models import RetentionRun
from deletion.retention import RetentionPolicy, archive_partitions_expired, cutoff_for, retention_run
from tests.ingest_workers.conftest import aws_settings, moto_server  # noqa: F401 - fixtures
from tests.warehouse.conftest import warehouse_conn, warehouse_database  # noqa: F401 - fixtures
from tests.warehouse.factories import SECOND, land_and_merge, quarantine_row
from tests.warehouse.test_models_runner import PRICES, event
from warehouse.load import warehouse_query
from warehouse.modeling.runner import models_run

NOW = dt.datetime.now(dt.UTC)
POLICY = RetentionPolicy(archive=180, landing=7, quarantine=30, curated=1096)


def micros(days_ago: float) -> int:
    return int((NOW - dt.timedelta(days=days_ago)).timestamp() * 1_000_000)


def test_cutoffs_are_whole_utc_days_and_partitions_before_the_cutoff_day_expire():
    cutoff = cutoff_for(dt.datetime(2026, 7, 1, 23, 30, tzinfo=dt.UTC), 180)
    assert cutoff == dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    assert archive_partitions_expired(
        ["raw/dt=2026-01-01", "raw/dt=2026-01-02", "raw/source=web/dt=2025-12-31", "raw/other", "raw/dt=2026-13-45"],
        cutoff) == ["raw/dt=2026-01-01", "raw/source=web/dt=2025-12-31"]
    with pytest.raises(ValueError, match="at least 1"):
        cutoff_for(NOW, 0)


def _day(days_ago: int) -> str:
    return f"{(NOW - dt.timedelta(days=days_ago)).date():%Y-%m-%d}"


@pytest.fixture(params=["file", "s3"])
def archive_url(request, settings, tmp_path):
    if request.param == "file":
        settings.RAW_ARCHIVE_URL = f"file://{tmp_path}/archive"
    else:
        aws = request.getfixturevalue("aws_settings")
        bucket = f"archive-{uuid.uuid4().hex[:10]}"
        boto3.client("s3", endpoint_url=aws.AWS_ENDPOINT_URL, region_name="us-east-1", aws_access_key_id="test",
                     aws_secret_access_key="test").create_bucket(Bucket=bucket)
        settings.RAW_ARCHIVE_URL = f"s3://{bucket}/prod"
    return settings.RAW_ARCHIVE_URL


def archive_keys() -> set[str]:
    from ingest_workers.archive import archive_store

    store, prefix = archive_store()
    return {m["path"].removeprefix(f"{prefix}/" if prefix else "")
            for batch in obstore.list(store, prefix=prefix or None) for m in batch}


@pytest.mark.django_db
def test_the_archive_keeps_180_days_of_partitions_and_deletes_older_objects_whole(archive_url):
    from ingest_workers.archive import archive_put_new

    keys = {
        f"raw/dt={_day(400)}/hour=03/shard=shardId-000000000000/100.jsonl.zst",
        f"raw/dt={_day(181)}/hour=23/shard=shardId-000000000001/200.jsonl.zst",
        f"raw/dt={_day(181)}/hour=23/shard=shardId-000000000002/300.jsonl.zst",
        f"raw/source=web-chat/dt={_day(365)}/hour=01/1-9.jsonl.zst",      # an older layout
        f"raw/dt={_day(179)}/hour=00/shard=shardId-000000000000/400.jsonl.zst",
        f"raw/dt={_day(0)}/hour=00/shard=shardId-000000000000/500.jsonl.zst",
    }
    for key in keys:
        archive_put_new(key, b"not read by retention")
    [run] = retention_run(stores=["archive"], now=NOW, policy=POLICY)
    assert (run.status, run.removed, run.error) == ("succeeded", 4, "")
    assert archive_keys() == {k for k in keys if f"dt={_day(179)}" in k or f"dt={_day(0)}" in k}
    assert sum(run.detail["partitions"].values()) == 4
    [again] = retention_run(stores=["archive"], now=NOW, policy=POLICY)
    assert (again.status, again.removed) == ("succeeded", 0)


@pytest.mark.django_db
def test_the_archive_purge_destroys_the_unattributed_day_keys_of_the_days_it_expires(settings, tmp_path):
    """Records with no known identifier are encrypted under their arrival day's key: the days the archive no
    longer keeps lose their key too, so a copy of those objects (S3 versions, a backup) cannot be read."""
    from deletion.models import SubjectKey
    from deletion.subject_keys import SubjectKeyring, archive_keyring, archive_keyrings_forget, master_key_from_settings
    from ingest_workers.archive_crypto import unattributed_subject

    settings.RAW_ARCHIVE_URL = f"file://{tmp_path}/archive"
    settings.ARCHIVE_ENCRYPTION = "local"
    archive_keyrings_forget()
    ages = (400, 181, 180, 179, 0)
    subjects = {age: unattributed_subject(micros(age)) for age in ages}
    keys = archive_keyring().subject_keys(subjects.values())
    assert SubjectKey.objects.count() == len(ages)

    [run] = retention_run(stores=["archive"], now=NOW, policy=POLICY)
    assert run.status == "succeeded" and run.detail["unattributed_keys_destroyed"] == 2   # 400 and 181 days old
    fresh = SubjectKeyring(master=master_key_from_settings(), hash_key=b"unused")
    opened = fresh.keys_by_id(keys[subjects[age]][0] for age in ages)
    assert [opened[keys[subjects[age]][0]] is None for age in ages] == [True, True, False, False, False]
    [again] = retention_run(stores=["archive"], now=NOW, policy=POLICY)
    assert again.detail["unattributed_keys_destroyed"] == 0 and SubjectKey.objects.count() == 3
    archive_keyrings_forget()


@pytest.fixture
def warehouse_settings(settings, warehouse_conn):  # noqa: F811
    settings.SNOWFLAKE = {**copy.deepcopy(settings.SNOWFLAKE), "database": warehouse_conn.database}
    return settings


def rows(conn, sql: str) -> list[dict]:
    return warehouse_query(conn, sql.replace("DB.", f"{conn.database}."))


@pytest.mark.django_db
def test_landing_quarantine_and_curated_rows_past_retention_go_and_younger_or_unmerged_rows_stay(
        warehouse_conn, warehouse_settings):  # noqa: F811
    conn = warehouse_conn
    ids = {"anonymous_id": "anon-r1"}
    # events 4 years old and 2 days old, merged (old2 sent twice: its copies are in RAW.EVENT_COPIES); old
    # quarantine rows and a recent one
    old2 = event("old2", "message.sent", micros(4 * 365) + SECOND, "s-old", ids, {"role": "user"}, message_id="m-o")
    old2_again = {**old2, "lineage": {**old2["lineage"], "sequence_number": "300"}}
    land_and_merge(conn, [
        event("old1", "session.started", micros(4 * 365), "s-old", ids, {}), old2, old2_again,
        event("new1", "session.started", micros(2), "s-new", ids, {}),
    ], "merged", quarantine=[quarantine_row(quarantine_id="q-old", sequence_number="7"),
                             quarantine_row(quarantine_id="q-new", sequence_number="8")])
    assert models_run(conn, prices=PRICES).ok
    # and one merged unit landed just now
    land_and_merge(conn, [event("new2", "session.started", micros(1), "s-new2", ids, {})], "recent")
    # the first unit landed 10 days ago; a third one too, but the merger has not merged it yet
    rows(conn, f"UPDATE DB.RAW.LANDING_EVENTS SET LANDED_AT = '{(NOW - dt.timedelta(days=10)):%Y-%m-%d %H:%M:%S}' "
               "WHERE BATCH_ID = 'merged'")
    rows(conn, f"UPDATE DB.RAW.QUARANTINE SET QUARANTINED_AT = '{(NOW - dt.timedelta(days=40)):%Y-%m-%d %H:%M:%S}' "
               "WHERE QUARANTINE_ID = 'q-old'")
    from warehouse.landing import landing_append, landing_rows_json

    landing_append(conn, channel="test-unmerged", offset_token="5", batch_id="unmerged",
                   rows=landing_rows_json(b'[' + __import__("orjson").dumps(
                       event("late1", "session.started", micros(1), "s-late", ids, {})) + b']'))
    rows(conn, f"UPDATE DB.RAW.LANDING_EVENTS SET LANDED_AT = '{(NOW - dt.timedelta(days=10)):%Y-%m-%d %H:%M:%S}' "
               "WHERE CHANNEL = 'test-unmerged'")

    records = retention_run(stores=["landing", "quarantine", "curated"], now=NOW, policy=POLICY)
    by_store = {r.store: r for r in records}
    assert all(r.status == "succeeded" for r in records), [r.error for r in records]
    assert by_store["landing"].removed == 6       # 4 event copies + 2 quarantine rows of the old merged unit
    assert [r["EVENT_ID"] for r in rows(conn, "SELECT EVENT_ID FROM DB.RAW.LANDING_EVENTS ORDER BY 1")] == \
        ["late1", "new2"]
    assert by_store["quarantine"].removed == 1
    quarantine = {r["QUARANTINE_ID"]: r for r in rows(conn, "SELECT * FROM DB.RAW.QUARANTINE")}
    assert quarantine["q-old"]["PAYLOAD"] is None and quarantine["q-old"]["REASON_CODE"] == "schema_violation"
    assert quarantine["q-new"]["PAYLOAD"] is not None
    curated = by_store["curated"].detail
    assert curated["CANONICAL.EVENTS"] == 2 and curated["ANALYTICS.CONVERSATION_SESSIONS"] == 1
    assert curated["RAW.EVENT_COPIES"] == 2 and rows(conn, "SELECT * FROM DB.RAW.EVENT_COPIES") == []
    assert [r["EVENT_ID"] for r in rows(conn, "SELECT EVENT_ID FROM DB.CANONICAL.EVENTS ORDER BY 1")] == \
        ["new1", "new2"]
    assert [r["SESSION_KEY"] for r in rows(conn, "SELECT SESSION_KEY FROM DB.ANALYTICS.CONVERSATION_SESSIONS")] == \
        ["s-new"]
    # a second run removes nothing more
    again = retention_run(stores=["landing", "quarantine", "curated"], now=NOW, policy=POLICY)
    assert [(r.store, r.removed) for r in again] == [("landing", 0), ("quarantine", 0), ("curated", 0)]
    assert RetentionRun.objects.count() == 6


@pytest.mark.django_db
def test_the_runs_page_lists_each_store_for_privacy_officers_engineers_and_admins_only(
        client, privacy_user, engineer, platform_user, settings, tmp_path):
    settings.RAW_ARCHIVE_URL = f"file://{tmp_path}/archive"
    retention_run(stores=["archive"], now=NOW, policy=POLICY)
    RetentionRun.objects.create(run_id=uuid.uuid4(), store="landing", keep_days=7, cutoff=NOW, status="failed",
                                error="WarehouseUnavailable: the warehouse could not be reached")
    for user in (privacy_user, engineer):
        client.force_login(user)
        page = client.get("/privacy/retention/")
        assert page.status_code == 200
        text = page.content.decode()
        assert 'data-store="archive" data-status="succeeded"' in text
        assert 'data-store="landing" data-status="failed"' in text and "could not be reached" in text
    # where each looks for it: the privacy officer's home, the engineer's model runs page
    client.force_login(privacy_user)
    assert 'href="/privacy/retention/"' in client.get("/").content.decode()
    client.force_login(engineer)
    assert 'href="/privacy/retention/"' in client.get("/analytics/runs/").content.decode()
    client.force_login(platform_user)
    assert client.get("/privacy/retention/").status_code == 403
    assert 'href="/privacy/retention/"' not in client.get("/analytics/runs/").content.decode()


@pytest.mark.django_db
def test_the_command_explains_itself_and_runs_the_stores_asked_for(settings, tmp_path, capsys):
    settings.RAW_ARCHIVE_URL = f"file://{tmp_path}/archive"
    with pytest.raises(SystemExit):
        call_command("retention_run", "--help")
    help_text = capsys.readouterr().out
    assert "RAW_ARCHIVE_RETENTION_DAYS" in help_text and "--store" in help_text
    out = io.StringIO()
    call_command("retention_run", "--store", "archive", stdout=out)
    assert out.getvalue().startswith("archive: succeeded, removed 0")
    assert list(RetentionRun.objects.values_list("store", "trigger")) == [("archive", "command")]


@pytest.mark.django_db
def test_the_daily_schedule_runs_every_store_on_the_deletion_queue(warehouse_settings, tmp_path):
    import importlib

    from portal.celery import app

    warehouse_settings.RAW_ARCHIVE_URL = f"file://{tmp_path}/archive"
    importlib.import_module("deletion.tasks")
    entry = app.conf.beat_schedule["retention-run"]
    assert entry["task"] == "deletion.tasks.retention_run_scheduled" and entry["schedule"] == 86400.0
    assert app.amqp.router.route({}, entry["task"])["queue"].name == "deletion"
    assert app.tasks[entry["task"]].apply().get() == 0     # stores that failed
    assert sorted(RetentionRun.objects.values_list("store", flat=True)) == sorted(
        ["archive", "landing", "quarantine", "curated"])
