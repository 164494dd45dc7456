"""Domain errors raised by contract services; the API, registry and portal each render them."""

from __future__ import annotations

from typing import Any


class ContractError(Exception):
    """A request the registry refuses, with a stable code and a sentence naming what was wrong."""

    status_code = 400

    def __init__(self, code: str, message: str, *, details: Any = None, status_code: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        if status_code is not None:
            self.status_code = status_code


class NotFound(ContractError):
    status_code = 404


class Forbidden(ContractError):
    status_code = 403


class Conflict(ContractError):
    status_code = 409
