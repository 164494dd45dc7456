"""Identity stitching: from observations (identifier sets seen together on one event) to persons.

Pure: takes data, returns data; no Django, warehouse or clock. The rules are in docs/analytics.md:
observations are applied in order of first sighting; each merges the persons of its identifiers
unless the merged person would hold more identifiers of one kind than ``KIND_LIMITS`` allows, in
which case identifiers are taken in ``KIND_PRIORITY`` order and the persons that would break a
limit stay apart (recorded as a refused merge).

The result depends only on the set of observations, never on the order they are given in, so
re-stitching a link group after new evidence gives what a full rebuild gives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: identifier kinds, highest priority first
KIND_PRIORITY: tuple[str, ...] = ("email_sha256", "platform_user_id", "device_id", "anonymous_id")
KIND_RANK = {kind: rank for rank, kind in enumerate(KIND_PRIORITY)}
#: how many identifiers of one kind one person may gather
KIND_LIMITS: dict[str, int] = {"email_sha256": 1, "platform_user_id": 3, "device_id": 10, "anonymous_id": 50}
#: values that identify nobody (compared stripped of spaces and lower-cased)
BLOCKED_VALUES: frozenset[str] = frozenset(
    {"", "null", "none", "undefined", "0", "-1", "anonymous", "unknown", "guest", "n/a", "nil", "nan"}
)
#: observation fields and the identifier kind each one holds
OBSERVATION_FIELDS: tuple[tuple[str, str], ...] = (
    ("email_sha256", "email_sha256"),
    ("platform_user_id", "platform_user_id"),
    ("device_id", "device_id"),
    ("anonymous_id", "anonymous_id"),
    ("previous_anonymous_id", "anonymous_id"),
)


def is_blocked(value: Any) -> bool:
    return value is None or not isinstance(value, str) or value.strip(" ").lower() in BLOCKED_VALUES


def clean(value: Any) -> str | None:
    """The identifier, or None when it identifies nobody."""
    return None if is_blocked(value) else value


def id_key(kind: str, value: str) -> str:
    return f"{kind}:{value}"


def _digest(text: str, n: int) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


def person_id_for(anchor_key: str) -> str:
    return "p_" + _digest(anchor_key, 20)


def observation_key(obs: dict) -> str:
    return "o_" + _digest("\x1f".join(obs.get(f) or "" for f, _ in OBSERVATION_FIELDS), 24)


def link_group_for(id_keys: Iterable[str]) -> str:
    return "g_" + _digest(min(id_keys), 16)


def observation_ids(obs: dict) -> list[tuple[str, str]]:
    """(kind, value) of every usable identifier of an observation, in priority order."""
    ids = {(kind, obs[f]) for f, kind in OBSERVATION_FIELDS if not is_blocked(obs.get(f))}
    return sorted(ids, key=lambda kv: (KIND_RANK[kv[0]], kv[1]))


@dataclass
class _Person:
    ids: dict[str, set[str]] = field(default_factory=lambda: {k: set() for k in KIND_PRIORITY})
    anchor: tuple = ()
    members: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.ids.items()}


@dataclass(frozen=True)
class StitchResult:
    observations: list[dict]   # IDENTITY.OBSERVATIONS rows (lower-case keys)
    identifiers: list[dict]    # IDENTITY.IDENTIFIERS rows
    persons: list[dict]        # IDENTITY.PERSONS rows
    merges: list[dict]         # IDENTITY.MERGES rows

    def person_of(self) -> dict[str, str]:
        return {row["id_key"]: row["person_id"] for row in self.identifiers}


def combine_observations(*sources: Iterable[dict]) -> list[dict]:
    """One observation per identifier set: earliest sighting wins, ``identified`` wins over
    ``co_occurrence``. Observations with no usable identifier are dropped."""
    out: dict[str, dict] = {}
    for source in sources:
        for raw in source:
            obs = {f: clean(raw.get(f)) for f, _ in OBSERVATION_FIELDS}
            if not any(obs.values()):
                continue
            obs["observation_key"] = observation_key(obs)
            obs["rule"] = raw.get("rule") or "co_occurrence"
            obs["first_seen_at"] = raw["first_seen_at"]
            obs["first_event_id"] = raw["first_event_id"]
            have = out.get(obs["observation_key"])
            if have is None:
                out[obs["observation_key"]] = obs
                continue
            if (obs["first_seen_at"], obs["first_event_id"]) < (have["first_seen_at"], have["first_event_id"]):
                have["first_seen_at"], have["first_event_id"] = obs["first_seen_at"], obs["first_event_id"]
            if obs["rule"] == "identified":
                have["rule"] = "identified"
    return list(out.values())


def stitch(observations: Iterable[dict]) -> StitchResult:
    """Persons, identifiers, merges and link groups of a set of observations (see module doc).

    ``observations`` are dicts with the ``OBSERVATION_FIELDS``, ``rule``, ``first_seen_at`` (any
    comparable value, e.g. a datetime) and ``first_event_id``; they are combined first."""
    obs_list = sorted(combine_observations(observations),
                      key=lambda o: (o["first_seen_at"], o["first_event_id"], o["observation_key"]))
    graph = _Graph(obs_list)
    for obs in obs_list:
        graph.apply(obs)
    return graph.result(obs_list)


class _Graph:
    """Persons (merged under the limits) and link groups (joined by every observation)."""

    def __init__(self, obs_list: list[dict]):
        # every identifier's first sighting: anchors are chosen by it (obs_list is in sighting order)
        self.first_seen: dict[str, tuple] = {}
        for obs in obs_list:
            for kind, value in observation_ids(obs):
                self.first_seen.setdefault(id_key(kind, value), (obs["first_seen_at"], obs["first_event_id"]))
        self.person_of: dict[str, _Person] = {}
        self.group_parent: dict[str, str] = {}
        self.merges: list[dict] = []

    def anchor_order(self, key: str) -> tuple:
        kind, _, value = key.partition(":")
        return (self.first_seen[key][0], KIND_RANK[kind], value)

    def group_root(self, key: str) -> str:
        parent = self.group_parent
        root = key
        while parent[root] != root:
            root = parent[root]
        while parent[key] != root:   # path compression
            parent[key], key = root, parent[key]
        return root

    def apply(self, obs: dict) -> None:
        ids = observation_ids(obs)
        keys = [id_key(k, v) for k, v in ids]
        for (kind, value), key in zip(ids, keys, strict=True):
            if key not in self.person_of:
                p = _Person(anchor=self.anchor_order(key), members=[key])
                p.ids[kind].add(value)
                self.person_of[key] = p
                self.group_parent[key] = key
        roots = {self.group_root(k) for k in keys}   # link groups join whatever the merge decision
        top = min(roots)
        for r in roots:
            self.group_parent[r] = top
        ordered: list[_Person] = []   # persons in the order of their best identifier here
        for key in keys:
            if all(self.person_of[key] is not q for q in ordered):
                ordered.append(self.person_of[key])
        base = ordered[0]
        for other in ordered[1:]:
            self.merge(obs, base, other)

    def merge(self, obs: dict, base: _Person, other: _Person) -> None:
        over = [kind for kind in KIND_PRIORITY if len(base.ids[kind] | other.ids[kind]) > KIND_LIMITS[kind]]
        record = {"event_id": obs["first_event_id"], "observation_key": obs["observation_key"],
                  "rule": obs["rule"], "decided_at": obs["first_seen_at"]}
        if over:
            kind = over[0]
            self.merges.append({
                **record, "decision": "refused", "person_anchor": _anchor_key(base),
                "merged_anchor": _anchor_key(other),
                "reason": f"would give one person {len(base.ids[kind] | other.ids[kind])} {kind} "
                          f"(limit {KIND_LIMITS[kind]})",
            })
            return
        first, second = sorted((base, other), key=lambda p: p.anchor)
        self.merges.append({**record, "decision": "merged", "reason": None,
                            "person_anchor": _anchor_key(first), "merged_anchor": _anchor_key(second)})
        for kind in KIND_PRIORITY:
            base.ids[kind] |= other.ids[kind]
        base.members.extend(other.members)
        base.anchor = min(base.anchor, other.anchor)
        for key in other.members:
            self.person_of[key] = base

    def result(self, obs_list: list[dict]) -> StitchResult:
        group_members: dict[str, list[str]] = {}
        for key in self.person_of:
            group_members.setdefault(self.group_root(key), []).append(key)
        group_id = {root: link_group_for(members) for root, members in group_members.items()}
        identifiers: list[dict] = []
        persons: dict[int, dict] = {}
        for key, p in self.person_of.items():
            kind, _, value = key.partition(":")
            anchor = _anchor_key(p)
            pid = person_id_for(anchor)
            group = group_id[self.group_root(key)]
            identifiers.append({
                "id_key": key, "id_kind": kind, "id_value": value, "person_id": pid, "link_group": group,
                "first_seen_at": self.first_seen[key][0], "first_event_id": self.first_seen[key][1],
            })
            if id(p) not in persons:
                counts = p.counts()
                persons[id(p)] = {
                    "person_id": pid, "anchor_id_key": anchor, "identifier_count": sum(counts.values()),
                    **{f"{k}_count": counts[k] for k in KIND_PRIORITY},
                    "first_seen_at": p.anchor[0], "link_group": group,
                }
        observations = []
        for obs in obs_list:
            first_key = id_key(*observation_ids(obs)[0])
            observations.append({**obs, "link_group": group_id[self.group_root(first_key)]})
        for m in self.merges:
            m["link_group"] = group_id[self.group_root(m["person_anchor"])]
            m["merge_key"] = "m_" + _digest(f"{m['observation_key']}|{m['merged_anchor']}", 24)
        identifiers.sort(key=lambda r: r["id_key"])
        return StitchResult(observations, identifiers, sorted(persons.values(), key=lambda r: r["person_id"]),
                            self.merges)


def _anchor_key(p: _Person) -> str:
    _, rank, value = p.anchor
    return id_key(KIND_PRIORITY[rank], value)
