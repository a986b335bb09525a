"""What the monitor knows about the mesh: component health and current figures."""

from __future__ import annotations

import math
import time
from datetime import timedelta

from core.dispatch_queue import DispatchQueue
from core.domain import Component, Figures, HealthReport, HealthStatus, utcnow
from core.redis_client import RedisClient
from db.engine import Database
from db.repositories.stats import StatsRepository

SCHEDULER_ALIVE_SECONDS = 10.0
UNSANDBOXED = "sandbox off (JOBMESH_WORKER_SANDBOX=off): scripts run without isolation — development only"
LATENESS_SAMPLE = 10_000


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list; 0 for an empty one."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class MeshHealth:
    def __init__(self, db: Database, redis: RedisClient, worker_ttl_seconds: float) -> None:
        self._db = db
        self._redis = redis
        self._dispatch = DispatchQueue(redis)
        self._stats = StatsRepository(db)
        self._worker_ttl = worker_ttl_seconds

    async def live_workers(self) -> int:
        return await self._dispatch.count_workers_alive(self._worker_ttl)

    async def unsandboxed_workers(self) -> list[str]:
        """Live workers that publish ``sandbox: off`` (sorted ids)."""
        return await self._dispatch.unsandboxed(await self._dispatch.workers_alive(self._worker_ttl))

    async def live_schedulers(self) -> int:
        return await self._dispatch.count_schedulers_alive(SCHEDULER_ALIVE_SECONDS)

    async def check(self) -> HealthReport:
        components: list[Component] = []
        started = time.perf_counter()
        try:
            await self._db.ping()
            components.append(
                Component("database", HealthStatus.SERVING, f"{(time.perf_counter() - started) * 1000:.1f} ms")
            )
        except Exception as exc:
            components.append(Component("database", HealthStatus.NOT_SERVING, str(exc) or type(exc).__name__))
        started = time.perf_counter()
        redis_ok = False
        try:
            await self._redis.ping()
            redis_ok = True
            components.append(
                Component("redis", HealthStatus.SERVING, f"{(time.perf_counter() - started) * 1000:.1f} ms")
            )
        except Exception as exc:
            components.append(Component("redis", HealthStatus.NOT_SERVING, str(exc) or type(exc).__name__))
        if redis_ok:
            schedulers = await self.live_schedulers()
            workers = await self.live_workers()
            components.append(
                Component(
                    "schedulers",
                    HealthStatus.SERVING if schedulers else HealthStatus.DEGRADED,
                    f"{schedulers} alive (loop heartbeat < 10 s)",
                )
            )
            components.append(
                Component(
                    "workers",
                    HealthStatus.SERVING if workers else HealthStatus.DEGRADED,
                    f"{workers} alive (heartbeat < {self._worker_ttl:g} s)",
                )
            )
            # One component per worker that runs scripts without isolation: an operator
            # sees which one, and the mesh is DEGRADED while it runs.
            for worker_id in await self.unsandboxed_workers():
                components.append(
                    Component(f"worker:{worker_id}", HealthStatus.DEGRADED, f"worker {worker_id}: {UNSANDBOXED}")
                )
        else:
            components.append(Component("schedulers", HealthStatus.NOT_SERVING, "unknown: Redis is down"))
            components.append(Component("workers", HealthStatus.NOT_SERVING, "unknown: Redis is down"))
        core_down = any(c.status is HealthStatus.NOT_SERVING for c in components if c.name in ("database", "redis"))
        degraded = any(c.status is not HealthStatus.SERVING for c in components)
        overall = HealthStatus.NOT_SERVING if core_down else HealthStatus.DEGRADED if degraded else HealthStatus.SERVING
        return HealthReport(overall, components, utcnow())

    async def queue_depths(self) -> dict[str, int]:
        return await self._dispatch.queue_depths()

    async def figures(self) -> Figures:
        now = utcnow()
        oldest = await self._stats.oldest_pending_due(now)
        lateness = sorted(await self._stats.recent_lateness(now - timedelta(hours=24), LATENESS_SAMPLE))
        return Figures(
            jobs_by_state=await self._stats.jobs_by_state(),
            runs_by_status=await self._stats.runs_by_status(now),
            queue_depths=await self.queue_depths(),
            workers_alive=await self.live_workers(),
            oldest_pending_age_seconds=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
            runs_last_minute=await self._stats.finished_count(now - timedelta(minutes=1)),
            runs_last_hour=await self._stats.finished_count(now - timedelta(hours=1)),
            lateness_p50_seconds=percentile(lateness, 0.50),
            lateness_p99_seconds=percentile(lateness, 0.99),
            lateness_sample_size=len(lateness),
            schedulers_alive=await self.live_schedulers(),
        )
