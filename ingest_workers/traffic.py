"""Synthetic traffic that imitates the demo sources (pure: the caller passes the clock and the RNG).

Each contract's latest preset version says where its ids, times, conversation and content live:
the mapping's `event_id` paths get fresh ids, `event_time` gets a time in the source's own format,
`session_id`/`conversation_id` stay constant within a generated conversation, and the `content`
field is padded so payloads vary between 1 and 4 KB. Duplicates (re-sends of an earlier payload,
sometimes hours later), out-of-order and late events, and a few malformed records are mixed in at
the requested fractions, and every generated record says what it is so tests can check the outcome.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import random
import uuid
from collections.abc import Iterator
from typing import Any

import orjson

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


@dataclasses.dataclass(frozen=True)
class GeneratedRecord:
    source: str
    contract: str
    payload: Any                # a dict, or bytes for an undecodable record
    kind: str                   # "new" | "duplicate" | "malformed" | "unknown_source"
    event_time_micros: int


def _value_path(spec: Any) -> str | None:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict) and isinstance(spec.get("path"), str):
        return spec["path"]
    return None


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
        content = {_value_path(r.get("fields", {}).get("content")) for r in rules}
        templates.append(ContractTemplate(
            source=preset["source"], platform=preset["platform"], contract=contract["subject"].partition(".")[2],
            samples=tuple(latest["samples"]), id_paths=tuple(p for p in ids if isinstance(p, str)),
            time_path=_value_path(time_spec), time_transform=time_spec.get("transform")
            if isinstance(time_spec, dict) else None,
            group_paths=tuple(p for p in group if p), content_paths=tuple(sorted(p for p in content if p)),
        ))
    return templates


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


def _fresh_id(like: Any, rng: random.Random) -> Any:
    if isinstance(like, int) and not isinstance(like, bool):
        return rng.randrange(1, 2**53)
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


class TrafficGenerator:
    """Yields records for all templates in rotation, conversation by conversation."""

    def __init__(self, templates: list[ContractTemplate], *, seed: int = 7, duplicate_fraction: float = 0.05,
                 out_of_order_fraction: float = 0.1, late_fraction: float = 0.01, malformed_fraction: float = 0.002,
                 min_bytes: int = 1000, max_bytes: int = 4000):
        if not templates:
            raise ValueError("no templates to generate traffic from")
        self.templates = templates
        self.rng = random.Random(seed)  # noqa: S311 - synthetic demo traffic, reproducible by seed
        self.duplicate_fraction = duplicate_fraction
        self.out_of_order_fraction = out_of_order_fraction
        self.late_fraction = late_fraction
        self.malformed_fraction = malformed_fraction
        self.min_bytes, self.max_bytes = min_bytes, max_bytes
        self._sent: list[GeneratedRecord] = []
        self._groups: dict[str, dict[str, Any]] = {}

    def _payload(self, template: ContractTemplate, now_micros: int) -> tuple[dict, int]:
        rng = self.rng
        payload = copy.deepcopy(rng.choice(template.samples))
        key = f"{template.source}.{template.contract}"
        group = self._groups.get(key)
        if group is None or rng.random() < 0.15:  # a new conversation every ~7 events
            group = {path: _fresh_id(_get(payload, path), rng) for path in template.group_paths}
            self._groups[key] = group
        for path, value in group.items():
            _set(payload, path, value)
        for path in template.id_paths:
            _set(payload, path, _fresh_id(_get(payload, path), rng))
        event_time = now_micros
        roll = rng.random()
        if roll < self.late_fraction:
            event_time -= rng.randrange(3600, 48 * 3600) * 1_000_000        # hours to two days late
        elif roll < self.late_fraction + self.out_of_order_fraction:
            event_time -= rng.randrange(1, 120) * 1_000_000                 # behind its neighbours
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

    def records(self, count: int, *, now_micros: int) -> Iterator[GeneratedRecord]:
        rng = self.rng
        for i in range(count):
            roll = rng.random()
            if self._sent and roll < self.duplicate_fraction:
                original = rng.choice(self._sent)
                yield dataclasses.replace(original, kind="duplicate")
                continue
            template = self.templates[i % len(self.templates)]
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
        payload, event_time = self._payload(template, now_micros)
        if template.id_paths and self.rng.random() < 0.7:
            _set(payload, template.id_paths[0], {"not": "an id"})   # breaks the contract's schema
        else:
            payload = b'{"truncated": '                              # not JSON at all
        return GeneratedRecord(template.source, template.contract, payload, "malformed", event_time)
