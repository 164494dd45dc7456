"""Landing and merging through the embedded warehouse server (the real connector, real SQL)."""

from __future__ import annotations

import threading

import orjson
import pytest

from tests.warehouse.factories import HOUR, SECOND, T0, as_json, canonical_event, quarantine_row
from warehouse import load
from warehouse.connection import WarehouseConflict, WarehouseQueryError, warehouse_connect
from warehouse.ddl import warehouse_ensure
from warehouse.load import landing_insert, merge_landing, pipeline_counts, warehouse_query


def land(conn, batch_id, events, quarantine=None, **meta):
    return landing_insert(conn, batch_id=batch_id, rows=as_json(events),
                          quarantine_rows=as_json(quarantine) if quarantine else None,
                          meta={"stream": "raw-events", "shard_id": "shardId-000000000000", **meta})


def events_by_id(conn):
    rows = warehouse_query(conn, "SELECT * FROM CANONICAL.EVENTS ORDER BY EVENT_ID")
    return {r["EVENT_ID"]: r for r in rows}


def iso(micros):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(micros / 1e6, UTC).isoformat()


def test_a_batch_lands_every_copy_with_its_lineage(warehouse_conn):
    events = [canonical_event(f"e{i}", received_at=T0 + i, raw_offset=i, sequence_number=str(100 + i),
                              template=i) for i in range(8)]
    result = land(warehouse_conn, "b-1", events, kind="live", first_sequence_number="100")
    assert (result.already_landed, result.rows, result.quarantined) == (False, 8, 0)

    rows = warehouse_query(warehouse_conn, "SELECT * FROM RAW.LANDING_EVENTS ORDER BY RAW_OFFSET")
    assert [r["EVENT_ID"] for r in rows] == [f"e{i}" for i in range(8)]
    first = rows[0]
    source = events[0]
    assert first["EVENT_TYPE"] == source["event_type"] and first["PLATFORM"] == "web"
    assert first["RECEIVED_AT"] == iso(T0) and first["EVENT_TIME"] == iso(source["event_time"])
    assert first["ANONYMOUS_ID"] == source["identifiers"]["anonymous_id"]
    assert first["TENANT_ID"] == source["identifiers"]["tenant_id"] and first["PERSON_ID"] is None
    assert first["CONTRACT"] == source["contract"] and first["ATTRIBUTES"] == source["attributes"]
    assert first["PLATFORM_METADATA"] == source["platform_metadata"] and first["LINEAGE"] == source["lineage"]
    assert (first["SHARD_ID"], first["SEQUENCE_NUMBER"], first["RAW_OFFSET"]) == ("shardId-000000000000", "100", 0)
    assert first["BATCH_ID"] == "b-1" and first["LANDED_AT"]

    (ledger,) = warehouse_query(warehouse_conn, "SELECT * FROM RAW.LANDED_BATCHES")
    assert ledger["BATCH_ID"] == "b-1" and ledger["ROW_COUNT"] == 8 and ledger["MERGED_AT"] is None
    assert ledger["KIND"] == "live" and ledger["FIRST_SEQUENCE_NUMBER"] == "100"
    assert ledger["META"]["stream"] == "raw-events"


def test_a_retried_batch_lands_once(warehouse_conn):
    events = [canonical_event("e1"), canonical_event("e2")]
    assert not land(warehouse_conn, "b-1", events).already_landed
    again = land(warehouse_conn, "b-1", events + [canonical_event("e3")], [quarantine_row()])
    assert again.already_landed and again.rows == 0
    counts = pipeline_counts(warehouse_conn)
    assert (counts["landed_rows"], counts["landed_batches"], counts["quarantined"]) == (2, 1, 0)


def test_duplicates_within_a_batch_keep_the_earliest_copy(warehouse_conn):
    events = [
        canonical_event("a", received_at=T0 + 5 * SECOND, sequence_number="205", raw_offset=2),
        canonical_event("a", received_at=T0, sequence_number="200", raw_offset=0),
        canonical_event("b", received_at=T0 + SECOND, sequence_number="201", raw_offset=1),
        canonical_event("a", received_at=T0 + 9 * SECOND, sequence_number="209", raw_offset=3),
    ]
    land(warehouse_conn, "b-1", events)
    result = merge_landing(warehouse_conn)
    assert (result.batches, result.rows_in, result.events_inserted, result.duplicates_counted) == (1, 4, 2, 2)

    rows = events_by_id(warehouse_conn)
    assert set(rows) == {"a", "b"}
    a = rows["a"]
    assert a["DUPLICATE_COUNT"] == 2 and rows["b"]["DUPLICATE_COUNT"] == 0
    assert (a["SEQUENCE_NUMBER"], a["RAW_OFFSET"], a["RECEIVED_AT"]) == ("200", 0, iso(T0))
    assert a["LINEAGE"]["sequence_number"] == "200"
    assert (a["FIRST_SEEN_AT"], a["LAST_SEEN_AT"]) == (iso(T0), iso(T0 + 9 * SECOND))
    assert a["MERGED_AT"] and a["FIRST_LANDED_AT"] and a["BATCH_ID"] == "b-1"


