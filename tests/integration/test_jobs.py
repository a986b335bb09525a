"""JobService over a real gRPC channel against MariaDB: lifecycle, visibility, validation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from core.domain import JobState, Network
from db.models import JobRow, RunRow, ScheduleStateRow
from gen.jobmesh.v1 import auth_pb2, job_pb2, run_pb2
from tests.support.jobs import one_time, recurring, ts
from tests.support.rpc import Client, expect_code, field_violations
from tests.support.scheduler import InProcessScheduler


async def count(scheduler: InProcessScheduler, table: type) -> int:
    async with scheduler.app.db.transaction() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_create_recurring_writes_its_cursor(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    job = await user.jobs.CreateJob(
        job_pb2.CreateJobRequest(job=recurring("0 9 * * *", timezone="Europe/Berlin")), metadata=user.md
    )
    assert job.id and job.owner_id == user.user_id and job.state == job_pb2.JOB_STATE_ACTIVE and job.version == 1
    assert job.timeout_seconds == 3600 and job.queue == "default" and job.retry_policy.max_attempts == 1
    assert job.misfire_policy == job_pb2.MISFIRE_POLICY_RUN_ONCE and job.overlap_policy == job_pb2.OVERLAP_POLICY_ALLOW
    nxt = job.next_fire_time.ToDatetime(tzinfo=UTC)
    assert nxt > datetime.now(UTC) and nxt.astimezone(ZoneInfo("Europe/Berlin")).hour == 9
    assert await count(scheduler, ScheduleStateRow) == 1
    got = await user.jobs.GetJob(job_pb2.GetJobRequest(id=job.id), metadata=user.md)
    assert got == job


async def test_create_one_time_records_its_single_run(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=10)
    job = await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=one_time(at)), metadata=user.md)
    runs = await user.runs.ListRuns(run_pb2.ListRunsRequest(job_id=job.id), metadata=user.md)
    assert len(runs.runs) == 1
    run = runs.runs[0]
    assert run.status == run_pb2.RUN_STATUS_PENDING and run.trigger == run_pb2.RUN_TRIGGER_SCHEDULE
    assert run.scheduled_at.ToDatetime(tzinfo=UTC) == at and run.attempt == 1
    assert await count(scheduler, ScheduleStateRow) == 0


async def test_idempotent_create_with_request_id(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    request = job_pb2.CreateJobRequest(job=recurring(), request_id="req-123")
    first, second = await asyncio.gather(
        user.jobs.CreateJob(request, metadata=user.md), user.jobs.CreateJob(request, metadata=user.md)
    )
    third = await user.jobs.CreateJob(request, metadata=user.md)
    assert first.id == second.id == third.id
    assert await count(scheduler, JobRow) == 1
    other = await scheduler.user()  # request ids are per account
    assert (await other.jobs.CreateJob(request, metadata=other.md)).id != first.id


async def test_list_paginates_and_filters(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    other = await scheduler.user()
    ids = [
        (await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring(name=f"j{i}")), metadata=user.md)).id
        for i in range(5)
    ]
    once = await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=one_time()), metadata=user.md)
    await other.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring()), metadata=other.md)
    seen: list[str] = []
    token = ""
    while True:
        page = await user.jobs.ListJobs(job_pb2.ListJobsRequest(page_size=2, page_token=token), metadata=user.md)
        assert page.total_size == 6
        seen.extend(j.id for j in page.jobs)
        token = page.next_page_token
        if not token:
            break
    assert seen == [once.id, *reversed(ids)], "newest first, each once, only the caller's"
    recurring_only = await user.jobs.ListJobs(
        job_pb2.ListJobsRequest(job_type=job_pb2.JOB_TYPE_RECURRING), metadata=user.md
    )
    assert len(recurring_only.jobs) == 5
    skipped = await user.jobs.ListJobs(job_pb2.ListJobsRequest(page_size=2, skip=2), metadata=user.md)
    assert [j.id for j in skipped.jobs] == seen[2:4]
    await user.jobs.PauseJob(job_pb2.PauseJobRequest(id=ids[0]), metadata=user.md)
    paused = await user.jobs.ListJobs(job_pb2.ListJobsRequest(state=job_pb2.JOB_STATE_PAUSED), metadata=user.md)
    assert [j.id for j in paused.jobs] == [ids[0]]
    await expect_code(
        user.jobs.ListJobs(job_pb2.ListJobsRequest(page_size=501), metadata=user.md), grpc.StatusCode.INVALID_ARGUMENT
    )
    await expect_code(
        user.jobs.ListJobs(job_pb2.ListJobsRequest(page_token="garbage!"), metadata=user.md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    admin = await scheduler.user("ADMIN")
    viewer = await scheduler.user("VIEWER")
    for reader in (admin, viewer):
        everything = await reader.jobs.ListJobs(job_pb2.ListJobsRequest(page_size=100), metadata=reader.md)
        assert everything.total_size == 7
        mine = await reader.jobs.ListJobs(job_pb2.ListJobsRequest(owner_id=other.user_id), metadata=reader.md)
        assert mine.total_size == 1


async def test_update_with_mask_and_version(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    job = await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring("0 9 * * *")), metadata=user.md)
    change = job_pb2.Job(id=job.id, version=job.version, cron_expr="0 10 * * *", name="ignored")
    updated = await user.jobs.UpdateJob(
        job_pb2.UpdateJobRequest(job=change, update_mask=FieldMask(paths=["cron_expr"])), metadata=user.md
    )
    assert updated.cron_expr == "0 10 * * *" and updated.name == job.name and updated.version == 2
    assert updated.next_fire_time.ToDatetime(tzinfo=UTC).hour == 10, "schedule recomputed"
    stale = await expect_code(
        user.jobs.UpdateJob(
            job_pb2.UpdateJobRequest(job=change, update_mask=FieldMask(paths=["cron_expr"])), metadata=user.md
        ),
        grpc.StatusCode.ABORTED,
    )
    assert "stale" in (stale.details() or "")
    policy = job_pb2.Job(id=job.id, version=2, retry_policy=job_pb2.RetryPolicy(max_attempts=3))
    updated = await user.jobs.UpdateJob(
        job_pb2.UpdateJobRequest(job=policy, update_mask=FieldMask(paths=["retry_policy.max_attempts"])),
        metadata=user.md,
    )
    assert updated.retry_policy.max_attempts == 3 and updated.version == 3
    err = await expect_code(
        user.jobs.UpdateJob(
            job_pb2.UpdateJobRequest(
                job=job_pb2.Job(id=job.id, version=3, cron_expr="61 * * * *"),
                update_mask=FieldMask(paths=["cron_expr"]),
            ),
            metadata=user.md,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "job.cron_expr" in field_violations(err)
    err = await expect_code(
        user.jobs.UpdateJob(
            job_pb2.UpdateJobRequest(job=job_pb2.Job(id=job.id, version=3), update_mask=FieldMask(paths=["owner_id"])),
            metadata=user.md,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "update_mask.owner_id" in field_violations(err)
    # Empty mask: the fields that are set.
    updated = await user.jobs.UpdateJob(
        job_pb2.UpdateJobRequest(job=job_pb2.Job(id=job.id, version=3, name="renamed")), metadata=user.md
    )
    assert updated.name == "renamed" and updated.cron_expr == "0 10 * * *"


async def test_network_round_trips_and_reaches_the_worker(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    plain = await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring()), metadata=user.md)
    assert plain.network == job_pb2.NETWORK_NONE, "unspecified means NONE"
    host = await user.jobs.CreateJob(
        job_pb2.CreateJobRequest(job=one_time(datetime.now(UTC), network=job_pb2.NETWORK_HOST)), metadata=user.md
    )
    assert host.network == job_pb2.NETWORK_HOST
    got = await user.jobs.GetJob(job_pb2.GetJobRequest(id=host.id), metadata=user.md)
    assert got.network == job_pb2.NETWORK_HOST
    listed = await user.jobs.ListJobs(job_pb2.ListJobsRequest(), metadata=user.md)
    assert {j.id: j.network for j in listed.jobs} == {plain.id: job_pb2.NETWORK_NONE, host.id: job_pb2.NETWORK_HOST}
    # The job the worker gets with the run it starts carries the network.
    run = (await user.runs.ListRuns(run_pb2.ListRunsRequest(job_id=host.id), metadata=user.md)).runs[0]
    when = run.scheduled_at.ToDatetime(tzinfo=UTC)
    async with scheduler.app.db.transaction() as conn:
        await conn.execute(update(RunRow).where(RunRow.id == run.id).values(status="QUEUED"))
    [(_, job, _)] = await scheduler.app.run_lifecycle.start([(run.id, when)], "worker-1", "token-1", datetime.now(UTC))
    assert job.id == host.id and job.network is Network.HOST
    # UpdateJob: by mask, by an empty mask (the fields set), and back to the default.
    updated = await user.jobs.UpdateJob(
        job_pb2.UpdateJobRequest(
            job=job_pb2.Job(id=plain.id, version=1, network=job_pb2.NETWORK_HOST, name="ignored"),
            update_mask=FieldMask(paths=["network"]),
        ),
        metadata=user.md,
    )
    assert updated.network == job_pb2.NETWORK_HOST and updated.name == plain.name and updated.version == 2
    updated = await user.jobs.UpdateJob(
        job_pb2.UpdateJobRequest(job=job_pb2.Job(id=plain.id, version=2, network=job_pb2.NETWORK_NONE)),
        metadata=user.md,
    )
    assert updated.network == job_pb2.NETWORK_NONE and updated.version == 3
    updated = await user.jobs.UpdateJob(
        job_pb2.UpdateJobRequest(
            job=job_pb2.Job(id=plain.id, version=3, network=job_pb2.NETWORK_HOST),
            update_mask=FieldMask(paths=["network"]),
        ),
        metadata=user.md,
    )
    updated = await user.jobs.UpdateJob(
        job_pb2.UpdateJobRequest(job=job_pb2.Job(id=plain.id, version=4), update_mask=FieldMask(paths=["network"])),
        metadata=user.md,
    )
    assert updated.network == job_pb2.NETWORK_NONE, "unspecified means NONE"
    # A number that names no network is refused, on create and on update, and changes nothing.
    err = await expect_code(
        user.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring(network=7)), metadata=user.md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert list(field_violations(err)) == ["job.network"]
    err = await expect_code(
        user.jobs.UpdateJob(
            job_pb2.UpdateJobRequest(
                job=job_pb2.Job(id=plain.id, version=5, network=7),  # type: ignore[arg-type]
                update_mask=FieldMask(paths=["network"]),
            ),
            metadata=user.md,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert list(field_violations(err)) == ["job.network"]
    final = await user.jobs.GetJob(job_pb2.GetJobRequest(id=plain.id), metadata=user.md)
    assert final.network == job_pb2.NETWORK_NONE and final.version == 5
    assert await count(scheduler, JobRow) == 2


async def test_two_updates_with_the_same_version_exactly_one_wins(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    job = await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring()), metadata=user.md)
    calls = [
        user.jobs.UpdateJob(
            job_pb2.UpdateJobRequest(
                job=job_pb2.Job(id=job.id, version=1, name=f"writer-{i}"), update_mask=FieldMask(paths=["name"])
            ),
            metadata=user.md,
        )
        for i in range(2)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    wins = [r for r in results if isinstance(r, job_pb2.Job)]
    losses = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(wins) == 1 and len(losses) == 1
    assert losses[0].code() == grpc.StatusCode.ABORTED
    final = await user.jobs.GetJob(job_pb2.GetJobRequest(id=job.id), metadata=user.md)
    assert final.version == 2 and final.name == wins[0].name


async def test_pause_resume_delete(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    job = await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring()), metadata=user.md)
    paused = await user.jobs.PauseJob(job_pb2.PauseJobRequest(id=job.id), metadata=user.md)
    assert paused.state == job_pb2.JOB_STATE_PAUSED and not paused.HasField("next_fire_time")
    assert await count(scheduler, ScheduleStateRow) == 0
    await expect_code(
        user.jobs.PauseJob(job_pb2.PauseJobRequest(id=job.id), metadata=user.md), grpc.StatusCode.FAILED_PRECONDITION
    )
    resumed = await user.jobs.ResumeJob(job_pb2.ResumeJobRequest(id=job.id), metadata=user.md)
    assert resumed.state == job_pb2.JOB_STATE_ACTIVE and resumed.HasField("next_fire_time")
    await expect_code(
        user.jobs.ResumeJob(job_pb2.ResumeJobRequest(id=job.id), metadata=user.md), grpc.StatusCode.FAILED_PRECONDITION
    )
    deleted = await user.jobs.DeleteJob(job_pb2.DeleteJobRequest(id=job.id), metadata=user.md)
    assert deleted.state == job_pb2.JOB_STATE_DELETED
    assert await count(scheduler, ScheduleStateRow) == 0
    assert await count(scheduler, JobRow) == 1, "soft delete keeps the row"
    await expect_code(user.jobs.GetJob(job_pb2.GetJobRequest(id=job.id), metadata=user.md), grpc.StatusCode.NOT_FOUND)
    assert (await user.jobs.ListJobs(job_pb2.ListJobsRequest(), metadata=user.md)).total_size == 0
    listed = await user.jobs.ListJobs(job_pb2.ListJobsRequest(state=job_pb2.JOB_STATE_DELETED), metadata=user.md)
    assert [j.id for j in listed.jobs] == [job.id]


async def test_pausing_a_one_time_job_that_already_ran_is_refused(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    job = await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=one_time()), metadata=user.md)
    await scheduler.app.job_repo.transition(job.id, (JobState.ACTIVE,), JobState.COMPLETED, None, datetime.now(UTC))
    await expect_code(
        user.jobs.PauseJob(job_pb2.PauseJobRequest(id=job.id), metadata=user.md), grpc.StatusCode.FAILED_PRECONDITION
    )


async def test_run_now_records_a_manual_run(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    job = await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring()), metadata=user.md)
    run = await user.jobs.RunJobNow(job_pb2.RunJobNowRequest(id=job.id), metadata=user.md)
    assert (
        run.trigger == run_pb2.RUN_TRIGGER_MANUAL and run.status == run_pb2.RUN_STATUS_PENDING and run.job_id == job.id
    )
    assert await count(scheduler, RunRow) == 1


async def test_another_users_job_is_not_found(scheduler: InProcessScheduler) -> None:
    owner = await scheduler.user()
    intruder = await scheduler.user()
    job = await owner.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring()), metadata=owner.md)
    for call in (
        intruder.jobs.GetJob(job_pb2.GetJobRequest(id=job.id), metadata=intruder.md),
        intruder.jobs.PauseJob(job_pb2.PauseJobRequest(id=job.id), metadata=intruder.md),
        intruder.jobs.DeleteJob(job_pb2.DeleteJobRequest(id=job.id), metadata=intruder.md),
        intruder.jobs.RunJobNow(job_pb2.RunJobNowRequest(id=job.id), metadata=intruder.md),
        intruder.runs.ListRuns(run_pb2.ListRunsRequest(job_id=job.id), metadata=intruder.md),
    ):
        await expect_code(call, grpc.StatusCode.NOT_FOUND)
    await expect_code(
        owner.jobs.GetJob(job_pb2.GetJobRequest(id="00000000-0000-7000-8000-00000000abcd"), metadata=owner.md),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_code(
        owner.jobs.GetJob(job_pb2.GetJobRequest(id="nope"), metadata=owner.md), grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_preview_schedule(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    after = datetime(2026, 3, 28, 12, tzinfo=UTC)
    resp = await user.jobs.PreviewSchedule(
        job_pb2.PreviewScheduleRequest(cron_expr="30 2 * * *", timezone="Europe/Berlin", count=3, after=ts(after)),
        metadata=user.md,
    )
    times = [f.time.ToDatetime(tzinfo=UTC) for f in resp.fire_times]
    assert times == [datetime(2026, 3, 29, 1, 0, tzinfo=UTC), datetime(2026, 3, 30, 0, 30, tzinfo=UTC),
                     datetime(2026, 3, 31, 0, 30, tzinfo=UTC)]  # fmt: skip
    assert resp.fire_times[0].dst_transition and "does not exist" in resp.fire_times[0].note
    assert resp.fire_times[0].local_time == "2026-03-29T03:00:00+02:00" and resp.fire_times[0].utc_offset == "+02:00"
    assert not resp.fire_times[2].dst_transition
    default = await user.jobs.PreviewSchedule(job_pb2.PreviewScheduleRequest(cron_expr="@hourly"), metadata=user.md)
    assert len(default.fire_times) == 10
    err = await expect_code(
        user.jobs.PreviewSchedule(
            job_pb2.PreviewScheduleRequest(cron_expr="* * *", timezone="Mars/Olympus", count=101), metadata=user.md
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(field_violations(err)) == {"cron_expr", "timezone", "count"}


INVALID_JOBS: list[tuple[str, job_pb2.Job]] = [
    ("job.cron_expr", recurring("61 * * * *")),
    ("job.cron_expr", recurring("* * *")),
    ("job.cron_expr", recurring("")),
    ("job.cron_expr", recurring("@fortnightly")),
    ("job.cron_expr", recurring("0 0 31 2 *")),
    ("job.timezone", recurring(timezone="Mars/Olympus")),
    ("job.job_type", job_pb2.Job(cron_expr="* * * * *", script_content="pass")),
    ("job.scheduled_at", job_pb2.Job(job_type=job_pb2.JOB_TYPE_ONE_TIME, script_content="pass")),
    ("job.cron_expr", one_time(cron_expr="* * * * *")),
    ("job.scheduled_at", recurring(scheduled_at=ts(datetime.now(UTC) + timedelta(hours=1)))),
    ("job.scheduled_at", one_time(datetime.now(UTC) - timedelta(days=2))),
    ("job.script_content", recurring(script="")),
    ("job.script_content", recurring(script="def broken(:\n")),
    ("job.script_content", recurring(script="x = 1\n" * 50_000)),
    ("job.script_content", recurring(script="print('\x00')\x00")),
    ("job.timeout_seconds", recurring(timeout_seconds=86401)),
    ("job.timeout_seconds", recurring(timeout_seconds=-1)),
    ("job.retry_policy.max_attempts", recurring(retry_policy=job_pb2.RetryPolicy(max_attempts=101))),
    (
        "job.retry_policy.initial_delay_seconds",
        recurring(retry_policy=job_pb2.RetryPolicy(initial_delay_seconds=90000)),
    ),
    ("job.retry_policy.max_delay_seconds", recurring(retry_policy=job_pb2.RetryPolicy(max_delay_seconds=-5))),
    (
        "job.retry_policy.initial_delay_seconds",
        recurring(retry_policy=job_pb2.RetryPolicy(initial_delay_seconds=60, max_delay_seconds=10)),
    ),
    ("job.retry_policy.multiplier", recurring(retry_policy=job_pb2.RetryPolicy(multiplier=11))),
    ("job.retry_policy.multiplier", recurring(retry_policy=job_pb2.RetryPolicy(multiplier=0.5))),
    (
        "job.retry_policy.multiplier",
        recurring(retry_policy=job_pb2.RetryPolicy(strategy=job_pb2.RETRY_STRATEGY_FIXED_BACKOFF, multiplier=2)),
    ),
    ("job.queue", recurring(queue="Bad Queue")),
    ("job.queue", recurring(queue="q" * 65)),
    ("job.name", recurring(name="n" * 201)),
    ("job.max_lateness_seconds", recurring(max_lateness_seconds=-1)),
    ("job.network", recurring(network=-1)),
]


async def test_every_validation_rule_names_its_field_and_writes_nothing(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    for field, job in INVALID_JOBS:
        err = await expect_code(
            user.jobs.CreateJob(job_pb2.CreateJobRequest(job=job), metadata=user.md), grpc.StatusCode.INVALID_ARGUMENT
        )
        assert field in field_violations(err), (field, field_violations(err))
    err = await expect_code(
        user.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring(), request_id="r" * 65), metadata=user.md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "request_id" in field_violations(err)
    assert (
        await count(scheduler, JobRow) == 0
        and await count(scheduler, RunRow) == 0
        and await count(scheduler, ScheduleStateRow) == 0
    )
    # The limits themselves are accepted.
    limits = job_pb2.RetryPolicy(max_attempts=100, initial_delay_seconds=86400, max_delay_seconds=86400, multiplier=10)
    ok = recurring("0 0 * * *", script="x = 1\n" * 30_000, timeout_seconds=86400, queue="q_-9", retry_policy=limits)
    await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=ok), metadata=user.md)
    for cron in ("*/5 * * * * *", "@daily", "@weekly", "@monthly", "@yearly", "@hourly", "0 12 * * MON-FRI"):
        await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring(cron)), metadata=user.md)


ROLE_MATRIX = {
    # rpc: (admin, user, viewer) allowed?
    "CreateJob": (True, True, False),
    "GetJob": (True, True, True),
    "ListJobs": (True, True, True),
    "UpdateJob": (True, True, False),
    "PauseJob": (True, True, False),
    "ResumeJob": (True, True, False),
    "RunJobNow": (True, True, False),
    "DeleteJob": (True, True, False),
    "PreviewSchedule": (True, True, True),
    "ListRuns": (True, True, True),
    "GetCurrentUser": (True, True, True),
    "ListUsers": (True, False, False),
    "SetUserRole": (True, False, False),
}


def role_calls(client: Client, owner: Client, target: str, paused: str) -> dict[str, Callable[[], Any]]:
    """One call per RPC of the role matrix, made as ``client``."""
    return {
        "CreateJob": lambda: client.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring()), metadata=client.md),
        "GetJob": lambda: client.jobs.GetJob(job_pb2.GetJobRequest(id=target), metadata=client.md),
        "ListJobs": lambda: client.jobs.ListJobs(job_pb2.ListJobsRequest(), metadata=client.md),
        "UpdateJob": lambda: client.jobs.UpdateJob(
            job_pb2.UpdateJobRequest(
                job=job_pb2.Job(id=target, version=1, name="x"), update_mask=FieldMask(paths=["name"])
            ),
            metadata=client.md,
        ),
        "PauseJob": lambda: client.jobs.PauseJob(job_pb2.PauseJobRequest(id=target), metadata=client.md),
        "ResumeJob": lambda: client.jobs.ResumeJob(job_pb2.ResumeJobRequest(id=paused), metadata=client.md),
        "RunJobNow": lambda: client.jobs.RunJobNow(job_pb2.RunJobNowRequest(id=target), metadata=client.md),
        "DeleteJob": lambda: client.jobs.DeleteJob(job_pb2.DeleteJobRequest(id=paused), metadata=client.md),
        "PreviewSchedule": lambda: client.jobs.PreviewSchedule(
            job_pb2.PreviewScheduleRequest(cron_expr="@daily"), metadata=client.md
        ),
        "ListRuns": lambda: client.runs.ListRuns(run_pb2.ListRunsRequest(job_id=target), metadata=client.md),
        "GetCurrentUser": lambda: client.auth.GetCurrentUser(auth_pb2.GetCurrentUserRequest(), metadata=client.md),
        "ListUsers": lambda: client.auth.ListUsers(auth_pb2.ListUsersRequest(), metadata=client.md),
        "SetUserRole": lambda: client.auth.SetUserRole(
            auth_pb2.SetUserRoleRequest(user_id=owner.user_id, role=auth_pb2.ROLE_USER), metadata=client.md
        ),
    }


async def test_role_matrix(scheduler: InProcessScheduler) -> None:
    owner = await scheduler.user()
    clients = {"ADMIN": await scheduler.user("ADMIN"), "USER": owner, "VIEWER": await scheduler.user("VIEWER")}
    seen = set()
    for index, role in enumerate(("ADMIN", "USER", "VIEWER")):
        client = clients[role]
        target = await owner.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring()), metadata=owner.md)
        paused = await owner.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring()), metadata=owner.md)
        await owner.jobs.PauseJob(job_pb2.PauseJobRequest(id=paused.id), metadata=owner.md)
        calls = role_calls(client, owner, target.id, paused.id)
        for rpc, allowed in ROLE_MATRIX.items():
            seen.add(rpc)
            if allowed[index]:
                await calls[rpc]()
            else:
                await expect_code(calls[rpc](), grpc.StatusCode.PERMISSION_DENIED)
    assert seen == set(ROLE_MATRIX)
    # Without a token every non-public RPC is refused.
    await expect_code(
        scheduler.anon.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring())), grpc.StatusCode.UNAUTHENTICATED
    )
    await expect_code(scheduler.anon.jobs.ListJobs(job_pb2.ListJobsRequest()), grpc.StatusCode.UNAUTHENTICATED)
    await expect_code(scheduler.anon.runs.ListRuns(run_pb2.ListRunsRequest()), grpc.StatusCode.UNAUTHENTICATED)


job_bodies = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=250),
        "job_type": st.integers(min_value=-1, max_value=5),
        "cron_expr": st.one_of(
            st.text(max_size=40), st.sampled_from(["* * * * *", "*/5 * * * * *", "@daily", "0 0 30 2 *"])
        ),
        "timezone": st.one_of(st.text(max_size=40), st.sampled_from(["UTC", "Europe/Berlin", "../etc/passwd", ""])),
        "script_content": st.one_of(st.text(max_size=200), st.just("print(1)")),
        "timeout_seconds": st.integers(min_value=-(2**31), max_value=2**31 - 1),
        "queue": st.text(max_size=70),
        "misfire_policy": st.integers(min_value=-3, max_value=9),
        "overlap_policy": st.integers(min_value=-3, max_value=9),
        "network": st.integers(min_value=-3, max_value=9),
        "max_lateness_seconds": st.integers(min_value=-(2**31), max_value=2**31 - 1),
        "scheduled_at": st.datetimes(
            min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
        ),
        "retry_policy": st.fixed_dictionaries(
            {},
            optional={
                "max_attempts": st.integers(min_value=-(2**31), max_value=2**31 - 1),
                "strategy": st.integers(min_value=-2, max_value=6),
                "initial_delay_seconds": st.integers(min_value=-(2**31), max_value=2**31 - 1),
                "max_delay_seconds": st.integers(min_value=-(2**31), max_value=2**31 - 1),
                "multiplier": st.floats(allow_nan=True, allow_infinity=True),
            },
        ),
    },
)


async def test_random_bodies_never_cause_internal_errors(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    loop = asyncio.get_running_loop()
    bodies: list[dict[str, object]] = []

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(job_bodies)
    def collect(body: dict[str, object]) -> None:
        bodies.append(body)

    await loop.run_in_executor(None, collect)
    for body in bodies:
        fields = dict(body)
        policy = fields.pop("retry_policy", None)
        at = fields.pop("scheduled_at", None)
        job = job_pb2.Job(**fields)  # type: ignore[arg-type]
        if policy:
            job.retry_policy.CopyFrom(job_pb2.RetryPolicy(**policy))  # type: ignore[arg-type]
        if at is not None:
            job.scheduled_at.FromDatetime(at)  # type: ignore[arg-type]
        try:
            await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=job), metadata=user.md)
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (body, err.code(), err.details())
