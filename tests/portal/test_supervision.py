"""`make run`'s supervision: a child that dies comes back after a pause that grows with quick crashes,
is reported, shows on the pipeline page's status source, and is given up on after repeated quick crashes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from portal.supervision import (
    ChildState,
    RestartPolicy,
    Supervisor,
    child_exited,
    child_started,
    processes_for_page,
)

POLICY = RestartPolicy(base_delay_s=1, max_delay_s=8, stable_after_s=60, give_up_after=6)


def test_quick_crashes_double_the_pause_up_to_the_cap_then_the_child_is_given_up():
    child, now, pauses, lines = child_started(ChildState("beat"), pid=1, now=0.0), 0.0, [], []
    for _ in range(6):
        now += 2                                              # dies 2 s after each start
        child, line = child_exited(child, 1, now, POLICY)
        lines.append(line)
        if child.state == "restarting":
            pauses.append(child.next_start_at - now)
            now = child.next_start_at
            child = child_started(child, pid=2, now=now)
    assert pauses == [1, 2, 4, 8, 8]
    assert child.state == "gave_up" and child.restarts == 5 and child.last_exit_code == 1
    assert "not restarting it" in lines[-1] and "6 times in a row" in lines[-1]


def test_a_crash_after_a_long_run_restarts_after_the_shortest_pause():
    child = child_started(ChildState("worker"), pid=1, now=0.0)
    for at in (10.0, 20.0, 30.0):                              # three quick crashes…
        child, _ = child_exited(child, 1, at, POLICY)
        child = child_started(child, pid=2, now=child.next_start_at)
    child, line = child_exited(child, -signal.SIGKILL, child.started_at + 3600, POLICY)   # …then an hour up
    assert child.next_start_at - child.last_exit_at == 1 and child.fast_crashes == 1
    assert "signal SIGKILL" in line


def _spawn_sleeper(name, argv):
    return subprocess.Popen(argv, start_new_session=True)


def test_a_killed_child_is_restarted_reported_and_shown_then_stopping_leaves_nothing(tmp_path):
    lines = []
    supervisor = Supervisor(_spawn_sleeper, lines.append, tmp_path / "processes.json",
                            policy=RestartPolicy(base_delay_s=0.2), poll_s=0.05)
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    first = supervisor.start("beat", sleeper).pid
    supervisor.start("worker", sleeper)
    supervisor.watch()
    try:
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while True:
            rows = {row["name"]: row for row in processes_for_page(tmp_path)}
            if rows["beat"]["restarts"] == 1 and rows["beat"]["state"] == "running":
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.05)
        assert rows["beat"]["pid"] != first and rows["beat"]["exit_text"] == "signal SIGKILL"
        assert rows["beat"]["last_restart"] and rows["worker"]["restarts"] == 0
        assert any("beat exited (signal SIGKILL)" in line for line in lines), lines
        assert any("beat restarted" in line for line in lines), lines
    finally:
        pids = [child.pid for child in supervisor.children.values()]
        supervisor.stop_all([(["beat", "worker"], 5.0)])
    for pid in pids:
        try:
            os.kill(pid, 0)
            raise AssertionError(f"{pid} still runs")
        except ProcessLookupError:
            pass
    assert {row["state"] for row in processes_for_page(tmp_path)} == {"stopped"}


def test_a_child_that_cannot_stay_up_is_given_up_on_with_a_clear_line(tmp_path):
    lines = []
    supervisor = Supervisor(_spawn_sleeper, lines.append, tmp_path / "processes.json",
                            policy=RestartPolicy(base_delay_s=0.05, max_delay_s=0.1, give_up_after=3), poll_s=0.02)
    supervisor.start("traffic", [sys.executable, "-c", "raise SystemExit(3)"])
    supervisor.watch()
    try:
        deadline = time.monotonic() + 20
        while supervisor.children["traffic"].state != "gave_up":
            assert time.monotonic() < deadline, lines
            time.sleep(0.05)
    finally:
        supervisor.stop_all([])
    row = processes_for_page(tmp_path)[0]
    assert row["restarts"] == 2 and row["exit_text"] == "code 3"
    assert "traffic exited (code 3) 3 times in a row" in lines[-1] and "not restarting it" in lines[-1]


def test_the_page_shows_nothing_for_a_status_file_left_by_an_ended_make_run(tmp_path):
    (tmp_path / "processes.json").write_text('{"supervisor_pid": 999999999, "children": []}')
    assert processes_for_page(tmp_path) is None
    assert processes_for_page(tmp_path / "missing") is None
