"""Landing and merging through the embedded warehouse server (the real connector, real SQL), and the
readers the portal and the CLI use. Copies of one event share its event time (it is the producer's)."""

from __future__ import annotations

import itertools

import orjson
import pytest

from tests.warehouse.factories import HOUR, SECOND, T0, as_json, canonical_event, quarantine_row
from warehouse import landing, load
from warehouse.connection import WarehouseQueryError
from warehouse.ddl import warehouse_ensure
from warehouse.landing import landing_append, landing_rows_json, merge_channels
from warehouse.load import pipeline_counts, warehouse_query

WINDOW = 36500  # the fixed 2026-01-01 events are inside the dedup window
_tokens = itertools.count(1)


def land(conn, batch_id, events, quarantine=None, channel="raw-events-shardId-000000000000"):
    return landing_append(conn, channel=channel, offset_token=str(next(_tokens) + 10**12), batch_id=batch_id,
                          rows=landing_rows_json(as_json(events), as_json(quarantine) if quarantine else None))


def merge(conn):
    return merge_channels(conn, window_days=WINDOW)


def copy(event_id, **kwargs):
    """A copy of event ``event_id``: every copy carries the event's own time."""
    return canonical_event(event_id, event_time=T0 + HOUR, **kwargs)


def events_by_id(conn):
    rows = warehouse_query(conn, "SELECT * FROM CANONICAL.EVENTS ORDER BY EVENT_ID")
    return {r["EVENT_ID"]: r for r in rows}


def iso(micros):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(micros / 1e6, UTC).isoformat()


def test_a_batch_lands_every_copy_with_its_lineage(warehouse_conn):
    events = [canonical_event(f"e{i}", received_at=T0 + i, raw_offset=i, sequence_number=str(100 + i),
                              template=i) for i in range(8)]
    result = land(warehouse_conn, "b-1", events)
    assert result.rows == 8

    rows = warehouse_query(warehouse_conn, "SELECT * FROM RAW.LANDING_EVENTS ORDER BY RAW_OFFSET")
    assert [r["EVENT_ID"] for r in rows] == [f"e{i}" for i in range(8)]
    first = rows[0]
    source = events[0]
    assert first["EVENT_TYPE"] == source["event_type"] and first["PLATFORM"] == "web"
    assert first["RECEIVED_AT"] == iso(T0) and first["EVENT_TIME"] == iso(source["event_time"])
    assert first["EVENT_DATE"] == iso(source["event_time"])[:10]
    assert first["ANONYMOUS_ID"] == source["identifiers"]["anonymous_id"]
    assert first["TENANT_ID"] == source["identifiers"]["tenant_id"] and first["PERSON_ID"] is None
    assert first["CONTRACT"] == source["contract"] and first["ATTRIBUTES"] == source["attributes"]
    assert first["PLATFORM_METADATA"] == source["platform_metadata"] and first["LINEAGE"] == source["lineage"]
    assert (first["SHARD_ID"], first["SEQUENCE_NUMBER"], first["RAW_OFFSET"]) == ("shardId-000000000000", "100", 0)
    assert first["BATCH_ID"] == "b-1" and first["LANDED_AT"] and first["ROW_KIND"] == "event"
    assert first["CHANNEL"] == "raw-events-shardId-000000000000" and first["OFFSET_TOKEN"] == result.offset_token


def test_duplicates_within_a_batch_keep_the_earliest_copy(warehouse_conn):
    events = [
        copy("a", received_at=T0 + 5 * SECOND, sequence_number="205", raw_offset=2),
        copy("a", received_at=T0, sequence_number="200", raw_offset=0),
        copy("b", received_at=T0 + SECOND, sequence_number="201", raw_offset=1),
        copy("a", received_at=T0 + 9 * SECOND, sequence_number="209", raw_offset=3),
    ]
    land(warehouse_conn, "b-1", events)
    result = merge(warehouse_conn)
    assert (result.ranges, result.rows_in, result.events_inserted) == (1, 4, 2)

    rows = events_by_id(warehouse_conn)
    assert set(rows) == {"a", "b"}
    a = rows["a"]
    assert a["DUPLICATE_COUNT"] == 2 and rows["b"]["DUPLICATE_COUNT"] == 0
    assert (a["SEQUENCE_NUMBER"], a["RAW_OFFSET"], a["RECEIVED_AT"]) == ("200", 0, iso(T0))
    assert a["LINEAGE"]["sequence_number"] == "200"
    assert (a["FIRST_SEEN_AT"], a["LAST_SEEN_AT"]) == (iso(T0), iso(T0 + 9 * SECOND))
    assert a["MERGED_AT"] and a["FIRST_LANDED_AT"] and a["BATCH_ID"] == "b-1"


