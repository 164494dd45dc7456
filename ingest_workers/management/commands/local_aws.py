"""`manage.py local_aws`: the local AWS emulator (moto's server) for the embedded default.

Runs in the foreground on the host and port of settings.AWS_ENDPOINT_URL, creates the Kinesis stream
and the raw-archive bucket, prints one ready line, and stops cleanly on SIGTERM or Ctrl-C. moto keeps
everything in memory: a restart starts with an empty stream and bucket. Requests are served one at
a time (see `aws.LocalAwsServer`: moto's Kinesis loses records under concurrent writes).
"""

from __future__ import annotations

import logging
import signal
import threading
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ingest_workers import aws


class Command(BaseCommand):
    help = ("Run the local AWS emulator (moto: Kinesis and S3) on settings.AWS_ENDPOINT_URL, with the stream "
            "and the raw-archive bucket created. Stops on SIGTERM or Ctrl-C.")

    def add_arguments(self, parser):
        parser.add_argument("--verbose-requests", action="store_true", help="Log every request moto serves.")

    def handle(self, *args, verbose_requests: bool, **options):
        endpoint = settings.AWS_ENDPOINT_URL
        if not endpoint:
            raise CommandError("AWS_ENDPOINT_URL is not set: this command runs the local emulator, not real AWS.")
        parts = urlsplit(endpoint)
        host, port = parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80)
        if parts.scheme != "http":
            raise CommandError(f"The emulator serves plain http; AWS_ENDPOINT_URL is {endpoint}.")
        if not verbose_requests:
            logging.getLogger("werkzeug").setLevel(logging.WARNING)
        try:
            server = aws.LocalAwsServer(host, port)
        except OSError as err:
            raise CommandError(f"Cannot listen on {host}:{port}: {err.strerror} (another emulator running?).") from None

        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
        server.start()
        try:
            summary = aws.stream_ensure(settings.KINESIS_SHARD_COUNT, stream_name=settings.KINESIS_STREAM_NAME)
            bucket = aws.bucket_ensure(settings.RAW_ARCHIVE_BUCKET)
            self.stdout.write(self.style.SUCCESS(
                f"Local AWS ready on {endpoint}: Kinesis stream '{summary['StreamName']}' "
                f"({summary['OpenShardCount']} shards), S3 bucket '{bucket}'."
            ))
            self.stdout.flush()
            while not stop.wait(0.5):  # a timed wait lets the signal handler run promptly
                pass
        finally:
            server.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.stdout.write("Local AWS stopped.")
