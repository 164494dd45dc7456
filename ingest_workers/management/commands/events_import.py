"""manage.py events_import <file.ndjson> --source <name>: put a backfill of a source's raw payloads on the
stream (ingest_workers.events_import; docs/ingestion.md)."""

import json
import sys

from django.core.management.base import BaseCommand, CommandError

from contracts.errors import NotFound
from ingest_workers.collectors import CONTRACT_NAME_RE
from ingest_workers.events_import import ImportReport, ImportSourceRefused, ImportStopped, events_import

#: refused lines listed one by one in the summary; the rest are counted (--json lists them all)
LISTED_REJECTIONS = 50


class Command(BaseCommand):
    help = ("Import a backfill: a newline-delimited JSON file of one source's raw payloads (one event object a "
            "line), put on the stream as the collector would. Events of erased subjects are dropped and counted; "
            "bad lines are listed with their line number and reason and never stop the good ones.")

    def add_arguments(self, parser):
        parser.add_argument("path", help="the NDJSON file ('-' reads standard input)")
        parser.add_argument("--source", required=True, help="the source the payloads came from (name or id)")
        parser.add_argument("--contract", help="the source's contract, when it has more than one")
        parser.add_argument("--start-line", type=int, default=1,
                            help="skip the lines before this one (to resume an import the stream stopped)")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")

    def handle(self, *args, path, source, contract=None, start_line=1, **options):
        if start_line < 1:
            raise CommandError("--start-line counts from 1.")
        if contract is not None and not CONTRACT_NAME_RE.match(contract):
            raise CommandError("--contract names one of the source's event streams, e.g. 'chat_event'.")
        try:
            handle = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as err:
            raise CommandError(f"Cannot read {path}: {err.strerror}.") from err
        quiet = options["json"]
        try:
            report = events_import(handle, source_name=source, contract=contract, start_line=start_line,
                                   progress=None if quiet else self._progress)
        except (NotFound, ImportSourceRefused) as err:  # the source lookup: before any line is read
            raise CommandError(f"{err} Nothing was imported.") from err
        except ImportStopped as err:
            self._summary(err.report, quiet)
            raise CommandError(str(err)) from err
        finally:
            if handle is not sys.stdin.buffer:
                handle.close()
        self._summary(report, quiet)

    def _progress(self, report: ImportReport) -> None:
        self.stderr.write(f"line {report.last_line}: {report.summary()}")

    def _summary(self, report: ImportReport, quiet: bool) -> None:
        if quiet:
            self.stdout.write(json.dumps(report.as_dict()))
            return
        self.stdout.write(report.summary())
        for number, code, message in report.rejected[:LISTED_REJECTIONS]:
            self.stdout.write(f"  line {number}: {code}: {message}")
        if len(report.rejected) > LISTED_REJECTIONS:
            self.stdout.write(f"  … and {len(report.rejected) - LISTED_REJECTIONS} more (--json lists them all)")
