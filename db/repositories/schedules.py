"""The materializer's claim on due schedule cursors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core.domain import Job, Run
from db.engine import Database
from db.models import JobRow, ScheduleStateRow
from db.repositories.rows import job_from_row
from db.repositories.runs import insert_runs


@dataclass(frozen=True)
class DueSchedule:
    job: Job | None  # None when the job row vanished
    job_id: str
    next_fire_at: datetime


class ScheduleBatch:
    def __init__(self, conn: AsyncConnection, items: list[DueSchedule]) -> None:
        self._conn = conn
        self.items = items

    async def commit(
        self,
        runs: Sequence[Run],
        cursors: dict[str, datetime],
        fired: dict[str, datetime],
        drop: Sequence[str],
        now: datetime,
    ) -> None:
        """Insert the runs (duplicates ignored) and move each cursor, in the claim's transaction."""
        await insert_runs(self._conn, runs, now)
        if cursors:
            await self._conn.execute(
                update(ScheduleStateRow)
                .where(ScheduleStateRow.job_id == bindparam("b_job_id"))
                .values(
                    next_fire_at=bindparam("b_next"),
                    last_fire_at=bindparam("b_last"),
                    version=ScheduleStateRow.version + 1,
                ),
                [{"b_job_id": j, "b_next": n, "b_last": fired.get(j)} for j, n in cursors.items()],
            )
        if drop:
            await self._conn.execute(delete(ScheduleStateRow).where(ScheduleStateRow.job_id.in_(list(drop))))


class ScheduleRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    @asynccontextmanager
    async def claim_due(self, until: datetime, limit: int) -> AsyncIterator[ScheduleBatch]:
        """Lock up to ``limit`` cursors due by ``until``. SKIP LOCKED lets several
        schedulers share the work; each cursor is advanced before the lock is released,
        so a slot is claimed by exactly one of them."""
        async with self._db.transaction() as conn:
            rows = (
                await conn.execute(
                    select(ScheduleStateRow.job_id, ScheduleStateRow.next_fire_at)
                    .where(ScheduleStateRow.next_fire_at <= until)
                    .order_by(ScheduleStateRow.next_fire_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            jobs: dict[str, Job] = {}
            if rows:
                for row in (await conn.execute(select(JobRow).where(JobRow.id.in_([r.job_id for r in rows])))).all():
                    jobs[row.id] = job_from_row(row)
            items = [DueSchedule(jobs.get(r.job_id), r.job_id, r.next_fire_at) for r in rows]
            yield ScheduleBatch(conn, items)