def test_duplicates_across_batches_hours_apart(warehouse_conn):
    land(warehouse_conn, "b-1", [canonical_event("a", received_at=T0, sequence_number="1")])
    assert merge_landing(warehouse_conn).events_inserted == 1
    land(warehouse_conn, "b-2", [canonical_event("a", received_at=T0 + 3 * HOUR, sequence_number="900",
                                                 batch_id="ingest-2")])
    land(warehouse_conn, "b-3", [canonical_event("a", received_at=T0 + 5 * HOUR, sequence_number="950")])
    result = merge_landing(warehouse_conn)
    assert (result.batches, result.rows_in, result.events_inserted, result.duplicates_counted) == (2, 2, 0, 2)
    a = events_by_id(warehouse_conn)["a"]
    assert a["DUPLICATE_COUNT"] == 2
    assert (a["FIRST_SEEN_AT"], a["LAST_SEEN_AT"]) == (iso(T0), iso(T0 + 5 * HOUR))
    assert (a["SEQUENCE_NUMBER"], a["BATCH_ID"], a["LINEAGE"]["batch_id"]) == ("1", "b-1", "ingest-1")


def test_the_first_copy_wins_even_when_it_is_merged_later(warehouse_conn):
    late_copy = canonical_event("a", received_at=T0 + 10 * SECOND, sequence_number="500", raw_offset=7,
                                batch_id="ingest-late", product="second-copy")
    land(warehouse_conn, "b-late", [late_copy])
    merge_landing(warehouse_conn)
    assert events_by_id(warehouse_conn)["a"]["SEQUENCE_NUMBER"] == "500"

    # identity stitching has filled the person in the meantime
    warehouse_query(warehouse_conn, "UPDATE CANONICAL.EVENTS SET PERSON_ID = 'person-1' WHERE EVENT_ID = 'a'")

    # the earlier copy (e.g. from a slow shard or a replay) arrives afterwards
    early_copy = canonical_event("a", received_at=T0, sequence_number="40", raw_offset=3, batch_id="ingest-early",
                                 product="first-copy")
    land(warehouse_conn, "b-early", [early_copy])
    result = merge_landing(warehouse_conn)
    assert (result.events_inserted, result.duplicates_counted, result.events_matched) == (0, 1, 1)
    a = events_by_id(warehouse_conn)["a"]
    assert (a["SEQUENCE_NUMBER"], a["RAW_OFFSET"], a["RECEIVED_AT"]) == ("40", 3, iso(T0))
    assert a["LINEAGE"]["batch_id"] == "ingest-early" and a["BATCH_ID"] == "b-early"
    assert a["PRODUCT"] == "first-copy"  # the whole kept copy, not just its lineage
    assert a["PERSON_ID"] == "person-1"  # but a stitched person is not erased
    assert (a["DUPLICATE_COUNT"], a["FIRST_SEEN_AT"], a["LAST_SEEN_AT"]) == (1, iso(T0), iso(T0 + 10 * SECOND))

    # and a later copy after that changes nothing but the counts
    land(warehouse_conn, "b-later", [canonical_event("a", received_at=T0 + HOUR, sequence_number="9000",
                                                     product="third-copy")])
    merge_landing(warehouse_conn)
    a = events_by_id(warehouse_conn)["a"]
    assert (a["SEQUENCE_NUMBER"], a["PRODUCT"], a["DUPLICATE_COUNT"]) == ("40", "first-copy", 2)
    assert a["LAST_SEEN_AT"] == iso(T0 + HOUR)


def test_copy_order_ties_break_on_shard_then_numeric_sequence(warehouse_conn):
    land(warehouse_conn, "b-1", [
        canonical_event("a", received_at=T0, shard_id="shardId-000000000001", sequence_number="5"),
        canonical_event("a", received_at=T0, shard_id="shardId-000000000000", sequence_number="100"),
        canonical_event("a", received_at=T0, shard_id="shardId-000000000000", sequence_number="99"),
        canonical_event("a", received_at=T0, shard_id=None, sequence_number=None),
    ])
    merge_landing(warehouse_conn)
    a = events_by_id(warehouse_conn)["a"]
    # numeric order: 99 < 100 although "100" < "99" as text; missing stream positions sort last
    assert (a["SHARD_ID"], a["SEQUENCE_NUMBER"], a["DUPLICATE_COUNT"]) == ("shardId-000000000000", "99", 3)


