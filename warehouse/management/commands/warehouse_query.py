"""``manage.py warehouse_query "SELECT …"``: run one statement, print the rows as a JSON list."""

from __future__ import annotations

import logging

import orjson
from django.core.management.base import BaseCommand, CommandError

from warehouse.connection import WarehouseError, WarehouseUnavailable, warehouse_connection
from warehouse.load import warehouse_query


class Command(BaseCommand):
    help = "Run one SQL statement against the warehouse and print the rows as a JSON list of objects."

    def add_arguments(self, parser):
        parser.add_argument("sql", help='the statement, e.g. "SELECT COUNT(*) AS N FROM CANONICAL.EVENTS"')
        parser.add_argument("--compact", action="store_true", help="one line instead of indented JSON")

    def handle(self, *args, **options):
        # the connector logs every login at INFO; this command reports problems itself
        logging.getLogger("snowflake.connector").setLevel(logging.ERROR)
        try:
            with warehouse_connection() as conn:
                rows = warehouse_query(conn, options["sql"])
        except WarehouseUnavailable as err:
            raise CommandError(f"The warehouse is unreachable: {err} (is `manage.py warehouse_server` running?)") \
                from err
        except WarehouseError as err:
            raise CommandError(f"The warehouse refused the statement: {err}") from err
        option = orjson.OPT_NON_STR_KEYS | (0 if options["compact"] else orjson.OPT_INDENT_2)
        self.stdout.write(orjson.dumps(rows, option=option, default=str).decode())