def test_duplicates_across_batches_hours_apart(warehouse_conn):
    land(warehouse_conn, "b-1", [copy("a", received_at=T0, sequence_number="1")])
    assert merge(warehouse_conn).events_inserted == 1
    land(warehouse_conn, "b-2", [copy("a", received_at=T0 + 3 * HOUR, sequence_number="900", batch_id="ingest-2")])
    land(warehouse_conn, "b-3", [copy("a", received_at=T0 + 5 * HOUR, sequence_number="950")])
    result = merge(warehouse_conn)
    assert (result.rows_in, result.events_inserted, result.events_updated) == (2, 0, 1)
    a = events_by_id(warehouse_conn)["a"]
    assert a["DUPLICATE_COUNT"] == 2
    assert (a["FIRST_SEEN_AT"], a["LAST_SEEN_AT"]) == (iso(T0), iso(T0 + 5 * HOUR))
    assert (a["SEQUENCE_NUMBER"], a["BATCH_ID"], a["LINEAGE"]["batch_id"]) == ("1", "b-1", "ingest-1")


def test_the_first_copy_wins_even_when_it_is_merged_later(warehouse_conn):
    late_copy = copy("a", received_at=T0 + 10 * SECOND, sequence_number="500", raw_offset=7,
                     batch_id="ingest-late", product="second-copy")
    land(warehouse_conn, "b-late", [late_copy])
    merge(warehouse_conn)
    assert events_by_id(warehouse_conn)["a"]["SEQUENCE_NUMBER"] == "500"

    # identity stitching has filled the person in the meantime
    warehouse_query(warehouse_conn, "UPDATE CANONICAL.EVENTS SET PERSON_ID = 'person-1' WHERE EVENT_ID = 'a'")

    # the earlier copy (e.g. from a slow shard or a replay) arrives afterwards
    early_copy = copy("a", received_at=T0, sequence_number="40", raw_offset=3, batch_id="ingest-early",
                      product="first-copy")
    land(warehouse_conn, "b-early", [early_copy])
    result = merge(warehouse_conn)
    assert (result.events_inserted, result.events_updated) == (0, 1)
    a = events_by_id(warehouse_conn)["a"]
    assert (a["SEQUENCE_NUMBER"], a["RAW_OFFSET"], a["RECEIVED_AT"]) == ("40", 3, iso(T0))
    assert a["LINEAGE"]["batch_id"] == "ingest-early" and a["BATCH_ID"] == "b-early"
    assert a["PRODUCT"] == "first-copy"  # the whole kept copy, not just its lineage
    assert a["PERSON_ID"] == "person-1"  # but a stitched person is not erased
    assert (a["DUPLICATE_COUNT"], a["FIRST_SEEN_AT"], a["LAST_SEEN_AT"]) == (1, iso(T0), iso(T0 + 10 * SECOND))

    # and a later copy after that changes nothing but the counts
    land(warehouse_conn, "b-later", [copy("a", received_at=T0 + HOUR, sequence_number="9000", product="third-copy")])
    merge(warehouse_conn)
    a = events_by_id(warehouse_conn)["a"]
    assert (a["SEQUENCE_NUMBER"], a["PRODUCT"], a["DUPLICATE_COUNT"]) == ("40", "first-copy", 2)
    assert a["LAST_SEEN_AT"] == iso(T0 + HOUR)


