"""The embedded Celery broker: kombu's filesystem transport, made safe for several processes.

kombu's own filesystem transport opens a message file under its final name and then writes it, so a
worker listing the queue folder can take the file while it is still empty and die on decoding it
("unrecoverable error" in the worker, the message lost). It also deletes a message as soon as it is
read, so the messages a worker had prefetched die with it. This transport keeps kombu's folder layout
and file names and changes three things (docs/decisions.md, "The embedded broker"):

* a message (and an exchange's binding table) is written under a temporary name in a folder beside
  the queue and renamed into place, so a reader only ever sees whole files;
* a message read is *claimed*: renamed into a folder of the reading process (``claimed/<pid>``) and
  deleted when acknowledged (or re-put when restored); the claimed messages of a process that no
  longer exists go back to the queue when a channel opens, so a killed worker loses nothing it had
  not acknowledged;
* a file that still cannot be decoded is moved aside to ``unreadable/`` with one error logged,
  instead of stopping the worker.

Selected with ``CELERY_BROKER_TRANSPORT`` for ``CELERY_BROKER_URL=filesystem://`` (portal.settings).
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from pathlib import Path
from queue import Empty
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem, virtual
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

logger = logging.getLogger(__name__)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, someone else's
        return True
    return True


def write_atomically(path: Path, data: bytes, scratch: Path, *, replace: bool = True) -> bool:
    """Write ``data`` to ``path`` so no reader ever sees it partly written: write a file in ``scratch``
    (same file system), then rename it into place. With ``replace=False`` an existing ``path`` is
    left alone and False returned."""
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = scratch / f".{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    try:
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # fails if path exists: no second creator overwrites the first
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


class Channel(filesystem.Channel):
    """kombu's filesystem channel with whole-file writes, claimed reads and recovery (module doc)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: delivery tag -> the claimed file holding that message until it is acknowledged
        self._claimed: dict[str, Path] = {}
        self._no_ack_queues: set[str] = set()
        self.claims_recover()

    # --- folders --------------------------------------------------------------------------------
    @property
    def _root(self) -> Path:
        return Path(self.data_folder_in).parent

    @property
    def _scratch(self) -> Path:
        return self._root / "writing"

    @property
    def _claim_folder(self) -> Path:
        return self._root / "claimed" / str(os.getpid())

    # --- writing --------------------------------------------------------------------------------
    def _put(self, queue, payload, **kwargs):
        filename = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        try:
            write_atomically(Path(self.data_folder_out) / filename, str_to_bytes(dumps(payload)), self._scratch)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {filename!r} to directory") from exc

    def _queue_bind(self, exchange, routing_key, pattern, queue):
        file = self._exchange_file(exchange)
        self.control_folder.mkdir(parents=True, exist_ok=True)
        first = [filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")]
        try:
            if write_atomically(file, str_to_bytes(dumps(first)), self._scratch, replace=False):
                return
        except OSError as exc:
            raise ChannelError(f"Cannot open {file}") from exc
        super()._queue_bind(exchange, routing_key, pattern, queue)  # exists: kombu's locked update

    def get_table(self, exchange):
        try:
            return super().get_table(exchange)
        except ValueError:  # an exchange file left empty by kombu's own transport
            logger.warning("Broker exchange file for %r is unreadable; treating it as no bindings", exchange)
            return []

    # --- reading --------------------------------------------------------------------------------
    def basic_consume(self, queue, no_ack, callback, consumer_tag, **kwargs):
        if no_ack:
            self._no_ack_queues.add(queue)
        return super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)

    def basic_get(self, queue, no_ack=False, **kwargs):
        message = super().basic_get(queue, no_ack=no_ack, **kwargs)
        if message is not None and no_ack:
            self._claim_release(message.delivery_tag)
        return message

    def _get(self, queue):
        wanted = f"{queue}.msg"
        folder = Path(self.data_folder_in)
        claims = self._claim_folder
        claims.mkdir(parents=True, exist_ok=True)
        for filename in sorted(os.listdir(folder)):
            if filename.partition(".")[2] != wanted:
                continue
            claimed = claims / filename
            try:
                os.rename(folder / filename, claimed)  # atomic: exactly one reader gets it
            except OSError:
                continue  # another reader took it
            try:
                payload = loads(bytes_to_str(claimed.read_bytes()))
                tag = payload["properties"]["delivery_tag"]
            except (ValueError, KeyError, TypeError, OSError):
                self._set_aside(claimed)
                continue
            if queue in self._no_ack_queues:
                claimed.unlink(missing_ok=True)
            else:
                self._claimed[tag] = claimed
            return payload
        raise Empty()

    def _set_aside(self, claimed: Path) -> None:
        aside = self._root / "unreadable"
        aside.mkdir(parents=True, exist_ok=True)
        logger.error("Broker message %s cannot be decoded; moved to %s", claimed.name, aside)
        with contextlib.suppress(OSError):
            os.replace(claimed, aside / claimed.name)

    # --- settling -------------------------------------------------------------------------------
    def _claim_release(self, delivery_tag) -> None:
        claimed = self._claimed.pop(delivery_tag, None)
        if claimed is None:
            return
        if self.store_processed:
            Path(self.processed_folder).mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                os.replace(claimed, Path(self.processed_folder) / claimed.name)
        else:
            claimed.unlink(missing_ok=True)

    def basic_ack(self, delivery_tag, multiple=False):
        super().basic_ack(delivery_tag, multiple=multiple)
        self._claim_release(delivery_tag)

    def basic_reject(self, delivery_tag, requeue=False):
        super().basic_reject(delivery_tag, requeue=requeue)  # requeue re-puts it through _restore
        self._claim_release(delivery_tag)

    def _restore(self, message):
        super()._restore(message)  # put back as a new file first, then drop the claim: never neither
        self._claim_release(message.delivery_tag)

    def claims_recover(self) -> int:
        """Put the messages claimed by processes that no longer run back in the queue; how many."""
        root = self._root / "claimed"
        if not root.is_dir():
            return 0
        moved = 0
        for owner in root.iterdir():
            if not owner.name.isdigit() or int(owner.name) == os.getpid() or _pid_alive(int(owner.name)):
                continue
            for claimed in owner.iterdir():
                with contextlib.suppress(OSError):
                    os.rename(claimed, Path(self.data_folder_in) / claimed.name)
                    moved += 1
            with contextlib.suppress(OSError):
                owner.rmdir()
        if moved:
            logger.warning("Broker: %d unacknowledged message(s) of a stopped process put back in the queue", moved)
        return moved


class Transport(filesystem.Transport):
    Channel = Channel
    global_state = virtual.BrokerState()


__all__ = ["Channel", "Transport", "write_atomically"]
