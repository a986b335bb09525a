"""Runs: history, the dispatcher's claims, the worker's fenced writes, retries.

Every hot-path method works on a batch: one multi-row INSERT, one UPDATE ... IN,
one transaction per batch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, case, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core.domain import Job, JobState, JobType, Run, RunOutput, RunStatus, RunTrigger
from core.ids import new_id
from db.engine import Database, upsert
from db.models import JobRow, RunOutputRow, RunRow
from db.repositories.rows import job_from_row, run_from_row

JOB_WITHOUT_SCRIPT = [c for c in JobRow.__table__.c if c.name != "script_content"]
_ACTIVE = (RunStatus.PENDING.value, RunStatus.QUEUED.value, RunStatus.RUNNING.value)


def _row_values(run: Run, now: datetime) -> dict[str, Any]:
    return {
        "id": run.id,
        "scheduled_at": run.scheduled_at,
        "job_id": run.job_id,
        "attempt": run.attempt,
        "status": run.status.value,
        "trigger": run.trigger.value,
        "queue": run.queue,
        "due_at": run.due_at,
        "worker_id": run.worker_id,
        "fencing_token": run.fencing_token,
        "queued_at": run.queued_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "exit_code": run.exit_code if run.status.is_final else None,
        "error": run.error[:1000],
        "skip_reason": run.skip_reason,
        "cancel_requested": False,
        "created_at": now,
    }


def by_keys(keys: Sequence[tuple[str, datetime]]) -> ColumnElement[bool]:
    """Rows by (id, scheduled_at). A row-constructor IN defeats MariaDB's indexes, so:
    ids through their index, and the scheduled_at range for partition pruning."""
    times = [t for _, t in keys]
    return and_(RunRow.id.in_([i for i, _ in keys]), RunRow.scheduled_at.between(min(times), max(times)))


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
_JOBS = select(JobRow).where(JobRow.id.in_(bindparam("job_ids", expanding=True)))
_JOBS_WITHOUT_SCRIPT = select(*JOB_WITHOUT_SCRIPT).where(JobRow.id.in_(bindparam("job_ids", expanding=True)))


async def jobs_by_id(conn: AsyncConnection, ids: Iterable[str], *, script: bool = False) -> dict[str, Job]:
    """The jobs with these ids; without their scripts (up to 256 KiB each) unless asked."""
    result = await conn.execute(_JOBS if script else _JOBS_WITHOUT_SCRIPT, {"job_ids": list(set(ids))})
    names = tuple(result.keys())
    return {r.id: job_from_row(r, names) for r in result.all()}


_INSERT_RUNS = insert(RunRow).prefix_with("IGNORE", dialect="mysql").prefix_with("OR IGNORE", dialect="sqlite")


def key_params(keys: Sequence[tuple[str, datetime]]) -> dict[str, Any]:
    """The parameters of _BY_KEY_PARAMS (see by_keys)."""
    times = [t for _, t in keys]
    return {"ids": [i for i, _ in keys], "first": min(times), "last": max(times)}


async def insert_runs(conn: AsyncConnection, runs: Sequence[Run], now: datetime) -> None:
    """One multi-row insert; a run whose (job_id, scheduled_at, attempt) exists is ignored."""
    if not runs:
        return
    # executemany form: one cached statement, sent as multi-row VALUES pages
    # ("insertmanyvalues"), instead of compiling a new giant statement per batch.
    await conn.execute(_INSERT_RUNS, [_row_values(r, now) for r in runs])


def new_run(
    job: Job,
    scheduled_at: datetime,
    trigger: RunTrigger,
    *,
    attempt: int = 1,
    due_at: datetime | None = None,
    status: RunStatus = RunStatus.PENDING,
    skip_reason: str = "",
    now: datetime | None = None,
) -> Run:
    return Run(
        id=new_id(),
        job_id=job.id,
        attempt=attempt,
        status=status,
        trigger=trigger,
        scheduled_at=scheduled_at,
        due_at=due_at or scheduled_at,
        queue=job.queue,
        skip_reason=skip_reason,
        finished_at=now if status is RunStatus.SKIPPED else None,
    )


@dataclass(frozen=True)
class RunResult:
    """What a worker (or the reaper) reports for one started attempt."""

    run_id: str
    scheduled_at: datetime
    fencing_token: str
    status: RunStatus
    exit_code: int = 0
    error: str = ""
    output: RunOutput | None = None
    started_at: datetime | None = None  # when the script really started (the take can be earlier)


@dataclass
class FinishOutcome:
    accepted: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    retries: list[Run] = field(default_factory=list)


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


class RunRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    # Reads ------------------------------------------------------------------

    async def get(self, run_id: str) -> Run | None:
        async with self._db.transaction() as conn:
            row = (await conn.execute(select(RunRow).where(RunRow.id == run_id))).first()
        return run_from_row(row) if row else None

    async def list_for_job(self, job_id: str, status: RunStatus | None, limit: int, offset: int) -> list[Run]:
        stmt = select(RunRow).where(RunRow.job_id == job_id)
        if status is not None:
            stmt = stmt.where(RunRow.status == status.value)
        stmt = stmt.order_by(RunRow.scheduled_at.desc(), RunRow.attempt.desc()).limit(limit).offset(offset)
        async with self._db.transaction() as conn:
            rows = (await conn.execute(stmt)).all()
        return [run_from_row(r) for r in rows]

    async def output(self, run_id: str) -> RunOutput | None:
        async with self._db.transaction() as conn:
            row = (await conn.execute(select(RunOutputRow).where(RunOutputRow.run_id == run_id))).first()
        if row is None:
            return None
        return RunOutput(row.run_id, row.stdout, row.stderr, row.stdout_truncated, row.stderr_truncated)

    # Writes from the API ----------------------------------------------------

    async def insert(self, runs: Sequence[Run], now: datetime) -> None:
        async with self._db.transaction() as conn:
            await insert_runs(conn, runs, now)

    async def cancel(self, run: Run, now: datetime) -> Run | None:
        """PENDING/QUEUED → CANCELLED at once; RUNNING → cancel requested (the worker ends it).

        Returns the run after the change, or None if it had already ended.
        """
        async with self._db.transaction() as conn:
            key = (RunRow.id == run.id) & (RunRow.scheduled_at == run.scheduled_at)
            done = await conn.execute(
                update(RunRow)
                .where(key, RunRow.status.in_([RunStatus.PENDING.value, RunStatus.QUEUED.value]))
                .values(status=RunStatus.CANCELLED.value, finished_at=now, error="cancelled by request")
            )
            if done.rowcount != 1:
                await conn.execute(
                    update(RunRow).where(key, RunRow.status == RunStatus.RUNNING.value).values(cancel_requested=True)
                )
            row = (await conn.execute(select(RunRow).where(key))).first()
        return run_from_row(row) if row else None

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
                guarded = [j for j in job_ids if j in jobs and jobs[j].overlap_policy.value != "ALLOW"]
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

    async def finish(self, results: Sequence[RunResult], now: datetime, rng: Any = None) -> FinishOutcome:
        """Write results fenced by token: a result whose token is no longer current
        (superseded, reaped) is rejected. Accepted failures with attempts left get
        their next attempt; a one-time job whose run ended for good is COMPLETED."""
        outcome = FinishOutcome()
        if not results:
            return outcome
        async with self._db.transaction() as conn:
            # Lock the rows and read their current tokens: the fencing check and the
            # writes happen under the same locks, in one transaction per batch.
            keys = [(r.run_id, r.scheduled_at) for r in results]
            locked = {row.id: row for row in (await conn.execute(_LOCK_RUNNING, key_params(keys))).all()}
            groups: dict[tuple[str, int, str], list[RunResult]] = {}
            ended: list[tuple[Any, RunResult]] = []
            for res in results:
                row = locked.pop(res.run_id, None)
                if row is not None and row.fencing_token == res.fencing_token:
                    outcome.accepted.append(res.run_id)
                    ended.append((row, res))
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
                await self._follow_up(conn, ended, now, outcome, rng)
        return outcome

    async def _follow_up(
        self, conn: AsyncConnection, ended: Sequence[tuple[Any, RunResult]], now: datetime, outcome: FinishOutcome,
        rng: Any,
    ) -> None:  # fmt: skip
        """Retries and job completion for runs that just ended: ``ended`` pairs each
        locked row (as read before the update) with the result written to it."""
        jobs = await jobs_by_id(conn, (row.job_id for row, _ in ended))
        retries: list[Run] = []
        completed: list[str] = []
        for row, res in ended:
            job = jobs.get(row.job_id)
            if job is None:
                continue
            retry = (
                res.status.is_retryable
                and not row.cancel_requested
                and row.attempt < job.retry_policy.max_attempts
                and job.state is not JobState.DELETED
            )
            if retry:
                delay = job.retry_policy.delay(row.attempt, rng)
                retries.append(
                    Run(
                        id=new_id(),
                        job_id=row.job_id,
                        attempt=row.attempt + 1,
                        status=RunStatus.PENDING,
                        trigger=RunTrigger.RETRY,
                        scheduled_at=row.scheduled_at,
                        due_at=now + timedelta(seconds=delay),
                        queue=job.queue,
                    )
                )
            elif job.job_type is JobType.ONE_TIME and row.trigger != RunTrigger.MANUAL.value:
                completed.append(job.id)
        await insert_runs(conn, retries, now)
        outcome.retries.extend(retries)
        if completed:
            await conn.execute(
                update(JobRow)
                .where(JobRow.id.in_(completed), JobRow.state == JobState.ACTIVE.value)
                .values(state=JobState.COMPLETED.value, updated_at=now, version=JobRow.version + 1)
            )

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
