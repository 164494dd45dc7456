"""Append-only landing through channels and the idempotent, windowed merge (warehouse.landing).

These follow Snowflake's semantics, not DuckDB's: no table has a key constraint and nothing relies
on a conflict. Regression tests for the pipeline review's E1b, E5 and M3 are marked in their names.
"""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from tests.warehouse.factories import SECOND, T0, canonical_event, quarantine_row
from warehouse.landing import (
    ChannelRange,
    EmbeddedLandingClient,
    channel_committed_tokens,
    landing_append,
    landing_rows_json,
    landing_rows_pieces,
    merge_channels,
    merge_progress,
    merge_ranges_pending,
)
from warehouse.load import pipeline_counts, warehouse_query

NOW = dt.datetime(2026, 1, 1, 12, 0, 0)  # the merge's clock: T0 events are on its day
DAY = 24 * 3600 * SECOND


def land(conn, channel: str, token: str, events: list[dict], quarantine: list[dict] | None = None):
    return landing_append(conn, channel=channel, offset_token=token,
                          rows=landing_rows_json(orjson.dumps(events), quarantine))


def merge(conn, **kwargs):
    kwargs.setdefault("now", NOW)
    return merge_channels(conn, **kwargs)


def stored(conn) -> dict[str, dict]:
    rows = warehouse_query(conn, "SELECT * FROM CANONICAL.EVENTS ORDER BY EVENT_ID")
    return {r["EVENT_ID"]: r for r in rows}


def landed_count(conn, event_id: str) -> int:
    rows = warehouse_query(conn, "SELECT COUNT(*) AS N FROM RAW.LANDING_EVENTS WHERE EVENT_ID = %(e)s", {"e": event_id})
    return rows[0]["N"]


def test_landing_is_append_only_and_records_the_channel_token(warehouse_conn):
    events = [canonical_event(f"e{i}", sequence_number=str(100 + i)) for i in range(5)]
    result = land(warehouse_conn, "raw-events-shard-0", "104", events, [quarantine_row(sequence_number="105")])
    assert (result.rows, result.offset_token) == (6, "104")
    assert channel_committed_tokens(warehouse_conn) == {"raw-events-shard-0": "104"}
    kinds = warehouse_query(warehouse_conn,
                            "SELECT ROW_KIND, COUNT(*) AS N FROM RAW.LANDING_EVENTS GROUP BY 1 ORDER BY 1")
    assert [(k["ROW_KIND"], k["N"]) for k in kinds] == [("event", 5), ("quarantine", 1)]
    assert stored(warehouse_conn) == {}  # nothing merged yet


def test_copies_with_different_event_dates_are_different_events(warehouse_conn):
    # the dedup key is (EVENT_DATE, EVENT_ID): a producer that reuses an id on another day made two events
    land(warehouse_conn, "ch-0", "2", [canonical_event("x", sequence_number="1", event_time=T0),
                                       canonical_event("x", sequence_number="2", event_time=T0 + DAY)])
    assert merge(warehouse_conn).events_inserted == 2


def test_no_table_declares_a_key_the_embedded_engine_would_enforce(warehouse_conn):
    # Snowflake enforces no primary key: the same event row twice must be accepted, as Snowflake would
    row = canonical_event("dup")
    land(warehouse_conn, "c", "1", [row])
    land(warehouse_conn, "c", "1", [row])  # a zombie writer landing the same unit again
    constraints = warehouse_query(
        warehouse_conn, "SELECT COUNT(*) AS N FROM INFORMATION_SCHEMA.TABLE_CONSTRAINTS "
                        "WHERE CONSTRAINT_TYPE IN ('PRIMARY KEY', 'UNIQUE') AND TABLE_CATALOG = CURRENT_DATABASE()")
    assert constraints[0]["N"] == 0
    merge(warehouse_conn)
    assert stored(warehouse_conn)["dup"]["DUPLICATE_COUNT"] == 0  # one stream record, landed twice


def test_merge_keeps_one_row_per_event_and_counts_real_copies(warehouse_conn):
    # copies of one event carry its event time; they arrive at different times
    a1 = canonical_event("a", sequence_number="1", received_at=T0 + 5 * SECOND, event_time=T0)
    a2 = canonical_event("a", sequence_number="7", received_at=T0 + 1 * SECOND, event_time=T0, raw_offset=3)
    b = canonical_event("b", sequence_number="2")
    land(warehouse_conn, "ch-0", "2", [a1, b])
    land(warehouse_conn, "ch-1", "7", [a2])
    result = merge(warehouse_conn)
    assert (result.ranges, result.events_inserted) == (2, 2)
    rows = stored(warehouse_conn)
    assert rows["a"]["DUPLICATE_COUNT"] == 1 and rows["b"]["DUPLICATE_COUNT"] == 0
    assert rows["a"]["SEQUENCE_NUMBER"] == "7"  # the earliest copy by RECEIVED_AT is kept
    assert rows["a"]["FIRST_SEEN_AT"] < rows["a"]["LAST_SEEN_AT"]
    assert merge_progress(warehouse_conn) == {"ch-0": "2", "ch-1": "7"}


