"""``manage.py quality_contract --table T [--out FILE]``: print (or write) a table's generated Soda contract."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Print the Soda contract generated for a table from the canonical model and the contract registry."

    def add_arguments(self, parser):
        parser.add_argument("--table", required=True, metavar="SCHEMA.TABLE", help="e.g. CANONICAL.EVENTS")
        parser.add_argument("--out", metavar="FILE", help="write the YAML to this file instead of printing it")

    def handle(self, *args, **options):
        from quality.selectors import contract_generated

        try:
            contract = contract_generated(options["table"])
        except ValueError as err:
            raise CommandError(str(err)) from err
        if options["out"]:
            Path(options["out"]).write_text(contract.yaml, encoding="utf-8")
            self.stdout.write(f"wrote {options['out']} ({len(contract.checks)} checks, {contract.fingerprint[:12]})")
        else:
            self.stdout.write(contract.yaml, ending="")
