"""A run that cannot start within the job's max lateness is recorded SKIPPED (late)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gen.jobmesh.v1 import job_pb2, run_pb2
from tests.support.jobs import one_time
from tests.support.scheduler import InProcessScheduler


async def test_too_late_runs_are_skipped(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    late = await user.jobs.CreateJob(
        job_pb2.CreateJobRequest(job=one_time(datetime.now(UTC) - timedelta(seconds=30), max_lateness_seconds=5)),
        metadata=user.md,
    )
    fine = await user.jobs.CreateJob(
        job_pb2.CreateJobRequest(job=one_time(datetime.now(UTC) - timedelta(seconds=30), max_lateness_seconds=60)),
        metadata=user.md,
    )
    await scheduler.app.dispatcher.tick()
    (late_run,) = (await user.runs.ListRuns(run_pb2.ListRunsRequest(job_id=late.id), metadata=user.md)).runs
    (fine_run,) = (await user.runs.ListRuns(run_pb2.ListRunsRequest(job_id=fine.id), metadata=user.md)).runs
    assert (late_run.status, late_run.skip_reason) == (run_pb2.RUN_STATUS_SKIPPED, "late")
    assert fine_run.status == run_pb2.RUN_STATUS_QUEUED
