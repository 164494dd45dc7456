"""Synthetic traffic that imitates the demo sources (pure: the caller passes the clock and the RNG).

Each contract's latest preset version says where its ids, times, conversation and content live:
the mapping's `event_id` paths get fresh ids, `event_time` gets a time in the source's own format,
`session_id`/`conversation_id` stay constant within a generated conversation, and the `content`
field is padded so payloads vary between 1 and 4 KB. Each conversation is acted by one simulated
person (see `TrafficGenerator`), whose identifiers replace the samples' wherever the mapping reads an
identifier. Duplicates (re-sends of an earlier payload, sometimes hours later), out-of-order and late
events, and a few malformed records are mixed in at the requested fractions, and every generated
record says what it is so tests can check the outcome.

A `BreakPlan` (the demo's broken source, `generate_traffic --break-source`) makes one source start sending
a field with the wrong type after a while, then drop its volume, then (optionally) recover: its phases
follow the caller's clock from the generator's first batch.

Late and out-of-order events are what real clients send: an event of the current conversation held
back for a few seconds to minutes (a phone that was offline), never earlier than the conversation's
start. A conversation that has been idle for CONVERSATION_IDLE_US (the caller's clock stood still or
jumped) is not continued: the next event starts a new one, as a client starts a new session. So no
generated session pauses for longer than a platform's inactivity gap (docs/analytics.md, Sessions).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import random
import re
import string
import uuid
from collections.abc import Iterator
from typing import Any

import orjson

#: mapping fields that hold one of the person's identifiers, and the identifier kind each holds
IDENTITY_FIELDS = {
    "identifiers.anonymous_id": "anonymous_id",
    "previous_anonymous_id": "anonymous_id",
    "identifiers.platform_user_id": "platform_user_id",
    "identifiers.device_id": "device_id",
    "identifiers.email_sha256": "email",   # the mapping hashes the plain e-mail it finds at the path
}
#: platforms of backend sources: they act for the people of the client platforms, not for people of their own
BACKEND_PLATFORMS = frozenset({"api"})
#: the pool backend sources draw from: people with an account id (users of a platform not in OWN_USER_ID_PLATFORMS)
ACCOUNT_POOL = "*account"
#: platforms whose `platform_user_id` is their own user id; every other platform's is the person's shared account id
OWN_USER_ID_PLATFORMS = frozenset({"slack", "voice"})
#: how many of the client platforms one person uses: most one, some two or three (cross-platform is a minority)
PLATFORM_COUNTS, PLATFORM_COUNT_WEIGHTS = (1, 2, 3), (0.72, 0.21, 0.07)
#: people's activity weights are Pareto distributed (a few heavy users, a long tail), capped so that no single
#: person takes over a small pool
ACTIVITY_SHAPE, ACTIVITY_CAP = 1.2, 50.0
#: a leading run of word prefixes ("cust_", "and-anon-", "amzn1.ask.account.") that a fresh identifier keeps
_ID_STEM = re.compile(r"^(?:[A-Za-z]{2,}\d*[._-])+")
_HEX = frozenset("0123456789abcdefABCDEF")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
#: how late a late event is (a buffered event of the current conversation), and an out-of-order one (behind
#: its neighbours), in seconds; either is clamped to the conversation's start
LATE_SECONDS, OUT_OF_ORDER_SECONDS = (5, 300), (1, 120)
#: a conversation idle this long is over: the template's next event starts a new one (shorter than every
#: platform's inactivity gap in warehouse.modeling.sql.SESSION_GAP_S)
CONVERSATION_IDLE_US = 5 * 60 * 1_000_000
#: finished conversations kept per template for late events to belong to (those of the last LATE_SECONDS[1])
RECENT_CONVERSATIONS = 1000

FILLER = ("Could you summarise the refund policy and tell me whether the annual plan can be paused "
          "while I travel next month? Also, which of your models handles long documents best? ")


@dataclasses.dataclass(frozen=True)
class ContractTemplate:
    source: str
    platform: str
    contract: str              # event name: subject = f"{source}.{contract}"
    samples: tuple[dict, ...]
    id_paths: tuple[str, ...]
    time_path: str | None
    time_transform: str | None
    group_paths: tuple[str, ...]   # session / conversation paths, constant within a conversation
    content_paths: tuple[str, ...]
    #: (identifier kind, payload path): where the person acting the conversation puts their identifiers
    identity_paths: tuple[tuple[str, str], ...] = ()
    #: (path, started value, completed value) of a contract whose events come in pairs (a tool call's started and
    #: completed phases share the natural key): a completed event reuses the ids of a started one of its
    #: conversation, no earlier in time, as the platform's referential check expects
    phases: tuple[str, str, str] | None = None


@dataclasses.dataclass(frozen=True)
class GeneratedRecord:
    source: str
    contract: str
    payload: Any                # a dict, or bytes for an undecodable record
    kind: str                   # "new" | "duplicate" | "malformed" | "unknown_source" | "broken"
    event_time_micros: int


#: the phases of a BreakPlan, in order
BREAK_PHASES = ("normal", "wrong_type", "dropped", "fixed")


@dataclasses.dataclass(frozen=True)
class BreakPlan:
    """One source breaks the way a bad release would: ``after_s`` seconds into the traffic it starts sending
    a field with the wrong type (``wrong_type``); ``drop_after_s`` later its volume falls to
    ``volume_fraction`` (``dropped``, still wrong); ``fix_after_s`` after the break it is ``fixed`` (sends
    as before). ``fix_after_s`` None: it never recovers."""

    source: str
    after_s: float
    drop_after_s: float = 60.0
    volume_fraction: float = 0.1
    fix_after_s: float | None = 600.0

    def __post_init__(self) -> None:
        if self.after_s < 0 or self.drop_after_s < 0:
            raise ValueError("the break's delays must not be negative")
        if not 0.0 <= self.volume_fraction <= 1.0:
            raise ValueError("volume_fraction must be between 0 and 1")
        if self.fix_after_s is not None and self.fix_after_s <= 0:
            raise ValueError("fix_after_s must be positive (None: never fixed)")

    def phase(self, elapsed_s: float) -> str:
        """Which phase the source is in ``elapsed_s`` seconds after the traffic started."""
        since_break = elapsed_s - self.after_s
        if since_break < 0:
            return "normal"
        if self.fix_after_s is not None and since_break >= self.fix_after_s:
            return "fixed"
        return "dropped" if since_break >= self.drop_after_s else "wrong_type"


def _value_path(spec: Any) -> str | None:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict) and isinstance(spec.get("path"), str):
        return spec["path"]
    return None


def _spec_paths(spec: Any, samples: tuple[dict, ...]) -> list[str]:
    """The payload paths a mapping value spec reads a person's identifier from."""
    if isinstance(spec, str):
        return [spec]
    if not isinstance(spec, dict):
        return []
    if isinstance(spec.get("path"), str):
        return [spec["path"]]
    if isinstance(spec.get("first"), list):
        for option in spec["first"]:   # the option the samples use (e.g. Android's appSetId before androidId)
            paths = _spec_paths(option, samples)
            if any(_get(sample, path) is not None for sample in samples for path in paths):
                return paths
        return []
    if isinstance(spec.get("template"), str):
        # "{team_id}:{event.user}": only the user part belongs to the person; the workspace stays the sample's
        placeholders = _PLACEHOLDER.findall(spec["template"].replace("{{", "").replace("}}", ""))
        return [p.strip() for p in placeholders if "user" in p.strip().rpartition(".")[2].lower()]
    return []


