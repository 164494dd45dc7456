"""Sample canonical events for the curated models: a seeded simulation of people talking to ChatOrbit's
assistants on every platform, the named cross-platform scenario, and a price catalog to cost them.

Pure: no Django, no clock, no network. The caller passes the seed and the base time (UTC micros);
the same arguments always give the same events, byte for byte. Events have exactly the shape
``warehouse.load.landing_insert`` takes (``orjson.dumps`` of a list of them) and that the mapping
engine produces: every envelope field, ``identifiers`` with ``person_id`` None, ``attributes`` with
every field of the event type's record (``contracts/canonical/v1``), ``platform_metadata`` and
``lineage``.

How the simulation talks (it follows the platform presets in ``contracts/presets``):

* web, ios, android and voice clients send ``session.started``, ``conversation.started``, the user's
  ``message.sent``, ``feedback.submitted``, ``conversation.ended`` and ``session.ended``; Slack threads
  have no session, so their events share only a ``conversation_id``;
* every assistant reply, with its tokens and model, is sent by the LLM gateway (platform ``api``),
  which carries the session and conversation ids of the client it served; tool calls come from it too;
* a person signs in on each platform's first session (``user.identified``): web starts anonymous and
  identifies after the first answer, apps identify at launch, Slack and voice link the platform user
  id to the person's e-mail hash (voice through the account-linking API, platform ``api``);
* some visitors never sign in (web, anonymous only) and a few tenants run API-only integrations.

Every simulated person's identifiers are linked by their own events and never shared with anyone
else, and no person gathers more identifiers of one kind than the identity limits allow, so the
stitched persons of ``sample_events`` are exactly the simulated people. The named scenario adds the
cases that must *not* merge (blocked identifier values, a shared device).

``sample_events`` is lazy (one person at a time, each person's events in time order); roughly
``people x days x 0.25`` sessions of ~11 events each, so ~12,000 people over 30 days is ~1M events.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import random
from bisect import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import accumulate
from typing import NamedTuple

from contracts.canonical_model import CANONICAL_VERSION, EVENT_TYPES, load_canonical_model

__all__ = [
    "BASE_TIME_US",
    "SECOND",
    "MINUTE",
    "HOUR",
    "DAY",
    "TENANTS",
    "MODELS",
    "UNPRICED_MODEL",
    "CHANGING_PRICE_MODEL",
    "CrossPlatformScenario",
    "sample_events",
    "sample_prices",
    "cross_platform_scenario",
    "email_hash",
    "micros_to_datetime",
]

#: the default base time: 2026-01-01T00:00:00Z in UTC micros
BASE_TIME_US = 1_767_225_600_000_000
SECOND = 1_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

#: tenant -> its Slack workspace (team) id
TENANTS: dict[str, str] = {
    "acme-outdoor": "T0ACME001",
    "globex": "T0GLOBEX2",
    "initech": "T0INITEC3",
    "umbrella-health": "T0UMBREL4",
}
_TENANT_NAMES = tuple(TENANTS)
_TENANT_WEIGHTS = (40, 30, 20, 10)
_TURNS = (1, 2, 3, 4, 5, 6)
_TURN_WEIGHTS = (20, 25, 20, 15, 12, 8)
_TOOL_STATUSES = ("ok", "error", "timeout")
_TOOL_STATUS_WEIGHTS = (80, 15, 5)
_TURN_CUMULATIVE = tuple(accumulate(_TURN_WEIGHTS))
_TOOL_STATUS_CUMULATIVE = tuple(accumulate(_TOOL_STATUS_WEIGHTS))

USER_FACING = ("web", "ios", "android", "slack", "voice")
#: platform -> (source id, contract subject) as registered from the presets
SOURCES: dict[str, tuple[str, str]] = {
    "web": ("src-web-chat", "web-chat.chat_event"),
    "ios": ("src-ios-app", "ios-app.app_event"),
    "android": ("src-android-app", "android-app.app_event"),
    "slack": ("src-slack-bot", "slack-bot.message_event"),
    "voice": ("src-voice-assistant", "voice-assistant.alexa_request"),
    "api": ("src-llm-gateway", "llm-gateway.llm_call"),
}
_TOOL_SOURCE = ("src-llm-gateway", "llm-gateway.tool_call")
#: the account-linking service that ties a voice user id to an e-mail hash
_LINKING_SOURCE = ("src-accounts-api", "accounts-api.account_linked")

#: (request_model, response_model, provider, reasons): the models the gateway serves
MODELS: tuple[tuple[str, str, str, bool], ...] = (
    ("gpt-4.1-mini", "gpt-4.1-mini-2025-04-14", "openai", False),
    ("gpt-4.1", "gpt-4.1-2025-04-14", "openai", False),
    ("o4-mini", "o4-mini-2025-04-16", "openai", True),
    ("claude-sonnet-4", "claude-sonnet-4-20250514", "anthropic", False),
    ("llama-3.3-70b-instruct", "meta.llama3-3-70b-instruct-v1:0", "aws.bedrock", False),
)
_MODEL_WEIGHTS = (45, 15, 10, 25, 5)
_MODEL_CUMULATIVE = tuple(accumulate(_MODEL_WEIGHTS))
#: in no price catalog: its requests count as unpriced
UNPRICED_MODEL = "llama-3.3-70b-instruct"
#: its price changes half-way through ``sample_prices``' period
CHANGING_PRICE_MODEL = "gpt-4.1-mini"

_PRODUCTS = {
    "web": ("storefront-assistant", "support-assistant"),
    "ios": ("storefront-assistant",),
    "android": ("storefront-assistant",),
    "slack": ("helpdesk-bot",),
    "voice": ("voice-concierge",),
    "api": ("assistant-platform",),
}
_METADATA = {
    "web": "chatorbit-web/3.14.2", "ios": "chatorbit-ios/5.2.0", "android": "chatorbit-android/5.1.3",
    "slack": "slack-events-api", "voice": "alexa-skills-kit/1.0", "api": "llm-gateway/2.8.1",
}
_SESSION_PREFIX = {"web": "ws", "ios": "is", "android": "as", "voice": "amzn1.echo-api.session", "api": "api"}
_TOOLS = ("order_lookup", "kb_search", "create_ticket", "check_inventory")
_NORMALIZER = "chatorbit-mapping/1.0.0"


def _attribute_templates() -> dict[str, dict]:
    # every field of each event type's record, as the mapping emits them: a sample can't drift from the model
    model = load_canonical_model()
    return {name: dict.fromkeys(f.name for f in model.event_types[name].fields) for name in EVENT_TYPES}


_ATTRIBUTES = _attribute_templates()


def email_hash(address: str) -> str:
    """identifiers.email_sha256 of an address: SHA-256 of the trimmed, lower-cased address."""
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()


def micros_to_datetime(us: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)


# --------------------------------------------------------------------------------------------
# one event
# --------------------------------------------------------------------------------------------


class _Ids(NamedTuple):
    """Identifiers an event carries (``person_id`` is always None: stitching fills it)."""

    tenant_id: str | None
    anonymous_id: str | None = None
    platform_user_id: str | None = None
    device_id: str | None = None
    email_sha256: str | None = None


_SHARDS = tuple(f"shardId-{n:012d}" for n in range(4))


@functools.lru_cache(maxsize=4096)
def _archive_names(source_id: str, day: int) -> tuple[str, str]:
    """(raw archive object, ingest batch) of a source's day of events."""
    return f"file:///archive/sample/{source_id}/{day}.jsonl.zst", f"sample-{source_id}-{day}"


