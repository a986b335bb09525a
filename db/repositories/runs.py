"""Runs as the API sees them: history, output, runs added by hand, cancellation; and
the statements every run repository shares (runs by key, jobs by id, run inserts).

The dispatch path (claim, start, finish, hand back, reaping) is in ``run_lifecycle``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core.domain import Job, Run, RunOutput, RunStatus
from db.engine import Database
from db.models import JobRow, RunOutputRow, RunRow
from db.repositories.rows import job_from_row, run_from_row

JOB_WITHOUT_SCRIPT = [c for c in JobRow.__table__.c if c.name != "script_content"]


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


_JOBS = select(JobRow).where(JobRow.id.in_(bindparam("job_ids", expanding=True)))
_JOBS_WITHOUT_SCRIPT = select(*JOB_WITHOUT_SCRIPT).where(JobRow.id.in_(bindparam("job_ids", expanding=True)))


async def jobs_by_id(conn: AsyncConnection, ids: Iterable[str], *, script: bool = False) -> dict[str, Job]:
    """The jobs with these ids; without their scripts (up to 256 KiB each) unless asked."""
    result = await conn.execute(_JOBS if script else _JOBS_WITHOUT_SCRIPT, {"job_ids": list(set(ids))})
    names = tuple(result.keys())
    return {r.id: job_from_row(r, names) for r in result.all()}


_INSERT_RUNS = insert(RunRow).prefix_with("IGNORE", dialect="mysql").prefix_with("OR IGNORE", dialect="sqlite")


async def insert_runs(conn: AsyncConnection, runs: Sequence[Run], now: datetime) -> None:
    """One multi-row insert; a run whose (job_id, scheduled_at, attempt) exists is ignored."""
    if not runs:
        return
    # executemany form: one cached statement, sent as multi-row VALUES pages
    # ("insertmanyvalues"), instead of compiling a new giant statement per batch.
    await conn.execute(_INSERT_RUNS, [_row_values(r, now) for r in runs])


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
