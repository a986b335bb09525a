"""The materializer's claim on due schedule cursors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, literal_column, select
from sqlalchemy.ext.asyncio import AsyncConnection

from core.domain import Job, Run
from db.engine import Database, upsert
from db.models import ScheduleStateRow
from db.repositories.runs import insert_runs, jobs_by_id


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
        # The cursors are locked by the claim, so each row exists: the upsert moves
        # them all in one statement.
        await upsert(
            self._conn,
            ScheduleStateRow,
            [{"job_id": j, "next_fire_at": n, "last_fire_at": fired.get(j), "version": 1} for j, n in cursors.items()],
            ["job_id"],
            ["next_fire_at", "last_fire_at"],
            {"version": ScheduleStateRow.version + literal_column("1")},  # no bound parameter in the suffix
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
            jobs = await jobs_by_id(conn, (r.job_id for r in rows)) if rows else {}
            items = [DueSchedule(jobs.get(r.job_id), r.job_id, r.next_fire_at) for r in rows]
            yield ScheduleBatch(conn, items)
