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
    "ingest_workers.redrive_tasks.quarantine_redrive_task": {"queue": Queue.REPLAY.value},
    "warehouse.tasks.models_run_scheduled": {"queue": Queue.MODELS.value},
    "quality.tasks.quality_run_scheduled": {"queue": Queue.QUALITY.value},
    "quality.tasks.quality_run_queued": {"queue": Queue.QUALITY.value},
    "quality.tasks.alerts_evaluate": {"queue": Queue.QUALITY.value},
    "quality.tasks.scorecards_evaluate": {"queue": Queue.QUALITY.value},
    "deletion.tasks.deletion_ticket_run": {"queue": Queue.DELETION.value},
    "deletion.tasks.deletion_resume_stale": {"queue": Queue.DELETION.value},
    "deletion.tasks.retention_run_scheduled": {"queue": Queue.DELETION.value},
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

# Periodic work (run `celery -A portal beat`; `make run` starts it): move landed rows into
# CANONICAL.EVENTS every few seconds (one merger at a time: a run that finds the merger lease held
# returns at once).
app.conf.beat_schedule = {
    # the merger: every 5 s embedded; every 60 s at production scale (docs/capacity.md)
    "warehouse-merge": {"task": "ingest_workers.tasks.warehouse_merge",
                        "schedule": float(os.environ.get("INGEST_MERGE_INTERVAL_SECONDS", "5"))},
    # the curated models (ANALYTICS.*, IDENTITY.*): incremental, so a minute's work is small
    "models-run": {"task": "warehouse.tasks.models_run_scheduled",
                   "schedule": float(os.environ.get("MODELS_RUN_INTERVAL_S", "60"))},
    # the data-quality checks (quality/) over CANONICAL.EVENTS and the curated tables, and their retention purge
    "quality-run": {"task": "quality.tasks.quality_run_scheduled",
                    "schedule": float(os.environ.get("QUALITY_RUN_INTERVAL_S", "300"))},
    # the alert rules (quality/alerts.py): open/resolve alerts, send and retry their notifications
    "alerts-evaluate": {"task": "quality.tasks.alerts_evaluate",
                        "schedule": float(os.environ.get("QUALITY_ALERT_INTERVAL_S", "30"))},
    # deletion tickets whose worker died (lease lapsed) are queued again and resume where they stopped
    "deletion-resume-stale": {"task": "deletion.tasks.deletion_resume_stale",
                              "schedule": float(os.environ.get("DELETION_RESUME_INTERVAL_S", "60"))},
    # retention purges (deletion/retention.py): raw archive, landing, quarantine payloads, curated tables
    "retention-run": {"task": "deletion.tasks.retention_run_scheduled",
                      "schedule": float(os.environ.get("RETENTION_RUN_INTERVAL_S", "86400"))},
}


# --- the ingest pool's long-lived shard consumers ---------------------------------------------------
# `celery -A portal worker -Q ingest --shard-consumer` runs one ingest_workers.consumer.ShardConsumer
# beside the worker for the worker's whole life: it takes its fair share of the shards and consumes
# them with pooled connections; Celery supervises the process (start, signals, shutdown).

from celery import bootsteps  # noqa: E402
from click import Option  # noqa: E402

app.user_options["worker"].add(Option(
    ["--shard-consumer"], is_flag=True, default=False,
    help="Also run a long-lived Kinesis shard consumer in this worker (the ingest pool)."))


class ShardConsumerStep(bootsteps.StartStopStep):
    """Runs a ShardConsumer in a thread of the worker's main process while the worker runs."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker, shard_consumer: bool = False, **options):
        super().__init__(worker, **options)
        self.enabled = bool(shard_consumer)
        self.consumer = None
        self.thread = None

    def start(self, worker) -> None:
        import threading

        from ingest_workers.consumer import ShardConsumer

        self.consumer = ShardConsumer(worker_id=f"{worker.hostname}:{os.getpid()}", gc_settle=True)
        self.thread = threading.Thread(target=self.consumer.run, name="shard-consumer", daemon=True)
        self.thread.start()

    def stop(self, worker) -> None:
        if self.consumer is not None:
            self.consumer.stop()
        if self.thread is not None:
            self.thread.join(timeout=30)


app.steps["worker"].add(ShardConsumerStep)


from celery.signals import worker_process_shutdown, worker_ready, worker_shutdown  # noqa: E402


@worker_shutdown.connect
@worker_process_shutdown.connect
def _warehouse_logouts(**kwargs) -> None:
    """Log the pooled warehouse connections out while the warehouse still answers (`make run` stops
    the workers before it). Left to the connector's exit hook, each logout to a warehouse already gone
    retries for seconds, and shutdown took 20 s."""
    from warehouse.connection import pool_close

    pool_close()


@worker_process_shutdown.connect
def _metrics_process_dead(pid=None, **kwargs) -> None:
    """A pool child that exits leaves its counter files to the sum (counters keep counting) but its
    live gauges must go (prometheus_client's multiprocess mode; docs/metrics.md)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())


@worker_ready.connect
def _metrics_endpoint(**kwargs) -> None:
    """With PROMETHEUS_WORKER_PORT, the worker's main process serves its counters (every pool process of
    it, through PROMETHEUS_MULTIPROC_DIR) in the Prometheus text format on that port, for a worker whose
    host the portal's /metrics cannot see (another container; docs/metrics.md). On
    PROMETHEUS_WORKER_ADDR, the loopback unless set: the endpoint has no access control of its own."""
    port = os.environ.get("PROMETHEUS_WORKER_PORT")
    if not port:
        return
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    from ingest_workers.metrics import REGISTRY

    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry, path=os.environ["PROMETHEUS_MULTIPROC_DIR"])
    start_http_server(int(port), addr=os.environ.get("PROMETHEUS_WORKER_ADDR", "127.0.0.1"), registry=registry)
