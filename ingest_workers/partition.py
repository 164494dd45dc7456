"""The Kinesis partition key of a payload. Pure: no Django, no network, no clock.

Kinesis sends a record to the shard that owns the MD5 of its partition key, and keeps order only
within a shard. So the key is the identity of the conversation a payload belongs to: every event of
one conversation lands on one shard, in the order it was put, and a shard consumer sees a whole
conversation. The rule, first match wins:

1. the conversation the payload names (these are the paths the shipped presets map to
   `conversation_id`): Slack `event.channel` + `event.thread_ts` (or the message's own `event.ts`
   when it starts the thread, the same `{channel}:{ts}` the Slack preset uses as conversation id),
   then `conversationId`, `conversation_id`, `conversation.id`, `chat.conversation_id`,
   `origin.conversation_id`;
2. the session: Alexa `session.sessionId`, then `sessionId`, `session_id`, `session.id`,
   `origin.session_id`;
3. the person: `anonymousId`, `anonymous_id`, `userId`, `user_id`, `origin.anonymous_id`,
   `origin.user_id`, Slack `event.user`;
4. otherwise the event itself (`messageId`, `event_id`, `id`, `call_id`, `event_uuid`,
   `request.requestId`), and finally a random key, which spreads identity-less events evenly.

Only strings and integers count as identities. The key is `<source>|<identity>` so two sources'
conversation ids cannot collide; a key longer than Kinesis' 256 characters is replaced by its
SHA-256 (`h|<hex>`), which still maps one conversation to one shard.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from typing import Any

MAX_PARTITION_KEY_CHARS = 256

Path = tuple[str, ...]

CONVERSATION_PATHS: tuple[Path, ...] = (
    ("conversationId",), ("conversation_id",), ("conversation", "id"), ("chat", "conversation_id"),
    ("origin", "conversation_id"),
)
SESSION_PATHS: tuple[Path, ...] = (
    ("session", "sessionId"), ("sessionId",), ("session_id",), ("session", "id"), ("origin", "session_id"),
)
PERSON_PATHS: tuple[Path, ...] = (
    ("anonymousId",), ("anonymous_id",), ("userId",), ("user_id",), ("origin", "anonymous_id"),
    ("origin", "user_id"), ("event", "user"),
)
EVENT_PATHS: tuple[Path, ...] = (
    ("messageId",), ("event_id",), ("id",), ("call_id",), ("event_uuid",), ("request", "requestId"),
)


def _get(payload: dict[str, Any], path: Path) -> str | None:
    node: Any = payload
    for part in path:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    if isinstance(node, bool) or not isinstance(node, str | int) or node == "":
        return None
    return str(node)


def _slack_thread(payload: dict[str, Any]) -> str | None:
    event = payload.get("event")
    if not isinstance(event, dict):
        return None
    channel = _get(event, ("channel",))
    thread = _get(event, ("thread_ts",)) or _get(event, ("ts",))
    if channel and thread:
        return f"{channel}:{thread}"
    return None


def conversation_identity(payload: Any) -> str | None:
    """The conversation, session, person or event identity a payload carries, or None."""
    if not isinstance(payload, dict):
        return None
    slack = _slack_thread(payload)
    if slack:
        return slack
    for paths in (CONVERSATION_PATHS, SESSION_PATHS, PERSON_PATHS, EVENT_PATHS):
        for path in paths:
            value = _get(payload, path)
            if value is not None:
                return value
    return None


def partition_key(source: str, payload: Any, *, random_key: Callable[[], str] = lambda: uuid.uuid4().hex) -> str:
    """The partition key for one payload of `source` (see the module docstring for the rule)."""
    identity = conversation_identity(payload)
    key = f"{source}|{identity if identity is not None else random_key()}"
    if len(key) > MAX_PARTITION_KEY_CHARS:
        key = "h|" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return key
