"""The Celery 5 baseline of bench/execution.py: a trivial task on a Redis broker."""

from __future__ import annotations

import os

from celery import Celery

BROKER = os.environ.get("JOBMESH_BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/15")

app = Celery("jobmesh_bench", broker=BROKER, backend=BROKER)
app.conf.update(
    worker_prefetch_multiplier=4, task_acks_late=False, result_expires=600, broker_connection_retry_on_startup=True
)


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop() -> int:
    return 0
