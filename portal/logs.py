"""Logging filters that keep the terminal (and the log) to one readable line per event.

An ordinary refusal (403 PermissionDenied, 401, 404) is something the portal answered as designed: the
person or client is told why. Django logs it with the exception's traceback, which in the `make run`
terminal reads like a crash (walkthrough F16), and the dev server's access log repeats every 4xx/5xx
that ``django.request`` has already reported.
"""

from __future__ import annotations

import logging


class ClientErrorsWithoutTraceback(logging.Filter):
    """On ``django.request``: a 4xx keeps its one line but not the traceback; a 403 is logged at INFO
    (refusing is the permission check working). 5xx records are left as they are."""

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500:
            record.exc_info = None
            record.exc_text = None
            if status == 403:
                record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        return True


class AlreadyReportedByDjangoRequest(logging.Filter):
    """On ``django.server`` (the dev server's access log): drop the 4xx/5xx lines, which ``django.request``
    reports already, so each refusal appears once."""

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        return not (isinstance(status, int) and status >= 400)
