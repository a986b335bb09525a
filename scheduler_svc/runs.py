"""Run history, output and cancellation, with the same visibility rules as jobs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from redis.exceptions import RedisError

from core import runlog
from core.auth import Principal
from core.dispatch_queue import DispatchQueue
from core.domain import LogStream, OutputChunk, Run, RunOutput, RunStatus, WatchEvent, utcnow
from core.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from core.ids import is_uuid
from core.paging import Page, paginate
from db.repositories.runs import RunRepository
from scheduler_svc.jobs import Jobs

WATCH_POLL_MS = 1000


class Runs:
    def __init__(self, runs: RunRepository, jobs: Jobs, dispatch: DispatchQueue) -> None:
        self._runs = runs
        self._jobs = jobs
        self._dispatch = dispatch

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
    ) -> Page[Run]:
        pager = paginate(page_size, page_token, f"runs|{job_id}|{status}", skip=skip)
        await self._jobs.visible(principal, job_id, field="job_id")
        return pager.page(await self._runs.list_for_job(job_id, status, pager.limit, pager.offset))

    async def logs(self, principal: Principal, run_id: str, job_id: str) -> RunOutput:
        run = await self.visible(principal, run_id, job_id)
        return await self._runs.output(run.id) or RunOutput(run.id)

    async def watch(self, principal: Principal, run_id: str, job_id: str) -> AsyncIterator[WatchEvent]:
        run = await self.visible(principal, run_id, job_id)
        async for event in watch_run(self._runs, self._dispatch, run):
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
            await self._dispatch.request_cancel([after])
        return after


async def watch_run(runs: RunRepository, dispatch: DispatchQueue, run: Run) -> AsyncIterator[WatchEvent]:
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
        entries = await _read_quietly(dispatch, run, cursor, WATCH_POLL_MS)
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
    while entries := await _read_quietly(dispatch, run, cursor, None):
        for entry in entries:
            cursor = entry.id
            for chunk in _output_chunks(entry, continuity):
                streamed = True
                yield chunk
    if not streamed:
        output = await runs.output(run.id)
        if output is not None:
            if output.stdout:
                yield OutputChunk(LogStream.STDOUT, output.stdout)
            if output.stderr:
                yield OutputChunk(LogStream.STDERR, output.stderr)
    yield current


def _output_chunks(entry: runlog.LogEntry, continuity: runlog.Continuity) -> list[OutputChunk]:
    """An output entry as chunks, after a truncation marker (on stderr, where a terminal
    shows diagnostics and a consumer of stdout does not trip on it) when output before it
    was dropped: the log keeps only a run's newest output (runlog.LIVE_CAP_BYTES)."""
    if not isinstance(entry.kind, LogStream):
        return []
    marker = continuity.marker(entry)
    chunk = OutputChunk(entry.kind, entry.data)
    return [OutputChunk(LogStream.STDERR, marker), chunk] if marker else [chunk]


async def _read_quietly(dispatch: DispatchQueue, run: Run, cursor: str, block_ms: int | None) -> list[runlog.LogEntry]:
    try:
        return await dispatch.read_run_log(run.queue, run.id, cursor, block_ms)
    except (RedisError, OSError):
        await asyncio.sleep((block_ms or 0) / 1000)
        return []
