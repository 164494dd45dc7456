"""gunicorn settings read from the working directory (the Dockerfile's CMD): /metrics with several workers.

prometheus_client's multiprocess mode needs PROMETHEUS_MULTIPROC_DIR (the Dockerfile sets it) emptied
at start, since files of an earlier run would keep adding up, and a worker that exits marked dead
(docs/metrics.md).
"""

import os
import shutil


def on_starting(server):
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder, exist_ok=True)


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