def _event(
    event_id: str, event_type: str, event_time: int, platform: str, product: str | None, ids: _Ids,
    session_id: str | None, conversation_id: str | None, message_id: str | None, parent_event_id: str | None,
    attributes: dict, *, source: tuple[str, str] | None = None, received_delay: int = 250_000, offset: int = 0,
) -> dict:
    source_id, subject = source or SOURCES[platform]
    received_at = event_time + received_delay
    archive_uri, batch_id = _archive_names(source_id, event_time // DAY)
    return {
        "event_id": event_id,
        "event_type": event_type,
        "event_time": event_time,
        "received_at": received_at,
        "ingested_at": received_at + 1000,
        "platform": platform,
        "product": product,
        "source_id": source_id,
        "contract": {"name": subject, "version": 1},
        "canonical_version": CANONICAL_VERSION,
        "identifiers": {
            "person_id": None, "anonymous_id": ids.anonymous_id, "platform_user_id": ids.platform_user_id,
            "device_id": ids.device_id, "tenant_id": ids.tenant_id, "email_sha256": ids.email_sha256,
        },
        "session_id": session_id,
        "conversation_id": conversation_id,
        "message_id": message_id,
        "parent_event_id": parent_event_id,
        "attributes": {**_ATTRIBUTES[event_type], **attributes},
        "platform_metadata": {"sdk": _METADATA[platform]},
        "lineage": {
            "raw_archive_uri": archive_uri, "raw_offset": offset, "stream": "raw-events",
            "shard_id": _SHARDS[offset & 3], "sequence_number": str(event_time // 100 + (offset & 7)),
            "batch_id": batch_id,
            "contract_version": 1, "normalizer_version": _NORMALIZER,
        },
    }


# --------------------------------------------------------------------------------------------
# attributes of each event type (only what differs from None)
# --------------------------------------------------------------------------------------------

_SESSION_STARTED = {
    "web": {"entry_point": "widget", "locale": "en-US", "timezone": "America/New_York", "app_version": "3.14.2",
            "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 Chrome/131.0",
            "referrer": "https://www.example.com/help"},
    "ios": {"entry_point": "launch", "locale": "en-US", "timezone": "America/Chicago", "app_version": "5.2.0",
            "os_name": "iOS", "os_version": "18.3", "device_model": "iPhone15,2"},
    "android": {"entry_point": "push", "locale": "en-GB", "timezone": "Europe/London", "app_version": "5.1.3",
                "os_name": "Android", "os_version": "15", "device_model": "Pixel 8"},
    "voice": {"entry_point": "launch", "locale": "en-US", "device_model": "Echo Dot"},
}
_CHANNEL_TYPE = {"web": "widget", "ios": "in_app", "android": "in_app", "slack": "im", "voice": "voice",
                 "api": "api"}


def _user_message(text: str, platform: str) -> dict:
    voice = platform == "voice"
    return {"role": "user", "content": text, "content_length": len(text),
            "content_type": "audio_transcript" if voice else "text", "language": "en",
            "intent_name": "AskQuestionIntent" if voice else None}


def _assistant_reply(model: tuple[str, str, str, bool], tokens: tuple[int, int, int, int] | None, latency_ms: int,
                     response_id: str, error_type: str | None = None, request_model: bool = True) -> dict:
    """A gateway reply; ``tokens`` = (input incl. cached, cached, output incl. reasoning, reasoning)."""
    request, response, provider, _ = model
    text = "Here is what I found." if error_type is None else ""
    attrs = {"role": "assistant", "content": text, "content_length": len(text), "content_type": "markdown",
             "operation_name": "chat", "provider": provider, "request_model": request if request_model else None,
             "response_model": response if request_model else request, "response_id": response_id,
             "temperature": 0.3, "max_tokens": 1024, "latency_ms": latency_ms, "error_type": error_type,
             "time_to_first_token_ms": latency_ms // 4, "finish_reason": "stop" if error_type is None else None}
    if tokens is not None:
        attrs.update(input_tokens=tokens[0], cache_read_input_tokens=tokens[1], output_tokens=tokens[2],
                     reasoning_output_tokens=tokens[3], tool_call_count=0)
    return attrs


def _feedback(kind: str, value: int) -> dict:
    """thumbs: value 1 or -1; stars: 1..5 mapped linearly to [-1, 1]; text: scored 0."""
    if kind == "thumbs":
        return {"score": float(value), "kind": "thumbs", "raw_value": "thumbs_up" if value > 0 else "thumbs_down"}
    if kind == "stars":
        return {"score": (value - 1) / 4 * 2 - 1, "kind": "stars", "raw_value": str(value)}
    return {"score": 0.0, "kind": "text", "comment": "It would help to see the delivery date."}


# --------------------------------------------------------------------------------------------
# the simulation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Profile:
    index: int
    kind: str  # member | visitor | service
    tenant: str
    platforms: tuple[str, ...]
    email_sha256: str | None
    account_id: str | None
    slack_user_id: str
    voice_user_id: str
    web_anonymous_id: str
    ios_anonymous_id: str
    android_anonymous_id: str
    ios_device_id: str
    android_device_id: str
    voice_device_id: str


def _profile(rng: random.Random, seed: int, index: int) -> _Profile:
    tag = f"{seed:x}-{index}"
    roll = rng.random()
    if roll < 0.12:
        kind, platforms = "visitor", ("web",)
    elif roll < 0.15:
        kind, platforms = "service", ("api",)
    else:
        kind = "member"
        chances = (("web", 0.8), ("ios", 0.4), ("android", 0.3), ("slack", 0.25), ("voice", 0.15))
        platforms = tuple(p for p, chance in chances if rng.random() < chance) or ("web",)
    tenant = rng.choices(_TENANT_NAMES, _TENANT_WEIGHTS)[0]  # once per person: the slow way is fine
    return _Profile(
        index=index, kind=kind, tenant=tenant, platforms=platforms,
        email_sha256=email_hash(f"person-{tag}@example.com") if kind == "member" else None,
        account_id=f"acct_{tag}" if kind == "member" else (f"svc_{tag}" if kind == "service" else None),
        slack_user_id=f"{TENANTS[tenant]}:U{index:08d}", voice_user_id=f"amzn1.ask.account.{tag}",
        web_anonymous_id=f"anon-{tag}-web", ios_anonymous_id=f"anon-{tag}-ios",
        android_anonymous_id=f"anon-{tag}-android", ios_device_id=f"idfv-{tag}", android_device_id=f"ssaid-{tag}",
        voice_device_id=f"amzn1.ask.device.{tag}",
    )


class _PersonSimulation:
    """One person's events over the period, in time order."""

    def __init__(self, seed: int, index: int, start_us: int, days: int):
        self.rng = random.Random(seed * 1_000_003 + index)  # noqa: S311 - sample data, not security
        self.rand = self.rng.random
        self.seed, self.index, self.start_us, self.days = seed, index, start_us, days
        self.person = _profile(self.rng, seed, index)
        self.events: list[dict] = []
        self.identified: set[str] = set()
        self.seq = 0
        self.id_prefix = f"{seed & 0xFFFFFFFF:08x}-{(index >> 12) & 0xFFFF:04x}-5{index & 0xFFF:03x}-a"

    # -- dice: random.randrange and random.choices cost several times what these do -------------

    def between(self, low: int, high: int) -> int:
        """An integer in [low, high)."""
        return low + int(self.rand() * (high - low))

    def pick(self, options: Sequence):
        return options[int(self.rand() * len(options))]

    def weighted(self, options: Sequence, cumulative: tuple[float, ...]):
        return options[bisect(cumulative, self.rand() * cumulative[-1])]

    # -- ids ----------------------------------------------------------------------------------

    def next_id(self) -> str:
        """A UUID-shaped event id: seed, person and the person's event sequence."""
        self.seq += 1
        return f"{self.id_prefix}{(self.seq >> 48) & 0xFFF:03x}-{self.seq & 0xFFFFFFFFFFFF:012x}"

    def name(self, kind: str) -> str:
        """A message, call or response id, unique across seeds and people (the next event's sequence)."""
        return f"{kind}_{self.seed:x}_{self.index}_{self.seq + 1}"

    def client_ids(self, platform: str) -> _Ids:
        """What the platform's SDK knows about the person right now."""
        p = self.person
        signed_in = platform in self.identified
        if platform == "web":
            return _Ids(p.tenant, p.web_anonymous_id, p.account_id if signed_in else None)
        if platform == "ios":
            return _Ids(p.tenant, p.ios_anonymous_id, p.account_id, p.ios_device_id)
        if platform == "android":
            return _Ids(p.tenant, p.android_anonymous_id, p.account_id, p.android_device_id)
        if platform == "slack":
            return _Ids(p.tenant, platform_user_id=p.slack_user_id)
        if platform == "voice":
            return _Ids(p.tenant, platform_user_id=p.voice_user_id, device_id=p.voice_device_id)
        return _Ids(p.tenant, platform_user_id=p.account_id)

    def gateway_ids(self, platform: str) -> _Ids:
        # the gateway knows what the client passed along: anonymous id and user id, never the device
        ids = self.client_ids(platform)
        return _Ids(ids.tenant_id, ids.anonymous_id, ids.platform_user_id)

    def emit(self, event_type: str, t: int, platform: str, product: str, ids: _Ids, session: str | None,
             conversation: str | None, message: str | None, parent: str | None, attributes: dict,
             source: tuple[str, str] | None = None) -> dict:
        # mobile apps batch events and sometimes come back online hours later
        delay = 250_000 if platform not in ("ios", "android") or self.rand() > 0.05 else 3 * HOUR
        event = _event(self.next_id(), event_type, t, platform, product, ids, session, conversation, message,
                       parent, attributes, source=source, received_delay=delay, offset=self.seq)
        self.events.append(event)
        return event

    # -- the period ---------------------------------------------------------------------------

    def run(self) -> list[dict]:
        rand, person = self.rand, self.person
        active = 0.3 if person.kind == "member" else 0.15
        first_day = self.between(0, self.days) if person.kind == "visitor" else 0
        for day in range(first_day, self.days):
            if rand() >= active and not (day == first_day and person.kind == "visitor"):
                continue
            # whole milliseconds: producers stamp events in ms
            t = self.start_us + day * DAY + self.between(6 * 3600 * 1000, 22 * 3600 * 1000) * 1000
            self.session(self.pick(person.platforms), t)
            if person.kind == "visitor" and rand() < 0.7:
                break
        return self.events

    def session(self, platform: str, t: int) -> None:
        product = self.pick(_PRODUCTS[platform])
        tag = f"{self.seed:x}_{self.index}_{self.seq}"
        session = None if platform == "slack" else f"{_SESSION_PREFIX[platform]}_{tag}"
        conversation = f"C{tag}:{t // SECOND}.000100" if platform == "slack" else f"conv_{tag}"
        first_time = platform not in self.identified and self.person.kind == "member"
        if first_time and platform != "web":
            t = self.identify(platform, t, session)
        if platform not in ("slack", "api"):
            self.emit("session.started", t, platform, product, self.client_ids(platform), session, None, None,
                      None, _SESSION_STARTED[platform])
        t += self.between(200, 2000) * 1000
        started = {"agent_name": "Ava", "channel_type": _CHANNEL_TYPE[platform], "initiated_by": "user",
                   "channel_id": f"C{tag}" if platform == "slack" else None}
        self.emit("conversation.started", t, platform, product, self.client_ids(platform), session, conversation,
                  None, None, started)
        turns = self.weighted(_TURNS, _TURN_CUMULATIVE)
        model = self.weighted(MODELS, _MODEL_CUMULATIVE)
        state = _Conversation(platform, product, session, conversation, model)
        for turn in range(turns):
            t = self.turn(state, turn, t + self.between(3, 90) * SECOND, last=turn == turns - 1)
            if first_time and platform == "web" and turn == 0:
                t = self.identify(platform, t + 5 * SECOND, session)
        self.end(state, t + self.between(5, 60) * SECOND)

    def identify(self, platform: str, t: int, session: str | None) -> int:
        p = self.person
        self.identified.add(platform)
        ids = self.client_ids(platform)
        attrs = {"identity_provider": {"slack": "slack", "voice": "amazon"}.get(platform, "password"),
                 "is_new_user": not (self.identified - {platform}), "locale": "en-US"}
        source = None
        if platform in ("web", "ios", "android"):
            attrs["previous_anonymous_id"] = ids.anonymous_id
        if platform == "voice":
            platform, source = "api", _LINKING_SOURCE  # Alexa account linking happens in the accounts API
            ids = _Ids(p.tenant, platform_user_id=p.voice_user_id)
        ids = _Ids(ids.tenant_id, ids.anonymous_id, ids.platform_user_id, ids.device_id, p.email_sha256)
        # Slack's and the accounts API's identifications happen outside any session
        in_session = session if platform in ("web", "ios", "android") else None
        self.emit("user.identified", t, platform, _PRODUCTS[platform][0], ids, in_session, None, None, None, attrs,
                  source=source)
        return t + self.between(1, 5) * SECOND

    def turn(self, c: _Conversation, turn: int, t: int, last: bool) -> int:
        rand = self.rand
        ids = self.client_ids(c.platform)
        message = self.name("msg")
        user = self.emit("message.sent", t, c.platform, c.product, ids, c.session, c.conversation, message, None,
                         _user_message("Where is my order?", c.platform))
        c.messages += 1
        if last and rand() < 0.08:  # the person left before the last answer
            return t
        t += self.between(600, 8000) * 1000
        if rand() < 0.12:
            t = self.tool_call(c, message, t)
        reply = self.name("msg")
        error = "rate_limited" if rand() < 0.04 else None
        tokens = None if error else self.tokens(c.model, turn)
        latency = self.between(400, 6000)
        self.emit("message.sent", t, "api", c.product, self.gateway_ids(c.platform), c.session, c.conversation,
                  reply, user["event_id"],
                  _assistant_reply(c.model, tokens, latency, self.name("resp"), error, rand() > 0.05))
        c.messages += 1
        if rand() < 0.15:
            kind = self.pick(("thumbs", "thumbs", "stars", "text"))
            value = self.pick((1, 1, 1, -1)) if kind == "thumbs" else self.between(1, 6)
            t += self.between(2, 20) * SECOND
            self.emit("feedback.submitted", t, c.platform, c.product, ids, c.session, c.conversation, reply, None,
                      _feedback(kind, value))
        return t

    def tokens(self, model: tuple[str, str, str, bool], turn: int) -> tuple[int, int, int, int]:
        total_in = 350 + 300 * turn + self.between(0, 800)
        cached = (total_in // 2 // 128) * 128 if turn and self.rand() < 0.6 else 0
        reasoning = self.between(64, 1500) if model[3] else 0
        return total_in, cached, self.between(40, 900) + reasoning, reasoning

    def tool_call(self, c: _Conversation, message: str, t: int) -> int:
        ids = self.gateway_ids(c.platform)
        call = self.name("call")
        tool = self.pick(_TOOLS)
        self.emit("tool_call.started", t, "api", c.product, ids, c.session, c.conversation, message, None,
                  {"tool_name": tool, "tool_call_id": call, "tool_type": "function", "arguments": '{"order": 1}',
                   "request_model": c.model[0], "provider": c.model[2]}, source=_TOOL_SOURCE)
        latency = self.between(50, 3000)
        status = self.weighted(_TOOL_STATUSES, _TOOL_STATUS_CUMULATIVE)
        self.emit("tool_call.completed", t + latency * 1000, "api", c.product, ids, c.session, c.conversation,
                  message, None,
                  {"tool_name": tool, "tool_call_id": call, "tool_type": "function", "status": status,
                   "result_length": 120 if status == "ok" else None, "latency_ms": latency,
                   "error_type": None if status == "ok" else status}, source=_TOOL_SOURCE)
        return t + (latency + self.between(300, 3000)) * 1000

    def end(self, c: _Conversation, t: int) -> None:
        ids = self.client_ids(c.platform)
        roll = self.rand()
        if roll < 0.5 or c.platform == "slack":
            handoff = roll < 0.1
            ended = {"reason": "handoff" if handoff else ("resolved" if roll < 0.4 else "closed"),
                     "message_count": c.messages, "resolved": 0.1 <= roll < 0.4, "handoff": handoff}
            self.emit("conversation.ended", t, c.platform, c.product, ids, c.session, c.conversation, None, None,
                      ended)
        if c.session is None or self.rand() < 0.2:  # Slack has no sessions; some apps are just killed
            return
        error = self.rand() < 0.05
        self.emit("session.ended", t + 1000 * self.between(100, 900), c.platform, c.product, ids, c.session, None,
                  None, None,
                  {"reason": "error" if error else self.pick(("user_initiated", "timeout")),
                   "message_count": c.messages, "error_type": "network_error" if error else None,
                   "error_message": "connection reset" if error else None})


@dataclass
class _Conversation:
    platform: str
    product: str
    session: str | None
    conversation: str
    model: tuple[str, str, str, bool]
    messages: int = 0


def sample_events(*, people: int, days: int, seed: int, start_us: int = BASE_TIME_US) -> Iterator[dict]:
    """Canonical events of ``people`` simulated people over ``days`` days from ``start_us`` (UTC micros),
    lazily, one person at a time. Deterministic by ``seed``."""
    if people < 0 or days <= 0:
        raise ValueError("people must be >= 0 and days > 0")
    for index in range(people):
        yield from _PersonSimulation(seed, index, start_us, days).run()


def sample_prices(start_us: int, days: int) -> list[dict]:
    """A price catalog for ``MODELS`` (``models_run(prices=…)``), in force from ``start_us``.

    ``CHANGING_PRICE_MODEL`` gets a second price half-way through the period, effective 30 minutes
    into an hour (so that hour still costs the old price); ``UNPRICED_MODEL`` has none, and
    ``claude-sonnet-4`` has no cached-input price (cached tokens then cost nothing)."""
    first_day = start_us - start_us % DAY
    start = micros_to_datetime(first_day)
    change = micros_to_datetime(first_day + days // 2 * DAY + 12 * HOUR + 30 * MINUTE)
    table = {
        "gpt-4.1-mini": ("0.40", "0.10", "1.60"),
        "gpt-4.1": ("2.00", "0.50", "8.00"),
        "o4-mini": ("1.10", "0.275", "4.40"),
        "claude-sonnet-4": ("3.00", None, "15.00"),
    }
    prices = []
    for model, kinds in table.items():
        for kind, usd in zip(("input", "cached_input", "output"), kinds, strict=True):
            if usd is not None:
                prices.append({"model": model, "token_kind": kind, "usd_per_million": Decimal(usd),
                               "effective_from": start, "effective_to": None, "version": 1})
    for kind, usd in (("input", "0.50"), ("cached_input", "0.125"), ("output", "2.00")):
        prices.append({"model": CHANGING_PRICE_MODEL, "token_kind": kind, "usd_per_million": Decimal(usd),
                       "effective_from": change, "effective_to": None, "version": 2})
    return prices


# --------------------------------------------------------------------------------------------
# the named scenario
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrossPlatformScenario:
    """Dana starts on web anonymously, signs in, continues in the iOS app, talks to the Slack bot and comes
    back to the web; decoys that must stay apart share blocked identifier values or one device."""

    events: list[dict]
    dana_email_sha256: str
    dana_identifiers: tuple[str, ...]   # id keys (kind:value) that must all be Dana's
    dana_sessions: tuple[tuple[str, str], ...]  # (session key, platform) in the order Dana had them
    dana_anchor: str                    # her earliest identifier
    dana_linking_events: tuple[str, ...]  # events whose identifiers first join two of Dana's identifiers
    blocked_decoy_anonymous_ids: tuple[str, str]  # two people sharing only blocked values
    shared_device_id: str
    shared_device_people: tuple[str, str]  # e-mail hashes of the two people on the shared device
    shared_device_refusing_event: str     # the second person's sign-in on that device
    kiosk_device_id: str
    kiosk_accounts: tuple[str, ...]        # in sign-in order; the fourth breaks the 3-account limit
    kiosk_refusing_event: str


class _Script:
    """Explicit events with readable ids, for the scenario."""

    def __init__(self, start_us: int):
        self.start_us = start_us
        self.events: list[dict] = []

    def add(self, event_id: str, event_type: str, at: int, platform: str, ids: _Ids, *, product: str | None = None,
            session: str | None = None, conversation: str | None = None, message: str | None = None,
            parent: str | None = None, source: tuple[str, str] | None = None, **attributes) -> str:
        product = product or _PRODUCTS[platform][0]
        self.events.append(_event(event_id, event_type, self.start_us + at, platform, product, ids, session,
                                  conversation, message, parent, attributes, source=source,
                                  offset=len(self.events)))
        return event_id

    def exchange(self, name: str, at: int, platform: str, client: _Ids, gateway: _Ids, *, session: str | None,
                 conversation: str, product: str | None = None, tokens=(1200, 0, 300, 0)) -> int:
        """A user message and the gateway's reply 2.5 s later; returns the reply's time."""
        user = self.add(f"{name}-user", "message.sent", at, platform, client, product=product, session=session,
                        conversation=conversation, message=f"{name}-m1", **_user_message("Hi", platform))
        self.add(f"{name}-reply", "message.sent", at + 2500 * 1000, "api", gateway, product=product or
                 _PRODUCTS[platform][0], session=session, conversation=conversation, message=f"{name}-m2",
                 parent=user, **_assistant_reply(MODELS[0], tokens, 2400, f"{name}-resp"))
        return at + 2500 * 1000


def cross_platform_scenario(start_us: int = BASE_TIME_US) -> CrossPlatformScenario:
    """The issue's named scenario, as an explicit list of events starting at ``start_us`` (UTC micros)."""
    s = _Script(start_us)
    tenant = "acme-outdoor"
    email = email_hash("dana@example.com")
    web_anon, account, slack_user = "anon-dana-web", "acct_dana", "T123:U456"
    ios_device, ios_anon = "idfv-dana-iphone", "anon-dana-ios"
    anonymous, signed_in = _Ids(tenant, web_anon), _Ids(tenant, web_anon, account)

    # day 0, 10:00: web, anonymous; signs in after the first answer
    at = 10 * HOUR
    s.add("dana-web1-start", "session.started", at, "web", anonymous, session="ws_dana_1",
          **_SESSION_STARTED["web"])
    at = s.exchange("dana-web1-a", at + 20 * SECOND, "web", anonymous, anonymous, session="ws_dana_1",
                    conversation="conv_dana_web1")
    s.add("dana-web-identify", "user.identified", at + 10 * SECOND, "web",
          _Ids(tenant, web_anon, account, email_sha256=email), session="ws_dana_1", previous_anonymous_id=web_anon,
          identity_provider="password", is_new_user=True)
    at = s.exchange("dana-web1-b", at + 30 * SECOND, "web", signed_in, signed_in, session="ws_dana_1",
                    conversation="conv_dana_web1")
    s.add("dana-web1-end", "session.ended", at + 20 * SECOND, "web", signed_in, session="ws_dana_1",
          reason="user_initiated")

    # day 0, 19:00: the iOS app, already signed in
    ios = _Ids(tenant, ios_anon, account, ios_device)
    at = 19 * HOUR
    s.add("dana-ios-start", "session.started", at, "ios", ios, session="is_dana_1", **_SESSION_STARTED["ios"])
    at = s.exchange("dana-ios-a", at + 15 * SECOND, "ios", ios, _Ids(tenant, ios_anon, account), session="is_dana_1",
                    conversation="conv_dana_ios")
    s.add("dana-ios-feedback", "feedback.submitted", at + 5 * SECOND, "ios", ios, session="is_dana_1",
          conversation="conv_dana_ios", message="dana-ios-a-m2", **_feedback("thumbs", 1))
    s.add("dana-ios-end", "session.ended", at + 30 * SECOND, "ios", ios, session="is_dana_1", reason="timeout")

    # day 1, 09:00: the Slack bot links her Slack user to her e-mail, then a thread with it
    slack = _Ids(tenant, platform_user_id=slack_user)
    thread = "C0DANA:1767258000.000100"
    s.add("dana-slack-identify", "user.identified", DAY + 9 * HOUR, "slack", _Ids(tenant, None, slack_user,
          email_sha256=email), identity_provider="slack", is_new_user=False)
    at = DAY + 9 * HOUR + MINUTE
    s.add("dana-slack-conv", "conversation.started", at, "slack", slack, conversation=thread, agent_name="Ava",
          channel_type="im")
    at = s.exchange("dana-slack-a", at + 10 * SECOND, "slack", slack, slack, session=None, conversation=thread)
    s.add("dana-slack-end", "conversation.ended", at + MINUTE, "slack", slack, conversation=thread,
          reason="handoff", handoff=True)

    # day 2, 14:00: back on the web, signed in
    at = 2 * DAY + 14 * HOUR
    s.add("dana-web2-start", "session.started", at, "web", signed_in, session="ws_dana_2",
          **_SESSION_STARTED["web"])
    at = s.exchange("dana-web2-a", at + 20 * SECOND, "web", signed_in, signed_in, session="ws_dana_2",
                    conversation="conv_dana_web2")

    _blocked_decoys(s, tenant)
    shared = _shared_device_decoys(s, tenant)
    kiosk = _kiosk_decoys(s, tenant)
    return CrossPlatformScenario(
        events=s.events, dana_email_sha256=email,
        dana_identifiers=(f"anonymous_id:{web_anon}", f"platform_user_id:{account}", f"email_sha256:{email}",
                          f"device_id:{ios_device}", f"anonymous_id:{ios_anon}", f"platform_user_id:{slack_user}"),
        dana_sessions=(("ws_dana_1", "web"), ("is_dana_1", "ios"), (f"conversation:{thread}", "slack"),
                       ("ws_dana_2", "web")),
        dana_anchor=f"anonymous_id:{web_anon}",
        dana_linking_events=("dana-web-identify", "dana-ios-start", "dana-slack-identify"),
        blocked_decoy_anonymous_ids=("anon-decoy-a", "anon-decoy-b"),
        shared_device_id=shared[0], shared_device_people=shared[1], shared_device_refusing_event=shared[2],
        kiosk_device_id=kiosk[0], kiosk_accounts=kiosk[1], kiosk_refusing_event=kiosk[2],
    )


def _blocked_decoys(s: _Script, tenant: str) -> None:
    # two strangers whose SDKs send placeholder ids: "0", " Anonymous ", "" must link nothing
    for who, at in (("a", 11 * HOUR), ("b", 12 * HOUR)):
        ids = _Ids(tenant, f"anon-decoy-{who}", "0", " Anonymous ", "")
        session, conversation = f"ws_decoy_{who}", f"conv_decoy_{who}"
        s.add(f"decoy-{who}-start", "session.started", at, "web", ids, session=session, **_SESSION_STARTED["web"])
        s.add(f"decoy-{who}-identify", "user.identified", at + SECOND, "web", ids, session=session,
              previous_anonymous_id="anonymous", identity_provider="guest")
        s.exchange(f"decoy-{who}", at + 10 * SECOND, "web", ids, _Ids(tenant, f"anon-decoy-{who}", "0"),
                   session=session, conversation=conversation)


def _shared_device_decoys(s: _Script, tenant: str) -> tuple[str, tuple[str, str], str]:
    # a family iPad: Kim then Lee sign in on it; one person may hold one e-mail hash, so they stay apart
    device = "idfv-family-ipad"
    people = []
    refusing = ""
    for who, at in (("kim", 13 * HOUR), ("lee", 15 * HOUR)):
        email = email_hash(f"{who}@example.com")
        ids = _Ids(tenant, f"anon-ipad-{who}", f"acct_{who}", device)
        session = f"is_ipad_{who}"
        refusing = s.add(f"ipad-{who}-identify", "user.identified", at, "ios",
                         _Ids(tenant, ids.anonymous_id, ids.platform_user_id, device, email), session=session,
                         identity_provider="apple")
        s.add(f"ipad-{who}-start", "session.started", at + SECOND, "ios", ids, session=session,
              **_SESSION_STARTED["ios"])
        s.exchange(f"ipad-{who}", at + 10 * SECOND, "ios", ids, _Ids(tenant, ids.anonymous_id, ids.platform_user_id),
                   session=session, conversation=f"conv_ipad_{who}")
        people.append(email)
    return device, (people[0], people[1]), refusing


def _kiosk_decoys(s: _Script, tenant: str) -> tuple[str, tuple[str, ...], str]:
    # a store's Android kiosk: four staff accounts sign in on one device; a person may hold 3 platform user ids
    device = "ssaid-store-kiosk"
    accounts = tuple(f"acct_kiosk_{n}" for n in range(1, 5))
    refusing = ""
    for n, account in enumerate(accounts):
        at = 2 * DAY + (9 + n) * HOUR
        ids = _Ids(tenant, None, account, device)
        session = f"as_kiosk_{n + 1}"
        refusing = s.add(f"kiosk-{n + 1}-start", "session.started", at, "android", ids, session=session,
                         **_SESSION_STARTED["android"])
        s.exchange(f"kiosk-{n + 1}", at + 10 * SECOND, "android", ids, _Ids(tenant, None, account), session=session,
                   conversation=f"conv_kiosk_{n + 1}")
    return device, accounts, refusing