def test_E5_merging_the_same_landed_rows_twice_changes_nothing(warehouse_conn):
    # review E5 / M3: re-merging added the copies again (DUPLICATE_COUNT 3 for one real duplicate)
    land(warehouse_conn, "ch-0", "2", [canonical_event("a", sequence_number="1", event_time=T0),
                                       canonical_event("a", sequence_number="2", received_at=T0 + SECOND,
                                                       event_time=T0)])
    ranges = [ChannelRange("ch-0", None, "2")]
    merge(warehouse_conn, ranges=ranges)
    before = stored(warehouse_conn)
    assert before["a"]["DUPLICATE_COUNT"] == 1
    again = merge(warehouse_conn, ranges=ranges, now=NOW + dt.timedelta(seconds=30))
    assert (again.events_inserted, again.events_updated) == (0, 0)
    assert stored(warehouse_conn) == before  # not even MERGED_AT moved


def test_a_copy_in_a_later_merge_is_counted_once_however_often_merged(warehouse_conn):
    land(warehouse_conn, "ch-0", "1", [canonical_event("a", sequence_number="1", event_time=T0)])
    merge(warehouse_conn)
    land(warehouse_conn, "ch-0", "5", [canonical_event("a", sequence_number="5", received_at=T0 + 9 * SECOND,
                                                       event_time=T0)])
    second = [ChannelRange("ch-0", "1", "5")]
    merge(warehouse_conn, ranges=second)
    merge(warehouse_conn, ranges=second)  # a lost merger's retry of the same claim
    merge(warehouse_conn, ranges=[ChannelRange("ch-0", None, "5")])  # and a wider one
    row = stored(warehouse_conn)["a"]
    assert row["DUPLICATE_COUNT"] == 1
    assert copies_counted(warehouse_conn, "a") == [
        "raw-events/shardId-000000000000/1", "raw-events/shardId-000000000000/5"]


def copies_counted(conn, event_id: str) -> list[str]:
    rows = warehouse_query(conn, "SELECT COPY_KEY FROM RAW.EVENT_COPIES WHERE EVENT_ID = %(e)s ORDER BY COPY_KEY",
                           {"e": event_id})
    return [r["COPY_KEY"] for r in rows]


#: columns of an event row that count its copies; every other column is the event and its kept copy
_COPY_COUNTERS = ("DUPLICATE_COUNT", "FIRST_SEEN_AT", "LAST_SEEN_AT", "FIRST_LANDED_AT", "MERGED_AT")


def test_an_event_re_sent_hundreds_of_times_keeps_a_row_of_one_size_and_an_exact_count(warehouse_conn):
    # a producer stuck in a retry loop re-sends one event (~1/s for days). The row used to list every
    # copy's key in it, ~40 bytes more per copy, until it passed Snowflake's 16 MB and every merge failed.
    # DuckDB has no such limit, so the test asserts the rule itself: the row does not grow with copies.
    def size(row: dict) -> int:
        return len(orjson.dumps({k: v for k, v in row.items() if k not in _COPY_COUNTERS}, default=str))

    land(warehouse_conn, "ch-0", "1", [canonical_event("loop", sequence_number="1", event_time=T0)])
    merge(warehouse_conn)
    first = size(stored(warehouse_conn)["loop"])
    token = 1
    for unit in range(3):
        copies = [canonical_event("loop", sequence_number=str(token + i), event_time=T0,
                                  received_at=T0 + (token + i) * SECOND) for i in range(1, 101)]
        token += 100
        land(warehouse_conn, "ch-0", str(token), copies)
        merge(warehouse_conn, now=NOW + dt.timedelta(minutes=unit + 1))
    row = stored(warehouse_conn)["loop"]
    assert size(row) == first
    assert (row["DUPLICATE_COUNT"], row["SEQUENCE_NUMBER"]) == (300, "1")
    assert len(copies_counted(warehouse_conn, "loop")) == 301
    merge(warehouse_conn, ranges=[ChannelRange("ch-0", None, str(token))], now=NOW + dt.timedelta(hours=1))
    assert stored(warehouse_conn)["loop"] == row  # the whole range merged again: nothing moves


