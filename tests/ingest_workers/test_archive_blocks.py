"""Version-2 archive lines: records compressed by key-set block with the shared synthetic dictionary,
then encrypted (ingest_workers.archive_crypto, ingest_workers.archive_dictionary)."""

from __future__ import annotations

import hashlib
import os

import orjson
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ingest_workers.archive import ArchiveReader, ShardArchive, archive_decompress, archive_line
from ingest_workers.archive_crypto import ArchiveRecordShredded, LineSealer, combined_key, records_subjects
from ingest_workers.archive_dictionary import DICTIONARY_VERSION, dictionary_path, dictionary_train
from ingest_workers.pipeline import RawRecord


class Keyring:
    """The part of deletion.subject_keys.SubjectKeyring a reader asks (key id → key, None when destroyed)."""

    def __init__(self, keys: dict[str, bytes | None]):
        self.keys = keys

    def keys_by_id(self, kids):
        return {kid: self.keys.get(kid) for kid in kids}


def _archive() -> ShardArchive:
    return ShardArchive(base_uri="file:///archive", roll_seconds=0, roll_bytes=1 << 30, existing=lambda key: None)


def _seal(records: list[RawRecord], subjects: dict[str, tuple[str, ...]], keys: dict[str, bytes], *,
          suppressed=(), units: int = 1) -> tuple[str, list[bytes]]:
    """One object of ``records`` written in ``units`` units; each record under the keys of its subjects
    (a subject's key id is ``kid-<subject>``)."""
    archive = _archive()
    step = -(-len(records) // units)
    for start in range(0, len(records), step):
        unit = records[start:start + step]
        uri = archive.place(unit)[0][0]
        keys_of = {}
        for r in unit:
            pairs = [(f"kid-{s}", keys[s]) for s in subjects[r.sequence_number]]
            keys_of[r.sequence_number] = (tuple(sorted(k for k, _ in pairs)), AESGCM(combined_key(pairs)))
        archive.append(sealer=LineSealer(keys_of, suppressed))
    archive.roll()
    return uri, archive_decompress(archive.take_sealed()[0].blob)


def _read_all(uri: str, lines: list[bytes], keys: dict[str, bytes | None]) -> list[dict | None]:
    reader = ArchiveReader(keyring=Keyring({f"kid-{s}": k for s, k in keys.items()}))
    out: list[dict | None] = []
    for offset, raw in enumerate(lines):
        try:
            out.append(reader.line_open(raw, uri=uri, offset=offset, lines=lines))
        except ArchiveRecordShredded:
            out.append(None)
    return out


PEOPLE = {"a": ("anonymous_id:a",), "b": ("anonymous_id:b", "platform_user_id:u-b"), "c": ("device_id:c",)}


def _records() -> tuple[list[RawRecord], dict[str, tuple[str, ...]]]:
    order = "abacbbacab"
    records = [RawRecord("shardId-000000000001", str(100 + i), orjson.dumps(
        {"source": "web-chat", "payload": {"person": p, "text": f"secret {p} {i}"}}), 1_772_400_000_000_000 + i)
        for i, p in enumerate(order)]
    records.append(RawRecord("shardId-000000000001", "110", b"\xff\x00 not json of a", 1_772_400_000_000_011))
    subjects = {r.sequence_number: PEOPLE[order[i]] for i, r in enumerate(records[:-1])}
    subjects["110"] = PEOPLE["a"]
    return records, subjects


def test_every_line_of_an_object_of_blocks_reads_as_its_clear_line_and_keeps_its_place():
    records, subjects = _records()
    keys = {s: os.urandom(32) for p in PEOPLE.values() for s in p}
    uri, lines = _seal(records, subjects, keys, units=2)
    assert len(lines) == len(records)
    assert not any(b"secret" in line or b"not json" in line for line in lines)
    opened = _read_all(uri, lines, keys)
    for record, line in zip(records, opened, strict=True):
        assert line == orjson.loads(archive_line(record, is_json=record.sequence_number != "110"))
    # lineage's raw_offset N is line N, read alone as a re-drive does
    reader = ArchiveReader(keyring=Keyring({f"kid-{s}": k for s, k in keys.items()}))
    assert reader.line_open(lines[7], uri=uri, offset=7, lines=lines)["seq"] == "107"


def test_shredding_one_subject_makes_its_blocks_unreadable_and_its_neighbours_read():
    records, subjects = _records()
    keys = {s: os.urandom(32) for p in PEOPLE.values() for s in p}
    uri, lines = _seal(records, subjects, keys, units=2)
    shredded = {**keys, "platform_user_id:u-b": None}  # one of b's two identifiers erased
    opened = _read_all(uri, lines, shredded)
    for record, line in zip(records, opened, strict=True):
        if subjects[record.sequence_number] == PEOPLE["b"]:
            assert line is None
        else:
            assert line is not None and line["seq"] == record.sequence_number
    assert sum(line is None for line in opened) == 4


def test_a_suppressed_record_in_a_unit_of_blocks_keeps_its_line_and_no_record():
    records, subjects = _records()
    keys = {s: os.urandom(32) for p in PEOPLE.values() for s in p}
    uri, lines = _seal(records, subjects, keys, suppressed={"101"})
    assert orjson.loads(lines[1]) == {"seq": "101", "shard": records[1].shard_id, "arrival": records[1].arrival_micros,
                                      "suppressed": True}
    opened = _read_all(uri, lines, keys)
    assert opened[1] is None and opened[4]["record"]["payload"]["person"] == "b"


def test_a_member_pointing_to_another_block_does_not_open():
    records, subjects = _records()
    keys = {s: os.urandom(32) for p in PEOPLE.values() for s in p}
    uri, lines = _seal(records, subjects, keys)
    member = orjson.loads(lines[2])
    assert member["at"] == 0
    member["i"] = 99
    with pytest.raises(ArchiveRecordShredded, match="damaged block"):
        ArchiveReader(keyring=Keyring({f"kid-{s}": k for s, k in keys.items()})).line_open(
            orjson.dumps(member), uri=uri, offset=2, lines=lines)


def test_version_1_lines_of_older_objects_still_read():
    records, subjects = _records()
    key = os.urandom(32)
    old = LineSealer({r.sequence_number: (("kid-old",), AESGCM(key)) for r in records})
    lines = [old.line(r.sequence_number, r.shard_id, r.arrival_micros, r.data, is_json=r.sequence_number != "110")
             for r in records]
    assert all(orjson.loads(line)["enc"] == 1 for line in lines)
    reader = ArchiveReader(keyring=Keyring({"kid-old": key}))
    for offset, (record, raw) in enumerate(zip(records, lines, strict=True)):
        assert reader.line_open(raw, uri="file:///old", offset=offset, lines=lines) == orjson.loads(
            archive_line(record, is_json=record.sequence_number != "110"))


def test_the_shipped_dictionary_is_exactly_the_training_on_synthetic_records():
    # the dictionary is shared by every block and never shredded: it must come from synthetic records only
    shipped = dictionary_path(DICTIONARY_VERSION).read_bytes()
    assert hashlib.sha256(dictionary_train()).digest() == hashlib.sha256(shipped).digest()


def test_an_encrypted_object_of_demo_records_is_within_one_and_a_half_times_the_clear_one():
    from contracts import presets
    from ingest_workers import services
    from ingest_workers.management.commands.generate_traffic import StreamSender
    from ingest_workers.pipeline import ContractIndex, process_batch
    from ingest_workers.traffic import TrafficGenerator, templates_from_preset

    loaded = {name: presets.preset_load(name) for name in presets.DEMO_SOURCES}
    templates = [t for p in loaded.values() for t in templates_from_preset(p)]
    # another seed than the dictionary's training: these records are not the ones it learnt from
    generator = TrafficGenerator(templates, seed=5, duplicate_fraction=0.02, malformed_fraction=0.005,
                                 out_of_order_fraction=0.1, late_fraction=0.0)
    now = 1_796_400_000_000_000
    sources = [{"source_id": f"src-{k}", "name": name, "platform": p["platform"], "product": p.get("product"),
                "active": True,
                "contracts": [{"subject": c["subject"], "event": c["subject"].split(".", 1)[1],
                               "versions": [{"version": j + 1, "schema": v["schema"], "mapping": v["mapping"]}
                                            for j, v in enumerate(c["versions"])]} for c in p["contracts"]]}
               for k, (name, p) in enumerate(loaded.items())]
    index = ContractIndex.build(sources)
    records = [RawRecord("shardId-000000000001", str(10_000 + i),
                         r.payload if isinstance(r.payload, bytes) else StreamSender.encode(r, received_at=now),
                         now + i)
               for i, r in enumerate(generator.records(3 * services.BATCH_MAX_RECORDS, now_micros=now))]
    clear, sealed = _archive(), _archive()
    keys: dict[str, bytes] = {}
    for start in range(0, len(records), services.BATCH_MAX_RECORDS):
        unit = records[start:start + services.BATCH_MAX_RECORDS]
        result = process_batch(unit, index, stream="s", batch_id="b", now_micros=now,
                               archive_locations=[("file:///archive", i) for i in range(len(unit))])
        not_json = {q.sequence_number for q in result.quarantine if q.reason_code == "undecodable"}
        subjects = records_subjects(result.events)
        keys_of = {}
        for r in unit:
            names = subjects.get(r.sequence_number) or ("unattributed:1",)
            pairs = [(f"kid-{s}", keys.setdefault(s, os.urandom(32))) for s in names]
            keys_of[r.sequence_number] = (tuple(sorted(k for k, _ in pairs)), AESGCM(combined_key(pairs)))
        for archive, sealer in ((clear, None), (sealed, LineSealer(keys_of))):
            archive.place(unit)
            archive.append(not_json, sealer)
    sizes = []
    for archive in (clear, sealed):
        archive.roll()
        sizes.append(len(archive.take_sealed()[0].blob))
    assert len(keys) > 20  # many subjects: the blocks are small
    assert sizes[1] <= 1.5 * sizes[0], f"encrypted {sizes[1]} bytes, clear {sizes[0]}"
    print(f"clear {sizes[0] / len(records):.1f} B/record, encrypted {sizes[1] / len(records):.1f} B/record, "
          f"ratio {sizes[1] / sizes[0]:.2f}")
