"""Shared fixtures: a real MariaDB database and Redis keyspace per test session,
cleaned around every test; an in-process scheduler on an ephemeral port."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from redis.asyncio import Redis
from sqlalchemy import text

from core.settings import (
    AuthSettings,
    DatabaseSettings,
    RedisSettings,
    SchedulerSettings,
    ServerSettings,
    Settings,
    WorkerSettings,
)
from db import migrate
from db.engine import Database
from gen.jobmesh.v1 import auth_pb2, auth_pb2_grpc, job_pb2_grpc, run_pb2_grpc

MYSQL_ROOT = os.environ.get("JOBMESH_TEST_MYSQL", "mysql+asyncmy://root@127.0.0.1:3306")
REDIS_TEST_URL = os.environ.get("JOBMESH_TEST_REDIS", "redis://127.0.0.1:6379/13")
TABLES = ["run_output", "job_run", "job_schedule_state", "job_definition", "refresh_tokens", "users",
          "login_throttle"]  # fmt: skip


def mysql(statement: str) -> None:
    subprocess.run(["mysql", "-uroot", "-h127.0.0.1", "-e", statement], check=True)


def new_database() -> tuple[str, str]:
    name = f"jobmesh_test_{uuid.uuid4().hex[:10]}"
    mysql(f"CREATE DATABASE {name}")
    return name, f"{MYSQL_ROOT}/{name}"


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    name, url = new_database()
    migrate.upgrade(url)
    yield url
    mysql(f"DROP DATABASE IF EXISTS {name}")


def make_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for tests: explicit values, never the developer's environment."""
    groups: dict[str, dict[str, Any]] = {
        "database": {"database_url": database_url, "db_pool_size": 5},
        "redis": {"redis_url": REDIS_TEST_URL},
        "auth": {"jwt_secret": "test-secret-" + "x" * 32, "admin_email": "", "admin_password": ""},
        "server": {"scheduler_port": 0, "scheduler_metrics_port": 0, "monitor_grpc_port": 0, "monitor_http_port": 0,
                   "gateway_port": 0, "shutdown_grace_seconds": 1.0},
        "scheduler": {"requeue_after_seconds": 2.0, "misfire_grace_seconds": 5.0},
        "worker": {"heartbeat_seconds": 0.2, "heartbeat_ttl_seconds": 2.0, "slots": 2},
    }  # fmt: skip
    for key, value in overrides.items():
        group, _, name = key.partition("__")
        groups[group][name] = value
    return Settings(
        database=DatabaseSettings(**groups["database"]),
        redis=RedisSettings(**groups["redis"]),
        auth=AuthSettings(**groups["auth"]),
        server=ServerSettings(**groups["server"]),
        scheduler=SchedulerSettings(**groups["scheduler"]),
        worker=WorkerSettings(**groups["worker"]),
    )


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_TEST_URL)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture
async def db(mysql_url: str) -> AsyncIterator[Database]:
    database = Database.from_url(mysql_url, 5)
    async with database.transaction() as conn:
        for table in TABLES:
            await conn.execute(text(f"DELETE FROM {table}"))
    yield database
    await database.close()


@pytest.fixture
def settings(mysql_url: str) -> Settings:
    return make_settings(mysql_url)


class Client:
    """gRPC stubs plus a bearer token."""

    def __init__(self, channel: grpc.aio.Channel, token: str = "", user_id: str = "") -> None:
        self.channel = channel
        self.token = token
        self.user_id = user_id
        self.auth = auth_pb2_grpc.AuthServiceStub(channel)
        self.jobs = job_pb2_grpc.JobServiceStub(channel)
        self.runs = run_pb2_grpc.RunServiceStub(channel)

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def as_user(self, token: str, user_id: str = "") -> Client:
        return Client(self.channel, token, user_id)


class Mesh:
    """An in-process scheduler (no loops unless started) and a channel to it."""

    def __init__(self, app: Any, channel: grpc.aio.Channel) -> None:
        self.app = app
        self.channel = channel
        self.anon = Client(channel)
        self._n = 0

    async def user(self, role: str = "USER") -> Client:
        from core.auth import Role

        self._n += 1
        name = f"user{self._n}-{uuid.uuid4().hex[:6]}"
        resp = await self.anon.auth.SignUp(
            auth_pb2.SignUpRequest(username=name, email=f"{name}@example.com", password="correct horse battery")
        )
        if role != "USER":
            await self.app.accounts._users.set_role(resp.user_id, Role(role))
            resp = await self.anon.auth.Login(
                auth_pb2.LoginRequest(email=f"{name}@example.com", password="correct horse battery")
            )
        return Client(self.channel, resp.access_token, resp.user_id)


@pytest.fixture
async def mesh(db: Database, redis: Redis, settings: Settings) -> AsyncIterator[Mesh]:
    from scheduler_svc.main import SchedulerApp

    app = SchedulerApp(settings)
    port = await app.start(loops=False)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield Mesh(app, channel)
    await channel.close()
    await app.stop()


async def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` (sync or async) until truthy; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)
