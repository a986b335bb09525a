"""Fixtures of the integration tests beyond tests/conftest.py's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest

from api_gateway.app import build_app, connect
from core.http import start_http
from core.rpc import ServiceInterceptor, create_server, stop_server
from db.repositories.stats import StatsRepository
from gen.jobmesh.v1 import health_pb2_grpc
from monitor_svc.health import MeshHealth
from monitor_svc.health_servicer import HealthServicer
from monitor_svc.metrics import MetricsCollector
from tests.support.inputs import Stack
from tests.support.scheduler import InProcessScheduler


@pytest.fixture
async def stack(scheduler: InProcessScheduler) -> AsyncIterator[Stack]:
    health = MeshHealth(scheduler.app.db, scheduler.app.redis, 10.0)
    servicer = HealthServicer(health, MetricsCollector(health, StatsRepository(scheduler.app.db)))
    monitor = await create_server(
        "127.0.0.1:0",
        [(health_pb2_grpc.add_HealthServiceServicer_to_server, servicer, "jobmesh.v1.HealthService")],
        [ServiceInterceptor()],
    )
    assert scheduler.app.rpc is not None
    backends = connect(f"127.0.0.1:{scheduler.app.rpc.port}", f"127.0.0.1:{monitor.port}")
    runner, port = await start_http(build_app(backends), "127.0.0.1", 0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{monitor.port}")
    async with aiohttp.ClientSession() as http:
        yield Stack(scheduler, channel, f"http://127.0.0.1:{port}", http)
    await channel.close()
    await runner.cleanup()
    await backends.close()
    await stop_server(monitor, 0)
