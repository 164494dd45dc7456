"""Side-by-side line diffs of pretty-printed JSON, for reviewers. Pure: no Django, no I/O.

A reviewer reads a schema change as text, the way a code review shows it: old on the left, new on
the right, removed lines red, added lines green, long unchanged stretches folded away.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from typing import Any, Literal

RowKind = Literal["equal", "delete", "insert", "replace", "fold"]


@dataclasses.dataclass(frozen=True)
class DiffRow:
    kind: RowKind
    left_number: int | None = None
    left_text: str = ""
    right_number: int | None = None
    right_text: str = ""
    folded_lines: int = 0


@dataclasses.dataclass(frozen=True)
class SideBySideDiff:
    rows: list[DiffRow]
    added: int
    removed: int

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


def pretty_json(value: Any) -> str:
    """Indented JSON keeping key order (an Avro record's field order is part of its meaning)."""
    return json.dumps(value, indent=2, ensure_ascii=False)


def side_by_side_line_diff(old_text: str, new_text: str, *, context: int = 3) -> SideBySideDiff:
    """Pair the lines of two texts; unchanged runs longer than 2×context+1 lines fold to one row."""
    old_lines, new_lines = old_text.splitlines(), new_text.splitlines()
    rows: list[DiffRow] = []
    added = removed = 0
    matcher = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            rows.extend(_equal_rows(old_lines, new_lines, i1, i2, j1, context=context))
            continue
        removed += i2 - i1
        added += j2 - j1
        for offset in range(max(i2 - i1, j2 - j1)):
            left = i1 + offset if i1 + offset < i2 else None
            right = j1 + offset if j1 + offset < j2 else None
            kind: RowKind = "replace" if left is not None and right is not None else (
                "delete" if left is not None else "insert")
            rows.append(DiffRow(
                kind=kind,
                left_number=None if left is None else left + 1,
                left_text="" if left is None else old_lines[left],
                right_number=None if right is None else right + 1,
                right_text="" if right is None else new_lines[right],
            ))
    return SideBySideDiff(rows=rows, added=added, removed=removed)


def _equal_rows(
    old_lines: list[str], new_lines: list[str], i1: int, i2: int, j1: int, *, context: int
) -> list[DiffRow]:
    def row(offset: int) -> DiffRow:
        return DiffRow(kind="equal", left_number=i1 + offset + 1, left_text=old_lines[i1 + offset],
                       right_number=j1 + offset + 1, right_text=new_lines[j1 + offset])

    length = i2 - i1
    if length <= 2 * context + 1:
        return [row(k) for k in range(length)]
    head = [] if i1 == 0 else [row(k) for k in range(context)]
    tail = [] if i2 == len(old_lines) else [row(k) for k in range(length - context, length)]
    folded = length - len(head) - len(tail)
    return [*head, DiffRow(kind="fold", folded_lines=folded), *tail]


def json_line_diff(old: Any, new: Any, *, context: int = 3) -> SideBySideDiff:
    """Diff two JSON values as pretty-printed text (old may be None: everything is an addition)."""
    old_text = "" if old is None else pretty_json(old)
    return side_by_side_line_diff(old_text, pretty_json(new), context=context)


@dataclasses.dataclass(frozen=True)
class KeyChange:
    key: str
    before: Any
    after: Any
    kind: Literal["added", "removed", "changed", "same"]


def top_level_changes(before: dict | None, after: dict | None) -> list[KeyChange]:
    """Compare two flat state snapshots (audit records) key by key, keeping the order keys appear in."""
    before, after = before or {}, after or {}
    keys = list(dict.fromkeys([*before.keys(), *after.keys()]))
    changes = []
    for key in keys:
        if key not in before:
            changes.append(KeyChange(key, None, after[key], "added"))
        elif key not in after:
            changes.append(KeyChange(key, before[key], None, "removed"))
        else:
            kind: Literal["changed", "same"] = "same" if before[key] == after[key] else "changed"
            changes.append(KeyChange(key, before[key], after[key], kind))
    return changes
