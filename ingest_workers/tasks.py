"""Celery tasks: thin wrappers over ingest_workers.services."""

from __future__ import annotations

from celery import shared_task

IDLE_COUNTDOWN_SECONDS = 1.0


@shared_task(acks_late=True, ignore_result=True)
def shard_consume(stream: str, shard_id: str, owner: str | None = None) -> dict:
    """Own a shard for a while, consume, then re-enqueue itself while it still holds the lease."""
    from ingest_workers import services

    owner = owner or services.new_owner_token()
    try:
        outcome, still_owned = services.shard_consume(stream=stream, shard_id=shard_id, owner=owner)
    except services.TransientError:
        still_owned = True  # keep the lease; try again shortly
        outcome = services.BatchOutcome()
    if still_owned:
        shard_consume.apply_async((stream, shard_id, owner), countdown=0 if outcome.read else IDLE_COUNTDOWN_SECONDS)
    return {"read": outcome.read, "valid": outcome.valid, "quarantined": outcome.quarantined}


@shared_task(ignore_result=True)
def ingest_supervise(stream: str | None = None) -> int:
    """Start a consumer for every shard nobody holds (new shards, or a dead worker's expired lease)."""
    from ingest_workers import services

    return services.ingest_supervise(stream=stream, enqueue=lambda s, shard: shard_consume.delay(s, shard))


@shared_task(ignore_result=True)
def warehouse_merge() -> dict:
    from ingest_workers import services

    return services.warehouse_merge_run()


# The quarantine re-drive task lives in its own module; importing it here registers it with the worker.
from ingest_workers.redrive_tasks import quarantine_redrive_task  # noqa: E402,F401
