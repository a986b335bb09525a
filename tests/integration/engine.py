"""An in-process engine for tests: the scheduler's loops plus real workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from core.dispatch_queue import DispatchQueue
from core.settings import Settings
from db.engine import Database
from db.repositories.run_lifecycle import RunLifecycleRepository
from worker_svc.main import build_executor
from worker_svc.worker import Worker, WorkerConfig


@asynccontextmanager
async def running_worker(
    settings: Settings, worker_id: str, slots: int = 2, prefetch: int | None = None, sandboxed: bool = True
) -> AsyncIterator[Worker]:
    from core.redis_client import create_redis

    db = Database.from_url(settings.database.database_url, slots + 1)
    redis = create_redis(settings.redis.redis_url)
    worker = Worker(
        WorkerConfig(
            worker_id,
            ["default"],
            slots,
            settings.worker.heartbeat_seconds,
            1.0,
            settings.worker.prefetch if prefetch is None else prefetch,
            sandboxed,
        ),
        RunLifecycleRepository(db),
        DispatchQueue(redis),
        build_executor(settings),
    )
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await worker.hand_back_after(0.5)
        await asyncio.wait_for(task, 15)
        await redis.aclose()
        await db.close()
