"""JSON integers beyond 64 bits. Pure: no Django, no network, no clock.

orjson reads an integer literal outside [-2**63, 2**64 - 1] as a float without a word
(18446744073709551616 becomes 1.8446744073709552e+19), so the event would land with other digits than
it was sent with. Such events are refused instead, each with the reason ``number_out_of_range``
(docs/decisions.md, "Integers beyond 64 bits"): the collectors list them in ``rejected``, and the
pipeline quarantines a record written straight to the stream that carries one.

Only an integer literal of 19 digits or more can be out of range, and almost no event has one, so the
check first looks for such a run of digits in the raw bytes (a few microseconds per kilobyte) and only
then parses the document again with Python's own JSON reader, which keeps every integer exact.
"""

from __future__ import annotations

import json
from typing import Any

INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
NUMBER_OUT_OF_RANGE = "number_out_of_range"
_DIGITS_TO_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_LONG_RUN = b"0" * 19


def may_hold_big_integer(data: bytes) -> bool:
    """False when no integer in ``data`` can be out of range (no run of 19 digits anywhere)."""
    return data.translate(_DIGITS_TO_ZERO).find(_LONG_RUN) >= 0


def _pointer_token(key: Any) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def out_of_range_path(value: Any) -> str | None:
    """The JSON pointer of the first integer outside [INT_MIN, INT_MAX] in ``value``, or None."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:  # iterative: a document may nest deeper than Python's stack
        node, pointer = stack.pop()
        if isinstance(node, bool):
            continue
        if isinstance(node, int):
            if not INT_MIN <= node <= INT_MAX:
                return pointer or "/"
        elif isinstance(node, dict):
            stack.extend((v, f"{pointer}/{_pointer_token(k)}") for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((v, f"{pointer}/{i}") for i, v in reversed(list(enumerate(node))))
    return None


def exact_loads(data: bytes) -> Any:
    """``data`` parsed with every integer exact, or None when Python's reader cannot (the caller's
    orjson result then stands: such a document is refused for another reason, e.g. nesting)."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def out_of_range_message(path: str) -> str:
    return (f"The integer at {path} is outside the 64-bit range ({INT_MIN} to {INT_MAX}) and would lose "
            "digits; send it as a string.")


def big_integer_problem(data: bytes) -> str | None:
    """Why the one JSON document in ``data`` is refused (an integer out of range), or None."""
    if not may_hold_big_integer(data):
        return None
    path = out_of_range_path(exact_loads(data))
    return None if path is None else out_of_range_message(path)