def test_a_kept_copy_displaced_by_an_earlier_one_is_still_counted_once(warehouse_conn):
    # the second copy to land was received first: it becomes the kept copy, and the first one must
    # still be known as counted when its range is merged again
    land(warehouse_conn, "ch-0", "9", [canonical_event("a", sequence_number="9", received_at=T0 + 5 * SECOND,
                                                       event_time=T0)])
    merge(warehouse_conn)
    land(warehouse_conn, "ch-1", "3", [canonical_event("a", sequence_number="3", received_at=T0 + SECOND,
                                                       event_time=T0, shard_id="shardId-000000000001")])
    merge(warehouse_conn, now=NOW + dt.timedelta(minutes=1))
    row = stored(warehouse_conn)["a"]
    assert (row["SEQUENCE_NUMBER"], row["DUPLICATE_COUNT"]) == ("3", 1)
    for channel, token in (("ch-0", "9"), ("ch-1", "3")):
        merge(warehouse_conn, ranges=[ChannelRange(channel, None, token)], now=NOW + dt.timedelta(minutes=2))
    assert stored(warehouse_conn)["a"] == row
    assert copies_counted(warehouse_conn, "a") == [
        "raw-events/shardId-000000000000/9", "raw-events/shardId-000000000001/3"]


def test_a_warehouse_that_listed_copies_in_the_event_row_moves_them_to_the_side_table(warehouse_conn):
    # before RAW.EVENT_COPIES an event row listed its counted copies in COPY_KEYS ('|key|key|'): the next
    # start moves them, so re-merging those copies' range still counts nothing twice
    from warehouse.ddl import warehouse_ensure

    land(warehouse_conn, "ch-0", "2", [canonical_event("a", sequence_number="1", event_time=T0),
                                       canonical_event("a", sequence_number="2", event_time=T0,
                                                       received_at=T0 + SECOND)])
    merge(warehouse_conn)
    warehouse_query(warehouse_conn, "DELETE FROM RAW.EVENT_COPIES")  # the layout of a warehouse made before
    warehouse_query(warehouse_conn, "ALTER TABLE CANONICAL.EVENTS ADD COLUMN COPY_KEYS VARCHAR")
    warehouse_query(warehouse_conn, "UPDATE CANONICAL.EVENTS SET COPY_KEYS = "
                                    "'|raw-events/shardId-000000000000/1|raw-events/shardId-000000000000/2|'")
    ensured = warehouse_ensure(warehouse_conn)
    assert ensured.columns_added == ("RAW.EVENT_COPIES (moved from CANONICAL.EVENTS.COPY_KEYS)",)
    assert "COPY_KEYS" not in stored(warehouse_conn)["a"]
    assert copies_counted(warehouse_conn, "a") == [
        "raw-events/shardId-000000000000/1", "raw-events/shardId-000000000000/2"]
    assert warehouse_ensure(warehouse_conn).columns_added == ()
    merge(warehouse_conn, ranges=[ChannelRange("ch-0", None, "2")], now=NOW + dt.timedelta(minutes=5))
    assert stored(warehouse_conn)["a"]["DUPLICATE_COUNT"] == 1


def test_E1b_a_range_landed_again_by_a_retry_counts_no_duplicates(warehouse_conn):
    # review E1b: a retry after a crash re-read a longer range and re-landed the overlap: 22
    # "duplicates" with none sent. Whatever range a retry lands, a stream record counts once.
    first = [canonical_event(f"e{i}", sequence_number=str(i)) for i in range(1, 21)]
    land(warehouse_conn, "ch-0", "20", first)
    retry = [canonical_event(f"e{i}", sequence_number=str(i)) for i in range(1, 31)]
    land(warehouse_conn, "ch-0", "30", retry)
    merge(warehouse_conn)
    rows = stored(warehouse_conn)
    assert len(rows) == 30
    assert sum(r["DUPLICATE_COUNT"] for r in rows.values()) == 0
    assert pipeline_counts(warehouse_conn)["duplicates"] == 0


def test_quarantine_rows_land_once_however_often_landed_or_merged(warehouse_conn):
    q = quarantine_row(quarantine_id="q-1", sequence_number="3", shard_id="shardId-000000000000")
    land(warehouse_conn, "ch-0", "3", [], [q])
    merge(warehouse_conn)
    land(warehouse_conn, "ch-0", "4", [], [q])  # the same record quarantined again by a retry
    merge(warehouse_conn)
    merge(warehouse_conn, ranges=[ChannelRange("ch-0", None, "4")])
    rows = warehouse_query(warehouse_conn, "SELECT QUARANTINE_ID, STATUS FROM RAW.QUARANTINE")
    assert rows == [{"QUARANTINE_ID": "q-1", "STATUS": "new"}]


