"""Identity stitching rules (pure): merges, blocked values, limits, priority, stable ids, and
that re-stitching only the touched link groups gives what a full rebuild gives."""

from __future__ import annotations

import datetime as dt
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from warehouse.modeling.identity import (
    BLOCKED_VALUES,
    KIND_LIMITS,
    is_blocked,
    person_id_for,
    stitch,
)

T = dt.datetime(2026, 3, 1)


def obs(minute: int, event_id: str | None = None, rule: str = "co_occurrence", **ids) -> dict:
    return {**ids, "rule": rule, "first_seen_at": T + dt.timedelta(minutes=minute),
            "first_event_id": event_id or f"e{minute:04d}"}


def persons(result) -> dict[str, str]:
    return result.person_of()


def test_anonymous_visitor_who_signs_in_keeps_the_person_id_of_their_first_event():
    result = stitch([
        obs(0, anonymous_id="anon-1"),
        obs(5, "identify-1", "identified", anonymous_id="anon-1", platform_user_id="cust-1", email_sha256="E1"),
        obs(60, platform_user_id="cust-1", device_id="ios-dev-1"),
        obs(120, "identify-2", "identified", platform_user_id="T1:U1", email_sha256="E1"),
    ])
    people = persons(result)
    assert len(set(people.values())) == 1
    assert people["anonymous_id:anon-1"] == person_id_for("anonymous_id:anon-1")
    merged = [m for m in result.merges if m["decision"] == "merged"]
    assert {m["event_id"] for m in merged} == {"identify-1", "e0060", "identify-2"}
    assert all(m["reason"] is None for m in merged)
    [person] = result.persons
    assert person["identifier_count"] == 5 and person["platform_user_id_count"] == 2


def test_blocked_values_never_link_two_people():
    for value in ("0", "anonymous", "", "  NULL ", "-1", "undefined"):
        result = stitch([
            obs(0, platform_user_id="cust-1", device_id=value),
            obs(1, platform_user_id="cust-2", device_id=value),
        ])
        people = persons(result)
        assert people["platform_user_id:cust-1"] != people["platform_user_id:cust-2"], value
        assert not any(k.startswith("device_id:") for k in people), value
        assert result.merges == []
    assert is_blocked(None) and is_blocked(" Anonymous") and not is_blocked("anon-7")
    assert "0" in BLOCKED_VALUES


def test_a_merge_that_would_give_a_person_two_emails_is_refused_and_recorded():
    result = stitch([
        obs(0, "login-a", "identified", platform_user_id="cust-a", email_sha256="EA"),
        obs(1, "login-b", "identified", platform_user_id="cust-b", email_sha256="EB"),
        obs(2, "shared-tablet", device_id="tablet-1", platform_user_id="cust-a"),
        obs(3, "shared-tablet-2", device_id="tablet-1", platform_user_id="cust-b"),
    ])
    people = persons(result)
    assert people["email_sha256:EA"] != people["email_sha256:EB"]
    # the device went with the first account that claimed it; the second link is refused
    assert people["device_id:tablet-1"] == people["email_sha256:EA"]
    [refused] = [m for m in result.merges if m["decision"] == "refused"]
    assert refused["event_id"] == "shared-tablet-2"
    assert "email_sha256" in refused["reason"] and "limit 1" in refused["reason"]
    # refused or not, both people are in one link group: they are re-stitched together
    assert len({r["link_group"] for r in result.identifiers}) == 1


def test_kind_limit_caps_how_many_accounts_one_device_can_pull_together():
    limit = KIND_LIMITS["platform_user_id"]
    result = stitch([obs(i, device_id="kiosk", platform_user_id=f"cust-{i}") for i in range(limit + 2)])
    people = persons(result)
    kiosk_person = people["device_id:kiosk"]
    joined = [k for k, p in people.items() if k.startswith("platform_user_id:") and p == kiosk_person]
    assert len(joined) == limit
    assert sum(m["decision"] == "refused" for m in result.merges) == 2


def test_priority_decides_which_person_an_identifier_conflict_keeps():
    # the e-mail outranks the device: the observation's e-mail person absorbs, the other is refused
    result = stitch([
        obs(0, email_sha256="E1", platform_user_id="c1"),
        obs(1, email_sha256="E2", platform_user_id="c2"),
        obs(2, "conflict", email_sha256="E2", device_id="d9", platform_user_id="c1"),
    ])
    people = persons(result)
    assert people["device_id:d9"] == people["email_sha256:E2"]
    assert people["platform_user_id:c1"] == people["email_sha256:E1"] != people["email_sha256:E2"]


def test_the_same_identifier_set_seen_twice_is_one_observation_with_the_earliest_sighting():
    result = stitch([
        obs(9, "later", anonymous_id="a", device_id="d"),
        obs(3, "earlier", anonymous_id="a", device_id="d"),
        obs(5, "identify", "identified", anonymous_id="a", device_id="d"),
    ])
    [observation] = result.observations
    assert observation["first_event_id"] == "earlier" and observation["rule"] == "identified"


# --- order independence and incremental re-stitching ---------------------------------------

ID_POOL = {
    "email_sha256": [f"E{i}" for i in range(4)],
    "platform_user_id": [f"c{i}" for i in range(6)],
    "device_id": [f"d{i}" for i in range(6)] + ["0"],
    "anonymous_id": [f"a{i}" for i in range(10)] + ["anonymous"],
}


@st.composite
def observation_sets(draw) -> list[dict]:
    n = draw(st.integers(1, 25))
    out = []
    for i in range(n):
        ids = {}
        for kind, pool in ID_POOL.items():
            if draw(st.booleans()):
                ids[kind] = draw(st.sampled_from(pool))
        if not ids:
            ids["anonymous_id"] = draw(st.sampled_from(ID_POOL["anonymous_id"]))
        out.append(obs(draw(st.integers(0, 40)), f"e{i:03d}", draw(st.sampled_from(["identified", "co_occurrence"])),
                       **ids))
    return out


@settings(max_examples=200, deadline=None)
@given(observation_sets(), st.randoms(use_true_random=False))
def test_result_does_not_depend_on_the_order_observations_arrive_in(observations, rnd: random.Random):
    shuffled = observations[:]
    rnd.shuffle(shuffled)
    assert stitch(shuffled) == stitch(observations)


@settings(max_examples=200, deadline=None)
@given(observation_sets(), st.integers(0, 25))
def test_restitching_only_the_touched_groups_equals_a_full_rebuild(observations, cut):
    """What the runner does: stitch the first batch, then for a second batch re-stitch only the
    link groups its identifiers touch (old observations of those groups + the new ones)."""
    first, second = observations[:cut], observations[cut:]
    before = stitch(first)
    group_of = {r["id_key"]: r["link_group"] for r in before.identifiers}
    touched_ids = {f"{kind}:{o[kind]}" for o in second for kind in ID_POOL if o.get(kind)}
    touched = {group_of[k] for k in touched_ids if k in group_of}
    kept = [r for r in before.identifiers if r["link_group"] not in touched]
    redo = [o for o in before.observations if o["link_group"] in touched]
    after = stitch([*redo, *second])
    incremental = sorted([*kept, *after.identifiers], key=lambda r: r["id_key"])
    assert incremental == stitch(observations).identifiers
