"""The erasure job survives its worker: a real Celery worker of the deletion queue is killed with SIGKILL while
a step runs; once its lease lapses the sweeper queues the ticket again and a second worker finishes it, without
redoing the step already done and re-running the interrupted one (steps are idempotent)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from deletion import services
from deletion.models import DeletionTicket, StepStatus, TicketStatus
from tests.deletion import steps

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def worker_env(deletion_env):
    assert settings.CELERY_BROKER_URL.startswith("redis"), "needs the Redis broker (CELERY_BROKER_URL=redis://…)"
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("deletion")  # no message left by an earlier run
    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_ALLOW")}
    env.update({
        "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/"
                        f"{db['NAME']}",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL, "DEBUG": "1",
        "DELETION_STEP_PROVIDERS": "tests.deletion.steps.blocking_steps",
        "DELETION_LEASE_SECONDS": "3", "DELETION_TEST_DIR": str(deletion_env),
    })
    return env


def start_worker(env: dict, name: str, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "portal", "worker", "-Q", "deletion", "--pool=solo",
             "-n", f"{name}@%h", "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "INFO"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(predicate, *, timeout: float, what: str, logs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n" + "\n".join(p.read_text()[-3000:] for p in logs))


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def step_states(ticket_id: int) -> dict[str, tuple[str, int]]:
    return {s.name: (s.status, s.attempts) for s in DeletionTicket.objects.get(pk=ticket_id).steps.all()}


def test_a_ticket_whose_worker_is_killed_mid_step_is_resumed_by_another_worker(
        worker_env, deletion_env, privacy_user, tmp_path):
    (deletion_env / "files_a" / "anon-alice-web").write_text("x")
    (deletion_env / "blocking_files").mkdir()
    (deletion_env / "blocking_files" / "T0ALICE:U0ALICE").write_text("x")
    (deletion_env / "files_b" / "device-alice-iphone").write_text("x")
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    first = second = None
    try:
        first = start_worker(worker_env, "w1", logs[0])
        ticket = services.ticket_file(actor=privacy_user, regulation="gdpr", requester_reference="R-crash",
                                      identifiers=[services.subject.identifier_parse("email", "alice@example.com")],
                                      received_at=timezone.now())
        services.ticket_confirm(actor=privacy_user, ticket=ticket)       # queued on commit
        wait_for(lambda: (deletion_env / "blocking.started").exists(), timeout=90,
                 what="the first worker to reach the blocking step", logs=logs)
        assert step_states(ticket.pk) == {"test.files_a": ("done", 1), "test.blocking": ("running", 1),
                                          "test.files_b": ("pending", 0)}

        os.killpg(first.pid, signal.SIGKILL)                              # dies inside the step, holding the lease
        first.wait(timeout=10)
        (deletion_env / "release").write_text("go")
        second = start_worker(worker_env, "w2", logs[1])

        from django.db.models.functions import Now

        wait_for(lambda: DeletionTicket.objects.filter(pk=ticket.pk, lease_expires_at__lt=Now()).exists(),
                 timeout=30, what="the dead worker's lease to lapse", logs=logs)
        assert services.deletion_resume_stale() == [ticket.pk]           # what the beat's sweeper does
        wait_for(lambda: DeletionTicket.objects.get(pk=ticket.pk).status in (TicketStatus.DONE, TicketStatus.FAILED),
                 timeout=90, what="the second worker to finish the ticket", logs=logs)
    finally:
        stop(first)
        stop(second)

    ticket.refresh_from_db()
    assert ticket.status == TicketStatus.DONE, ticket.error
    assert steps.runs() == ["test.files_a", "test.blocking", "test.blocking", "test.files_b"]
    assert step_states(ticket.pk) == {"test.files_a": (StepStatus.DONE, 1), "test.blocking": (StepStatus.DONE, 2),
                                      "test.files_b": (StepStatus.DONE, 1)}
    left = [p.name for folder in ("files_a", "blocking_files", "files_b") for p in (deletion_env / folder).iterdir()]
    assert left == []
    assert ticket.evidence.record["all_verified_zero_remaining"]
    assert ticket.lease_owner == ""


def test_a_worker_retries_a_transient_store_failure_after_its_backoff(worker_env, deletion_env, privacy_user,
                                                                      tmp_path):
    (deletion_env / "transient_failures").write_text("2")
    env = {**worker_env, "DELETION_STEP_PROVIDERS": "tests.deletion.steps.recording_steps",
           "DELETION_RETRY_BASE_SECONDS": "1"}
    log = tmp_path / "w.log"
    worker = start_worker(env, "w", log)
    try:
        ticket = services.ticket_file(actor=privacy_user, regulation="gdpr", requester_reference="R-retry",
                                      identifiers=[services.subject.identifier_parse("anonymous_id", "anon-1")],
                                      received_at=timezone.now())
        services.ticket_confirm(actor=privacy_user, ticket=ticket)
        wait_for(lambda: DeletionTicket.objects.get(pk=ticket.pk).status in (TicketStatus.DONE, TicketStatus.FAILED),
                 timeout=90, what="the worker to finish the ticket after two retries", logs=[log])
    finally:
        stop(worker)
    ticket.refresh_from_db()
    assert ticket.status == TicketStatus.DONE, ticket.error
    assert steps.runs() == ["test.files_a", "test.transient", "test.transient", "test.transient", "test.files_b"]
    assert step_states(ticket.pk)["test.transient"] == (StepStatus.DONE, 3)
    assert "Retry in" in log.read_text()                               # Celery's retry, not the sweeper
