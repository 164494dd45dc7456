"""``manage.py retention_run [--store STORE …]``: purge data past its retention now."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from deletion.retention import STORES


class Command(BaseCommand):
    help = (
        "Purge data older than each store keeps it, as the daily schedule does, and record the run (the Retention "
        "runs page lists it). Stores: archive (raw archive objects of dt= partitions older than "
        "RAW_ARCHIVE_RETENTION_DAYS, 180), landing (merged RAW.LANDING_EVENTS rows older than RETENTION_LANDING_DAYS, "
        "7), quarantine (RAW.QUARANTINE payloads older than RETENTION_QUARANTINE_PAYLOAD_DAYS, 30), curated "
        "(CANONICAL.EVENTS and the curated tables older than RETENTION_CURATED_DAYS, 1096). Exits non-zero when a "
        "store failed; the others still run."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--store", action="append", choices=STORES, dest="stores",
                            help="Only this store (repeat for several; default: every store).")

    def handle(self, *args, stores=None, **options) -> None:
        from deletion.retention import retention_run

        records = retention_run(stores=stores, trigger="command")
        for r in records:
            line = f"{r.store}: {r.status}, removed {r.removed} (kept {r.keep_days} days: before {r.cutoff:%Y-%m-%d})"
            self.stdout.write(line + (f": {r.error}" if r.error else ""))
        failed = [r.store for r in records if r.status == "failed"]
        if failed:
            raise CommandError(f"retention failed for {', '.join(failed)} (see the errors above)")
