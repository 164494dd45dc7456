"""The stream producer: puts records on Kinesis with `put_records`, all of them or an error.

- Chunks: at most 500 records and 5 MiB (data + partition keys) per call, Kinesis' limits.
- Partial failures: Kinesis may refuse some entries of a call (`FailedRecordCount`, and an
  `ErrorCode` such as `ProvisionedThroughputExceededException` or `InternalFailure` on each refused
  entry). Only those entries are sent again, after an exponential backoff with jitter.
- Throttling of a whole call (`ProvisionedThroughputExceededException`, `LimitExceededException`,
  …) is retried the same way.
- Attempts are bounded (and optionally a deadline): when the producer gives up it raises
  `StreamUnavailable`, and the caller answers 503. A record that went in before the error may be put
  again by the producer's retry; the pipeline deduplicates by event_id, so that is a counted
  duplicate copy, never a second event.
- Connection errors and timeouts have already been retried by botocore (standard mode), so they
  raise `StreamUnavailable` at once instead of stacking a second retry loop on top.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from django.conf import settings

logger = logging.getLogger(__name__)

MAX_RECORDS_PER_CALL = 500
MAX_BYTES_PER_CALL = 5 * 1024 * 1024
MAX_RECORD_BYTES = 1024 * 1024
RETRYABLE_CALL_ERRORS = frozenset({
    "ProvisionedThroughputExceededException", "LimitExceededException", "ThrottlingException",
    "KMSThrottlingException", "InternalFailure", "InternalFailureException", "ServiceUnavailable",
    "ServiceUnavailableException",
})


class StreamUnavailable(Exception):  # noqa: N818 (the name says what the caller answers: 503)
    """The stream did not take every record (outage, missing stream, or throttled past the retries)."""

    def __init__(self, message: str, *, written: int = 0, failed: int = 0, error_code: str = ""):
        super().__init__(message)
        self.message = message
        self.written = written
        self.failed = failed
        self.error_code = error_code


class RecordTooLarge(ValueError):
    """A record over Kinesis' 1 MiB limit (data + partition key); nothing was put."""


@dataclasses.dataclass
class PutResult:
    records: int = 0
    calls: int = 0
    retried: int = 0  # entries sent more than once (partial failures and throttled calls)
    shard_ids: list[str] = dataclasses.field(default_factory=list)  # per input record, in order
    sequence_numbers: list[str] = dataclasses.field(default_factory=list)


def chunk_records(records: Sequence[tuple[str, bytes]]) -> list[list[int]]:
    """Indexes of `records` grouped into put_records calls of ≤ 500 records and ≤ 5 MiB."""
    chunks: list[list[int]] = []
    current: list[int] = []
    size = 0
    for index, (key, data) in enumerate(records):
        record_size = len(data) + len(key.encode("utf-8"))
        if record_size > MAX_RECORD_BYTES:
            raise RecordTooLarge(f"Record {index} is {record_size} bytes; Kinesis takes at most {MAX_RECORD_BYTES}.")
        if current and (len(current) >= MAX_RECORDS_PER_CALL or size + record_size > MAX_BYTES_PER_CALL):
            chunks.append(current)
            current, size = [], 0
        current.append(index)
        size += record_size
    if current:
        chunks.append(current)
    return chunks


#: a call that failed before reaching Kinesis: nothing was written
UNREACHABLE_CODES = frozenset({"EndpointConnectionError", "ConnectTimeoutError"})


