"""`make run`: the platform on its embedded default — SQLite, demo data, the portal on 127.0.0.1:8000."""

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Migrate, seed the demo and serve the portal on http://127.0.0.1:8000 (embedded default)."

    def add_arguments(self, parser):
        parser.add_argument("--addrport", default="127.0.0.1:8000")

    def handle(self, *args, addrport: str, **options):
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("Database ready.")
        call_command("seed_demo", stdout=self.stdout)
        self.stdout.write(f"Portal: http://{addrport}/   API docs: http://{addrport}/api/v1/docs/   "
                          f"Schema Registry: http://{addrport}/registry/")
        call_command("runserver", addrport, use_reloader=False)
