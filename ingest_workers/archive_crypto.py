"""Per-subject encryption of raw-archive lines (crypto-shredding), and which subjects a record has.

The subject unit is the **identifier** (``kind:value`` of ``anonymous_id``, ``platform_user_id``,
``device_id``, ``email_sha256``), not the stitched person: the person is only known later, in the
warehouse, while the line is written at ingest. A record whose events carry several identifiers is
encrypted under a key derived from the data keys of ALL of them (``combined_key``): destroying any
one of those keys makes the line unreadable. An erasure destroys the keys of every identifier in the
ticket's confirmed expansion, so it reaches every line of the person whatever identifier combination
a line was written under.

A record whose events carry no identifier but name a session or conversation (the bot's reply in a
Slack DM, an assistant reply, a tool call from the API) is encrypted under its **conversation**
subject (``conversation_subject``: ``conversation:<source id>:<session key>``, the session key being
the warehouse's ``SESSION_ID``, else ``conversation:`` + ``CONVERSATION_ID``): an erasure finds the
person's conversations in the warehouse, as its warehouse steps do, and destroys those keys too. A
record with an identified event keeps only its identifiers' subjects (its conversation is not added:
one key lookup fewer, and an identified line is reached through its identifiers anyway). Only a
record with neither (a quarantined record, whose identifiers and conversation the pipeline never
learnt, or an event with no identifier and no session or conversation) is encrypted under its arrival
day's ``unattributed`` key, which the retention job may destroy like any other key.

An encrypted line keeps its stream position in clear (``seq``, ``shard``, ``arrival``: checkpoints,
adoption and lineage need them) and carries ``kids`` (random key ids, never identifiers or their
hashes, so a shredded line links to nobody), ``fmt`` (``json`` or ``bytes``) and ``ct``: base64 of a
fresh 12-byte nonce and the AES-256-GCM ciphertext of the record's bytes, the AAD binding shard,
sequence number, key ids and format. A record dropped by suppression is a line without any record
(``"suppressed": true``): the line numbers of an object never depend on which subjects were erased.

Version 2 (``"enc":2``, written since version 1 made the archive ~30× bigger: ciphertext does not
compress) compresses before it encrypts. The records of one unit that share a key set (same subjects:
the same person's events, mostly) form one **block**: their bodies (``j`` + JSON, or ``b`` + base64 of
bytes, one per line) are compressed together with the shared synthetic dictionary
(``ingest_workers.archive_dictionary``, ``"fmt":"zdN"``) and sealed once. The block's first record's
line carries it (``kids``, ``fmt``, ``n`` records, ``ct``); each other member's line points to it
(``"at"``: the block line's number in the same object, ``"i"``: its place in the block). Every record
keeps its own line, so lineage's ``raw_offset`` still finds line N. Shredding any subject of the key
set makes the whole block unreadable, which is only that key set's records; other blocks read. The AAD
binds shard, the block's first sequence number, ``n``, key ids and format. Version 1 lines still read.

Pure: no Django, no network, no clock.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping, Sequence

import orjson
import pybase64
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ingest_workers.archive_dictionary import DICTIONARY_VERSION, block_compress, block_decompress
from warehouse.modeling.identity import BLOCKED_VALUES

__all__ = [
    "SUBJECT_KINDS",
    "LINE_VERSION",
    "ArchiveRecordShredded",
    "LineSealer",
    "combined_key",
    "conversation_subject",
    "event_subjects",
    "line_is_encrypted",
    "block_member_line",
    "block_open",
    "line_open",
    "records_subjects",
    "subject_hash",
    "unattributed_subject",
]

#: the identifier kinds a canonical event carries that name a data subject (``tenant_id`` names an
#: organisation; ``person_id`` is filled later by stitching)
SUBJECT_KINDS: tuple[str, ...] = ("anonymous_id", "platform_user_id", "device_id", "email_sha256")
LINE_VERSION = 1
BLOCK_VERSION = 2
UNATTRIBUTED = "unattributed"
CONVERSATION = "conversation"
_COMBINE_LABEL = b"chatorbit-archive-combined-key-v1"


class ArchiveRecordShredded(Exception):
    """The archived record belongs to an erased subject: a key it was encrypted under is destroyed (or
    it was suppressed and never stored). Readers skip and count it."""

    def __init__(self, uri: str = "", offset: int = -1, reason: str = "erased subject"):
        super().__init__(f"{uri}#{offset}: unreadable ({reason})")
        self.uri, self.offset, self.reason = uri, offset, reason


def subject_hash(hash_key: bytes, id_key: str) -> str:
    """The keyed hash under which a subject's key and suppression entry are stored (HMAC-SHA256, hex):
    the identifier itself is never stored, and without the hash key nobody can test a guess."""
    return hmac.digest(hash_key, id_key.encode(), "sha256").hex()


def unattributed_subject(arrival_micros: int) -> str:
    """The subject of records with no known identifier: their arrival day (UTC)."""
    day = arrival_micros // 86_400_000_000
    return f"{UNATTRIBUTED}:{day}"


def conversation_subject(source_id: object, session_id: object, conversation_id: object) -> str | None:
    """The subject of an event without identifiers: its source and its session key as the warehouse
    computes it (``warehouse.modeling.sql.session_key``: the session id, else ``conversation:`` + the
    conversation id), namespaced by the source (two sources may reuse an id). A placeholder id (the
    identity side's ``BLOCKED_VALUES``: empty, ``null``, ``undefined``, ``0``, ``guest``... compared stripped
    of spaces and lower-cased, as the warehouse's ``usable``) counts as none: an SDK that sends
    ``session_id: "null"`` on every reply would otherwise put every user's replies under one key, and one
    erasure would shred and suppress them all. None when the event names neither: it falls back to the day
    key."""
    if session_id.__class__ is str and session_id.strip(" ").lower() not in BLOCKED_VALUES:
        key = session_id
    elif conversation_id.__class__ is str and conversation_id.strip(" ").lower() not in BLOCKED_VALUES:
        key = "conversation:" + conversation_id
    else:
        return None
    return f"{CONVERSATION}:{source_id if source_id.__class__ is str else ''}:{key}"


def event_subjects(event: Mapping) -> list[str]:
    """``kind:value`` of each subject identifier of one canonical event; for an event with none, its
    conversation subject (if it names a session or conversation)."""
    ids = event.get("identifiers")
    out = []
    if ids.__class__ is dict:
        for kind in SUBJECT_KINDS:
            value = ids.get(kind)
            if value.__class__ is str and value:
                out.append(f"{kind}:{value}")
    if not out:
        conversation = conversation_subject(event.get("source_id"), event.get("session_id"),
                                            event.get("conversation_id"))
        if conversation is not None:
            out.append(conversation)
    return out


def records_subjects(events: Iterable[Mapping]) -> dict[str, tuple[str, ...]]:
    """Sequence number → the subjects of the record's events, in a fixed order (``SUBJECT_KINDS``
    order for one event, sorted when several events add up): the identifiers of its identified events;
    for a record with none, the conversation subjects of its events (``conversation_subject``). A
    record missing from the answer falls back to its day key. The hot path."""
    found: dict[str, tuple[str, ...]] = {}
    unidentified: dict[str, tuple[str, ...]] = {}
    kinds = SUBJECT_KINDS
    for event in events:
        ids = event.get("identifiers")
        subjects = tuple([kind + ":" + value for kind in kinds
                          if (value := ids.get(kind)) and value.__class__ is str]) if ids.__class__ is dict else ()
        if subjects:
            seq = event["lineage"]["sequence_number"]
            before = found.get(seq)
            found[seq] = subjects if before is None or before == subjects else tuple(sorted({*before, *subjects}))
            continue
        # inline conversation_subject (per event on the hot path: no call; placeholder ids count as none)
        session = event.get("session_id")
        if session.__class__ is str and session.strip(" ").lower() not in BLOCKED_VALUES:
            key = session
        else:
            conversation = event.get("conversation_id")
            if conversation.__class__ is not str or conversation.strip(" ").lower() in BLOCKED_VALUES:
                continue
            key = "conversation:" + conversation
        source = event.get("source_id")
        subject = (CONVERSATION + ":" + (source if source.__class__ is str else "") + ":" + key,)
        seq = event["lineage"]["sequence_number"]
        before = unidentified.get(seq)
        unidentified[seq] = subject if before is None or before == subject else tuple(sorted({*before, *subject}))
    if unidentified:
        for seq, subjects in unidentified.items():
            if seq not in found:  # an identified event of the record keys it by its identifiers only
                found[seq] = subjects
    return found


def combined_key(keys: Sequence[tuple[str, bytes]]) -> bytes:
    """One AES-256 key from the data keys of several subjects ((key id, key) pairs, any order): an
    HMAC-SHA256 keyed by their concatenation in key-id order. Without every one of them it cannot be
    computed, so shredding any subject makes the line unreadable."""
    if len(keys) == 1:
        return keys[0][1]
    material = b"".join(key for _, key in sorted(keys))
    return hmac.digest(material, _COMBINE_LABEL, "sha256")


class LineSealer:
    """Encrypts one unit's archive lines. ``keys_of[seq]`` is (key ids, AESGCM) for each record;
    ``suppressed`` the sequence numbers dropped by suppression (their line keeps no record)."""

    __slots__ = ("keys_of", "suppressed", "clear", "_nonces", "_next", "_parts")

    def __init__(self, keys_of: Mapping[str, tuple[tuple[str, ...], AESGCM]], suppressed: Iterable[str] = (),
                 *, clear: bool = False):
        self.keys_of = keys_of
        self.suppressed = frozenset(suppressed)
        #: encryption is off: lines in clear, except that suppressed records still keep no record
        self.clear = clear
        self._nonces = b""  # random nonces drawn 256 at a time (one getrandom call, not one per line)
        self._next = 0
        #: (key ids, is_json) → (the line's middle, the AAD's tail): built once per unit and key set
        self._parts: dict[tuple[tuple[str, ...], bool], tuple[bytes, bytes]] = {}

    def _nonce(self) -> bytes:
        if self._next + 12 > len(self._nonces):
            self._nonces, self._next = os.urandom(12 * 256), 0
        nonce = self._nonces[self._next:self._next + 12]
        self._next += 12
        return nonce

    def line(self, seq: str, shard: str, arrival: int, data: bytes, *, is_json: bool) -> bytes:
        head = b'{"seq":%s,"shard":%s,"arrival":%d,' % (orjson.dumps(seq), orjson.dumps(shard), int(arrival))
        if seq in self.suppressed:
            return head + b'"suppressed":true}'
        if self.clear:
            if is_json:
                body = data.strip()
                if b"\n" in body or b"\r" in body:  # as archive_line: one line per record
                    body = orjson.dumps(orjson.loads(body))
                return head + b'"record":' + body + b"}"
            return head + b'"record_b64":"' + pybase64.b64encode(data) + b'"}'
        kids, aead = self.keys_of[seq]
        parts = self._parts.get((kids, is_json))
        if parts is None:
            fmt = "json" if is_json else "bytes"
            parts = self._parts[(kids, is_json)] = (
                b'"enc":%d,"kids":%s,"fmt":"%s","ct":"' % (LINE_VERSION, orjson.dumps(kids), fmt.encode()),
                _aad_tail(kids, fmt))
        middle, aad_tail = parts
        body = data.strip() if is_json else data
        nonce = self._nonce()
        sealed = nonce + aead.encrypt(nonce, body, f"{shard}\x00{seq}".encode() + aad_tail)
        return head + middle + pybase64.b64encode(sealed) + b'"}'

    def lines(self, records: Sequence[tuple[str, str, int, bytes, bool]], first_line: int) -> list[bytes]:
        """The lines of consecutive records of one object ((seq, shard, arrival, data, is_json) each),
        the first at line ``first_line``: in clear, or (version 2) compressed and sealed by block, one
        block per key set (see the module docstring)."""
        if self.clear:
            return [self.line(seq, shard, arrival, data, is_json=is_json)
                    for seq, shard, arrival, data, is_json in records]
        suppressed, keys_of = self.suppressed, self.keys_of
        shard_json = {}
        out: list[bytes] = []
        #: key ids → [index of the first member, its head, cipher, member bodies]
        blocks: dict[tuple[str, ...], list] = {}
        for index, (seq, shard, arrival, data, is_json) in enumerate(records):
            shard_part = shard_json.get(shard)
            if shard_part is None:
                shard_part = shard_json[shard] = orjson.dumps(shard)
            head = b'{"seq":%s,"shard":%s,"arrival":%d,' % (orjson.dumps(seq), shard_part, arrival)
            if seq in suppressed:
                out.append(head + b'"suppressed":true}')
                continue
            if is_json:
                body = data.strip()
                if b"\n" in body or b"\r" in body:  # as archive_line: one line per record
                    body = orjson.dumps(orjson.loads(body))
                body = b"j" + body
            else:
                body = b"b" + pybase64.b64encode(data)
            kids, aead = keys_of[seq]
            block = blocks.get(kids)
            if block is None:
                blocks[kids] = [index, head, aead, [body]]
                out.append(b"")  # the block's line, sealed below
            else:
                out.append(head + b'"enc":%d,"at":%d,"i":%d}' % (BLOCK_VERSION, first_line + block[0],
                                                                 len(block[3])))
                block[3].append(body)
        fmt = f"zd{DICTIONARY_VERSION}"
        for kids, (index, head, aead, bodies) in blocks.items():
            nonce = self._nonce()
            sealed = nonce + aead.encrypt(nonce, block_compress(b"\n".join(bodies)),
                                          _block_aad(records[index][1], records[index][0], len(bodies), kids, fmt))
            out[index] = (head + b'"enc":%d,"kids":%s,"fmt":"%s","n":%d,"ct":"'
                          % (BLOCK_VERSION, orjson.dumps(kids), fmt.encode(), len(bodies))
                          + pybase64.b64encode(sealed) + b'"}')
        return out


def _block_aad(shard: str, seq: str, n: int, kids: Sequence[str], fmt: str) -> bytes:
    return f"{shard}\x00{seq}\x00{n}".encode() + _aad_tail(kids, fmt)


def block_open(block: Mapping, keys: Mapping[str, bytes | None], *, uri: str = "", offset: int = -1) -> list[bytes]:
    """The record bodies of a version-2 block line (``j`` + JSON or ``b`` + base64 each), in member
    order. ``ArchiveRecordShredded`` when a key is gone or the block does not open."""
    kids = tuple(block["kids"])
    found = [(kid, keys.get(kid)) for kid in kids]
    present = [(kid, key) for kid, key in found if key is not None]
    if len(present) != len(found):
        raise ArchiveRecordShredded(uri, offset)
    fmt = str(block["fmt"])
    if not fmt.startswith("zd") or not fmt[2:].isdigit():
        raise ArchiveRecordShredded(uri, offset, f"unknown block format {fmt!r}")
    try:
        sealed = pybase64.b64decode(block["ct"], validate=True)
    except ValueError as err:
        raise ArchiveRecordShredded(uri, offset, "damaged line") from err
    n = int(block["n"])
    try:
        packed = AESGCM(combined_key(present)).decrypt(
            sealed[:12], sealed[12:], _block_aad(str(block["shard"]), str(block["seq"]), n, kids, fmt))
    except InvalidTag as err:
        raise ArchiveRecordShredded(uri, offset, "ciphertext does not open") from err
    bodies = block_decompress(packed, int(fmt[2:])).split(b"\n")
    if len(bodies) != n:
        raise ArchiveRecordShredded(uri, offset, "damaged block")
    return bodies


def block_member_line(line: Mapping, body: bytes) -> bytes:
    """The line as it would have been written in clear, from its line and its body in the block."""
    head = b'{"seq":%s,"shard":%s,"arrival":%d,' % (orjson.dumps(line["seq"]), orjson.dumps(str(line["shard"])),
                                                    int(line["arrival"]))
    if body[:1] == b"j":
        return head + b'"record":' + body[1:] + b"}"
    return head + b'"record_b64":"' + body[1:] + b'"}'


def _aad_tail(kids: Sequence[str], fmt: str) -> bytes:
    return f"\x00{','.join(kids)}\x00{fmt}".encode()


def line_is_encrypted(line: Mapping) -> bool:
    return "enc" in line or line.get("suppressed") is True


def line_open(line: Mapping, keys: Mapping[str, bytes | None], *, uri: str = "", offset: int = -1) -> bytes:
    """The archived line as it would have been written in clear (``archive_line``'s bytes), from an
    encrypted one. ``keys``: key id → data key, None for a destroyed key. ``ArchiveRecordShredded``
    when a key is gone, the line was suppressed, or the ciphertext does not open."""
    if line.get("suppressed") is True:
        raise ArchiveRecordShredded(uri, offset, "suppressed: erased subject")
    kids = tuple(line["kids"])
    found = [(kid, keys.get(kid)) for kid in kids]
    present = [(kid, key) for kid, key in found if key is not None]
    if len(present) != len(found):
        raise ArchiveRecordShredded(uri, offset)
    seq, shard, fmt = str(line["seq"]), str(line["shard"]), str(line["fmt"])
    try:
        sealed = pybase64.b64decode(line["ct"], validate=True)
    except ValueError as err:
        raise ArchiveRecordShredded(uri, offset, "damaged line") from err
    try:
        body = AESGCM(combined_key(present)).decrypt(sealed[:12], sealed[12:],
                                                     f"{shard}\x00{seq}".encode() + _aad_tail(kids, fmt))
    except InvalidTag as err:  # a key id reused with another key cannot happen; tampering can
        raise ArchiveRecordShredded(uri, offset, "ciphertext does not open") from err
    head = b'{"seq":%s,"shard":%s,"arrival":%d,' % (orjson.dumps(line["seq"]), orjson.dumps(shard),
                                                    int(line["arrival"]))
    if fmt == "json":
        return head + b'"record":' + body + b"}"
    return head + b'"record_b64":"' + pybase64.b64encode(body) + b'"}'


def subject_hash_key(secret: str) -> bytes:
    """The hash key derived from a configured secret (so rotating another secret changes nothing)."""
    return hashlib.sha256(b"chatorbit-subject-hash-v1\x00" + secret.encode()).digest()