def _paths_holding(node: dict, value: str, prefix: str = "") -> Iterator[str]:
    for key, child in node.items():
        if child == value:
            yield prefix + key
        elif isinstance(child, dict):
            yield from _paths_holding(child, value, f"{prefix}{key}.")


def _identity_paths(mapping: dict, samples: tuple[dict, ...]) -> tuple[tuple[str, str], ...]:
    specs = list(mapping.get("fields", {}).items())
    specs += [item for rule in mapping.get("events", []) for item in rule.get("fields", {}).items()]
    kind_by_path: dict[str, str] = {}
    for name, spec in specs:
        if name in IDENTITY_FIELDS:
            for path in _spec_paths(spec, samples):
                kind_by_path.setdefault(path, IDENTITY_FIELDS[name])
    # The same identifier repeated where the mapping does not look (Alexa's context.System.user.userId next to
    # session.user.userId) must change with it, or one request would carry two people. Short values are left
    # out: they match unrelated fields by chance.
    for path, kind in list(kind_by_path.items()):
        for sample in samples:
            value = _get(sample, path)
            if isinstance(value, str) and len(value) >= 8:
                for other in _paths_holding(sample, value):
                    kind_by_path.setdefault(other, kind)
    return tuple(sorted((kind, path) for path, kind in kind_by_path.items()))


