"""``manage.py quality_scorecards [--evaluate] [--all]``: print the scorecards' grades and reasons."""

from __future__ import annotations

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = ("Print the latest scorecards (platform, sources, contract versions): grade, score and the reasons that "
            "lowered it, with since when. --evaluate grades them now first (the scheduled check cycle does it "
            "after its checks; this uses the latest stored check results). Green ones are listed without "
            "reasons unless --all.")

    def add_arguments(self, parser):
        parser.add_argument("--evaluate", action="store_true",
                            help="grade every scorecard now (and store a snapshot) before printing")
        parser.add_argument("--all", action="store_true", help="also list the green and no-data scorecards")

    def handle(self, *args, **options):
        from quality.selectors import scorecards_latest
        from quality.services import scorecards_evaluate

        if options["evaluate"]:
            summary = scorecards_evaluate()
            self.stdout.write(f"graded {summary['scorecards']} scorecards: "
                              + ", ".join(f"{n} {level}" for level, n in sorted(summary["levels"].items())))
        cards = scorecards_latest()
        if cards["evaluated_at"] is None:
            self.stdout.write("No scorecard yet: run with --evaluate, or wait for the scheduled check cycle.")
            return
        self.stdout.write(f"graded at {cards['evaluated_at']:%Y-%m-%d %H:%M:%S} UTC")
        rows = ([cards["platform"]] if cards["platform"] else []) + cards["own"] + cards["sources"] + cards["contracts"]
        for card in rows:
            if card.level in ("green", "unknown") and not options["all"]:
                continue
            self.stdout.write(f"{card.kind} {card.subject}: {card.level} ({card.score})")
            for reason in card.reasons_shown:
                since = f" since {reason['since_at']:%Y-%m-%d %H:%M:%S}" if reason["since_at"] else ""
                self.stdout.write(f"  {reason['severity']}: {reason['summary']}{since}")
