"""api_gateway entry point: the REST surface on the gateway port."""

from __future__ import annotations

import logging

from api_gateway.app import build_app, connect
from core.http import start_http
from core.logs import configure_logging
from core.peers import parse_networks
from core.process import run_service, wait_for_shutdown_signal
from core.settings import Settings

log = logging.getLogger("api_gateway")


async def serve(settings: Settings) -> None:
    s = settings.server
    backends = connect(s.scheduler_addr, s.monitor_addr)
    origins = [o.strip() for o in s.cors_origins.split(",") if o.strip()]
    app = build_app(backends, origins, parse_networks(s.gateway_trusted_proxies))
    runner, port = await start_http(app, s.host, s.gateway_port)
    print(
        f"api_gateway ready http=http://{s.host}:{port} console=http://{s.host}:{port}/ "
        f"swagger=http://{s.host}:{port}/swagger",
        flush=True,
    )
    await wait_for_shutdown_signal()
    await runner.shutdown()
    await runner.cleanup()
    await backends.close()


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings.server.log_level, settings.server.log_json, "gateway")
    run_service(serve(settings))


if __name__ == "__main__":
    main()
