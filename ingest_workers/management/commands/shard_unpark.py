from django.conf import settings
from django.core.management.base import BaseCommand

from ingest_workers.models import ShardLease
from ingest_workers.services import shard_unpark


class Command(BaseCommand):
    help = ("List parked shards (their batches kept failing after every retry) or let them be read "
            "again now: `shard_unpark --all` or `shard_unpark <shard id>`. Fix the cause first (see "
            "the reason shown): a parked shard is otherwise retried every INGEST_PARKED_RETRY_SECONDS.")

    def add_arguments(self, parser):
        parser.add_argument("shard_id", nargs="?", help="the shard to unpark")
        parser.add_argument("--all", action="store_true", help="unpark every parked shard of the stream")
        parser.add_argument("--stream", help="Kinesis stream (default: KINESIS_STREAM_NAME)")

    def handle(self, *args, shard_id=None, stream=None, **options):
        stream = stream or settings.KINESIS_STREAM_NAME
        if not shard_id and not options["all"]:
            parked = ShardLease.objects.filter(stream=stream, parked_at__isnull=False).order_by("shard_id")
            for lease in parked:
                self.stdout.write(f"{lease.shard_id}  parked {lease.parked_at:%Y-%m-%d %H:%M:%S}Z  {lease.park_reason}")
            if not parked:
                self.stdout.write(f"no shard of {stream} is parked")
            return
        count = shard_unpark(stream=stream, shard_id=shard_id)
        self.stdout.write(f"unparked {count} shard{'s' if count != 1 else ''} of {stream}")