def test_out_of_order_event_times_all_land_with_their_own_time(warehouse_conn):
    now_ish = T0 + 30 * 24 * HOUR
    land(warehouse_conn, "b-1", [canonical_event("new", received_at=now_ish, event_time=now_ish - SECOND)])
    merge_landing(warehouse_conn)
    # a mobile app flushes events recorded three days ago, after newer ones were merged
    late = [canonical_event(f"old{i}", received_at=now_ish + SECOND, event_time=now_ish - 72 * HOUR - i * SECOND)
            for i in range(3)]
    land(warehouse_conn, "b-2", list(reversed(late)))
    result = merge_landing(warehouse_conn)
    assert result.events_inserted == 3
    rows = warehouse_query(
        warehouse_conn,
        "SELECT EVENT_ID, EVENT_TIME, TO_DATE(EVENT_TIME) AS D FROM CANONICAL.EVENTS ORDER BY EVENT_TIME",
    )
    assert [r["EVENT_ID"] for r in rows] == ["old2", "old1", "old0", "new"]
    assert rows[0]["EVENT_TIME"] == iso(now_ish - 72 * HOUR - 2 * SECOND)
    assert rows[0]["D"] != rows[-1]["D"]


def test_merging_twice_changes_nothing(warehouse_conn):
    land(warehouse_conn, "b-1", [canonical_event(f"e{i}", received_at=T0 + i) for i in range(5)])
    land(warehouse_conn, "b-2", [canonical_event("e1", received_at=T0 + HOUR)])
    first = merge_landing(warehouse_conn)
    assert (first.batches, first.events_inserted, first.duplicates_counted) == (2, 5, 1)
    before = warehouse_query(warehouse_conn, "SELECT * FROM CANONICAL.EVENTS ORDER BY EVENT_ID")
    ledger_before = warehouse_query(warehouse_conn, "SELECT * FROM RAW.LANDED_BATCHES ORDER BY BATCH_ID")

    second = merge_landing(warehouse_conn)
    assert (second.batches, second.rows_in, second.events_inserted, second.duplicates_counted) == (0, 0, 0, 0)
    assert warehouse_query(warehouse_conn, "SELECT * FROM CANONICAL.EVENTS ORDER BY EVENT_ID") == before
    assert warehouse_query(warehouse_conn, "SELECT * FROM RAW.LANDED_BATCHES ORDER BY BATCH_ID") == ledger_before
    counts = pipeline_counts(warehouse_conn)
    assert counts["landed_rows"] == counts["events"] + counts["duplicates"] == 6
    assert counts["unmerged_batches"] == 0


def test_merge_takes_the_oldest_batches_first_when_limited(warehouse_conn):
    for b in range(3):
        land(warehouse_conn, f"b-{b}", [canonical_event(f"e{b}")])
    result = merge_landing(warehouse_conn, max_batches=2)
    assert (result.batches, result.events_inserted) == (2, 2)
    assert set(events_by_id(warehouse_conn)) == {"e0", "e1"}
    assert pipeline_counts(warehouse_conn)["unmerged_batches"] == 1
    assert merge_landing(warehouse_conn, max_batches=0).batches == 0
    assert merge_landing(warehouse_conn).events_inserted == 1


def test_a_failed_landing_leaves_nothing_behind(warehouse_conn):
    events = [canonical_event("e1"), canonical_event("e2")]
    with pytest.raises(WarehouseQueryError):
        # the events INSERT succeeds, then the quarantine INSERT fails: the transaction rolls back
        landing_insert(warehouse_conn, batch_id="b-1", rows=as_json(events), quarantine_rows=b"[{not json", meta={})
    counts = pipeline_counts(warehouse_conn)
    assert (counts["landed_rows"], counts["landed_batches"], counts["quarantined"]) == (0, 0, 0)
    # the retry lands it
    assert land(warehouse_conn, "b-1", events).rows == 2


def test_a_failed_merge_rolls_back_its_claim(warehouse_conn, monkeypatch):
    land(warehouse_conn, "b-1", [canonical_event("e1")])
    monkeypatch.setattr(load, "_merge_sql", lambda db: f"MERGE INTO {db}.CANONICAL.NO_SUCH_TABLE t USING x ON 1=1")
    with pytest.raises(WarehouseQueryError):
        merge_landing(warehouse_conn)
    monkeypatch.undo()
    assert pipeline_counts(warehouse_conn)["unmerged_batches"] == 1
    assert merge_landing(warehouse_conn).events_inserted == 1


