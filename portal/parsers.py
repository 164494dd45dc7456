"""A JSON body parser that answers 400 for absurdly nested JSON instead of crashing with a 500."""

from __future__ import annotations

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class SafeJSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as err:
            raise ParseError("JSON parse error - the body is nested too deeply.") from err


class RegistryJSONParser(SafeJSONParser):
    media_type = "application/vnd.schemaregistry.v1+json"


class RegistryGenericJSONParser(SafeJSONParser):
    media_type = "application/vnd.schemaregistry+json"


class RegistryOctetStreamParser(SafeJSONParser):
    """Confluent's registry reads an `application/octet-stream` body as JSON; some tools send that."""

    media_type = "application/octet-stream"
