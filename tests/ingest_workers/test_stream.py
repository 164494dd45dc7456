"""The stream producer against a real moto server: chunking, partition keys, partial-failure retries,
throttling, outages; the AWS helpers; the partition-key rule; and the local_aws command."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from ingest_workers import aws
from ingest_workers.partition import partition_key
from ingest_workers.stream import (
    MAX_BYTES_PER_CALL,
    RecordTooLarge,
    StreamProducer,
    StreamUnavailable,
    chunk_records,
)
from tests.ingest_workers.conftest import _free_port, read_stream

ROOT = Path(__file__).resolve().parents[2]
THROTTLED = {"ErrorCode": "ProvisionedThroughputExceededException",
             "ErrorMessage": "Rate exceeded for shard shardId-000000000001 in stream raw-events under account "
                             "123456789012."}


class FaultyKinesis:
    """The real boto3 client with put_records failing the way Kinesis reports it.

    `plan` holds one entry per call: a set of entry positions to refuse (sent back with an ErrorCode,
    FailedRecordCount counting them, the rest really put), an Exception to raise for the whole call,
    or None for a clean call. Calls beyond the plan are clean.
    """

    def __init__(self, real, plan):
        self.real = real
        self.plan = list(plan)
        self.calls: list[int] = []

    def put_records(self, *, StreamName, Records):  # noqa: N803 (boto3's names)
        self.calls.append(len(Records))
        step = self.plan.pop(0) if self.plan else None
        if isinstance(step, Exception):
            raise step
        refused = step or set()
        if callable(refused):
            refused = {i for i in range(len(Records)) if refused(i)}
        kept = [r for i, r in enumerate(Records) if i not in refused]
        answer = self.real.put_records(StreamName=StreamName, Records=kept)["Records"] if kept else []
        results = iter(answer)
        entries = [dict(THROTTLED) if i in refused else next(results) for i in range(len(Records))]
        return {"FailedRecordCount": len(refused), "Records": entries, "EncryptionType": "NONE"}

    def __getattr__(self, name):
        return getattr(self.real, name)


def throttled_call() -> ClientError:
    return ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "Rate exceeded"}},
                       "PutRecords")


@pytest.fixture
def records():
    return [(f"conv-{i % 25}", f'{{"n": {i}}}'.encode()) for i in range(1200)]


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def producer_for(stream, sleeps):
    def make(client=None, **kwargs):
        kwargs.setdefault("jitter", lambda: 0.5)
        return StreamProducer(client=client or aws.kinesis_client(), stream_name=stream, sleep=sleeps.append,
                              **kwargs)

    return make


# --- chunking (pure) --------------------------------------------------------------------------------

def test_chunks_hold_at_most_500_records():
    chunks = chunk_records([("k", b"x")] * 1201)
    assert [len(c) for c in chunks] == [500, 500, 201]
    assert [i for c in chunks for i in c] == list(range(1201))


def test_chunks_hold_at_most_5_mib_counting_partition_keys():
    record = ("k" * 100, b"x" * (1024 * 1024 - 100))  # exactly 1 MiB with its key
    chunks = chunk_records([record] * 11)
    assert [len(c) for c in chunks] == [5, 5, 1]
    for chunk in chunks:
        assert sum(len(record[0]) + len(record[1]) for _ in chunk) <= MAX_BYTES_PER_CALL


def test_a_record_over_1_mib_is_refused_before_anything_is_sent():
    with pytest.raises(RecordTooLarge):
        chunk_records([("k", b"x"), ("k", b"x" * (1024 * 1024))])


# --- against the moto server ------------------------------------------------------------------------

def test_put_chunks_1200_records_into_three_calls_and_all_land(producer_for, records, kinesis, stream):
    faulty = FaultyKinesis(aws.kinesis_client(), plan=[])
    result = producer_for(faulty).put(records)
    assert faulty.calls == [500, 500, 200]
    assert result.calls == 3 and result.retried == 0 and result.records == 1200
    landed = read_stream(kinesis, stream)
    assert sorted(r["data"] for r in landed) == sorted(data for _, data in records)


def test_same_partition_key_lands_on_one_shard_in_order(producer_for, records, kinesis, stream):
    result = producer_for().put(records)
    shards_by_key = defaultdict(set)
    for (key, _), shard in zip(records, result.shard_ids, strict=True):
        shards_by_key[key].add(shard)
    assert all(len(shards) == 1 for shards in shards_by_key.values())
    assert len({s for shards in shards_by_key.values() for s in shards}) > 1  # and keys spread over shards
    landed = read_stream(kinesis, stream)
    by_key = defaultdict(list)
    for record in landed:
        by_key[record["key"]].append(int(record["data"].decode().split(": ")[1].rstrip("}")))
    for numbers in by_key.values():
        assert numbers == sorted(numbers)


def test_partial_failure_retries_only_the_refused_entries(producer_for, records, kinesis, stream, sleeps):
    batch = records[:300]
    faulty = FaultyKinesis(aws.kinesis_client(), plan=[lambda i: i % 3 == 0])
    result = producer_for(faulty, base_delay=0.1).put(batch)
    assert faulty.calls == [300, 100]  # the second call carries only the 100 refused entries
    assert result.calls == 2 and result.retried == 100
    assert sleeps == [pytest.approx(0.075)]  # base 0.1, equal jitter at 0.5: 0.05 + 0.5 * 0.05
    landed = read_stream(kinesis, stream)
    assert sorted(r["data"] for r in landed) == sorted(data for _, data in batch)  # each exactly once
    assert all(result.shard_ids) and all(result.sequence_numbers)


def test_repeated_partial_failures_back_off_exponentially(producer_for, records, kinesis, stream, sleeps):
    batch = records[:50]
    faulty = FaultyKinesis(aws.kinesis_client(), plan=[set(range(0, 50, 2)), {0, 1, 2}, {1}])
    result = producer_for(faulty, base_delay=0.1, max_delay=1.0, jitter=lambda: 1.0).put(batch)
    assert faulty.calls == [50, 25, 3, 1]
    assert sleeps == [pytest.approx(0.1), pytest.approx(0.2), pytest.approx(0.4)]
    assert result.retried == 25 + 3 + 1
    assert len(read_stream(kinesis, stream)) == 50


def test_whole_call_throttling_is_retried_the_same_way(producer_for, records, kinesis, stream, sleeps):
    faulty = FaultyKinesis(aws.kinesis_client(), plan=[throttled_call(), throttled_call()])
    result = producer_for(faulty, base_delay=0.1, jitter=lambda: 0.0).put(records[:10])
    assert faulty.calls == [10, 10, 10]
    assert sleeps == [pytest.approx(0.05), pytest.approx(0.1)]
    assert result.retried == 20
    assert len(read_stream(kinesis, stream)) == 10


def test_giving_up_raises_stream_unavailable_after_bounded_attempts(producer_for, records, sleeps):
    faulty = FaultyKinesis(aws.kinesis_client(), plan=[{0, 1}] * 10)
    with pytest.raises(StreamUnavailable) as caught:
        producer_for(faulty, max_attempts=4, base_delay=0.1, max_delay=0.15, jitter=lambda: 1.0).put(records[:5])
    assert faulty.calls == [5, 2, 2, 2]
    assert sleeps == [pytest.approx(0.1), pytest.approx(0.15), pytest.approx(0.15)]  # capped
    assert caught.value.failed == 2 and caught.value.written == 3
    assert caught.value.error_code == "ProvisionedThroughputExceededException"


def test_a_deadline_stops_retrying_before_sleeping_past_it(producer_for, records, sleeps):
    clock = iter([100.0, 100.0, 101.9]).__next__
    faulty = FaultyKinesis(aws.kinesis_client(), plan=[{0}] * 10)
    with pytest.raises(StreamUnavailable, match="deadline"):
        producer_for(faulty, deadline_seconds=2.0, base_delay=0.4, jitter=lambda: 1.0, clock=clock).put(records[:3])
    assert sleeps == [pytest.approx(0.4)]


def test_a_missing_stream_is_unavailable_without_retrying(aws_settings, sleeps):
    producer = StreamProducer(client=aws.kinesis_client(), stream_name="no-such-stream", sleep=sleeps.append)
    with pytest.raises(StreamUnavailable) as caught:
        producer.put([("k", b"{}")])
    assert caught.value.error_code == "ResourceNotFoundException"
    assert sleeps == []


def test_an_unreachable_endpoint_is_unavailable_quickly(aws_settings, sleeps):
    aws_settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{_free_port()}"
    started = time.monotonic()
    with pytest.raises(StreamUnavailable) as caught:
        StreamProducer(stream_name="raw-events", sleep=sleeps.append).put([("k", b"{}")])
    assert "unreachable" in caught.value.message
    assert time.monotonic() - started < 3.0


def test_concurrent_producers_lose_nothing_on_the_local_emulator(aws_settings, kinesis, stream):
    """moto alone loses ~0.1% of records when put_records calls race on a shard; LocalAwsServer must not."""
    import threading

    def produce(worker: int) -> None:
        producer = StreamProducer(client=aws.kinesis_client(), stream_name=stream)
        for call in range(10):
            producer.put([("one-conversation", f"{worker}-{call}-{i}".encode()) for i in range(100)])

    threads = [threading.Thread(target=produce, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(read_stream(kinesis, stream)) == 4000


# --- AWS helpers ------------------------------------------------------------------------------------

def test_clients_follow_settings_and_use_short_timeouts_and_standard_retries(aws_settings):
    client = aws.kinesis_client()
    assert client is aws.kinesis_client()  # cached
    assert client.meta.endpoint_url == aws_settings.AWS_ENDPOINT_URL
    assert client.meta.config.connect_timeout <= 2 and client.meta.config.read_timeout <= 5
    assert client.meta.config.retries["mode"] == "standard"
    aws_settings.AWS_REGION = "eu-west-1"
    assert aws.kinesis_client() is not client and aws.kinesis_client().meta.region_name == "eu-west-1"


def test_stream_ensure_creates_once_and_waits_for_active(aws_settings, kinesis):
    name = f"ensure-{time.time_ns()}"
    first = aws.stream_ensure(3, stream_name=name)
    again = aws.stream_ensure(5, stream_name=name)  # an existing stream is left as it is
    assert first["StreamStatus"] == again["StreamStatus"] == "ACTIVE"
    assert len(kinesis.list_shards(StreamName=name)["Shards"]) == 3
    # seven days, not Kinesis's 24-hour default: time to unpark a shard before its records expire
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["RetentionPeriodHours"] == first["RetentionPeriodHours"] == 168
    kinesis.delete_stream(StreamName=name)


def test_bucket_ensure_is_idempotent(aws_settings):
    name = f"archive-{time.time_ns()}"
    assert aws.bucket_ensure(name) == name
    assert aws.bucket_ensure(name) == name
    s3 = aws.s3_client()
    s3.put_object(Bucket=name, Key="a", Body=b"1")
    assert s3.get_object(Bucket=name, Key="a")["Body"].read() == b"1"
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]}
    tiering = rules["raw-archive-tiering-and-expiry"]
    assert tiering["Transitions"] == [{"Days": 30, "StorageClass": "GLACIER_IR"}]
    assert tiering["Expiration"] == {"Days": 180} and tiering["Filter"] == {"Prefix": "raw/"}
    assert rules["abort-incomplete-uploads"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}


# --- the partition-key rule (pure) ------------------------------------------------------------------

def test_slack_messages_of_one_thread_share_a_key():
    root = {"event": {"channel": "C0LAN2Q65", "ts": "1772360800.001100", "user": "U1"}}
    reply = {"event": {"channel": "C0LAN2Q65", "ts": "1772361119.004500", "thread_ts": "1772360800.001100"}}
    other = {"event": {"channel": "C0LAN2Q65", "ts": "1772361200.000100"}}
    assert partition_key("slack-bot", root) == partition_key("slack-bot", reply)
    assert partition_key("slack-bot", root) == "slack-bot|C0LAN2Q65:1772360800.001100"
    assert partition_key("slack-bot", other) != partition_key("slack-bot", root)


def test_alexa_turns_of_one_session_share_a_key():
    turn = {"session": {"sessionId": "amzn1.echo-api.session.4b1f"}, "request": {"requestId": "r1"}}
    assert partition_key("voice-assistant", turn) == "voice-assistant|amzn1.echo-api.session.4b1f"


@pytest.mark.parametrize(("payload", "identity"), [
    ({"conversationId": "wc_1", "sessionId": "ws_1", "messageId": "m"}, "wc_1"),
    ({"chat": {"conversation_id": "ios-c"}, "session": {"id": "ios-s"}}, "ios-c"),
    ({"conversation": {"id": "and-c"}, "sessionId": "and-s"}, "and-c"),
    ({"origin": {"conversation_id": "gw-c", "session_id": "gw-s"}, "call_id": "x"}, "gw-c"),
    ({"session": {"id": "ios-s"}, "install_id": "i"}, "ios-s"),
    ({"anonymousId": "anon-1", "messageId": "m"}, "anon-1"),
    ({"messageId": "m-1"}, "m-1"),
    ({"conversationId": 42}, "42"),
    ({"conversationId": True, "messageId": "m-2"}, "m-2"),
])
def test_the_conversation_identity_wins_then_session_person_event(payload, identity):
    assert partition_key("src", payload) == f"src|{identity}"


def test_identity_less_events_get_a_random_key_and_long_keys_are_hashed():
    assert partition_key("src", {"x": 1}, random_key=lambda: "r4nd0m") == "src|r4nd0m"
    long_key = partition_key("src", {"conversationId": "c" * 400})
    assert len(long_key) <= 256 and long_key.startswith("h|")
    assert long_key == partition_key("src", {"conversationId": "c" * 400, "other": 1})


# --- manage.py local_aws ----------------------------------------------------------------------------

def test_local_aws_serves_the_stream_and_bucket_and_stops_on_sigterm(tmp_path):
    port = _free_port()
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "KINESIS_STREAM_NAME": "raw-events",
           "KINESIS_SHARD_COUNT": "3", "RAW_ARCHIVE_BUCKET": "chatorbit-raw-archive", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "manage.py", "local_aws"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "Local AWS ready" in line, line + proc.stderr.read() if proc.poll() is not None else line
        kinesis = boto3.client("kinesis", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                               aws_access_key_id="test", aws_secret_access_key="test")
        assert len(kinesis.list_shards(StreamName="raw-events")["Shards"]) == 3
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
        assert "chatorbit-raw-archive" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert "stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_local_aws_refuses_a_port_in_use(moto_server):
    port = int(moto_server.rsplit(":", 1)[1])
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    done = subprocess.run([sys.executable, "manage.py", "local_aws"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0
    assert "Cannot listen on" in done.stderr


def test_get_records_answers_parse_exactly_as_botocore_parses_them(aws_settings, kinesis, stream):
    # the consumer's client parses GetRecords with orjson (CPU); the result must be botocore's own
    StreamProducer().put([(f"k{i}", b'{"n": %d, "text": "h\\u00e9"}' % i) for i in range(30)]
                         + [("raw", b"\xff\x00 not json")])
    fast = aws.kinesis_client()
    assert fast is not kinesis
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        start = {"StreamName": stream, "ShardId": shard["ShardId"], "ShardIteratorType": "TRIM_HORIZON"}
        ours = fast.get_records(ShardIterator=fast.get_shard_iterator(**start)["ShardIterator"])
        theirs = kinesis.get_records(ShardIterator=kinesis.get_shard_iterator(**start)["ShardIterator"])
        assert [r["Data"] for r in ours["Records"]] == [r["Data"] for r in theirs["Records"]]
        for mine, reference in zip(ours["Records"], theirs["Records"], strict=True):
            assert mine == {**reference, "ApproximateArrivalTimestamp": mine["ApproximateArrivalTimestamp"]}
            assert mine["ApproximateArrivalTimestamp"] == reference["ApproximateArrivalTimestamp"]
            assert mine["ApproximateArrivalTimestamp"].utcoffset() == dt.timedelta(0)
        assert ours["MillisBehindLatest"] == theirs["MillisBehindLatest"]
        assert bool(ours.get("NextShardIterator")) == bool(theirs.get("NextShardIterator"))
    # errors still go through botocore: a bad iterator is a ClientError with its code
    with pytest.raises(ClientError) as err:
        fast.get_records(ShardIterator="not-an-iterator")
    assert err.value.response["Error"]["Code"]


def test_a_put_whose_answer_times_out_is_not_sent_again(aws_settings, sleeps):
    # hostile-input sweep D6: botocore re-sent put_records after its read timeout while the first call
    # was being written, so one request landed two or three times
    import socket
    import threading

    requests: list[bytes] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def accept_and_never_answer():
        listener.settimeout(0.2)
        held = []
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(conn)
            requests.append(conn.recv(65536))
        for conn in held:
            conn.close()

    server = threading.Thread(target=accept_and_never_answer, daemon=True)
    server.start()
    try:
        aws_settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{listener.getsockname()[1]}"
        aws_settings.AWS_KINESIS_CLIENT = {"read_timeout": 0.5}
        with pytest.raises(StreamUnavailable) as caught:
            StreamProducer(stream_name="raw-events", sleep=sleeps.append).put([("k", b"{}")])
        assert caught.value.error_code == "ReadTimeout" and "may or may not" in caught.value.message
        assert len(requests) == 1 and b"PutRecords" in requests[0]
        assert sleeps == []
    finally:
        stop.set()
        server.join(timeout=5)
        listener.close()


def _get_records_parsers():
    import botocore.session
    from botocore.parsers import create_parser

    shape = botocore.session.get_session().get_service_model("kinesis").operation_model("GetRecords").output_shape
    return aws._GetRecordsParser(create_parser("json")), create_parser("json"), shape


@pytest.mark.parametrize("body", [
    # a closed shard read to its end: null iterator, child shards
    b'{"Records": [{"SequenceNumber": "49", "ApproximateArrivalTimestamp": 1767225600.123, "Data": "aGk=",'
    b' "PartitionKey": "k", "EncryptionType": "NONE"}], "NextShardIterator": null, "MillisBehindLatest": 0,'
    b' "ChildShards": [{"ShardId": "shardId-000000000002", "ParentShards": ["shardId-000000000000"],'
    b' "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "9"}}]}',
    b'{"Records": [], "NextShardIterator": "AAA", "MillisBehindLatest": 12, "Unknown": {"x": 1}}',
    # what the fast decoder refuses goes to botocore: base64 with a line break, a null member of a record
    b'{"Records": [{"SequenceNumber": "1", "ApproximateArrivalTimestamp": 1767225600, "Data": "aG\\nk=",'
    b' "PartitionKey": "k"}], "NextShardIterator": "AAA", "MillisBehindLatest": 0}',
    b'{"Records": [{"SequenceNumber": "1", "ApproximateArrivalTimestamp": 1767225600.5, "Data": "",'
    b' "PartitionKey": "k", "EncryptionType": null}], "NextShardIterator": "AAA"}',
])
def test_get_records_bodies_parse_as_botocore_parses_them(body):
    ours, theirs, shape = _get_records_parsers()
    response = {"status_code": 200, "headers": {"x-amzn-requestid": "r-1"}, "body": body}
    mine, reference = ours.parse(dict(response), shape), theirs.parse(dict(response), shape)
    mine.pop("ResponseMetadata"), reference.pop("ResponseMetadata")
    assert mine == reference
    for record in mine["Records"]:
        assert record["ApproximateArrivalTimestamp"].utcoffset() is not None
