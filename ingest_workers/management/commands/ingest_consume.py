import dataclasses
import json
import signal
import time

from django.core.management.base import BaseCommand

from ingest_workers.consumer import ShardConsumer


class Command(BaseCommand):
    help = ("Run one long-lived shard consumer in the foreground (the ingest pool runs the same inside "
            "`celery -A portal worker -Q ingest --shard-consumer`). It takes its fair share of the "
            "shards, rebalances as consumers come and go, and stops cleanly on Ctrl-C or SIGTERM.")

    def add_arguments(self, parser):
        parser.add_argument("--stream", help="Kinesis stream (default: KINESIS_STREAM_NAME)")
        parser.add_argument("--max-seconds", type=float, help="stop after this long (default: run until stopped)")
        parser.add_argument("--until-idle", action="store_true",
                            help="stop once every owned shard is read to its tip (benchmarks, backfills)")
        parser.add_argument("--json", action="store_true", help="print the counts and this process's CPU time as JSON")

    def handle(self, *args, stream=None, max_seconds=None, **options):
        consumer = ShardConsumer(stream=stream, gc_settle=True)  # this process only consumes
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: consumer.stop())
        self.stderr.write(f"consumer {consumer.worker_id} on {consumer.stream}")
        wall, cpu = time.perf_counter(), time.process_time()
        stats = consumer.run(max_seconds=max_seconds, until_idle=options["until_idle"])
        if options["json"]:
            figures = {k: v for k, v in dataclasses.asdict(stats).items() if not k.startswith("_")}
            self.stdout.write(json.dumps({**figures, "seconds": time.perf_counter() - wall,
                                          "cpu_seconds": time.process_time() - cpu}))
            return
        self.stdout.write(f"read {stats.read} records in {stats.units} units; took {stats.taken} shards, "
                          f"stole {stats.stolen}, lost {stats.lost}; {stats.failures} failed units")