def test_a_later_landing_of_the_same_record_replaces_the_row_once(warehouse_conn):
    # a replay after a mapping fix lands the same stream record again: its content wins, counted once
    land(warehouse_conn, "ch-0", "1", [canonical_event("a", sequence_number="1", product="old")])
    merge(warehouse_conn)
    land(warehouse_conn, "replay-1", "1", [canonical_event("a", sequence_number="1", product="fixed")])
    merge(warehouse_conn, now=NOW + dt.timedelta(minutes=1))
    row = stored(warehouse_conn)["a"]
    assert (row["PRODUCT"], row["DUPLICATE_COUNT"]) == ("fixed", 0)


def test_the_merge_is_bounded_by_the_event_date_window_and_late_copies_go_aside(warehouse_conn):
    old = T0 - 10 * DAY  # ten days before the merge's day, outside a 3-day window
    land(warehouse_conn, "ch-0", "1", [canonical_event("late", sequence_number="1", received_at=old, event_time=old)])
    first = merge(warehouse_conn, window_days=3)
    assert first.events_inserted == 1  # a late first arrival is stored
    land(warehouse_conn, "ch-0", "2", [canonical_event("late", sequence_number="2", received_at=old + SECOND,
                                                       event_time=old)])
    second = merge(warehouse_conn, window_days=3, now=NOW + dt.timedelta(minutes=1))
    assert (second.events_inserted, second.events_updated, second.late_copies) == (0, 0, 1)
    row = stored(warehouse_conn)["late"]
    assert row["DUPLICATE_COUNT"] == 0 and row["SEQUENCE_NUMBER"] == "1"  # the old partition is untouched
    late = warehouse_query(warehouse_conn, "SELECT EVENT_ID, COPY_KEY FROM RAW.LATE_COPIES")
    assert late == [{"EVENT_ID": "late", "COPY_KEY": "raw-events/shardId-000000000000/2"}]
    merge(warehouse_conn, window_days=3, ranges=[ChannelRange("ch-0", None, "2")])  # idempotent too
    assert len(warehouse_query(warehouse_conn, "SELECT * FROM RAW.LATE_COPIES")) == 1


def test_the_merge_log_names_each_merge_for_the_models(warehouse_conn):
    land(warehouse_conn, "ch-0", "1", [canonical_event("a", sequence_number="1")])
    result = merge(warehouse_conn, fence=7)
    (log,) = warehouse_query(warehouse_conn, "SELECT * FROM RAW.MERGE_LOG")
    assert (log["MERGE_ID"], log["FENCE"], log["EVENTS_INSERTED"]) == (result.merge_id, 7, 1)
    assert stored(warehouse_conn)["a"]["MERGED_AT"] == log["MERGED_AT"]


def test_nothing_to_merge_writes_nothing(warehouse_conn):
    assert merge(warehouse_conn).ranges == 0
    assert warehouse_query(warehouse_conn, "SELECT * FROM RAW.MERGE_LOG") == []


def test_a_large_append_goes_out_in_several_statements_of_one_transaction(warehouse_conn):
    events = [canonical_event(f"e{i}", sequence_number=str(i)) for i in range(60)]
    result = landing_append(warehouse_conn, channel="ch-0", offset_token="59", rows=orjson.dumps(events),
                            max_statement_bytes=20_000)
    assert result.rows == 60
    assert merge(warehouse_conn).events_inserted == 60


def test_the_embedded_client_fences_a_reopened_channel(warehouse_conn, warehouse_database):
    from warehouse.channels import ChannelInvalidated
    from warehouse.connection import warehouse_connect

    client = EmbeddedLandingClient(connect=lambda: warehouse_connect(database=warehouse_database))
    try:
        old = client.open_channel("ch-0")
        old.append(landing_rows_json(orjson.dumps([canonical_event("a", sequence_number="1")])), offset_token="1")
        new = client.open_channel("ch-0")  # a lease takeover reopens the channel
        assert new.latest_committed_offset_token() == "1"
        with pytest.raises(ChannelInvalidated):
            old.append(landing_rows_json(orjson.dumps([canonical_event("b", sequence_number="2")])), offset_token="2")
        # the refused append's rows went with its token: its session's transaction was rolled back
        assert landed_count(warehouse_conn, "b") == 0
        new.append(landing_rows_json(orjson.dumps([canonical_event("b", sequence_number="2")])), offset_token="2")
        assert client.latest_committed_offset_tokens(["ch-0", "other"]) == {"ch-0": "2", "other": None}
        assert landed_count(warehouse_conn, "b") == 1
        # every write of the client's session was committed (it runs with AUTOCOMMIT = FALSE: a write left
        # uncommitted would stay invisible here, and the idle session would be expired and rolled back)
        opens = warehouse_query(warehouse_conn, "SELECT COUNT(*) AS N FROM RAW.CHANNEL_OFFSETS "
                                "WHERE CHANNEL = 'ch-0' AND OFFSET_TOKEN IS NULL")
        assert opens[0]["N"] == 2
        assert channel_committed_tokens(warehouse_conn, ["ch-0"]) == {"ch-0": "2"}
    finally:
        client.close()


