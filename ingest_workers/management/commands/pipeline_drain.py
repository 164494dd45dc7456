import json

from django.core.management.base import BaseCommand, CommandError

from ingest_workers.services import pipeline_drain


class Command(BaseCommand):
    help = ("Consume the stream until it is empty and the merge is done, then print counts: "
            "read, valid, quarantined, duplicates, merged.")

    def add_arguments(self, parser):
        parser.add_argument("--stream", help="Kinesis stream (default: KINESIS_STREAM_NAME)")
        parser.add_argument("--max-seconds", type=float, default=600.0, help="give up after this long")
        parser.add_argument("--json", action="store_true", help="print the counts as JSON")

    def handle(self, *args, stream=None, max_seconds=600.0, **options):
        try:
            report = pipeline_drain(stream=stream, max_seconds=max_seconds,
                                    progress=None if options["json"] else lambda line: self.stderr.write(line))
        except Exception as err:  # the operator needs the reason, not a traceback
            raise CommandError(f"drain failed: {err}") from err
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict()))
            return
        for key in ("read", "valid", "quarantined", "duplicates", "merged"):
            self.stdout.write(f"{key:<12} {getattr(report, key)}")
