"""The engine in-process against real MariaDB and Redis: materializer, dispatcher,
workers, retries, fencing, misfire and overlap policies."""

from __future__ import annotations

import asyncio
import itertools
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from sqlalchemy import select, update

from core.attempts import RunResult
from core.domain import Run, RunStatus
from core.errors import Unavailable
from core.redis_client import RedisClient
from db.models import RunRow, ScheduleStateRow
from db.repositories.run_lifecycle import RunLifecycleRepository
from db.repositories.schedules import ScheduleRepository
from gen.jobmesh.v1 import job_pb2, run_pb2
from scheduler_svc.materializer import Materializer
from tests.support.jobs import one_time, recurring
from tests.support.polling import wait_for
from tests.support.rpc import Client
from tests.support.scheduler import InProcessScheduler
from tests.support.workers import running_worker
from worker_svc.worker import Worker


async def runs_of(client: Client, job_id: str) -> list[run_pb2.Run]:
    page = await client.runs.ListRuns(run_pb2.ListRunsRequest(job_id=job_id, page_size=500), metadata=client.md)
    return list(page.runs)


async def blocked_in_blmove(redis: Redis) -> bool:
    """Whether a client of the test database waits in BLMOVE: a worker's pop on an empty queue."""
    cluster: RedisClient = redis
    if isinstance(cluster, RedisCluster):  # the node of the default queue's slot (a cluster has db 0 only)
        from core import keys

        db, clients = "0", await cluster.client_list(target_nodes=cluster.get_node_from_key(keys.queue("default")))
    else:
        db = str(redis.connection_pool.connection_kwargs.get("db", 0))
        clients = await redis.client_list()
    return any(c.get("cmd") == "blmove" and "b" in c.get("flags", "") and c.get("db") == db for c in clients)


def statuses(runs: list[run_pb2.Run]) -> list[str]:
    return [run_pb2.RunStatus.Name(r.status).removeprefix("RUN_STATUS_") for r in runs]


async def finished(client: Client, job_id: str, n: int = 1) -> list[run_pb2.Run]:
    async def check() -> list[run_pb2.Run] | None:
        runs = await runs_of(client, job_id)
        done = [r for r in runs if RunStatus[run_pb2.RunStatus.Name(r.status).removeprefix("RUN_STATUS_")].is_final]
        return runs if len(done) >= n and len(done) == len(runs) else None

    try:
        result: list[run_pb2.Run] = await wait_for(check, timeout=30)
    except AssertionError:
        runs = await runs_of(client, job_id)
        raise AssertionError(f"runs did not finish: {[(r.attempt, statuses([r]), r.error) for r in runs]}") from None
    return result