def test_copy_order_ties_break_on_shard_then_numeric_sequence(warehouse_conn):
    land(warehouse_conn, "b-1", [
        copy("a", received_at=T0, shard_id="shardId-000000000001", sequence_number="5"),
        copy("a", received_at=T0, shard_id="shardId-000000000000", sequence_number="100"),
        copy("a", received_at=T0, shard_id="shardId-000000000000", sequence_number="99"),
        copy("a", received_at=T0, shard_id=None, sequence_number=None),
    ])
    merge(warehouse_conn)
    a = events_by_id(warehouse_conn)["a"]
    # numeric order: 99 < 100 although "100" < "99" as text; missing stream positions sort last
    assert (a["SHARD_ID"], a["SEQUENCE_NUMBER"], a["DUPLICATE_COUNT"]) == ("shardId-000000000000", "99", 3)


def test_out_of_order_event_times_all_land_with_their_own_time(warehouse_conn):
    now_ish = T0 + 30 * 24 * HOUR
    land(warehouse_conn, "b-1", [canonical_event("new", received_at=now_ish, event_time=now_ish - SECOND)])
    merge(warehouse_conn)
    # a mobile app flushes events recorded three days ago, after newer ones were merged
    late = [canonical_event(f"old{i}", received_at=now_ish + SECOND, event_time=now_ish - 72 * HOUR - i * SECOND,
                            sequence_number=str(200 + i)) for i in range(3)]
    land(warehouse_conn, "b-2", list(reversed(late)))
    result = merge(warehouse_conn)
    assert result.events_inserted == 3
    rows = warehouse_query(
        warehouse_conn,
        "SELECT EVENT_ID, EVENT_TIME, EVENT_DATE AS D FROM CANONICAL.EVENTS ORDER BY EVENT_TIME",
    )
    assert [r["EVENT_ID"] for r in rows] == ["old2", "old1", "old0", "new"]
    assert rows[0]["EVENT_TIME"] == iso(now_ish - 72 * HOUR - 2 * SECOND)
    assert rows[0]["D"] != rows[-1]["D"]


def test_a_failed_landing_leaves_nothing_behind(warehouse_conn):
    events = [canonical_event("e1"), canonical_event("e2")]
    with pytest.raises(WarehouseQueryError):
        # the first chunk lands, the second is refused: the transaction rolls back, token and all
        landing_append(warehouse_conn, channel="c", offset_token="5", max_statement_bytes=10,
                       rows=as_json([*events, {**canonical_event("e3"), "event_time": "soon"}]))
    counts = pipeline_counts(warehouse_conn)
    assert (counts["landed_rows"], counts["unmerged_channels"], counts["unmerged_rows"]) == (0, 0, 0)
    assert landing.channel_committed_tokens(warehouse_conn) == {}
    # the retry lands it
    assert landing_append(warehouse_conn, channel="c", offset_token="5",
                          rows=landing_rows_json(as_json(events))).rows == 2


def test_a_failed_merge_moves_nothing(warehouse_conn, monkeypatch):
    land(warehouse_conn, "b-1", [canonical_event("e1")], [quarantine_row(quarantine_id="q-1")])
    monkeypatch.setattr(landing, "_progress_merge_sql",
                        lambda db, n: f"MERGE INTO {db}.RAW.NO_SUCH_TABLE t USING (SELECT 1 AS X) s ON 1=1 "
                                      "WHEN NOT MATCHED THEN INSERT (X) VALUES (s.X)")
    with pytest.raises(WarehouseQueryError):
        merge(warehouse_conn)
    monkeypatch.undo()
    counts = pipeline_counts(warehouse_conn)
    assert (counts["events"], counts["quarantined"], counts["unmerged_channels"]) == (0, 0, 1)
    assert landing.merge_progress(warehouse_conn) == {}
    assert merge(warehouse_conn).events_inserted == 1


def test_an_empty_append_still_commits_its_token(warehouse_conn):
    # a unit whose records were all skipped on purpose: the channel must still move past them
    result = landing_append(warehouse_conn, channel="c", offset_token="77", rows=b"[]")
    assert result.rows == 0
    assert landing.channel_committed_tokens(warehouse_conn) == {"c": "77"}
    assert merge(warehouse_conn).ranges == 1 and landing.merge_progress(warehouse_conn) == {"c": "77"}