def templates_from_preset(preset: dict) -> list[ContractTemplate]:
    templates = []
    for contract in preset["contracts"]:
        latest = contract["versions"][-1]
        mapping = latest["mapping"]
        event_id = mapping.get("event_id") or {}
        ids = event_id.get("natural_key") or [event_id.get("idempotency_key")]
        top = mapping.get("fields", {})
        rules = mapping.get("events", [])
        time_spec = top.get("event_time") or next((r["fields"]["event_time"] for r in rules
                                                   if "event_time" in r.get("fields", {})), None)
        group = [_value_path(top.get(name)) for name in ("session_id", "conversation_id")]
        # a conversation id made from a template ("{event.channel}:{event.thread_ts}", Slack): its
        # thread part stays constant within a conversation, and the message part ("{event.ts}", also
        # in message_id) is fresh for every event, or every generated thread would be the samples' few
        group += _template_paths(top.get("conversation_id"))
        per_event = [p for p in _template_paths(top.get("message_id")) if p not in group]
        content = {_value_path(r.get("fields", {}).get("content")) for r in rules}
        samples = tuple(latest["samples"])
        templates.append(ContractTemplate(
            source=preset["source"], platform=preset["platform"], contract=contract["subject"].partition(".")[2],
            samples=samples, id_paths=tuple(dict.fromkeys([*(p for p in ids if isinstance(p, str)), *per_event])),
            time_path=_value_path(time_spec), time_transform=time_spec.get("transform")
            if isinstance(time_spec, dict) else None,
            group_paths=tuple(p for p in group if p), content_paths=tuple(sorted(p for p in content if p)),
            identity_paths=_identity_paths(mapping, samples),
            phases=_paired_phases(rules),
        ))
    return templates


def _paired_phases(rules: list[dict]) -> tuple[str, str, str] | None:
    """(path, started value, completed value) when the mapping's event rules tell a ``*.started`` from a
    ``*.completed`` event of the same thing by one field's value (the tool-call contracts)."""
    by_suffix: dict[str, tuple[str, str, str]] = {}
    for rule in rules:
        when, kind = rule.get("when") or {}, str(rule.get("type") or "")
        if isinstance(when, dict) and isinstance(when.get("path"), str) and "equals" in when:
            stem, _, suffix = kind.rpartition(".")
            by_suffix[suffix] = (stem, when["path"], when["equals"])
    started, completed = by_suffix.get("started"), by_suffix.get("completed")
    if started and completed and started[:2] == completed[:2]:
        return started[1], started[2], completed[2]
    return None


def _template_paths(spec: Any) -> list[str]:
    """The payload paths a template value spec (or the first template of a ``first`` list) is made of,
    except the channel or workspace it names (those stay the sample's)."""
    if isinstance(spec, dict) and isinstance(spec.get("first"), list) and spec["first"]:
        spec = spec["first"][0]
    if not isinstance(spec, dict) or not isinstance(spec.get("template"), str):
        return []
    names = _PLACEHOLDER.findall(spec["template"].replace("{{", "").replace("}}", ""))
    return [n.strip() for n in names if not re.search(r"channel|team", n.strip().rpartition(".")[2], re.I)]


