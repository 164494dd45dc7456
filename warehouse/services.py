"""Writes of the model price catalog: add a price, ask for a recompute, seed the demo catalog.

A price is never edited or deleted: every change is a new row with the next catalog ``version``.
A normal change may not take effect before the current UTC hour, so hours already computed keep
their cost; a backdated correction is allowed only together with a recompute request from the
same time, in one transaction. Each write runs in one transaction with its audit record.
"""

from __future__ import annotations

import datetime as dt
import decimal
import unicodedata
import zlib
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Max
from django.utils import timezone

from portal.roles import is_data_engineer
from portal.services import audit_record_write
from warehouse.models import TOKEN_KINDS, ModelPrice, PriceRecompute
from warehouse.selectors import as_utc, hour_start

TOKEN_KIND_VALUES = tuple(value for value, _ in TOKEN_KINDS)
MODEL_NAME_MAX = 128
NOTE_MAX = 300
PRICE_MAX = Decimal("10000")
PRICE_DECIMALS = 6
# Serializes version numbering on PostgreSQL (SQLite's IMMEDIATE transactions already serialize writers).
_VERSION_LOCK_KEY = zlib.crc32(b"warehouse.modelprice.version")


class CatalogError(Exception):
    """A change the catalog refuses: a stable code, a sentence naming the field, and that field."""

    status_code = 400

    def __init__(self, code: str, message: str, *, field: str | None = None, status_code: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        if status_code is not None:
            self.status_code = status_code


class CatalogForbidden(CatalogError):
    status_code = 403


# --- pure checks (no database, no clock: `now` is passed in) ----------------------------------------

def model_name_clean(model: Any, *, field: str = "model", blank_ok: bool = False) -> str:
    if not isinstance(model, str):
        raise CatalogError("invalid_model", f"{field} must be a text model name, e.g. gpt-4.1-mini.", field=field)
    model = model.strip()
    if not model:
        if blank_ok:
            return ""
        raise CatalogError("invalid_model", f"{field} is required: the model name as requested, e.g. gpt-4.1-mini.",
                           field=field)
    if len(model) > MODEL_NAME_MAX:
        raise CatalogError("invalid_model", f"{field} is {len(model)} characters long; at most {MODEL_NAME_MAX}.",
                           field=field)
    if any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in model):
        raise CatalogError("invalid_model", f"{field} may not contain spaces or control characters "
                                            "(use the name exactly as requests carry it, e.g. gpt-4.1-mini).",
                           field=field)
    return model


def token_kind_clean(token_kind: Any) -> str:
    if token_kind not in TOKEN_KIND_VALUES:
        raise CatalogError("invalid_token_kind", f"token_kind must be one of {', '.join(TOKEN_KIND_VALUES)} "
                                                 f"(got {str(token_kind)[:40]!r}).", field="token_kind")
    return token_kind


def price_clean(value: Any) -> Decimal:
    """USD per million tokens: 0 ≤ price < 10,000, at most 6 decimals (what the column stores exactly)."""
    field = "usd_per_million"
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, float, str)):
        raise CatalogError("invalid_price", f"{field} must be a number of US dollars per million tokens, e.g. 0.40.",
                           field=field)
    try:
        # Floats go through their shortest repr so 0.4 stays 0.4, not 0.40000000000000002220…
        price = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except decimal.InvalidOperation:
        raise CatalogError("invalid_price", f"{field} must be a number, e.g. 0.40 (got {str(value)[:40]!r}).",
                           field=field) from None
    if not price.is_finite():
        raise CatalogError("invalid_price", f"{field} must be a finite number.", field=field)
    if price < 0:
        raise CatalogError("invalid_price", f"{field} may not be negative.", field=field)
    if price >= PRICE_MAX:
        raise CatalogError("invalid_price", f"{field} must be below {PRICE_MAX:,} US dollars per million tokens.",
                           field=field)
    exponent = price.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -PRICE_DECIMALS:
        raise CatalogError("invalid_price", f"{field} may have at most {PRICE_DECIMALS} decimals "
                                            f"(got {price}).", field=field)
    return price.quantize(Decimal(1).scaleb(-PRICE_DECIMALS)) + 0  # + 0 turns -0 into 0


def moment_clean(value: Any, *, field: str) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        raise CatalogError("invalid_time", f"{field} must be a date and time (UTC), e.g. 2026-12-01T00:00:00Z.",
                           field=field)
    return as_utc(value)


def effective_from_clean(value: Any, *, now: dt.datetime, recompute: bool) -> dt.datetime:
    """The effective time, on an hour boundary, and not before the current hour unless a recompute comes with it."""
    effective_from = moment_clean(value, field="effective_from")
    if effective_from != hour_start(effective_from):
        # Costs are per hour: a price from 10:30 would silently apply from 11:00, so say so instead.
        raise CatalogError("invalid_time", "effective_from must be the start of an hour (minutes and seconds 0), "
                                           f"e.g. {hour_start(effective_from):%Y-%m-%dT%H:00Z}: costs are computed "
                                           "per hour.", field="effective_from")
    if effective_from < hour_start(now) and not recompute:
        raise CatalogError(
            "backdated", f"effective_from {effective_from:%Y-%m-%d %H:%M} UTC is before the current hour "
                         f"({hour_start(now):%Y-%m-%d %H:%M} UTC). A price may not change hours already computed "
                         "unless you also ask to recompute them (tick 'backdated: recompute past hours', or send "
                         "\"recompute\": true).", field="effective_from")
    return effective_from


def note_clean(note: Any) -> str:
    note = "" if note is None else note
    if not isinstance(note, str):
        raise CatalogError("invalid_note", "note must be text.", field="note")
    note = note.strip()
    if len(note) > NOTE_MAX:
        raise CatalogError("invalid_note", f"note is {len(note)} characters long; at most {NOTE_MAX}.", field="note")
    return note