def test_large_batches_are_split_into_statements_in_one_transaction(warehouse_conn):
    events = [canonical_event(f"e{i}", received_at=T0 + i, raw_offset=i) for i in range(60)]
    result = landing_insert(warehouse_conn, batch_id="b-1", rows=as_json(events), meta={},
                            max_statement_bytes=20_000)
    assert result.rows == 60
    # a failing later chunk rolls the earlier ones back
    bad = [canonical_event(f"x{i}") for i in range(30)] + [{"event_id": None}]
    with pytest.raises(WarehouseQueryError):
        landing_insert(warehouse_conn, batch_id="b-2", rows=as_json(bad), meta={}, max_statement_bytes=20_000)
    assert pipeline_counts(warehouse_conn)["landed_rows"] == 60


def test_an_empty_batch_is_recorded(warehouse_conn):
    result = landing_insert(warehouse_conn, batch_id="b-empty", rows=b"[]", meta={})
    assert (result.rows, result.already_landed) == (0, False)
    assert landing_insert(warehouse_conn, batch_id="b-empty", rows=b"[]", meta={}).already_landed
    assert merge_landing(warehouse_conn).batches == 1


def test_concurrent_landings_of_one_batch_land_it_once(warehouse_server, warehouse_conn, warehouse_database):
    events = as_json([canonical_event(f"e{i}") for i in range(200)])
    results, errors = [], []

    def worker():
        conn = warehouse_connect(database=warehouse_database)
        try:
            results.append(landing_insert(conn, batch_id="b-race", rows=events, meta={}))
        except WarehouseConflict as err:  # a retry would then see the batch landed
            errors.append(err)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(not r.already_landed for r in results) == 1, (results, errors)
    counts = pipeline_counts(warehouse_conn)
    assert (counts["landed_rows"], counts["landed_batches"]) == (200, 1)


def test_concurrent_merges_never_double_count(warehouse_server, warehouse_conn, warehouse_database):
    for b in range(4):
        land(warehouse_conn, f"b-{b}", [canonical_event(f"e{i}", received_at=T0 + b) for i in range(50)])
    results, conflicts = [], []

    def worker():
        conn = warehouse_connect(database=warehouse_database)
        try:
            results.append(merge_landing(conn))
        except WarehouseConflict as err:
            conflicts.append(err)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    merge_landing(warehouse_conn)  # whatever a conflict left for the retry
    counts = pipeline_counts(warehouse_conn)
    assert (counts["events"], counts["duplicates"], counts["unmerged_batches"]) == (50, 150, 0)
    assert sum(r.batches for r in results) <= 4


def test_quarantine_rows_are_listed_filtered_and_marked(warehouse_conn):
    rows = [
        quarantine_row("schema_violation", quarantine_id="q-1", received_at=T0),
        quarantine_row("mapping_failure", quarantine_id="q-2", source="slack-bot", error_path="/event/ts"),
        quarantine_row("undecodable", quarantine_id="q-3", payload="\x89PNG not json", source=None,
                       contract_subject=None, received_at=None),
        quarantine_row("schema_violation"),  # no id given: one is made up
    ]
    result = land(warehouse_conn, "b-1", [canonical_event("e1")], rows)
    assert (result.rows, result.quarantined) == (1, 4)

    listed = load.quarantine_list(warehouse_conn)
    assert len(listed) == 4 and all(r["status"] == "new" and r["batch_id"] == "b-1" for r in listed)
    assert len({r["quarantine_id"] for r in listed}) == 4
    assert [r["quarantine_id"] for r in load.quarantine_list(warehouse_conn, source="slack-bot")] == ["q-2"]
    assert len(load.quarantine_list(warehouse_conn, reason="schema_violation")) == 2
    assert len(load.quarantine_list(warehouse_conn, limit=2)) == 2
    assert len(load.quarantine_list(warehouse_conn, limit=2, offset=3)) == 1
    assert load.quarantine_list(warehouse_conn, since="2999-01-01") == []

    one = load.quarantine_get(warehouse_conn, "q-1")
    assert one["payload"] == {"messageId": "m-1", "text": "hello"} and one["received_at"] == iso(T0)
    assert (one["contract_version"], one["error_path"], one["sequence_number"]) == (1, "/type", "42")
    raw = load.quarantine_get(warehouse_conn, "q-3")
    assert raw["payload"] == "\x89PNG not json" and raw["received_at"] is None
    assert load.quarantine_get(warehouse_conn, "nope") is None

    assert load.quarantine_mark(warehouse_conn, ["q-1", "q-2", "missing"], status="redriven",
                                result={"outcome": "landed", "batch_id": "redrive-1"}) == 2
    marked = load.quarantine_get(warehouse_conn, "q-1")
    assert marked["status"] == "redriven" and marked["redriven_at"]
    assert marked["redrive_result"] == {"outcome": "landed", "batch_id": "redrive-1"}
    assert load.quarantine_mark(warehouse_conn, ["q-3"], status="resolved") == 1
    assert load.quarantine_get(warehouse_conn, "q-3")["redriven_at"] is None
    with pytest.raises(ValueError):
        load.quarantine_mark(warehouse_conn, ["q-3"], status="deleted")

    counts = load.quarantine_counts(warehouse_conn)
    assert counts["schema_violation"] == 2 and counts["undecodable"] == 1 and counts["oversize"] == 0
    # q-1 and q-2 were re-driven, q-3 resolved: only the row without an id is still new
    assert load.quarantine_counts(warehouse_conn, status="new") == {**dict.fromkeys(counts, 0),
                                                                    "schema_violation": 1}
    assert load.quarantine_counts(warehouse_conn, source="slack-bot")["mapping_failure"] == 1
    assert pipeline_counts(warehouse_conn)["quarantined_new"] == 1


