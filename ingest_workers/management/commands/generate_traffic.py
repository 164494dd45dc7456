"""`manage.py generate_traffic`: imitate the six demo sources, through the collectors or onto the stream."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid

import orjson
from django.core.management.base import BaseCommand, CommandError

from contracts import presets
from ingest_workers.envelope import envelope_encode
from ingest_workers.partition import partition_key
from ingest_workers.traffic import BreakPlan, GeneratedRecord, TrafficGenerator, templates_from_preset

CHANNEL_BY_SOURCE = {"slack-bot": "slack", "voice-assistant": "voice"}


class Command(BaseCommand):
    help = ("Generate realistic traffic for the six demo sources (1–4 KB events, duplicates, out-of-order "
            "and late events, a few malformed ones) and send it to the collectors or the stream.")

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, default=1000, help="records to send (default 1000)")
        parser.add_argument("--rate", type=float, default=0.0, help="records per second (0: as fast as possible)")
        parser.add_argument("--duplicate-fraction", type=float, default=0.05)
        parser.add_argument("--out-of-order-fraction", type=float, default=0.10)
        parser.add_argument("--late-fraction", type=float, default=0.01)
        parser.add_argument("--malformed-fraction", type=float, default=0.002)
        parser.add_argument("--seed", type=int, default=None, help="random seed (default: time-based)")
        parser.add_argument("--via", choices=["stream", "http"], default="stream",
                            help="stream: raw envelopes straight onto Kinesis (as backend services may); "
                                 "http: through the collectors, with the keys of var/demo-write-keys.json")
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="portal URL for --via http")
        parser.add_argument("--batch", type=int, default=200, help="records per put / request")
        parser.add_argument("--wait-for-portal", action="store_true",
                            help="with --via http, wait (up to 2 minutes) until the portal answers")
        broken = parser.add_argument_group(
            "a broken source (the demo's bad release)",
            "--break-source NAME makes that demo source send a field with the wrong type from --break-after "
            "seconds on (its events are quarantined, naming the field), drop its volume --break-drop-after "
            "seconds later, and send normally again --break-fix-after seconds after the break.")
        broken.add_argument("--break-source", metavar="NAME", choices=presets.DEMO_SOURCES,
                            help=f"the demo source to break: one of {', '.join(presets.DEMO_SOURCES)}")
        broken.add_argument("--break-after", type=float, default=180.0, metavar="S",
                            help="seconds of normal traffic before it breaks (default 180)")
        broken.add_argument("--break-drop-after", type=float, default=60.0, metavar="S",
                            help="seconds after the break until its volume drops (default 60)")
        broken.add_argument("--break-volume", type=float, default=0.1, metavar="F",
                            help="fraction of its volume still sent after the drop (default 0.1)")
        broken.add_argument("--break-fix-after", type=float, default=600.0, metavar="S",
                            help="seconds after the break until it is fixed (default 600; 0: never)")

    def handle(self, *args, **opts):
        for name in ("duplicate_fraction", "out_of_order_fraction", "late_fraction", "malformed_fraction"):
            if not 0.0 <= opts[name] <= 1.0:
                raise CommandError(f"--{name.replace('_', '-')} must be between 0 and 1")
        if opts["count"] < 0 or opts["rate"] < 0 or opts["batch"] < 1:
            raise CommandError("--count and --rate must be >= 0 and --batch >= 1")
        templates = [t for preset in presets.demo_presets() for t in templates_from_preset(preset)]
        generator = TrafficGenerator(
            templates, seed=opts["seed"] if opts["seed"] is not None else time.time_ns(),
            duplicate_fraction=opts["duplicate_fraction"], out_of_order_fraction=opts["out_of_order_fraction"],
            late_fraction=opts["late_fraction"], malformed_fraction=opts["malformed_fraction"],
            break_plan=break_plan_from(opts),
        )
        if opts["via"] == "http" and opts["wait_for_portal"]:
            wait_for_portal(opts["url"])
        sender = StreamSender() if opts["via"] == "stream" else HttpSender(opts["url"])
        counts: dict[str, int] = {}
        started = time.monotonic()
        sent = 0
        pending: list[GeneratedRecord] = []
        remaining = opts["count"]
        phase = "normal"
        while remaining > 0:
            # the clock is read per batch: a long run's events carry the time they were sent
            chunk = min(opts["batch"], remaining)
            remaining -= chunk
            now_micros = time.time_ns() // 1000
            if generator.break_phase(now_micros) != phase:
                phase = generator.break_phase(now_micros)
                self.stderr.write(f"generate_traffic: {opts['break_source']} is now {BREAK_MESSAGES[phase]}")
            for record in generator.records(chunk, now_micros=now_micros):
                pending.append(record)
                counts[record.kind] = counts.get(record.kind, 0) + 1
            sent += sender.send(pending)
            pending = []
            self._pace(opts["rate"], sent, started)
        if pending:
            sent += sender.send(pending)
        elapsed = time.monotonic() - started
        self.stdout.write(json.dumps({"sent": sent, "by_kind": counts, "seconds": round(elapsed, 2),
                                      "rate": round(sent / elapsed, 1) if elapsed else None, "via": opts["via"]}))

    @staticmethod
    def _pace(rate: float, sent: int, started: float) -> None:
        if rate > 0:
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)


BREAK_MESSAGES = {
    "wrong_type": "sending a field with the wrong type (its events go to the quarantine)",
    "dropped": "sending a fraction of its volume (still with the wrong type)",
    "fixed": "fixed: sending normally again",
    "normal": "sending normally",
}


def break_plan_from(opts: dict) -> BreakPlan | None:
    """The --break-* options as a BreakPlan (None without --break-source); CommandError naming a bad one."""
    if not opts.get("break_source"):
        return None
    if opts["break_after"] < 0 or opts["break_drop_after"] < 0 or opts["break_fix_after"] < 0:
        raise CommandError("--break-after, --break-drop-after and --break-fix-after must be >= 0")
    if not 0.0 <= opts["break_volume"] <= 1.0:
        raise CommandError("--break-volume must be between 0 and 1")
    return BreakPlan(opts["break_source"], after_s=opts["break_after"], drop_after_s=opts["break_drop_after"],
                     volume_fraction=opts["break_volume"], fix_after_s=opts["break_fix_after"] or None)


def wait_for_portal(url: str, timeout: float = 120.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(f"{url.rstrip('/')}/accounts/login/", timeout=2)
            return
        except requests.RequestException:
            time.sleep(1)
    raise CommandError(f"The portal at {url} did not answer within {timeout:.0f}s.")


class StreamSender:
    """Raw envelopes straight onto Kinesis, the way a backend service may write."""

    def __init__(self):
        from ingest_workers.stream import StreamProducer

        self.producer = StreamProducer()

    @staticmethod
    def encode(record: GeneratedRecord, *, received_at: int, request_id: str = "") -> bytes:
        if isinstance(record.payload, bytes):   # a record that is not even JSON
            return record.payload
        return envelope_encode(source=record.source, payload=record.payload, received_at=received_at,
                               request_id=request_id, channel=CHANNEL_BY_SOURCE.get(record.source, "direct"),
                               contract=record.contract)

    def send(self, records: list[GeneratedRecord]) -> int:
        now = time.time_ns() // 1000
        request_id = uuid.uuid4().hex
        batch = [
            (uuid.uuid4().hex if isinstance(r.payload, bytes) else partition_key(r.source, r.payload),
             self.encode(r, received_at=now, request_id=request_id))
            for r in records
        ]
        self.producer.put(batch)
        return len(batch)


class HttpSender:
    """Through the collectors: the batch endpoint for SDK/backend sources, signed webhooks for the others."""

    def __init__(self, url: str):
        import requests

        from contracts.management.commands.seed_demo import demo_signing_secret, demo_write_keys_ensure
        from contracts.models import Source

        self.session = requests.Session()
        self.url = url.rstrip("/")
        # the keys make run printed (var/demo-write-keys.json): sending does not rotate them
        self.keys = demo_write_keys_ensure()
        self.secrets = {}
        for source in Source.objects.filter(name__in=presets.DEMO_SOURCES, kind="webhook"):
            self.secrets[source.name] = source.signing_secret or demo_signing_secret(source.name)

    def send(self, records: list[GeneratedRecord]) -> int:
        by_source: dict[tuple[str, str], list] = {}
        for record in records:
            if record.source in self.secrets:
                self._webhook(record)
            else:
                by_source.setdefault((record.source, record.contract), []).append(record.payload)
        for (source, contract), payloads in by_source.items():
            if not self.keys.get(source):
                continue  # its key was rotated by a person: the generator has none that works
            body = b"\n".join(p if isinstance(p, bytes) else orjson.dumps(p) for p in payloads)
            self.session.post(f"{self.url}/collect/v1/batch?contract={contract}", data=body, timeout=30,
                              headers={"Authorization": f"Bearer {self.keys[source]}",
                                       "Content-Type": "application/x-ndjson"})
        return len(records)

    def _webhook(self, record: GeneratedRecord) -> None:
        body = record.payload if isinstance(record.payload, bytes) else orjson.dumps(record.payload)
        secret = self.secrets[record.source].encode()
        stamp = str(int(time.time()))
        if record.source == "slack-bot":
            signature = "v0=" + hmac.new(secret, b"v0:" + stamp.encode() + b":" + body, hashlib.sha256).hexdigest()
            headers = {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature}
            path = "slack"
        else:
            signature = "sha256=" + hmac.new(secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
            headers = {"X-ChatOrbit-Timestamp": stamp, "X-ChatOrbit-Signature": signature}
            path = "voice"
        headers["Content-Type"] = "application/json"
        self.session.post(f"{self.url}/collect/v1/webhooks/{path}/{record.source}", data=body, headers=headers,
                          timeout=10)
