"""The reads the console needs, over gRPC against MariaDB: job filters by queue and name,
the schedule in words, the newest runs of many jobs in one call, the runs executing now,
and schedule lateness percentiles in the monitor's figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from sqlalchemy import update

from db.engine import Database
from db.models import RunRow
from gen.jobmesh.v1 import health_pb2, health_pb2_grpc, job_pb2, run_pb2
from monitor_svc.health import percentile
from tests.support.inputs import Stack
from tests.support.jobs import one_time, recurring
from tests.support.scheduler import InProcessScheduler

NOBODY = "00000000-0000-7000-8000-000000000000"


async def test_list_filters_and_schedule_words(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    for name, queue in (("Nightly Report", "reports"), ("nightly backup", "default"), ("hourly sync", "reports")):
        await user.jobs.CreateJob(
            job_pb2.CreateJobRequest(job=recurring("30 2 * * MON-FRI", name=name, queue=queue)), metadata=user.md
        )
    once = await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=one_time(name="once")), metadata=user.md)
    assert once.schedule_description == ""

    async def names(**filters: str) -> list[str]:
        page = await user.jobs.ListJobs(job_pb2.ListJobsRequest(**filters), metadata=user.md)  # type: ignore[arg-type]
        assert page.total_size == len(page.jobs)
        return sorted(j.name for j in page.jobs)

    assert await names(name_contains="NIGHTLY") == ["Nightly Report", "nightly backup"]
    assert await names(queue="reports") == ["Nightly Report", "hourly sync"]
    assert await names(queue="reports", name_contains="night") == ["Nightly Report"]
    assert await names(name_contains="100%_") == []  # LIKE's wildcards are text here
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await user.jobs.ListJobs(job_pb2.ListJobsRequest(queue="No Such Queue!"), metadata=user.md)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "queue" in str(bad.value.details())
    page = await user.jobs.ListJobs(job_pb2.ListJobsRequest(name_contains="report"), metadata=user.md)
    assert page.jobs[0].schedule_description == "At 02:30 on Monday through Friday"
    preview = await user.jobs.PreviewSchedule(
        job_pb2.PreviewScheduleRequest(cron_expr="*/15 * * * *", timezone="Europe/Berlin"), metadata=user.md
    )
    assert preview.description == "Every 15th minute of every hour" and len(preview.fire_times) == 10


async def test_recent_runs_of_many_jobs(scheduler: InProcessScheduler) -> None:
    owner, other, viewer = await scheduler.user(), await scheduler.user(), await scheduler.user("VIEWER")
    mine = await owner.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring("@daily")), metadata=owner.md)
    quiet = await owner.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring("@daily")), metadata=owner.md)
    theirs = await other.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring("@daily")), metadata=other.md)
    made = [await owner.jobs.RunJobNow(job_pb2.RunJobNowRequest(id=mine.id), metadata=owner.md) for _ in range(3)]
    await other.jobs.RunJobNow(job_pb2.RunJobNowRequest(id=theirs.id), metadata=other.md)

    asked = [theirs.id, mine.id, NOBODY, quiet.id]
    answer = await owner.runs.BatchListRecentRuns(
        run_pb2.BatchListRecentRunsRequest(job_ids=asked, count=2), metadata=owner.md
    )
    assert [j.job_id for j in answer.jobs] == asked
    by_job = {j.job_id: [r.id for r in j.runs] for j in answer.jobs}
    newest_first = [r.id for r in sorted(made, key=lambda r: r.scheduled_at.ToDatetime(), reverse=True)]
    assert by_job == {theirs.id: [], mine.id: newest_first[:2], NOBODY: [], quiet.id: []}  # another's job: no runs

    everything = await viewer.runs.BatchListRecentRuns(
        run_pb2.BatchListRecentRunsRequest(job_ids=[mine.id, theirs.id]), metadata=viewer.md
    )
    assert [len(j.runs) for j in everything.jobs] == [3, 1]

    for request, field in (
        (run_pb2.BatchListRecentRunsRequest(job_ids=[mine.id, "nope"]), "job_ids[1]"),
        (run_pb2.BatchListRecentRunsRequest(job_ids=[mine.id], count=51), "count"),
        (run_pb2.BatchListRecentRunsRequest(job_ids=[NOBODY] * 101), "job_ids"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await owner.runs.BatchListRecentRuns(request, metadata=owner.md)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in str(bad.value.details()), field
    with pytest.raises(grpc.aio.AioRpcError) as anon:
        await scheduler.anon.runs.BatchListRecentRuns(run_pb2.BatchListRecentRunsRequest(job_ids=[mine.id]))
    assert anon.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def _set_runs(db: Database, ids: list[str], **values: object) -> None:
    async with db.transaction() as conn:
        await conn.execute(update(RunRow).where(RunRow.id.in_(ids)).values(**values))


async def test_running_runs_follow_visibility(scheduler: InProcessScheduler, db: Database) -> None:
    owner, other, admin = await scheduler.user(), await scheduler.user(), await scheduler.user("ADMIN")
    mine = await owner.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring("@daily")), metadata=owner.md)
    theirs = await other.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring("@daily")), metadata=other.md)
    now = datetime.now(UTC)
    early = await owner.jobs.RunJobNow(job_pb2.RunJobNowRequest(id=mine.id), metadata=owner.md)
    late = await owner.jobs.RunJobNow(job_pb2.RunJobNowRequest(id=mine.id), metadata=owner.md)
    await owner.jobs.RunJobNow(job_pb2.RunJobNowRequest(id=mine.id), metadata=owner.md)  # stays PENDING
    foreign = await other.jobs.RunJobNow(job_pb2.RunJobNowRequest(id=theirs.id), metadata=other.md)
    await _set_runs(db, [early.id], status="RUNNING", started_at=now - timedelta(seconds=30), worker_id="w1")
    await _set_runs(db, [late.id, foreign.id], status="RUNNING", started_at=now - timedelta(seconds=5), worker_id="w2")

    seen = await owner.runs.ListRunningRuns(run_pb2.ListRunningRunsRequest(), metadata=owner.md)
    assert [r.id for r in seen.runs] == [early.id, late.id] and seen.total_size == 2  # the longest running first
    assert dict(seen.job_names) == {mine.id: mine.name}
    everyone = await admin.runs.ListRunningRuns(run_pb2.ListRunningRunsRequest(page_size=1), metadata=admin.md)
    assert [r.id for r in everyone.runs] == [early.id] and everyone.total_size == 3
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await owner.runs.ListRunningRuns(run_pb2.ListRunningRunsRequest(page_size=501), metadata=owner.md)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_lateness_percentiles_in_the_figures(stack: Stack, db: Database) -> None:
    user = await stack.scheduler.user()
    job = await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring("@daily")), metadata=user.md)
    runs = [await user.jobs.RunJobNow(job_pb2.RunJobNowRequest(id=job.id), metadata=user.md) for _ in range(10)]
    now = datetime.now(UTC)
    for index, run in enumerate(runs):
        due = run.due_at.ToDatetime(tzinfo=UTC)
        await _set_runs(
            db, [run.id], status="SUCCEEDED", started_at=due + timedelta(milliseconds=100 * (index + 1)),
            finished_at=now, worker_id="w",
        )  # fmt: skip
    figures = await health_pb2_grpc.HealthServiceStub(stack.monitor).GetMetrics(health_pb2.GetMetricsRequest())
    assert figures.lateness_sample_size == 10
    assert figures.lateness_p50_seconds == pytest.approx(0.5)
    assert figures.lateness_p99_seconds == pytest.approx(1.0)
    async with stack.http.get(f"{stack.base}/api/health/metrics") as resp:
        body = await resp.json()
    assert body["latenessP99Seconds"] == pytest.approx(1.0) and "schedulersAlive" in body


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.5) == 0.0
    assert percentile([3.0], 0.99) == 3.0
    ordered = [float(n) for n in range(1, 101)]
    assert (percentile(ordered, 0.5), percentile(ordered, 0.99), percentile(ordered, 1.0)) == (50.0, 99.0, 100.0)
