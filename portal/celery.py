"""The Celery app and its named queues.

Separate queues keep replays, quality runs and deletions from starving live ingestion: each worker
pool is started with `-Q` naming the queues it serves.
"""

from __future__ import annotations

import enum
import os

from celery import Celery
from kombu import Queue as KombuQueue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")


class Queue(enum.StrEnum):
    INGEST = "ingest"
    REPLAY = "replay"
    QUALITY = "quality"
    DELETION = "deletion"
    MODELS = "models"
    DEFAULT = "default"


app = Celery("chatorbit")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [KombuQueue(queue.value) for queue in Queue]
app.conf.task_default_queue = Queue.DEFAULT.value
#: the queue of each task that does not go to the default one (routes, not a per-task ``queue``
#: attribute, which Celery 6 drops)
app.conf.task_routes = {
    "ingest_workers.tasks.shard_consume": {"queue": Queue.INGEST.value},
    "ingest_workers.redrive_tasks.quarantine_redrive_task": {"queue": Queue.REPLAY.value},
    "warehouse.tasks.models_run_scheduled": {"queue": Queue.MODELS.value},
}
app.autodiscover_tasks()


@app.on_after_configure.connect
def _filesystem_broker_folders(sender, **kwargs) -> None:
    """kombu's filesystem transport (the embedded default) needs its folders to exist."""
    from pathlib import Path

    options = sender.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        if options.get(key):
            Path(options[key]).mkdir(parents=True, exist_ok=True)

# Periodic work (run `celery -A portal beat`; `make run` starts it): start consumers for free shards,
# and move landed rows into CANONICAL.EVENTS every few seconds.
app.conf.beat_schedule = {
    "ingest-supervise": {"task": "ingest_workers.tasks.ingest_supervise", "schedule": 10.0},
    "warehouse-merge": {"task": "ingest_workers.tasks.warehouse_merge", "schedule": 5.0},
    # the curated models (ANALYTICS.*, IDENTITY.*): incremental, so a minute's work is small
    "models-run": {"task": "warehouse.tasks.models_run_scheduled",
                   "schedule": float(os.environ.get("MODELS_RUN_INTERVAL_S", "60"))},
}
