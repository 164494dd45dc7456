"""The raw archive: every stream record, as received, in objects per shard rolled by size or age.

A shard's records go into one open object at a time (zstd-compressed JSON lines), named by its first
record and partitioned by that record's arrival:

    raw/dt=2026-11-27/hour=04/shard=shardId-000000000001/<first_seq>.jsonl.zst

An object is rolled (sealed and written) where the records themselves say so, so that a reader
that re-reads a shard from the same checkpoint after a crash rebuilds the same objects with the same
lines: a record whose arrival falls in a later ``roll_seconds`` window than the object's first
record's, or one that would take the object past ``roll_bytes`` of records. Two more roll points
depend on the clock or on the reader: a shard read to its tip whose window has ended (plus a grace),
and a reader that stops (shard end, lease given up, shutdown). Objects are written with
create-only semantics (S3 ``If-None-Match: *``) and a reader checks, before it opens an object,
whether one already starts at that record (its predecessor wrote it and died before its
checkpoint): the existing object is adopted, never overwritten. ``roll_seconds = 0`` rolls at the
end of every unit (one object per unit: the test suite's default).

The checkpoint passes a record only once its object is written (``ShardReader``): a consumer that
dies with an object open loses nothing but time, the next owner re-reads the shard from the
checkpoint and rebuilds the object (landing again only what the channel had not committed).

Every location (object, line) is known before any record is parsed: the pipeline fills lineage with
it, and the archive lines are then assembled from the raw bytes without parsing them again (the
pipeline already knows which records are not JSON). Line N (0-based) of an object is the record at
lineage ``raw_offset`` N: ``{"seq", "shard", "arrival", "record"}`` (the envelope as it was sent), or
``"record_b64"`` for bytes that were not JSON; or, with per-subject encryption on (the default), the
record encrypted under its subjects' data keys (``ingest_workers.archive_crypto``: version 2 seals the
records of one key set in one unit as one block compressed with the shared synthetic dictionary, on
its first record's line, the others' lines pointing to it; version 1, one ciphertext per line, still
reads), or no record at all for a record of a suppressed subject. Readers open encrypted
lines transparently; a line of an erased subject raises ``ArchiveRecordShredded``, which readers skip
and count. ``RAW_ARCHIVE_URL`` is ``file:///dir``
(embedded) or ``s3://bucket/prefix``; both go through obstore. Objects written by earlier versions
(one per unit, ``<first>-<last>.jsonl.zst``; one per source and hour, ``raw/source=…``) read the same way.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import re
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from functools import lru_cache
from urllib.parse import urlparse

import obstore
import orjson
import zstandard
from obstore.store import LocalStore, S3Store

from ingest_workers import json_numbers
from ingest_workers.archive_crypto import (
    BLOCK_VERSION,
    ArchiveRecordShredded,
    LineSealer,
    block_member_line,
    block_open,
    line_is_encrypted,
    line_open,
)
from ingest_workers.pipeline import RawRecord

_SAFE = re.compile(r"[^A-Za-z0-9._-]")
ZSTD_LEVEL = 3
#: an object of sealed lines (the records inside are compressed by block already, then encrypted and
#: base64'd): zstd only recovers base64's spare bits there, and level 1 does that as well as level 3
#: in under half the CPU (on 1,000 sealed demo lines: 106.6 KB in 0.36 ms against 108.4 KB in 0.85 ms)
ZSTD_LEVEL_SEALED = 1
#: what a line adds to its record's bytes, for the size rule (a constant: the rule must not depend
#: on whether the pipeline found the record to be JSON)
LINE_OVERHEAD = 96


def _day_hour(micros: int) -> str:
    stamp = dt.datetime.fromtimestamp(micros / 1_000_000, tz=dt.UTC)
    return f"dt={stamp:%Y-%m-%d}/hour={stamp:%H}"


def archive_object_key(first: RawRecord) -> str:
    """The key of the object that starts with ``first`` (pure)."""
    return (f"raw/{_day_hour(first.arrival_micros)}/shard={_SAFE.sub('_', first.shard_id)}/"
            f"{first.sequence_number}.jsonl.zst")


def archive_line(record: RawRecord, *, is_json: bool) -> bytes:
    """One archive line, assembled from the raw bytes (a JSON record is embedded as it was sent)."""
    data = bytes(record.data)
    head = b'{"seq":%s,"shard":%s,"arrival":%d,' % (
        orjson.dumps(record.sequence_number), orjson.dumps(record.shard_id), int(record.arrival_micros))
    if is_json:
        body = data.strip()
        if b"\n" in body or b"\r" in body:  # JSON with line breaks between tokens: one line per record
            body = orjson.dumps(orjson.loads(body))
        return head + b'"record":' + body + b"}"
    return head + b'"record_b64":"' + base64.b64encode(data) + b'"}'


def _is_json(data: bytes, sequence: str, not_json: Collection[str] | None) -> bool:
    if not_json is not None:
        return sequence not in not_json and bool(bytes(data).strip())
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


@dataclasses.dataclass
class SealedObject:
    """An object ready to be written (``blob``), or one adopted from the store (``blob`` None), with
    its last record and how many records this reader placed in it."""
    key: str
    last_seq: str
    records: int
    blob: bytes | None


@dataclasses.dataclass
class _Object:
    key: str
    uri: str
    window: int
    size: int = 0          # records' bytes + LINE_OVERHEAD each (the size rule)
    placed: int = 0        # records given a line
    written: int = 0       # lines appended
    last_seq: str = ""
    closed: bool = False   # a later record went to the next object
    adopted_through: str | None = None  # an object already in the store: its last record
    chunks: list[bytes] = dataclasses.field(default_factory=list)
    compressor: object | None = None
    sealed: SealedObject | None = None

    def add(self, lines: list[bytes], *, sealed: bool = False) -> None:
        if self.compressor is None:  # an object's lines are all sealed or all clear (one setting)
            level = ZSTD_LEVEL_SEALED if sealed else ZSTD_LEVEL
            self.compressor = zstandard.ZstdCompressor(level=level).compressobj()
        out = self.compressor.compress(b"\n".join(lines) + b"\n")  # type: ignore[attr-defined]
        if out:
            self.chunks.append(out)
        self.written += len(lines)

    def seal(self) -> SealedObject:
        if self.sealed is None:  # once: the compressor's frame is finished here
            if self.adopted_through is not None:
                self.sealed = SealedObject(self.key, self.adopted_through, self.placed, None)
            else:
                tail = self.compressor.flush() if self.compressor is not None else b""  # type: ignore[attr-defined]
                self.sealed = SealedObject(self.key, self.last_seq, self.placed, b"".join([*self.chunks, tail]))
                self.chunks = []
        return self.sealed


class ShardArchive:
    """A shard's open archive object and the rules that roll it (no I/O: ``existing`` is asked, before an
    object is opened, for the last sequence number of an object already stored under its key).

    Per unit: ``place(records)`` gives every record its (object URI, line) before the pipeline runs;
    ``append(records, not_json)`` adds their lines; ``take_sealed()`` hands over the objects that are
    complete, oldest first, for the caller to write before its checkpoint passes them.
    """

    def __init__(self, *, base_uri: str, roll_seconds: float, roll_bytes: int,
                 existing: Callable[[str], str | None]):
        self.base_uri = base_uri.rstrip("/")
        self.roll_micros = int(roll_seconds * 1_000_000)
        self.roll_bytes = roll_bytes
        self.existing = existing
        self._objects: list[_Object] = []   # placed, not yet handed over; the last one may be open
        self._pending: list[tuple[_Object, RawRecord]] = []  # placed, line not yet appended

    @property
    def open_object(self) -> _Object | None:
        last = self._objects[-1] if self._objects else None
        return last if last is not None and not last.closed else None

    def _window(self, record: RawRecord) -> int:
        return record.arrival_micros // self.roll_micros if self.roll_micros > 0 else 0

    def _open(self, record: RawRecord) -> _Object:
        key = archive_object_key(record)
        obj = _Object(key=key, uri=f"{self.base_uri}/{key}", window=self._window(record))
        stored = self.existing(key)
        if stored is not None:
            obj.adopted_through = stored
        self._objects.append(obj)
        return obj

    def place(self, records: Sequence[RawRecord]) -> list[tuple[str, int]]:
        """(object URI, line) of every record, in order: what lineage points to."""
        from warehouse.channels import offset_after

        locations: list[tuple[str, int]] = []
        for record in records:
            obj = self.open_object
            size = len(record.data) + LINE_OVERHEAD
            if obj is not None:
                if obj.adopted_through is not None:
                    if offset_after(record.sequence_number, obj.adopted_through):
                        obj.closed = True  # past the adopted object: the next one starts here
                        obj = None
                elif obj.placed and (self._window(record) > obj.window or obj.size + size > self.roll_bytes):
                    obj.closed = True
                    obj = None
            if obj is None:
                obj = self._open(record)
            locations.append((obj.uri, obj.placed))
            obj.placed += 1
            obj.size += size
            obj.last_seq = record.sequence_number
            self._pending.append((obj, record))
        return locations

    def append(self, not_json: Collection[str] | None = None, sealer: LineSealer | None = None) -> None:
        """Add the lines of every placed record (``not_json``: sequence numbers the pipeline found not
        to be JSON; None: checked here). ``sealer`` encrypts each line under its subjects' keys (and
        writes no record for a suppressed one); None writes lines in clear."""
        lines: dict[int, tuple[_Object, list]] = {}
        for obj, record in self._pending:
            if obj.adopted_through is None:
                is_json = _is_json(record.data, record.sequence_number, not_json)
                lines.setdefault(id(obj), (obj, []))[1].append(
                    archive_line(record, is_json=is_json) if sealer is None else
                    (record.sequence_number, record.shard_id, record.arrival_micros, record.data, is_json))
            else:
                obj.written += 1
        if sealer is not None:  # sealed by block: the records of one key set in one unit compress together
            lines = {key: (obj, sealer.lines(records, obj.written)) for key, (obj, records) in lines.items()}
        for obj, object_lines in lines.values():  # one compress call per object and unit
            obj.add(object_lines, sealed=sealer is not None and not sealer.clear)
        self._pending.clear()

    def roll_due(self, now_micros: int, grace_seconds: float) -> bool:
        """The open object's window ended more than ``grace_seconds`` ago (for a shard read to its tip)."""
        obj = self.open_object
        if obj is None or self.roll_micros <= 0:
            return obj is not None
        return now_micros >= (obj.window + 1) * self.roll_micros + int(grace_seconds * 1_000_000)

    def roll(self) -> None:
        """Close the open object (the shard ended, the reader stops, its window ended, or per unit). An
        object adopted from the store stays open until its last stored record is placed: closing it
        early would put the rest of its records, and their lineage, in a new object."""
        obj = self.open_object
        if obj is not None and (obj.adopted_through is None or obj.last_seq == obj.adopted_through):
            obj.closed = True

    def sealed(self) -> list[SealedObject]:
        """The closed objects, oldest first, each with its last record. They stay in the archive's care
        until ``written()`` says the oldest is stored (a failed write loses nothing)."""
        if self._pending:
            raise RuntimeError("append() the placed records before taking sealed objects")
        return [obj.seal() for obj in self._objects if obj.closed]

    def written(self) -> None:
        """The oldest closed object is stored: forget it."""
        if not self._objects or not self._objects[0].closed:
            raise RuntimeError("no closed object to forget")
        self._objects.pop(0)

    def take_sealed(self) -> list[SealedObject]:
        """The closed objects, oldest first, forgotten at once (for callers that store them all or fail)."""
        sealed = self.sealed()
        for _ in sealed:
            self.written()
        return sealed

    @property
    def holds_records(self) -> bool:
        """Records are placed in an object that is not written yet."""
        return any(obj.placed and obj.adopted_through is None for obj in self._objects)


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


