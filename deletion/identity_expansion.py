# ruff: noqa: S608 - every interpolated name is a checked identifier or a constant; values are bound
"""Identity expansion: from the identifiers a deletion ticket names to every identifier of the same
person(s), through the identity graph (``IDENTITY.IDENTIFIERS``, ``PERSONS``, ``OBSERVATIONS``), with the
platforms and sources each was seen on (``CANONICAL.EVENTS``) and how it was linked.

An e-mail address given in clear is reached by its ``email_sha256`` (the warehouse never stores the
address); both are listed, because raw payloads (quarantine) may hold the address itself.

An expansion is **held** for a second officer's review when it reaches an unusually large group: a device
or anonymous id seen with more people or accounts than ``shared_id_people`` (a shared tablet, a kiosk), a
person with more identifiers than ``person_identifiers``, or a given value that is a default
(``warehouse.modeling.identity.BLOCKED_VALUES`` or the configured blocklist). Erasing by such an id would
remove other people's events too, so nobody may confirm it alone.

``expansion_build`` is pure (rows in, ``Expansion`` out); ``expand_identifiers`` reads the warehouse.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from deletion.erasure_types import (
    Expansion,
    Identifier,
    IdentifierKind,
    LinkedIdentifier,
    email_sha256,
)
from warehouse.modeling.identity import KIND_RANK, OBSERVATION_FIELDS, is_blocked

#: identifier kind -> its column in CANONICAL.EVENTS / IDENTITY.OBSERVATIONS
ID_COLUMNS: dict[IdentifierKind, str] = {
    IdentifierKind.EMAIL_SHA256: "EMAIL_SHA256",
    IdentifierKind.PLATFORM_USER_ID: "PLATFORM_USER_ID",
    IdentifierKind.DEVICE_ID: "DEVICE_ID",
    IdentifierKind.ANONYMOUS_ID: "ANONYMOUS_ID",
}
#: kinds that name an account (one person by construction); the others can be shared
ACCOUNT_KINDS = frozenset({IdentifierKind.EMAIL_SHA256, IdentifierKind.PLATFORM_USER_ID})
SHAREABLE_KINDS = frozenset({IdentifierKind.DEVICE_ID, IdentifierKind.ANONYMOUS_ID})


@dataclasses.dataclass(frozen=True)
class HoldLimits:
    """When an expansion needs a second officer (settings ``DELETION_HOLD_*``, docs/privacy.md)."""

    shared_id_people: int = 1
    person_identifiers: int = 25
    blocklist: frozenset[str] = frozenset()


def graph_identifiers(given: Sequence[Identifier]) -> tuple[Identifier, ...]:
    """The given identifiers as the graph knows them: an e-mail address becomes its SHA-256 (both kept)."""
    out: list[Identifier] = []
    for ident in given:
        if ident.kind == IdentifierKind.EMAIL:
            out.append(Identifier(IdentifierKind.EMAIL_SHA256, email_sha256(ident.value)))
        out.append(ident)
    return tuple(dict.fromkeys(out))


def _is_default(value: str, limits: HoldLimits) -> bool:
    return is_blocked(value) or value.strip().lower() in limits.blocklist


def _observation_keys(row: Mapping[str, Any]) -> list[str]:
    keys = []
    for field, kind in OBSERVATION_FIELDS:
        value = row.get(field)
        if value and not is_blocked(value):
            keys.append(f"{kind}:{value}")
    return keys


def _how(key: str, members: set[str], observations: Sequence[Mapping[str, Any]]) -> str:
    """The earliest observation that puts ``key`` together with another identifier of the expansion."""
    best: tuple[Any, str, str] | None = None
    for obs in observations:
        keys = _observation_keys(obs)
        if key in keys and any(k != key and k in members for k in keys):
            candidate = (obs.get("first_seen_at"), str(obs.get("first_event_id") or ""), str(obs.get("rule") or ""))
            if best is None or (candidate[0], candidate[1]) < (best[0], best[1]):
                best = candidate
    if best is None:
        return "same person in the identity graph"
    _, event_id, rule = best
    if rule == "identified":
        return f"identified (user.identified event {event_id})"
    return f"co_occurrence on event {event_id}"


def _group_size(key: str, kind: IdentifierKind, own_person: str, observations: Sequence[Mapping[str, Any]],
                person_of: Mapping[str, str]) -> int:
    """How many people or accounts a shareable id was seen with (1 for an account id: it has one person)."""
    if kind not in SHAREABLE_KINDS:
        return 1
    people = {own_person} if own_person else set()
    accounts: dict[str, set[str]] = {"email_sha256": set(), "platform_user_id": set()}
    for obs in observations:
        keys = _observation_keys(obs)
        if key not in keys:
            continue
        for other in keys:
            if other in person_of:
                people.add(person_of[other])
            other_kind, _, value = other.partition(":")
            if other_kind in accounts:
                accounts[other_kind].add(value)
    return max(1, len(people), *(len(v) for v in accounts.values()))


def expansion_build(
    given: Sequence[Identifier], *, identifier_rows: Iterable[Mapping[str, Any]],
    person_rows: Iterable[Mapping[str, Any]], observation_rows: Sequence[Mapping[str, Any]],
    observed_person_of: Mapping[str, str], seen_on: Mapping[str, tuple[Iterable[str], Iterable[str]]],
    limits: HoldLimits,
) -> Expansion:
    """The expansion of ``given`` (pure).

    ``identifier_rows``: IDENTITY.IDENTIFIERS rows (lower-case keys) of the persons the given ids belong
    to; ``person_rows``: their IDENTITY.PERSONS rows; ``observation_rows``: IDENTITY.OBSERVATIONS rows
    holding any of those identifiers; ``observed_person_of``: id_key -> person of every identifier in
    those observations; ``seen_on``: id_key -> (platforms, source ids) from CANONICAL.EVENTS."""
    wanted = graph_identifiers(given)
    given_keys = {i.id_key for i in wanted}
    rows = {r["id_key"]: r for r in identifier_rows}
    members = set(rows) | given_keys
    held: list[str] = []
    linked: list[LinkedIdentifier] = []
    for key in sorted(members, key=lambda k: (k not in given_keys, KIND_RANK.get(k.partition(":")[0], 9), k)):
        kind_text, _, value = key.partition(":")
        kind = IdentifierKind(kind_text)
        row = rows.get(key)
        person = str(row["person_id"]) if row else ""
        platforms, sources = seen_on.get(key, ((), ()))
        is_given = key in given_keys
        if is_given:
            how = "given" if kind != IdentifierKind.EMAIL_SHA256 or key in {i.id_key for i in given} else \
                "given (as an e-mail address, matched by its SHA-256)"
        else:
            how = _how(key, members, observation_rows)
        size = _group_size(key, kind, person, observation_rows, observed_person_of)
        if kind != IdentifierKind.EMAIL and _is_default(value, limits):
            held.append(f"{kind.value} {value!r} is a default value that identifies nobody: erasing by it would "
                        f"remove other people's events")
        if kind in SHAREABLE_KINDS and size > limits.shared_id_people:
            held.append(f"{kind.value} {value!r} is shared: seen with {size} people or accounts (more than "
                        f"{limits.shared_id_people}); its events may be other people's")
        linked.append(LinkedIdentifier(
            identifier=Identifier(kind, value), person_id=person, platforms=tuple(sorted(set(platforms))),
            sources=tuple(sorted(set(sources))), how=how, given=is_given, group_size=size))
    for person in person_rows:
        count = int(person.get("identifier_count") or 0)
        if count > limits.person_identifiers:
            held.append(f"person {person['person_id']} has {count} identifiers (more than "
                        f"{limits.person_identifiers}): the graph may have joined several people")
    return Expansion(linked=tuple(linked), held_reasons=tuple(dict.fromkeys(held)))


# --------------------------------------------------------------------------------------------
# the warehouse side
# --------------------------------------------------------------------------------------------

def _json_list(values: Iterable[str]) -> str:
    return orjson.dumps(sorted(set(values))).decode()


def in_list(name: str) -> str:
    """SQL: the values of the bound JSON array ``name`` (one bind, any length)."""
    return f"(SELECT v.value::VARCHAR FROM TABLE(FLATTEN(INPUT => PARSE_JSON(%({name})s))) v)"


def _fetch(cur: Any, sql: str, params: Mapping[str, Any]) -> list[dict]:
    from warehouse.load import execute_bound

    execute_bound(cur, sql, params)
    names = [d.name.lower() for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def graph_read(conn: Any, given: Sequence[Identifier]) -> dict[str, Any]:
    """The rows ``expansion_build`` needs, read from the warehouse of ``conn``."""
    from warehouse.connection import warehouse_errors
    from warehouse.ddl import check_identifier

    db = check_identifier(conn.database)
    keys = [i.id_key for i in graph_identifiers(given) if i.kind != IdentifierKind.EMAIL]
    with warehouse_errors():
        cur = conn.cursor()
        try:
            persons = {r["person_id"] for r in _fetch(
                cur, f"SELECT PERSON_ID FROM {db}.IDENTITY.IDENTIFIERS WHERE ID_KEY IN {in_list('keys')}",
                {"keys": _json_list(keys)})}
            identifier_rows = _fetch(
                cur, f"SELECT ID_KEY, ID_KIND, ID_VALUE, PERSON_ID FROM {db}.IDENTITY.IDENTIFIERS "
                     f"WHERE PERSON_ID IN {in_list('persons')}", {"persons": _json_list(persons)})
            person_rows = _fetch(
                cur, f"SELECT PERSON_ID, IDENTIFIER_COUNT FROM {db}.IDENTITY.PERSONS WHERE PERSON_ID IN "
                     f"{in_list('persons')}", {"persons": _json_list(persons)})
            all_keys = {r["id_key"] for r in identifier_rows} | set(keys)
            by_kind = _values_by_kind(all_keys)
            obs_where = " OR ".join(
                [f"{col} IN {in_list(kind.value)}" for kind, col in ID_COLUMNS.items()]
                + [f"PREVIOUS_ANONYMOUS_ID IN {in_list('anonymous_id')}"])
            observation_rows = _fetch(
                cur, f"SELECT ANONYMOUS_ID, PLATFORM_USER_ID, DEVICE_ID, EMAIL_SHA256, PREVIOUS_ANONYMOUS_ID, RULE, "
                     f"FIRST_SEEN_AT, FIRST_EVENT_ID FROM {db}.IDENTITY.OBSERVATIONS WHERE {obs_where}", by_kind)
            observed = {k for o in observation_rows for k in _observation_keys(o)}
            observed_person_of = {r["id_key"]: r["person_id"] for r in _fetch(
                cur, f"SELECT ID_KEY, PERSON_ID FROM {db}.IDENTITY.IDENTIFIERS WHERE ID_KEY IN {in_list('keys')}",
                {"keys": _json_list(observed)})}
            seen_rows = _fetch(cur, " UNION ALL ".join(
                f"SELECT '{kind.value}:' || {col} AS ID_KEY, PLATFORM, SOURCE_ID FROM {db}.CANONICAL.EVENTS "
                f"WHERE {col} IN {in_list(kind.value)} GROUP BY {col}, PLATFORM, SOURCE_ID"
                for kind, col in ID_COLUMNS.items()), by_kind)
        finally:
            cur.close()
    seen_on: dict[str, tuple[set[str], set[str]]] = {}
    for r in seen_rows:
        platforms, sources = seen_on.setdefault(r["id_key"], (set(), set()))
        if r["platform"]:
            platforms.add(r["platform"])
        if r["source_id"]:
            sources.add(r["source_id"])
    return {"identifier_rows": identifier_rows, "person_rows": person_rows, "observation_rows": observation_rows,
            "observed_person_of": observed_person_of, "seen_on": seen_on}


def _values_by_kind(keys: Iterable[str]) -> dict[str, str]:
    values: dict[str, list[str]] = {kind.value: [] for kind in ID_COLUMNS}
    for key in keys:
        kind, _, value = key.partition(":")
        if kind in values:
            values[kind].append(value)
    return {kind: _json_list(v) for kind, v in values.items()}


def hold_limits_from_settings() -> HoldLimits:
    from django.conf import settings

    return HoldLimits(
        shared_id_people=int(getattr(settings, "DELETION_HOLD_SHARED_ID_PEOPLE", 1)),
        person_identifiers=int(getattr(settings, "DELETION_HOLD_PERSON_IDENTIFIERS", 25)),
        blocklist=frozenset(v.strip().lower() for v in getattr(settings, "DELETION_HOLD_BLOCKLIST", ())),
    )


def expand_identifiers(identifiers: Sequence[Identifier], *, conn: Any = None,
                       limits: HoldLimits | None = None) -> Expansion:
    """Every identifier linked to ``identifiers`` through the identity graph, with where each was seen and
    how it was linked; held (``held_reasons``) when the group is unusually large. Opens a warehouse
    connection unless ``conn`` is given; raises ``WarehouseError`` when the warehouse fails."""
    from warehouse.analytics_ddl import analytics_ensure

    limits = limits or hold_limits_from_settings()
    if conn is None:
        from warehouse.connection import warehouse_connection

        with warehouse_connection() as own:
            analytics_ensure(own)   # before the first models run the graph's tables do not exist yet: empty
            return expansion_build(identifiers, **graph_read(own, identifiers), limits=limits)
    analytics_ensure(conn)
    return expansion_build(identifiers, **graph_read(conn, identifiers), limits=limits)
