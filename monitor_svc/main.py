"""monitor_svc entry point: gRPC HealthService (+ grpc.health.v1 and reflection) and,
on the HTTP port, /metrics (Prometheus), /api/health and /api/health/metrics (JSON)."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from grpc_health.v1 import health_pb2 as grpc_health_pb2

from core import convert
from core.domain import HealthStatus
from core.http import metrics_response, start_http
from core.logs import configure_logging
from core.loops import run_loop
from core.process import run_service, wait_for_shutdown_signal
from core.redis_client import create_redis
from core.rpc import RpcServer, ServiceInterceptor, create_server, stop_server
from core.settings import Settings
from db.engine import Database
from db.repositories.stats import StatsRepository
from monitor_svc.health import MeshHealth
from monitor_svc.health_servicer import SERVICE, HealthServicer, to_json
from monitor_svc.metrics import MetricsCollector

log = logging.getLogger("monitor_svc")
HEALTH_POLL_SECONDS = 5.0


def build_http(health: MeshHealth, collector: MetricsCollector) -> web.Application:
    async def api_health(_: web.Request) -> web.Response:
        report = await health.check()
        status = 503 if report.status is HealthStatus.NOT_SERVING else 200
        return web.json_response(to_json(convert.health_report_to_proto(report)), status=status)

    async def api_metrics(_: web.Request) -> web.Response:
        return web.json_response(to_json(convert.figures_to_proto(await collector.refresh())))

    async def metrics(_: web.Request) -> web.Response:
        try:
            await collector.refresh()
        except Exception:  # the process's own series are still worth serving
            log.warning("metrics refresh failed", exc_info=True)
        return metrics_response()

    app = web.Application()
    app.router.add_get("/api/health", api_health)
    app.router.add_get("/api/health/metrics", api_metrics)
    app.router.add_get("/metrics", metrics)
    return app


async def reflect_health(rpc: RpcServer, health: MeshHealth) -> int:
    """grpc.health.v1 says what GetHealth says: NOT_SERVING while the database or Redis is down."""
    report = await health.check()
    status = (
        grpc_health_pb2.HealthCheckResponse.NOT_SERVING
        if report.status is HealthStatus.NOT_SERVING
        else grpc_health_pb2.HealthCheckResponse.SERVING
    )
    for name in ("", SERVICE):
        await rpc.health.set(name, status)
    return 0


async def serve(settings: Settings) -> None:
    db = Database.from_url(settings.database.database_url, 2)
    redis = create_redis(settings.redis)
    health = MeshHealth(db, redis, settings.worker.heartbeat_ttl_seconds)
    collector = MetricsCollector(health, StatsRepository(db))
    rpc = await create_server(
        f"{settings.server.host}:{settings.server.monitor_grpc_port}",
        [HealthServicer(health, collector).spec()],
        [ServiceInterceptor()],
    )
    runner, http_port = await start_http(
        build_http(health, collector), settings.server.host, settings.server.monitor_http_port
    )
    stop = asyncio.Event()
    poller = asyncio.create_task(run_loop("health", lambda: reflect_health(rpc, health), HEALTH_POLL_SECONDS, stop))
    print(
        f"monitor_svc ready grpc={settings.server.host}:{rpc.port} http=http://{settings.server.host}:{http_port}",
        flush=True,
    )
    await wait_for_shutdown_signal()
    stop.set()
    await stop_server(rpc, settings.server.shutdown_grace_seconds)
    await poller
    await runner.cleanup()
    await redis.aclose()
    await db.close()


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings.server.log_level, settings.server.log_json, "monitor")
    run_service(serve(settings))


if __name__ == "__main__":
    main()