class ArchiveObjectExists(Exception):
    """Another reader wrote an object under this key after this reader checked for it."""


def archive_put_new(key: str, blob: bytes, *, url: str | None = None) -> int:
    """Write a new object; never overwrites (``ArchiveObjectExists``). Returns bytes written."""
    from obstore.exceptions import AlreadyExistsError, PreconditionError

    store, prefix = archive_store(url)
    try:
        obstore.put(store, _join(prefix, key), blob, mode="create")
    except (AlreadyExistsError, PreconditionError) as err:
        raise ArchiveObjectExists(key) from err
    return len(blob)


def archive_object_last_seq(key: str, *, url: str | None = None) -> str | None:
    """The last record's sequence number of a stored object, or None when there is no such object."""
    from obstore.exceptions import NotFoundError

    store, prefix = archive_store(url)
    try:
        blob = bytes(obstore.get(store, _join(prefix, key)).bytes())
    except (FileNotFoundError, NotFoundError):
        return None
    lines = archive_decompress(blob)
    return str(orjson.loads(lines[-1])["seq"]) if lines else None


class ArchiveReader:
    """Reads lines of archived objects, fetching and decompressing each object once (a re-drive of
    500 quarantined rows of one unit reads its object once, not 500 times: review M5). Keeps the
    last ``max_objects`` objects; one reader per re-drive, not shared between requests.

    Encrypted lines are opened with the process's subject keyring (refreshed when the reader is
    made, so a key shredded before is seen as gone); a line of an erased subject raises
    ``ArchiveRecordShredded`` and is counted in ``shredded``."""

    def __init__(self, max_objects: int = 16, keyring=None):
        self.max_objects = max_objects
        self.fetched = 0
        self.shredded = 0
        self._keyring = keyring
        self._objects: OrderedDict[str, list[bytes]] = OrderedDict()
        #: the last opened blocks ((uri, block line) → bodies): a block's members are read together
        self._blocks: OrderedDict[tuple[str, int], list[bytes]] = OrderedDict()

    @property
    def keyring(self):
        if self._keyring is None:
            from deletion.subject_keys import archive_keyring

            self._keyring = archive_keyring()
            self._keyring.refresh()
        return self._keyring

    def read_line(self, uri: str, offset: int) -> dict:
        """The archived line a lineage pointer names (opened when encrypted)."""
        lines = self._objects.get(uri)
        if lines is None:
            lines = self._objects[uri] = self._fetch(uri)
            self.fetched += 1
            while len(self._objects) > self.max_objects:
                self._objects.popitem(last=False)
        else:
            self._objects.move_to_end(uri)
        return self.line_open(lines[offset], uri=uri, offset=offset, lines=lines)

    def line_open(self, raw: bytes, *, uri: str = "", offset: int = -1, lines: Sequence[bytes] = ()) -> dict:
        """One stored line as data, decrypted when it is encrypted (``ArchiveRecordShredded`` counted).
        ``lines``: the object's lines (a block member's block is another line of its object)."""
        line = archive_line_parse(raw)
        if not line_is_encrypted(line):
            return line
        try:
            if line.get("enc") == BLOCK_VERSION:
                return archive_line_parse(self._member_open(line, uri=uri, offset=offset, lines=lines))
            keys = self.keyring.keys_by_id(line.get("kids") or ())
            return archive_line_parse(line_open(line, keys, uri=uri, offset=offset))
        except ArchiveRecordShredded:
            self.shredded += 1
            raise

    def _member_open(self, line: dict, *, uri: str, offset: int, lines: Sequence[bytes]) -> bytes:
        at, index = (offset, 0) if "ct" in line else (int(line["at"]), int(line["i"]))
        bodies = self._blocks.get((uri, at))
        if bodies is None:
            if not 0 <= at < len(lines):
                raise ArchiveRecordShredded(uri, offset, "its block is not in the object")
            block = line if at == offset else orjson.loads(lines[at])
            if block.get("enc") != BLOCK_VERSION or "ct" not in block:
                raise ArchiveRecordShredded(uri, offset, "its block is not in the object")
            bodies = block_open(block, self.keyring.keys_by_id(block.get("kids") or ()), uri=uri, offset=at)
            self._blocks[(uri, at)] = bodies
            while len(self._blocks) > 64:
                self._blocks.popitem(last=False)
        if not 0 <= index < len(bodies):
            raise ArchiveRecordShredded(uri, offset, "damaged block")
        return block_member_line(line, bodies[index])

    def object_lines(self, uri: str) -> list[tuple[int, dict]]:
        """(line number, line) of every readable line of one object, in order; lines of erased
        subjects are skipped (and counted in ``shredded``)."""
        out = []
        lines = self._fetch(uri)
        for offset, raw in enumerate(lines):
            try:
                out.append((offset, self.line_open(raw, uri=uri, offset=offset, lines=lines)))
            except ArchiveRecordShredded:
                continue
        self.fetched += 1
        return out

    @staticmethod
    def _fetch(uri: str) -> list[bytes]:
        from django.conf import settings

        base = settings.RAW_ARCHIVE_URL.rstrip("/")
        if not uri.startswith(base + "/"):
            raise ValueError(f"{uri} is not in the configured archive {base}")
        store, prefix = archive_store()
        blob = bytes(obstore.get(store, _join(prefix, uri[len(base) + 1:])).bytes())
        return archive_decompress(blob)


def archive_line_parse(line: bytes) -> dict:
    """One archived line as data, every integer exact: orjson would turn one beyond 64 bits into a float,
    and a re-drive must see the record as it was sent (ingest_workers.json_numbers)."""
    if json_numbers.may_hold_big_integer(line):
        exact = json_numbers.exact_loads(line)
        if isinstance(exact, dict):
            return exact
    return orjson.loads(line)


def archive_read_line(uri: str, offset: int) -> dict:
    """The archived line a lineage pointer names (one read; use an ``ArchiveReader`` for many)."""
    return ArchiveReader(max_objects=1).read_line(uri, offset)
