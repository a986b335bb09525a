"""Reaper and reconciler: nothing stays RUNNING or QUEUED forever.

- A RUNNING run whose worker stopped heartbeating (stale in the workers ZSET, or
  absent from it for longer than the TTL - e.g. after Redis was flushed) becomes
  LOST through the same fenced write a worker uses; its retry policy follows.
  The dead worker's processing list goes back to the queues, each message in one
  atomic move (the script a worker gives a run back with).
- A QUEUED run older than the re-queue grace that is not in the in-flight set
  (Redis lost it) is pushed again. Duplicates are harmless: a worker starts a run
  only through the QUEUED → RUNNING compare-and-set.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from core.attempts import RunResult
from core.dispatch_queue import DispatchQueue
from core.domain import RunStatus, utcnow
from db.repositories.run_lifecycle import RunLifecycleRepository

log = logging.getLogger(__name__)


class Reaper:
    def __init__(
        self,
        runs: RunLifecycleRepository,
        dispatch: DispatchQueue,
        heartbeat_ttl: timedelta,
        requeue_after: timedelta,
        batch_size: int,
    ) -> None:
        self._runs = runs
        self._dispatch = dispatch
        self._ttl = heartbeat_ttl
        self._requeue_after = requeue_after
        self._batch_size = batch_size
        self._missing_since: dict[str, datetime] = {}

    async def tick(self, now: datetime | None = None) -> int:
        now = now or utcnow()
        return await self.reap(now) + await self.reconcile(now)

    async def dead_workers(self, now: datetime) -> list[str]:
        cutoff = (now - self._ttl).timestamp()
        dead = set(await self._dispatch.workers_silent_since(cutoff))
        running = await self._runs.running_workers()
        if running:
            scores = await self._dispatch.last_heartbeats(running)
            for worker_id, score in zip(running, scores, strict=True):
                if score is None:
                    first = self._missing_since.setdefault(worker_id, now)
                    if now - first > self._ttl:
                        dead.add(worker_id)
                elif score < cutoff:
                    dead.add(worker_id)
                else:
                    self._missing_since.pop(worker_id, None)
        return sorted(dead)

    async def reap(self, now: datetime) -> int:
        dead = await self.dead_workers(now)
        if not dead:
            return 0
        lost = await self._runs.running_on(dead)
        results = [
            RunResult(
                run_id=r.id,
                scheduled_at=r.scheduled_at,
                fencing_token=r.fencing_token,
                status=RunStatus.LOST,
                exit_code=-1,
                error=f"worker {r.worker_id} stopped heartbeating",
            )
            for r in lost
        ]
        outcome = await self._runs.finish(results, now)
        for worker_id in dead:
            await self._dispatch.requeue_processing(worker_id)
            self._missing_since.pop(worker_id, None)
        await self._dispatch.workers_gone(dead)
        if outcome.accepted:
            log.warning("marked %d runs LOST (workers %s)", len(outcome.accepted), ", ".join(dead))
        return len(outcome.accepted)

    async def reconcile(self, now: datetime) -> int:
        stale = await self._runs.queued_before(now - self._requeue_after, self._batch_size)
        if not stale:
            return 0
        held = await self._dispatch.in_flight(stale)
        missing = [r for r, in_flight in zip(stale, held, strict=True) if not in_flight]
        await self._dispatch.push(missing, now)
        await self._runs.touch_queued(stale, now)
        if missing:
            log.warning("re-pushed %d QUEUED runs that Redis no longer held", len(missing))
        return len(missing)
