"""Portal pages: sources, contracts and their versions, the review queue, the canonical model.

Views are adapters: they read with `selectors`/`page_selectors`, write with `services`, and turn a
service's refusal into something a person can act on (a 403 page, or an error next to the field).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from contracts import canonical_model, page_selectors, selectors, services
from contracts.avro_display import avro_reading_order, schema_field_rows
from contracts.errors import ContractError, Forbidden, NotFound
from contracts.forms import (
    COMPATIBILITY_HELP,
    ERROR_CODE_FIELDS,
    CompatibilityForm,
    ContractCreateForm,
    ContractFilterForm,
    ReviewForm,
    SigningSecretForm,
    SourceCreateForm,
    VersionForm,
)
from contracts.line_diff import json_line_diff, pretty_json, side_by_side_line_diff
from contracts.models import Contract, ContractVersion, Platform, VersionStatus
from portal.page_selectors import all_teams, teams_user_may_use
from portal.roles import can_edit_team_objects, is_admin, is_data_engineer

View = Callable[..., HttpResponse]

SUBMITTED_MESSAGE = ("Version {number} submitted for review. A data engineer will approve or reject it; "
                     "the outcome appears on the contract page.")


def portal_page(view: View) -> View:
    """Sign-in required; a service's refusal becomes a page that says why (403, 404, 409…), never a 500.

    Views catch the errors they can show next to a form field; this is the net for the rest.
    """

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except Forbidden as err:
            raise PermissionDenied(err.message) from err
        except NotFound as err:
            raise Http404(err.message) from err
        except ContractError as err:
            return render(request, "contracts/refused.html", {"error": err}, status=err.status_code)

    return login_required(wrapper)


def _require_engineer(request: HttpRequest) -> None:
    if not is_data_engineer(request.user):
        raise PermissionDenied("The review queue is for data engineers.")


def _form_error_from(form: Any, err: ContractError, *, fields: dict[str, str] | None = None) -> None:
    """Show a service's error next to the field it is about, or above the form."""
    field = (fields or {}).get(err.code)
    form.add_error(field if field in form.fields else None, err.message)


def _no_store(response: HttpResponse) -> HttpResponse:
    # Pages that show a secret once must not be kept by the browser's cache or back button.
    response["Cache-Control"] = "no-store"
    return response


# --- sources --------------------------------------------------------------------------------------

@require_GET
@portal_page
def source_list(request: HttpRequest) -> HttpResponse:
    team, platform = request.GET.get("team") or None, request.GET.get("platform") or None
    return render(request, "contracts/source_list.html", {
        "sources": page_selectors.sources_with_contract_counts(team=team, platform=platform),
        "teams": all_teams(), "platforms": Platform.choices, "selected_team": team or "",
        "selected_platform": platform or "", "can_create": teams_user_may_use(request.user).exists(),
    })


SOURCE_ERROR_FIELDS = {"invalid_name": "name", "source_exists": "name", "invalid_platform": "platform",
                       "invalid_kind": "kind"}


@require_http_methods(["GET", "POST"])
@portal_page
def source_create(request: HttpRequest) -> HttpResponse:
    teams = teams_user_may_use(request.user)
    form = SourceCreateForm(request.POST or None, teams=teams)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            source, write_key = services.source_create(
                actor=request.user, team=data["team"], name=data["name"], platform=data["platform"],
                kind=data["kind"], product=data["product"], description=data["description"],
            )
        except Forbidden:
            raise
        except ContractError as err:
            _form_error_from(form, err, fields=SOURCE_ERROR_FIELDS)
        else:
            if not write_key:  # a webhook source: signed by its provider, no key to show
                messages.success(request, f"Source {source.name} created. Set the provider's signing secret "
                                          "below: its webhook requests are refused until then.")
                return redirect("source_detail", name=source.name)
            # Rendered straight from the POST (no redirect) so the key never sits in a session.
            return _no_store(render(request, "contracts/source_write_key.html",
                                    {"source": source, "write_key": write_key, "created": True}))
    return render(request, "contracts/source_form.html", {"form": form, "has_teams": teams.exists()})