# --- writes -----------------------------------------------------------------------------------------

def _require_engineer(actor: Any, what: str) -> None:
    if not is_data_engineer(actor):
        raise CatalogForbidden("forbidden", f"Only data engineers and admins may {what}.")


def _creator(actor: Any) -> Any:
    return actor if getattr(actor, "is_authenticated", False) else None


def _next_version() -> int:
    """The next catalog version; call inside the write's transaction."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_VERSION_LOCK_KEY])
    return (ModelPrice.objects.aggregate(v=Max("version"))["v"] or 0) + 1


def price_state(price: ModelPrice) -> dict:
    return {
        "model": price.model, "token_kind": price.token_kind, "usd_per_million": str(price.usd_per_million),
        "effective_from": price.effective_from.isoformat(), "version": price.version, "note": price.note,
    }


def recompute_state(recompute: PriceRecompute) -> dict:
    return {"model": recompute.model, "from_time": recompute.from_time.isoformat(), "status": recompute.status}


def _price_insert(*, actor: Any, model: str, token_kind: str, price: Decimal, effective_from: dt.datetime,
                  note: str, action: str = "price.add") -> ModelPrice:
    try:
        with transaction.atomic():
            row = ModelPrice.objects.create(
                model=model, token_kind=token_kind, usd_per_million=price, effective_from=effective_from,
                version=_next_version(), note=note, created_by=_creator(actor),
            )
    except IntegrityError as err:  # a version taken concurrently despite the lock: ask to retry, save nothing
        raise CatalogError("conflict", "Another price change was saved at the same moment; try again.",
                           status_code=409) from err
    audit_record_write(actor=actor, action=action, obj=row, after=price_state(row))
    return row


def _recompute_insert(*, actor: Any, model: str, from_time: dt.datetime) -> PriceRecompute:
    recompute = PriceRecompute.objects.create(model=model, from_time=from_time, requested_by=_creator(actor))
    audit_record_write(actor=actor, action="price_recompute.request", obj=recompute, after=recompute_state(recompute))
    return recompute


def price_add(
    *, actor: Any, model: str, token_kind: str, usd_per_million: Decimal | str | int | float,
    effective_from: dt.datetime, note: str = "", recompute: bool = False, now: dt.datetime | None = None,
) -> tuple[ModelPrice, PriceRecompute | None]:
    """Add a price of `model` and `token_kind`, in force for hours starting at or after `effective_from`.

    `effective_from` must be an hour start no earlier than the current hour; with ``recompute=True`` it
    may be earlier, and a recompute request from `effective_from` is saved with the price (returned as the
    second value; None when the price is not backdated, since no computed hour changes).
    """
    _require_engineer(actor, "change model prices")
    now = as_utc(now or timezone.now())
    model = model_name_clean(model)
    token_kind = token_kind_clean(token_kind)
    price = price_clean(usd_per_million)
    effective_from = effective_from_clean(effective_from, now=now, recompute=recompute)
    note = note_clean(note)
    with transaction.atomic():
        row = _price_insert(actor=actor, model=model, token_kind=token_kind, price=price,
                            effective_from=effective_from, note=note)
        request = None
        if effective_from < hour_start(now):
            request = _recompute_insert(actor=actor, model=model, from_time=effective_from)
    return row, request


def price_recompute_request(
    *, actor: Any, from_time: dt.datetime, model: str = "", now: dt.datetime | None = None,
) -> PriceRecompute:
    """Ask the next model run to re-price hours starting at or after `from_time` (of `model`, or all models).

    `from_time` is widened to the start of its hour (recomputing more is always safe) and must be in the past.
    """
    _require_engineer(actor, "request price recomputes")
    now = as_utc(now or timezone.now())
    model = model_name_clean(model, blank_ok=True)
    from_time = hour_start(moment_clean(from_time, field="from_time"))
    if from_time > now:
        raise CatalogError("invalid_time", f"from_time {from_time:%Y-%m-%d %H:%M} UTC is in the future: only hours "
                                           "already computed can be recomputed.", field="from_time")
    if model and not ModelPrice.objects.filter(model=model).exists():
        # Only prices change cost, so a model without any price (often a typo) has nothing to re-price.
        raise CatalogError("unknown_model", f"model {model!r} has no price in the catalog, so recomputing it would "
                                            "change nothing. Check the name, or leave it blank for every model.",
                           field="model")
    with transaction.atomic():
        return _recompute_insert(actor=actor, model=model, from_time=from_time)


def price_catalog_seed(
    *, actor: Any, prices: Iterable[tuple[str, str, Decimal | str]], effective_from: dt.datetime, note: str = "",
) -> list[ModelPrice]:
    """Give each (model, token kind) that has no price yet its first one (idempotent: a second call adds nothing).

    For the demo and a first install, before any hour is computed: so the first price of a pair may start in
    the past without a recompute. A pair that already has a price is left alone (changes go through price_add).
    """
    _require_engineer(actor, "seed model prices")
    effective_from = hour_start(moment_clean(effective_from, field="effective_from"))
    cleaned = [(model_name_clean(model), token_kind_clean(kind), price_clean(price)) for model, kind, price in prices]
    added = []
    with transaction.atomic():
        priced = set(ModelPrice.objects.values_list("model", "token_kind").distinct())
        for model, kind, price in cleaned:
            if (model, kind) in priced:
                continue
            added.append(_price_insert(actor=actor, model=model, token_kind=kind, price=price,
                                       effective_from=effective_from, note=note_clean(note), action="price.seed"))
            priced.add((model, kind))
    return added
