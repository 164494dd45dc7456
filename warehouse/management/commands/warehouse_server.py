"""``manage.py warehouse_server``: the embedded warehouse (fakesnow's server) in the foreground."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from warehouse.embedded import EmbeddedServerError, embedded_serve


class Command(BaseCommand):
    help = (
        "Run the embedded warehouse: fakesnow's Snowflake-compatible server, one process holding the "
        "database files, reached by workers, the portal and the CLI through the Snowflake connector."
    )

    def add_arguments(self, parser):
        parser.add_argument("--path", help="folder for the database files (default: VAR_DIR/warehouse)")
        parser.add_argument("--host", default=None, help="default: settings.SNOWFLAKE['host']")
        parser.add_argument("--port", type=int, default=None, help="default: settings.SNOWFLAKE['port']")
        parser.add_argument("--log-level", default="warning", help="uvicorn log level (default: warning)")
        parser.add_argument("--no-ensure", action="store_true",
                            help="don't create settings.SNOWFLAKE['database'] and its tables at start")
        parser.add_argument("--session-idle-seconds", type=float, default=None,
                            help="roll back and end a session idle this long inside a transaction (a dead "
                                 "client's; default 60)")
        parser.add_argument("--lock-timeout", type=float, default=None,
                            help="how long a statement waits for a table lock (default 43200, Snowflake's)")

    def handle(self, *args, **options):
        host = options["host"] or settings.SNOWFLAKE.get("host") or "127.0.0.1"
        port = options["port"] or int(settings.SNOWFLAKE.get("port") or 8765)
        path = Path(options["path"] or Path(settings.VAR_DIR) / "warehouse")
        try:
            embedded_serve(path=path, host=host, port=port, log_level=options["log_level"],
                           ensure_database=None if options["no_ensure"] else settings.SNOWFLAKE["database"],
                           announce=lambda line: self.stdout.write(line) or self.stdout.flush(),
                           **{key: options[opt] for key, opt in (("session_idle_seconds", "session_idle_seconds"),
                                                                 ("lock_timeout_seconds", "lock_timeout"))
                              if options[opt] is not None})
        except EmbeddedServerError as err:
            raise CommandError(str(err)) from err
