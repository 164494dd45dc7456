"""``manage.py quality_run [--table T]``: run the generated Soda checks now and print each table's outcome."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Run the data-quality checks (Soda contracts generated from the registry) now, and store the results."

    def add_arguments(self, parser):
        parser.add_argument("--table", action="append", metavar="SCHEMA.TABLE",
                            help="check only this table (repeatable), e.g. CANONICAL.EVENTS; default: every table")

    def handle(self, *args, **options):
        from quality.services import quality_run

        try:
            runs = quality_run(tables=options["table"])
        except ValueError as err:
            raise CommandError(str(err)) from err
        for run in runs:
            line = (f"{run.table}: {run.passed} passed, {run.failed} failed, {run.errors} errors"
                    + (f", {run.warned} warned" if run.warned else "")
                    + (f", {run.not_evaluated} not evaluated" if run.not_evaluated else "")
                    + f" ({run.duration_ms} ms)")
            self.stdout.write(line)
            if run.error:
                self.stdout.write(f"  {run.error}")
            for result in run.results.exclude(outcome="passed"):
                measured = "" if result.measured_value is None else f" measured {result.measured_value:g}"
                threshold = f" ({result.threshold})" if result.threshold else ""
                self.stdout.write(f"  {result.outcome}: {result.check_name}{measured}{threshold}"
                                  + (f": {result.error}" if result.error and not run.error else ""))
        self.stdout.write(f"run {runs[0].run_id}" if runs else "nothing to check")
