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
    DEFAULT = "default"


app = Celery("chatorbit")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [KombuQueue(queue.value) for queue in Queue]
app.conf.task_default_queue = Queue.DEFAULT.value
app.autodiscover_tasks()
