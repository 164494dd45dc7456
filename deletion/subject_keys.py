"""The raw archive's per-subject data keys: wrapped by a master key, stored in PostgreSQL, cached per process.

Master keys (``settings.ARCHIVE_ENCRYPTION``):
* ``kms``: data keys wrapped under a wrapping key of the UTC day (``ArchiveWrappingKey``), which is itself
  wrapped by ``GenerateDataKey`` / opened by ``Decrypt`` on ``ARCHIVE_KMS_KEY_ID`` through boto3 (the moto
  server in the tests): one KMS request a day for the fleet and one per wrapping key per process, not one
  per subject. The AAD and the encryption context name the key ids, so a wrapped key only opens as itself;
* ``local``: AES-256-GCM under a local 32-byte key (``ARCHIVE_LOCAL_MASTER_KEY``, else a key file
  made on first use): the embedded default;
* ``off``: no encryption (benchmarks); suppression still applies.

``SubjectKeyring`` is one process's view: data keys by subject and by key id in bounded LRU caches,
the suppression list as a set of keyed hashes, both dropped when ``ErasureGeneration`` moved (checked
once per batch by ``refresh``). A new subject costs one wrap under the master key (a local AES-GCM
operation with either master key) and one guarded INSERT; two workers creating the same subject's key at
once both insert with ``ON CONFLICT DO NOTHING`` and both read back the one row that won (the loser
unwraps the winner's key). The INSERT is
also guarded by the suppression list, so a worker whose view is a batch old cannot recreate a key
that an erasure has just shredded.

Key material is never logged, never put in an exception message, never stored unwrapped.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from ingest_workers.archive_crypto import LineSealer, combined_key, subject_hash, subject_hash_key, unattributed_subject

log = logging.getLogger(__name__)

GENERATION = "archive"
#: subjects (and key ids) whose data keys one process keeps at most
CACHE_MAX_KEYS = 100_000
_KMS_CONTEXT_PURPOSE = "chatorbit-raw-archive-subject-key"


class KeyServiceUnavailable(Exception):
    """The master key could not be reached (KMS down, throttled) or refused: the unit is retried."""


#: KMS answers that no retry will change: the key, its policy or the setting is wrong
KMS_REFUSALS = frozenset({
    "AccessDeniedException", "DisabledException", "NotFoundException", "KMSInvalidStateException",
    "InvalidKeyUsageException", "IncorrectKeyException", "InvalidCiphertextException", "ValidationException",
    "UnrecognizedClientException", "InvalidSignatureException"})
#: after a failed GenerateDataKey with the last day's key still in memory, KMS is not asked again for
#: this long: every new subject asking an unreachable KMS would wait out its timeouts in the unit
KMS_RETRY_SECONDS = 60.0


def kms_error_text(err: Exception, request: str, key_id: str, *, label: str = "ARCHIVE_KMS_KEY_ID=") -> str:
    """What an operator needs from a failed KMS request: its error code and message (never key
    material: KMS does not echo plaintext), and whether it is an outage or a refusal to fix."""
    from botocore.exceptions import ClientError

    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        code = str(error.get("Code") or "ClientError")
        text = f"KMS {request} on {label}{key_id} failed: {code}: {error.get('Message', '')}"[:600]
        if code in KMS_REFUSALS:
            return text + (" (a refusal, not an outage: the key, its key policy or the setting must be fixed;"
                           " shards retry and then park until it is)")
        return text
    return f"KMS {request} on {label}{key_id} failed: {type(err).__name__}: {err}"[:600]


class MasterKey(Protocol):
    name: str

    def generate(self, key_id: str) -> tuple[bytes, bytes]:
        """(plaintext data key, wrapped data key) for a new subject key."""

    def unwrap(self, wrapped: bytes, key_id: str) -> bytes: ...


class LocalMasterKey:
    """AES-256-GCM key wrapping under a local key (nonce + ciphertext, AAD = the key id)."""

    def __init__(self, key: bytes):
        if len(key) != 32:
            raise ValueError("the local archive master key must be 32 bytes")
        self._aead = AESGCM(key)
        self.name = "local:" + subject_hash(key, "fingerprint")[:16]

    def generate(self, key_id: str) -> tuple[bytes, bytes]:
        key = os.urandom(32)
        nonce = os.urandom(12)
        return key, nonce + self._aead.encrypt(nonce, key, key_id.encode())

    def unwrap(self, wrapped: bytes, key_id: str) -> bytes:
        return self._aead.decrypt(wrapped[:12], wrapped[12:], key_id.encode())

    def __repr__(self) -> str:  # never the key
        return f"LocalMasterKey({self.name})"


#: a subject key wrapped under a wrapping key of the day (``KmsMasterKey``): this prefix, the wrapping key's
#: id (32 hex characters), a 12-byte nonce, then AES-256-GCM of the data key. A KMS CiphertextBlob (the
#: keys wrapped before the wrapping tier) never starts with a zero byte: AWS's start with a version byte
#: of 1, moto's with the KMS key's id in ASCII.
_WRAPPED_PREFIX = b"\x00wk1"
_WRAPPING_CONTEXT_PURPOSE = "chatorbit-raw-archive-wrapping-key"


class WrappingKeyMissing(Exception):
    """A subject key names a wrapping key that has no row: it cannot be unwrapped (never expected: wrapping
    keys are never deleted)."""


def _utc_day() -> dt.date:
    return timezone.now().astimezone(dt.UTC).date()


class KmsMasterKey:
    """KMS envelope encryption with a wrapping tier: a subject's data key is wrapped (AES-256-GCM, the
    AAD naming its key id) under the wrapping key of the UTC day (``ArchiveWrappingKey``), and only the
    wrapping key goes through KMS: one ``GenerateDataKey`` a day for the whole fleet (two workers making
    the day's key at once keep the row that won), one ``Decrypt`` per wrapping key per process. One KMS
    request per new subject cost the consumer ~0.66 ms of CPU and ~2 ms of waiting each on the loopback
    (bench: ~9 new subjects per 100 records of demo traffic, 60 us of CPU per event), and at 35K events/s
    thousands of billed, throttled requests a second. Keys wrapped directly by KMS before this (their
    bytes are a KMS CiphertextBlob) are still opened with ``Decrypt``. moto's KMS still answers for keys
    scheduled for deletion, so nothing here relies on the master key's state: shredding deletes the
    subject's wrapped data key, the only copy."""

    def __init__(self, client: Any, key_id: str, *, day: Any = _utc_day, clock: Any = time.monotonic):
        self.client = client
        self.key_id = key_id
        self.name = key_id
        self._day = day
        self._clock = clock
        self._generate_failed_at: float | None = None  # the last refused GenerateDataKey (``clock``)
        self._lock = threading.RLock()
        self._current: tuple[dt.date, str, AESGCM] | None = None  # the day's wrapping key, known committed
        self._wrapping: _Lru = _Lru(4096)  # wrapping key id → AESGCM

    def _context(self, key_id: str) -> dict[str, str]:
        return {"purpose": _KMS_CONTEXT_PURPOSE, "subject_key_id": key_id}

    def generate(self, key_id: str) -> tuple[bytes, bytes]:
        wrapping_id, aead = self._wrapping_key_of_today()
        key = os.urandom(32)
        nonce = os.urandom(12)
        return key, _WRAPPED_PREFIX + wrapping_id.encode() + nonce + aead.encrypt(nonce, key, key_id.encode())

    def unwrap(self, wrapped: bytes, key_id: str) -> bytes:
        if wrapped[:len(_WRAPPED_PREFIX)] != _WRAPPED_PREFIX:
            return self._kms_decrypt(wrapped, self._context(key_id))  # wrapped by KMS itself, before the tier
        at = len(_WRAPPED_PREFIX)
        wrapping_id = wrapped[at:at + 32].decode("ascii")
        nonce, sealed = wrapped[at + 32:at + 44], wrapped[at + 44:]
        return self._wrapping_key(wrapping_id).decrypt(nonce, sealed, key_id.encode())

    def _kms_decrypt(self, blob: bytes, context: dict[str, str], kms_key: str | None = None) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.decrypt(CiphertextBlob=blob, KeyId=kms_key or self.key_id,
                                       EncryptionContext=context)["Plaintext"]
        except (BotoCoreError, ClientError) as err:
            # a wrapping key names the key that made it, which may no longer be the setting
            label = "ARCHIVE_KMS_KEY_ID=" if kms_key is None else "the key that wrapped it, "
            raise KeyServiceUnavailable(kms_error_text(err, "Decrypt", kms_key or self.key_id, label=label)) from None

    def _wrapping_key(self, wrapping_id: str) -> AESGCM:
        from deletion.models import ArchiveWrappingKey

        with self._lock:
            found = self._wrapping.get(wrapping_id)
            if found is None:
                row = ArchiveWrappingKey.objects.filter(wrapping_key_id=wrapping_id).first()
                if row is None:
                    raise WrappingKeyMissing(f"archive wrapping key {wrapping_id} has no row")
                # under the KMS key that wrapped it (its row names it): a new ARCHIVE_KMS_KEY_ID wraps the
                # next days' keys, and the earlier days' still open while their KMS key is enabled. By its
                # ARN, not the setting: an alias moved to a new key (AWS's manual rotation) would name the
                # new key, and KMS refuses a Decrypt whose KeyId is not the key that encrypted
                found = AESGCM(self._kms_decrypt(bytes(row.wrapped_key), self._wrapping_context(wrapping_id),
                                                 row.kms_key_arn or row.master_key))
                self._wrapping.put(wrapping_id, found)
            return found

    @staticmethod
    def _wrapping_context(wrapping_id: str) -> dict[str, str]:
        return {"purpose": _WRAPPING_CONTEXT_PURPOSE, "wrapping_key_id": wrapping_id}

    def _wrapping_key_of_today(self) -> tuple[str, AESGCM]:
        """The day's wrapping key: cached, else the stored row, else made (one KMS request) and stored."""
        from botocore.exceptions import BotoCoreError, ClientError

        from deletion.models import ArchiveWrappingKey

        day = self._day()
        with self._lock:
            if self._current is not None and self._current[0] == day:
                return self._current[1], self._current[2]
            failed_at = self._generate_failed_at
            if (self._current is not None and failed_at is not None
                    and self._clock() - failed_at < KMS_RETRY_SECONDS):
                return self._current[1], self._current[2]  # KMS failed moments ago: not asked per new subject
            row = ArchiveWrappingKey.objects.filter(day=day, master_key=self.name).first()
            if row is None:
                wrapping_id = os.urandom(16).hex()
                try:
                    answer = self.client.generate_data_key(KeyId=self.key_id, KeySpec="AES_256",
                                                           EncryptionContext=self._wrapping_context(wrapping_id))
                except (BotoCoreError, ClientError) as err:
                    text = kms_error_text(err, "GenerateDataKey", self.key_id)
                    if self._current is not None:
                        # the day changed while KMS is unreachable: the last day's key (committed, in
                        # memory) keeps wrapping new subjects rather than stopping every unit at midnight,
                        # and KMS is asked again once a minute, not once per new subject
                        self._generate_failed_at = self._clock()
                        log.warning("%s; new subject keys stay under the wrapping key of %s, KMS is asked again "
                                    "in %.0f s", text, self._current[0], KMS_RETRY_SECONDS)
                        return self._current[1], self._current[2]
                    raise KeyServiceUnavailable(text) from None
                self._generate_failed_at = None
                # two workers making the day's key at once: the row that won is the day's key
                ArchiveWrappingKey.objects.bulk_create(
                    [ArchiveWrappingKey(wrapping_key_id=wrapping_id, day=day, wrapped_key=answer["CiphertextBlob"],
                                        master_key=self.name, kms_key_arn=str(answer.get("KeyId") or ""))],
                    ignore_conflicts=True)
                row = ArchiveWrappingKey.objects.get(day=day, master_key=self.name)
                if row.wrapping_key_id == wrapping_id:
                    self._wrapping.put(wrapping_id, AESGCM(answer["Plaintext"]))
            aead = self._wrapping_key(row.wrapping_key_id)
            # made inside a caller's transaction, the row may yet be rolled back (with the subject keys
            # wrapped under it): it becomes the day's key for this process only once it is seen committed
            if not connection.in_atomic_block:
                self._current = (day, row.wrapping_key_id, aead)
            return row.wrapping_key_id, aead


class KeyMaterialLogFilter(logging.Filter):
    """Drops botocore's DEBUG records that carry KMS key material: at DEBUG botocore logs request and
    response bodies, and a ``GenerateDataKey``/``Decrypt`` answer holds the plaintext data key."""

    MARKERS = ("Plaintext", "CiphertextBlob")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is not ours to keep
            return False
        return not any(marker in message for marker in self.MARKERS)


_KEY_MATERIAL_FILTER = KeyMaterialLogFilter()


def key_material_log_filter_install() -> None:
    """Attach the filter to every botocore and urllib3 logger (a filter on a parent logger does not see
    its children's records, so each one gets it)."""
    for name in ["botocore", "urllib3", *list(logging.root.manager.loggerDict)]:
        if name.split(".", 1)[0] in ("botocore", "urllib3"):
            logger = logging.getLogger(name)
            if _KEY_MATERIAL_FILTER not in logger.filters:
                logger.addFilter(_KEY_MATERIAL_FILTER)


def local_master_key_load() -> bytes:
    """``ARCHIVE_LOCAL_MASTER_KEY`` (base64), else the key file, created (0600, atomically) on first use."""
    configured = getattr(settings, "ARCHIVE_LOCAL_MASTER_KEY", "")
    if configured:
        try:
            key = base64.b64decode(configured, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != 32:
            raise ValueError("ARCHIVE_LOCAL_MASTER_KEY must be the base64 of 32 random bytes")
        return key
    path = str(settings.ARCHIVE_LOCAL_MASTER_KEY_FILE)
    if not os.path.exists(path):
        local_master_key_file_create(path)
    with open(path, "rb") as fh:
        text = fh.read().strip()
    if not text:
        text = _empty_key_file_repair(path)
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ValueError(f"The archive master key file {path} does not hold a 32-byte base64 key; restore it from "
                         f"its backup (every archived line's key is wrapped under it)")
    return key


def _empty_key_file_repair(path: str) -> bytes:
    """The key of an empty key file (left by an older release killed between creating and writing it): a new
    key written into it, if no archive data key was wrapped yet (nothing can have used the missing key);
    else an error naming the file. Under an exclusive lock on the file, so processes starting together
    write one key; the others read it."""
    import fcntl

    from deletion.models import SubjectKey

    with open(path, "r+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            text = fh.read().strip()
            if text:
                return text  # another process repaired it while this one waited
            if SubjectKey.objects.exists():
                raise ValueError(f"The archive master key file {path} is empty, but archive data keys wrapped "
                                 f"under a master key exist: restore the file from its backup")
            text = base64.b64encode(os.urandom(32))
            fh.seek(0)
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
            log.warning("the empty archive master key file %s held no key in use: a new key was written", path)
            return text
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _directory_sync(folder: str) -> None:
    """Make a new directory entry (the key file's link) durable: without it a power loss right after the
    first start could lose the file while PostgreSQL kept the keys wrapped under it."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def local_master_key_file_create(path: str) -> bool:
    """Create the key file unless it exists; True when this call's key is the one that won.

    Two processes starting together must end up with one key: the key is written whole to a temporary file
    beside it, then hard-linked to ``path`` (``link`` fails when ``path`` exists, so exactly one process wins
    and nobody ever sees an empty or half-written file, nor has its key replaced); the losers read the winner's.
    """
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    temp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(base64.b64encode(os.urandom(32)))
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            return False  # made earlier, or by another process just now: its key is the key
        _directory_sync(folder)
        return True
    finally:
        os.unlink(temp)


def master_key_from_settings() -> MasterKey | None:
    mode = getattr(settings, "ARCHIVE_ENCRYPTION", "local")
    if mode == "off":
        return None
    if mode == "kms":
        from ingest_workers.aws import kms_client

        client = kms_client()
        key_material_log_filter_install()  # after the client: every botocore module is imported by now
        return KmsMasterKey(client, settings.ARCHIVE_KMS_KEY_ID)
    return LocalMasterKey(local_master_key_load())


class _Lru(OrderedDict):
    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        if len(self) > self.limit:
            self.popitem(last=False)


class SubjectKeyring:
    """One process's subject keys and suppression list (see the module docstring)."""

    def __init__(self, *, master: MasterKey | None, hash_key: bytes, max_keys: int = CACHE_MAX_KEYS):
        self.master = master
        self._hash_key = hash_key
        self._lock = threading.RLock()
        self._by_subject: _Lru = _Lru(max_keys)   # id_key → (key_id, key)
        self._by_kid: _Lru = _Lru(max_keys)       # key_id → key
        self._sealing: _Lru = _Lru(max_keys)      # a record's subjects → (key ids, AESGCM)
        self._hashes: _Lru = _Lru(max_keys)       # id_key → keyed hash
        self._suppressed: set[str] = set()
        self._generation: tuple[int, str] | None = None  # (value, token) of ErasureGeneration
        #: round trips to the master key (for tests and the benchmark)
        self.master_calls = 0

    @property
    def encrypting(self) -> bool:
        return self.master is not None

    def __repr__(self) -> str:
        return f"SubjectKeyring({self.master!r}, {len(self._by_subject)} cached)"

    # --- the cache invalidation ------------------------------------------------------------------
    def refresh(self) -> None:
        """Once per batch: drop every cached key when an erasure moved the generation, and reload the
        suppression list (one small query when nothing changed)."""
        from deletion.models import ErasureGeneration, SuppressedSubject

        # plain SQL: the ORM's query building cost the consumer more CPU than the query (once per unit)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT value, token FROM {ErasureGeneration._meta.db_table} WHERE name = %s",  # noqa: S608
                           [GENERATION])
            row = cursor.fetchone()
        generation = (row[0] or 0, row[1] or "") if row else (0, "")
        with self._lock:
            if generation == self._generation:
                return
            if self._generation is not None:
                self._by_subject.clear()
                self._by_kid.clear()
                self._sealing.clear()
            # the whole list, not the rows after the last id seen: ids are taken in one order and committed in
            # another (two tickets at once), so a high-water mark would skip a ticket's entries for good in
            # this process, and a re-drive here could land an erased person's records again. The list is
            # small (one row per erased identifier) and is read only when an erasure moved the generation.
            self._suppressed = set(SuppressedSubject.objects.values_list("id_hash", flat=True))
            self._generation = generation

    def forget(self) -> None:
        """Drop everything cached (tests; a process that must not hold keys any longer)."""
        with self._lock:
            self._by_subject.clear()
            self._by_kid.clear()
            self._sealing.clear()
            self._hashes.clear()
            self._suppressed.clear()
            self._generation = None

    # --- suppression -----------------------------------------------------------------------------
    def hash_of(self, id_key: str) -> str:
        found = self._hashes.get(id_key)
        if found is None:
            found = subject_hash(self._hash_key, id_key)
            self._hashes.put(id_key, found)
        return found

    def suppressed(self, subjects: Iterable[str]) -> bool:
        """Whether any of these identifiers belongs to an erased subject (a set lookup each)."""
        if not self._suppressed:
            return False
        return any(self.hash_of(s) in self._suppressed for s in subjects)

    def suppressed_uncached(self, subjects: Iterable[str]) -> bool:
        """``suppressed`` for guesses (the string leaves of a record no event was mapped from: mostly not
        identifiers at all): hashed without the cache, so they do not push out the identifiers in use."""
        if not self._suppressed:
            return False
        return any(subject_hash(self._hash_key, s) in self._suppressed for s in subjects)

    @property
    def suppressing(self) -> bool:
        """The suppression list is not empty."""
        return bool(self._suppressed)

    def suppressed_of(self, subjects_by_seq: Mapping[str, tuple[str, ...]]) -> set[str]:
        """The sequence numbers whose subjects include an erased one. A combination of subjects this
        process has sealed with since the last generation change is not suppressed (suppression entries
        arrive only with a generation change, which empties that cache): no hashing for it."""
        if not self._suppressed:
            return set()
        sealed = self._sealing
        return {seq for seq, subjects in subjects_by_seq.items()
                if subjects not in sealed and self.suppressed(subjects)}

    # --- writing ---------------------------------------------------------------------------------
    def sealer(self, records: Iterable[Any], subjects_by_seq: Mapping[str, tuple[str, ...]],
               suppressed: set[str]) -> LineSealer | None:
        """The unit's ``LineSealer``: every record's key ids and cipher (one dict lookup per record once
        its combination of subjects is cached). A subject whose key cannot be created because it was
        suppressed meanwhile adds its records to ``suppressed``."""
        if self.master is None:  # encryption off: suppressed records still leave no record behind
            return LineSealer({}, suppressed, clear=True) if suppressed else None
        by_subjects = self._sealing
        keys_of: dict[str, tuple[tuple[str, ...], AESGCM]] = {}
        pending: dict[str, tuple[str, ...]] = {}
        for record in records:
            seq = record.sequence_number
            if seq in suppressed:
                continue
            subjects = subjects_by_seq.get(seq) or (unattributed_subject(record.arrival_micros),)
            found = by_subjects.get(subjects)
            if found is None:
                pending[seq] = subjects
            else:
                keys_of[seq] = found
        if pending:
            with self._lock:
                keys = self.subject_keys({s for subjects in pending.values() for s in subjects})
                for seq, subjects in pending.items():
                    if any(s not in keys for s in subjects):
                        suppressed.add(seq)  # suppressed after this worker's last refresh
                        continue
                    found = by_subjects.get(subjects)
                    if found is None:
                        pairs = [keys[s] for s in subjects]
                        found = (tuple(sorted(kid for kid, _ in pairs)), AESGCM(combined_key(pairs)))
                        if all(s in self._by_subject for s in subjects):  # not made in a transaction: ``subject_keys``
                            by_subjects.put(subjects, found)
                    keys_of[seq] = found
        return LineSealer(keys_of, suppressed)

    def subject_keys(self, subjects: Iterable[str]) -> dict[str, tuple[str, bytes]]:
        """id_key → (key id, data key) for each subject, created on first sight. A subject missing from
        the answer is suppressed (its key may not be created).

        Inside a caller's transaction the keys are returned but not cached: a key created there has no
        row once the transaction rolls back, and a cached one would go on sealing the subject's later
        lines under a key id nothing can open (they would read as shredded)."""
        out: dict[str, tuple[str, bytes]] = {}
        missing = []
        with self._lock:
            for subject in subjects:
                found = self._by_subject.get(subject)
                if found is None:
                    missing.append(subject)
                else:
                    out[subject] = found
            if missing:
                loaded = self._keys_load(missing)
                if not connection.in_atomic_block:
                    for subject, found in loaded.items():
                        self._by_subject.put(subject, found)
                        self._by_kid.put(found[0], found[1])
                out.update(loaded)
        return out

    def _keys_load(self, subjects: list[str]) -> dict[str, tuple[str, bytes]]:
        assert self.master is not None
        hashes = {self.hash_of(s): s for s in subjects}
        # plain SQL, one statement per step: new subjects arrive by the dozen per unit in busy traffic
        # (new anonymous and device ids), and the ORM's per-row work cost the consumer CPU per event
        stored = self._keys_select(list(hashes))
        out: dict[str, tuple[str, bytes]] = {}
        new: dict[str, tuple[str, bytes, bytes]] = {}  # id_hash → (key id, key, wrapped)
        for id_hash, subject in hashes.items():
            row = stored.get(id_hash)
            if row is not None:
                out[subject] = (row[0], self._unwrap(row[1], row[0]))
            elif id_hash not in self._suppressed:
                key_id = os.urandom(16).hex()
                self.master_calls += 1
                key, wrapped = self.master.generate(key_id)
                new[id_hash] = (key_id, key, wrapped)
        if new:
            inserted = self._keys_insert(new)
            # a key not inserted: another worker created the subject's key first (its key is the
            # subject's key), or an erasure this process has not seen yet suppressed the subject
            won = self._keys_select([h for h in new if h not in inserted]) if len(inserted) < len(new) else {}
            for id_hash, (key_id, key, _) in new.items():
                if id_hash in inserted:
                    out[hashes[id_hash]] = (key_id, key)
                    continue
                row = won.get(id_hash)
                if row is None:
                    self._suppressed.add(id_hash)
                else:
                    out[hashes[id_hash]] = (row[0], self._unwrap(row[1], row[0]))
        return out

    #: bound parameters per statement (SQLite's limit is 32,766; PostgreSQL's 65,535)
    _SQL_PARAMS = 6_000

    def _keys_select(self, id_hashes: list[str]) -> dict[str, tuple[str, bytes]]:
        """id_hash → (key id, wrapped key) of the stored keys among ``id_hashes``."""
        from deletion.models import SubjectKey

        table = SubjectKey._meta.db_table
        found: dict[str, tuple[str, bytes]] = {}
        with connection.cursor() as cursor:
            for start in range(0, len(id_hashes), self._SQL_PARAMS):
                chunk = id_hashes[start:start + self._SQL_PARAMS]
                cursor.execute(f"SELECT id_hash, key_id, wrapped_key FROM {table} "  # noqa: S608 - table name only
                               f"WHERE id_hash IN ({', '.join(['%s'] * len(chunk))})", chunk)
                for id_hash, key_id, wrapped in cursor.fetchall():
                    found[id_hash] = (key_id, bytes(wrapped))
        return found

    def _keys_insert(self, new: Mapping[str, tuple[str, bytes, bytes]]) -> set[str]:
        """INSERT each new key unless the subject has a key already or is suppressed; returns the id
        hashes inserted. One multi-row statement per chunk, each atomic on its own (a key row stands
        alone: a crash between chunks leaves keys that the next unit finds and uses)."""
        from deletion.models import SubjectKey, SuppressedSubject

        keys, suppressed = SubjectKey._meta.db_table, SuppressedSubject._meta.db_table
        assert self.master is not None
        rows = [(id_hash, key_id, wrapped) for id_hash, (key_id, _, wrapped) in new.items()]
        inserted: set[str] = set()
        per_statement = self._SQL_PARAMS // 3
        with connection.cursor() as cursor:
            for start in range(0, len(rows), per_statement):
                chunk = rows[start:start + per_statement]
                # VALUES' columns are column1..column3 in both PostgreSQL and SQLite; the master key's
                # name and the time are bound once
                cursor.execute(
                    f"INSERT INTO {keys} (id_hash, key_id, wrapped_key, master_key, created_at) "  # noqa: S608
                    f"SELECT v.column1, v.column2, v.column3, %s, %s FROM (VALUES "
                    f"{', '.join(['(%s, %s, %s)'] * len(chunk))}) AS v "
                    f"WHERE NOT EXISTS (SELECT 1 FROM {suppressed} s WHERE s.id_hash = v.column1) "
                    "ON CONFLICT (id_hash) DO NOTHING RETURNING id_hash",
                    [self.master.name, timezone.now(), *(value for row in chunk for value in row)])
                inserted.update(id_hash for (id_hash,) in cursor.fetchall())
        return inserted

    def _unwrap(self, wrapped: bytes, key_id: str) -> bytes:
        assert self.master is not None
        self.master_calls += 1
        return self.master.unwrap(wrapped, key_id)

    # --- reading ---------------------------------------------------------------------------------
    def keys_by_id(self, key_ids: Iterable[str]) -> dict[str, bytes | None]:
        """Key id → data key, None when the key was shredded (no row)."""
        from deletion.models import SubjectKey

        out: dict[str, bytes | None] = {}
        missing = []
        with self._lock:
            for kid in key_ids:
                found = self._by_kid.get(kid)
                if found is None:
                    missing.append(kid)
                else:
                    out[kid] = found
            if missing and self.master is not None:
                for row in SubjectKey.objects.filter(key_id__in=missing):
                    key = self._unwrap(bytes(row.wrapped_key), row.key_id)
                    self._by_kid.put(row.key_id, key)
                    out[row.key_id] = key
        for kid in missing:
            out.setdefault(kid, None)
        return out


_keyrings: dict[tuple, SubjectKeyring] = {}
_keyrings_lock = threading.Lock()


def archive_keyring() -> SubjectKeyring:
    """This process's keyring for the configured master key and hash secret."""
    config = tuple(str(getattr(settings, name, "")) for name in (
        "ARCHIVE_ENCRYPTION", "ARCHIVE_KMS_KEY_ID", "ARCHIVE_LOCAL_MASTER_KEY", "ARCHIVE_LOCAL_MASTER_KEY_FILE",
        "SUBJECT_HASH_SECRET", "AWS_ENDPOINT_URL"))
    with _keyrings_lock:
        keyring = _keyrings.get(config)
        if keyring is None:
            keyring = _keyrings[config] = SubjectKeyring(
                master=master_key_from_settings(), hash_key=subject_hash_key(settings.SUBJECT_HASH_SECRET))
        return keyring


def archive_keyrings_forget() -> None:
    """Forget every keyring of this process (tests: each test's database starts without keys)."""
    with _keyrings_lock:
        _keyrings.clear()


def erasure_generation_bump() -> int:
    """Move the generation every process checks per batch (their caches drop what they hold)."""
    from django.db.models import F

    from deletion.models import ErasureGeneration

    with transaction.atomic():
        row, _ = ErasureGeneration.objects.select_for_update().get_or_create(name=GENERATION)
        # the value only counts up (a rolled-back bump gives its number again); the token is never repeated
        ErasureGeneration.objects.filter(pk=row.pk).update(value=F("value") + 1, token=secrets.token_hex(16))
        row.refresh_from_db()
    return row.value


def subject_hash_of(id_key: str) -> str:
    """The keyed hash of one identifier (``kind:value``) under the configured hash secret."""
    return subject_hash(subject_hash_key(settings.SUBJECT_HASH_SECRET), id_key)
