"""One JSON error shape for the whole REST API: {"error": code, "message": text, "details": ...}."""

from __future__ import annotations

from typing import Any

from django.http import QueryDict
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView, exception_handler


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


def json_type_problems(fields: dict, data: dict) -> dict[str, list[str]]:
    """Text and true/false fields given another JSON type, by field. DRF would turn 0 into "0" or False, so a
    client's bug (a number for a comment, 0 for false) would pass unnoticed; the document says string/boolean."""
    json_names = {int: "a number", float: "a number", list: "an array", dict: "an object", bool: "true/false",
                  str: "a string"}
    problems: dict[str, list[str]] = {}
    for name, field in fields.items():
        value = data.get(name)
        if name not in data or value is None or field.read_only:
            continue
        if isinstance(field, serializers.CharField) and not isinstance(value, str):
            problems[name] = [f"Must be a string, not {json_names.get(type(value), 'that')}."]
        elif isinstance(field, serializers.BooleanField) and not isinstance(value, bool):
            problems[name] = [f"Must be true or false, not {json_names.get(type(value), 'that')}."]
    return problems


def validated_body(serializer_class: Any, data: Any) -> dict:
    """The request body checked by ``serializer_class``: a JSON object, or a 400 that says so;
    field errors become DRF's usual 400 (``{"error", "message", "details"}`` via the handler)."""
    if not isinstance(data, dict):
        raise ApiError("invalid_body", "The request body must be a JSON object.")
    serializer = serializer_class(data=data)
    if not isinstance(data, QueryDict):  # a form's values are all text; JSON's have types
        wrong_types = json_type_problems(serializer.fields, data)
        if wrong_types:
            raise exceptions.ValidationError(wrong_types)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def nul_parameter_problem(query_params: Any, path_kwargs: dict) -> str | None:
    """A sentence naming the first path or query parameter holding a NUL character (PostgreSQL text cannot
    hold one, so looking it up would fail with a 500); None when there is none."""
    for name, value in path_kwargs.items():
        if isinstance(value, str) and "\x00" in value:
            return f"The path parameter '{name}' contains a NUL character."
    for name, values in query_params.lists():
        if "\x00" in name or any("\x00" in value for value in values):
            return f"The query parameter '{name}' contains a NUL character."
    return None


class ApiView(APIView):
    """The REST API's base view: after authentication, parameters that could never be looked up are a 400."""

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        problem = nul_parameter_problem(request.query_params, kwargs)
        if problem:
            self.parameter_refuse(problem)

    def parameter_refuse(self, message: str) -> None:
        raise ApiError("invalid_parameter", message)