@require_GET
@portal_page
def source_detail(request: HttpRequest, name: str) -> HttpResponse:
    source = selectors.source_by_name_or_id(name)
    contracts = page_selectors.with_version_summary(selectors.contract_list(source=source.name))
    from ingest_workers.page_selectors import collector_answers_last_hour

    return render(request, "contracts/source_detail.html", {
        "source": source, "contracts": contracts, "signing_form": SigningSecretForm(),
        "can_edit": can_edit_team_objects(request.user, source.team_id),
        "collector_answers": collector_answers_last_hour(source=source.name),
    })


@require_POST
@portal_page
def source_rotate_key(request: HttpRequest, name: str) -> HttpResponse:
    source = selectors.source_by_name_or_id(name)
    write_key = services.source_write_key_rotate(actor=request.user, source=source)
    return _no_store(render(request, "contracts/source_write_key.html",
                            {"source": source, "write_key": write_key, "created": False}))


@require_POST
@portal_page
def source_set_active(request: HttpRequest, name: str) -> HttpResponse:
    source = selectors.source_by_name_or_id(name)
    is_active = request.POST.get("is_active") == "1"
    services.source_update(actor=request.user, source=source, is_active=is_active)
    messages.success(request, f"Source {source.name} is now {'enabled' if is_active else 'disabled'}.")
    return redirect("source_detail", name=source.name)


@require_POST
@portal_page
def source_signing_secret(request: HttpRequest, name: str) -> HttpResponse:
    source = selectors.source_by_name_or_id(name)
    form = SigningSecretForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Enter the signing secret.")
        return redirect("source_detail", name=source.name)
    try:
        services.source_signing_secret_set(actor=request.user, source=source,
                                           secret=form.cleaned_data["signing_secret"])
    except Forbidden:
        raise
    except ContractError as err:
        messages.error(request, err.message)
    else:
        messages.success(request, "Signing secret saved. Webhook requests are now verified with it.")
    return redirect("source_detail", name=source.name)


# --- contracts ------------------------------------------------------------------------------------

@require_GET
@portal_page
def contract_list(request: HttpRequest) -> HttpResponse:
    form = ContractFilterForm(request.GET or None, team_names=[t.name for t in all_teams()])
    filters = form.cleaned_data if form.is_valid() else {}
    contracts = page_selectors.with_version_summary(selectors.contract_list(
        team=filters.get("team") or None, platform=filters.get("platform") or None,
        status=filters.get("status") or None, query=filters.get("q") or None,
    ))
    # The canonical model is listed apart from the team contracts, which the home page counts.
    rows = list(contracts)
    context = {"form": form, "contracts": rows, "canonical_contracts": [c for c in rows if c.is_canonical],
               "team_contracts": [c for c in rows if not c.is_canonical]}
    # The filter form swaps only the table (htmx); a full load or a shared link gets the page.
    if getattr(request, "htmx", False) and request.htmx.target == "contract-table":
        return render(request, "contracts/_contract_table.html", context)
    return render(request, "contracts/contract_list.html", context)


CONTRACT_ERROR_FIELDS = {"invalid_subject": "event", "contract_exists": "event",
                         "invalid_compatibility_level": "compatibility"}


@require_http_methods(["GET", "POST"])
@portal_page
def contract_create(request: HttpRequest) -> HttpResponse:
    sources = page_selectors.sources_user_may_edit(request.user)
    form = ContractCreateForm(request.POST or None, sources=sources,
                              initial={"source": request.GET.get("source")})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            contract = services.contract_create(
                actor=request.user, source=data["source"], event=data["event"],
                compatibility=data["compatibility"], description=data["description"],
            )
        except Forbidden:
            raise
        except ContractError as err:
            _form_error_from(form, err, fields=CONTRACT_ERROR_FIELDS)
        else:
            messages.success(request, f"Contract {contract.subject} created. Now propose its first version.")
            return redirect("version_create", subject=contract.subject)
    return render(request, "contracts/contract_form.html", {"form": form, "has_sources": sources.exists()})


