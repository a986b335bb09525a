"""Run history, output and cancellation, with the same visibility rules as jobs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from core import keys, runlog, validation
from core.auth import Principal
from core.domain import Run, RunOutput, RunStatus, utcnow
from core.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound, Violations
from core.ids import is_uuid
from db.repositories.paging import decode_token, encode_token
from db.repositories.runs import RunRepository
from scheduler_svc.jobs import Jobs

CANCEL_FLAG_TTL_SECONDS = 3600


@dataclass(frozen=True)
class OutputChunk:
    stream: str  # "stdout" | "stderr"
    data: str


WatchEvent = Run | OutputChunk
WATCH_POLL_MS = 1000


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

    async def watch(self, principal: Principal, run_id: str, job_id: str) -> AsyncIterator[WatchEvent]:
        run = await self.visible(principal, run_id, job_id)
        async for event in watch_run(self._runs, self._redis, run):
            yield event

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


async def watch_run(runs: RunRepository, redis: Redis, run: Run) -> AsyncIterator[WatchEvent]:
    """The run's current state, then its output and status changes; the last event is
    always the run in its final status.

    Output comes from the run's live stream, read from its first entry, so a client
    that joins late first gets what was already written (the newest output: where
    older output was dropped, a truncation marker says how much). When the stream holds
    nothing (the run ended long ago, or Redis was flushed) the captured tails
    stored in the database are sent instead.
    """
    yield run
    streamed = False
    cursor = "0-0"
    current = run
    continuity = runlog.Continuity()
    while not current.status.is_final:
        entries = await _read_quietly(redis, run.id, cursor, WATCH_POLL_MS)
        for entry in entries:
            cursor = entry.id
            for chunk in _output_chunks(entry, continuity):
                streamed = True
                yield chunk
        # The database has the status; look when the stream says it changed, or
        # every poll period when the stream is silent (e.g. Redis lost it).
        if not entries or any(e.kind in (runlog.STATUS, runlog.END) for e in entries):
            fresh = await runs.get(run.id)
            if fresh is not None and fresh.status is not current.status:
                current = fresh
                if not current.status.is_final:
                    yield current
    # The rest of the stream, page after page (a read returns at most a page).
    while entries := await _read_quietly(redis, run.id, cursor, None):
        for entry in entries:
            cursor = entry.id
            for chunk in _output_chunks(entry, continuity):
                streamed = True
                yield chunk
    if not streamed:
        output = await runs.output(run.id)
        if output is not None:
            if output.stdout:
                yield OutputChunk("stdout", output.stdout)
            if output.stderr:
                yield OutputChunk("stderr", output.stderr)
    yield current


def _output_chunks(entry: runlog.LogEntry, continuity: runlog.Continuity) -> list[OutputChunk]:
    """An output entry as chunks, after a truncation marker (on stderr, where a terminal
    shows diagnostics and a consumer of stdout does not trip on it) when output before it
    was dropped: the log keeps only a run's newest output (runlog.LIVE_CAP_BYTES)."""
    if entry.kind not in (runlog.OUT, runlog.ERR):
        return []
    marker = continuity.marker(entry)
    chunk = OutputChunk("stdout" if entry.kind == runlog.OUT else "stderr", entry.data)
    return [OutputChunk("stderr", marker), chunk] if marker else [chunk]


async def _read_quietly(redis: Redis, run_id: str, cursor: str, block_ms: int | None) -> list[runlog.LogEntry]:
    try:
        return await runlog.read(redis, run_id, cursor, block_ms)
    except (RedisError, OSError):
        await asyncio.sleep((block_ms or 0) / 1000)
        return []
