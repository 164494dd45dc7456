"""`make run`'s supervision of its child processes: restart a child that dies, with backoff; stop them all.

The core (``ChildState``, ``RestartPolicy``, ``child_exited``, ``child_started``) decides what happens
to a child from its history and the clock, and does no I/O. ``Supervisor`` is the shell: it spawns
the processes, polls them from a thread, prints one line per event, and writes what it knows to
``var/processes.json``, which the pipeline page shows (``processes_for_page``).

A child's crash is *fast* when it ran less than ``stable_after_s``; each fast crash in a row doubles
the wait before the next start (``base_delay_s``, capped at ``max_delay_s``), and after
``give_up_after`` of them the child is left down with a message naming its log: a child that cannot
start (a port taken, a broken setting) would otherwise restart forever and bury the terminal.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

STATUS_FILE = "processes.json"


@dataclasses.dataclass(frozen=True)
class RestartPolicy:
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    stable_after_s: float = 60.0
    give_up_after: int = 5


@dataclasses.dataclass(frozen=True)
class ChildState:
    name: str
    state: str = "starting"  # starting | running | restarting | gave_up | stopping | stopped
    pid: int | None = None
    restarts: int = 0
    started_at: float | None = None  # wall clock (time.time())
    last_exit_code: int | None = None
    last_exit_at: float | None = None
    last_restart_at: float | None = None
    fast_crashes: int = 0
    next_start_at: float | None = None


def exit_text(code: int | None) -> str:
    """'code 1', 'signal SIGKILL' (Popen's negative return codes are signals)."""
    if code is None:
        return "no exit code"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"code {code}"


def child_exited(child: ChildState, code: int, now: float, policy: RestartPolicy) -> tuple[ChildState, str]:
    """The child's next state after it exited by itself, and the one line to report."""
    ran = now - child.started_at if child.started_at is not None else 0.0
    fast = child.fast_crashes + 1 if ran < policy.stable_after_s else 1
    exited = dataclasses.replace(child, pid=None, last_exit_code=code, last_exit_at=now, fast_crashes=fast)
    if fast >= policy.give_up_after:
        return (dataclasses.replace(exited, state="gave_up", next_start_at=None),
                f"{child.name} exited ({exit_text(code)}) {fast} times in a row within "
                f"{policy.stable_after_s:g} s of starting; not restarting it. See its log.")
    delay = min(policy.max_delay_s, policy.base_delay_s * 2 ** (fast - 1))
    return (dataclasses.replace(exited, state="restarting", next_start_at=now + delay),
            f"{child.name} exited ({exit_text(code)}) after {ran:.0f} s; restarting it in {delay:g} s.")


def child_started(child: ChildState, pid: int, now: float) -> ChildState:
    """The child's state once (re)spawned; a start after an exit counts as a restart."""
    restarted = child.last_exit_at is not None
    return dataclasses.replace(child, state="running", pid=pid, started_at=now, next_start_at=None,
                               restarts=child.restarts + (1 if restarted else 0),
                               last_restart_at=now if restarted else child.last_restart_at)


def status_write(path: Path, supervisor_pid: int, children: Sequence[ChildState], now: float) -> None:
    """Replace the status file whole (the page may read it at any moment)."""
    body = {"supervisor_pid": supervisor_pid, "updated_at": now,
            "children": [dataclasses.asdict(child) for child in children]}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body, indent=1))
    os.replace(tmp, path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def processes_for_page(var_dir: Path) -> list[dict[str, Any]] | None:
    """The supervised processes of a running `make run`, for the pipeline page; None when there is
    none (deployed portals, or a file left by a `make run` that has ended)."""
    try:
        body = json.loads((Path(var_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    pid = body.get("supervisor_pid")
    if not isinstance(pid, int) or pid <= 0 or not _pid_alive(pid):
        return None
    rows = []
    for child in body.get("children", []):
        rows.append({**child, "exit_text": exit_text(child["last_exit_code"]) if child["last_exit_code"] is not None
                     else "",
                     "last_restart": (time.strftime("%H:%M:%S UTC", time.gmtime(child["last_restart_at"]))
                                      if child.get("last_restart_at") else "")})
    return rows


class Supervisor:
    """Spawns, watches, restarts and stops `make run`'s children (see the module doc)."""

    def __init__(self, spawn: Callable[[str, list[str]], subprocess.Popen], report: Callable[[str], None],
                 status_path: Path, policy: RestartPolicy | None = None, poll_s: float = 0.5):
        self._spawn = spawn
        self._report = report
        self._status_path = status_path
        self.policy = policy or RestartPolicy()
        self._poll_s = poll_s
        self._lock = threading.Lock()
        self._argv: dict[str, list[str]] = {}
        self._procs: dict[str, subprocess.Popen] = {}
        self.children: dict[str, ChildState] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- starting -------------------------------------------------------------------------------
    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        proc = self._spawn(name, argv)
        with self._lock:
            self._argv[name] = argv
            self._procs[name] = proc
            self.children[name] = child_started(ChildState(name), proc.pid, time.time())
            self._status_save()
        return proc

    def watch(self) -> None:
        """Restart children that die, from a daemon thread, until ``stop_all``."""
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self._poll_s):
            self.tick(time.time())

    def tick(self, now: float) -> None:
        """One look at every child: note exits, start the ones whose backoff is over."""
        with self._lock:
            if self._stopping.is_set():
                return
            changed = False
            for name, child in list(self.children.items()):
                proc = self._procs.get(name)
                if child.state == "running" and proc is not None and proc.poll() is not None:
                    self._group_kill(proc)  # what it leaves behind (pool processes) goes with it
                    self.children[name], line = child_exited(child, proc.returncode, now, self.policy)
                    self._report(line)
                    changed = True
                elif child.state == "restarting" and child.next_start_at is not None and now >= child.next_start_at:
                    try:
                        proc = self._spawn(name, self._argv[name])
                    except OSError as err:
                        self.children[name], line = child_exited(child, 127, now, self.policy)
                        self._report(f"{name} could not be started ({err}). {line}")
                    else:
                        self._procs[name] = proc
                        self.children[name] = child_started(child, proc.pid, now)
                        self._report(f"{name} restarted (pid {proc.pid}; restart {self.children[name].restarts}).")
                    changed = True
            if changed:
                self._status_save()

    # --- stopping -------------------------------------------------------------------------------
    def stop_all(self, tiers: Sequence[tuple[Sequence[str], float]], hurry: threading.Event | None = None) -> None:
        """Stop every child, tier by tier: SIGTERM to each process group of a tier, wait up to the tier's
        seconds (or until ``hurry`` is set: a second Ctrl-C), then SIGKILL what is left of the groups."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        hurry = hurry or threading.Event()
        named = [name for names, _ in tiers for name in names]
        tiers = [*tiers, ([name for name in self._procs if name not in named], 5.0)]
        for names, timeout in tiers:
            procs = [(name, self._procs[name]) for name in names if name in self._procs]
            for name, proc in procs:
                if proc.poll() is None:
                    self._set_state(name, "stopping")
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while any(proc.poll() is None for _, proc in procs) and time.monotonic() < deadline \
                    and not hurry.is_set():
                time.sleep(0.1)
            for name, proc in procs:
                self._group_kill(proc)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
                self._set_state(name, "stopped", exit_code=proc.returncode)

    def _set_state(self, name: str, state: str, exit_code: int | None = None) -> None:
        with self._lock:
            child = self.children[name]
            self.children[name] = dataclasses.replace(
                child, state=state, last_exit_code=exit_code if exit_code is not None else child.last_exit_code)
            self._status_save()

    @staticmethod
    def _group_kill(proc: subprocess.Popen) -> None:
        """SIGKILL whatever is left in the child's process group (each child leads its own)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def _status_save(self) -> None:
        with contextlib.suppress(OSError):
            status_write(self._status_path, os.getpid(), list(self.children.values()), time.time())
