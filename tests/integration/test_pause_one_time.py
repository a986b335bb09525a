"""A one-time job paused over its slot: the misfire rule applies on resume (README
"Pausing and resuming")."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from core.auth import Principal, Role
from core.domain import JobState, Run, RunStatus, RunTrigger, SkipReason
from gen.jobmesh.v1 import job_pb2
from scheduler_svc.jobs import Jobs, SlotOnResume, slot_on_resume
from tests.support.jobs import one_time
from tests.support.scheduler import InProcessScheduler

pytestmark = pytest.mark.timeout(60)
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
GRACE = timedelta(seconds=30)


def slot(status: RunStatus, due: datetime, reason: str = "") -> Run:
    return Run(
        id="r",
        job_id="j",
        attempt=1,
        status=status,
        trigger=RunTrigger.SCHEDULE,
        scheduled_at=due,
        due_at=due,
        queue="default",
        skip_reason=reason,
    )


def test_the_rule() -> None:
    paused = SkipReason.PAUSED.value
    assert slot_on_resume(slot(RunStatus.SKIPPED, NOW - timedelta(seconds=10), paused), NOW, GRACE) is (
        SlotOnResume.RUNS_NOW
    )
    assert slot_on_resume(slot(RunStatus.SKIPPED, NOW + timedelta(hours=1), paused), NOW, GRACE) is (
        SlotOnResume.RUNS_NOW
    )
    assert slot_on_resume(slot(RunStatus.SKIPPED, NOW - timedelta(seconds=31), paused), NOW, GRACE) is (
        SlotOnResume.MISSED
    )
    assert slot_on_resume(slot(RunStatus.PENDING, NOW - timedelta(minutes=5)), NOW, GRACE) is SlotOnResume.MISSED
    assert slot_on_resume(slot(RunStatus.PENDING, NOW + timedelta(minutes=5)), NOW, GRACE) is SlotOnResume.STANDS
    # Skipped for another reason, or already run: resuming changes nothing.
    late = SkipReason.LATE.value
    assert slot_on_resume(slot(RunStatus.SKIPPED, NOW, late), NOW, GRACE) is SlotOnResume.STANDS
    assert slot_on_resume(slot(RunStatus.QUEUED, NOW - timedelta(hours=1)), NOW, GRACE) is SlotOnResume.STANDS
    assert slot_on_resume(None, NOW, GRACE) is SlotOnResume.STANDS


async def only_run(scheduler: InProcessScheduler, job_id: str) -> Run:
    runs: list[Run] = await scheduler.app.run_repo.list_for_job(job_id, None, 10, 0)
    assert len(runs) == 1
    return runs[0]


async def test_resumed_within_the_grace_it_runs_past_it_the_skip_stands(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    due = datetime.now(UTC) + timedelta(seconds=1)
    ids = []
    for name in ("within", "past", "early"):
        at = due if name != "early" else due + timedelta(hours=1)
        job = await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=one_time(at, name=name)), metadata=user.md)
        await user.jobs.PauseJob(job_pb2.PauseJobRequest(id=job.id), metadata=user.md)
        ids.append(job.id)
    within, past, early = ids
    while datetime.now(UTC) <= due:
        await asyncio.sleep(0.05)
    await scheduler.app.dispatcher.tick()
    await scheduler.app.dispatcher.tick(datetime.now(UTC) + timedelta(hours=2))
    for job_id in ids:
        run = await only_run(scheduler, job_id)
        assert (run.status, run.skip_reason) == (RunStatus.SKIPPED, SkipReason.PAUSED.value)

    # Resumed a moment after its slot (the mesh's grace is 5 s): it runs now.
    resumed = await user.jobs.ResumeJob(job_pb2.ResumeJobRequest(id=within), metadata=user.md)
    assert resumed.state == job_pb2.JOB_STATE_ACTIVE
    run = await only_run(scheduler, within)
    assert run.status is RunStatus.PENDING and run.skip_reason == "" and run.finished_at is None
    assert datetime.now(UTC) - timedelta(seconds=5) < run.due_at <= datetime.now(UTC)
    await scheduler.app.dispatcher.tick()
    assert (await only_run(scheduler, within)).status is RunStatus.QUEUED

    # Resumed before its slot comes: it runs at the slot, not earlier.
    await user.jobs.ResumeJob(job_pb2.ResumeJobRequest(id=early), metadata=user.md)
    run = await only_run(scheduler, early)
    assert run.status is RunStatus.PENDING and run.due_at == run.scheduled_at == due + timedelta(hours=1)

    # Past the grace (a scheduler with none): the skip stands and the job is over.
    strict = Jobs(scheduler.app.job_repo, scheduler.app.run_repo, timedelta(0))
    job = await strict.resume(Principal(user.user_id, Role.USER), past)
    assert job.state is JobState.COMPLETED
    run = await only_run(scheduler, past)
    assert (run.status, run.skip_reason) == (RunStatus.SKIPPED, SkipReason.PAUSED.value)
