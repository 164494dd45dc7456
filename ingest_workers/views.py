"""Portal pages for the pipeline: quarantine (list, one record, re-drive) and live pipeline status.

Views are adapters: reads through ``ingest_workers.page_selectors``, the re-drive through
``ingest_workers.redrive``. The warehouse may be down: every page then says so plainly (a 503 for
the quarantine pages, the shard table still shown on the pipeline page), never a 500.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from ingest_workers import masking, page_selectors, payload_view
from ingest_workers.pipeline import REASON_CODES
from portal.roles import is_data_engineer
from portal.selectors import data_engineers
from warehouse.ddl import QUARANTINE_STATUSES

#: how long a page waits for the warehouse login before it says the warehouse is unreachable
PAGE_LOGIN_TIMEOUT = 5
#: "re-drive everything that matches" takes at most this many records per request
REDRIVE_ALL_MAX = 10_000
NOT_ALLOWED = ("Quarantined records are shown to data engineers and to members of the team that owns "
               "the source. Ask a data engineer, or to be added to the source's team.")
REASON_HELP = {
    "undecodable": "Not JSON, or not UTF-8.",
    "invalid_envelope": "JSON, but the stream record lacks a source, a receive time or a payload object.",
    "oversize": "The payload is over 64 KB.",
    "number_out_of_range": "An integer beyond 64 bits, which would lose digits; the sender should send it as a string.",
    "unknown_source": "No registered source has the name the record gives.",
    "source_disabled": "The source is switched off, so its events are not ingested.",
    "no_approved_contract": "The source has no approved contract (version) for this record.",
    "schema_violation": "Every approved version of the contract rejects the payload; the path says where.",
    "mapping_failure": "The payload is valid, but the mapping could not turn it into canonical events.",
    "internal_error": "The pipeline failed on this record unexpectedly; the detail has the error.",
}
STATUS_HELP = {
    "new": "still quarantined",
    "redriven": "re-driven: landed (or now skipped on purpose by the contract)",
    "resolved": "closed by hand",
}


@contextlib.contextmanager
def _warehouse() -> Iterator[Any]:
    from ingest_workers.services import warehouse_ready
    from warehouse.connection import pooled_connection

    # pooled: a page (and the pipeline page's poll every 5 s) does not log in to the warehouse
    with pooled_connection(workload="dashboards", login_timeout=PAGE_LOGIN_TIMEOUT) as conn:
        warehouse_ready(conn)
        yield conn


def _warehouse_down(request: HttpRequest, err: Exception, *, title: str) -> HttpResponse:
    return render(request, "ingest_workers/warehouse_down.html", {"error": err, "title": title}, status=503)


def _scope_or_refuse(request: HttpRequest) -> page_selectors.QuarantineScope:
    scope = page_selectors.quarantine_scope(request.user)
    if scope is None:
        raise PermissionDenied(NOT_ALLOWED)
    return scope


def _page_number(value: Any) -> int:
    try:
        return max(1, min(int(value), 1_000_000))
    except (TypeError, ValueError):
        return 1


def _outcome_label(result: Any) -> str:
    if not isinstance(result, dict):
        return ""
    outcome = result.get("outcome")
    if outcome == "landed":
        return f"landed {result.get('events', 0)} event{'s' if result.get('events') != 1 else ''}"
    if outcome == "skipped":
        return "skipped by the contract"
    if outcome == "still_quarantined":
        return f"still failing ({result.get('reason_code')})"
    if outcome == "in_progress":
        return f"re-drive in progress ({result.get('by') or 'someone'})"
    if outcome == "erased":
        return "unreadable: erased subject"
    if outcome == "suppressed":
        return "dropped: erased subject"
    return str(outcome or "")


# --- quarantine list -------------------------------------------------------------------------------

@require_GET
@login_required
def quarantine_list(request: HttpRequest) -> HttpResponse:
    from warehouse.connection import WarehouseError

    scope = _scope_or_refuse(request)
    filters = page_selectors.quarantine_filters_from(request.GET)
    number = _page_number(request.GET.get("page"))
    try:
        with _warehouse() as conn:
            rows, total = page_selectors.quarantine_page(conn, scope=scope, filters=filters, page=number)
            counts = page_selectors.quarantine_reason_counts(conn, scope=scope, filters=filters)
            overview = page_selectors.quarantine_overview(conn, scope=scope, filters=filters)
    except WarehouseError as err:
        return _warehouse_down(request, err, title="Quarantine")
    for row in rows:
        row["error_path_shown"] = masking.pointer_mask(row.get("error_path"))
        row["outcome"] = _outcome_label(row.get("redrive_result"))
        row["reason_help"] = REASON_HELP.get(row.get("reason_code") or "", "")
    pages = max(1, -(-total // page_selectors.PAGE_SIZE))
    query = filters.as_query()
    can_redrive = is_data_engineer(request.user)
    return render(request, "ingest_workers/quarantine_list.html", {
        "rows": rows, "total": total, "filters": filters, "counts": counts,
        "counted_total": sum(counts.values()), "overview": _overview_cards(overview, counts, filters),
        "waiting_query": urlencode(filters.as_query(status="new", reason="")),
        "all_reasons_query": urlencode(filters.as_query(reason="")),
        "reason_cards": [{"code": code, "n": n, "help": REASON_HELP.get(code, ""), "current": code == filters.reason,
                          "query": urlencode(filters.as_query(reason=code))}
                         for code, n in counts.items() if n or code == filters.reason],
        "page": {"number": number, "pages": pages, "has_previous": number > 1, "has_next": number < pages,
                 "previous": number - 1, "next": number + 1,
                 "first_row": (number - 1) * page_selectors.PAGE_SIZE + 1 if rows else 0,
                 "last_row": (number - 1) * page_selectors.PAGE_SIZE + len(rows)},
        "filter_query": urlencode(query),
        "source_choices": page_selectors.quarantine_source_choices(request.user, scope),
        "reason_choices": REASON_CODES, "status_choices": [(s, STATUS_HELP.get(s, "")) for s in QUARANTINE_STATUSES],
        "since_choices": [(key, label) for key, label, _ in page_selectors.SINCE_CHOICES],
        "can_redrive": can_redrive, "scoped": not scope.everything,
        "redrive_inline_max": _inline_max(), "redrive_all_max": REDRIVE_ALL_MAX,
        "engineers": [] if can_redrive else data_engineers(),
        "page_url": request.build_absolute_uri(),
    })


def _aware(value: Any) -> Any:
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _overview_cards(overview: dict, counts: dict[str, int], filters: Any) -> dict:
    """The four stat cards: records, distinct reasons (and the commonest), waiting for a re-drive, oldest
    waiting (walkthrough F29: two cards used to say the same number)."""
    from django.utils import timezone

    reasons = sorted(((n, code) for code, n in counts.items() if n), reverse=True)
    oldest = _aware(overview.get("oldest_waiting_at"))
    return {
        "total": overview["total"], "waiting": overview["waiting"], "reasons": len(reasons),
        "top_reason": reasons[0][1] if reasons else "", "top_reason_n": reasons[0][0] if reasons else 0,
        "oldest_waiting_at": oldest,
        "oldest_waiting_age": duration_text((timezone.now() - oldest).total_seconds()) if oldest else "",
    }


def _inline_max() -> int:
    from ingest_workers.redrive import INLINE_MAX

    return INLINE_MAX


# --- one record --------------------------------------------------------------------------------------

@require_GET
@login_required
def quarantine_detail(request: HttpRequest, quarantine_id: str) -> HttpResponse:
    from warehouse.connection import WarehouseError

    scope = _scope_or_refuse(request)
    try:
        with _warehouse() as conn:
            row = page_selectors.quarantine_record(conn, scope=scope, quarantine_id=quarantine_id)
    except WarehouseError as err:
        return _warehouse_down(request, err, title="Quarantined record")
    if row is None:
        raise Http404("No quarantined record with that id (or it belongs to another team's source).")
    shown = _masked_record(row)
    return render(request, "ingest_workers/quarantine_detail.html", {
        "row": row, **shown, "reason_help": REASON_HELP.get(row.get("reason_code") or "", ""),
        "status_help": STATUS_HELP.get(row.get("status") or "", ""),
        "source": page_selectors.source_for_link(row.get("source")),
        "can_redrive": is_data_engineer(request.user) and row.get("status") == "new",
        "is_engineer": is_data_engineer(request.user),
        "engineers": [] if is_data_engineer(request.user) else data_engineers(),
        "page_url": request.build_absolute_uri(),
    })


def _masked_record(row: dict) -> dict:
    """The payload, detail, path and re-drive history as a person may see them (personal values masked)."""
    payload = row.get("payload")
    paths = page_selectors.source_personal_paths(row.get("source"))
    if row.get("reason_code") == "invalid_envelope":
        paths = {f"payload.{p}" for p in paths}  # the whole stream record was kept; the payload is inside
    if isinstance(payload, (dict, list)):
        masked = masking.payload_mask(payload, personal_paths=paths)
    else:  # raw text that was not JSON: nothing of it is shown
        masked = masking.MaskedPayload(masking.masked_marker(payload) if payload is not None else None,
                                       ["/"] if payload is not None else [])
    secrets = masked.secrets
    result = row.get("redrive_result") if isinstance(row.get("redrive_result"), dict) else None
    history = []
    if result:
        for entry in result.get("history") or []:
            if isinstance(entry, dict):
                history.append({**entry, "reason_detail": masking.detail_mask(entry.get("reason_detail"), secrets),
                                "error_path": masking.pointer_mask(entry.get("error_path"), secrets)})
    reason_detail = masking.detail_mask(row.get("reason_detail"), secrets)
    error_path = masking.pointer_mask(row.get("error_path"), secrets)
    # the paths the error names, highlighted in the payload (not for a whole stream record kept as it came)
    failing = [] if row.get("reason_code") == "invalid_envelope" else payload_view.failing_pointers(
        error_path, reason_detail)
    return {
        "payload_lines": payload_view.json_lines(masked.value, failing), "failing_paths": failing,
        "masked_count": masked.masked_count,
        "masked_paths": masked.masked_paths[:200],
        "reason_detail": reason_detail, "error_path": error_path,
        "redrive_result": result, "redrive_outcome": _outcome_label(result), "history": history,
    }


# --- re-drive -----------------------------------------------------------------------------------------

def _back(request: HttpRequest) -> str:
    target = request.POST.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return reverse("quarantine_list")


@require_POST
@login_required
def quarantine_redrive(request: HttpRequest) -> HttpResponse:
    """Re-drive the ticked records (or every record matching the filters), inline when small."""
    from ingest_workers.redrive import INLINE_MAX
    from ingest_workers.redrive import quarantine_redrive as redrive
    from ingest_workers.services import TransientError
    from warehouse.connection import WarehouseError

    if not is_data_engineer(request.user):
        raise PermissionDenied("Only data engineers may re-drive quarantined records.")
    back = _back(request)
    ids = [i for i in request.POST.getlist("ids") if i.strip()]
    try:
        if request.POST.get("all_matching") == "1":
            filters = page_selectors.quarantine_filters_from(request.POST)
            with _warehouse() as conn:
                ids = page_selectors.quarantine_ids_matching(
                    conn, scope=page_selectors.QuarantineScope(everything=True),
                    filters=dataclasses.replace(filters, status="new"),
                    limit=REDRIVE_ALL_MAX + 1)
            if len(ids) > REDRIVE_ALL_MAX:
                messages.error(request, f"More than {REDRIVE_ALL_MAX:,} records match; narrow the filters "
                                        "(source, reason, since) and re-drive in parts.")
                return redirect(back)
        if not ids:
            messages.warning(request, "Nothing to re-drive: tick the records first (only records still in "
                                      "quarantine, status new, are re-driven).")
            return redirect(back)
        if len(ids) <= INLINE_MAX:
            result = redrive(actor=request.user, quarantine_ids=ids)
            level = messages.success if not result.still_quarantined else messages.warning
            level(request, result.summary())
            return redirect(back)
    except (TransientError, WarehouseError) as err:
        messages.error(request, f"The warehouse could not be reached ({err}). Records not re-driven yet are "
                                "unchanged and still in quarantine; try again in a minute.")
        return redirect(back)
    from ingest_workers.redrive_tasks import quarantine_redrive_task

    request_id = uuid.uuid4().hex
    user_id = request.user.pk
    transaction.on_commit(lambda: quarantine_redrive_task.apply_async((ids, user_id, request_id)))
    messages.info(request, f"{len(ids):,} records queued for re-drive (request {request_id[:8]}). They run on the "
                           "replay workers; refresh this page to see them change status.")
    return redirect(back)


# --- pipeline status ---------------------------------------------------------------------------------

def _pipeline_context() -> dict:
    from django.conf import settings

    from warehouse.connection import WarehouseError

    context: dict[str, Any] = {"stream": settings.KINESIS_STREAM_NAME, "numbers": None, "warehouse_error": None}
    try:
        with _warehouse() as conn:
            context["numbers"] = page_selectors.pipeline_numbers(conn)
    except WarehouseError as err:
        context["warehouse_error"] = err
    numbers = context["numbers"] or {}
    context["freshness"] = {key: duration_text(numbers.get(f"{key}_age_s"))
                            for key in ("newest_received", "last_merged", "last_landed")}
    shards = page_selectors.shard_rows()
    for row in shards:
        lag = row["lease"].millis_behind_latest
        row["lag_text"] = duration_text(lag / 1000) if lag is not None else ""
        row["last_batch_text"] = duration_text(row["last_batch_age_s"])
    context["shards"] = shards
    context["records_read"] = sum(s["lease"].records_read for s in shards)
    context.update(_lag_summary(shards))
    context["collector_answers"] = page_selectors.collector_answers_last_hour()
    context["trends"] = page_selectors.pipeline_trends()
    # `make run` only: its supervised processes (restarts, exits); None on a deployed portal
    from portal.supervision import processes_for_page

    context["processes"] = processes_for_page(settings.VAR_DIR)
    return context


def _lag_summary(shards: list[dict]) -> dict:
    """The largest lag of the shards being read now, and the shards that are not (whose figure is stale)."""
    live = [s["lease"].millis_behind_latest for s in shards
            if s["lag_current"] and s["lease"].millis_behind_latest is not None]
    stale = [s for s in shards if not s["lag_current"] and s["state"] != "finished"]
    ages = [s["last_batch_age_s"] for s in stale if s["last_batch_age_s"] is not None]
    return {"max_lag_text": duration_text(max(live) / 1000) if live else "", "stale_shards": len(stale),
            "stale_oldest_text": duration_text(max(ages)) if ages else ""}


def duration_text(seconds: float | None) -> str:
    """12 s, 4 min 3 s, 3 h 12 min, 2 d 3 h ("" for None)."""
    if seconds is None:
        return ""
    s = int(max(0, seconds))
    if seconds < 1:
        return "under 1 s"
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


@require_GET
@login_required
def pipeline_status(request: HttpRequest) -> HttpResponse:
    return render(request, "ingest_workers/pipeline.html", _pipeline_context())


@require_GET
@login_required
def pipeline_live(request: HttpRequest) -> HttpResponse:
    """The numbers alone, for the page's 5-second htmx poll."""
    response = render(request, "ingest_workers/_pipeline_live.html", _pipeline_context())
    response["Cache-Control"] = "no-store"
    return response
