"""Landing channels: how a shard consumer lands rows in ``RAW.LANDING_EVENTS``.

The model is Snowpipe Streaming's (DESIGN decision 10): one *channel* per shard, each append carries
an *offset token*, and the channel remembers the latest token whose rows are committed. A consumer
that starts (or takes a shard over) asks the channel for its committed token and resumes reading the
shard after it, so a crash between landing and the consumer's own checkpoint lands nothing twice.

Two implementations share this interface, so the consumer's logic is one:

* ``warehouse.landing.EmbeddedLandingClient`` (the default, and what the tests run): the connector,
  one INSERT-only transaction per append that also records the offset token;
* ``warehouse.snowpipe.SnowpipeLandingClient`` (production, ``WAREHOUSE_LANDING_WRITER=snowpipe``):
  a thin adapter over Snowflake's high-performance SDK (``snowpipe-streaming``).

Offset tokens are decimal strings (a Kinesis sequence number for a shard channel); compare them with
``offset_after``. Rows are landing rows (``warehouse.landing.landing_row_*``) serialised as ONE JSON
array (``orjson.dumps(list)``): the embedded writer binds it as a single value, the SDK adapter
parses it into dicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "ChannelError",
    "ChannelUnavailable",
    "ChannelInvalidated",
    "AppendResult",
    "LandingChannel",
    "LandingClient",
    "offset_after",
    "offset_max",
]


class ChannelError(Exception):
    """The channel could not land the rows. ``transient`` says whether a retry may succeed."""

    transient = False


class ChannelUnavailable(ChannelError):
    """Transient: the service cannot be reached or did not commit in time. Nothing is lost: retry."""

    transient = True


class ChannelInvalidated(ChannelError):
    """Another client reopened this channel (a lease takeover): this writer must stop appending."""


@dataclass(frozen=True)
class AppendResult:
    channel: str
    offset_token: str
    rows: int  # landing rows sent (events and quarantine rows)
    seconds: float


@runtime_checkable
class LandingChannel(Protocol):
    """One open channel (per shard)."""

    name: str
    #: True when ``append`` returns only once the rows are committed (the embedded writer); False
    #: when the service commits later (Snowpipe Streaming), so a consumer checkpoints a unit when the
    #: channel's committed token reaches it instead of waiting after each append
    commits_on_append: bool

    def latest_committed_offset_token(self) -> str | None:
        """The last offset token whose rows are committed (None: nothing landed on this channel yet)."""

    def append(self, rows: bytes | Sequence[bytes], *, offset_token: str) -> AppendResult:
        """Send one JSON array of landing rows (or several, in order: a unit's batches) ending at
        ``offset_token``. The embedded writer commits before returning; the SDK buffers, so durability
        is ``wait_for_commit``'s promise."""

    def wait_for_commit(self, offset_token: str, *, timeout_seconds: float) -> None:
        """Return once ``offset_token`` (or a later one) is committed; ``ChannelUnavailable`` after
        the timeout."""

    def close(self) -> None:
        """Flush and close (idempotent)."""


@runtime_checkable
class LandingClient(Protocol):
    """A process-wide client: opens channels, answers committed tokens for many at once."""

    def open_channel(self, name: str) -> LandingChannel:
        """Open (or reopen) a channel; reopening invalidates the channel's previous writer."""

    def latest_committed_offset_tokens(self, names: list[str]) -> dict[str, str | None]:
        """The committed token of each named channel (None for a channel with nothing committed)."""

    def close(self) -> None:
        """Close every channel and the client (idempotent)."""


def _as_number(token: str | None) -> int:
    if token is None or token == "":
        return -1
    if not token.isdigit():
        raise ValueError(f"an offset token must be a decimal string, not {token!r}")
    return int(token)


def offset_after(token: str | None, other: str | None) -> bool:
    """True when ``token`` is strictly after ``other`` (None/"" is before everything)."""
    return _as_number(token) > _as_number(other)


def offset_max(*tokens: str | None) -> str | None:
    """The latest of the tokens, or None when none is set."""
    best: str | None = None
    for token in tokens:
        if token and (best is None or offset_after(token, best)):
            best = token
    return best
