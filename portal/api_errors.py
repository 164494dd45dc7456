"""One JSON error shape for the whole REST API: {"error": code, "message": text, "details": ...}."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler


class ApiError(exceptions.APIException):
    """An error a client can act on; `code` is stable, `message` is for people."""

    def __init__(self, code: str, message: str, *, status_code: int = 400, details: Any = None):
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.error_code = code
        self.message = message
        self.details = details


def _flatten_message(detail: Any) -> str:
    if isinstance(detail, dict):
        parts = [f"{key}: {_flatten_message(value)}" for key, value in detail.items()]
        return "; ".join(parts)
    if isinstance(detail, list):
        return " ".join(_flatten_message(item) for item in detail)
    return str(detail)


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, ApiError):
        body = {"error": exc.error_code, "message": exc.message}
        if exc.details is not None:
            body["details"] = exc.details
        return Response(body, status=exc.status_code)
    response = exception_handler(exc, context)
    if response is None:
        return None
    code = getattr(exc, "default_code", "error")
    if isinstance(exc, exceptions.ValidationError):
        body = {"error": "invalid", "message": _flatten_message(exc.detail), "details": exc.detail}
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        body = {"error": codes if isinstance(codes, str) else code, "message": _flatten_message(exc.detail)}
    else:  # Http404 and PermissionDenied from Django itself
        body = {"error": code, "message": str(exc)}
    if response.status_code == status.HTTP_404_NOT_FOUND:
        body["error"] = "not_found"
    response.data = body
    return response


def validated_body(serializer_class: Any, data: Any) -> dict:
    """The request body checked by ``serializer_class``: a JSON object, or a 400 that says so;
    field errors become DRF's usual 400 (``{"error", "message", "details"}`` via the handler)."""
    if not isinstance(data, dict):
        raise ApiError("invalid_body", "The request body must be a JSON object.")
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)
