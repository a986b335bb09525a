"""The job lifecycle: create, read, update, pause/resume, delete, run now, preview.

Visibility: a User sees only its own jobs (others answer NOT_FOUND, so ids can't
be probed); Viewers and Admins see all; Viewers change nothing.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta
from typing import Any

from core import cron, validation
from core.attempts import new_run
from core.auth import Principal
from core.domain import Job, JobState, JobType, PreviewSlot, Run, RunStatus, RunTrigger, SkipReason, utcnow
from core.errors import Conflict, FailedPrecondition, FieldViolation, InvalidArgument, NotFound, Violations
from core.ids import is_uuid, new_id
from core.paging import Page, paginate
from db.repositories.jobs import JobRepository
from db.repositories.runs import RunRepository

MUTABLE_FIELDS = frozenset(
    {
        "name",
        "cron_expr",
        "timezone",
        "scheduled_at",
        "script_content",
        "timeout_seconds",
        "retry_policy",
        "misfire_policy",
        "overlap_policy",
        "queue",
        "max_lateness_seconds",
        "network",
    }
)


def next_fire_time(job: Job, after: datetime) -> datetime | None:
    if job.job_type is not JobType.RECURRING or job.state is not JobState.ACTIVE:
        return None
    return cron.parse(job.cron_expr).next_after(after, cron.zone(job.timezone))


class SlotOnResume(enum.Enum):
    """What resuming a one-time job does with its slot."""

    STANDS = "stands"  # still to come, or already dispatched: nothing to do
    RUNS_NOW = "runs_now"  # skipped while paused, resumed within the misfire grace
    MISSED = "missed"  # due while paused and resumed past the grace: skipped for good


def slot_on_resume(slot: Run | None, now: datetime, grace: timedelta) -> SlotOnResume:
    """The misfire rule applied on resume: within the grace of its due time a slot the
    pause skipped runs now; past it the skip stands (reason ``paused``) and the job,
    which can never run again, is COMPLETED."""
    if slot is None:
        return SlotOnResume.STANDS
    paused_skip = slot.status is RunStatus.SKIPPED and slot.skip_reason == SkipReason.PAUSED.value
    if not paused_skip and slot.status is not RunStatus.PENDING:
        return SlotOnResume.STANDS
    if slot.due_at < now - grace:
        return SlotOnResume.MISSED
    return SlotOnResume.RUNS_NOW if paused_skip else SlotOnResume.STANDS


class Jobs:
    def __init__(self, jobs: JobRepository, runs: RunRepository, misfire_grace: timedelta) -> None:
        self._jobs = jobs
        self._runs = runs
        self._misfire_grace = misfire_grace

    async def visible(self, principal: Principal, job_id: str, field: str = "id") -> Job:
        if not is_uuid(job_id):
            raise InvalidArgument(FieldViolation(field, "must be a job id (UUID)"))
        job = await self._jobs.get(job_id)
        if job is None or job.state is JobState.DELETED:
            raise NotFound(f"job {job_id} not found")
        if not principal.reads_everything and job.owner_id != principal.user_id:
            raise NotFound(f"job {job_id} not found")
        return job

    async def writable(self, principal: Principal, job_id: str, field: str = "id") -> Job:
        job = await self.visible(principal, job_id, field)
        principal.require_writer()
        return job

    async def create(self, principal: Principal, job: Job, request_id: str) -> Job:
        principal.require_writer()
        now = utcnow()
        validation.validate_job(job, now)
        job = job.with_changes(id=new_id(), owner_id=principal.user_id, state=JobState.ACTIVE)
        first_run: Run | None = None
        if job.job_type is JobType.ONE_TIME:
            assert job.scheduled_at is not None
            first_run = new_run(job, job.scheduled_at, RunTrigger.SCHEDULE)
        created, _ = await self._jobs.create(job, request_id, next_fire_time(job, now), first_run, now)
        return created

    async def get(self, principal: Principal, job_id: str) -> Job:
        return await self.visible(principal, job_id)

    async def list_page(
        self,
        principal: Principal,
        *,
        state: JobState | None,
        job_type: JobType | None,
        owner_id: str,
        page_size: int,
        page_token: str,
        skip: int,
        queue: str = "",
        name_contains: str = "",
    ) -> Page[Job]:
        v = Violations()
        if queue and not validation.QUEUE_RE.fullmatch(queue):
            v.add("queue", "must match [a-z0-9_-]{1,64}")
        owner: str | None = principal.user_id
        if principal.reads_everything:
            owner = owner_id or None
        search = name_contains.strip()
        query = f"jobs|{owner}|{state}|{job_type}"
        if queue or search:  # so the tokens of the lists without these filters stay as they were
            query += f"|{queue}|{search}"
        pager = paginate(page_size, page_token, query, skip=skip, violations=v)
        jobs, total = await self._jobs.list(
            owner, state, job_type, pager.limit, pager.offset, queue=queue, name_contains=search
        )
        return pager.page(jobs, total)

    async def update(self, principal: Principal, job_id: str, version: int, changes: dict[str, Any]) -> Job:
        if version < 1:
            raise InvalidArgument(FieldViolation("job.version", "is required (the version you read, 1 or more)"))
        current = await self.writable(principal, job_id, "job.id")
        unknown = sorted(set(changes) - MUTABLE_FIELDS)
        if unknown:
            raise InvalidArgument([FieldViolation(f"update_mask.{p}", "is not a mutable field") for p in unknown])
        if not changes:
            raise InvalidArgument(FieldViolation("update_mask", "names no field to change"))
        if current.state is JobState.COMPLETED:
            raise FailedPrecondition("a completed job cannot be changed")
        if current.version != version:
            raise Conflict(f"version {version} is stale; the job is at version {current.version}")
        updated = current.with_changes(**changes)
        now = utcnow()
        validation.validate_job(updated, now)
        return await self._jobs.update(updated, version, next_fire_time(updated, now), now)

    async def _transition(
        self, principal: Principal, job_id: str, from_states: tuple[JobState, ...], to: JobState, verb: str
    ) -> Job:
        job = await self.writable(principal, job_id)
        now = utcnow()
        moved = job.with_changes(state=to)
        if not await self._jobs.transition(job_id, from_states, to, next_fire_time(moved, now), now):
            raise FailedPrecondition(f"cannot {verb} a job in state {job.state.value}")
        result = await self._jobs.get(job_id)
        assert result is not None
        return result

    async def pause(self, principal: Principal, job_id: str) -> Job:
        return await self._transition(principal, job_id, (JobState.ACTIVE,), JobState.PAUSED, "pause")

    async def resume(self, principal: Principal, job_id: str) -> Job:
        job = await self.writable(principal, job_id)
        if job.job_type is not JobType.ONE_TIME or job.state is not JobState.PAUSED:
            return await self._transition(principal, job_id, (JobState.PAUSED,), JobState.ACTIVE, "resume")
        now = utcnow()
        slot = next(
            (
                r
                for r in await self._runs.list_for_job(job_id, None, 20, 0)
                if r.scheduled_at == job.scheduled_at and r.trigger is RunTrigger.SCHEDULE
            ),
            None,
        )
        outcome = slot_on_resume(slot, now, self._misfire_grace)
        to = JobState.COMPLETED if outcome is SlotOnResume.MISSED else JobState.ACTIVE
        moved = await self._jobs.transition(
            job_id,
            (JobState.PAUSED,),
            to,
            None,
            now,
            revive=slot if outcome is SlotOnResume.RUNS_NOW else None,
            skip=slot if outcome is SlotOnResume.MISSED else None,
        )
        if not moved:
            raise FailedPrecondition(f"cannot resume a job in state {job.state.value}")
        result = await self._jobs.get(job_id)
        assert result is not None
        return result

    async def delete(self, principal: Principal, job_id: str) -> Job:
        job = await self._transition(
            principal,
            job_id,
            (JobState.ACTIVE, JobState.PAUSED, JobState.COMPLETED),
            JobState.DELETED,
            "delete",
        )
        return job

    async def run_now(self, principal: Principal, job_id: str) -> Run:
        job = await self.writable(principal, job_id)
        now = utcnow()
        run = new_run(job, now, RunTrigger.MANUAL)
        await self._runs.insert([run], now)
        return run

    @staticmethod
    def preview(expression: str, timezone: str, count: int, after: datetime | None) -> list[PreviewSlot]:
        v = Violations()
        schedule = validation.check_cron(v, "cron_expr", expression.strip()) if expression.strip() else None
        if not expression.strip():
            v.add("cron_expr", "is required")
        validation.check_timezone(v, "timezone", timezone or "UTC")
        if not 0 <= count <= 100:
            v.add("count", "must be between 1 and 100 (0 means 10)")
        v.raise_if_any()
        assert schedule is not None
        tz = cron.zone(timezone or "UTC")
        cursor = after or utcnow()
        try:
            previous_offset = cursor.astimezone(tz).utcoffset()
        except OverflowError:  # within hours of the calendar's ends (years 1, 9999) the local reading is not a date
            previous_offset = None
        out: list[PreviewSlot] = []
        for _ in range(count or 10):
            slot = schedule.next_slot(cursor, tz)
            if slot is None:  # the calendar ends (year 9999)
                break
            offset = slot.local.utcoffset()
            offset_changed = previous_offset is not None and offset != previous_offset
            note = ""
            if slot.nonexistent:
                note = "the scheduled local time does not exist (DST gap); fires at the first valid instant after it"
            elif slot.ambiguous and slot.wall_clock:
                note = "the scheduled local time occurs twice (DST end); fires once, at its first occurrence"
            elif slot.ambiguous:
                note = "this local time occurs twice (DST end); the schedule fires at each occurrence"
            out.append(
                PreviewSlot(
                    at=slot.at,
                    local=slot.local,
                    utc_offset=format_offset(slot.local),
                    dst_transition=offset_changed or slot.nonexistent or slot.ambiguous,
                    note=note,
                )
            )
            previous_offset = offset
            cursor = slot.at
        return out


def format_offset(value: datetime) -> str:
    seconds = int((value.utcoffset() or timedelta()).total_seconds())
    sign = "-" if seconds < 0 else "+"
    hours, minutes = divmod(abs(seconds) // 60, 60)
    return f"{sign}{hours:02d}:{minutes:02d}"
