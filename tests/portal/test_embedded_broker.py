"""The embedded broker (`make run`'s Celery broker with no server) neither chokes on a message file it
finds half-written nor loses the messages a killed worker had taken but not acknowledged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from kombu import Connection, Exchange, Queue

TRANSPORT = "portal.embedded_broker:Transport"


def options(root: Path) -> dict:
    for name in ("queue", "control", "processed"):
        (root / name).mkdir(parents=True, exist_ok=True)
    return {"data_folder_in": str(root / "queue"), "data_folder_out": str(root / "queue"),
            "control_folder": str(root / "control"), "processed_folder": str(root / "processed")}


def connection(root: Path, transport: str = TRANSPORT) -> Connection:
    return Connection("filesystem://", transport=transport, transport_options=options(root))


def a_queue(name: str) -> Queue:
    """A queue named for its test: a transport keeps declared bindings per process, across folders."""
    return Queue(name, Exchange(name), name)


def test_the_embedded_default_uses_this_broker():
    env = {k: v for k, v in os.environ.items() if k not in {"CELERY_BROKER_URL", "DEBUG"}}
    probe = "from portal.celery import app; print(app.connection_for_write().transport_cls)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).resolve().parents[2], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == TRANSPORT, out.stderr


def test_a_message_file_found_empty_is_set_aside_and_the_next_one_delivered(tmp_path):
    queue = a_queue("empty-file")
    with connection(tmp_path) as conn:
        conn.Producer().publish({"n": 1}, exchange=queue.exchange, routing_key=queue.name, declare=[queue])
        # what kombu's own writer leaves for a moment: the file created under its final name, not yet written
        (tmp_path / "queue" / "0_half-written.empty-file.msg").write_bytes(b"")
        got = conn.SimpleQueue(queue).get(timeout=2)
        assert got.payload == {"n": 1}
        got.ack()
    assert [p.name for p in (tmp_path / "unreadable").iterdir()] == ["0_half-written.empty-file.msg"]


def test_a_message_a_killed_consumer_took_but_did_not_acknowledge_is_delivered_again(tmp_path):
    queue = a_queue("killed")
    with connection(tmp_path) as conn:
        conn.Producer().publish({"task": "important"}, exchange=queue.exchange, routing_key=queue.name,
                                declare=[queue])
    taker = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from kombu import Connection, Exchange, Queue
        conn = Connection("filesystem://", transport={TRANSPORT!r}, transport_options={options(tmp_path)!r})
        message = conn.SimpleQueue(Queue("killed", Exchange("killed"), "killed")).get(timeout=5)
        print("took", message.payload, flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", taker], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("took")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    with connection(tmp_path) as conn:   # the next worker to open a channel puts it back
        again = conn.SimpleQueue(queue).get(timeout=2)
        assert again.payload == {"task": "important"}
        again.ack()
        with pytest.raises(conn.SimpleQueue(queue).Empty):
            conn.SimpleQueue(queue).get(timeout=0.2)


def test_producers_and_consumers_in_several_processes_deliver_each_message_exactly_once(tmp_path):
    count, producers = 400, 3
    root = Path(__file__).resolve().parents[2]
    producer = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(root)!r})
        from kombu import Connection, Exchange, Queue
        queue = Queue("many", Exchange("many"), "many")
        with Connection("filesystem://", transport={TRANSPORT!r}, transport_options={options(tmp_path)!r}) as conn:
            producer = conn.Producer()
            for i in range({count}):
                producer.publish({{"p": sys.argv[1], "i": i, "pad": "x" * 20000}}, exchange=queue.exchange,
                                 routing_key="many", declare=[queue])
    """)
    procs = [subprocess.Popen([sys.executable, "-c", producer, str(n)]) for n in range(producers)]
    seen = []
    queue = a_queue("many")
    with connection(tmp_path) as conn:
        simple = conn.SimpleQueue(queue)
        deadline = time.monotonic() + 60
        while len(seen) < count * producers and time.monotonic() < deadline:
            try:
                message = simple.get(timeout=0.5)
            except simple.Empty:
                continue
            seen.append((message.payload["p"], message.payload["i"]))
            message.ack()
    for proc in procs:
        assert proc.wait(timeout=30) == 0
    assert len(seen) == len(set(seen)) == count * producers
    assert not (tmp_path / "unreadable").exists()
