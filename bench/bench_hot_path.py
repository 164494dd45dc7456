"""Throughput of the ingest hot path on one core, against bare JSON parsing of the same records.

    .venv/bin/python bench/bench_hot_path.py            # table
    .venv/bin/python bench/bench_hot_path.py --json     # also a JSON line last (bench/run.py reads it)
    .venv/bin/python bench/bench_hot_path.py --records 2000 --passes 1   # a quick run (the tests' smoke run)

Records are raw envelopes (ingest_workers/envelope.py) around realistic payloads from all six demo
sources (contracts/presets/*.json), 1-4 KB each: message text, feedback comments and tool results
are padded with prose to a size drawn per record. The mix follows production: mostly messages
(user messages from the SDKs, Slack and voice; assistant messages as LLM-gateway calls), a few
session, conversation, feedback, identify and tool-call events, 1% redelivered duplicates and
0.2% payloads that break their contract. Every record has its own idempotency key.

Measured in ONE process on ONE core (the process is pinned to one CPU where the OS allows):
* ``hot_path_events_per_s``: raw records per second through ``process_batch`` (decode → route →
  validate → normalize → lineage → dedup count → serialize) on batches of ``BATCH_RECORDS`` (200,
  the consumer's), plus ``landing_json()`` of each batch, each batch's result dropped before the next
  (as the consumer drops each batch's events once serialized);
* ``parse_only_events_per_s``: raw records per second through a bare ``orjson.loads``;
* ``hot_path_vs_parse``: their ratio.
Both take the median of several timed passes after a warm-up pass. Goals: >= 50,000 events/s and
a ratio >= 0.20.

Per-subject encryption of the raw archive (deletion.subject_keys, ingest_workers.archive_crypto), in
the same interleaved passes: ``archive_clear`` is the hot path plus each record's archive line in
clear (what the consumer does with ARCHIVE_ENCRYPTION=off), ``archive_encrypted`` the hot path plus
each record's subjects, the suppression check (against a non-empty list; in the steady state a
combination of subjects already sealed with since the last erasure is a cache hit, not hashed again:
``SubjectKeyring.suppressed_of``) and its encrypted line, in the steady state of a worker whose subject
keys are cached; as in
the consumer, the pipeline runs a batch at a time and the lines a unit of ten batches at a time.
``encryption_cost`` = encrypted / clear CPU time - 1, paired per round (goal: <= 0.20; the
wall-clock figure beside it); ``hot_path_vs_parse_encrypted`` is
the headline ratio with encryption on. ``archive_bytes_per_record_*``: zstd-compressed line bytes.
"""

from __future__ import annotations

import copy
import gc
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from contracts.presets import preset_load  # noqa: E402
from ingest_workers.envelope import envelope_encode  # noqa: E402
from ingest_workers.pipeline import BATCH_RECORDS, ContractIndex, RawRecord, process_batch  # noqa: E402

GOAL_EVENTS_PER_S = 50_000
GOAL_RATIO = 0.20
BATCH = BATCH_RECORDS  # the consumer's batch (services.BATCH_MAX_RECORDS)
UNIT_BATCHES = 10  # batches per consumer unit (services.UNIT_MAX_RECORDS, 2,000 records)
RECEIVED_AT = 1_772_400_000_000_000