async def test_one_time_job_runs_once_and_completes(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    scheduler.app.start_loops()
    async with running_worker(scheduler.app.settings, "w-one"):
        at = datetime.now(UTC) + timedelta(seconds=1)
        job = await user.jobs.CreateJob(
            job_pb2.CreateJobRequest(
                job=one_time(at, script="import sys\nprint('hello out')\nprint('warn', file=sys.stderr)")
            ),
            metadata=user.md,
        )
        runs = await finished(user, job.id)
        assert statuses(runs) == ["SUCCEEDED"]
        run = runs[0]
        assert run.worker_id == "w-one" and run.exit_code == 0
        assert run.started_at.ToDatetime(tzinfo=UTC) >= at - timedelta(milliseconds=5)
        logs = await user.runs.GetRunLogs(run_pb2.GetRunLogsRequest(run_id=run.id), metadata=user.md)
        assert logs.stdout == "hello out\n" and logs.stderr == "warn\n"
        got = await user.jobs.GetJob(job_pb2.GetJobRequest(id=job.id), metadata=user.md)
        assert got.state == job_pb2.JOB_STATE_COMPLETED
        fetched = await user.runs.GetRun(run_pb2.GetRunRequest(run_id=run.id, job_id=job.id), metadata=user.md)
        assert fetched == run
        other = await scheduler.user()
        for call in (
            user.runs.GetRun(run_pb2.GetRunRequest(run_id=run.id, job_id=other.user_id), metadata=user.md),
            other.runs.GetRun(run_pb2.GetRunRequest(run_id=run.id), metadata=other.md),
            other.runs.GetRunLogs(run_pb2.GetRunLogsRequest(run_id=run.id), metadata=other.md),
        ):
            try:
                await call
                raise AssertionError("another job's or user's run must not be visible")
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.NOT_FOUND
        await asyncio.sleep(1.0)
        assert len(await runs_of(user, job.id)) == 1


async def test_recurring_every_second_job_fires_each_slot(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    scheduler.app.start_loops()
    async with running_worker(scheduler.app.settings, "w-rec", slots=4):
        job = await user.jobs.CreateJob(
            job_pb2.CreateJobRequest(job=recurring("* * * * * *", script="pass")), metadata=user.md
        )
        await wait_for(lambda: _succeeded_count(user, job.id, 4), timeout=20)
        await user.jobs.PauseJob(job_pb2.PauseJobRequest(id=job.id), metadata=user.md)
    runs = await runs_of(user, job.id)
    slots = sorted(r.scheduled_at.ToDatetime(tzinfo=UTC) for r in runs)
    assert len(slots) == len(set(slots)), "each slot once"
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(slots)), "no slot missing"


async def _succeeded_count(user: Client, job_id: str, n: int) -> bool:
    return statuses(await runs_of(user, job_id)).count("SUCCEEDED") >= n


async def test_failures_retry_exactly_max_attempts(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    scheduler.app.start_loops()
    async with running_worker(scheduler.app.settings, "w-retry"):
        job = await user.jobs.CreateJob(
            job_pb2.CreateJobRequest(
                job=one_time(
                    datetime.now(UTC),
                    script="raise SystemExit('boom: bad input')",
                    retry_policy=job_pb2.RetryPolicy(max_attempts=3, strategy=job_pb2.RETRY_STRATEGY_FIXED_BACKOFF),
                )
            ),
            metadata=user.md,
        )
        runs = await finished(user, job.id, 3)
        await asyncio.sleep(0.5)
        runs = await runs_of(user, job.id)
    assert statuses(runs) == ["FAILED", "FAILED", "FAILED"]
    assert sorted(r.attempt for r in runs) == [1, 2, 3]
    assert [r.trigger for r in sorted(runs, key=lambda r: r.attempt)] == [
        run_pb2.RUN_TRIGGER_SCHEDULE, run_pb2.RUN_TRIGGER_RETRY, run_pb2.RUN_TRIGGER_RETRY
    ]  # fmt: skip
    assert all(r.exit_code == 1 and r.error == "boom: bad input" for r in runs)
    got = await user.jobs.GetJob(job_pb2.GetJobRequest(id=job.id), metadata=user.md)
    assert got.state == job_pb2.JOB_STATE_COMPLETED


async def test_timeout_kills_the_whole_group(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    scheduler.app.start_loops()
    marker = f"600.{os.getpid():09d}"  # the grandchild's command line, found from the host
    script = (
        "import os, subprocess, sys, time\n"
        f"child = subprocess.Popen(['sleep', '{marker}'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    async with running_worker(scheduler.app.settings, "w-timeout"):
        job = await user.jobs.CreateJob(
            job_pb2.CreateJobRequest(job=one_time(datetime.now(UTC), script=script, timeout_seconds=2)),
            metadata=user.md,
        )
        runs = await finished(user, job.id)
    assert statuses(runs) == ["TIMED_OUT"] and "timed out" in runs[0].error
    logs = await user.runs.GetRunLogs(run_pb2.GetRunLogsRequest(run_id=runs[0].id), metadata=user.md)
    assert logs.stdout.strip().isdigit(), "the grandchild had started"
    await wait_for(lambda: not _running(marker), timeout=5)


def _running(marker: str) -> bool:
    """Whether a process whose command line holds ``marker`` runs on this host."""
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


async def test_cancel_pending_and_running(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    later = await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=one_time()), metadata=user.md)
    pending = (await runs_of(user, later.id))[0]
    cancelled = await user.runs.CancelRun(run_pb2.CancelRunRequest(run_id=pending.id), metadata=user.md)
    assert cancelled.status == run_pb2.RUN_STATUS_CANCELLED
    try:
        await user.runs.CancelRun(run_pb2.CancelRunRequest(run_id=pending.id), metadata=user.md)
        raise AssertionError("cancelling an ended run must fail")
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    scheduler.app.start_loops()
    async with running_worker(scheduler.app.settings, "w-cancel"):
        job = await user.jobs.CreateJob(
            job_pb2.CreateJobRequest(
                job=one_time(datetime.now(UTC), script="import time\nprint('started', flush=True)\ntime.sleep(120)")
            ),
            metadata=user.md,
        )
        run = await wait_for(lambda: _run_in(user, job.id, run_pb2.RUN_STATUS_RUNNING), timeout=15)
        loop = asyncio.get_running_loop()
        asked = loop.time()
        await user.runs.CancelRun(run_pb2.CancelRunRequest(run_id=run.id, job_id=job.id), metadata=user.md)
        done = await wait_for(lambda: _run_in(user, job.id, run_pb2.RUN_STATUS_CANCELLED), timeout=5)
        assert loop.time() - asked < 2.0
    assert done.error == "cancelled"
    assert len(await runs_of(user, job.id)) == 1, "a cancelled run is not retried"


async def _run_in(user: Client, job_id: str, status: int) -> run_pb2.Run | None:
    return next((r for r in await runs_of(user, job_id) if r.status == status), None)


async def test_script_sees_a_clean_environment(scheduler: InProcessScheduler, monkeypatch: object) -> None:
    import os

    os.environ["JOBMESH_SECRET_FOR_TEST"] = "leak"
    try:
        user = await scheduler.user()
        scheduler.app.start_loops()
        script = "import json, os\nprint(json.dumps(sorted(os.environ)))\nprint(os.getcwd())"
        async with running_worker(scheduler.app.settings, "w-env"):
            job = await user.jobs.CreateJob(
                job_pb2.CreateJobRequest(job=one_time(datetime.now(UTC), script=script)), metadata=user.md
            )
            runs = await finished(user, job.id)
    finally:
        del os.environ["JOBMESH_SECRET_FOR_TEST"]
    assert statuses(runs) == ["SUCCEEDED"]
    logs = await user.runs.GetRunLogs(run_pb2.GetRunLogsRequest(run_id=runs[0].id), metadata=user.md)
    names_line, cwd = logs.stdout.splitlines()
    assert "JOBMESH" not in names_line and "REDIS" not in names_line and "DATABASE" not in names_line
    assert cwd == "/job", "its own directory, in its own root"


async def test_limits_stop_memory_hogs_and_fork_bombs(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    scheduler.app.start_loops()
    hog = "data = bytearray(10 * 1024 ** 3)\nprint('allocated')"
    bomb = "import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)\n"
    async with running_worker(scheduler.app.settings, "w-limits") as worker:
        hog_job = await user.jobs.CreateJob(
            job_pb2.CreateJobRequest(job=one_time(datetime.now(UTC), script=hog)), metadata=user.md
        )
        bomb_job = await user.jobs.CreateJob(
            job_pb2.CreateJobRequest(job=one_time(datetime.now(UTC), script=bomb, timeout_seconds=3)), metadata=user.md
        )
        hog_runs = await finished(user, hog_job.id)
        bomb_runs = await finished(user, bomb_job.id)
        # The worker survived and still runs scripts.
        ok = await user.jobs.CreateJob(
            job_pb2.CreateJobRequest(job=one_time(datetime.now(UTC), script="print(1)")), metadata=user.md
        )
        assert statuses(await finished(user, ok.id)) == ["SUCCEEDED"]
        assert worker.busy == 0
    assert statuses(hog_runs) == ["FAILED"] and "MemoryError" in hog_runs[0].error
    assert statuses(bomb_runs) == ["TIMED_OUT"]


async def test_superseded_fencing_token_is_rejected(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    job = await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=one_time(datetime.now(UTC))), metadata=user.md)
    run = (await runs_of(user, job.id))[0]
    repo = scheduler.app.run_lifecycle
    when = run.scheduled_at.ToDatetime(tzinfo=UTC)
    now = datetime.now(UTC)
    async with scheduler.app.db.transaction() as conn:
        await conn.execute(update(RunRow).where(RunRow.id == run.id).values(status="QUEUED"))
    assert await repo.start([(run.id, when)], "old-worker", "token-old", now)
    # The old worker's attempt is handed back and started again elsewhere (a newer token).
    current = await scheduler.app.run_repo.get(run.id)
    assert current is not None and await repo.hand_back(current, "token-old", now)
    assert await repo.start([(run.id, when)], "new-worker", "token-new", now)
    assert not await repo.start([(run.id, when)], "third-worker", "token-3", now), "a run starts at most once"
    late = await repo.finish([RunResult(run.id, when, "token-old", RunStatus.FAILED, 1, "late")], now)
    assert late.rejected == [run.id]
    fresh = await repo.finish([RunResult(run.id, when, "token-new", RunStatus.SUCCEEDED)], now)
    assert fresh.accepted == [run.id]
    again = await repo.finish([RunResult(run.id, when, "token-old", RunStatus.FAILED, 1, "later")], now)
    assert again.rejected == [run.id]
    final = await scheduler.app.run_repo.get(run.id)
    assert final is not None and final.status is RunStatus.SUCCEEDED and final.worker_id == "new-worker"


async def _set_cursor_back(scheduler: InProcessScheduler, job_id: str, slots_ago: int, period: timedelta) -> datetime:
    now = datetime.now(UTC).replace(microsecond=0)
    first = now - period * slots_ago
    async with scheduler.app.db.transaction() as conn:
        await conn.execute(update(ScheduleStateRow).where(ScheduleStateRow.job_id == job_id).values(next_fire_at=first))
    return first


async def test_misfire_policies_after_downtime(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    results = {}
    for policy in (job_pb2.MISFIRE_POLICY_SKIP, job_pb2.MISFIRE_POLICY_RUN_ONCE, job_pb2.MISFIRE_POLICY_RUN_ALL):
        job = await user.jobs.CreateJob(
            job_pb2.CreateJobRequest(job=recurring("* * * * *", misfire_policy=policy)), metadata=user.md
        )
        # As if the scheduler had been stopped across 10 minute slots.
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        async with scheduler.app.db.transaction() as conn:
            await conn.execute(
                update(ScheduleStateRow)
                .where(ScheduleStateRow.job_id == job.id)
                .values(next_fire_at=now - timedelta(minutes=10))
            )
        results[policy] = job.id
    await scheduler.app.materializer.tick(datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(seconds=1))
    for policy, job_id in results.items():
        async with scheduler.app.db.transaction() as conn:
            rows = (
                await conn.execute(select(RunRow).where(RunRow.job_id == job_id).order_by(RunRow.scheduled_at))
            ).all()
        missed = [r for r in rows if r.scheduled_at < rows[-1].scheduled_at]
        assert len(missed) == 10, "every missed slot is recorded"
        skipped = [r for r in missed if r.status == "SKIPPED"]
        assert all(r.skip_reason == "misfire" for r in skipped)
        catch_up = [r for r in missed if r.trigger == "CATCH_UP" and r.status == "PENDING"]
        if policy == job_pb2.MISFIRE_POLICY_SKIP:
            assert (len(skipped), len(catch_up)) == (10, 0)
        elif policy == job_pb2.MISFIRE_POLICY_RUN_ONCE:
            assert (len(skipped), len(catch_up)) == (9, 1)
            assert catch_up[0].scheduled_at == missed[-1].scheduled_at, "the latest missed slot runs"
        else:
            assert (len(skipped), len(catch_up)) == (0, 10)
        current = rows[-1]
        assert current.trigger == "SCHEDULE" and current.status == "PENDING"


async def test_run_all_is_capped(scheduler: InProcessScheduler) -> None:
    app = scheduler.app
    capped = Materializer(ScheduleRepository(app.db), replace(app.materializer.config, run_all_cap=3))
    user = await scheduler.user()
    job = await user.jobs.CreateJob(
        job_pb2.CreateJobRequest(job=recurring("* * * * *", misfire_policy=job_pb2.MISFIRE_POLICY_RUN_ALL)),
        metadata=user.md,
    )
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    await _set_cursor_back(scheduler, job.id, 10, timedelta(minutes=1))
    await capped.tick(now + timedelta(seconds=1))
    runs = await runs_of(user, job.id)
    assert statuses(runs).count("SKIPPED") == 7
    assert [r.trigger for r in runs].count(run_pb2.RUN_TRIGGER_CATCH_UP) == 3


async def test_two_materializers_never_double_fire(scheduler: InProcessScheduler) -> None:
    from scheduler_svc.main import SchedulerApp

    other = SchedulerApp(scheduler.app.settings)
    user = await scheduler.user()
    jobs = [
        (await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring("* * * * * *")), metadata=user.md)).id
        for _ in range(20)
    ]
    try:
        start = datetime.now(UTC)
        for step in range(10):
            at = start + timedelta(seconds=step)
            await asyncio.gather(
                scheduler.app.materializer.tick(at), other.materializer.tick(at), scheduler.app.materializer.tick(at)
            )
    finally:
        await other.stop()
    async with scheduler.app.db.transaction() as conn:
        rows = (await conn.execute(select(RunRow.job_id, RunRow.scheduled_at))).all()
    assert len(rows) == len(set(rows))
    per_job = {j: sorted(s for jid, s in rows if jid == j) for j in jobs}
    for slots in per_job.values():
        assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(slots))


async def test_overlap_forbid_and_replace(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    scheduler.app.start_loops()
    slow = "import time\ntime.sleep(30)"
    async with running_worker(scheduler.app.settings, "w-overlap", slots=4):
        forbid = await user.jobs.CreateJob(
            job_pb2.CreateJobRequest(
                job=recurring("*/2 * * * * *", script=slow, overlap_policy=job_pb2.OVERLAP_POLICY_FORBID)
            ),
            metadata=user.md,
        )
        replace = await user.jobs.CreateJob(
            job_pb2.CreateJobRequest(
                job=recurring("*/2 * * * * *", script=slow, overlap_policy=job_pb2.OVERLAP_POLICY_REPLACE)
            ),
            metadata=user.md,
        )

        async def forbid_skipped() -> bool:
            runs = await runs_of(user, forbid.id)
            return any(r.status == run_pb2.RUN_STATUS_SKIPPED and r.skip_reason == "overlap" for r in runs)

        async def replace_cancelled() -> bool:
            runs = await runs_of(user, replace.id)
            return statuses(runs).count("CANCELLED") >= 1 and statuses(runs).count("RUNNING") == 1

        await wait_for(forbid_skipped, timeout=15)
        await wait_for(replace_cancelled, timeout=15)
        forbid_runs = await runs_of(user, forbid.id)
        assert statuses(forbid_runs).count("RUNNING") <= 1
        for job in (forbid, replace):
            await user.jobs.PauseJob(job_pb2.PauseJobRequest(id=job.id), metadata=user.md)
            for run in await runs_of(user, job.id):
                if run.status == run_pb2.RUN_STATUS_RUNNING:
                    await user.runs.CancelRun(run_pb2.CancelRunRequest(run_id=run.id), metadata=user.md)


async def test_flushed_redis_loses_nothing(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    jobs = []
    for _ in range(500):
        jobs.append(
            (
                await user.jobs.CreateJob(
                    job_pb2.CreateJobRequest(job=one_time(datetime.now(UTC), script="pass")), metadata=user.md
                )
            ).id
        )
    # Dispatch everything (QUEUED, messages in Redis), then lose Redis' contents.
    while await scheduler.app.dispatcher.tick():
        pass
    async with scheduler.app.db.transaction() as conn:
        queued = (await conn.execute(select(RunRow.id).where(RunRow.status == "QUEUED"))).all()
    assert len(queued) == 500
    await scheduler.app.redis.flushdb()
    scheduler.app.start_loops()
    async with (
        running_worker(scheduler.app.settings, "w-flush-1", slots=4),
        running_worker(scheduler.app.settings, "w-flush-2", slots=4),
    ):

        async def all_done() -> bool:
            async with scheduler.app.db.transaction() as conn:
                rows = (await conn.execute(select(RunRow.status))).all()
            return len(rows) == 500 and all(r.status == "SUCCEEDED" for r in rows)

        await wait_for(all_done, timeout=120, interval=0.5)
    async with scheduler.app.db.transaction() as conn:
        rows = (await conn.execute(select(RunRow.job_id, RunRow.attempt))).all()
    assert sorted(r.job_id for r in rows) == sorted(jobs), "each run once, none twice"
    assert {r.attempt for r in rows} == {1}


async def test_a_run_taken_ahead_of_its_slot_never_shows_an_earlier_start(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    scheduler.app.start_loops()
    async with running_worker(scheduler.app.settings, "w1"):
        due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
        job = await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=one_time(due, script="pass")), metadata=user.md)
        # Dispatched and taken up to the dispatch lead before its slot.
        taken = await wait_for(lambda: _run_in(user, job.id, run_pb2.RUN_STATUS_RUNNING), timeout=15, interval=0.02)
        seen_at = datetime.now(UTC)
        done = await finished(user, job.id)
    shown = taken.started_at.ToDatetime(UTC)
    assert shown >= due, f"RUNNING shows a start {shown} before its slot {due}"
    if seen_at < due:
        assert shown == due, "taken ahead: shows its slot until the real start is known"
    assert statuses(done) == ["SUCCEEDED"] and done[0].started_at.ToDatetime(UTC) >= due


async def test_a_stopping_worker_gives_back_untaken_what_its_last_pop_returns(
    scheduler: InProcessScheduler, redis: Redis
) -> None:
    from core import keys

    user = await scheduler.user()
    job = await user.jobs.CreateJob(
        job_pb2.CreateJobRequest(job=one_time(datetime.now(UTC), script="print('ran')")), metadata=user.md
    )
    async with running_worker(scheduler.app.settings, "w-stopping", slots=1) as worker:
        await wait_for(lambda: blocked_in_blmove(redis))  # its fetch loop waits on the empty queue
        worker.stop()
        # Dispatched after the stop began (as a run another worker hands back): the
        # waiting BLMOVE returns it to the stopping worker.
        assert await scheduler.app.dispatcher.tick()
    [run] = await runs_of(user, job.id)
    assert statuses([run]) == ["QUEUED"] and run.worker_id == "", "not taken, not run"
    queued = await scheduler.app.redis.lrange(keys.queue("default"), 0, -1)
    assert [keys.QueueMessage.decode(m).run_id for m in queued] == [run.id], "back on the queue for another worker"
    assert await scheduler.app.redis.llen(keys.processing("default", "w-stopping")) == 0


async def test_a_prefetched_run_without_a_slot_goes_to_another_worker(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    scheduler.app.start_loops()
    async with running_worker(scheduler.app.settings, "w-busy", slots=1, prefetch=1):
        long = await user.jobs.CreateJob(
            job_pb2.CreateJobRequest(job=one_time(datetime.now(UTC), script="import time\ntime.sleep(6)")),
            metadata=user.md,
        )
        await wait_for(lambda: _run_in(user, long.id, run_pb2.RUN_STATUS_RUNNING), timeout=15)
        short = await user.jobs.CreateJob(
            job_pb2.CreateJobRequest(job=one_time(datetime.now(UTC), script="print('short')")), metadata=user.md
        )
        taken = await wait_for(lambda: _run_in(user, short.id, run_pb2.RUN_STATUS_RUNNING), timeout=15)
        assert taken.worker_id == "w-busy", "taken ahead by the busy worker"
        async with running_worker(scheduler.app.settings, "w-idle", slots=1, prefetch=0):
            done = await finished(user, short.id)
            assert await _run_in(user, long.id, run_pb2.RUN_STATUS_RUNNING) is not None, "long still running"
    assert statuses(done) == ["SUCCEEDED"] and done[0].attempt == 1
    assert done[0].worker_id == "w-idle", "given back after the hold and run by the idle worker"


class HandBackFailsTwice(RunLifecycleRepository):
    """The database refuses a live worker's first two hand-backs (as while MariaDB restarts)."""

    failures = 2

    async def hand_back(self, run: Run, token: str, now: datetime) -> bool:
        if self.failures > 0:
            self.failures -= 1
            raise Unavailable("database unavailable")
        return await super().hand_back(run, token, now)


async def test_a_hand_back_the_database_refuses_is_retried_while_the_worker_lives(
    scheduler: InProcessScheduler,
) -> None:
    # The reaper reclaims only the runs of dead workers: a live worker that gave up
    # on a failed hand-back left its run RUNNING for good.
    user = await scheduler.user()
    scheduler.app.start_loops()
    async with running_worker(scheduler.app.settings, "w-flaky", slots=1, prefetch=1, lifecycle=HandBackFailsTwice):
        long = await user.jobs.CreateJob(
            job_pb2.CreateJobRequest(job=one_time(datetime.now(UTC), script="import time\ntime.sleep(4)")),
            metadata=user.md,
        )
        await wait_for(lambda: _run_in(user, long.id, run_pb2.RUN_STATUS_RUNNING), timeout=15)
        short = await user.jobs.CreateJob(
            job_pb2.CreateJobRequest(job=one_time(datetime.now(UTC), script="print('short')")), metadata=user.md
        )
        done = await finished(user, short.id)
    assert statuses(done) == ["SUCCEEDED"] and done[0].attempt == 1


async def test_a_loop_that_misses_its_cancellation_does_not_hold_up_the_stop(
    scheduler: InProcessScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As a Redis read that misses its cancellation: the worker still stops, and in
    # time (running_worker waits at most 15 s for it).
    deaf: list[asyncio.Task[None]] = []
    missed = asyncio.Event()

    async def deaf_listener(self: Worker) -> None:
        task = asyncio.current_task()
        assert task is not None
        deaf.append(task)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            missed.set()
        await asyncio.sleep(3600)

    monkeypatch.setattr(Worker, "_cancel_listener", deaf_listener)
    try:
        async with running_worker(scheduler.app.settings, "w-deaf"):
            await wait_for(lambda: deaf)
        assert missed.is_set() and not deaf[0].done()
    finally:
        for task in deaf:
            task.cancel()
