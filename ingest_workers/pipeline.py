"""The pure ingest hot path: raw stream records in, canonical events and quarantine rows out.

    decode envelope → route by source name → pick the contract → validate (newest approved version,
    then older approved ones) → normalize (compiled mapping) → lineage → in-batch dedup count →
    serialize for the landing table

``ContractIndex.build(sources)`` compiles every approved contract version once (validator and
mapping); ``process_batch(records, index, …)`` runs one shard batch through it. Every record has
exactly one outcome: a list of canonical events, a deliberate skip (the mapping's
``unmatched: "skip"``), or one ``QuarantineRow``. A poison record never stops the batch: an
exception nobody expected becomes a quarantine row with reason ``internal_error``.

Speed (bench/bench_hot_path.py): ~60,000 records/s on one core for 1-4 KB events, about a fifth
of bare ``orjson.loads``. What makes it so: each version compiled once; the envelope checked
inline (``envelope_decode`` only explains the records that fail); one ``SourceContext`` per
contract version and batch; the whole batch serialized in one ``orjson.dumps``; and the cyclic
garbage collector paused while a batch runs (JSON trees hold no cycles, and rescanning the batch's
~100 live dicts per record cost ~15%). Batches of ``BATCH_RECORDS`` (200) stay in the CPU caches
until they are serialized and freed; 1,000 is ~20% slower per record.

Pure: no Django, no network, no clock (``now_micros`` is passed in).
"""

from __future__ import annotations

import base64
import gc
import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from contracts.mapping import CompiledMapping, MappingFailure, SourceContext, compile_mapping
from contracts.validation import Validator, compile_validator
from ingest_workers import json_numbers
from ingest_workers.envelope import (
    COLLECTOR_CHANNELS,
    MAX_PAYLOAD_BYTES,
    RECEIVED_AT_MAX,
    RECEIVED_AT_MIN,
    EnvelopeError,
    RawEnvelope,
    envelope_decode,
)
from ingest_workers.json_numbers import may_hold_big_integer

__all__ = [
    "BATCH_RECORDS",
    "RawRecord",
    "raw_record",
    "CompiledVersion",
    "SourceRoute",
    "ContractIndex",
    "QuarantineRow",
    "SourceCounts",
    "BatchResult",
    "process_batch",
    "batch_suppress",
    "quarantine_id",
    "REASON_CODES",
    "QUARANTINE_ID_NAMESPACE",
]

# Quarantine reason codes (RAW.QUARANTINE.reason_code)
UNDECODABLE = "undecodable"  # not JSON / not UTF-8
INVALID_ENVELOPE = "invalid_envelope"  # JSON, but no source / received_at / payload object
OVERSIZE = "oversize"  # payload over 64 KB
UNKNOWN_SOURCE = "unknown_source"  # no source of that name
SOURCE_DISABLED = "source_disabled"  # the source exists but is switched off
NO_APPROVED_CONTRACT = "no_approved_contract"  # the source (or the envelope's contract) has no approved version
SCHEMA_VIOLATION = "schema_violation"  # every approved version rejects the payload
MAPPING_FAILURE = "mapping_failure"  # the compiled mapping could not map it (or its events cannot be serialized)
INTERNAL_ERROR = "internal_error"  # an exception nobody expected; the text is kept
NUMBER_OUT_OF_RANGE = json_numbers.NUMBER_OUT_OF_RANGE  # an integer beyond 64 bits (orjson would make it a float)
REASON_CODES = (
    UNDECODABLE,
    INVALID_ENVELOPE,
    OVERSIZE,
    NUMBER_OUT_OF_RANGE,
    UNKNOWN_SOURCE,
    SOURCE_DISABLED,
    NO_APPROVED_CONTRACT,
    SCHEMA_VIOLATION,
    MAPPING_FAILURE,
    INTERNAL_ERROR,
)

#: uuid5 namespace of quarantine ids (uuid5(NAMESPACE_URL, "https://chatorbit.io/ns/quarantine-id"))
QUARANTINE_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://chatorbit.io/ns/quarantine-id")
#: schema errors written into reason_detail at most (the rest are counted)
MAX_DETAIL_ERRORS = 50
#: raw bytes of an undecodable record kept in the quarantine row (the raw archive has all of it)
MAX_RAW_KEPT = 64 * 1024
NO_SOURCE = "(none)"  # per_source key of records whose envelope names no source

