"""anomaly_false_positive_rate: how often the volume and quarantine-rate anomaly rules fire on normal traffic from
the traffic generator, and how often they catch a Sunday -60% drop or a quarantine-rate jump to 8%.

    .venv/bin/python bench/bench_anomaly_fp.py [--mode generator|model] [--weeks 12] [--history-weeks 8]
                                               [--per-hour 600] [--shape weekly|flat] [--noise 0.1] [--seed 7]

Method (docs/quality.md, "Anomalies"):

* The records are the traffic generator's own (``ingest_workers.traffic.TrafficGenerator`` over the six demo
  presets, its default duplicate and malformed fractions): each hour it is asked for that hour's count of
  records, and each record is counted for its source; a ``malformed`` record is a quarantined one (the
  pipeline quarantines every one of them). The generator itself has no clock shape (``generate_traffic
  --rate`` is a constant rate), so the hour's count is drawn here: Poisson around ``--per-hour`` times a
  weekly shape (``--shape weekly``: weekday office hours, a Monday-morning peak, quiet nights and weekends;
  ``flat``: the generator as it runs), times a log-normal week-to-week variation of ``--noise`` (0.1: ±10%).
* ``--mode model`` (for realistic volumes, where generating every record would take hours): each source's
  share of the generator's records and its malformed fraction are read off 50,000 records of the real
  generator; each hour's count per source is then Poisson around its share and its quarantined records
  binomial with its fraction (the generator draws each record's kind independently, so this is its law).
* The first ``--history-weeks`` weeks are history only; every hour of the remaining weeks is judged, per
  source, by ``quality.anomaly_rules.hour_verdicts`` (what the two alert rules use). A flagged hour there is
  a false positive: nothing abnormal was generated.
* Detection: each judged Sunday 15:00 hour is judged again with the source's records cut by 60% (its
  quarantined records too), and each judged hour with 8% of its records quarantined.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def weekly_shape(hour: dt.datetime) -> float:
    day = 1.0 if hour.weekday() < 5 else 0.4
    diurnal = 1.0 if 8 <= hour.hour < 18 else (0.6 if 18 <= hour.hour < 23 else 0.25)
    peak = 1.6 if hour.weekday() == 0 and 8 <= hour.hour < 12 else 1.0
    return day * diurnal * peak


def poisson(rng: random.Random, lam: float) -> int:
    if lam < 30:
        limit, k, p = math.exp(-lam), 0, 1.0
        while True:
            p *= rng.random()
            if p <= limit:
                return k
            k += 1
    return max(0, int(round(rng.gauss(lam, math.sqrt(lam)))))


def _generator(seed: int):  # noqa: ANN202
    import django

    django.setup()
    from contracts.presets import DEMO_SOURCES, preset_load
    from ingest_workers.traffic import TrafficGenerator, templates_from_preset

    templates = [t for name in DEMO_SOURCES for t in templates_from_preset(preset_load(name))]
    return TrafficGenerator(templates, seed=seed, min_bytes=100, max_bytes=200)  # sizes do not matter here


def generator_split(seed: int, sample: int = 50_000) -> tuple[dict[str, float], dict[str, float]]:
    """The generator's share of records per source and the share of each source's records it makes malformed,
    read off ``sample`` records of the real generator."""
    generator = _generator(seed)
    records: dict[str, int] = {}
    malformed: dict[str, int] = {}
    for record in generator.records(sample, now_micros=1_767_600_000_000_000):
        records[record.source] = records.get(record.source, 0) + 1
        malformed[record.source] = malformed.get(record.source, 0) + (record.kind == "malformed")
    return ({s: n / sample for s, n in records.items()}, {s: malformed[s] / n for s, n in records.items()})


def binomial(rng: random.Random, n: int, p: float) -> int:
    if n * p < 30:
        return poisson(rng, n * p)
    return max(0, min(n, int(round(rng.gauss(n * p, math.sqrt(n * p * (1 - p)))))))


def generate(args: argparse.Namespace) -> tuple[dict[str, dict[dt.datetime, dict]], dt.datetime, int]:
    if args.mode == "model":
        shares, bad = generator_split(args.seed)
    else:
        generator = _generator(args.seed)
    rng = random.Random(args.seed)  # noqa: S311 - reproducible synthetic counts
    start = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)  # a Monday
    rows: dict[str, dict[dt.datetime, dict]] = {}
    week_noise: dict[tuple[int, int], float] = {}
    total = 0
    for h in range(args.weeks * 168):
        hour = start + dt.timedelta(hours=h)
        shape = weekly_shape(hour) if args.shape == "weekly" else 0.5
        variation = week_noise.setdefault((h // 168, h % 168), math.exp(rng.gauss(0, args.noise)) if args.noise else 1)
        count = poisson(rng, args.per_hour * shape * variation)
        total += count
        if args.mode == "model":
            for source, share in shares.items():
                n = poisson(rng, count * share)
                rows.setdefault(source, {})[hour] = {"records": n, "quarantined": binomial(rng, n, bad[source])}
            continue
        for record in generator.records(count, now_micros=int(hour.timestamp() * 1e6)):
            row = rows.setdefault(record.source, {}).setdefault(hour, {"records": 0, "quarantined": 0})
            row["records"] += 1
            row["quarantined"] += record.kind == "malformed"
    return rows, start, total


def judge(rows: dict, start: dt.datetime, args: argparse.Namespace) -> dict:
    from quality.anomaly_rules import hour_verdicts

    judged = fp_volume = fp_rate = 0
    drops = caught_drops = jumps = caught_jumps = 0
    no_verdict = 0
    first = args.history_weeks * 168
    for h in range(first, args.weeks * 168):
        hour = start + dt.timedelta(hours=h)
        now = hour + dt.timedelta(hours=1, minutes=1)
        for volume, rate in hour_verdicts(rows, now=now, weeks=args.history_weeks).values():
            judged += 1
            no_verdict += volume is None
            fp_volume += bool(volume and volume.anomalous)
            fp_rate += bool(rate and rate.anomalous)
        for source, per_hour in rows.items():
            current = per_hour.get(hour)
            if current is None:
                continue
            saved = dict(current)
            if hour.weekday() == 6 and hour.hour == 15:
                current.update(records=int(saved["records"] * 0.4), quarantined=int(saved["quarantined"] * 0.4))
                drops += 1
                volume, _ = hour_verdicts({source: per_hour}, now=now, weeks=args.history_weeks)[source]
                caught_drops += bool(volume and volume.anomalous)
            current.update(records=saved["records"], quarantined=int(round(saved["records"] * 0.08)))
            jumps += 1
            _, rate = hour_verdicts({source: per_hour}, now=now, weeks=args.history_weeks)[source]
            caught_jumps += bool(rate and rate.anomalous)
            current.update(saved)
    return {"judged_source_hours": judged, "no_verdict": no_verdict,
            "volume_false_positives": fp_volume, "volume_fp_rate": round(fp_volume / judged, 5) if judged else None,
            "quarantine_false_positives": fp_rate,
            "quarantine_fp_rate": round(fp_rate / judged, 5) if judged else None,
            "sunday_drops": drops, "sunday_drops_caught": caught_drops,
            "quarantine_jumps": jumps, "quarantine_jumps_caught": caught_jumps}


def main() -> None:
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weeks", type=int, default=12)
    parser.add_argument("--history-weeks", type=int, default=8)
    parser.add_argument("--per-hour", type=float, default=600.0, help="records per hour at the shape's 1.0")
    parser.add_argument("--shape", choices=("weekly", "flat"), default="weekly")
    parser.add_argument("--noise", type=float, default=0.1, help="log-normal week-to-week variation (sigma)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--mode", choices=("generator", "model"), default="generator",
                        help="generator: every record from the traffic generator (slow: keep --per-hour small); "
                             "model: its per-source shares and malformed fractions read off 50,000 of its records, "
                             "counts drawn per hour (for realistic volumes)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()
    rows, start, total = generate(args)
    result = {"mode": args.mode, "shape": args.shape, "noise": args.noise, "per_hour": args.per_hour, "records": total,
              "weeks": args.weeks, "history_weeks": args.history_weeks, **judge(rows, start, args),
              "seconds": round(time.monotonic() - started, 1)}
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
