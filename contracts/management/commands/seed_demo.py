"""Seed the demo: roles, the chat-platform team, one user per role, the canonical model, six sources,
and the model price catalog for the models the demo sources request."""

import datetime as dt
import json
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from contracts import presets, services
from contracts.models import Source
from portal.roles import Role
from portal.services import role_groups_ensure, team_ensure
from warehouse.services import price_catalog_seed

# Development-only passwords: the command refuses to run with DEBUG=0 unless forced.
DEMO_USERS = [
    ("platform", Role.PLATFORM, "platform-demo-pass"),
    ("engineer", Role.DATA_ENGINEER, "engineer-demo-pass"),
    ("privacy", Role.PRIVACY, "privacy-demo-pass"),
    ("admin", Role.ADMIN, "admin-demo-pass"),
]


# USD per million tokens (input, cached input, output) of every model the presets' samples request, and
# the dated snapshots responses name (priced alike, for requests that report only the response model).
DEMO_MODEL_PRICES = {
    "gpt-4.1-mini": ("0.40", "0.10", "1.60"),
    "gpt-4.1-mini-2025-04-14": ("0.40", "0.10", "1.60"),
    "o4-mini": ("1.10", "0.275", "4.40"),
    "o4-mini-2025-04-16": ("1.10", "0.275", "4.40"),
    "gpt-4o-realtime-preview": ("5.00", "2.50", "20.00"),
    "gpt-4o-realtime-preview-2025-06-03": ("5.00", "2.50", "20.00"),
}
DEMO_PRICES_FROM = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def demo_signing_secret(source_name: str) -> str:
    return f"demo-signing-secret-{source_name}"


def demo_write_keys_path() -> Path:
    return Path(settings.VAR_DIR) / "demo-write-keys.json"


def demo_write_keys_ensure(new_keys: dict[str, str] | None = None) -> dict[str, str | None]:
    """The write keys of the demo's SDK and backend sources, kept in ``var/demo-write-keys.json``
    (development only, owner-readable) so that what ``make run`` prints and what the traffic generator
    sends are the same keys, across restarts. A source the file knows nothing of gets a new key (the
    file was lost); one whose kept key no longer works was rotated by a person, whose key stands: it is
    left out (None), and the generator sends nothing for it. ``new_keys``: keys just issued (seed_demo)."""
    from portal.roles import SYSTEM

    path = demo_write_keys_path()
    try:
        kept = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        kept = {}
    kept = {name: key for name, key in kept.items() if isinstance(name, str) and isinstance(key, str)}
    kept.update(new_keys or {})
    keys: dict[str, str | None] = {}
    for source in Source.objects.filter(name__in=presets.DEMO_SOURCES).exclude(kind="webhook").order_by("name"):
        key = kept.get(source.name)
        if key is None:
            keys[source.name] = services.source_write_key_rotate(actor=SYSTEM, source=source)
        else:
            keys[source.name] = key if services.source_write_key_matches(source, key) else None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(json.dumps({**kept, **{k: v for k, v in keys.items() if v}}, indent=2) + "\n")
    return keys


class Command(BaseCommand):
    help = "Create the demo team, users, canonical model and six sources with approved contracts (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="Run even with DEBUG=0 (creates known passwords).")
        parser.add_argument("--quiet-keys", action="store_true", help="Do not print new write keys.")

    def handle(self, *args, force: bool, quiet_keys: bool, **options):
        if not settings.DEBUG and not force:
            raise CommandError("seed_demo creates users with known passwords; refusing with DEBUG=0 (use --force).")
        with transaction.atomic():
            users, new_keys = self._seed()
        self.stdout.write(self.style.SUCCESS("Demo data ready."))
        self.stdout.write("Sign in to the portal with (development passwords):")
        for username, role, password in DEMO_USERS:
            self.stdout.write(f"  {username:<9} {password:<20} {role.value}")
        if settings.DEBUG and new_keys:
            demo_write_keys_ensure(dict(new_keys))  # kept for make run and the traffic generator
        for name, key in new_keys:
            if not quiet_keys:
                self.stdout.write(f"  write key for {name}: {key}  (shown once; rotate with the portal)")

    def _seed(self):
        groups = role_groups_ensure()
        team = team_ensure(name="chat-platform", display_name="Chat platform")
        user_model = get_user_model()
        users = {}
        for username, role, password in DEMO_USERS:
            user, created = user_model.objects.get_or_create(
                username=username, defaults={"email": f"{username}@chatorbit.example"}
            )
            if created:
                user.set_password(password)
            if role is Role.ADMIN:
                user.is_superuser = user.is_staff = True
            user.save()
            user.groups.add(groups[role])
            users[username] = user
        team.members.add(users["platform"])
        services.canonical_contract_ensure(actor=users["admin"])
        new_keys = []
        for preset in presets.demo_presets():
            source = Source.objects.filter(name=preset["source"]).first()
            if source is None:
                source, key = services.source_create(
                    actor=users["platform"], team=team, name=preset["source"], platform=preset["platform"],
                    kind=preset["kind"], product=preset.get("product", ""), description=preset.get("description", ""),
                )
                if key:  # webhook sources have none: their events are signed by the provider
                    new_keys.append((source.name, key))
            if source.kind == "webhook" and not source.signing_secret:
                # Development secrets, so the traffic generator can sign Slack/voice requests.
                services.source_signing_secret_set(actor=users["platform"], source=source,
                                                   secret=demo_signing_secret(source.name))
            services.preset_versions_load(
                actor=users["platform"], reviewer=users["engineer"], source=source, contracts=preset["contracts"]
            )
        price_catalog_seed(
            actor=users["engineer"], effective_from=DEMO_PRICES_FROM, note="Demo list prices",
            prices=[(model, kind, price) for model, prices in DEMO_MODEL_PRICES.items()
                    for kind, price in zip(("input", "cached_input", "output"), prices, strict=True)],
        )
        return users, new_keys
