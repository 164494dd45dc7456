"""Throughput of the pure contract core on one core: compiled validation and compiled mapping.

    .venv/bin/python bench/bench_core.py            # table
    .venv/bin/python bench/bench_core.py --json     # also a JSON line last (bench/run.py reads it)

Payloads are the demo presets' samples (contracts/presets/*.json), 1-2 KB of JSON each. Goals:
>= 300,000 validations/s and >= 200,000 mappings/s for a typical ~1.5 KB event on one core
(fastavro's validate, for reference, manages ~15-70 µs/event).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastavro import parse_schema  # noqa: E402
from fastavro.validation import validate as fastavro_validate  # noqa: E402

from contracts.mapping import SourceContext, compile_mapping  # noqa: E402
from contracts.validation import compile_validator  # noqa: E402

CASES = [
    # (preset, subject, version, sample index, label)
    ("web-chat", "web-chat.chat_event", 2, 1, "web SDK user message"),
    ("llm-gateway", "llm-gateway.llm_call", 1, 1, "LLM gateway call"),
    ("voice-assistant", "voice-assistant.alexa_request", 1, 1, "Alexa IntentRequest"),
    ("slack-bot", "slack-bot.message_event", 1, 0, "Slack message callback"),
    ("ios-app", "ios-app.app_event", 1, 1, "iOS chat message"),
]


def rate(fn, arg, *extra, seconds: float = 0.4, repeats: int = 5) -> float:
    """Calls per second, best of `repeats` runs of about `seconds` each."""
    n = 1000
    while True:  # calibrate
        t = time.perf_counter()
        for _ in range(n):
            fn(arg, *extra)
        dt = time.perf_counter() - t
        if dt > 0.05:
            break
        n *= 4
    n = max(1, int(n * seconds / dt))
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            fn(arg, *extra)
        best = max(best, n / (time.perf_counter() - t))
    return best


def main() -> int:
    as_json = "--json" in sys.argv
    rows = []
    for preset_name, subject, version, index, label in CASES:
        preset = json.loads((ROOT / "contracts" / "presets" / f"{preset_name}.json").read_text())
        contract = next(c for c in preset["contracts"] if c["subject"] == subject)
        spec = contract["versions"][version - 1]
        payload = spec["samples"][index]
        size = len(json.dumps(payload, separators=(",", ":")).encode())
        ctx = SourceContext(
            source_id="bench",
            source_name=preset_name,
            platform=preset["platform"],
            product=preset.get("product"),
            contract_name=subject,
            contract_version=version,
            received_at_micros=1_772_400_000_000_000,
        )
        t = time.perf_counter()
        validator = compile_validator(spec["schema"])
        cm = compile_mapping(spec["schema"], spec["mapping"])
        compile_ms = (time.perf_counter() - t) * 1000
        assert validator(payload) == [] and cm(payload, ctx)

        def validate_and_map(p, c, _v=validator, _m=cm):
            if _v(p):
                raise AssertionError("invalid")
            return _m(p, c)

        parsed = parse_schema(spec["schema"])
        rows.append(
            {
                "case": label,
                "payload_bytes": size,
                "compile_ms": round(compile_ms, 2),
                "validations_per_s": round(rate(validator, payload)),
                "mappings_per_s": round(rate(cm, payload, ctx)),
                "validate_and_map_per_s": round(rate(validate_and_map, payload, ctx)),
                "fastavro_validations_per_s": round(
                    rate(
                        lambda p, _s=parsed: fastavro_validate(p, _s, raise_errors=False),
                        payload,
                        seconds=0.2,
                        repeats=2,
                    )
                ),
            }
        )
    header = (
        f"{'case':<24} {'bytes':>6} {'compile ms':>10} {'validate/s':>11} {'map/s':>9} {'both/s':>9} "
        f"{'fastavro/s':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['case']:<24} {r['payload_bytes']:>6} {r['compile_ms']:>10} {r['validations_per_s']:>11,} "
            f"{r['mappings_per_s']:>9,} {r['validate_and_map_per_s']:>9,} "
            f"{r['fastavro_validations_per_s']:>10,}"
        )
    typical = rows[0]
    print(
        f"\ntypical event ({typical['payload_bytes']} B): {typical['validations_per_s']:,} validations/s "
        f"({1e6 / typical['validations_per_s']:.2f} µs), {typical['mappings_per_s']:,} mappings/s "
        f"({1e6 / typical['mappings_per_s']:.2f} µs)"
    )
    if as_json:
        print(json.dumps({"core": {"typical": typical, "cases": rows}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