def test_a_unit_landed_in_pieces_commits_every_piece_with_its_one_token_or_none(warehouse_conn, warehouse_database):
    from warehouse.channels import ChannelInvalidated
    from warehouse.connection import warehouse_connect

    def pieces(first: int) -> list[bytes]:
        return landing_rows_pieces(
            [orjson.dumps([canonical_event(f"e{first + i}", sequence_number=str(first + i)) for i in range(k, k + 3)])
             for k in (0, 3)],
            [quarantine_row(sequence_number=str(first + 6))])

    client = EmbeddedLandingClient(connect=lambda: warehouse_connect(database=warehouse_database))
    try:
        old = client.open_channel("ch-0")
        new = client.open_channel("ch-0")
        with pytest.raises(ChannelInvalidated):
            old.append(pieces(10), offset_token="16")
        assert sum(landed_count(warehouse_conn, f"e{n}") for n in range(10, 16)) == 0  # no piece of it
        result = new.append(pieces(10), offset_token="16")
        assert result.rows == 7
        assert sum(landed_count(warehouse_conn, f"e{n}") for n in range(10, 16)) == 6
        tokens = warehouse_query(warehouse_conn, "SELECT OFFSET_TOKEN, ROW_COUNT FROM RAW.CHANNEL_OFFSETS "
                                 "WHERE CHANNEL = 'ch-0' AND OFFSET_TOKEN IS NOT NULL")
        assert [(t["OFFSET_TOKEN"], t["ROW_COUNT"]) for t in tokens] == [("16", 7)]
        assert merge(warehouse_conn).events_inserted == 6
    finally:
        client.close()


def test_a_units_landing_pieces_are_joined_up_to_a_statement_and_the_quarantine_rows_come_last():
    # a unit is ten batches: one statement each would cost the writer ten round trips instead of two
    first, second = b'[{"event_id":"a"}]', b'[{"event_id":"b"},{"event_id":"c"}]'
    out = landing_rows_pieces([first, b"[]", second], [{"reason_code": "x"}])
    assert [orjson.loads(p) for p in out] == [
        [{"event_id": "a"}, {"event_id": "b"}, {"event_id": "c"}, {"quarantine": {"reason_code": "x"}}]]
    # joined while the array stays within the statement's bytes (an exact fit included); never split
    from warehouse.landing import _statement_chunks

    third = b'[{"event_id":"d"}]'
    fit = len(first) + len(second) - 1  # "[" + a's inside + "," + b's and c's + "]"
    out = landing_rows_pieces([first, second, third], max_bytes=fit)
    assert [orjson.loads(p) for p in out] == [[{"event_id": "a"}, {"event_id": "b"}, {"event_id": "c"}],
                                               [{"event_id": "d"}]]
    assert len(out[0]) == fit and len(list(_statement_chunks(out, fit))) == 2  # no re-parse, no 3rd statement
    assert out[1] is third  # a lone piece is not copied
    out = landing_rows_pieces([first, second], max_bytes=fit - 1)
    assert [len(orjson.loads(p)) for p in out] == [1, 2]
    # quarantine rows that would take the last array over the limit get an array of their own
    out = landing_rows_pieces([first, second], [{"reason_code": "x" * 40}], max_bytes=fit)
    assert [orjson.loads(p) for p in out] == [[{"event_id": "a"}, {"event_id": "b"}, {"event_id": "c"}],
                                               [{"quarantine": {"reason_code": "x" * 40}}]]
    assert landing_rows_pieces([first], b"[]") == [first]  # no quarantine rows: nothing copied
    # ten batches that need two statements make two of five, not one of eight and one of two
    ten = [orjson.dumps([{"event_id": f"e{i}"}]) for i in range(10)]
    out = landing_rows_pieces(ten, max_bytes=8 * len(ten[0]))
    assert [len(orjson.loads(p)) for p in out] == [5, 5]
    assert [e["event_id"] for p in out for e in orjson.loads(p)] == [f"e{i}" for i in range(10)]
    big = b'[{"event_id":"' + b"e" * 100 + b'"}]'
    out = landing_rows_pieces([first, big, third], max_bytes=50)
    assert [len(orjson.loads(p)) for p in out] == [1, 1, 1] and out[1] is big
    assert landing_rows_pieces([], b'[{"reason_code": "x"}]') == [b'[{"quarantine":{"reason_code":"x"}}]']
    assert landing_rows_pieces([b"[]"]) == [b"[]"]


