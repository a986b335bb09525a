"""What the monitor knows about the mesh: component health and current figures."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from redis.asyncio import Redis

from core import keys
from core.domain import utcnow
from db.engine import Database
from db.repositories.stats import StatsRepository

SERVING, DEGRADED, NOT_SERVING = "SERVING", "DEGRADED", "NOT_SERVING"
SCHEDULER_ALIVE_SECONDS = 10.0
UNSANDBOXED = "sandbox off (JOBMESH_WORKER_SANDBOX=off): scripts run without isolation — development only"


@dataclass(frozen=True)
class Component:
    name: str
    status: str
    detail: str


@dataclass(frozen=True)
class HealthReport:
    status: str
    components: list[Component]
    checked_at: datetime


@dataclass(frozen=True)
class Figures:
    jobs_by_state: dict[str, int] = field(default_factory=dict)
    runs_by_status: dict[str, int] = field(default_factory=dict)
    queue_depths: dict[str, int] = field(default_factory=dict)
    workers_alive: int = 0
    oldest_pending_age_seconds: float = 0.0
    runs_last_minute: int = 0
    runs_last_hour: int = 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class MeshHealth:
    def __init__(self, db: Database, redis: Redis, worker_ttl_seconds: float) -> None:
        self._db = db
        self._redis = redis
        self._stats = StatsRepository(db)
        self._worker_ttl = worker_ttl_seconds

    async def live_workers(self) -> int:
        return int(await self._redis.zcount(keys.WORKERS, time.time() - self._worker_ttl, "+inf"))

    async def unsandboxed_workers(self) -> list[str]:
        """Live workers that publish ``sandbox: off`` (sorted ids)."""
        since = time.time() - self._worker_ttl
        alive = [
            w.decode() if isinstance(w, bytes) else str(w)
            for w in await self._redis.zrangebyscore(keys.WORKERS, since, "+inf")
        ]
        if not alive:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for worker_id in alive:
                pipe.hget(keys.worker_info(worker_id), "sandbox")
            sandboxes = await pipe.execute()
        return sorted(w for w, s in zip(alive, sandboxes, strict=True) if s is not None and _text(s) == "off")

    async def live_schedulers(self) -> int:
        return int(await self._redis.zcount(keys.SCHEDULERS, time.time() - SCHEDULER_ALIVE_SECONDS, "+inf"))

    async def check(self) -> HealthReport:
        components: list[Component] = []
        started = time.perf_counter()
        try:
            await self._db.ping()
            components.append(Component("database", SERVING, f"{(time.perf_counter() - started) * 1000:.1f} ms"))
        except Exception as exc:
            components.append(Component("database", NOT_SERVING, str(exc) or type(exc).__name__))
        started = time.perf_counter()
        redis_ok = False
        try:
            await self._redis.ping()
            redis_ok = True
            components.append(Component("redis", SERVING, f"{(time.perf_counter() - started) * 1000:.1f} ms"))
        except Exception as exc:
            components.append(Component("redis", NOT_SERVING, str(exc) or type(exc).__name__))
        if redis_ok:
            schedulers = await self.live_schedulers()
            workers = await self.live_workers()
            components.append(
                Component(
                    "schedulers", SERVING if schedulers else DEGRADED, f"{schedulers} alive (loop heartbeat < 10 s)"
                )
            )
            components.append(
                Component(
                    "workers", SERVING if workers else DEGRADED, f"{workers} alive (heartbeat < {self._worker_ttl:g} s)"
                )
            )
            # One component per worker that runs scripts without isolation: an operator
            # sees which one, and the mesh is DEGRADED while it runs.
            for worker_id in await self.unsandboxed_workers():
                components.append(Component(f"worker:{worker_id}", DEGRADED, f"worker {worker_id}: {UNSANDBOXED}"))
        else:
            components.append(Component("schedulers", NOT_SERVING, "unknown: Redis is down"))
            components.append(Component("workers", NOT_SERVING, "unknown: Redis is down"))
        core_down = any(c.status == NOT_SERVING for c in components if c.name in ("database", "redis"))
        degraded = any(c.status != SERVING for c in components)
        overall = NOT_SERVING if core_down else DEGRADED if degraded else SERVING
        return HealthReport(overall, components, utcnow())

    async def queue_depths(self) -> dict[str, int]:
        names = sorted(_text(n) for n in await self._redis.smembers(keys.QUEUES))
        if not names:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.llen(keys.queue(name))
            depths = await pipe.execute()
        return {name: int(depth) for name, depth in zip(names, depths, strict=True)}

    async def figures(self) -> Figures:
        now = utcnow()
        oldest = await self._stats.oldest_pending_due(now)
        return Figures(
            jobs_by_state=await self._stats.jobs_by_state(),
            runs_by_status=await self._stats.runs_by_status(now),
            queue_depths=await self.queue_depths(),
            workers_alive=await self.live_workers(),
            oldest_pending_age_seconds=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
            runs_last_minute=await self._stats.finished_count(now - timedelta(minutes=1)),
            runs_last_hour=await self._stats.finished_count(now - timedelta(hours=1)),
        )
