"""A run's way through dispatch: the dispatcher's claims, the worker's fenced start,
finish and hand-back, and what the reaper and the reconciler look for.

Every hot-path method works on a batch: one multi-row INSERT, one UPDATE ... IN,
one transaction per batch. What follows an ended attempt (a retry, a completed job)
is decided by ``core.attempts``; this module only writes it.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, case, literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core.attempts import FinishOutcome, RunResult, follow_up
from core.domain import Job, JobState, OverlapPolicy, Run, RunOutput, RunStatus, assembled
from db.engine import Database, upsert
from db.models import JobRow, RunOutputRow, RunRow
from db.repositories.rows import run_from_row
from db.repositories.runs import by_keys, insert_runs, jobs_by_id

# The worker's hot statements, built once (construction and cache keys are most of
# their cost) with expanding parameters: key_params() fills them.
_BY_KEY_PARAMS = and_(
    RunRow.id.in_(bindparam("ids", expanding=True)),
    RunRow.scheduled_at.between(
        bindparam("first", type_=RunRow.scheduled_at.type), bindparam("last", type_=RunRow.scheduled_at.type)
    ),
)
_TAKE_NOW = bindparam("take_now", type_=RunRow.started_at.type)
_TAKE = (
    update(RunRow)
    .where(_BY_KEY_PARAMS, RunRow.status == RunStatus.QUEUED.value)
    .values(
        status=RunStatus.RUNNING.value,
        worker_id=bindparam("take_worker"),
        fencing_token=bindparam("take_token"),
        # A run taken ahead of its slot (the dispatch lead) starts at its slot: until
        # the worker reports the real start, that is what it shows, never earlier.
        started_at=case((RunRow.due_at > _TAKE_NOW, RunRow.due_at), else_=_TAKE_NOW),
    )
)
_TAKEN = select(RunRow).where(
    _BY_KEY_PARAMS, RunRow.fencing_token == bindparam("take_token"), RunRow.status == RunStatus.RUNNING.value
)
_LOCK_RUNNING = select(RunRow).where(_BY_KEY_PARAMS, RunRow.status == RunStatus.RUNNING.value).with_for_update()


def key_params(keys: Sequence[tuple[str, datetime]]) -> dict[str, Any]:
    """The parameters of _BY_KEY_PARAMS (see runs.by_keys)."""
    times = [t for _, t in keys]
    return {"ids": [i for i, _ in keys], "first": min(times), "last": max(times)}


class DispatchBatch:
    """PENDING runs claimed (row-locked) by one dispatcher until the block exits."""

    def __init__(self, conn: AsyncConnection, runs: list[Run], jobs: dict[str, Job], active: dict[str, list[Run]]):
        self._conn = conn
        self.runs = runs
        self.jobs = jobs
        self.active_by_job = active  # QUEUED/RUNNING runs of the claimed runs' jobs

    async def mark_queued(self, runs: Sequence[Run], now: datetime) -> None:
        if runs:
            await self._conn.execute(
                update(RunRow)
                .where(by_keys([(r.id, r.scheduled_at) for r in runs]))
                .values(status=RunStatus.QUEUED.value, queued_at=now)
            )

    async def mark_skipped(self, runs: Sequence[Run], reason: str, now: datetime) -> None:
        if runs:
            await self._conn.execute(
                update(RunRow)
                .where(by_keys([(r.id, r.scheduled_at) for r in runs]))
                .values(status=RunStatus.SKIPPED.value, skip_reason=reason, finished_at=now)
            )

    async def request_cancel(self, runs: Sequence[Run]) -> None:
        if runs:
            await self._conn.execute(
                update(RunRow).where(by_keys([(r.id, r.scheduled_at) for r in runs])).values(cancel_requested=True)
            )


class RunLifecycleRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    # Dispatcher -------------------------------------------------------------

    @asynccontextmanager
    async def claim_due(self, until: datetime, limit: int) -> AsyncIterator[DispatchBatch]:
        """Lock up to ``limit`` PENDING runs due by ``until`` (SKIP LOCKED: other
        dispatchers take other rows); the caller marks them before the block exits.

        A run is never due before its slot, so ``scheduled_at <= until`` holds for
        every due run: saying so prunes the later partitions, whose PENDING runs
        (one-time jobs set for next week) the scan would otherwise walk on every
        tick whenever the optimizer reads the status index by ref, not by range."""
        async with self._db.transaction() as conn:
            rows = (
                await conn.execute(
                    select(RunRow)
                    .where(
                        RunRow.status == RunStatus.PENDING.value,
                        RunRow.due_at <= until,
                        RunRow.scheduled_at <= until,
                    )
                    .order_by(RunRow.due_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            runs = [run_from_row(r) for r in rows]
            jobs: dict[str, Job] = {}
            active: dict[str, list[Run]] = {}
            if runs:
                job_ids = sorted({r.job_id for r in runs})
                jobs = await jobs_by_id(conn, job_ids)
                guarded = [j for j in job_ids if j in jobs and jobs[j].overlap_policy is not OverlapPolicy.ALLOW]
                if guarded:
                    for row in (
                        await conn.execute(
                            select(RunRow).where(
                                RunRow.job_id.in_(guarded),
                                RunRow.status.in_([RunStatus.QUEUED.value, RunStatus.RUNNING.value]),
                            )
                        )
                    ).all():
                        active.setdefault(row.job_id, []).append(run_from_row(row))
            yield DispatchBatch(conn, runs, jobs, active)

    async def queued_before(self, before: datetime, limit: int) -> list[Run]:
        async with self._db.transaction() as conn:
            rows = (
                await conn.execute(
                    select(RunRow)
                    .where(RunRow.status == RunStatus.QUEUED.value, RunRow.queued_at <= before)
                    .order_by(RunRow.queued_at)
                    .limit(limit)
                )
            ).all()
        return [run_from_row(r) for r in rows]

    async def touch_queued(self, runs: Sequence[Run], now: datetime) -> None:
        if runs:
            async with self._db.transaction() as conn:
                await conn.execute(
                    update(RunRow)
                    .where(
                        by_keys([(r.id, r.scheduled_at) for r in runs]),
                        RunRow.status == RunStatus.QUEUED.value,
                    )
                    .values(queued_at=now)
                )

    # Worker -----------------------------------------------------------------

    async def start(
        self, keys: Sequence[tuple[str, datetime]], worker_id: str, token: str, now: datetime
    ) -> list[tuple[Run, Job, bool]]:
        """QUEUED → RUNNING compare-and-set for a batch; returns the runs this call won,
        each with its job and whether a cancel was already requested."""
        if not keys:
            return []
        params = key_params(keys) | {"take_worker": worker_id, "take_token": token, "take_now": now}
        async with self._db.transaction() as conn:
            await conn.execute(_TAKE, params)
            rows = (await conn.execute(_TAKEN, params)).all()
            if not rows:
                return []
            jobs = await jobs_by_id(conn, (r.job_id for r in rows), script=True)
        return [(run_from_row(r), jobs[r.job_id], bool(r.cancel_requested)) for r in rows if r.job_id in jobs]

    async def finish(
        self, results: Sequence[RunResult], now: datetime, rng: random.Random | None = None
    ) -> FinishOutcome:
        """Write results fenced by token: a result whose token is no longer current
        (superseded, reaped) is rejected. Then what the accepted ones lead to
        (``core.attempts.follow_up``): next attempts, one-time jobs COMPLETED."""
        outcome = FinishOutcome()
        if not results:
            return outcome
        async with self._db.transaction() as conn:
            # Lock the rows and read their current tokens: the fencing check and the
            # writes happen under the same locks, in one transaction per batch.
            keys = [(r.run_id, r.scheduled_at) for r in results]
            locked = {row.id: row for row in (await conn.execute(_LOCK_RUNNING, key_params(keys))).all()}
            groups: dict[tuple[str, int, str], list[RunResult]] = {}
            ended: list[Run] = []  # each accepted run as it has just ended
            for res in results:
                row = locked.pop(res.run_id, None)
                if row is not None and row.fencing_token == res.fencing_token:
                    outcome.accepted.append(res.run_id)
                    ended.append(assembled(Run, vars(run_from_row(row)) | {"status": res.status}))
                    groups.setdefault((res.status.value, res.exit_code, res.error[:1000]), []).append(res)
                else:
                    outcome.rejected.append(res.run_id)
            for (status, exit_code, error), group in groups.items():
                values: dict[str, Any] = {"status": status, "finished_at": now, "exit_code": exit_code, "error": error}
                began = {r.run_id: literal(r.started_at, RunRow.started_at.type) for r in group if r.started_at}
                if began:
                    values["started_at"] = case(began, value=RunRow.id, else_=RunRow.started_at)
                await conn.execute(
                    update(RunRow).where(by_keys([(r.run_id, r.scheduled_at) for r in group])).values(**values)
                )
            accepted = set(outcome.accepted)
            outputs = [r.output for r in results if r.run_id in accepted and r.output is not None]
            sched = {r.run_id: r.scheduled_at for r in results}
            await _upsert_outputs(conn, outputs, sched)
            if ended:
                jobs = await jobs_by_id(conn, (run.job_id for run in ended))
                then = follow_up(ended, jobs, now, rng)
                await insert_runs(conn, then.retries, now)
                outcome.retries.extend(then.retries)
                if then.completed_job_ids:
                    await conn.execute(
                        update(JobRow)
                        .where(JobRow.id.in_(then.completed_job_ids), JobRow.state == JobState.ACTIVE.value)
                        .values(state=JobState.COMPLETED.value, updated_at=now, version=JobRow.version + 1)
                    )
        return outcome

    async def hand_back(self, run: Run, token: str, now: datetime) -> bool:
        """RUNNING → QUEUED for a run a stopping worker could not finish (fenced)."""
        async with self._db.transaction() as conn:
            done = await conn.execute(
                update(RunRow)
                .where(
                    RunRow.id == run.id,
                    RunRow.scheduled_at == run.scheduled_at,
                    RunRow.fencing_token == token,
                    RunRow.status == RunStatus.RUNNING.value,
                )
                .values(status=RunStatus.QUEUED.value, queued_at=now, started_at=None, worker_id="")
            )
        return bool(done.rowcount == 1)

    # Reaper -----------------------------------------------------------------

    async def running_workers(self) -> list[str]:
        async with self._db.transaction() as conn:
            rows = (
                await conn.execute(select(RunRow.worker_id).where(RunRow.status == RunStatus.RUNNING.value).distinct())
            ).all()
        return [str(r[0]) for r in rows]

    async def running_on(self, worker_ids: Sequence[str]) -> list[Run]:
        async with self._db.transaction() as conn:
            rows = (
                await conn.execute(
                    select(RunRow).where(
                        RunRow.status == RunStatus.RUNNING.value, RunRow.worker_id.in_(list(worker_ids))
                    )
                )
            ).all()
        return [run_from_row(r) for r in rows]


async def _upsert_outputs(conn: AsyncConnection, outputs: Sequence[RunOutput], sched: dict[str, datetime]) -> None:
    cols = ("stdout", "stderr", "stdout_truncated", "stderr_truncated")
    rows = [
        {
            "run_id": o.run_id,
            "scheduled_at": sched[o.run_id],
            "stdout": o.stdout,
            "stderr": o.stderr,
            "stdout_truncated": o.stdout_truncated,
            "stderr_truncated": o.stderr_truncated,
        }
        for o in outputs
    ]
    await upsert(conn, RunOutputRow, rows, ["run_id"], cols)
