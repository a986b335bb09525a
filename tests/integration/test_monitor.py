"""The monitor's view: NOT_SERVING when the database or Redis is down; figures."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from redis.asyncio import Redis

from core import convert
from core.domain import Component, HealthReport, HealthStatus
from db.engine import Database
from gen.jobmesh.v1 import job_pb2
from monitor_svc.health import MeshHealth
from monitor_svc.health_servicer import to_json
from tests.support.jobs import one_time, recurring
from tests.support.polling import wait_for
from tests.support.scheduler import InProcessScheduler
from tests.support.services import make_settings
from tests.support.workers import running_worker


async def test_health_follows_its_dependencies(scheduler: InProcessScheduler) -> None:
    health = MeshHealth(scheduler.app.db, scheduler.app.redis, 10.0)
    report = await health.check()
    parts = {c.name: c.status for c in report.components}
    assert parts["database"] == HealthStatus.SERVING and parts["redis"] == HealthStatus.SERVING
    assert report.status == HealthStatus.DEGRADED and parts["workers"] == HealthStatus.DEGRADED, "no worker is alive"

    dead_db = Database.from_url("mysql+asyncmy://root@127.0.0.1:1/nowhere", 1)
    dead_redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        for db, redis, down in ((dead_db, scheduler.app.redis, "database"), (scheduler.app.db, dead_redis, "redis")):
            report = await MeshHealth(db, redis, 10.0).check()
            assert report.status == HealthStatus.NOT_SERVING
            assert {c.name: c.status for c in report.components}[down] == HealthStatus.NOT_SERVING
    finally:
        await dead_db.close()
        await dead_redis.aclose()


async def test_figures(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring()), metadata=user.md)
    await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=one_time(datetime.now(UTC))), metadata=user.md)
    await scheduler.app.dispatcher.tick()
    figures = await MeshHealth(scheduler.app.db, scheduler.app.redis, 10.0).figures()
    assert figures.jobs_by_state["ACTIVE"] == 2
    assert figures.runs_by_status["QUEUED"] == 1
    assert figures.queue_depths == {"default": 1}
    assert figures.oldest_pending_age_seconds >= 0


async def test_health_names_each_worker_running_without_sandbox(scheduler: InProcessScheduler, mysql_url: str) -> None:
    settings = make_settings(mysql_url, worker__executor="noop")
    health = MeshHealth(scheduler.app.db, scheduler.app.redis, 10.0)
    scheduler.app.start_loops()  # a live scheduler: only the workers decide the status

    def flagged(report: HealthReport) -> dict[str, Component]:
        return {c.name: c for c in report.components if c.name.startswith("worker:")}

    async def report_when(condition: Callable[[HealthReport], bool]) -> HealthReport | None:
        report = await health.check()
        return report if condition(report) else None

    async with running_worker(settings, "isolated-worker"):
        report = await wait_for(lambda: report_when(lambda r: r.status == HealthStatus.SERVING))
        assert not flagged(report)
        async with running_worker(settings, "bare-worker", sandboxed=False):
            report = await wait_for(lambda: report_when(lambda r: "worker:bare-worker" in flagged(r)))
        assert report.status == HealthStatus.DEGRADED
        assert list(flagged(report)) == ["worker:bare-worker"], "the sandboxed worker is not named"
        bare = flagged(report)["worker:bare-worker"]
        assert bare.status == HealthStatus.DEGRADED
        assert bare.detail == (
            "worker bare-worker: sandbox off (JOBMESH_WORKER_SANDBOX=off): scripts run without isolation"
            " — development only"
        )
        body = to_json(convert.health_report_to_proto(report))  # what GetHealth and /api/health answer
        assert {"name": bare.name, "status": "HEALTH_STATUS_DEGRADED", "detail": bare.detail} in body["components"]
        # The unsandboxed worker stopped: the mesh is healthy again.
        report = await wait_for(lambda: report_when(lambda r: not flagged(r)))
        assert report.status == HealthStatus.SERVING, report