# (source, contract event, version index, sample index, weight, text paths to pad, key paths)
# weights: share of production traffic (mostly messages)
MIX = [
    ("web-chat", "chat_event", 1, 1, 14, ["message.text"], ["messageId"]),  # user message (v2 SDK)
    ("web-chat", "chat_event", 1, 2, 10, ["message.text"], ["messageId"]),  # assistant message
    ("web-chat", "chat_event", 0, 1, 5, ["message.text"], ["messageId"]),  # old SDK (v1)
    ("web-chat", "chat_event", 1, 0, 2, [], ["messageId"]),  # chat_opened (2 events)
    ("web-chat", "chat_event", 1, 3, 1, ["feedback.comment"], ["messageId"]),  # feedback
    ("web-chat", "chat_event", 0, 4, 1, [], ["messageId"]),  # chat_closed (2 events)
    ("web-chat", "chat_event", 0, 5, 1, [], ["messageId"]),  # identify
    ("ios-app", "app_event", 0, 1, 6, ["chat.text"], ["event_uuid"]),
    ("ios-app", "app_event", 0, 2, 5, ["chat.text"], ["event_uuid"]),
    ("ios-app", "app_event", 0, 0, 1, [], ["event_uuid"]),
    ("ios-app", "app_event", 0, 3, 1, ["feedback.comment"], ["event_uuid"]),
    ("android-app", "app_event", 0, 1, 5, ["message.body"], ["id"]),
    ("android-app", "app_event", 0, 2, 4, ["message.body"], ["id"]),
    ("android-app", "app_event", 0, 0, 1, [], ["id"]),
    ("android-app", "app_event", 0, 3, 1, ["rating.reason"], ["id"]),
    ("slack-bot", "message_event", 0, 0, 4, ["event.text"], ["event_id"]),
    ("slack-bot", "message_event", 0, 1, 2, ["event.text"], ["event_id"]),
    ("slack-bot", "message_event", 0, 3, 2, ["event.text"], ["event_id"]),  # the bot's own answer
    ("voice-assistant", "alexa_request", 0, 1, 3, [], ["request.requestId"]),
    ("voice-assistant", "alexa_request", 0, 0, 1, [], ["request.requestId"]),
    ("llm-gateway", "llm_call", 1, 0, 12, ["response.message.content"], ["call_id"]),
    ("llm-gateway", "llm_call", 0, 1, 8, ["response.message.content"], ["call_id"]),
    ("llm-gateway", "tool_call", 0, 0, 3, [], ["call_id"]),
    ("llm-gateway", "tool_call", 0, 1, 3, ["result"], ["call_id"]),
]

PROSE = (
    "Thanks for waiting. I checked the order history and the tent shipped without its pole set, "
    "so I have opened a replacement request; the carrier should pick it up tomorrow morning and you "
    "will get a tracking link by e-mail. If the trip is this weekend, the store in Leeds has the same "
    "pole set in stock and can hold it for you until Saturday evening. Is there anything else about "
    "the order, the return label or the sleeping bag sizing I can help with today? "
)

SENTENCE_STARTS = [0] + [i + 2 for i, c in enumerate(PROSE) if c in ".?;" and i + 2 < len(PROSE)]


def _get(d: dict, path: str):
    for part in path.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def _set(d: dict, path: str, value) -> None:
    *head, last = path.split(".")
    for part in head:
        d = d[part]
    d[last] = value