def _can_change_compatibility(user: Any, contract: Contract) -> bool:
    if contract.is_canonical:
        return is_admin(user)
    return is_data_engineer(user) or selectors.user_can_edit_contract(user, contract)


def _current_schema(contract: Contract) -> tuple[ContractVersion | None, list[dict]]:
    """The newest approved version (what ingestion validates with) and its fields as table rows."""
    current = selectors.latest_approved_version(contract)
    if current is None:
        return None, []
    from ingest_workers.masking import canonical_personal_targets, personal_source_paths

    personal = personal_source_paths(current.mapping, canonical_personal_targets())
    return current, schema_field_rows(selectors.version_schema(current), personal_paths=personal)


@require_GET
@portal_page
def contract_detail(request: HttpRequest, subject: str) -> HttpResponse:
    contract = selectors.contract_by_subject(subject)
    current, current_fields = _current_schema(contract)
    return render(request, "contracts/contract_detail.html", {
        "contract": contract, "current": current, "current_fields": current_fields,
        "versions": selectors.contract_versions(contract),
        "can_edit": selectors.user_can_edit_contract(request.user, contract),
        "can_change_compatibility": _can_change_compatibility(request.user, contract),
        "compatibility_form": CompatibilityForm(initial={"compatibility": contract.compatibility}),
        "compatibility_help": COMPATIBILITY_HELP,
    })


@require_POST
@portal_page
def contract_compatibility(request: HttpRequest, subject: str) -> HttpResponse:
    contract = selectors.contract_by_subject(subject)
    form = CompatibilityForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose one of the listed compatibility levels.")
        return redirect("contract_detail", subject=contract.subject)
    services.contract_compatibility_set(actor=request.user, contract=contract,
                                        level=form.cleaned_data["compatibility"])
    messages.success(request, f"{contract.subject} now checks new versions under {contract.compatibility}.")
    return redirect("contract_detail", subject=contract.subject)


# --- versions -------------------------------------------------------------------------------------

def _version_form_initial(contract: Contract) -> dict:
    """Start from the newest version, so a change is an edit rather than a retype."""
    latest = selectors.latest_version(contract)
    if latest is None:
        name = "".join(part.capitalize() for part in contract.subject.partition(".")[2].split("_")) or "Event"
        return {"schema": pretty_json({"type": "record", "name": name, "fields": []}), "samples": "[]"}
    return {
        "schema": pretty_json(_schema_for_reading(latest)),
        "mapping": pretty_json(latest.mapping) if latest.mapping else "",
        "samples": pretty_json(latest.sample_payloads or []),
        "team_checks": latest.team_checks,
    }


def _require_contract_editor(request: HttpRequest, contract: Contract) -> None:
    if not selectors.user_can_edit_contract(request.user, contract):
        raise PermissionDenied(f"Only members of the team that owns {contract.subject} may add versions.")


@require_http_methods(["GET", "POST"])
@portal_page
def version_create(request: HttpRequest, subject: str) -> HttpResponse:
    contract = selectors.contract_by_subject(subject)
    _require_contract_editor(request, contract)
    latest = selectors.latest_version(contract)
    if request.method == "GET":
        form = VersionForm(initial=_version_form_initial(contract))
    else:
        form = VersionForm(request.POST, request.FILES)
        if form.is_valid():
            response = _version_submit_from_form(request, contract, form)
            if response is not None:
                return response
    return render(request, "contracts/version_form.html", {
        "contract": contract, "form": form, "latest": latest,
        "compatibility_help": COMPATIBILITY_HELP.get(contract.compatibility, ""),
    })


def _version_submit_from_form(
    request: HttpRequest, contract: Contract, form: VersionForm
) -> HttpResponse | None:
    """Save the version; on a service error put it on the form and return None (nothing is saved)."""
    data = form.cleaned_data
    submit_for_review = request.POST.get("action") == "submit"
    try:
        version, created = services.contract_version_submit(
            actor=request.user, contract=contract, schema=data["schema_json"],
            mapping_spec=data["mapping_json"], samples=data["samples_json"],
            submit_for_review=submit_for_review, change_summary=data["change_summary"],
            team_checks=data["team_checks"],
        )
    except Forbidden:
        raise
    except ContractError as err:
        _form_error_from(form, err, fields=ERROR_CODE_FIELDS)
        return None
    if not created:
        messages.info(request, f"Nothing new: this schema, mapping and team checks are identical to version "
                               f"{version.version} (now {version.get_status_display().lower()}).")
    elif submit_for_review:
        messages.success(request, SUBMITTED_MESSAGE.format(number=version.version))
    else:
        messages.success(request, f"Draft version {version.version} saved. Submit it for review when ready.")
    return redirect("version_detail", subject=contract.subject, number=version.version)