def _get(payload: Any, path: str) -> Any:
    node = payload
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set(payload: dict, path: str, value: Any) -> None:
    node = payload
    parts = path.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            return
        node = node[part]
    if parts[-1] in node:
        node[parts[-1]] = value


def _format_time(micros: int, transform: str | None, like: Any) -> Any:
    if transform == "epoch_seconds":
        seconds = micros / 1_000_000
        return f"{seconds:.6f}" if isinstance(like, str) else seconds
    if transform == "epoch_millis":
        return str(micros // 1000) if isinstance(like, str) else micros // 1000
    if transform == "epoch_micros":
        return str(micros) if isinstance(like, str) else micros
    stamp = dt.datetime.fromtimestamp(micros / 1_000_000, tz=dt.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


_SLACK_TS = re.compile(r"^\d{9,11}\.\d{6}$")


def _fresh_id(like: Any, rng: random.Random, micros: int | None = None) -> Any:
    if isinstance(like, int) and not isinstance(like, bool):
        return rng.randrange(1, 2**53)
    if micros is not None and isinstance(like, str) and _SLACK_TS.match(like):
        # a Slack ts: the message's (or thread's first message's) time, unique by its last digits
        return f"{micros // 1_000_000}.{rng.randrange(10**6):06d}"
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _id_like(like: Any, rng: random.Random) -> Any:
    """A fresh identifier in the sample's format: a UUID stays a UUID in the same case, word prefixes such as
    "inst_" or "amzn1.ask.device." stay, and the rest keeps its character classes (hex stays hex)."""
    if not isinstance(like, str):
        return _fresh_id(like, rng)
    if len(like) == 36 and like.count("-") == 4 and all(c in _HEX or c == "-" for c in like):
        fresh = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        return fresh.upper() if like.isupper() else fresh
    stem = _ID_STEM.match(like)
    cut = stem.end() if stem else 0
    rest = like[cut:]
    is_hex = any(c.isalpha() for c in rest) and all(c in _HEX or not c.isalnum() for c in rest)
    hex_digits = ("0123456789ABCDEF" if rest.isupper() else "0123456789abcdef") if is_hex else ""
    out = []
    for c in rest:
        if hex_digits and c.isalnum():
            out.append(rng.choice(hex_digits))
        elif c.isdigit():
            out.append(rng.choice(string.digits))
        elif c.isupper():
            out.append(rng.choice(string.ascii_uppercase))
        elif c.islower():
            out.append(rng.choice(string.ascii_lowercase))
        else:
            out.append(c)
    return like[:cut] + "".join(out)


@dataclasses.dataclass(eq=False)
class _Conversation:
    ids: dict[str, Any]            # session / conversation path -> id
    person: _Person
    started_micros: int
    last_micros: int
    #: per template (paired phases): the ids and event time of started events not yet completed
    open_calls: dict[str, collections.deque] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(eq=False)
class _Person:
    number: int                    # their e-mail is person<number>@example.com
    #: (identifier kind, scope) -> identifier, made the first time a conversation needs it
    ids: dict[tuple[str, str], Any] = dataclasses.field(default_factory=dict)


class TrafficGenerator:
    """Yields records for all templates in rotation, conversation by conversation.

    Every conversation is acted by one simulated person. The pool starts with `people` people, each using one to
    three of the client platforms and each with a Pareto-distributed activity weight, so a few people are much
    more active than the rest; a `new_person_fraction` of the conversations is started by someone never seen
    before, so new people keep arriving. A person has one account id (`cust_…`) shared by web, iOS, Android and
    the backend sources acting for them, their own Slack and Alexa user ids, one anonymous id per source, one
    device id per device source, and an e-mail that their sign-in events carry, so identity stitching can join
    their platforms.
    """

    def __init__(self, templates: list[ContractTemplate], *, seed: int = 7, duplicate_fraction: float = 0.05,
                 out_of_order_fraction: float = 0.1, late_fraction: float = 0.01, malformed_fraction: float = 0.002,
                 min_bytes: int = 1000, max_bytes: int = 4000, people: int = 500, new_person_fraction: float = 0.01,
                 break_plan: BreakPlan | None = None):
        if not templates:
            raise ValueError("no templates to generate traffic from")
        if people < 1:
            raise ValueError("people must be at least 1")
        self.templates = templates
        self.rng = random.Random(seed)  # noqa: S311 - synthetic demo traffic, reproducible by seed
        self.duplicate_fraction = duplicate_fraction
        self.out_of_order_fraction = out_of_order_fraction
        self.late_fraction = late_fraction
        self.malformed_fraction = malformed_fraction
        self.min_bytes, self.max_bytes = min_bytes, max_bytes
        self.new_person_fraction = new_person_fraction
        if break_plan is not None and break_plan.source not in {t.source for t in templates}:
            raise ValueError(f"cannot break {break_plan.source!r}: it is not one of the sources generated "
                             f"({', '.join(sorted({t.source for t in templates}))})")
        self.break_plan = break_plan
        self._started_micros: int | None = None
        self._sent: list[GeneratedRecord] = []
        #: per template: the current conversation (its session/conversation ids and the person acting it)
        self._groups: dict[str, _Conversation] = {}
        #: per template: its last finished conversations, which late events belong to
        self._recent: dict[str, collections.deque[_Conversation]] = {}
        self._samples_json = {id(t): tuple(orjson.dumps(sample) for sample in t.samples) for t in templates}
        #: per paired template: its samples of the started phase (a completed event with no call open becomes one)
        self._started_json = {id(t): tuple(orjson.dumps(sample) for sample in t.samples
                                           if _get(sample, t.phases[0]) == t.phases[1])
                              for t in templates if t.phases}
        self._client_platforms = sorted({t.platform for t in templates} - BACKEND_PLATFORMS)
        self._account_platforms = [p for p in self._client_platforms if p not in OWN_USER_ID_PLATFORMS]
        self._people: list[_Person] = []
        #: pool key (a client platform, or ACCOUNT_POOL) -> its people and their cumulative activity weights
        self._pools: dict[str, tuple[list[_Person], list[float]]] = {}
        self._taken: set[Any] = set()   # identifiers handed out, so that no two people share one
        for _ in range(people):
            self._person_new(None)

    def _person_new(self, pool: str | None) -> _Person:
        """A new person who uses the pool's platform (any client platform for None) and maybe one or two more."""
        rng = self.rng
        platforms: set[str] = set()
        if self._client_platforms:
            if pool in self._client_platforms:
                first = pool
            elif pool == ACCOUNT_POOL and self._account_platforms:
                first = rng.choice(self._account_platforms)
            else:
                first = rng.choice(self._client_platforms)
            count = rng.choices(PLATFORM_COUNTS, PLATFORM_COUNT_WEIGHTS)[0]
            others = [p for p in self._client_platforms if p != first]
            platforms = {first, *rng.sample(others, min(count - 1, len(others)))}
        person = _Person(len(self._people) + 1)
        self._people.append(person)
        weight = min(rng.paretovariate(ACTIVITY_SHAPE), ACTIVITY_CAP)
        pools = sorted(platforms)
        if not self._account_platforms or platforms - OWN_USER_ID_PLATFORMS:
            pools.append(ACCOUNT_POOL)
        for key in pools:
            members, cumulative = self._pools.setdefault(key, ([], []))
            members.append(person)
            cumulative.append((cumulative[-1] if cumulative else 0.0) + weight)
        return person

    def _person_for(self, template: ContractTemplate) -> _Person:
        """Who acts a new conversation of the template: a backend source acts for any account holder."""
        pool = ACCOUNT_POOL if template.platform in BACKEND_PLATFORMS else template.platform
        people = self._pools.get(pool)
        if people is None or self.rng.random() < self.new_person_fraction:
            return self._person_new(pool)
        members, cumulative = people
        return self.rng.choices(members, cum_weights=cumulative)[0]

    def _identifier(self, person: _Person, kind: str, template: ContractTemplate, like: Any) -> Any:
        if kind == "platform_user_id":
            scope = template.platform if template.platform in OWN_USER_ID_PLATFORMS else "account"
        elif kind == "email":
            scope = "email"
        else:
            scope = template.source    # one anonymous/install id and one device id per person and source
        value = person.ids.get((kind, scope))
        if value is None:
            value = person.ids[(kind, scope)] = self._identifier_new(person, kind, scope, like)
        return value

    def _identifier_new(self, person: _Person, kind: str, scope: str, like: Any) -> Any:
        if kind == "email":
            return f"person{person.number}@example.com"
        rng = self.rng
        while True:
            if scope == "account":
                value: Any = f"cust_{rng.randrange(10**6, 10**7)}"
            elif scope == "slack":
                value = f"U{rng.randrange(10**9, 10**10)}"
            else:                       # Alexa's amzn1.ask.account.…, install and device ids: the sample's format
                value = _id_like(like, rng)
            if value not in self._taken:
                self._taken.add(value)
                return value

    def _conversation(self, template: ContractTemplate, key: str, payload: dict, now_micros: int) -> _Conversation:
        """The template's current conversation, or a new one (about every 7th event, or after it was idle)."""
        group = self._groups.get(key)
        idle = group is not None and not 0 <= now_micros - group.last_micros <= CONVERSATION_IDLE_US
        if group is None or idle or self.rng.random() < 0.15:
            if group is not None:
                self._recent.setdefault(key, collections.deque(maxlen=RECENT_CONVERSATIONS)).append(group)
            group = _Conversation({path: _fresh_id(_get(payload, path), self.rng, now_micros)
                                   for path in template.group_paths},
                                  self._person_for(template), now_micros, now_micros)
            self._groups[key] = group
        group.last_micros = now_micros
        return group

    def _pair_phase(self, template: ContractTemplate, key: str, group: _Conversation, payload: dict,
                    event_time: int, opens: bool) -> tuple[int, dict]:
        """A started event opens a call in its conversation; a completed one closes the oldest open call, with
        its ids and no earlier than it. A completed event with no call open is sent as a started one."""
        if not template.phases:
            return event_time, payload
        path, started, completed = template.phases
        calls = group.open_calls.setdefault(key, collections.deque(maxlen=16))
        if _get(payload, path) == completed:
            if calls:
                ids, opened_at = calls.popleft()
                for id_path, value in ids.items():
                    _set(payload, id_path, value)
                return max(event_time, opened_at + 1_000), payload
            choices = self._started_json.get(id(template))
            if not choices:
                return event_time, payload
            fresh = orjson.loads(self.rng.choice(choices))
            for id_path in (*template.id_paths, *group.ids):
                _set(fresh, id_path, _get(payload, id_path))
            for _, id_path in template.identity_paths:
                if _get(payload, id_path) is not None and _get(fresh, id_path) is not None:
                    _set(fresh, id_path, _get(payload, id_path))
            payload = fresh
        if opens and _get(payload, path) == started:  # a started event that will not land opens nothing
            calls.append(({p: _get(payload, p) for p in template.id_paths}, event_time))
        return event_time, payload

    def _payload(self, template: ContractTemplate, now_micros: int, lands: bool = True) -> tuple[dict, int]:
        rng = self.rng
        payload = orjson.loads(rng.choice(self._samples_json[id(template)]))   # a fresh copy, faster than deepcopy
        key = f"{template.source}.{template.contract}"
        group = self._conversation(template, key, payload, now_micros)
        event_time = now_micros
        roll = rng.random()
        if roll < self.late_fraction:
            # held back by the client: an event of one of the template's conversations of the last few
            # minutes, at a time inside it, arriving now
            recent = [c for c in self._recent.get(key, ()) if now_micros - c.last_micros <= LATE_SECONDS[1] * 1_000_000]
            if recent:
                group = rng.choice(recent)
                event_time = rng.randrange(group.started_micros, group.last_micros + 1)
            else:
                event_time -= rng.randrange(*LATE_SECONDS) * 1_000_000      # seconds to minutes late
        elif roll < self.late_fraction + self.out_of_order_fraction:
            event_time -= rng.randrange(*OUT_OF_ORDER_SECONDS) * 1_000_000  # behind its neighbours
        event_time = max(event_time, group.started_micros)                 # never before its conversation
        for path, value in group.ids.items():
            _set(payload, path, value)
        for kind, path in template.identity_paths:
            like = _get(payload, path)
            if like is not None:    # a sample without the identifier (a call made signed out) stays without it
                _set(payload, path, self._identifier(group.person, kind, template, like))
        for path in template.id_paths:
            _set(payload, path, _fresh_id(_get(payload, path), rng, event_time))
        event_time, payload = self._pair_phase(template, key, group, payload, event_time, lands)
        if template.time_path:
            _set(payload, template.time_path, _format_time(event_time, template.time_transform,
                                                           _get(payload, template.time_path)))
        target = rng.randrange(self.min_bytes, self.max_bytes)
        for path in template.content_paths:
            text = _get(payload, path)
            if isinstance(text, str):
                missing = target - len(orjson.dumps(payload))
                if missing > 0:
                    _set(payload, path, text + " " + (FILLER * (missing // len(FILLER) + 1))[:missing])
                break
        return payload, event_time

    def break_phase(self, now_micros: int) -> str:
        """The broken source's phase at ``now_micros`` ("normal" without a plan)."""
        if self.break_plan is None:
            return "normal"
        if self._started_micros is None:
            self._started_micros = now_micros
        return self.break_plan.phase((now_micros - self._started_micros) / 1_000_000)

    def records(self, count: int, *, now_micros: int) -> Iterator[GeneratedRecord]:
        """``count`` records (fewer while a broken source has dropped its volume)."""
        rng = self.rng
        phase = self.break_phase(now_micros)
        broken = self.break_plan.source if phase in ("wrong_type", "dropped") and self.break_plan else None
        for i in range(count):
            roll = rng.random()
            template = self.templates[i % len(self.templates)]
            if broken is not None and template.source == broken:
                if phase == "dropped" and rng.random() >= self.break_plan.volume_fraction:  # type: ignore[union-attr]
                    continue
                yield self._wrong_typed(template, now_micros)
                continue
            if self._sent and roll < self.duplicate_fraction:
                original = rng.choice(self._sent)
                yield dataclasses.replace(original, kind="duplicate")
                continue
            if roll < self.duplicate_fraction + self.malformed_fraction:
                yield self._malformed(template, now_micros)
                continue
            payload, event_time = self._payload(template, now_micros)
            record = GeneratedRecord(template.source, template.contract, payload, "new", event_time)
            self._sent.append(record)
            if len(self._sent) > 50_000:
                del self._sent[:10_000]
            yield record

    def _malformed(self, template: ContractTemplate, now_micros: int) -> GeneratedRecord:
        payload, event_time = self._payload(template, now_micros, lands=False)
        if template.id_paths and self.rng.random() < 0.7:
            _set(payload, template.id_paths[0], {"not": "an id"})   # breaks the contract's schema
        else:
            payload = b'{"truncated": '                              # not JSON at all
        return GeneratedRecord(template.source, template.contract, payload, "malformed", event_time)

    def _wrong_typed(self, template: ContractTemplate, now_micros: int) -> GeneratedRecord:
        """A payload whose first text field (content, else the event time, else the id) holds a number, or
        whose first numeric one holds text: the contract's schema refuses it, naming the field's path."""
        payload, event_time = self._payload(template, now_micros, lands=False)
        path = wrong_type_path(template)
        if path is not None:
            value = _get(payload, path)
            _set(payload, path, 404 if isinstance(value, str) else "four hundred and four")
        return GeneratedRecord(template.source, template.contract, payload, "broken", event_time)


def wrong_type_path(template: ContractTemplate) -> str | None:
    """The field a broken source sends with the wrong type: its content, else its time, else its id."""
    candidates = [*template.content_paths, *([template.time_path] if template.time_path else []),
                  *template.id_paths]
    for path in candidates:
        values = [_get(sample, path) for sample in template.samples]
        if values and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values):
            return path
    return None