def _target_size(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.55:
        return rng.randint(1000, 2000)
    if r < 0.85:
        return rng.randint(2000, 3000)
    return rng.randint(3000, 4096)


def build_records(n: int, seed: int = 7) -> tuple[list[RawRecord], list[dict]]:
    """n raw records (and the index input) with the production-like mix."""
    rng = random.Random(seed)
    presets = {name: preset_load(name) for name in {m[0] for m in MIX}}
    weights = [m[4] for m in MIX]
    out: list[RawRecord] = []
    recent: list[bytes] = []
    for i in range(n):
        source, event, vi, si, _, text_paths, key_paths = rng.choices(MIX, weights)[0]
        preset = presets[source]
        contract = next(c for c in preset["contracts"] if c["subject"] == f"{source}.{event}")
        payload = copy.deepcopy(contract["versions"][vi]["samples"][si])
        for kp in key_paths:
            v = _get(payload, kp)
            _set(payload, kp, f"{v}-{i:07d}" if isinstance(v, str) else v)
        target = _target_size(rng)
        for tp in text_paths:
            if _get(payload, tp) is None:
                continue
            size = len(orjson.dumps(payload))
            if size < target:
                start = rng.choice(SENTENCE_STARTS)
                pad = (PROSE * (2 + (target - size) // len(PROSE)))[start : start + target - size]
                _set(payload, tp, _get(payload, tp) + " " + pad)
        if rng.random() < 0.002:  # a producer bug: a required field with the wrong type
            payload["__broken__"] = True
            for k in list(payload)[:2]:
                payload[k] = 12345
        named = source == "llm-gateway" and rng.random() < 0.5  # backends usually name their contract
        data = envelope_encode(
            source=source, payload=payload, received_at=RECEIVED_AT + i * 1000,
            request_id=f"req-{i // 20}", channel="batch", contract=event if named else None,
        )
        if recent and rng.random() < 0.01:  # at-least-once delivery: a redelivered record
            data = rng.choice(recent)
        recent = (recent + [data])[-200:]
        out.append(RawRecord("shardId-000000000000", f"{49650000000000000000000000000000000000 + i}", data,
                             RECEIVED_AT + i * 1000 + 500))
    sources = []
    for k, name in enumerate(sorted(presets)):
        p = presets[name]
        sources.append({
            "source_id": f"src-{k + 1}", "name": name, "platform": p["platform"], "product": p.get("product"),
            "active": True,
            "contracts": [
                {"subject": c["subject"], "event": c["subject"].split(".", 1)[1],
                 "versions": [{"version": j + 1, "schema": v["schema"], "mapping": v["mapping"]}
                              for j, v in enumerate(c["versions"])]}
                for c in p["contracts"]
            ],
        })
    return out, sources


def _pin_one_cpu() -> str:
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    except (AttributeError, OSError):
        return "not pinned"


def _archive_steps(index: ContractIndex, batches, locations):
    """(clear pass, encrypted pass): the hot path plus the archive lines, without or with encryption."""
    import hashlib

    import zstandard

    from deletion.subject_keys import LocalMasterKey, SubjectKeyring
    from ingest_workers.archive import archive_line
    from ingest_workers.archive_crypto import records_subjects, unattributed_subject

    keyring = SubjectKeyring(master=LocalMasterKey(os.urandom(32)), hash_key=os.urandom(32))
    # steady state: every subject's key is cached (a new subject costs one key-service round trip)
    for b, batch in enumerate(batches):
        res = process_batch(batch, index, stream="raw-events", batch_id=f"b{b}", archive_locations=locations[b],
                            now_micros=RECEIVED_AT + 10_000_000)
        subjects = {s for ids in records_subjects(res.events).values() for s in ids}
        subjects.update(unattributed_subject(r.arrival_micros) for r in batch)
        for subject in subjects:
            key_id = hashlib.sha256(subject.encode()).hexdigest()[:32]
            keyring._by_subject.put(subject, (key_id, os.urandom(32)))
    keyring._suppressed.update(hashlib.sha256(str(i).encode()).hexdigest() for i in range(1000))
    sizes = {"clear": 0, "encrypted": 0}

    # as the consumer does: the pipeline a batch at a time, the archive lines a unit (UNIT_BATCHES
    # batches) at a time, in one ``sealer.lines`` call and one compressed block per unit
    units = [range(u, min(u + UNIT_BATCHES, len(batches))) for u in range(0, len(batches), UNIT_BATCHES)]

    def clear(measure_size: bool = False) -> int:
        lines_total = 0
        for unit in units:
            lines = []
            for b in unit:
                batch = batches[b]
                res = process_batch(batch, index, stream="raw-events", batch_id=f"b{b}",
                                    archive_locations=locations[b], now_micros=RECEIVED_AT + 10_000_000)
                res.landing_json()
                not_json = {q.sequence_number for q in res.quarantine if q.reason_code == "undecodable"}
                del res
                lines += [archive_line(r, is_json=r.sequence_number not in not_json) for r in batch]
            lines_total += len(lines)
            if measure_size:
                sizes["clear"] += len(zstandard.ZstdCompressor(level=3).compress(b"\n".join(lines)))
        return lines_total

    def encrypted(measure_size: bool = False) -> int:
        lines_total = 0
        for unit in units:
            records, subjects, suppressed, not_json = [], {}, set(), set()
            for b in unit:
                batch = batches[b]
                res = process_batch(batch, index, stream="raw-events", batch_id=f"b{b}",
                                    archive_locations=locations[b], now_micros=RECEIVED_AT + 10_000_000)
                found = records_subjects(res.events)
                subjects.update(found)
                suppressed |= keyring.suppressed_of(found)
                res.landing_json()
                not_json.update(q.sequence_number for q in res.quarantine if q.reason_code == "undecodable")
                del res
                records += batch
            sealer = keyring.sealer(records, subjects, suppressed)
            # what ShardArchive.append does: the unit's lines in one call (version 2: the records that
            # share a key set compressed together with the shared dictionary, then sealed, one block each)
            lines = sealer.lines([(r.sequence_number, r.shard_id, r.arrival_micros, r.data,
                                   r.sequence_number not in not_json) for r in records], 0)
            lines_total += len(lines)
            if measure_size:
                sizes["encrypted"] += len(zstandard.ZstdCompressor(level=3).compress(b"\n".join(lines)))
        return lines_total

    return clear, encrypted, sizes, keyring


def run(n_records: int = 20_000, passes: int = 7) -> dict:
    pinned = _pin_one_cpu()
    records, sources = build_records(n_records)
    index = ContractIndex.build(sources)
    batches = [records[i : i + BATCH] for i in range(0, len(records), BATCH)]
    locations = [[(f"file:///archive/batch-{b}.jsonl.zst", k * 2048) for k in range(len(batch))]
                 for b, batch in enumerate(batches)]
    datas = [r.data for r in records]

    def hot_path() -> tuple[int, int, int]:
        events = quarantined = landed = 0
        for b, batch in enumerate(batches):
            res = process_batch(batch, index, stream="raw-events", batch_id=f"b{b}", archive_locations=locations[b],
                                now_micros=RECEIVED_AT + 10_000_000)
            landed += len(res.landing_json())
            events += len(res.events)
            quarantined += len(res.quarantine)
            del res  # the consumer lands the batch, checkpoints and drops it before reading the next
        return events, quarantined, landed

    def parse_only() -> int:
        loads = orjson.loads
        for d in datas:
            loads(d)
        return len(datas)

    cpu_times: dict[str, list[float]] = {"clear": [], "encrypted": []}

    def timed(fn) -> tuple[float, object]:
        gc.collect()
        t, c = time.perf_counter(), time.thread_time()
        r = fn()
        if fn.__name__ in cpu_times:  # this thread's CPU time too: robust to a shared, loaded machine
            cpu_times[fn.__name__].append(time.thread_time() - c)
        return time.perf_counter() - t, r

    clear, encrypted, sizes, keyring = _archive_steps(index, batches, locations)
    hot_path()  # warm-up
    parse_only()
    clear(measure_size=True)
    encrypted(measure_size=True)
    calls_before = keyring.master_calls
    hot_times, parse_times, clear_times, enc_times = [], [], [], []
    for _ in range(passes):  # interleaved, so all see the same machine state
        dt, (events_out, quarantined, landed) = timed(hot_path)
        hot_times.append(dt)
        dt, _ = timed(parse_only)
        parse_times.append(dt)
        dt, _ = timed(clear)
        clear_times.append(dt)
        dt, _ = timed(encrypted)
        enc_times.append(dt)
    assert keyring.master_calls == calls_before  # steady state: no key-service call in the timed passes
    hot = n_records / statistics.median(hot_times)
    parse = n_records / statistics.median(parse_times)
    clear_rate = n_records / statistics.median(clear_times)
    enc_rate = n_records / statistics.median(enc_times)
    # per pass, encrypted / clear of the same round, in CPU time (the machine is shared: pair them, take
    # the median); the wall-clock figure is reported beside it
    cost = statistics.median(e / c for e, c in zip(cpu_times["encrypted"], cpu_times["clear"], strict=True)) - 1
    cost_wall = statistics.median(e / c for e, c in zip(enc_times, clear_times, strict=True)) - 1
    return {
        "hot_path_vs_parse_encrypted": round(enc_rate / parse, 3),
        "hot_path_vs_parse_archive_clear": round(clear_rate / parse, 3),
        "encryption_cost": round(cost, 3),
        "encryption_cost_wall_clock": round(cost_wall, 3),
        "archive_clear_cpu_us_per_event": round(statistics.median(cpu_times["clear"]) / n_records * 1e6, 2),
        "archive_encrypted_cpu_us_per_event": round(statistics.median(cpu_times["encrypted"]) / n_records * 1e6, 2),
        "encryption_goal_met": cost <= 0.20,
        "archive_clear_us_per_event": round(statistics.median(clear_times) / n_records * 1e6, 2),
        "archive_encrypted_us_per_event": round(statistics.median(enc_times) / n_records * 1e6, 2),
        "archive_bytes_per_record_clear": round(sizes["clear"] / n_records),
        "archive_bytes_per_record_encrypted": round(sizes["encrypted"] / n_records),
        "hot_path_events_per_s": round(hot),
        "parse_only_events_per_s": round(parse),
        "hot_path_vs_parse": round(hot / parse, 3),
        "hot_path_events": n_records,
        "avg_event_bytes": round(sum(map(len, datas)) / len(datas)),
        "hot_path_best_events_per_s": round(n_records / min(hot_times)),
        "hot_path_us_per_event": round(statistics.median(hot_times) / n_records * 1e6, 2),
        "parse_only_us_per_event": round(statistics.median(parse_times) / n_records * 1e6, 2),
        "canonical_events_out": events_out,
        "quarantined": quarantined,
        "landing_bytes_per_pass": landed,
        "batch_records": BATCH,
        "passes": passes,
        "cpu": pinned,
        "goal_met": hot >= GOAL_EVENTS_PER_S and hot / parse >= GOAL_RATIO,
    }


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="also print the figures as a JSON line last")
    parser.add_argument("--records", type=int, default=20_000, help="raw records per pass (default 20,000)")
    parser.add_argument("--passes", type=int, default=7, help="timed passes, the median reported (default 7)")
    args = parser.parse_args()
    as_json = args.json
    r = run(n_records=args.records, passes=args.passes)
    print(f"records: {r['hot_path_events']:,} raw envelopes, {r['avg_event_bytes']:,} B on average "
          f"({r['canonical_events_out']:,} canonical events, {r['quarantined']} quarantined), {r['cpu']}")
    print(f"hot path : {r['hot_path_events_per_s']:>10,} events/s  ({r['hot_path_us_per_event']} µs/event, "
          f"best {r['hot_path_best_events_per_s']:,}/s)")
    print(f"parse    : {r['parse_only_events_per_s']:>10,} events/s  ({r['parse_only_us_per_event']} µs/event)")
    print(f"ratio    : {r['hot_path_vs_parse']:.3f}   (goals: >= {GOAL_EVENTS_PER_S:,}/s and >= {GOAL_RATIO}: "
          f"{'met' if r['goal_met'] else 'NOT met'})")
    print(f"archive  : hot path + clear lines {r['archive_clear_cpu_us_per_event']} CPU µs/event, + encrypted "
          f"lines {r['archive_encrypted_cpu_us_per_event']} CPU µs/event: encryption costs {r['encryption_cost']:.1%} "
          f"in CPU time, {r['encryption_cost_wall_clock']:.1%} wall-clock (goal <= 20%: "
          f"{'met' if r['encryption_goal_met'] else 'NOT met'}); ratio to parse with encryption "
          f"{r['hot_path_vs_parse_encrypted']:.3f}, with clear lines {r['hot_path_vs_parse_archive_clear']:.3f}")
    print(f"archive  : {r['archive_bytes_per_record_clear']} B/record compressed in clear, "
          f"{r['archive_bytes_per_record_encrypted']} B/record encrypted")
    if as_json:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