@require_POST
@portal_page
def version_check(request: HttpRequest, subject: str) -> HttpResponse:
    """The live report under the version form (an htmx fragment). Saves nothing."""
    contract = selectors.contract_by_subject(subject)
    form = VersionForm(request.POST, request.FILES)
    context: dict[str, Any] = {"form": form, "contract": contract, "check": None}
    if form.is_valid():
        data = form.cleaned_data
        samples, mapping_spec = data["samples_json"], data["mapping_json"]
        if samples is not None and not isinstance(samples, list):
            form.add_error("samples", "The sample payloads must be a JSON array, e.g. [{...}, {...}].")
        elif mapping_spec is not None and not isinstance(mapping_spec, dict):
            form.add_error("mapping", "The mapping must be a JSON object (see docs/mapping.md).")
        else:
            try:
                services.team_checks_validate(data["team_checks"], mapping_spec)
            except ContractError as err:
                form.add_error("team_checks", err.message)
            context["check"] = selectors.contract_check(
                contract=contract, schema=data["schema_json"], mapping_spec=mapping_spec,
                samples=samples or [],
            )
    return render(request, "contracts/_check_report.html", context)


def _schema_for_reading(version: ContractVersion) -> dict:
    """The stored schema (sorted keys) with name and type first, as people write and read it."""
    return avro_reading_order(selectors.version_schema(version))


def _version_or_404(subject: str, number: int) -> tuple[Contract, ContractVersion]:
    contract = selectors.contract_by_subject(subject)
    return contract, selectors.contract_version_get(contract, number)


def _live_check(contract: Contract, version: ContractVersion) -> Any:
    """Re-check a saved version against the approved versions other than itself (what approval does)."""
    return selectors.contract_check(
        contract=contract, schema=selectors.version_schema(version), mapping_spec=version.mapping,
        samples=version.sample_payloads, against=selectors.approved_versions(contract, exclude_pk=version.pk),
        version_number=version.version,
    )


@require_GET
@portal_page
def version_detail(request: HttpRequest, subject: str, number: int) -> HttpResponse:
    contract, version = _version_or_404(subject, number)
    return render(request, "contracts/version_detail.html", {
        "contract": contract, "version": version, "schema": _schema_for_reading(version),
        "check": _live_check(contract, version),
        "can_submit": version.status == VersionStatus.DRAFT and selectors.user_can_edit_contract(request.user,
                                                                                                 contract),
        "can_review": version.status == VersionStatus.IN_REVIEW and is_data_engineer(request.user),
    })


@require_POST
@portal_page
def version_submit(request: HttpRequest, subject: str, number: int) -> HttpResponse:
    _, version = _version_or_404(subject, number)
    try:
        services.contract_version_submit_for_review(actor=request.user, version=version)
    except Forbidden:
        raise
    except ContractError as err:
        messages.error(request, _message_with_details(err))
    else:
        messages.success(request, SUBMITTED_MESSAGE.format(number=version.version))
    return redirect("version_detail", subject=subject, number=number)


def _message_with_details(err: ContractError) -> str:
    """A Conflict's details carry the check; name each breaking change so the author can fix it."""
    details = err.details if isinstance(err.details, dict) else {}
    problems = [f"{c.get('path')}: {c.get('message')}" for c in details.get("changes", [])
                if c.get("severity") == "error"]
    problems += [f"{e.get('path')}: {e.get('message')}" for e in details.get("schema_errors", [])]
    return err.message + (" " + "; ".join(problems) if problems else "")


# --- review ---------------------------------------------------------------------------------------

