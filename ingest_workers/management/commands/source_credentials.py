"""`manage.py source_credentials SOURCE`: show, rotate and set a source's collector credentials.

    source_credentials slack-bot                          # key prefix, rotation time, signing secret set?
    source_credentials web-chat --rotate-write-key        # prints the new write key (shown once)
    echo "$SLACK_SIGNING_SECRET" | source_credentials slack-bot --signing-secret -

The changes go through the contracts services, which check permissions and write audit records.
`--actor USERNAME` names the person the audit record is for (a member of the source's team or an
admin); without it the command acts as "system".
"""

from __future__ import annotations

import sys

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from contracts import selectors, services
from contracts.errors import ContractError
from portal.roles import SYSTEM


class Command(BaseCommand):
    help = ("Show a source's write-key prefix, rotation time and whether a webhook signing secret is set; "
            "rotate its write key; or store its webhook provider's signing secret.")

    def add_arguments(self, parser):
        parser.add_argument("source", help="The source's name (e.g. slack-bot) or id.")
        parser.add_argument("--rotate-write-key", action="store_true",
                            help="Issue a new write key and print it (the old one stops working at once).")
        parser.add_argument("--signing-secret", metavar="SECRET",
                            help="Store the provider's webhook signing secret ('-' reads it from stdin, which "
                                 "keeps it out of the shell history).")
        parser.add_argument("--actor", metavar="USERNAME",
                            help="The user to record in the audit log (default: system).")

    def handle(self, *args, source: str, rotate_write_key: bool, signing_secret: str | None,
               actor: str | None, **options):
        try:
            found = selectors.source_by_name_or_id(source)
        except ContractError as err:
            raise CommandError(err.message) from None
        acting = SYSTEM
        if actor:
            acting = get_user_model().objects.filter(username=actor, is_active=True).first()
            if acting is None:
                raise CommandError(f"No active user named '{actor}'.")
        try:
            if signing_secret is not None:
                secret = sys.stdin.readline().rstrip("\r\n") if signing_secret == "-" else signing_secret
                found = services.source_signing_secret_set(actor=acting, source=found, secret=secret)
                self.stdout.write(f"Signing secret stored for {found.name}.")
            if rotate_write_key:
                key = services.source_write_key_rotate(actor=acting, source=found)
                found = selectors.source_by_name_or_id(found.pk)
                self.stdout.write(f"New write key for {found.name} (shown once): {key}")
        except ContractError as err:
            hint = " Name a team member or admin with --actor USERNAME." if err.code == "forbidden" else ""
            raise CommandError(f"{err.message}{hint}") from None
        rotated = found.write_key_rotated_at.isoformat() if found.write_key_rotated_at else "never"
        self.stdout.write(f"source:            {found.name} (id {found.pk}, {found.platform} {found.kind}, "
                          f"{'active' if found.is_active else 'DISABLED'})")
        if found.kind == "webhook":
            self.stdout.write("write key prefix:  (none: a webhook source's events are signed by the provider)")
            self.stdout.write(f"signing secret:    {'set' if found.signing_secret else 'not set'}")
            return
        self.stdout.write(f"write key prefix:  wk_{found.write_key_prefix}_…" if found.write_key_prefix
                          else "write key prefix:  (none)")
        self.stdout.write(f"key rotated at:    {rotated}")