def test_text_beyond_ascii_lands_unchanged(warehouse_conn):
    land(warehouse_conn, "ch-0", "1", [canonical_event("u", product="café ☕ 𝄞 \"quoted\" \\ back")])
    merge(warehouse_conn)
    assert stored(warehouse_conn)["u"]["PRODUCT"] == "café ☕ 𝄞 \"quoted\" \\ back"


def test_a_merger_whose_lease_was_taken_over_is_refused_before_it_writes(warehouse_conn):
    # review follow-up: mergers are fenced inside the warehouse, not only by their PostgreSQL lease
    from warehouse.landing import MergerFenced

    land(warehouse_conn, "ch-0", "1", [canonical_event("a", sequence_number="1")])
    assert merge(warehouse_conn, fence=7).events_inserted == 1
    land(warehouse_conn, "ch-0", "2", [canonical_event("b", sequence_number="2")])
    with pytest.raises(MergerFenced):
        merge(warehouse_conn, fence=6)                  # the older holder wakes up
    assert set(stored(warehouse_conn)) == {"a"} and merge_progress(warehouse_conn) == {"ch-0": "1"}
    assert merge(warehouse_conn, fence=7).events_inserted == 1   # the holder itself goes on


def test_a_claim_reads_only_rows_landed_since_the_channels_last_merge(warehouse_conn):
    # review follow-up: the claim's filter on channel and token alone read every row ever landed
    from warehouse.landing import CLAIM_MARGIN, _claim_from

    land(warehouse_conn, "ch-0", "1", [canonical_event("a", sequence_number="1")])
    merge(warehouse_conn)
    land(warehouse_conn, "ch-0", "2", [canonical_event("b", sequence_number="2")])
    (pending,) = merge_ranges_pending(warehouse_conn)
    assert pending.merged_at == NOW                      # progress remembers when the channel merged
    assert _claim_from([pending], NOW) == NOW - CLAIM_MARGIN
    new_channel = ChannelRange("ch-new", None, "5")
    assert _claim_from([pending, new_channel], NOW) < NOW - dt.timedelta(days=7)   # bounded all the same
    # a row that landed before the bound is not claimed (a zombie's re-land of merged rows)
    warehouse_query(warehouse_conn, "UPDATE RAW.LANDING_EVENTS SET LANDED_AT = '2020-01-01' WHERE EVENT_ID = 'b'")
    assert merge(warehouse_conn, now=NOW + dt.timedelta(minutes=1)).events_inserted == 0


def test_the_embedded_client_lands_text_beyond_ascii_through_its_faster_requests(warehouse_conn, warehouse_database):
    # the embedded client's requests: bodies written by orjson and gzipped at level 0, without reading
    # proxies from the environment; the rows' text (quotes, backslashes, beyond ASCII) lands unchanged
    import snowflake.connector.network as network

    from warehouse.connection import warehouse_connect
    from warehouse.landing import _FastGzip, _FastJson

    text = "café ☕ 𝄞 \"quoted\" \\ back \u2028 tab\t nul-free"
    client = EmbeddedLandingClient(connect=lambda: warehouse_connect(database=warehouse_database))
    try:
        channel = client.open_channel("ch-0")
        channel.append(landing_rows_json(orjson.dumps([canonical_event("u", product=text)]),
                                         [quarantine_row(sequence_number="2", payload={"t": text})]), offset_token="2")
        assert isinstance(network.json, _FastJson) and isinstance(network.gzip, _FastGzip)
        manager = client._conn._session_manager
        sessions = [s for pool in manager.sessions_map.values() for s in [*pool._idle_sessions, *pool._active_sessions]]
        assert sessions and not any(s.trust_env for s in sessions)
    finally:
        client.close()
    merge(warehouse_conn)
    assert stored(warehouse_conn)["u"]["PRODUCT"] == text
    assert warehouse_query(warehouse_conn, "SELECT PAYLOAD FROM RAW.QUARANTINE")[0]["PAYLOAD"] == {"t": text}


def test_the_fast_request_body_helpers_write_what_the_standard_library_reads():
    import gzip
    import json
    import uuid

    from snowflake.connector.network import SnowflakeRestfulJsonEncoder

    from warehouse.landing import _FastGzip, _FastJson

    body = {"sqlText": "INSERT …", "bindings": {"1": {"type": "TEXT", "value": '[{"a": "é \\" ☕"}]'}},
            "requestId": uuid.UUID(int=7)}
    written = _FastJson().dumps(body, cls=SnowflakeRestfulJsonEncoder)
    assert json.loads(written) == {**body, "requestId": str(uuid.UUID(int=7))}
    # what orjson refuses (an integer over 64 bits) is written by json.dumps, with the connector's encoder
    refused = {**body, "n": 2**70}
    encoder = SnowflakeRestfulJsonEncoder
    assert _FastJson().dumps(refused, cls=encoder) == json.dumps(refused, cls=encoder)
    data = written.encode()
    assert gzip.decompress(_FastGzip().compress(data)) == data
    assert gzip.decompress(_FastGzip().compress(data, 9)) == data