_dumps = orjson.dumps
_loads = orjson.loads

#: records per ``process_batch`` call in the consumer (and in bench/bench_hot_path.py). A batch's working
#: set (its records, their decoded payloads, its events and their JSON) is ~10 KB per record: at 200
#: records it stays in the CPU's caches until the batch is serialized and freed; at 1,000 it did not,
#: and the same records cost ~20% more CPU each (19.5 against 24 us/record on an AMD EPYC, 2026-12-05).
BATCH_RECORDS = 200


# =============================================================================================
# Inputs
# =============================================================================================


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One stream record as read from the shard."""

    shard_id: str
    sequence_number: str
    data: bytes
    arrival_micros: int  # the stream's arrival time (Kinesis ApproximateArrivalTimestamp), UTC micros


_new_object = object.__new__
_set_shard_id, _set_sequence_number, _set_data, _set_arrival_micros = (
    RawRecord.__dict__[name].__set__ for name in ("shard_id", "sequence_number", "data", "arrival_micros"))


def raw_record(shard_id: str, sequence_number: str, data: bytes, arrival_micros: int) -> RawRecord:
    """``RawRecord(...)`` without the frozen dataclass's ``__init__``, whose four ``object.__setattr__``
    calls cost about 0.6 us a record more (a consumer builds 2,000 per unit): the slots are set
    through their descriptors. The same object, as frozen afterwards as any other."""
    record = _new_object(RawRecord)
    _set_shard_id(record, shard_id)
    _set_sequence_number(record, sequence_number)
    _set_data(record, data)
    _set_arrival_micros(record, arrival_micros)
    return record


@dataclass(frozen=True)
class CompiledVersion:
    """One approved contract version, compiled once."""

    subject: str  # "<source>.<event>"
    event: str
    version: int
    validator: Validator
    mapping: CompiledMapping


@dataclass(frozen=True)
class SourceRoute:
    source_id: str
    name: str
    platform: str
    product: str | None
    active: bool
    #: event name -> approved versions, newest first (contracts without an approved version are left out)
    contracts: dict[str, tuple[CompiledVersion, ...]]
    #: the same version tuples in subject order (the order contracts are tried in when the envelope names none)
    ordered: tuple[tuple[CompiledVersion, ...], ...] = field(default=(), repr=False, compare=False)
    #: event name and full subject -> versions (what the envelope's `contract` may say)
    by_name: dict[str, tuple[CompiledVersion, ...]] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.ordered and self.contracts:
            ordered = tuple(sorted(self.contracts.values(), key=lambda vs: vs[0].subject))
            object.__setattr__(self, "ordered", ordered)
        if not self.by_name and self.contracts:
            names: dict[str, tuple[CompiledVersion, ...]] = {}
            for versions in self.contracts.values():
                names[versions[0].subject] = versions
            for event, versions in self.contracts.items():
                names[event] = versions  # the short name wins if a subject happens to equal an event name
            object.__setattr__(self, "by_name", names)


def _content_key(schema: Any, mapping: Any) -> str:
    return hashlib.sha256(
        _dumps([schema, mapping], option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    ).hexdigest()


class ContractIndex:
    """Every active and inactive source with its approved contract versions, compiled.

    Build it from plain data (what the portal's database holds)::

        ContractIndex.build([
            {"source_id": "17", "name": "web-chat", "platform": "web", "product": "storefront-assistant",
             "active": True,
             "contracts": [{"subject": "web-chat.chat_event", "event": "chat_event",
                            "versions": [{"version": 1, "schema": {...} or "<json>", "mapping": {...}}, ...]}]},
        ])

    Pass only APPROVED versions. A version that does not compile (it should not happen: approval
    checks it) is left out and listed in ``build_errors``. ``previous=`` reuses the compiled
    versions of an older index whose schema and mapping are unchanged, so a rebuild after one
    approval costs one compile.
    """

    __slots__ = ("fingerprint", "build_errors", "_routes", "_compiled")

    def __init__(
        self,
        routes: dict[str, SourceRoute],
        fingerprint: str,
        build_errors: list[str] | None = None,
        compiled: dict[str, tuple[Validator, CompiledMapping]] | None = None,
    ):
        self._routes = routes
        self.fingerprint = fingerprint
        self.build_errors: list[str] = build_errors or []
        self._compiled = compiled or {}

    @staticmethod
    def fingerprint_of(sources: list[dict]) -> str:
        """The fingerprint an index built from ``sources`` would have (cheap: no compiling)."""
        return hashlib.sha256(
            _dumps(sources, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
        ).hexdigest()

    @classmethod
    def build(cls, sources: list[dict], *, previous: ContractIndex | None = None) -> ContractIndex:
        cache = previous._compiled if previous is not None else {}
        compiled: dict[str, tuple[Validator, CompiledMapping]] = {}
        errors: list[str] = []
        routes: dict[str, SourceRoute] = {}
        for src in sources:
            contracts: dict[str, tuple[CompiledVersion, ...]] = {}
            for c in src.get("contracts") or ():
                subject = c["subject"]
                event = c.get("event") or subject.split(".", 1)[-1]
                built = []
                for v in sorted(c.get("versions") or (), key=lambda v: -int(v["version"])):
                    schema, mapping = v["schema"], v["mapping"]
                    if isinstance(schema, (str, bytes, bytearray)):
                        schema = _loads(schema)
                    if isinstance(mapping, (str, bytes, bytearray)):
                        mapping = _loads(mapping)
                    key = _content_key(schema, mapping)
                    pair = compiled.get(key) or cache.get(key)
                    if pair is None:
                        try:
                            pair = (compile_validator(schema), compile_mapping(schema, mapping))
                        except Exception as e:  # a broken approved version must not stop the other sources
                            errors.append(f"{subject} v{v['version']}: does not compile: {e}")
                            continue
                    compiled[key] = pair
                    built.append(CompiledVersion(subject, event, int(v["version"]), pair[0], pair[1]))
                if built:
                    contracts[event] = tuple(built)
            product = src.get("product") or None
            routes[src["name"]] = SourceRoute(
                source_id=str(src["source_id"]),
                name=src["name"],
                platform=src["platform"],
                product=product,
                active=bool(src.get("active", True)),
                contracts=contracts,
            )
        return cls(routes, cls.fingerprint_of(sources), errors, compiled)

    def route(self, source_name: str) -> SourceRoute | None:
        return self._routes.get(source_name)

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(self._routes)


# =============================================================================================
# Outputs
# =============================================================================================


@dataclass(slots=True)
class QuarantineRow:
    """One quarantined record; the fields are the columns of RAW.QUARANTINE."""

    quarantine_id: str
    source: str | None
    source_id: str | None
    contract_subject: str | None
    contract_version: int | None
    reason_code: str
    reason_detail: str
    error_path: str | None  # JSON pointer into the payload ("/" is the root), when there is one
    raw_archive_uri: str
    raw_offset: int
    stream: str
    shard_id: str
    sequence_number: str
    batch_id: str
    received_at: int  # UTC micros: the envelope's received_at, else the stream's arrival time
    quarantined_at: int  # UTC micros
    #: the decoded payload; {"raw_text": …} or {"raw_base64": …} (plus "truncated_from") when it
    #: could not be decoded; the whole decoded record for an invalid envelope
    payload: Any
    status: str = "new"


@dataclass(slots=True)
class SourceCounts:
    records: int = 0
    events: int = 0
    skipped: int = 0
    quarantined: int = 0
    duplicates: int = 0
    #: records dropped because they carry an erased subject's identifier (``batch_suppress``)
    suppressed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    #: per contract version the records validated against: (subject, version) -> [records, events, duplicates]
    versions: dict[tuple[str, int], list[int]] = field(default_factory=dict)


@dataclass
class BatchResult:
    #: canonical events in record order, every copy (lineage filled, ingested_at set)
    events: list[dict]
    quarantine: list[QuarantineRow]
    #: event_id of each event in ``events`` (same order, duplicates included)
    event_ids: list[str]
    #: events whose event_id already appeared earlier in this batch (kept in ``events``)
    in_batch_duplicates: int
    #: records the mapping skipped on purpose (``unmatched: "skip"``)
    skipped: int
    #: records in the batch; == mapped_records + skipped + len(quarantine)
    records: int
    #: records that produced at least one event
    mapped_records: int
    per_source: dict[str, SourceCounts]
    _landing: bytes | None = field(default=None, repr=False)

    def landing_json(self, *, refresh: bool = False) -> bytes:
        """The events as one JSON array (orjson), for the landing table.

        ``process_batch`` serializes them once (so a record whose events cannot be serialized is
        quarantined instead of failing the batch); this returns those bytes. Treat ``events`` as
        read-only, or pass ``refresh=True`` after changing them.
        """
        if refresh or self._landing is None:
            self._landing = _dumps(self.events)
        return self._landing

    def quarantine_json(self) -> bytes:
        """The quarantine rows as one JSON array of objects keyed by column name."""
        try:
            return _dumps(self.quarantine)
        except (TypeError, orjson.JSONEncodeError):  # rows are made storable; this is the last line of defence
            return b"[" + b",".join(map(_row_json, self.quarantine)) + b"]"

    @property
    def reason_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.quarantine:
            out[row.reason_code] = out.get(row.reason_code, 0) + 1
        return out


def _row_json(row: QuarantineRow) -> bytes:
    try:
        return _dumps(row)
    except (TypeError, orjson.JSONEncodeError) as e:
        fields = {k: getattr(row, k) for k in QuarantineRow.__slots__}
        fields["payload"] = {"unserializable": f"{e}"}
        fields["reason_detail"] = str(fields["reason_detail"]).encode("utf-8", "replace").decode("utf-8")
        return _dumps(fields, default=str)


def quarantine_content(data: bytes, env: RawEnvelope | None) -> str:
    """What a quarantined record says, as a digest: the source, contract and payload (keys sorted) of
    an envelope, else the raw bytes. Copies of one payload (a producer's retry, a put sent twice) have
    one content; the receive time, request id and stream position are not part of it."""
    if env is not None:
        try:
            payload = orjson.dumps(env.payload, option=orjson.OPT_SORT_KEYS)
        except (TypeError, orjson.JSONEncodeError):
            payload = bytes(data)
        head = f"{env.source}\x00{env.contract or ''}\x00".encode()
        return hashlib.sha256(head + payload).hexdigest()
    return hashlib.sha256(bytes(data)).hexdigest()


def quarantine_id(reason_code: str, content: str) -> str:
    """Deterministic: a record quarantined again for the same reason (a retry, a re-landed unit) and
    every copy of the same payload get the same id, so the quarantine keeps one row for them (the
    hostile-input sweep found 11,000 rows for 2,000 events sent again and again). An event id comes
    from the payload too, so the copies would have been one event had they been valid."""
    return str(uuid.uuid5(QUARANTINE_ID_NAMESPACE, f"{reason_code}/{content}"))


# =============================================================================================
# The batch
# =============================================================================================


class _Failure(Exception):
    """One record's quarantine outcome, raised inside the per-record code (cold path)."""

    def __init__(
        self,
        reason: str,
        detail: str,
        path: str | None = None,
        cv: CompiledVersion | None = None,
        subject: str | None = None,
    ):
        self.reason = reason
        self.detail = detail
        self.path = path
        self.subject = cv.subject if cv is not None else subject
        self.version = cv.version if cv is not None else None


_Owner = tuple[int, CompiledVersion, int, SourceCounts]


def process_batch(
    records: Sequence[RawRecord],
    index: ContractIndex,
    *,
    stream: str,
    batch_id: str,
    archive_locations: Sequence[tuple[str, int]],
    now_micros: int,
) -> BatchResult:
    """Run one batch of stream records through the pipeline.

    ``archive_locations[i]`` is where record ``i`` sits in the raw archive (object URI, offset);
    ``now_micros`` becomes every event's ``ingested_at`` and every row's ``quarantined_at``.
    """
    if len(archive_locations) != len(records):
        raise ValueError(f"{len(records)} records but {len(archive_locations)} archive locations")
    # The batch allocates ~100 dicts per record and keeps them: the cyclic GC would scan them over
    # and over (~15% of the hot path) although JSON trees hold no cycles. Pause it for the batch.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _process(records, index, stream, batch_id, archive_locations, now_micros)
    finally:
        if gc_was_enabled:
            gc.enable()


def _process(  # noqa: C901 - the per-record hot loop is one function on purpose (calls cost)
    records: Sequence[RawRecord],
    index: ContractIndex,
    stream: str,
    batch_id: str,
    archive_locations: Sequence[tuple[str, int]],
    now_micros: int,
) -> BatchResult:
    events: list[dict] = []
    quarantine: list[QuarantineRow] = []
    per_source: dict[str, SourceCounts] = {}
    owners: list[_Owner] = []  # per mapped record: (record index, version, number of events, its counts)
    events_extend, owners_append = events.extend, owners.append
    routes_get = index._routes.get
    skipped = 0
    # one SourceContext per contract version for the batch; only received_at changes between records
    ctx_cache: dict[int, SourceContext] = {}
    loads, set_attr = _loads, object.__setattr__

    for i, rec in enumerate(records):
        uri, offset = archive_locations[i]
        counts = None
        try:
            data = rec.data
            # the envelope, inline (envelope_decode's rules; anything unusual goes through it for the reason)
            try:
                env = loads(data)
            except orjson.JSONDecodeError:
                env = None
            if env.__class__ is dict:
                name = env.get("source")
                received_at = env.get("received_at")
                payload = env.get("payload")
                contract = env.get("contract")
                if not (
                    name.__class__ is str and name and received_at.__class__ is int
                    and RECEIVED_AT_MIN <= received_at < RECEIVED_AT_MAX and payload.__class__ is dict
                ):
                    name, received_at, payload, contract = _envelope_slow(data)
                elif contract is not None and (contract.__class__ is not str or not contract):
                    contract = None
            else:
                name, received_at, payload, contract = _envelope_slow(data)
            if len(data) > MAX_PAYLOAD_BYTES:
                _check_size(payload, data)
            # the collectors refuse integers beyond 64 bits before they put a record; a record written
            # straight to the stream is checked here (json_numbers: the cheap look first)
            if env.get("channel") not in COLLECTOR_CHANNELS and may_hold_big_integer(data):
                _check_numbers(data)
            route = routes_get(name)
            counts = per_source.get(name)
            if counts is None:
                counts = per_source[name] = SourceCounts()
            counts.records += 1
            if route is None or not route.active:
                _no_route(name, route)
            cv = _pick_version(route, contract, payload)
            ctx = ctx_cache.get(id(cv))
            if ctx is None or ctx.source_name is not route.name:
                ctx = ctx_cache[id(cv)] = SourceContext(
                    route.source_id, route.name, route.platform, route.product, cv.subject, cv.version,
                    received_at, now_micros,
                )
            elif ctx.received_at_micros != received_at:
                set_attr(ctx, "received_at_micros", received_at)  # private to this batch, never escapes
            try:
                evs = cv.mapping(payload, ctx)
            except MappingFailure as e:
                raise _Failure(MAPPING_FAILURE, e.message, e.path, cv) from None
            if not evs:
                skipped += 1
                counts.skipped += 1
                continue
            for ev in evs:
                lin = ev["lineage"]
                lin["raw_archive_uri"] = uri
                lin["raw_offset"] = offset
                lin["stream"] = stream
                lin["shard_id"] = rec.shard_id
                lin["sequence_number"] = rec.sequence_number
                lin["batch_id"] = batch_id
        except _Failure as f:
            quarantine.append(_row(rec, index, f, uri, offset, stream, batch_id, now_micros))
            _count_failure(per_source, counts, f.reason, rec.data)
            continue
        except Exception as e:  # noqa: BLE001 - a poison record must never stop the batch
            f = _Failure(INTERNAL_ERROR, f"{type(e).__name__}: {e}"[:2000], None)
            quarantine.append(_row(rec, index, f, uri, offset, stream, batch_id, now_micros))
            _count_failure(per_source, counts, INTERNAL_ERROR, rec.data)
            continue
        counts.events += len(evs)
        events_extend(evs)
        owners_append((i, cv, len(evs), counts))

    try:
        landing = _dumps(events)
    except (TypeError, orjson.JSONEncodeError):
        # rare: an event orjson cannot write (nesting over 255 levels in platform_metadata, an
        # integer over 64 bits); find its records and quarantine them instead
        events, owners, landing = _drop_unserializable(
            records, index, events, owners, quarantine, archive_locations, stream, batch_id, now_micros
        )
    _count_versions(owners)
    event_ids = [ev["event_id"] for ev in events]
    duplicates = len(event_ids) - len(set(event_ids))
    if duplicates:
        _count_duplicates(events, owners)
    return BatchResult(
        events=events,
        quarantine=quarantine,
        event_ids=event_ids,
        in_batch_duplicates=duplicates,
        skipped=skipped,
        records=len(records),
        mapped_records=len(owners),
        per_source=per_source,
        _landing=landing,
    )


def batch_results_concat(results: Sequence[BatchResult]) -> BatchResult:
    """Several batches' results as one, in order: events, quarantine rows and counts added up. Copies of
    one event in two batches are each counted as events, not as in-batch duplicates (the merge
    deduplicates them, as it does copies in two units)."""
    if len(results) == 1:
        return results[0]  # no copy of a lone batch (no results: an empty one, below)
    per_source: dict[str, SourceCounts] = {}
    for result in results:
        for name, counts in result.per_source.items():
            total = per_source.get(name)
            if total is None:
                per_source[name] = total = SourceCounts()
            total.records += counts.records
            total.events += counts.events
            total.skipped += counts.skipped
            total.quarantined += counts.quarantined
            total.duplicates += counts.duplicates
            total.suppressed += counts.suppressed
            for reason, n in counts.reasons.items():
                total.reasons[reason] = total.reasons.get(reason, 0) + n
            for key, (records, events, duplicates) in counts.versions.items():
                entry = total.versions.get(key)
                if entry is None:
                    total.versions[key] = [records, events, duplicates]
                else:
                    entry[0] += records
                    entry[1] += events
                    entry[2] += duplicates
    return BatchResult(
        events=[ev for result in results for ev in result.events],
        quarantine=[row for result in results for row in result.quarantine],
        event_ids=[eid for result in results for eid in result.event_ids],
        in_batch_duplicates=sum(result.in_batch_duplicates for result in results),
        skipped=sum(result.skipped for result in results),
        records=sum(result.records for result in results),
        mapped_records=sum(result.mapped_records for result in results),
        per_source=per_source,
    )


def batch_suppress(result: BatchResult, suppressed: Mapping[str, str]) -> BatchResult:
    """The batch without the events and quarantine rows of suppressed records (``suppressed``: sequence
    number → source name): they are not landed, and counted per source as ``suppressed`` instead of as
    events or quarantined."""
    if not suppressed:
        return result
    kept: list[dict] = []
    dropped: dict[str, int] = {}
    for ev in result.events:
        seq = ev["lineage"]["sequence_number"]
        if seq in suppressed:
            dropped[seq] = dropped.get(seq, 0) + 1
        else:
            kept.append(ev)
    for seq, events in dropped.items():
        counts = result.per_source.setdefault(suppressed[seq], SourceCounts())
        counts.events -= events
        counts.suppressed += 1
    quarantine = result.quarantine
    if any(row.sequence_number in suppressed for row in quarantine):
        quarantine = []
        for row in result.quarantine:
            if row.sequence_number not in suppressed:
                quarantine.append(row)
                continue
            counts = result.per_source.setdefault(suppressed[row.sequence_number], SourceCounts())
            counts.quarantined -= 1
            counts.suppressed += 1
            left = counts.reasons.get(row.reason_code, 0) - 1
            if left > 0:
                counts.reasons[row.reason_code] = left
            else:
                counts.reasons.pop(row.reason_code, None)
    event_ids = [ev["event_id"] for ev in kept]
    return BatchResult(
        events=kept, quarantine=quarantine, event_ids=event_ids,
        in_batch_duplicates=len(event_ids) - len(set(event_ids)), skipped=result.skipped,
        records=result.records, mapped_records=result.mapped_records - len(dropped), per_source=result.per_source)


def _envelope_slow(data: bytes) -> tuple[str, int, dict, str | None]:
    try:
        env = envelope_decode(data)
    except EnvelopeError as e:
        raise _Failure(e.reason, e.message) from None
    return env.source, env.received_at, env.payload, env.contract


def _count_versions(owners: list[_Owner]) -> None:
    # after the loop (one dict update per mapped record): the pipeline metrics' contract dimension
    for _, cv, n, counts in owners:
        key = (cv.subject, cv.version)
        entry = counts.versions.get(key)
        if entry is None:
            counts.versions[key] = [1, n, 0]
        else:
            entry[0] += 1
            entry[1] += n


def _count_duplicates(events: list[dict], owners: list[_Owner]) -> None:
    seen: set[str] = set()
    pos = 0
    for _, cv, n, counts in owners:
        for k in range(pos, pos + n):
            eid = events[k]["event_id"]
            if eid in seen:
                counts.duplicates += 1
                counts.versions[(cv.subject, cv.version)][2] += 1
            else:
                seen.add(eid)
        pos += n


def _drop_unserializable(
    records: Sequence[RawRecord],
    index: ContractIndex,
    events: list[dict],
    owners: list[_Owner],
    quarantine: list[QuarantineRow],
    archive_locations: Sequence[tuple[str, int]],
    stream: str,
    batch_id: str,
    now_micros: int,
) -> tuple[list[dict], list[_Owner], bytes]:
    kept_events: list[dict] = []
    kept_owners: list[_Owner] = []
    pos = 0
    for owner in owners:
        i, cv, n, counts = owner
        group = events[pos : pos + n]
        pos += n
        try:
            _dumps(group)
        except (TypeError, orjson.JSONEncodeError) as e:
            uri, offset = archive_locations[i]
            f = _Failure(MAPPING_FAILURE, f"The canonical event cannot be serialized: {e}.", "/", cv)
            quarantine.append(_row(records[i], index, f, uri, offset, stream, batch_id, now_micros))
            counts.events -= n
            counts.quarantined += 1
            counts.reasons[MAPPING_FAILURE] = counts.reasons.get(MAPPING_FAILURE, 0) + 1
            continue
        kept_events.extend(group)
        kept_owners.append(owner)
    return kept_events, kept_owners, _dumps(kept_events)


def _check_size(payload: dict, data: bytes) -> None:
    try:
        size = len(_dumps(payload))
    except (TypeError, orjson.JSONEncodeError):
        size = len(data)
    if size > MAX_PAYLOAD_BYTES:
        raise _Failure(OVERSIZE, f"The payload is {size:,} bytes; the limit is {MAX_PAYLOAD_BYTES:,} bytes.")


def _check_numbers(data: bytes) -> None:
    record = json_numbers.exact_loads(data)
    path = json_numbers.out_of_range_path(record.get("payload") if isinstance(record, dict) else None)
    if path is not None:
        raise _Failure(NUMBER_OUT_OF_RANGE, json_numbers.out_of_range_message(path), path)


def _no_route(name: str, route: SourceRoute | None) -> None:
    if route is None:
        raise _Failure(UNKNOWN_SOURCE, f"No source is named {name!r}.")
    raise _Failure(SOURCE_DISABLED, f"The source {name!r} is disabled; its events are not ingested.")


def _pick_version(route: SourceRoute, contract: str | None, payload: dict) -> CompiledVersion:
    """The approved contract version that accepts the payload, or a _Failure."""
    if contract is not None:
        versions = route.by_name.get(contract)
        if versions is None:
            known = ", ".join(sorted(route.contracts)) or "none"
            raise _Failure(
                NO_APPROVED_CONTRACT,
                f"The source {route.name!r} has no approved contract {contract!r} (approved: {known}).",
                subject=contract if "." in contract else f"{route.name}.{contract}",
            )
    else:
        ordered = route.ordered
        if len(ordered) == 1:
            versions = ordered[0]
        elif not ordered:
            raise _Failure(NO_APPROVED_CONTRACT, f"The source {route.name!r} has no approved contract version.")
        else:
            return _guess_version(route, payload)
    cv = versions[0]
    if cv.validator.is_valid(payload):
        return cv
    for older in versions[1:]:  # producers on an older SDK still send an older approved version
        if older.validator.is_valid(payload):
            return older
    raise _schema_failure(versions, payload)


def _guess_version(route: SourceRoute, payload: dict) -> CompiledVersion:
    """The envelope names no contract and the source has several: the first (in subject order)
    whose newest approved version accepts the payload, else the first whose older version does."""
    for versions in route.ordered:
        if versions[0].validator.is_valid(payload):
            return versions[0]
    for versions in route.ordered:
        for older in versions[1:]:
            if older.validator.is_valid(payload):
                return older
    # none accepts it: report against the contract it comes closest to
    best = min(route.ordered, key=lambda vs: len(vs[0].validator.errors(payload)))
    f = _schema_failure(best, payload)
    others = ", ".join(vs[0].subject for vs in route.ordered if vs is not best)
    f.detail = f"Matches none of the source's contracts (closest: {best[0].subject}; also tried {others}). " + f.detail
    raise f


def _schema_failure(versions: tuple[CompiledVersion, ...], payload: dict) -> _Failure:
    cv = versions[0]
    try:
        errors = cv.validator(payload)
    except RecursionError:
        errors = []
    if not errors:  # cannot happen for a payload is_valid rejected; keep the row readable anyway
        return _Failure(SCHEMA_VIOLATION, f"{cv.subject} v{cv.version} rejects the payload.", "/", cv)
    shown = [f"{e.path}: {e.message}" for e in errors[:MAX_DETAIL_ERRORS]]
    if len(errors) > MAX_DETAIL_ERRORS:
        shown.append(f"… and {len(errors) - MAX_DETAIL_ERRORS} more")
    tried = f" (older approved versions {', '.join(str(o.version) for o in versions[1:])} reject it too)"
    head = f"{len(errors)} schema error{'s' if len(errors) != 1 else ''} against {cv.subject} v{cv.version}"
    return _Failure(
        SCHEMA_VIOLATION, head + (tried if len(versions) > 1 else "") + ": " + "; ".join(shown), errors[0].path, cv
    )


def _decoded(data: bytes) -> RawEnvelope | None:
    try:
        return envelope_decode(data)
    except Exception:  # noqa: BLE001 - only used to describe a record that already failed
        return None


def _count_failure(
    per_source: dict[str, SourceCounts], counts: SourceCounts | None, reason: str, data: bytes
) -> None:
    if counts is None:  # failed before it was routed
        env = _decoded(data)
        key = env.source if env is not None else NO_SOURCE
        counts = per_source.get(key)
        if counts is None:
            counts = per_source[key] = SourceCounts()
        counts.records += 1
    counts.quarantined += 1
    counts.reasons[reason] = counts.reasons.get(reason, 0) + 1


def _row(
    rec: RawRecord,
    index: ContractIndex,
    f: _Failure,
    uri: str,
    offset: int,
    stream: str,
    batch_id: str,
    now_micros: int,
) -> QuarantineRow:
    env = _decoded(rec.data)
    route = index.route(env.source) if env is not None else None
    if f.reason == NUMBER_OUT_OF_RANGE:
        payload = _raw_payload(rec.data)  # decoded, the number would be a rounded float: keep the exact text
    elif env is not None:
        payload = _storable(env.payload, rec.data)
    elif f.reason == UNDECODABLE:
        payload = _raw_payload(rec.data)
    else:  # invalid envelope: keep the whole decoded record
        try:
            payload = _storable(_loads(rec.data), rec.data)
        except Exception:  # noqa: BLE001
            payload = _raw_payload(rec.data)
    return QuarantineRow(
        quarantine_id=quarantine_id(f.reason, quarantine_content(rec.data, env)),
        source=env.source if env is not None else None,
        source_id=route.source_id if route is not None else None,
        contract_subject=f.subject,
        contract_version=f.version,
        reason_code=f.reason,
        reason_detail=f.detail,
        error_path=f.path,
        raw_archive_uri=uri,
        raw_offset=offset,
        stream=stream,
        shard_id=rec.shard_id,
        sequence_number=rec.sequence_number,
        batch_id=batch_id,
        received_at=env.received_at if env is not None else rec.arrival_micros,
        quarantined_at=now_micros,
        payload=payload,
    )


def _storable(value: Any, data: bytes) -> Any:
    """The value if it can be written as JSON (orjson refuses nesting over 255 levels), else the raw text."""
    try:
        _dumps([{"payload": value}])  # as deep as it sits in quarantine_json()
    except (TypeError, orjson.JSONEncodeError):
        return _raw_payload(data)
    return value


def _raw_payload(data: bytes) -> dict:
    kept = bytes(data[:MAX_RAW_KEPT])
    try:
        out: dict[str, Any] = {"raw_text": kept.decode("utf-8")}
    except UnicodeDecodeError:
        out = {"raw_base64": base64.b64encode(kept).decode("ascii")}
    if len(data) > MAX_RAW_KEPT:
        out["truncated_from"] = len(data)
    return out
