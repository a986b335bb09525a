"""monitor_svc entry point: gRPC HealthService (+ grpc.health.v1, reflection) and
HTTP /metrics, /api/health on the monitor port."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.errors import Unimplemented
from core.http import start_http
from core.logs import configure_logging
from core.process import wait_for_shutdown_signal
from core.redis_client import create_redis
from core.rpc import ServiceInterceptor, create_server, stop_server
from core.settings import Settings
from db.engine import Database
from gen.jobmesh.v1 import health_pb2_grpc

log = logging.getLogger("monitor_svc")


class HealthServicer(health_pb2_grpc.HealthServiceServicer):
    """GetHealth and GetMetrics answer UNIMPLEMENTED until the monitor issue lands."""

    async def GetHealth(self, request: Any, context: Any) -> Any:
        raise Unimplemented("GetHealth is not available yet")

    async def GetMetrics(self, request: Any, context: Any) -> Any:
        raise Unimplemented("GetMetrics is not available yet")


async def check_dependencies(db: Database, redis: object) -> dict[str, object]:
    components: dict[str, object] = {}
    started = time.perf_counter()
    try:
        await db.ping()
        components["database"] = {"status": "SERVING", "latencyMs": round((time.perf_counter() - started) * 1000, 2)}
    except Exception as exc:
        components["database"] = {"status": "NOT_SERVING", "detail": str(exc)}
    started = time.perf_counter()
    try:
        await redis.ping()  # type: ignore[attr-defined]
        components["redis"] = {"status": "SERVING", "latencyMs": round((time.perf_counter() - started) * 1000, 2)}
    except Exception as exc:
        components["redis"] = {"status": "NOT_SERVING", "detail": str(exc)}
    return components


def build_http(db: Database, redis: object) -> web.Application:
    async def health(_: web.Request) -> web.Response:
        components = await check_dependencies(db, redis)
        ok = all(c["status"] == "SERVING" for c in components.values())  # type: ignore[index]
        return web.json_response(
            {"status": "SERVING" if ok else "NOT_SERVING", "components": components}, status=200 if ok else 503
        )

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/api/health", health)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(settings: Settings) -> None:
    db = Database.from_url(settings.database.database_url, 2)
    redis = create_redis(settings.redis.redis_url)
    rpc = await create_server(
        f"{settings.server.host}:{settings.server.monitor_grpc_port}",
        [(health_pb2_grpc.add_HealthServiceServicer_to_server, HealthServicer(), "jobmesh.v1.HealthService")],
        [ServiceInterceptor()],
    )
    runner, http_port = await start_http(build_http(db, redis), settings.server.host, settings.server.monitor_http_port)
    print(
        f"monitor_svc ready grpc={settings.server.host}:{rpc.port} http=http://{settings.server.host}:{http_port}",
        flush=True,
    )
    await wait_for_shutdown_signal()
    await stop_server(rpc, settings.server.shutdown_grace_seconds)
    await runner.cleanup()
    await redis.aclose()
    await db.close()


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings.server.log_level, settings.server.log_json, "monitor")
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
