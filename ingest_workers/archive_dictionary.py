"""The raw archive's shared zstd dictionary: trained on synthetic records, never on stream records.

Encrypted archive blocks are compressed before they are encrypted (ciphertext does not compress). A
block holds only the records of one combination of subjects in one unit, a few records, too little
for zstd to find their shared structure on its own; a dictionary of that structure (field names,
user agents, URLs, the platforms' envelope shapes) makes them compress several-fold. The dictionary is
shared by all blocks and is never shredded, so it must hold no personal data: it is trained only on
records the demo's traffic generator makes from the contract presets' synthetic samples, with a fixed
seed and clock (``dictionary_train``; ``bench/archive_dict_train.py --check`` and the test suite check
that the shipped file is exactly that training's output). Version N lives in ``archive_dicts/zdN.dict``
and lines name it (``"fmt":"zdN"``); every shipped version stays readable.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

import zstandard

DICTIONARY_VERSION = 1
DICTIONARY_BYTES = 65_536
#: blocks are compressed at level 1: on the demo records, 1% bigger than level 3 for ~15% less CPU
ZSTD_LEVEL = 1
_TRAINING_LEVEL = 3  # part of the training: changing it changes the dictionary's bytes
_TRAINING_SEED = 20261204
_TRAINING_RECORDS = 5_000
_TRAINING_NOW_MICROS = 1_796_000_000_000_000  # a fixed clock: the same training makes the same bytes
_local = threading.local()  # zstd (de)compressor objects are not thread-safe: one per thread


def dictionary_path(version: int) -> Path:
    return Path(__file__).resolve().parent / "archive_dicts" / f"zd{version}.dict"


@lru_cache(maxsize=4)
def _dictionary(version: int) -> zstandard.ZstdCompressionDict:
    try:
        data = dictionary_path(version).read_bytes()
    except FileNotFoundError as err:
        raise ValueError(f"unknown archive dictionary version {version}") from err
    found = zstandard.ZstdCompressionDict(data)
    found.precompute_compress(level=ZSTD_LEVEL)  # once per process: preparing it costs milliseconds
    return found


def block_compress(data: bytes, version: int = DICTIONARY_VERSION) -> bytes:
    """``data`` compressed with dictionary ``version`` (a compressor reused per thread)."""
    compressors = getattr(_local, "compressors", None)
    if compressors is None:
        compressors = _local.compressors = {}
    compressor = compressors.get(version)
    if compressor is None:
        compressor = compressors[version] = zstandard.ZstdCompressor(
            dict_data=_dictionary(version), level=ZSTD_LEVEL, write_checksum=False, write_dict_id=False)
    return compressor.compress(data)


def block_decompress(blob: bytes, version: int) -> bytes:
    decompressors = getattr(_local, "decompressors", None)
    if decompressors is None:
        decompressors = _local.decompressors = {}
    decompressor = decompressors.get(version)
    if decompressor is None:
        decompressor = decompressors[version] = zstandard.ZstdDecompressor(dict_data=_dictionary(version))
    return decompressor.decompress(blob)


def dictionary_train() -> bytes:
    """The current version's dictionary, trained on synthetic demo records only (needs Django: the
    contract presets and the traffic generator)."""
    import dataclasses

    from contracts import presets
    from ingest_workers.management.commands.generate_traffic import StreamSender
    from ingest_workers.traffic import TrafficGenerator, templates_from_preset

    # zd1's training input is frozen: the records the generator made when zd1 was trained, before it paired a
    # tool call's phases (``ContractTemplate.phases``); a dictionary is never retrained in place (old blocks
    # need its exact bytes): a change of its input ships as the next version
    templates = [dataclasses.replace(t, phases=None) for p in presets.demo_presets() for t in templates_from_preset(p)]
    generator = TrafficGenerator(templates, seed=_TRAINING_SEED, duplicate_fraction=0.0, malformed_fraction=0.0,
                                 out_of_order_fraction=0.1, late_fraction=0.0)
    samples = [StreamSender.encode(r, received_at=_TRAINING_NOW_MICROS)
               for r in generator.records(_TRAINING_RECORDS, now_micros=_TRAINING_NOW_MICROS)]
    return zstandard.train_dictionary(DICTIONARY_BYTES, samples, level=_TRAINING_LEVEL, threads=0).as_bytes()
