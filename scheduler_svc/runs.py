"""Run history, output and cancellation, with the same visibility rules as jobs."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from core import keys, validation
from core.auth import Principal
from core.domain import Run, RunOutput, RunStatus, utcnow
from core.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound, Violations
from core.ids import is_uuid
from db.repositories.paging import decode_token, encode_token
from db.repositories.runs import RunRepository
from scheduler_svc.jobs import Jobs

CANCEL_FLAG_TTL_SECONDS = 3600


@dataclass(frozen=True)
class RunPage:
    runs: list[Run]
    next_page_token: str


class Runs:
    def __init__(self, runs: RunRepository, jobs: Jobs, redis: Redis) -> None:
        self._runs = runs
        self._jobs = jobs
        self._redis = redis

    async def visible(self, principal: Principal, run_id: str, job_id: str = "") -> Run:
        if not is_uuid(run_id):
            raise InvalidArgument(FieldViolation("run_id", "must be a run id (UUID)"))
        run = await self._runs.get(run_id)
        if run is None or (job_id and run.job_id != job_id):
            raise NotFound(f"run {run_id} not found")
        await self._jobs.visible(principal, run.job_id, field="job_id")
        return run

    async def list_page(
        self, principal: Principal, job_id: str, status: RunStatus | None, page_size: int, page_token: str, skip: int
    ) -> RunPage:
        v = Violations()
        size = validation.check_page_size(v, page_size)
        if skip < 0:
            v.add("skip", "must not be negative")
        v.raise_if_any()
        await self._jobs.visible(principal, job_id, field="job_id")
        key = f"runs|{job_id}|{status}"
        offset = decode_token(page_token, key) + skip
        runs = await self._runs.list_for_job(job_id, status, size + 1, offset)
        more = len(runs) > size
        runs = runs[:size]
        return RunPage(runs, encode_token(offset + size, key) if more else "")

    async def logs(self, principal: Principal, run_id: str, job_id: str) -> RunOutput:
        run = await self.visible(principal, run_id, job_id)
        return await self._runs.output(run.id) or RunOutput(run.id)

    async def cancel(self, principal: Principal, run_id: str, job_id: str) -> Run:
        run = await self.visible(principal, run_id, job_id)
        principal.require_writer()
        if run.status.is_final:
            raise FailedPrecondition(f"run {run_id} has already ended ({run.status.value})")
        after = await self._runs.cancel(run, utcnow())
        if after is None:
            raise NotFound(f"run {run_id} not found")
        if after.status is RunStatus.RUNNING:
            await tell_workers_to_cancel(self._redis, [after.id])
        return after


async def tell_workers_to_cancel(redis: Redis, run_ids: list[str]) -> None:
    """Flag (for a worker that has not subscribed yet) and publish (for the one running it)."""
    if not run_ids:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for run_id in run_ids:
            pipe.set(keys.cancel_flag(run_id), "1", ex=CANCEL_FLAG_TTL_SECONDS)
            pipe.publish(keys.CANCEL_CHANNEL, run_id)
        await pipe.execute()