@require_GET
@portal_page
def review_queue(request: HttpRequest) -> HttpResponse:
    _require_engineer(request)
    return render(request, "contracts/review_queue.html", {"versions": selectors.review_queue()})


@require_http_methods(["GET", "POST"])
@portal_page
def review_detail(request: HttpRequest, subject: str, number: int) -> HttpResponse:
    _require_engineer(request)
    contract, version = _version_or_404(subject, number)
    form = ReviewForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            _review_decide(request, version, form.cleaned_data["decision"], form.cleaned_data["comment"])
        except ContractError as err:
            # Including Forbidden("own_change"): the reviewer needs the reason on this page, not a 403.
            form.add_error("comment" if err.code == "comment_required" else None, _message_with_details(err))
        else:
            return redirect("review_queue")
    if form.errors.get("comment"):
        # The page reloads at the top; focusing the comment brings the reviewer back to what to fix.
        form.fields["comment"].widget.attrs["autofocus"] = True
    previous = selectors.previous_version(version)
    schema = _schema_for_reading(version)
    return render(request, "contracts/review_detail.html", {
        "contract": contract, "version": version, "previous": previous, "form": form,
        "schema_diff": json_line_diff(_schema_for_reading(previous) if previous else None, schema),
        "mapping_diff": json_line_diff(previous.mapping if previous else None, version.mapping),
        "team_checks_diff": side_by_side_line_diff(previous.team_checks if previous else "", version.team_checks),
        "check": _live_check(contract, version),
        "is_own_change": version.author_id == request.user.pk,
        "is_own_submission": version.submitted_by_id == request.user.pk and version.author_id != request.user.pk,
    })


def _review_decide(request: HttpRequest, version: ContractVersion, decision: str, comment: str) -> None:
    label = f"{version.contract.subject} v{version.version}"
    if decision == "approve":
        services.contract_version_approve(actor=request.user, version=version, comment=comment)
        messages.success(request, f"Approved {label}. Ingestion uses it from now on.")
    else:
        services.contract_version_reject(actor=request.user, version=version, comment=comment)
        messages.success(request, f"Rejected {label}. The author sees your comment on the contract page.")


# --- canonical model ------------------------------------------------------------------------------

@require_GET
@portal_page
def canonical_model_browser(request: HttpRequest) -> HttpResponse:
    model = canonical_model.load_canonical_model()
    try:
        registered = selectors.contract_by_subject(services.CANONICAL_SUBJECT)
    except NotFound:
        registered = None  # not registered yet (`canonical_contract_ensure` runs at setup)
    return render(request, "contracts/canonical_model.html", {
        "model": model,
        "envelope_rows": _canonical_field_rows(model.envelope),
        "event_types": [
            {"name": et.name, "doc": et.doc, "rows": _canonical_field_rows(et.fields)}
            for et in _in_listing_order(model.event_types)
        ],
        "platform_choices": getattr(canonical_model, "PLATFORMS", ()),
        "canonical_contract_url": reverse("contract_detail", kwargs={"subject": registered.subject})
        if registered else None,
    })


def _in_listing_order(event_types: dict) -> list:
    order = {name: index for index, name in enumerate(getattr(canonical_model, "EVENT_TYPES", ()))}
    return sorted(event_types.values(), key=lambda et: (order.get(et.name, len(order)), et.name))


def _canonical_field_rows(fields: Any, depth: int = 0) -> list[dict]:
    """Fields with their sub-fields (identifiers.device_id…) flattened into indented table rows."""
    rows = []
    for f in fields:
        platforms = tuple(getattr(f, "platforms", ()) or ())
        every = set(platforms) >= set(getattr(canonical_model, "PLATFORMS", ()) or {None})
        rows.append({"field": f, "name": getattr(f, "path", "") or f.name, "depth": depth,
                     "platforms": "all" if not platforms or every else ", ".join(platforms),
                     # what the page's filter (contracts/canonical.js) matches against
                     "platform_keys": " ".join(platforms) if platforms and not every else "all"})
        rows.extend(_canonical_field_rows(getattr(f, "fields", ()) or (), depth + 1))
    return rows
