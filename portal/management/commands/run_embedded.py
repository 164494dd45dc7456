"""`make run`: the whole platform on its embedded default, on this machine, with nothing to install.

Starts, each as a child process: the local AWS emulator (Kinesis + S3, `local_aws`), the embedded
warehouse (fakesnow's server, `warehouse_server`), the ingest pool (a Celery worker running a
long-lived shard consumer), a Celery worker for the other queues and Celery beat (filesystem broker
unless CELERY_BROKER_URL names Redis), and a traffic generator imitating the six demo sources
through the collectors. Migrates and seeds the demo, then serves the portal in the foreground.

The children are supervised (portal.supervision): one that dies is restarted with backoff and
reported here and on the pipeline page. Ctrl-C (or SIGTERM) stops everything: the traffic first, then
the workers and beat while the warehouse and the emulator still answer them (a worker's connector
would otherwise retry its logout against a stopped warehouse for 20 s), then those two; a second
Ctrl-C skips the waiting.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from portal.supervision import STATUS_FILE, Supervisor

ROOT = Path(__file__).resolve().parents[3]


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def exposed_demo_refusal(addrport: str, *, debug: bool, allowed: bool) -> str | None:
    """Why the embedded demo must not listen on ``addrport``, or None. The demo runs with DEBUG on (Django's
    debug pages show settings and URL patterns), a public development SECRET_KEY and printed passwords: on an
    address other hosts reach, anyone could sign in as admin (hostile-input review, informational note)."""
    import ipaddress

    host = addrport.rpartition(":")[0] if ":" in addrport else ("127.0.0.1" if addrport.isdigit() else addrport)
    host = host.strip("[]") or "127.0.0.1"
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: we cannot tell where it resolves, so treat it as reachable
        loopback = False
    if loopback or allowed:
        return None
    return (f"--addrport {addrport} would let other hosts reach the embedded demo, which runs with "
            f"{'DEBUG on (debug pages show settings), ' if debug else ''}a public development SECRET_KEY and the "
            "printed demo passwords. Use 127.0.0.1, or pass --allow-other-hosts if this network is yours alone; "
            "for a real deployment see docs/production.md.")


#: the demo source `make run` breaks after a few minutes (the demo's bad release), unless told otherwise
DEMO_BREAK_SOURCE = "ios-app"


def traffic_argv(manage: list[str], addrport: str, *, rate: float, break_source: str | None, break_after: float,
                 break_fix_after: float) -> list[str]:
    """The traffic generator's command line: every demo source through the collectors, and the demo's
    broken source (``break_source``; None: none breaks)."""
    argv = [*manage, "generate_traffic", "--via", "http", "--url", f"http://{addrport}", "--count", "100000000",
            "--rate", str(rate), "--batch", "20", "--wait-for-portal"]
    if break_source:
        argv += ["--break-source", break_source, "--break-after", f"{break_after:g}",
                 "--break-fix-after", f"{break_fix_after:g}"]
    return argv


class Command(BaseCommand):
    help = ("Run the embedded platform: emulators, warehouse, workers, traffic and the portal on 127.0.0.1:8000. "
            f"After --demo-break-after seconds one demo source ({DEMO_BREAK_SOURCE} by default) starts sending a "
            "field with the wrong type and then drops its volume, and recovers --demo-break-fix-after seconds later "
            "(--no-demo-break: it never breaks).")

    def add_arguments(self, parser):
        parser.add_argument("--addrport", default="127.0.0.1:8000")
        parser.add_argument("--no-traffic", action="store_true", help="do not start the traffic generator")
        parser.add_argument("--traffic-rate", type=float, default=40.0, help="generated events per second")
        parser.add_argument("--portal-only", action="store_true", help="only the portal (no pipeline processes)")
        parser.add_argument("--allow-other-hosts", action="store_true",
                            help="listen on an address other hosts can reach, though the demo is not made for it")
        parser.add_argument("--demo-break-source", default=DEMO_BREAK_SOURCE, metavar="NAME",
                            help=f"the demo source that breaks after a while (default {DEMO_BREAK_SOURCE}): its "
                                 "events are quarantined and its checks go red, then it recovers")
        parser.add_argument("--demo-break-after", type=float, default=300.0, metavar="S",
                            help="seconds of normal traffic before the demo source breaks (default 300)")
        parser.add_argument("--demo-break-fix-after", type=float, default=600.0, metavar="S",
                            help="seconds after breaking until it is fixed (default 600; 0: stays broken)")
        parser.add_argument("--no-demo-break", action="store_true", help="no demo source breaks")

    def handle(self, *args, addrport: str, no_traffic: bool, traffic_rate: float, portal_only: bool, **options):
        from contracts.presets import DEMO_SOURCES

        self.demo_break = None if options.get("no_demo_break") else options.get("demo_break_source", DEMO_BREAK_SOURCE)
        if self.demo_break is not None and self.demo_break not in DEMO_SOURCES:
            raise CommandError(f"--demo-break-source {self.demo_break!r} is not a demo source; use one of "
                               f"{', '.join(DEMO_SOURCES)} (or --no-demo-break).")
        self.demo_break_after = float(options.get("demo_break_after", 300.0))
        self.demo_break_fix_after = float(options.get("demo_break_fix_after", 600.0))
        if self.demo_break_after < 0 or self.demo_break_fix_after < 0:
            raise CommandError("--demo-break-after and --demo-break-fix-after must be >= 0.")
        refusal = exposed_demo_refusal(addrport, debug=settings.DEBUG, allowed=options.get("allow_other_hosts", False))
        if refusal:
            raise CommandError(refusal)
        var = Path(settings.VAR_DIR)
        var.mkdir(parents=True, exist_ok=True)
        (var / "logs").mkdir(exist_ok=True)
        self._prometheus_dir_fresh(var)
        self.var = var
        self.supervisor = Supervisor(self._spawn, self._report, var / STATUS_FILE)
        previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        try:
            call_command("migrate", interactive=False, verbosity=0)
            self.stdout.write("Database ready.")
            call_command("seed_demo", quiet_keys=True, stdout=self.stdout)
            self._print_write_keys()
            if not portal_only:
                self._start_pipeline(var, addrport, no_traffic, traffic_rate)
                self.supervisor.watch()
            self.stdout.write(self.style.SUCCESS(
                f"Portal: http://{addrport}/   API docs: http://{addrport}/api/v1/docs/   "
                f"Schema Registry: http://{addrport}/registry/   Logs: {var / 'logs'}"))
            if not portal_only and not no_traffic:
                # One access-log line per collector request would bury everything else. Set it in
                # LOGGING too: Celery's Django fixup may run django.setup() again and reapply it.
                settings.LOGGING["loggers"]["django.server"]["level"] = "WARNING"
                logging.getLogger("django.server").setLevel(logging.WARNING)
            call_command("runserver", addrport, use_reloader=False)
        except KeyboardInterrupt:
            pass
        finally:
            self._stop_children()
            signal.signal(signal.SIGTERM, previous)

    def _prometheus_dir_fresh(self, var: Path) -> None:
        """/metrics sums the counts of the portal and every worker through one directory (prometheus_client's
        multiprocess mode): set it for this process and its children before any imports prometheus_client,
        and empty it, since files of an earlier run would keep adding up."""
        folder = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or var / "prometheus")
        if "prometheus_client" in sys.modules:  # picked its mode already: this process would count alone
            self.stderr.write("prometheus_client was imported before run_embedded set PROMETHEUS_MULTIPROC_DIR; "
                              "/metrics will miss the portal's own counts")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
        settings.PROMETHEUS_MULTIPROC_DIR = str(folder)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        # each child in a session of its own: Ctrl-C reaches only this process, which stops them in order
        with (self.var / "logs" / f"{name}.log").open("ab") as log:
            return subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,  # noqa: S603 - our own commands
                                    env=dict(os.environ), start_new_session=True)

    def _report(self, line: str) -> None:
        self.stderr.write(f"{time.strftime('%H:%M:%S')} make run: {line}")

    def _wait_port(self, name: str, host: str, port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise CommandError(f"{name} exited (code {proc.returncode}); see {settings.VAR_DIR}/logs/{name}.log")
            if _port_open(host, port):
                return
            time.sleep(0.2)
        raise CommandError(f"{name} did not start listening on {host}:{port} within {timeout:.0f}s")

    def _start_pipeline(self, var: Path, addrport: str, no_traffic: bool, traffic_rate: float) -> None:
        manage = [sys.executable, str(ROOT / "manage.py")]
        aws = urlsplit(settings.AWS_ENDPOINT_URL or "")
        if aws.hostname not in ("127.0.0.1", "localhost"):
            raise CommandError("The embedded default needs AWS_ENDPOINT_URL on loopback (the local emulator).")
        for name, host, port in (("local_aws", aws.hostname, aws.port or 80),
                                 ("warehouse_server", settings.SNOWFLAKE["host"], int(settings.SNOWFLAKE["port"]))):
            if _port_open(host, port):
                raise CommandError(f"{host}:{port} is already in use; stop whatever runs there ({name}).")
        aws_proc = self.supervisor.start("local_aws", [*manage, "local_aws"])
        warehouse_proc = self.supervisor.start("warehouse_server", [*manage, "warehouse_server"])
        self._wait_port("local_aws", aws.hostname, aws.port or 80, aws_proc)
        self._wait_port("warehouse_server", settings.SNOWFLAKE["host"], int(settings.SNOWFLAKE["port"]),
                        warehouse_proc)
        from ingest_workers.aws import stream_ensure
        from warehouse.connection import warehouse_connect
        from warehouse.ddl import warehouse_ensure

        stream_ensure(settings.KINESIS_SHARD_COUNT, stream_name=settings.KINESIS_STREAM_NAME)
        with warehouse_connect() as conn:
            warehouse_ensure(conn)
        self.stdout.write(f"Local AWS on {settings.AWS_ENDPOINT_URL}; warehouse on "
                          f"{settings.SNOWFLAKE['host']}:{settings.SNOWFLAKE['port']}.")
        celery = [sys.executable, "-m", "celery", "-A", "portal"]
        # the ingest pool: a worker whose long-lived shard consumer reads the stream (see
        # ingest_workers.consumer); the other queues have a worker of their own
        self.supervisor.start("ingest", [*celery, "worker", "-Q", "ingest", "--pool", "solo", "--shard-consumer",
                               "-n", "ingest@%h", "-l", "INFO"])
        self.supervisor.start("worker", [*celery, "worker", "-Q", "default,models,replay,quality,deletion",
                               "--concurrency", "2", "-n", "worker@%h", "-l", "INFO"])
        self.supervisor.start("beat", [*celery, "beat", "-l", "INFO", "-s", str(var / "celerybeat-schedule")])
        self.stdout.write("Celery workers (ingest pool with a shard consumer; the other queues) and beat started.")
        if not no_traffic:
            self.supervisor.start("traffic", traffic_argv(
                manage, addrport, rate=traffic_rate, break_source=self.demo_break, break_after=self.demo_break_after,
                break_fix_after=self.demo_break_fix_after))
            self.stdout.write(f"Traffic generator: {traffic_rate:g} events/s through the collectors.")
            if self.demo_break:
                fixed = (f"it is fixed {self.demo_break_fix_after:g} s later" if self.demo_break_fix_after
                         else "it stays broken")
                self.stdout.write(f"Demo: in {self.demo_break_after:g} s {self.demo_break} starts sending a field with "
                                  f"the wrong type, then drops its volume; {fixed} (--no-demo-break turns this off).")

    def _print_write_keys(self) -> None:
        """The demo sources' write keys: the same ones the traffic generator sends with, kept across
        restarts in var/demo-write-keys.json."""
        from contracts.management.commands.seed_demo import demo_write_keys_ensure, demo_write_keys_path

        keys = demo_write_keys_ensure()
        self.stdout.write(f"Write keys for POST /collect/v1/batch (kept in {demo_write_keys_path()}):")
        for name, key in keys.items():
            self.stdout.write(f"  {name:<14} {key or '(rotated in the portal: use your key; no demo traffic for it)'}")

    def _stop_children(self) -> None:
        """Stop the children in order, within a bounded time; further Ctrl-Cs only hurry it."""
        hurry = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: hurry.set())
        try:
            from warehouse.connection import pool_close

            pool_close()  # the portal's own pooled connections (pipeline page), while the warehouse answers
            if self.supervisor.children:
                self.stdout.write("Stopping: traffic, then workers and beat, then the warehouse and local AWS…")
            self.supervisor.stop_all([(["traffic"], 5.0), (["beat", "worker", "ingest"], 20.0),
                                      (["warehouse_server", "local_aws"], 10.0)], hurry=hurry)
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