def test_quarantine_rows_are_listed_filtered_and_marked(warehouse_conn):
    rows = [
        quarantine_row("schema_violation", quarantine_id="q-1", received_at=T0),
        quarantine_row("mapping_failure", quarantine_id="q-2", source="slack-bot", error_path="/event/ts"),
        quarantine_row("undecodable", quarantine_id="q-3", payload="\x89PNG not json", source=None,
                       contract_subject=None, received_at=None),
        quarantine_row("schema_violation"),  # no id given: one is made up
    ]
    result = land(warehouse_conn, "b-1", [canonical_event("e1")], rows)
    assert result.rows == 5
    assert merge(warehouse_conn).quarantined == 4

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
    merge(warehouse_conn)
    (row,) = warehouse_query(
        warehouse_conn,
        "SELECT EVENT_ID, EVENT_TIME, ATTRIBUTES, ATTRIBUTES:role::VARCHAR AS ROLE, DUPLICATE_COUNT, "
        "1.5::NUMBER(10,2) AS N, TO_DATE(EVENT_TIME) AS D, NULL AS NOTHING FROM CANONICAL.EVENTS",
    )
    orjson.dumps(row)  # everything serialises
    assert row["EVENT_TIME"].endswith("+00:00") and isinstance(row["ATTRIBUTES"], dict)
    assert (row["N"], row["DUPLICATE_COUNT"], row["NOTHING"]) == (1.5, 0, None)
    assert row["D"] == row["EVENT_TIME"][:10]
    assert warehouse_query(warehouse_conn, "SELECT * FROM RAW.MERGE_LOG WHERE 1 = 0") == []
    with pytest.raises(WarehouseQueryError):
        warehouse_query(warehouse_conn, "SELECT * FROM RAW.NO_SUCH_TABLE")


def test_five_thousand_events_land_and_merge(warehouse_conn):
    events = [canonical_event(f"e{i}", received_at=T0 + i, raw_offset=i, sequence_number=str(10**20 + i),
                              template=i) for i in range(5000)]
    result = land(warehouse_conn, "b-big", events)
    assert result.rows == 5000
    merged = merge(warehouse_conn)
    assert merged.events_inserted == 5000
    assert pipeline_counts(warehouse_conn)["events"] == 5000


def test_ensure_is_idempotent_and_adds_missing_columns(warehouse_conn):
    tables = "SELECT TABLE_SCHEMA, TABLE_NAME, COUNT(*) AS N FROM INFORMATION_SCHEMA.COLUMNS " \
             "WHERE TABLE_SCHEMA IN ('RAW', 'CANONICAL') GROUP BY 1, 2 ORDER BY 1, 2"
    before = warehouse_query(warehouse_conn, tables)
    assert [(r["TABLE_SCHEMA"], r["TABLE_NAME"]) for r in before] == [
        ("CANONICAL", "EVENTS"), ("RAW", "CHANNEL_OFFSETS"), ("RAW", "EVENT_COPIES"), ("RAW", "LANDING_EVENTS"),
        ("RAW", "LATE_COPIES"),
        ("RAW", "MERGER_FENCE"), ("RAW", "MERGE_LOG"), ("RAW", "MERGE_PROGRESS"), ("RAW", "QUARANTINE")]
    land(warehouse_conn, "b-1", [canonical_event("e1")])
    again = warehouse_ensure(warehouse_conn)
    assert again.columns_added == ()
    assert warehouse_query(warehouse_conn, tables) == before
    assert pipeline_counts(warehouse_conn)["landed_rows"] == 1  # data untouched

    # a table created by an older model version gains the new column
    warehouse_query(warehouse_conn, "ALTER TABLE RAW.LANDING_EVENTS DROP COLUMN EMAIL_SHA256")
    assert warehouse_ensure(warehouse_conn).columns_added == ("RAW.LANDING_EVENTS.EMAIL_SHA256",)
    assert warehouse_query(warehouse_conn, tables) == before
