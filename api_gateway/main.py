"""api_gateway entry point: HTTP on the gateway port."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from core.http import start_http
from core.logs import configure_logging
from core.process import wait_for_shutdown_signal
from core.settings import Settings

log = logging.getLogger("api_gateway")


def build_app() -> web.Application:
    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "SERVING"})

    app = web.Application(client_max_size=2 * 1024 * 1024)
    app.router.add_get("/api/health", health)
    return app


async def serve(settings: Settings) -> None:
    runner, port = await start_http(build_app(), settings.server.host, settings.server.gateway_port)
    print(f"api_gateway ready http=http://{settings.server.host}:{port}", flush=True)
    await wait_for_shutdown_signal()
    await runner.shutdown()
    await runner.cleanup()


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings.server.log_level, settings.server.log_json, "gateway")
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