def test_landing_rows_join_events_and_quarantine_rows_without_reparsing_the_events():
    events = b' [ {"event_id": "a"} , {"event_id": "b"} ] '
    assert orjson.loads(landing_rows_json(events, [{"reason_code": "x"}])) == [
        {"event_id": "a"}, {"event_id": "b"}, {"quarantine": {"reason_code": "x"}}]
    assert landing_rows_json(b"[ ]", b'[{"reason_code": "x"}]') == b'[{"quarantine":{"reason_code":"x"}}]'
    assert landing_rows_json(b"[]") == landing_rows_json(None, []) == b"[]"
    with pytest.raises(ValueError):
        landing_rows_json(b'{"event_id": "a"}')


@pytest.mark.parametrize("size", [0, 1, 65_534, 65_535, 65_536, 131_070, 131_071, 3_000_001])
def test_the_stored_gzip_member_is_read_back_by_gzip_and_by_zlib_at_every_block_boundary(size):
    import gzip
    import os
    import zlib

    from warehouse.landing import gzip_stored_member

    data = os.urandom(size)
    member = gzip_stored_member(data)
    assert gzip.decompress(member) == data
    assert zlib.decompress(member, 31) == data  # a strict reader: trailer CRC-32 and size checked
    # stored blocks: the member is the data plus 5 bytes per 64 KiB block and 18 bytes of frame
    assert len(member) == size + 5 * max(1, -(-size // 0xFFFF)) + 18
    broken = bytearray(member)
    if size:
        broken[20] ^= 0xFF  # a flipped data byte fails the CRC-32 check
        with pytest.raises((OSError, zlib.error)):
            gzip.decompress(bytes(broken))


def test_a_statement_deadline_fires_once_due_and_a_cancelled_one_never_does():
    # the embedded client's statement timeouts (one watchdog thread for all): a statement that ends
    # first cancels its deadline; one still running when its deadline is due has it fired
    import time

    from warehouse.landing import _StatementDeadline

    fired: list[str] = []
    finished = _StatementDeadline(0.05, fired.append, ["finished in time"])
    finished.start()
    finished.cancel()
    overdue = _StatementDeadline(0.1, fired.append, ["overdue"])
    overdue.start()
    end = time.monotonic() + 30
    while not overdue.executed and time.monotonic() < end:
        time.sleep(0.02)
    assert fired == ["overdue"] and overdue.executed and not finished.executed


@pytest.mark.parametrize("seed", [1, 2])
def test_random_copies_landings_and_re_merges_count_each_stream_record_exactly_once(warehouse_conn, seed):
    # copies of a few events over three shards, some units landed twice (zombie writers), merges in
    # between and whole ranges merged again: every event's count, kept copy and side-table rows must be
    # what the records say, whatever the order
    import random

    rng = random.Random(seed)  # noqa: S311 - test data
    channels = {f"ch-{i}": f"shardId-00000000000{i}" for i in range(3)}
    next_seq = dict.fromkeys(channels, 1)
    sent: dict[str, dict[str, int]] = {}  # event id -> {copy key: received_at}
    landed: list[tuple[str, str, list[dict]]] = []
    minute = 0
    for _step in range(12):
        channel = rng.choice(sorted(channels))
        unit = []
        for _ in range(rng.randint(1, 4)):
            event_id = rng.choice(["a", "b", "c", "d"])
            seq = str(next_seq[channel])
            next_seq[channel] += 1
            received = T0 + rng.randint(0, 600) * SECOND
            unit.append(canonical_event(event_id, sequence_number=seq, shard_id=channels[channel], event_time=T0,
                                        received_at=received))
            sent.setdefault(event_id, {})[f"raw-events/{channels[channel]}/{seq}"] = received
        land(warehouse_conn, channel, unit[-1]["lineage"]["sequence_number"], unit)
        landed.append((channel, unit[-1]["lineage"]["sequence_number"], unit))
        if rng.random() < 0.3:  # a zombie lands an earlier unit again
            old_channel, old_token, old_unit = rng.choice(landed)
            land(warehouse_conn, old_channel, old_token, old_unit)
        if rng.random() < 0.5:
            minute += 1
            merge(warehouse_conn, now=NOW + dt.timedelta(minutes=minute))
        if rng.random() < 0.3 and landed:
            minute += 1
            again_channel, again_token, _ = rng.choice(landed)
            merge(warehouse_conn, ranges=[ChannelRange(again_channel, None, again_token)],
                  now=NOW + dt.timedelta(minutes=minute))
    merge(warehouse_conn, now=NOW + dt.timedelta(minutes=minute + 1))
    merged_keys = {e: set(keys) for e, keys in sent.items()}
    rows = stored(warehouse_conn)
    assert set(rows) == set(merged_keys)
    for event_id, keys in merged_keys.items():
        row = rows[event_id]
        assert row["DUPLICATE_COUNT"] == len(keys) - 1, event_id
        kept = min(keys, key=lambda k: (sent[event_id][k], k.split("/")[1], int(k.split("/")[2])))
        assert f"raw-events/{row['SHARD_ID']}/{row['SEQUENCE_NUMBER']}" == kept, event_id
        assert copies_counted(warehouse_conn, event_id) == (sorted(keys) if len(keys) > 1 else [])
    before = stored(warehouse_conn)
    for channel in channels:
        merge(warehouse_conn, ranges=[ChannelRange(channel, None, str(next_seq[channel]))],
              now=NOW + dt.timedelta(hours=1))
    assert stored(warehouse_conn) == before


def test_an_event_whose_side_rows_were_lost_counts_only_its_new_copy(warehouse_conn):
    # review of dd0f80b: the count took "DUPLICATE_COUNT = 0" for "the kept copy has no side row yet", so an
    # event with a count but without its rows (lost in an upgrade, or an erasure gone astray) counted the kept
    # copy again with its next copy. The count now reads which row is the kept copy from the row itself.
    land(warehouse_conn, "ch-0", "2", [canonical_event("a", sequence_number="1", event_time=T0),
                                       canonical_event("a", sequence_number="2", event_time=T0,
                                                       received_at=T0 + SECOND)])
    merge(warehouse_conn)
    warehouse_query(warehouse_conn, "DELETE FROM RAW.EVENT_COPIES")
    land(warehouse_conn, "ch-0", "3", [canonical_event("a", sequence_number="3", event_time=T0,
                                                       received_at=T0 + 2 * SECOND)])
    merge(warehouse_conn, now=NOW + dt.timedelta(minutes=1))
    assert stored(warehouse_conn)["a"]["DUPLICATE_COUNT"] == 2
    kept = warehouse_query(warehouse_conn, "SELECT COPY_KEY FROM RAW.EVENT_COPIES WHERE WAS_KEPT")
    assert kept == [{"COPY_KEY": "raw-events/shardId-000000000000/1"}]


def test_a_merge_takes_no_id_from_its_caller(warehouse_conn):
    # review of dd0f80b: a merge tells its own side-table rows apart by its id, so a caller's id used twice
    # counted the first merge's copies again (1 became 3)
    land(warehouse_conn, "ch-0", "2", [canonical_event("a", sequence_number="1", event_time=T0),
                                       canonical_event("a", sequence_number="2", event_time=T0,
                                                       received_at=T0 + SECOND)])
    first = merge(warehouse_conn)
    with pytest.raises(TypeError):
        merge(warehouse_conn, merge_id=first.merge_id)
    again = merge(warehouse_conn, ranges=[ChannelRange("ch-0", None, "2")], now=NOW + dt.timedelta(minutes=1))
    assert again.merge_id != first.merge_id and stored(warehouse_conn)["a"]["DUPLICATE_COUNT"] == 1


def test_two_processes_moving_the_old_copy_keys_at_once_both_start(warehouse_conn):
    # review of dd0f80b: both saw COPY_KEYS at start-up; the second's move failed once the first dropped it
    from warehouse.ddl import _copy_keys_move, warehouse_ensure

    warehouse_query(warehouse_conn, "ALTER TABLE CANONICAL.EVENTS ADD COLUMN COPY_KEYS VARCHAR")
    cur = warehouse_conn.cursor()
    try:
        _copy_keys_move(cur, warehouse_conn.database)  # the other process, between this one's look and move
    finally:
        cur.close()
    warehouse_query(warehouse_conn, "ALTER TABLE CANONICAL.EVENTS ADD COLUMN COPY_KEYS VARCHAR")
    import warehouse.ddl as ddl

    real = ddl._copy_keys_move

    def moved_by_the_other_process_first(cur, db):
        cur.execute(f"ALTER TABLE {db}.CANONICAL.EVENTS DROP COLUMN COPY_KEYS")  # noqa: S608 - test-made name
        real(cur, db)

    ddl._copy_keys_move = moved_by_the_other_process_first
    try:
        warehouse_ensure(warehouse_conn)  # starts; the column is gone either way
    finally:
        ddl._copy_keys_move = real
    assert "COPY_KEYS" not in {r["COLUMN_NAME"] for r in warehouse_query(
        warehouse_conn, "SELECT COLUMN_NAME FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_NAME = 'EVENTS'")}
