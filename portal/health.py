"""``/healthz``: whether each dependency answers now (database, broker, stream, archive, warehouse), for a
load balancer and for people.

Each check runs in its own thread with ``HEALTHZ_TIMEOUT_S``; a check that has not answered by then is
"down" with "timed out". The body names each dependency's status and error and never a secret (URLs lose
their credentials, errors are cut short). HTTP 200 when every dependency in ``HEALTHZ_REQUIRED`` is up,
503 otherwise; the others are reported but do not fail it. No sign-in needed.

A probe reaches it whatever its Host header (a load balancer or a Kubernetes probe sends the instance's IP,
which ALLOWED_HOSTS does not list): ``portal.middleware.RequestGuardMiddleware`` answers it before Django's
host check. Anyone may ask, so the answer is computed at most once per ``HEALTHZ_CACHE_S`` seconds (one
warehouse login per period, not per request), and the dependencies' errors (host names, user names, account
ids) are shown only to the callers ``/metrics`` trusts: the loopback, or a bearer ``METRICS_TOKEN``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

__all__ = ["DEPENDENCIES", "dependency_checks", "healthz"]

DEPENDENCIES = ("database", "broker", "stream", "archive", "warehouse")
_CREDENTIALS = re.compile(r"(?<=//)[^/@\s]+@")
_SECRETS = re.compile(r"(?i)(password|secret|token|key)=[^&\s]+")


def _scrub(text: str) -> str:
    return _SECRETS.sub(r"\1=***", _CREDENTIALS.sub("***@", text))[:300]


def _database(timeout: float) -> None:
    from django.db import connection

    with connection.cursor() as cur:
        if connection.vendor == "postgresql":
            cur.execute("SET statement_timeout = %s", [int(timeout * 1000)])
        cur.execute("SELECT 1")
        cur.fetchone()


def _broker(timeout: float) -> None:
    from portal.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout)
        conn.default_channel  # noqa: B018 - opening a channel is what proves the broker answers


def _aws_client(service: str, timeout: float) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(region_name=settings.AWS_REGION, connect_timeout=timeout, read_timeout=timeout,
                    retries={"mode": "standard", "max_attempts": 1},
                    s3={"addressing_style": "path"} if settings.AWS_ENDPOINT_URL else None)
    return boto3.client(service, endpoint_url=settings.AWS_ENDPOINT_URL, aws_access_key_id=settings.AWS_ACCESS_KEY_ID,
                        aws_secret_access_key=settings.AWS_SECRET_ACCESS_KEY, config=config)


def _stream(timeout: float) -> None:
    summary = _aws_client("kinesis", timeout).describe_stream_summary(StreamName=settings.KINESIS_STREAM_NAME)
    status = summary["StreamDescriptionSummary"]["StreamStatus"]
    if status not in ("ACTIVE", "UPDATING"):
        raise RuntimeError(f"stream {settings.KINESIS_STREAM_NAME} is {status}")


def _archive(timeout: float) -> None:
    import os
    from urllib.parse import urlparse

    parsed = urlparse(settings.RAW_ARCHIVE_URL)
    if parsed.scheme == "file":
        if not os.path.isdir(parsed.path) or not os.access(parsed.path, os.W_OK):
            raise RuntimeError("the archive folder does not exist or is not writable")
        return
    if parsed.scheme != "s3":
        raise RuntimeError("RAW_ARCHIVE_URL is neither file:// nor s3://")
    _aws_client("s3", timeout).head_bucket(Bucket=parsed.netloc)


def _warehouse(timeout: float) -> None:
    from warehouse.connection import warehouse_connection

    with warehouse_connection(workload="dashboards", login_timeout=max(1, int(timeout)), network_timeout=timeout,
                              socket_timeout=timeout) as conn:
        conn.cursor().execute("SELECT 1").fetchone()


_CHECKS: dict[str, Callable[[float], None]] = {
    "database": _database, "broker": _broker, "stream": _stream, "archive": _archive, "warehouse": _warehouse}


def _run(name: str, check: Callable[[float], None], timeout: float, out: dict[str, dict]) -> None:
    from django.db import connection

    started = time.monotonic()
    try:
        check(timeout)
        out[name] = {"status": "up", "ms": int((time.monotonic() - started) * 1000)}
    except Exception as err:  # noqa: BLE001 - any failure means "down", with its (scrubbed) reason
        out[name] = {"status": "down", "ms": int((time.monotonic() - started) * 1000),
                     "error": _scrub(f"{type(err).__name__}: {err}")}
    finally:
        connection.close()  # this thread's own database connection


def dependency_checks(*, timeout: float | None = None) -> dict[str, dict]:
    """Every dependency's ``{"status": "up"|"down", "ms": …, "error"?: …}``, checked in parallel within
    ``timeout`` seconds in all."""
    timeout = settings.HEALTHZ_TIMEOUT_S if timeout is None else timeout
    out: dict[str, dict] = {}
    threads = [threading.Thread(target=_run, args=(name, check, timeout, out), daemon=True, name=f"healthz-{name}")
               for name, check in _CHECKS.items()]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout + 0.5
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return {name: out.get(name) or {"status": "down", "error": f"timed out after {timeout:g} s"}
            for name in DEPENDENCIES}


_cached: tuple[float, dict[str, dict]] | None = None
_cache_lock = threading.Lock()


def dependency_checks_cached() -> dict[str, dict]:
    """``dependency_checks()``, reused for ``HEALTHZ_CACHE_S`` seconds; concurrent callers wait for one check."""
    global _cached
    period = float(getattr(settings, "HEALTHZ_CACHE_S", 2.0))
    with _cache_lock:
        if _cached is None or time.monotonic() - _cached[0] >= period:
            _cached = (time.monotonic(), dependency_checks())
        return _cached[1]


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    from portal.prometheus import _client_allowed

    checks = dependency_checks_cached()
    if not _client_allowed(request):  # statuses only: errors name hosts, users and accounts
        checks = {name: {key: value for key, value in result.items() if key != "error"}
                  for name, result in checks.items()}
    required = [name for name in settings.HEALTHZ_REQUIRED if name in checks]
    healthy = all(checks[name]["status"] == "up" for name in required)
    body = {"status": "ok" if healthy else "unavailable",
            "dependencies": {name: {**result, "required": name in required} for name, result in checks.items()}}
    return JsonResponse(body, status=200 if healthy else 503)
