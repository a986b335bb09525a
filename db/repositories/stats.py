"""Read-only figures for the monitor. Each query is served by an index."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select

from core.domain import JobState, RunStatus
from db.engine import Database
from db.models import JobRow, RunRow

WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class FinishedRun:
    status: str
    skip_reason: str
    due_at: datetime
    started_at: datetime | None
    finished_at: datetime


class StatsRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def jobs_by_state(self) -> dict[str, int]:
        async with self._db.transaction() as conn:
            rows = (await conn.execute(select(JobRow.state, func.count()).group_by(JobRow.state))).all()
        counts = {s.value: 0 for s in JobState}
        counts.update({str(s): int(n) for s, n in rows})
        return counts

    async def runs_by_status(self, now: datetime) -> dict[str, int]:
        """Runs scheduled in the last 24 h (partition pruning keeps this off the history)."""
        async with self._db.transaction() as conn:
            rows = (
                await conn.execute(
                    select(RunRow.status, func.count())
                    .where(RunRow.scheduled_at >= now - WINDOW, RunRow.scheduled_at <= now + WINDOW)
                    .group_by(RunRow.status)
                )
            ).all()
        counts = {s.value: 0 for s in RunStatus}
        counts.update({str(s): int(n) for s, n in rows})
        return counts

    async def oldest_pending_due(self, now: datetime) -> datetime | None:
        async with self._db.transaction() as conn:
            pending = (
                await conn.execute(
                    select(func.min(RunRow.due_at)).where(
                        RunRow.status == RunStatus.PENDING.value, RunRow.due_at <= now
                    )
                )
            ).scalar()
            queued = (
                await conn.execute(
                    select(func.min(RunRow.due_at)).where(RunRow.status == RunStatus.QUEUED.value, RunRow.due_at <= now)
                )
            ).scalar()
        candidates = [d for d in (pending, queued) if d is not None]
        return min(candidates) if candidates else None

    async def finished_between(self, after: datetime, until: datetime, limit: int = 50_000) -> list[FinishedRun]:
        async with self._db.transaction() as conn:
            rows = (
                await conn.execute(
                    select(RunRow.status, RunRow.skip_reason, RunRow.due_at, RunRow.started_at, RunRow.finished_at)
                    .where(RunRow.finished_at > after, RunRow.finished_at <= until)
                    .order_by(RunRow.finished_at)
                    .limit(limit)
                )
            ).all()
        return [FinishedRun(r.status, r.skip_reason, r.due_at, r.started_at, r.finished_at) for r in rows]

    async def recent_lateness(self, since: datetime, limit: int) -> list[float]:
        """Start time minus due time, seconds, of the newest ``limit`` runs that started and
        ended after ``since`` (the finished_at index bounds the read)."""
        async with self._db.transaction() as conn:
            rows = (
                await conn.execute(
                    select(RunRow.due_at, RunRow.started_at)
                    .where(
                        RunRow.finished_at >= since,
                        RunRow.started_at.is_not(None),
                        RunRow.status != RunStatus.SKIPPED.value,
                    )
                    .order_by(RunRow.finished_at.desc())
                    .limit(limit)
                )
            ).all()
        return [max(0.0, (r.started_at - r.due_at).total_seconds()) for r in rows]

    async def finished_count(self, since: datetime) -> int:
        async with self._db.transaction() as conn:
            value = (
                await conn.execute(
                    select(func.count())
                    .select_from(RunRow)
                    .where(RunRow.finished_at >= since, RunRow.status != RunStatus.SKIPPED.value)
                )
            ).scalar_one()
        return int(value)
