"""aiohttp server helpers shared by the HTTP processes."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


async def start_http(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start ``app`` on host:port (0 picks a free port); returns the runner and bound port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    server: Any = site._server
    bound = port
    if server is not None and getattr(server, "sockets", None):
        bound = server.sockets[0].getsockname()[1]
    return runner, bound


def metrics_response() -> web.Response:
    """The process's Prometheus registry in the text exposition format."""
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def metrics_app() -> web.Application:
    """This process's own Prometheus instruments (e.g. grpc_server_handled_total)."""

    async def metrics(_: web.Request) -> web.Response:
        return metrics_response()

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app
