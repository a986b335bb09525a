"""Job definitions and the materializer's schedule cursors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from core.batching import Batcher
from core.domain import Job, JobState, JobType, Run, RunStatus, SkipReason
from core.errors import Conflict, NotFound
from db.engine import Database
from db.models import JobRow, RunRow, ScheduleStateRow
from db.repositories.rows import job_from_row
from db.repositories.runs import by_keys, insert_runs

_JOB_COLUMNS = [*JobRow.__table__.c, ScheduleStateRow.next_fire_at]
_INSERT_JOBS = insert(JobRow)  # built once: construction and cache key cost more per batch than the rows


def _values(job: Job) -> dict[str, Any]:
    assert job.job_type is not None
    return {
        "name": job.name,
        "job_type": job.job_type.value,
        "cron_expr": job.cron_expr,
        "timezone": job.timezone,
        "scheduled_at": job.scheduled_at,
        "script_content": job.script_content,
        "timeout_seconds": job.timeout_seconds,
        "retry_max_attempts": job.retry_policy.max_attempts,
        "retry_strategy": job.retry_policy.strategy.value,
        "retry_initial_delay_seconds": job.retry_policy.initial_delay_seconds,
        "retry_max_delay_seconds": job.retry_policy.max_delay_seconds,
        "retry_multiplier": job.retry_policy.multiplier,
        "misfire_policy": job.misfire_policy.value,
        "overlap_policy": job.overlap_policy.value,
        "network": job.network.value,
        "queue": job.queue,
        "max_lateness_seconds": job.max_lateness_seconds,
    }


def _select_jobs() -> Any:
    return select(*_JOB_COLUMNS).select_from(
        JobRow.__table__.outerjoin(ScheduleStateRow, ScheduleStateRow.job_id == JobRow.id)
    )


async def _set_schedule(conn: AsyncConnection, job_id: str, next_fire_at: datetime | None) -> None:
    await conn.execute(delete(ScheduleStateRow).where(ScheduleStateRow.job_id == job_id))
    if next_fire_at is not None:
        await conn.execute(insert(ScheduleStateRow).values(job_id=job_id, next_fire_at=next_fire_at, version=1))


def _created(job: Job, now: datetime, next_fire_at: datetime | None) -> Job:
    return job.with_changes(
        state=JobState.ACTIVE,
        version=1,
        create_time=now,
        update_time=now,
        next_fire_time=next_fire_at,
    )


@dataclass(frozen=True)
class NewJob:
    job: Job
    next_fire_at: datetime | None
    first_run: Run | None
    now: datetime


class JobRepository:
    def __init__(self, db: Database) -> None:
        self._db = db
        # Concurrent creates share one transaction (one commit): the database's
        # commit rate, not its row rate, is what bounds single-row writes.
        self._creates: Batcher[NewJob, Job] = Batcher(self._create_batch, max_items=200, linger=0.01)

    async def close(self) -> None:
        await self._creates.close()

    async def _create_batch(self, items: list[NewJob]) -> list[Job]:
        async with self._db.transaction() as conn:
            await conn.execute(
                _INSERT_JOBS,
                [
                    {
                        "id": i.job.id,
                        "owner_id": i.job.owner_id,
                        "state": JobState.ACTIVE.value,
                        "version": 1,
                        "request_id": None,
                        "created_at": i.now,
                        "updated_at": i.now,
                        "deleted_at": None,
                        **_values(i.job),
                    }
                    for i in items
                ],
            )
            cursors = [
                {"job_id": i.job.id, "next_fire_at": i.next_fire_at, "version": 1} for i in items if i.next_fire_at
            ]
            if cursors:
                await conn.execute(insert(ScheduleStateRow), cursors)
            await insert_runs(conn, [i.first_run for i in items if i.first_run is not None], items[0].now)
        return [_created(i.job, i.now, i.next_fire_at) for i in items]

    async def create(
        self,
        job: Job,
        request_id: str,
        next_fire_at: datetime | None,
        first_run: Run | None,
        now: datetime,
    ) -> tuple[Job, bool]:
        """Insert the job, its cursor or its single run, atomically.

        Returns (job, created); with a request_id already used by this owner the
        existing job comes back with created=False.
        """
        if not request_id:
            return await self._creates.submit(NewJob(job, next_fire_at, first_run, now)), True
        existing = await self._by_request_id(job.owner_id, request_id)
        if existing is not None:
            return existing, False
        try:
            async with self._db.transaction() as conn:
                await conn.execute(
                    insert(JobRow).values(
                        id=job.id,
                        owner_id=job.owner_id,
                        state=JobState.ACTIVE.value,
                        version=1,
                        request_id=request_id or None,
                        created_at=now,
                        updated_at=now,
                        **_values(job),
                    )
                )
                if next_fire_at is not None:  # a new job has no cursor to replace
                    await conn.execute(
                        insert(ScheduleStateRow).values(job_id=job.id, next_fire_at=next_fire_at, version=1)
                    )
                if first_run is not None:
                    await insert_runs(conn, [first_run], now)
        except IntegrityError:
            if request_id:
                existing = await self._by_request_id(job.owner_id, request_id)
                if existing is not None:
                    return existing, False
            raise
        return _created(job, now, next_fire_at), True

    async def _by_request_id(self, owner_id: str, request_id: str) -> Job | None:
        async with self._db.transaction() as conn:
            row = (
                await conn.execute(_select_jobs().where(JobRow.owner_id == owner_id, JobRow.request_id == request_id))
            ).first()
        return job_from_row(row) if row else None

    async def get(self, job_id: str) -> Job | None:
        async with self._db.transaction() as conn:
            row = (await conn.execute(_select_jobs().where(JobRow.id == job_id))).first()
        return job_from_row(row) if row else None

    async def list(
        self,
        owner_id: str | None,
        state: JobState | None,
        job_type: JobType | None,
        limit: int,
        offset: int,
        *,
        queue: str = "",
        name_contains: str = "",
    ) -> tuple[list[Job], int]:
        conditions = []
        if queue:
            conditions.append(JobRow.queue == queue)
        if name_contains:  # a scan of the owner's (or every) job: a search, not a hot path
            conditions.append(func.lower(JobRow.name).contains(name_contains.lower(), autoescape=True))
        if owner_id is not None:
            conditions.append(JobRow.owner_id == owner_id)
        if state is not None:
            conditions.append(JobRow.state == state.value)
        else:
            conditions.append(JobRow.state != JobState.DELETED.value)
        if job_type is not None:
            conditions.append(JobRow.job_type == job_type.value)
        where = and_(*conditions)
        async with self._db.transaction() as conn:
            rows = (
                await conn.execute(
                    _select_jobs()
                    .where(where)
                    .order_by(JobRow.created_at.desc(), JobRow.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
            total = (await conn.execute(select(func.count()).select_from(JobRow).where(where))).scalar_one()
        return [job_from_row(r) for r in rows], int(total)

    async def update(self, job: Job, expected_version: int, next_fire_at: datetime | None, now: datetime) -> Job:
        """Compare-and-set on version; Conflict when another update won."""
        async with self._db.transaction() as conn:
            result = await conn.execute(
                update(JobRow)
                .where(JobRow.id == job.id, JobRow.version == expected_version)
                .values(version=expected_version + 1, updated_at=now, **_values(job))
            )
            if result.rowcount != 1:
                raise Conflict(
                    f"job {job.id} was changed concurrently: version {expected_version} is stale",
                )
            if job.state is JobState.ACTIVE:
                await _set_schedule(conn, job.id, next_fire_at)
        updated = await self.get(job.id)
        if updated is None:
            raise NotFound(f"job {job.id} not found")
        return updated

    async def transition(
        self,
        job_id: str,
        from_states: tuple[JobState, ...],
        to_state: JobState,
        next_fire_at: datetime | None,
        now: datetime,
        *,
        revive: Run | None = None,
        skip: Run | None = None,
    ) -> bool:
        """Move the job's state if it is in one of from_states; set or clear its cursor.

        In the same transaction, a one-time job's slot run skipped while paused can be
        made due again (``revive``), or a pending one recorded SKIPPED (``skip``).
        """
        async with self._db.transaction() as conn:
            values: dict[str, Any] = {
                "state": to_state.value,
                "updated_at": now,
                "version": JobRow.version + 1,
            }
            if to_state is JobState.DELETED:
                values["deleted_at"] = now
            result = await conn.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state.in_([s.value for s in from_states]))
                .values(**values)
            )
            if result.rowcount != 1:
                return False
            await _set_schedule(conn, job_id, next_fire_at if to_state is JobState.ACTIVE else None)
            if revive is not None:
                await conn.execute(
                    update(RunRow)
                    .where(by_keys([(revive.id, revive.scheduled_at)]), RunRow.status == RunStatus.SKIPPED.value)
                    .values(
                        status=RunStatus.PENDING.value,
                        due_at=max(revive.due_at, now),
                        skip_reason="",
                        finished_at=None,
                    )
                )
            if skip is not None:
                await conn.execute(
                    update(RunRow)
                    .where(by_keys([(skip.id, skip.scheduled_at)]), RunRow.status == RunStatus.PENDING.value)
                    .values(status=RunStatus.SKIPPED.value, skip_reason=SkipReason.PAUSED.value, finished_at=now)
                )
        return True
