"""Run history read across jobs: the newest runs of many jobs in one statement, and the
runs executing now. Read-only; each query is served by an index of ``job_run``."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, union_all

from core.domain import JobState, Run, RunStatus
from db.engine import Database
from db.models import JobRow, RunRow
from db.repositories.rows import run_from_row


class RunHistoryRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def visible_job_ids(self, job_ids: Sequence[str], owner_id: str | None) -> set[str]:
        """Those of ``job_ids`` that name a job not deleted (and owned by ``owner_id`` when given)."""
        if not job_ids:
            return set()
        stmt = select(JobRow.id).where(JobRow.id.in_(list(job_ids)), JobRow.state != JobState.DELETED.value)
        if owner_id is not None:
            stmt = stmt.where(JobRow.owner_id == owner_id)
        async with self._db.transaction() as conn:
            return {str(r[0]) for r in (await conn.execute(stmt)).all()}

    async def recent_for_jobs(self, job_ids: Sequence[str], per_job: int) -> dict[str, list[Run]]:
        """Each job's newest ``per_job`` runs (newest scheduled first, then highest attempt),
        in one round trip: one index range per job (the (job_id, scheduled_at, attempt)
        unique key), joined with UNION ALL, instead of a query per job."""
        out: dict[str, list[Run]] = {job_id: [] for job_id in job_ids}
        if not job_ids:
            return out
        parts = [
            select(
                select(RunRow)
                .where(RunRow.job_id == job_id)
                .order_by(RunRow.scheduled_at.desc(), RunRow.attempt.desc())
                .limit(per_job)
                .subquery()
            )
            for job_id in out
        ]
        stmt = parts[0] if len(parts) == 1 else union_all(*parts)
        async with self._db.transaction() as conn:
            rows = (await conn.execute(stmt)).all()
        for row in rows:
            out[row.job_id].append(run_from_row(row))
        for runs in out.values():
            runs.sort(key=lambda r: (r.scheduled_at, r.attempt), reverse=True)
        return out

    async def running(self, owner_id: str | None, limit: int) -> tuple[list[Run], dict[str, str], int]:
        """RUNNING runs (of ``owner_id``'s jobs when given), the longest running first, their
        jobs' names by job id, and how many there are. The (status, due_at) index finds them."""
        condition = RunRow.status == RunStatus.RUNNING.value
        joined = RunRow.__table__.join(JobRow, JobRow.id == RunRow.job_id)
        base = select(RunRow, JobRow.name.label("job_name")).select_from(joined).where(condition)
        counted = select(func.count()).select_from(RunRow).where(condition)
        if owner_id is not None:
            base = base.where(JobRow.owner_id == owner_id)
            counted = counted.select_from(joined).where(JobRow.owner_id == owner_id)
        stmt = base.order_by(RunRow.started_at, RunRow.due_at, RunRow.id).limit(limit)
        async with self._db.transaction() as conn:
            rows = (await conn.execute(stmt)).all()
            total = (await conn.execute(counted)).scalar_one()
        return [run_from_row(r) for r in rows], {r.job_id: r.job_name for r in rows}, int(total)
