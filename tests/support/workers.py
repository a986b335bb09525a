"""A worker in this process, for tests: worker_svc's WorkerApp against the test stores."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from core.settings import Settings
from db.engine import Database
from db.repositories.run_lifecycle import RunLifecycleRepository
from worker_svc.main import WorkerApp
from worker_svc.worker import Worker


@asynccontextmanager
async def running_worker(
    settings: Settings,
    worker_id: str,
    slots: int = 2,
    prefetch: int | None = None,
    sandboxed: bool = True,
    lifecycle: Callable[[Database], RunLifecycleRepository] = RunLifecycleRepository,
) -> AsyncIterator[Worker]:
    """A started WorkerApp on the default queue (``sandboxed=False``: JOBMESH_WORKER_SANDBOX=off);
    stopped on exit, handing back what still runs after half a second."""
    worker_settings = settings.worker.model_copy(
        update={
            "id": worker_id,
            "queues": "default",
            "slots": slots,
            "prefetch": settings.worker.prefetch if prefetch is None else prefetch,
            "sandbox": settings.worker.sandbox if sandboxed else "off",
        }
    )
    app = WorkerApp(dataclasses.replace(settings, worker=worker_settings), lifecycle)
    await app.start()
    try:
        yield app.worker
    finally:
        await app.stop(grace=0.5)
