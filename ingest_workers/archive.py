"""The raw archive: every stream record, as received, before anything else happens to it.

Objects are zstd-compressed JSON lines, partitioned by source, date and hour of receipt:

    raw/source=web-chat/dt=2026-11-27/hour=04/shardId-000000000001/<first_seq>-<last_seq>.jsonl.zst

The key is derived from the shard and the batch's sequence range, so a retried batch overwrites
its objects instead of duplicating them. Line N of an object (0-based) is the record at lineage
`raw_offset` N: `{"seq", "shard", "arrival", "record"}` (the decoded envelope), or `"record_b64"`
for bytes that were not JSON. `RAW_ARCHIVE_URL` is `file:///dir` (embedded) or `s3://bucket/prefix`;
both go through obstore.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import re
from collections.abc import Sequence
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
    objects: dict[str, list[bytes]]          # object key -> lines
    locations: list[tuple[str, int]]         # per record: (archive URI, line offset)


def _partition_source(name: object) -> str:
    text = name if isinstance(name, str) and name else "_unknown"
    return _SAFE.sub("_", text)[:64]


def archive_plan(records: Sequence[RawRecord], *, base_uri: str) -> ArchivePlan:
    """Group a shard batch's records into archive objects (pure)."""
    if not records:
        return ArchivePlan({}, [])
    first, last = records[0], records[-1]
    suffix = f"{_SAFE.sub('_', first.shard_id)}/{first.sequence_number}-{last.sequence_number}.jsonl.zst"
    objects: dict[str, list[bytes]] = {}
    locations: list[tuple[str, int]] = []
    for record in records:
        line: dict = {"seq": record.sequence_number, "shard": record.shard_id, "arrival": record.arrival_micros}
        source, when = "_undecodable", record.arrival_micros
        try:
            decoded = orjson.loads(record.data)
            line["record"] = decoded
            if isinstance(decoded, dict):
                source = _partition_source(decoded.get("source"))
                received = decoded.get("received_at")
                if isinstance(received, int) and not isinstance(received, bool) and 0 < received < 2**62:
                    when = received
        except orjson.JSONDecodeError:
            line["record_b64"] = base64.b64encode(record.data).decode()
        stamp = dt.datetime.fromtimestamp(when / 1_000_000, tz=dt.UTC)
        key = f"raw/source={source}/dt={stamp:%Y-%m-%d}/hour={stamp:%H}/{suffix}"
        lines = objects.setdefault(key, [])
        locations.append((f"{base_uri.rstrip('/')}/{key}", len(lines)))
        lines.append(orjson.dumps(line))
    return ArchivePlan(objects, locations)


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


def archive_read_line(uri: str, offset: int) -> dict:
    """The archived line a lineage pointer names (used by quarantine re-drive and replays)."""
    from django.conf import settings

    base = settings.RAW_ARCHIVE_URL.rstrip("/")
    if not uri.startswith(base + "/"):
        raise ValueError(f"{uri} is not in the configured archive {base}")
    store, prefix = archive_store()
    blob = bytes(obstore.get(store, _join(prefix, uri[len(base) + 1:])).bytes())
    return orjson.loads(archive_decompress(blob)[offset])
