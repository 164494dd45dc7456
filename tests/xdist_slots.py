"""Gives each pytest-xdist worker its own Redis database, named by configuration, not by code.

Loaded with ``-p tests.xdist_slots`` (pyproject's addopts) so it runs while pytest parses its options: that is
before pytest-django imports the Django settings, which read ``REDIS_URL`` and ``CELERY_BROKER_URL`` once.
Two workers on one Redis database would share Celery's queues (a real worker started by one test would take
the other worker's tasks) and every lease key. ``TEST_REDIS_URLS`` lists one URL per worker, space-separated
(``make test`` sets it); worker ``gwN`` takes the N-th. PostgreSQL needs nothing here: pytest-django gives
each worker its own test database (``test_<name>_gwN``). Without xdist this module does nothing.
"""

from __future__ import annotations

import os

_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
_urls = os.environ.get("TEST_REDIS_URLS", "").split()
if _worker.startswith("gw") and _urls:
    _index = int(_worker[2:])
    if _index >= len(_urls):
        raise SystemExit(f"TEST_REDIS_URLS names {len(_urls)} Redis URL(s) but pytest-xdist started worker "
                         f"{_worker}: give one URL per worker (-n), e.g. TEST_REDIS_URLS='redis://127.0.0.1:6379/0 "
                         "redis://127.0.0.1:6379/1'")
    os.environ["REDIS_URL"] = os.environ["CELERY_BROKER_URL"] = _urls[_index]
