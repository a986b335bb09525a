"""Shared fixtures: a real MariaDB database and Redis keyspace per test session,
cleaned around every test; an in-process scheduler on an ephemeral port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import cast

import grpc
import pytest
from redis.asyncio import Redis
from sqlalchemy import text

from core.redis_client import create_redis
from core.settings import RedisSettings, Settings
from db import migrate
from db.engine import Database
from scheduler_svc.main import SchedulerApp
from tests.support.scheduler import InProcessScheduler
from tests.support.services import REDIS_TEST_CLUSTER, REDIS_TEST_URL, TABLES, make_settings, mysql, new_database


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    name, url = new_database()
    migrate.upgrade(url)
    yield url
    mysql(f"DROP DATABASE IF EXISTS {name}")


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    # A RedisCluster when the tests run against a cluster: the same commands, key by key.
    client = cast(Redis, create_redis(RedisSettings(redis_url=REDIS_TEST_URL, redis_cluster=REDIS_TEST_CLUSTER)))
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


@pytest.fixture
async def scheduler(db: Database, redis: Redis, settings: Settings) -> AsyncIterator[InProcessScheduler]:
    app = SchedulerApp(settings)
    port = await app.start(loops=False)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield InProcessScheduler(app, channel)
    await channel.close()
    await app.stop()