class StreamProducer:
    """Puts (partition_key, data) records on a Kinesis stream; see the module docstring."""

    def __init__(
        self, *, client: Any = None, stream_name: str | None = None, max_attempts: int = 6,
        base_delay: float = 0.05, max_delay: float = 1.0, deadline_seconds: float | None = None,
        sleep: Callable[[float], None] = time.sleep, jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ):
        if client is None:
            from ingest_workers.aws import kinesis_put_client

            client = kinesis_put_client()
        self.client = client
        self.stream_name = stream_name or settings.KINESIS_STREAM_NAME
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.deadline_seconds = deadline_seconds
        self.sleep = sleep
        self.jitter = jitter
        self.clock = clock

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before attempt `attempt + 1`: exponential, capped, with "equal jitter"."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return ceiling / 2 + self.jitter() * ceiling / 2

    def put(self, records: Sequence[tuple[str, bytes]]) -> PutResult:
        """Put every record or raise StreamUnavailable (RecordTooLarge before anything is sent)."""
        result = PutResult(records=len(records), shard_ids=[""] * len(records), sequence_numbers=[""] * len(records))
        chunks = chunk_records(records)
        deadline = self.clock() + self.deadline_seconds if self.deadline_seconds is not None else None
        written = 0
        for chunk in chunks:
            try:
                self._put_chunk(records, chunk, result, deadline)
            except StreamUnavailable as err:
                err.written += written
                raise
            written += len(chunk)
        return result

    def _put_chunk(self, records: Sequence[tuple[str, bytes]], chunk: list[int], result: PutResult,
                   deadline: float | None) -> None:
        pending = chunk
        attempt = 0
        while True:
            attempt += 1
            if attempt > 1:
                result.retried += len(pending)
            result.calls += 1
            failed, error_code = self._call(records, pending, result)
            done = len(chunk) - len(failed)
            if not failed:
                return
            if attempt >= self.max_attempts:
                what = ("Kinesis is unreachable" if error_code in UNREACHABLE_CODES
                        else f"Kinesis refused {len(failed)} of {len(chunk)} records")
                raise StreamUnavailable(f"{what} after {attempt} attempts ({error_code}).",
                                        written=done, failed=len(failed), error_code=error_code)
            delay = self.backoff(attempt)
            if deadline is not None and self.clock() + delay > deadline:
                raise StreamUnavailable(
                    f"Kinesis refused {len(failed)} records and the request's deadline is near ({error_code}).",
                    written=done, failed=len(failed), error_code=error_code,
                )
            logger.warning("put_records: %d of %d records refused (%s); retry %d in %.3f s",
                           len(failed), len(pending), error_code, attempt, delay)
            self.sleep(delay)
            pending = failed

    def _call(
        self, records: Sequence[tuple[str, bytes]], pending: list[int], result: PutResult,
    ) -> tuple[list[int], str]:
        """One put_records call for `pending`; returns the indexes Kinesis refused and an error code."""
        entries = [{"PartitionKey": records[i][0], "Data": records[i][1]} for i in pending]
        try:
            response = self.client.put_records(StreamName=self.stream_name, Records=entries)
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", "ClientError"))
            if code in RETRYABLE_CALL_ERRORS:
                return list(pending), code
            raise StreamUnavailable(f"Kinesis put_records failed: {code}: {err}", failed=len(pending),
                                    error_code=code) from err
        except (ConnectTimeoutError, EndpointConnectionError) as err:
            # the request never reached Kinesis: nothing was written, so it is safe to send again
            return list(pending), type(err).__name__
        except ReadTimeoutError as err:
            # it may have been written: sending it again could land every record twice
            raise StreamUnavailable(f"Kinesis did not answer in time, the records may or may not be on the stream: "
                                    f"{err}", failed=len(pending), error_code="ReadTimeout") from err
        except BotoCoreError as err:
            raise StreamUnavailable(f"Kinesis is unreachable: {err}", failed=len(pending),
                                    error_code=type(err).__name__) from err
        failed: list[int] = []
        code = ""
        for index, entry in zip(pending, response.get("Records", []), strict=False):
            if entry.get("ErrorCode"):
                failed.append(index)
                code = code or str(entry["ErrorCode"])
            else:
                result.shard_ids[index] = entry.get("ShardId", "")
                result.sequence_numbers[index] = entry.get("SequenceNumber", "")
        if len(response.get("Records", [])) < len(pending):  # a short answer: treat the rest as refused
            failed.extend(pending[len(response.get("Records", [])):])
            code = code or "MissingResult"
        return failed, code
