"""The engine (a scheduler and a worker: dispatch, start, live output, cancel over
pub/sub, results) against stores that ask for credentials: a private redis-server with
a password (``redis://:pw@``), with an ACL user (``redis://user:pw@``), over TLS
(``rediss://`` with the CA setting), and a MariaDB user with a password and only the
privileges jobmesh needs on its own database (migrations included)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from redis.exceptions import AuthenticationError, ConnectionError, ResponseError

from core.redis_client import create_redis
from core.settings import RedisSettings, Settings
from db import migrate
from gen.jobmesh.v1 import job_pb2, run_pb2
from scheduler_svc.main import SchedulerApp
from tests.support.jobs import one_time
from tests.support.polling import wait_for
from tests.support.redis_servers import redis_server, tls_files
from tests.support.rpc import Client
from tests.support.scheduler import InProcessScheduler
from tests.support.services import make_settings, mysql
from tests.support.workers import running_worker

pytestmark = pytest.mark.timeout(120)

PASSWORD = "p@ss:w0rd/x"  # spelled %-encoded in a URL
ENCODED = "p%40ss%3Aw0rd%2Fx"


@asynccontextmanager
async def scheduler_on(settings: Settings) -> AsyncIterator[InProcessScheduler]:
    app = SchedulerApp(settings)
    port = await app.start(loops=False)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield InProcessScheduler(app, channel)
    finally:
        await channel.close()
        await app.stop()


async def run_status(user: Client, job_id: str, status: int) -> run_pb2.Run | None:
    page = await user.runs.ListRuns(run_pb2.ListRunsRequest(job_id=job_id), metadata=user.md)
    return next((r for r in page.runs if r.status == status), None)


async def assert_engine_works(settings: Settings) -> None:
    """A job runs through a worker with its output, and a running one is cancelled."""
    async with scheduler_on(settings) as scheduler:
        user = await scheduler.user()
        scheduler.app.start_loops()
        async with running_worker(scheduler.app.settings, f"w-{uuid.uuid4().hex[:6]}"):
            done = await user.jobs.CreateJob(
                job_pb2.CreateJobRequest(job=one_time(datetime.now(UTC), script="print('hello')")), metadata=user.md
            )
            run = await wait_for(lambda: run_status(user, done.id, run_pb2.RUN_STATUS_SUCCEEDED), timeout=30)
            logs = await user.runs.GetRunLogs(run_pb2.GetRunLogsRequest(run_id=run.id), metadata=user.md)
            assert logs.stdout == "hello\n"
            slow = await user.jobs.CreateJob(
                job_pb2.CreateJobRequest(
                    job=one_time(datetime.now(UTC), script="import time\nprint('on', flush=True)\ntime.sleep(60)")
                ),
                metadata=user.md,
            )
            running = await wait_for(lambda: run_status(user, slow.id, run_pb2.RUN_STATUS_RUNNING), timeout=30)
            await user.runs.CancelRun(run_pb2.CancelRunRequest(run_id=running.id), metadata=user.md)
            cancelled = await wait_for(lambda: run_status(user, slow.id, run_pb2.RUN_STATUS_CANCELLED), timeout=20)
            assert cancelled.error == "cancelled"


def with_redis(settings: Settings, url: str, ca_certs: str = "") -> Settings:
    return replace(settings, redis=RedisSettings(redis_url=url, redis_cluster=False, redis_ssl_ca_certs=ca_certs))


async def refused(settings: RedisSettings, *errors: type[Exception]) -> None:
    client = create_redis(settings)
    try:
        with pytest.raises(errors):
            await client.ping()
    finally:
        await client.aclose()


async def test_a_password_in_the_url(db: object, settings: Settings, tmp_path: Path) -> None:
    with redis_server(tmp_path, "--requirepass", PASSWORD, cli=("--no-auth-warning", "-a", PASSWORD)) as port:
        await refused(RedisSettings(redis_url=f"redis://127.0.0.1:{port}/2"), AuthenticationError, ResponseError)
        await assert_engine_works(with_redis(settings, f"redis://:{ENCODED}@127.0.0.1:{port}/2"))


async def test_an_acl_user_with_only_the_mesh_keys(db: object, settings: Settings, tmp_path: Path) -> None:
    acl = ("--user", "default", "off", "--user", "jobmesh", "on", f">{PASSWORD}", "~jobmesh:*", "&jobmesh:*", "+@all")
    with redis_server(tmp_path, *acl, cli=("--no-auth-warning", "--user", "jobmesh", "--pass", PASSWORD)) as port:
        await refused(RedisSettings(redis_url=f"redis://jobmesh:wrong@127.0.0.1:{port}/0"), AuthenticationError)
        await assert_engine_works(with_redis(settings, f"redis://jobmesh:{ENCODED}@127.0.0.1:{port}/0"))


async def test_tls_with_the_ca_setting(db: object, settings: Settings, tmp_path: Path) -> None:
    tls = tls_files(tmp_path / "tls")
    with redis_server(tmp_path, "--requirepass", PASSWORD, cli=("--no-auth-warning", "-a", PASSWORD), tls=tls) as port:
        url = f"rediss://:{ENCODED}@127.0.0.1:{port}/0"
        await refused(RedisSettings(redis_url=url), ConnectionError)  # the system's CAs do not know this one
        await assert_engine_works(with_redis(settings, url, ca_certs=str(tls.ca)))


@pytest.fixture
def mariadb_user() -> Iterator[str]:
    """A database and a user with a password that may do, on that database only, what
    jobmesh does (tables, indexes, partitions; rows)."""
    suffix = uuid.uuid4().hex[:10]
    name, user, password = f"jobmesh_user_{suffix}", f"jm_{suffix}", f"pw-{suffix}"
    mysql(f"CREATE DATABASE {name}")
    mysql(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
    try:
        mysql(
            "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, DROP, INDEX, REFERENCES"
            f" ON `{name}`.* TO '{user}'@'%'"
        )
        yield f"mysql+asyncmy://{user}:{password}@127.0.0.1:3306/{name}"
    finally:
        mysql(f"DROP USER IF EXISTS '{user}'@'%'")
        mysql(f"DROP DATABASE IF EXISTS {name}")


async def test_a_mariadb_user_with_only_its_database_migrates_and_runs_the_engine(
    mariadb_user: str, tmp_path: Path
) -> None:
    await asyncio.to_thread(migrate.upgrade, mariadb_user)
    with redis_server(tmp_path, "--requirepass", PASSWORD, cli=("--no-auth-warning", "-a", PASSWORD)) as port:
        await assert_engine_works(with_redis(make_settings(mariadb_user), f"redis://:{ENCODED}@127.0.0.1:{port}/0"))
