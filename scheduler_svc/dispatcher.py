"""Dispatcher: claims due PENDING runs, applies pause/lateness/overlap rules, marks
the rest QUEUED and, once that is committed, pushes them to their Redis queues in
one round trip.

Pushing after the commit matters: a worker's QUEUED → RUNNING compare-and-set
must see the committed QUEUED row (under READ COMMITTED, InnoDB's semi-consistent
read would otherwise skip the still-locked row and the worker would drop the
message). If the push fails, the runs are QUEUED but absent from Redis, which is
exactly what the reconciler repairs.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from redis.exceptions import RedisError

from core.dispatch_queue import DispatchQueue
from core.domain import Job, JobState, OverlapPolicy, Run, RunStatus, RunTrigger, SkipReason, utcnow
from db.repositories.run_lifecycle import RunLifecycleRepository

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(
        self, runs: RunLifecycleRepository, dispatch: DispatchQueue, ahead: timedelta, batch_size: int
    ) -> None:
        self._runs = runs
        self._dispatch = dispatch
        self._ahead = ahead
        self._batch_size = batch_size

    async def tick(self, now: datetime | None = None) -> int:
        now = now or utcnow()
        cancel: list[Run] = []
        async with self._runs.claim_due(now + self._ahead, self._batch_size) as batch:
            queued: list[Run] = []
            skipped: dict[str, list[Run]] = {}
            taken: dict[str, int] = {}
            for run in batch.runs:
                reason = self._skip_reason(run, batch.jobs.get(run.job_id), now)
                job = batch.jobs.get(run.job_id)
                if reason is None and job is not None and job.overlap_policy is not OverlapPolicy.ALLOW:
                    active = batch.active_by_job.get(job.id, [])
                    busy = bool(active) or taken.get(job.id, 0) > 0
                    if busy and job.overlap_policy is OverlapPolicy.FORBID:
                        reason = SkipReason.OVERLAP.value
                    elif busy:
                        cancel.extend(active)
                if reason is not None:
                    skipped.setdefault(reason, []).append(run)
                    continue
                queued.append(run)
                taken[run.job_id] = taken.get(run.job_id, 0) + 1
            await batch.mark_queued(queued, now)
            for reason, runs in skipped.items():
                await batch.mark_skipped(runs, reason, now)
            await batch.request_cancel(cancel)
        try:
            await self._dispatch.push(queued, now)
        except (RedisError, OSError) as exc:
            log.warning("push of %d runs failed (%s); the reconciler will push them again", len(queued), exc)
        await self._dispatch.request_cancel(cancel)
        return len(batch.runs)

    @staticmethod
    def _skip_reason(run: Run, job: Job | None, now: datetime) -> str | None:
        if job is None or job.state is JobState.DELETED:
            return SkipReason.JOB_DELETED.value
        scheduled = run.trigger in (RunTrigger.SCHEDULE, RunTrigger.CATCH_UP)
        if job.state is JobState.PAUSED and scheduled:
            return SkipReason.PAUSED.value
        if job.max_lateness_seconds and run.status is RunStatus.PENDING:
            late = now - max(run.due_at, run.scheduled_at)
            if late > timedelta(seconds=job.max_lateness_seconds):
                return SkipReason.LATE.value
        return None
