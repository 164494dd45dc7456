"""The synthetic traffic generator: a pool of simulated people acting the demo sources' conversations.

Pure: the generator and the ingest pipeline run in process; no database, stream or warehouse.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict

import pytest

from contracts.presets import DEMO_SOURCES, preset_load
from ingest_workers.envelope import envelope_encode
from ingest_workers.pipeline import ContractIndex, RawRecord, process_batch
from ingest_workers.traffic import TrafficGenerator, templates_from_preset

NOW = 1_772_400_000_000_000
SEED = 2026
PRESETS = [preset_load(name) for name in DEMO_SOURCES]
TEMPLATES = [t for preset in PRESETS for t in templates_from_preset(preset)]

#: where each source carries the person's shared account id and their anonymous id for that source
ACCOUNT_PATHS = {"web-chat": "userId", "ios-app": "account_id", "android-app": "user.accountId",
                 "llm-gateway": "origin.user_id"}
ANONYMOUS_PATHS = {"web-chat": "anonymousId", "ios-app": "install_id", "android-app": "user.anonymousId",
                   "llm-gateway": "origin.anonymous_id"}
DEVICE_PATHS = {"ios-app": "device.idfv", "android-app": "deviceInfo.appSetId",
                "voice-assistant": "context.System.device.deviceId"}
SESSION_PATHS = {"web-chat": "sessionId", "ios-app": "session.id", "android-app": "sessionId"}
#: the client platforms whose people sign in with an account (the gateway acts for them, it is no platform)
ACCOUNT_PLATFORM_SOURCES = ("web-chat", "ios-app", "android-app")
#: sign-in events (mapped to user.identified): source -> (event-name path, event name, e-mail path)
SIGN_INS = {"ios-app": ("event", "user_login", "login.email"), "android-app": ("name", "sign_in", "signIn.email")}
PERSON_EMAIL = re.compile(r"person\d+@example\.com")


def get(payload, path: str):
    node = payload
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def sample_identifiers() -> set[str]:
    """Every identifier value the preset samples carry (the generator must replace all of them)."""
    values = set()
    for template in TEMPLATES:
        for sample in template.samples:
            for _kind, path in template.identity_paths:
                value = get(sample, path)
                if isinstance(value, str):
                    values.add(value)
    return values


def generate(count: int = 5000, **options) -> list:
    return list(TrafficGenerator(TEMPLATES, seed=options.pop("seed", SEED), **options)
                .records(count, now_micros=NOW))


@pytest.fixture(scope="module")
def records() -> list:
    return generate()


@pytest.fixture(scope="module")
def new_records(records) -> list:
    return [r for r in records if r.kind == "new"]


def accounts_by_source(new_records) -> dict[str, set[str]]:
    """account id -> the sources it was seen on."""
    seen: dict[str, set[str]] = defaultdict(set)
    for record in new_records:
        account = get(record.payload, ACCOUNT_PATHS.get(record.source, "-"))
        if account:
            seen[account].add(record.source)
    return seen


def test_identity_paths_come_from_the_mapping():
    paths = {f"{t.source}.{t.contract}": set(t.identity_paths) for t in TEMPLATES}
    assert paths == {
        "web-chat.chat_event": {("anonymous_id", "anonymousId"), ("platform_user_id", "userId"),
                                ("email", "traits.email")},
        "ios-app.app_event": {("anonymous_id", "install_id"), ("platform_user_id", "account_id"),
                              ("device_id", "device.idfv"), ("email", "login.email")},
        # the device id is the first option the samples carry (appSetId before androidId)
        "android-app.app_event": {("anonymous_id", "user.anonymousId"), ("platform_user_id", "user.accountId"),
                                  ("device_id", "deviceInfo.appSetId"), ("email", "signIn.email")},
        # "{team_id}:{event.user}": the user is the person's, the workspace is not
        "slack-bot.message_event": {("platform_user_id", "event.user")},
        # the request repeats the user id under context.System, where the mapping does not look
        "voice-assistant.alexa_request": {("platform_user_id", "session.user.userId"),
                                          ("platform_user_id", "context.System.user.userId"),
                                          ("device_id", "context.System.device.deviceId")},
        "llm-gateway.llm_call": {("anonymous_id", "origin.anonymous_id"), ("platform_user_id", "origin.user_id")},
        "llm-gateway.tool_call": {("anonymous_id", "origin.anonymous_id"), ("platform_user_id", "origin.user_id")},
    }


def test_many_people_act_and_none_is_a_sample(new_records):
    accounts = accounts_by_source(new_records)
    assert len(accounts) >= 100
    assert all(re.fullmatch(r"cust_\d{7}", account) for account in accounts)
    slack_users = {get(r.payload, "event.user") for r in new_records if r.source == "slack-bot"} - {None}
    alexa_users = {get(r.payload, "session.user.userId") for r in new_records if r.source == "voice-assistant"}
    assert len(slack_users) >= 10 and all(re.fullmatch(r"U\d{10}", user) for user in slack_users)
    assert len(alexa_users) >= 10 and all(user.startswith("amzn1.ask.account.") for user in alexa_users)
    leftovers = sample_identifiers()
    for record in new_records:
        template = next(t for t in TEMPLATES if (t.source, t.contract) == (record.source, record.contract))
        carried = {get(record.payload, path) for _kind, path in template.identity_paths}
        assert not carried & leftovers, record.payload


def test_some_people_are_much_more_active_than_others(new_records):
    conversations: dict[str, set[str]] = defaultdict(set)
    for record in new_records:
        if record.source in SESSION_PATHS:
            conversations[get(record.payload, ACCOUNT_PATHS[record.source])].add(
                get(record.payload, SESSION_PATHS[record.source]))
    sizes = sorted((len(sessions) for sessions in conversations.values()), reverse=True)
    top_tenth = sum(sizes[: len(sizes) // 10])
    assert top_tenth >= 0.25 * sum(sizes)
    assert sizes.count(1) >= len(sizes) // 4      # and a long tail seen once


def test_a_minority_of_people_use_several_platforms(new_records):
    platforms = {account: sources & set(ACCOUNT_PLATFORM_SOURCES)
                 for account, sources in accounts_by_source(new_records).items()}
    several = [account for account, sources in platforms.items() if len(sources) >= 2]
    assert len(several) >= 3
    assert len(several) < len(platforms) / 4


def test_a_person_keeps_their_anonymous_and_device_ids_per_source(new_records):
    anonymous: dict[tuple[str, str], set[str]] = defaultdict(set)
    devices: dict[tuple[str, str], set[str]] = defaultdict(set)
    sessions: dict[tuple[str, str], set[str]] = defaultdict(set)
    owner: dict[tuple[str, str], set[str]] = defaultdict(set)
    for record in new_records:
        account = get(record.payload, ACCOUNT_PATHS.get(record.source, "-"))
        if not account:
            continue
        key = (record.source, account)
        anonymous_id = get(record.payload, ANONYMOUS_PATHS[record.source])
        anonymous[key].add(anonymous_id)
        owner[(record.source, anonymous_id)].add(account)
        if record.source in DEVICE_PATHS:
            devices[key].add(get(record.payload, DEVICE_PATHS[record.source]))
        if record.source in SESSION_PATHS:
            sessions[key].add(get(record.payload, SESSION_PATHS[record.source]))
    assert all(len(ids) == 1 for ids in anonymous.values())
    assert all(len(ids) == 1 for ids in devices.values())
    assert all(len(accounts) == 1 for accounts in owner.values())     # and nobody else has them
    assert sum(1 for s in sessions.values() if len(s) >= 2) >= 20     # over several conversations
    # different sources give the same person different anonymous ids
    web_and_gateway = [(anonymous[("web-chat", a)], anonymous[("llm-gateway", a)])
                       for (source, a) in list(anonymous) if source == "web-chat" and ("llm-gateway", a) in anonymous]
    assert web_and_gateway and all(web != gateway for web, gateway in web_and_gateway)


def test_sign_ins_carry_the_persons_email(new_records):
    emails: dict[str, set[str]] = defaultdict(set)
    signed_in_on: dict[str, set[str]] = defaultdict(set)
    for record in new_records:
        if record.source in SIGN_INS:
            name_path, name, email_path = SIGN_INS[record.source]
            if get(record.payload, name_path) == name:
                account = get(record.payload, ACCOUNT_PATHS[record.source])
                email = get(record.payload, email_path)
                assert PERSON_EMAIL.fullmatch(email), email
                emails[account].add(email)
                signed_in_on[account].add(record.source)
    assert len(emails) >= 30
    assert all(len(addresses) == 1 for addresses in emails.values())
    assert len({address for addresses in emails.values() for address in addresses}) == len(emails)
    # a person signing in on iOS and on Android gives both the same e-mail: that is what stitches them
    assert any(len(sources) == 2 for sources in signed_in_on.values())


def test_a_voice_request_carries_one_user_and_slack_keeps_its_workspace(new_records):
    for record in new_records:
        if record.source == "voice-assistant":
            assert get(record.payload, "session.user.userId") == get(record.payload, "context.System.user.userId")
        if record.source == "slack-bot":
            assert get(record.payload, "team_id") == "T061EG9R6"
            if get(record.payload, "event.bot_id"):
                assert get(record.payload, "event.user") is None
    # one user per voice session (a session is one conversation, acted by one person)
    users = defaultdict(set)
    for record in new_records:
        if record.source == "voice-assistant":
            users[get(record.payload, "session.sessionId")].add(get(record.payload, "session.user.userId"))
    assert all(len(u) == 1 for u in users.values())


def test_new_people_keep_arriving():
    def accounts_in(records):
        return [get(r.payload, ACCOUNT_PATHS[r.source]) for r in records
                if r.kind == "new" and r.source in ACCOUNT_PATHS and get(r.payload, ACCOUNT_PATHS[r.source])]

    closed = accounts_in(generate(people=20, new_person_fraction=0.0))
    assert len(set(closed)) <= 20
    growing = accounts_in(generate(people=20, new_person_fraction=0.05))
    assert len(set(growing)) > 30
    cut = len(growing) * 4 // 5
    assert set(growing[cut:]) - set(growing[:cut])    # still someone new in the last fifth of the run


def test_the_pool_needs_someone():
    with pytest.raises(ValueError):
        TrafficGenerator(TEMPLATES, people=0)


def test_same_seed_gives_the_same_records(records):
    assert generate() == records
    other = accounts_by_source([r for r in generate(seed=SEED + 1) if r.kind == "new"])
    assert set(other) != set(accounts_by_source([r for r in records if r.kind == "new"]))


def test_kinds_and_resends_are_unchanged(records):
    kinds = Counter(r.kind for r in records)
    assert set(kinds) == {"new", "duplicate", "malformed"}
    assert kinds["duplicate"] >= 100
    payloads = {(r.source, r.contract, id(r.payload)) for r in records if r.kind == "new"}
    assert all((r.source, r.contract, id(r.payload)) in payloads for r in records if r.kind == "duplicate")


# --------------------------------------------------------------------------------------------
# through the pipeline
# --------------------------------------------------------------------------------------------

def source_input(preset: dict) -> dict:
    """ContractIndex.build input for a preset source, every version approved."""
    return {"source_id": f"src-{preset['source']}", "name": preset["source"], "platform": preset["platform"],
            "product": preset.get("product"), "active": True,
            "contracts": [{"subject": c["subject"], "event": c["subject"].split(".", 1)[1],
                           "versions": [{"version": n, "schema": v["schema"], "mapping": v["mapping"]}
                                        for n, v in enumerate(c["versions"], start=1)]}
                          for c in preset["contracts"]]}


def run_pipeline(records) -> list:
    index = ContractIndex.build([source_input(preset) for preset in PRESETS])
    results = []
    for start in range(0, len(records), 500):
        batch = records[start:start + 500]
        raw = [RawRecord("shardId-000000000000", str(start + i),
                         r.payload if isinstance(r.payload, bytes) else
                         envelope_encode(source=r.source, payload=r.payload, received_at=NOW, request_id="req",
                                         channel="batch", contract=r.contract), NOW)
               for i, r in enumerate(batch)]
        results.append(process_batch(raw, index, stream="raw-events", batch_id=f"b{start}",
                                     archive_locations=[("file:///archive", i) for i in range(len(raw))],
                                     now_micros=NOW))
    return results


def test_every_new_record_passes_the_pipeline(new_records):
    results = run_pipeline(new_records)
    assert [q.reason_code for r in results for q in r.quarantine] == []
    assert sum(r.skipped for r in results) == 0
    events = [e for r in results for e in r.events]
    assert len(events) >= len(new_records)
    identifiers = [e["identifiers"] for e in events]
    assert len({i["platform_user_id"] for i in identifiers if i["platform_user_id"]}) >= 100
    # the sign-ins' e-mails reach the canonical events hashed, one per person
    hashed = {i["email_sha256"] for i in identifiers if i["email_sha256"]}
    emails = {get(r.payload, SIGN_INS[r.source][2]) for r in new_records if r.source in SIGN_INS} - {None}
    assert hashed == {hashlib.sha256(e.encode()).hexdigest() for e in emails}


def test_malformed_records_are_still_quarantined(records):
    malformed = [r for r in records if r.kind == "malformed"]
    assert malformed
    results = run_pipeline(malformed)
    assert sum(len(r.quarantine) for r in results) == len(malformed)


# --------------------------------------------------------------------------------------------
# sessions: what the analytics models will make of the generated events
# --------------------------------------------------------------------------------------------

def generate_at_rate(count: int, *, rate: float = 40.0, batch: int = 20, start: int = NOW,
                     **options) -> tuple[list, dict[int, int]]:
    """What `generate_traffic` sends at `rate` records/s (the clock read once per batch), and when
    each record is sent (by id of the record)."""
    generator = TrafficGenerator(TEMPLATES, seed=SEED, **options)
    out, sent = [], {}
    for n in range(0, count, batch):
        now = start + int(n / rate * 1_000_000)
        for record in generator.records(batch, now_micros=now):
            out.append(record)
            sent[id(record)] = now
    return out, sent


def sessions_of(records) -> dict[str, list[dict]]:
    """The canonical events of the records by session key (the session id, or conversation:<id>)."""
    events = [e for r in run_pipeline([r for r in records if r.kind == "new"]) for e in r.events]
    by_key: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        key = e["session_id"] or (f"conversation:{e['conversation_id']}" if e["conversation_id"] else None)
        if key:
            by_key[key].append(e)
    return by_key


def test_no_generated_session_pauses_longer_than_its_platforms_inactivity_gap():
    from warehouse.modeling.sql import SESSION_GAP_S

    records, arrival = generate_at_rate(6000, late_fraction=0.05)
    sessions = sessions_of(records)
    assert len(sessions) > 300
    for key, events in sessions.items():
        times = sorted(e["event_time"] for e in events)
        gap_s = min(SESSION_GAP_S[e["platform"]] for e in events)
        longest = max((b - a for a, b in zip(times, times[1:], strict=False)), default=0) / 1_000_000
        assert longest <= gap_s, (key, longest, gap_s)
        assert (times[-1] - times[0]) / 1_000_000 < 3600, key        # a conversation, not a day
    late = [r for r in records if r.kind == "new" and r.event_time_micros < arrival[id(r)] - 30_000_000]
    assert late    # late events are still there: sent more than 30 s after their time, inside their session


def test_a_conversation_idle_while_the_clock_jumps_is_not_continued():
    generator = TrafficGenerator(TEMPLATES, seed=SEED)
    before = sessions_of(list(generator.records(400, now_micros=NOW)))
    after = sessions_of(list(generator.records(400, now_micros=NOW + 2 * 3600 * 1_000_000)))
    assert before and after and not set(before) & set(after)


def test_every_completed_tool_call_follows_a_started_one_with_its_id(new_records):
    # the platform's referential check (docs/quality.md): a tool_call.completed has a tool_call.started with the
    # same tool_call_id no later. Fresh ids on both phases failed it from the demo's first check cycle.
    events = [e for r in run_pipeline(new_records) for e in r.events]
    started: dict[str, list[str]] = defaultdict(list)
    for e in events:
        if e["event_type"] == "tool_call.started":
            started[e["attributes"]["tool_call_id"]].append(e["event_time"])
    completed = [e for e in events if e["event_type"] == "tool_call.completed"]
    assert len(completed) >= 20 and len(started) >= len(completed)
    orphans = [e["attributes"]["tool_call_id"] for e in completed
               if not any(t <= e["event_time"] for t in started.get(e["attributes"]["tool_call_id"], ()))]
    assert orphans == []