def test_warehouse_query_returns_json_ready_values(warehouse_conn):
    land(warehouse_conn, "b-1", [canonical_event("e1")])
    merge_landing(warehouse_conn)
    (row,) = warehouse_query(
        warehouse_conn,
        "SELECT EVENT_ID, EVENT_TIME, ATTRIBUTES, ATTRIBUTES:role::VARCHAR AS ROLE, DUPLICATE_COUNT, "
        "1.5::NUMBER(10,2) AS N, TO_DATE(EVENT_TIME) AS D, NULL AS NOTHING FROM CANONICAL.EVENTS",
    )
    orjson.dumps(row)  # everything serialises
    assert row["EVENT_TIME"].endswith("+00:00") and isinstance(row["ATTRIBUTES"], dict)
    assert (row["N"], row["DUPLICATE_COUNT"], row["NOTHING"]) == (1.5, 0, None)
    assert row["D"] == row["EVENT_TIME"][:10]
    assert warehouse_query(warehouse_conn, "SELECT * FROM RAW.LANDED_BATCHES WHERE 1 = 0") == []
    with pytest.raises(WarehouseQueryError):
        warehouse_query(warehouse_conn, "SELECT * FROM RAW.NO_SUCH_TABLE")


def test_five_thousand_events_land_and_merge(warehouse_conn):
    events = [canonical_event(f"e{i}", received_at=T0 + i, raw_offset=i, sequence_number=str(10**20 + i),
                              template=i) for i in range(5000)]
    result = land(warehouse_conn, "b-big", events)
    assert result.rows == 5000 and result.seconds < 20
    merged = merge_landing(warehouse_conn)
    assert merged.events_inserted == 5000
    assert pipeline_counts(warehouse_conn)["events"] == 5000


def test_ensure_is_idempotent_and_adds_missing_columns(warehouse_conn):
    tables = "SELECT TABLE_SCHEMA, TABLE_NAME, COUNT(*) AS N FROM INFORMATION_SCHEMA.COLUMNS " \
             "WHERE TABLE_SCHEMA IN ('RAW', 'CANONICAL') GROUP BY 1, 2 ORDER BY 1, 2"
    before = warehouse_query(warehouse_conn, tables)
    assert [(r["TABLE_SCHEMA"], r["TABLE_NAME"]) for r in before] == [
        ("CANONICAL", "EVENTS"), ("RAW", "LANDED_BATCHES"), ("RAW", "LANDING_EVENTS"), ("RAW", "QUARANTINE")]
    land(warehouse_conn, "b-1", [canonical_event("e1")])
    again = warehouse_ensure(warehouse_conn)
    assert again.columns_added == ()
    assert warehouse_query(warehouse_conn, tables) == before
    assert pipeline_counts(warehouse_conn)["landed_rows"] == 1  # data untouched

    # a table created by an older model version gains the new column
    warehouse_query(warehouse_conn, "ALTER TABLE RAW.LANDING_EVENTS DROP COLUMN EMAIL_SHA256")
    assert warehouse_ensure(warehouse_conn).columns_added == ("RAW.LANDING_EVENTS.EMAIL_SHA256",)
    assert warehouse_query(warehouse_conn, tables) == before
