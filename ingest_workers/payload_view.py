"""The quarantined payload as the record page shows it: indented JSON, one line per value, each line knowing
the JSON pointer of its value, so the lines the error names can be highlighted (walkthrough F29).

Pure: plain data in, plain data out (no Django, no I/O).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Any

import orjson

#: a JSON pointer where a validator's message starts: "…v2: /message/role: …; /traits/email: …"
_POINTER_IN_DETAIL = re.compile(r"(?:^|: |; )(/[^\s:;]*)(?=: )")
INDENT = "  "


@dataclasses.dataclass(frozen=True)
class JsonLine:
    text: str
    pointer: str          # the value this line opens, closes or holds ("" is the whole payload)
    failing: bool = False
    missing: str = ""     # a failing pointer absent from the payload whose nearest parent opens here


def failing_pointers(error_path: str | None, detail: str | None, *, limit: int = 50) -> list[str]:
    """The JSON pointers an error names: its path, then every "/a/b: message" of the detail, in order, once."""
    found: list[str] = []
    for pointer in [error_path or "", *_POINTER_IN_DETAIL.findall(detail or "")]:
        if pointer.startswith("/") and pointer not in found:
            found.append(pointer)
    return found[:limit]


def _token(key: Any) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def _scalar(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return orjson.dumps(str(value)).decode()


def _lines(value: Any, pointer: str, depth: int, prefix: str, comma: str, out: list[tuple[str, str]]) -> None:
    pad = INDENT * depth
    if isinstance(value, dict) and value:
        out.append((f"{pad}{prefix}{{", pointer))
        items = list(value.items())
        for i, (key, child) in enumerate(items):
            _lines(child, f"{pointer}/{_token(key)}", depth + 1, f"{_scalar(str(key))}: ",
                   "," if i < len(items) - 1 else "", out)
        out.append((f"{pad}}}{comma}", pointer))
    elif isinstance(value, list) and value:
        out.append((f"{pad}{prefix}[", pointer))
        for i, child in enumerate(value):
            _lines(child, f"{pointer}/{i}", depth + 1, "", "," if i < len(value) - 1 else "", out)
        out.append((f"{pad}]{comma}", pointer))
    else:
        text = "{}" if isinstance(value, dict) else "[]" if isinstance(value, list) else _scalar(value)
        out.append((f"{pad}{prefix}{text}{comma}", pointer))


def _under(pointer: str, failing: str) -> bool:
    if failing == "/":  # the payload as a whole (a validator's root): its own lines, not every line
        return pointer == ""
    return pointer == failing or pointer.startswith(failing + "/")


def json_lines(value: Any, failing: Iterable[str] = ()) -> list[JsonLine]:
    """``value`` as indented JSON lines; a line is ``failing`` when its value is (or is inside) a failing
    pointer. A failing pointer the payload does not have (a missing field) marks the opening line of its
    nearest existing parent with ``missing``."""
    raw: list[tuple[str, str]] = []
    _lines(value, "", 0, "", "", raw)
    failing = list(failing)
    present = {pointer for _, pointer in raw}
    missing_at: dict[str, list[str]] = {}
    for target in failing:
        if target == "/" or target in present:
            continue
        parent = target
        while parent and parent not in present:
            parent = parent.rsplit("/", 1)[0]
        missing_at.setdefault(parent, []).append(target)
    lines, opened = [], set()
    for text, pointer in raw:
        missing = ""
        if pointer in missing_at and pointer not in opened:
            opened.add(pointer)
            missing = ", ".join(missing_at[pointer])
        hit = any(_under(pointer, f) for f in failing if f in present or f == "/")
        lines.append(JsonLine(text, pointer, hit, missing))
    return lines
