"""A JSON body parser that answers 400 for absurdly nested JSON instead of crashing with a 500.

How deep a body may nest must not depend on how deep the caller's stack already is (a request served under a
test runner's or a server's extra frames hit Python's recursion limit ~100 levels sooner): a body that
exceeds it is parsed again on a fresh thread, whose stack starts empty, so every caller accepts and refuses
the same bodies (up to about 990 levels parse; the schema checks then refuse what is too deep for them).
"""

from __future__ import annotations

import io
import threading

from rest_framework import parsers
from rest_framework.exceptions import ParseError

_TOO_DEEP = "JSON parse error - the body is nested too deeply."


class SafeJSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        body = stream.read() if stream is not None else b""
        try:
            return super().parse(io.BytesIO(body), media_type, parser_context)
        except RecursionError:
            pass
        outcome: dict[str, object] = {}

        def parse_on_fresh_stack() -> None:
            try:
                outcome["data"] = super(SafeJSONParser, self).parse(io.BytesIO(body), media_type, parser_context)
            except RecursionError:
                outcome["error"] = ParseError(_TOO_DEEP)
            except ParseError as err:
                outcome["error"] = err

        worker = threading.Thread(target=parse_on_fresh_stack, name="json-deep-parse")
        worker.start()
        worker.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["data"]


class RegistryJSONParser(SafeJSONParser):
    media_type = "application/vnd.schemaregistry.v1+json"


class RegistryGenericJSONParser(SafeJSONParser):
    media_type = "application/vnd.schemaregistry+json"


class RegistryOctetStreamParser(SafeJSONParser):
    """Confluent's registry reads an `application/octet-stream` body as JSON; some tools send that."""

    media_type = "application/octet-stream"
