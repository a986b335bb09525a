"""Invariants that are about processes: real schedulers and workers, killed for real."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import text

from db.engine import Database
from gen.jobmesh.v1 import auth_pb2, auth_pb2_grpc, job_pb2, job_pb2_grpc
from tests.support.jobs import one_time, recurring
from tests.support.processes import Proc, base_env, free_port, start
from tests.support.services import REDIS_TEST_URL, mysql, new_database

pytestmark = pytest.mark.e2e


@pytest.fixture
def fresh_db() -> object:
    name, url = new_database()
    from db import migrate

    migrate.upgrade(url)
    yield url
    mysql(f"DROP DATABASE IF EXISTS {name}")


def sign_up(port: int) -> tuple[grpc.Channel, tuple[tuple[str, str]]]:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    auth = auth_pb2_grpc.AuthServiceStub(channel)
    resp = auth.SignUp(
        auth_pb2.SignUpRequest(username="e2e", email="e2e@example.com", password="correct horse battery")
    )
    return channel, (("authorization", f"Bearer {resp.access_token}"),)


async def rows(url: str, statement: str) -> list[tuple[Any, ...]]:
    db = Database.from_url(url, 1)
    try:
        async with db.transaction() as conn:
            return [tuple(r) for r in (await conn.execute(text(statement))).all()]
    finally:
        await db.close()


def flush_redis() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL)
    client.flushdb()
    client.close()


def start_scheduler(database_url: str, procs: list[Proc]) -> tuple[int, dict[str, str], Proc]:
    """A clean Redis keyspace and one ready scheduler; returns its port, env and process."""
    flush_redis()
    port = free_port()
    env = base_env(database_url, REDIS_TEST_URL, JOBMESH_SCHEDULER_PORT=str(port))
    scheduler = start("scheduler_svc.main", env, "scheduler")
    procs.append(scheduler)
    scheduler.read_until("scheduler_svc ready")
    return port, env, scheduler


@pytest.mark.timeout(120)
def test_killed_worker_run_becomes_lost_and_is_retried_elsewhere(fresh_db: str, procs: list[Proc]) -> None:
    port, env, scheduler = start_scheduler(fresh_db, procs)
    doomed = start("worker_svc.main", {**env, "JOBMESH_WORKER_ID": "doomed"}, "doomed worker")
    procs.append(doomed)
    doomed.read_until("worker_svc ready")
    channel, md = sign_up(port)
    jobs = job_pb2_grpc.JobServiceStub(channel)
    marker = uuid.uuid4().hex
    script = f"import time\nprint('attempt', flush=True)\ntime.sleep(3)  # {marker}\n"
    job = jobs.CreateJob(
        job_pb2.CreateJobRequest(
            job=one_time(datetime.now(UTC), script=script, retry_policy=job_pb2.RetryPolicy(max_attempts=2))
        ),
        metadata=md,
    )

    def run_rows() -> list[tuple[Any, ...]]:
        return asyncio.run(
            rows(
                fresh_db,
                f"SELECT attempt, status, worker_id, error FROM job_run WHERE job_id='{job.id}' ORDER BY attempt",
            )
        )

    deadline = time.monotonic() + 30
    while not any(r[1] == "RUNNING" for r in run_rows()):
        assert time.monotonic() < deadline, run_rows()
        time.sleep(0.1)
    os.kill(doomed.popen.pid, signal.SIGKILL)
    doomed.popen.wait()

    def run_directories() -> list[Path]:
        tmp = Path(tempfile.gettempdir())
        scripts = [p for p in tmp.glob("jobmesh-*/run-*/job.py") if marker in p.read_text()]
        workdirs = list(tmp.glob(f"jobmesh-{doomed.popen.pid}-*"))
        cgroups = list(Path("/sys/fs/cgroup").glob(f"**/jobmesh-{doomed.popen.pid}-*"))
        return scripts + workdirs + cgroups

    deadline = time.monotonic() + 5
    while run_directories():  # its fork server killed the script, removed its directory and cgroups
        assert time.monotonic() < deadline, run_directories()
        time.sleep(0.1)
    rescuer = start("worker_svc.main", {**env, "JOBMESH_WORKER_ID": "rescuer"}, "rescuer worker")
    procs.append(rescuer)
    deadline = time.monotonic() + 60
    while True:
        current = run_rows()
        if len(current) == 2 and current[1][1] == "SUCCEEDED":
            break
        assert time.monotonic() < deadline, current
        time.sleep(0.2)
    first, second = current
    assert first[1] == "LOST" and first[2] == "doomed" and "stopped heartbeating" in str(first[3])
    assert second[2] == "rescuer"
    assert not [r for r in run_rows() if r[1] == "RUNNING"]
    channel.close()
    for proc in (rescuer, scheduler):
        assert proc.terminate()[0] == 0


@pytest.mark.timeout(200)
def test_two_schedulers_fire_every_slot_exactly_once(fresh_db: str, procs: list[Proc]) -> None:
    flush_redis()
    ports = [free_port(), free_port()]
    schedulers = []
    for i, port in enumerate(ports):
        env = base_env(fresh_db, REDIS_TEST_URL, JOBMESH_SCHEDULER_PORT=str(port))
        proc = start("scheduler_svc.main", env, f"scheduler-{i}")
        procs.append(proc)
        schedulers.append(proc)
    for proc in schedulers:
        proc.read_until("scheduler_svc ready")
    worker = start("worker_svc.main", {**base_env(fresh_db, REDIS_TEST_URL), "JOBMESH_WORKER_SLOTS": "8"}, "worker")
    procs.append(worker)
    worker.read_until("worker_svc ready")
    channel, md = sign_up(ports[0])
    jobs = job_pb2_grpc.JobServiceStub(channel)
    every_second = jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring("* * * * * *", script="pass")), metadata=md)
    for i in range(200):
        jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring("* * * * *", script="pass", name=f"m{i}")), metadata=md)
    started = datetime.now(UTC)
    time.sleep(70)
    for job_id in [every_second.id]:
        jobs.PauseJob(job_pb2.PauseJobRequest(id=job_id), metadata=md)
    stopped = datetime.now(UTC)
    channel.close()
    time.sleep(3)
    for proc in schedulers:
        assert proc.terminate()[0] == 0
    assert worker.terminate()[0] == 0

    all_rows = asyncio.run(rows(fresh_db, "SELECT job_id, scheduled_at, attempt, status FROM job_run"))
    slots = Counter((r[0], r[1]) for r in all_rows if r[2] == 1)
    duplicates = [k for k, n in slots.items() if n > 1]
    assert not duplicates, f"slots fired twice: {duplicates[:5]}"
    seconds = sorted(s for (j, s) in slots if j == every_second.id)
    assert len(seconds) >= 68
    gaps = [b - a for a, b in itertools.pairwise(seconds)]
    assert all(g == timedelta(seconds=1) for g in gaps), "no second missing"
    # 70 s always cross at least one minute boundary: that minute fired all 200 jobs, once each.
    per_minute = Counter(s for (j, s) in slots if j != every_second.id)
    boundary = (started + timedelta(minutes=1)).replace(second=0, microsecond=0, tzinfo=None)  # raw rows: naive UTC
    assert per_minute.get(boundary) == 200, per_minute
    # (A minute that passed while the 200 were being created fired those created before it.)
    assert all(n == 200 for minute, n in per_minute.items() if minute >= boundary), per_minute
    assert stopped > started
    assert all(r[3] in ("SUCCEEDED", "SKIPPED", "QUEUED", "PENDING", "RUNNING") for r in all_rows)


@pytest.mark.timeout(120)
def test_stopping_worker_hands_back_what_it_cannot_finish(fresh_db: str, procs: list[Proc]) -> None:
    port, env, scheduler = start_scheduler(fresh_db, procs)
    # The first worker runs unsandboxed and so sees a marker file of the host's: the
    # script is slow there only; the second (sandboxed) worker's run cannot see it.
    first = start(
        "worker_svc.main",
        {**env, "JOBMESH_WORKER_ID": "first", "JOBMESH_SHUTDOWN_GRACE_SECONDS": "1", "JOBMESH_WORKER_SANDBOX": "off"},
        "first",
    )
    procs.append(first)
    first.read_until("worker_svc ready")
    channel, md = sign_up(port)
    jobs = job_pb2_grpc.JobServiceStub(channel)
    quick = jobs.CreateJob(job_pb2.CreateJobRequest(job=one_time(datetime.now(UTC), script="pass")), metadata=md)
    marker = f"/tmp/jobmesh-handback-{os.getpid()}-{time.time_ns()}"
    open(marker, "w").close()
    script = f"import os, time\nif os.path.exists({marker!r}):\n    time.sleep(60)\n"
    slow = jobs.CreateJob(job_pb2.CreateJobRequest(job=one_time(datetime.now(UTC), script=script)), metadata=md)

    def status_of(job_id: str) -> list[tuple[Any, ...]]:
        return asyncio.run(rows(fresh_db, f"SELECT status, worker_id, attempt FROM job_run WHERE job_id='{job_id}'"))

    deadline = time.monotonic() + 30
    while status_of(slow.id)[0][0] != "RUNNING" or status_of(quick.id)[0][0] != "SUCCEEDED":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    code, took = first.terminate()
    assert code == 0 and took < 10
    assert status_of(slow.id) == [("QUEUED", "", 1)], "handed back, not failed"
    second = start("worker_svc.main", {**env, "JOBMESH_WORKER_ID": "second"}, "second")
    procs.append(second)
    deadline = time.monotonic() + 30
    while status_of(slow.id)[0][0] != "SUCCEEDED":
        assert time.monotonic() < deadline, status_of(slow.id)
        time.sleep(0.2)
    assert status_of(slow.id) == [("SUCCEEDED", "second", 1)]
    os.unlink(marker)
    channel.close()
    for proc in (second, scheduler):
        assert proc.terminate()[0] == 0


@pytest.mark.timeout(180)
def test_worker_killed_between_batch_flushes_loses_no_result(fresh_db: str, procs: list[Proc]) -> None:
    """Results are written in batches; a worker killed with some of them unwritten
    leaves those runs RUNNING, so they become LOST and are retried - a run never
    counts as done without its result row."""
    port, env, scheduler = start_scheduler(fresh_db, procs)
    victim = start("worker_svc.main", {**env, "JOBMESH_WORKER_ID": "victim", "JOBMESH_WORKER_SLOTS": "8"}, "victim")
    procs.append(victim)
    victim.read_until("worker_svc ready")
    channel, md = sign_up(port)
    jobs = job_pb2_grpc.JobServiceStub(channel)
    policy = job_pb2.RetryPolicy(max_attempts=3, strategy=job_pb2.RETRY_STRATEGY_FIXED_BACKOFF)
    ids = [
        jobs.CreateJob(
            job_pb2.CreateJobRequest(
                job=one_time(datetime.now(UTC), script="import time\ntime.sleep(0.2)", retry_policy=policy)
            ),
            metadata=md,
        ).id
        for _ in range(40)
    ]

    def statuses() -> list[tuple[Any, ...]]:
        return asyncio.run(rows(fresh_db, "SELECT job_id, attempt, status FROM job_run"))

    deadline = time.monotonic() + 60
    while sum(1 for r in statuses() if r[2] == "SUCCEEDED") < 5:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(victim.popen.pid, signal.SIGKILL)
    victim.popen.wait()
    rescuer = start("worker_svc.main", {**env, "JOBMESH_WORKER_ID": "rescuer", "JOBMESH_WORKER_SLOTS": "8"}, "rescuer")
    procs.append(rescuer)
    deadline = time.monotonic() + 90
    while True:
        current = statuses()
        done = {r[0] for r in current if r[2] == "SUCCEEDED"}
        if done == set(ids) and not [r for r in current if r[2] in ("PENDING", "QUEUED", "RUNNING")]:
            break
        assert time.monotonic() < deadline, Counter(r[2] for r in current)
        time.sleep(0.2)
    per_job = Counter(r[0] for r in current if r[2] == "SUCCEEDED")
    assert set(per_job.values()) == {1}, "each job succeeded exactly once"
    lost = [r for r in current if r[2] == "LOST"]
    assert lost, "the kill caught runs in flight"
    for job_id, attempt, _ in lost:
        assert any(r[0] == job_id and r[1] == attempt + 1 for r in current), "every LOST attempt was retried"
    channel.close()
    for proc in (rescuer, scheduler):
        assert proc.terminate()[0] == 0
