"""``python manage.py models_run [--full-refresh]``: run the curated models now."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from warehouse.modeling.runner import ModelResult


class Command(BaseCommand):
    help = ("Run the curated models (IDENTITY.*, ANALYTICS.*) once, incrementally: only what the events "
            "merged since the last run touch. --full-refresh rebuilds everything from CANONICAL.EVENTS.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--full-refresh", action="store_true",
                            help="empty the curated tables and the identity graph, and rebuild them")

    def handle(self, *args, full_refresh: bool = False, **options) -> None:
        from warehouse.modeling.service import models_run_recorded

        def progress(result: ModelResult) -> None:
            if result.status == "running":
                return
            line = f"{result.name:<27} {result.status:<10} {result.rows_changed:>9} rows  {result.duration_ms:>7} ms"
            if result.error:
                line += f"  {result.error}"
            elif result.status == "skipped" and result.detail.get("reason"):
                line += f"  ({result.detail['reason']})"
            self.stdout.write(line)

        mode = "full refresh" if full_refresh else "incremental"
        self.stdout.write(f"Running the curated models ({mode})…")
        run = models_run_recorded(trigger="manual", full_refresh=full_refresh, progress=progress)
        if run.busy_holder:
            raise CommandError(f"Another model run is in progress ({run.busy_holder}); nothing was run. "
                               "Try again when it finishes (see /analytics/runs/).")
        if run.report is None:
            raise CommandError(f"No model ran: {run.error}")
        if not run.report.ok:
            failed = [m.name for m in run.report.models if m.status == "failed"]
            raise CommandError(f"Run {run.run_id} failed in {', '.join(failed)}; the models after it were skipped. "
                               "The next run retries the same work.")
        events = run.report.model("changes").detail.get("events", 0)
        self.stdout.write(self.style.SUCCESS(
            f"Run {run.run_id}: {events} new or changed events, {run.report.rows_changed} rows changed."))
