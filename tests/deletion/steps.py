"""Erasure steps for the tests (DELETION_STEP_PROVIDERS): plain stores on the filesystem, so the job's
behaviour (order, resume, retries, verification) is observable from the test and from a worker process.

``DELETION_TEST_DIR`` names the folder: ``runs.log`` gets one line per step run ("<step> <pid>"); the
blocking step waits, after announcing itself in ``blocking.started``, until ``release`` exists; the
transient step fails ``transient_failures`` times (a number in a file) before it succeeds.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from deletion.erasure_types import ErasureStep, ErasureSubject, StoreResult, TransientStoreError


def _dir() -> Path:
    return Path(os.environ["DELETION_TEST_DIR"])


def _log(name: str) -> None:
    with (_dir() / "runs.log").open("a") as out:
        out.write(f"{name} {os.getpid()}\n")


def runs() -> list[str]:
    path = _dir() / "runs.log"
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


def _file_store(name: str, *, logged: bool = True):
    """A store that is a folder of files named by identifier value: the step deletes the subject's files."""

    def run(target: ErasureSubject) -> StoreResult:
        if logged:
            _log(f"test.{name}")
        folder = _dir() / name
        folder.mkdir(exist_ok=True)
        values = {i.value.replace("/", "_") for i in target.identifiers}
        removed = 0
        for path in folder.iterdir():
            if path.name in values:
                path.unlink()
                removed += 1
        remaining = sum(1 for path in folder.iterdir() if path.name in values)
        return StoreResult(store=f"test files {name}", removed=removed, remaining=remaining,
                           verification=f"listing of {name}/ for the subject's identifiers")
    return run


def _blocking(target: ErasureSubject) -> StoreResult:
    _log("test.blocking")
    (_dir() / "blocking.started").write_text(str(os.getpid()))
    while not (_dir() / "release").exists():
        time.sleep(0.1)
    return _file_store("blocking_files", logged=False)(target)


def _transient(target: ErasureSubject) -> StoreResult:
    _log("test.transient")
    counter = _dir() / "transient_failures"
    left = int(counter.read_text()) if counter.exists() else 0
    if left > 0:
        counter.write_text(str(left - 1))
        raise TransientStoreError("store busy, try again")
    return StoreResult(store="test transient store", removed=0, remaining=0, verification="nothing to check")


def _stubborn(target: ErasureSubject) -> StoreResult:
    _log("test.stubborn")
    return StoreResult(store="test stubborn store", removed=1, remaining=2, verification="count after delete")


def recording_steps() -> list[ErasureStep]:
    return [ErasureStep("test.files_a", "test files a", _file_store("files_a")),
            ErasureStep("test.transient", "test transient store", _transient),
            ErasureStep("test.files_b", "test files b", _file_store("files_b"))]


def blocking_steps() -> list[ErasureStep]:
    return [ErasureStep("test.files_a", "test files a", _file_store("files_a")),
            ErasureStep("test.blocking", "test blocking store", _blocking),
            ErasureStep("test.files_b", "test files b", _file_store("files_b"))]


def stubborn_steps() -> list[ErasureStep]:
    return [ErasureStep("test.files_a", "test files a", _file_store("files_a")),
            ErasureStep("test.stubborn", "test stubborn store", _stubborn)]
