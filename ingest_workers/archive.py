"""The raw archive: every stream record, as received, before it is landed.

One object per landing unit of a shard (zstd-compressed JSON lines), partitioned by the unit's
first arrival:

    raw/dt=2026-11-27/hour=04/shard=shardId-000000000001/<first_seq>-<last_seq>.jsonl.zst

The key is derived from the shard and the unit's sequence range, so a retried unit overwrites its
object instead of duplicating it, and every location (object, line) is known before any record is
parsed: the pipeline fills lineage with it, and the archive lines are then assembled from the raw
bytes without parsing them again (the pipeline already knows which records are not JSON). Line N
(0-based) is the record at lineage ``raw_offset`` N: ``{"seq", "shard", "arrival", "record"}`` (the
envelope as it was sent), or ``"record_b64"`` for bytes that were not JSON. Room is left for the
erasure work: a line may later carry its record encrypted under its subject's key instead.
``RAW_ARCHIVE_URL`` is ``file:///dir`` (embedded) or ``s3://bucket/prefix``; both go through obstore.
Objects written by the first version (one per source and hour, ``raw/source=…``) read the same way.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import re
from collections import OrderedDict
from collections.abc import Collection, Sequence
from functools import lru_cache
from urllib.parse import urlparse

import obstore
import orjson
import zstandard
from obstore.store import LocalStore, S3Store

from ingest_workers.pipeline import RawRecord

_SAFE = re.compile(r"[^A-Za-z0-9._-]")
ZSTD_LEVEL = 3


@dataclasses.dataclass
class ArchivePlan:
    objects: dict[str, list[bytes]]          # object key -> lines (one object per unit)
    locations: list[tuple[str, int]]         # per record: (archive URI, line offset)


def _day_hour(micros: int) -> str:
    stamp = dt.datetime.fromtimestamp(micros / 1_000_000, tz=dt.UTC)
    return f"dt={stamp:%Y-%m-%d}/hour={stamp:%H}"


def archive_unit_key(records: Sequence[RawRecord]) -> str:
    """The object key of a unit (pure; no record is parsed)."""
    first, last = records[0], records[-1]
    return (f"raw/{_day_hour(first.arrival_micros)}/shard={_SAFE.sub('_', first.shard_id)}/"
            f"{first.sequence_number}-{last.sequence_number}.jsonl.zst")


def archive_locations(records: Sequence[RawRecord], *, base_uri: str) -> list[tuple[str, int]]:
    """(object URI, line) of every record of the unit, in order: what lineage points to."""
    if not records:
        return []
    uri = f"{base_uri.rstrip('/')}/{archive_unit_key(records)}"
    return [(uri, i) for i in range(len(records))]


def archive_plan(records: Sequence[RawRecord], *, base_uri: str,
                 not_json: Collection[str] | None = None) -> ArchivePlan:
    """The unit's object (pure). ``not_json``: sequence numbers of records that are not JSON (the
    pipeline's ``undecodable`` ones); the others are embedded as they are, without being parsed.
    Without it each record is checked here (for callers that did not run the pipeline)."""
    if not records:
        return ArchivePlan({}, [])
    lines: list[bytes] = []
    for record in records:
        data = bytes(record.data)
        head = b'{"seq":%s,"shard":%s,"arrival":%d,' % (
            orjson.dumps(record.sequence_number), orjson.dumps(record.shard_id), int(record.arrival_micros))
        if _is_json(data, record.sequence_number, not_json):
            lines.append(head + b'"record":' + data.strip() + b"}")
        else:
            lines.append(head + b'"record_b64":"' + base64.b64encode(data) + b'"}')
    return ArchivePlan({archive_unit_key(records): lines}, archive_locations(records, base_uri=base_uri))


def _is_json(data: bytes, sequence: str, not_json: Collection[str] | None) -> bool:
    if not_json is not None:
        return sequence not in not_json and bool(data.strip())
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


def archive_compress(lines: list[bytes]) -> bytes:
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(b"\n".join(lines) + b"\n")


def archive_decompress(blob: bytes) -> list[bytes]:
    data = zstandard.ZstdDecompressor().decompressobj().decompress(blob)
    return [line for line in data.split(b"\n") if line]


@lru_cache(maxsize=8)
def _store_for(url: str, endpoint: str | None, region: str, key_id: str | None, secret: str | None):
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalStore(parsed.path, mkdir=True), ""
    if parsed.scheme == "s3":
        options: dict = {"region": region}
        if endpoint:
            options.update(endpoint=endpoint, virtual_hosted_style_request=False,
                           client_options={"allow_http": endpoint.startswith("http://")})
        if key_id and secret:
            options.update(access_key_id=key_id, secret_access_key=secret)
        return S3Store(parsed.netloc, **options), parsed.path.strip("/")
    raise ValueError(f"RAW_ARCHIVE_URL must be file:// or s3://, not {url!r}")


def archive_store(url: str | None = None):
    """(store, key prefix) for the configured archive."""
    from django.conf import settings

    return _store_for(url or settings.RAW_ARCHIVE_URL, settings.AWS_ENDPOINT_URL, settings.AWS_REGION,
                      settings.AWS_ACCESS_KEY_ID, settings.AWS_SECRET_ACCESS_KEY)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}/{key}" if prefix else key


def archive_write(plan: ArchivePlan, *, url: str | None = None) -> int:
    """Write every object of the plan (overwriting a retried batch's objects). Returns bytes written."""
    store, prefix = archive_store(url)
    written = 0
    for key, lines in plan.objects.items():
        blob = archive_compress(lines)
        obstore.put(store, _join(prefix, key), blob)
        written += len(blob)
    return written


class ArchiveReader:
    """Reads lines of archived objects, fetching and decompressing each object once (a re-drive of
    500 quarantined rows of one unit reads its object once, not 500 times: review M5). Keeps the
    last ``max_objects`` objects; one reader per re-drive, not shared between requests."""

    def __init__(self, max_objects: int = 16):
        self.max_objects = max_objects
        self.fetched = 0
        self._objects: OrderedDict[str, list[bytes]] = OrderedDict()

    def read_line(self, uri: str, offset: int) -> dict:
        """The archived line a lineage pointer names."""
        lines = self._objects.get(uri)
        if lines is None:
            lines = self._objects[uri] = self._fetch(uri)
            self.fetched += 1
            while len(self._objects) > self.max_objects:
                self._objects.popitem(last=False)
        else:
            self._objects.move_to_end(uri)
        return orjson.loads(lines[offset])

    @staticmethod
    def _fetch(uri: str) -> list[bytes]:
        from django.conf import settings

        base = settings.RAW_ARCHIVE_URL.rstrip("/")
        if not uri.startswith(base + "/"):
            raise ValueError(f"{uri} is not in the configured archive {base}")
        store, prefix = archive_store()
        blob = bytes(obstore.get(store, _join(prefix, uri[len(base) + 1:])).bytes())
        return archive_decompress(blob)


def archive_read_line(uri: str, offset: int) -> dict:
    """The archived line a lineage pointer names (one read; use an ``ArchiveReader`` for many)."""
    return ArchiveReader(max_objects=1).read_line(uri, offset)
