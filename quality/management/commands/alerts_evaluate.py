"""``manage.py alerts_evaluate``: one alert cycle now (what the beat runs every QUALITY_ALERT_INTERVAL_S)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = ("Evaluate every alert rule (QUALITY_ALERT_RULES) now: open an alert for each new condition, resolve "
            "the alerts whose condition cleared, send the notifications due (first tries and retries), and print "
            "the open alerts. A rule that fails is reported and its open alerts are left open.")

    def add_arguments(self, parser):
        parser.add_argument("--no-send", action="store_true",
                            help="open and resolve alerts but send no notification in this cycle (they stay due)")

    def handle(self, *args, **options):
        from quality.alerts import alerts_evaluate
        from quality.models import Alert

        outcome = alerts_evaluate(send=not options["no_send"])
        if "skipped" in outcome:
            raise CommandError(f"{outcome['skipped']} (the beat's, or another command's); try again in a moment")
        self.stdout.write(f"{outcome['rules']} rules: {outcome['opened']} opened, {outcome['still_open']} still open, "
                          f"{outcome['resolved']} resolved; notifications: "
                          + (", ".join(f"{n} {s}" for s, n in sorted(outcome["notifications"].items())) or "none"))
        for path, error in outcome["failed_rules"].items():
            self.stdout.write(self.style.ERROR(f"rule {path} failed: {error}"))
        for alert in Alert.objects.filter(resolved_at__isnull=True).order_by("opened_at"):
            self.stdout.write(f"  open since {alert.opened_at:%Y-%m-%d %H:%M:%S}: [{alert.severity}] {alert.summary}")
