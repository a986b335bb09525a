"""aiohttp server helpers shared by the HTTP processes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

# gRPC status names of the errors aiohttp answers before a request reaches an application.
_PROTOCOL_STATUS = {
    400: "INVALID_ARGUMENT",
    413: "RESOURCE_EXHAUSTED",
    431: "RESOURCE_EXHAUSTED",
    504: "DEADLINE_EXCEEDED",
}
# The header a parser error quotes (b'Name: value'); the value is never echoed (it may be a token).
_QUOTED_HEADER = re.compile(r"b'([!#$%&*+.^_`|~0-9A-Za-z-]+):")
# Where a parser error starts quoting the request (which may hold a token): its reason is what precedes.
_QUOTE_START = re.compile(r"[:'\"\n]")
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"


def error_body(http_status: int, status: str, message: str, details: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The error body of every HTTP answer of the mesh: ``{"error": {"code", "status", "message", "details"}}``."""
    return {"error": {"code": http_status, "status": status, "message": message, "details": list(details)}}


class _JsonErrorHandler(RequestHandler):
    """aiohttp's connection handler, answering what never reaches the application (a
    header its parser refuses, a request line too long, an error past every
    middleware) with the JSON error body instead of plain text."""

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp's: a response has begun, the connection is broken
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        details: list[dict[str, Any]] = []
        if status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
            text = "internal error" if status == 500 else f"HTTP {status}"
        else:
            said = str(getattr(exc, "message", "") or "")
            reason = _QUOTE_START.split(said, maxsplit=1)[0].strip()
            self.logger.debug("malformed request from %s: %s", request.remote, reason)
            text = f"malformed HTTP request: {reason}" if reason else "malformed HTTP request"
            header = _QUOTED_HEADER.search(said)
            # The part of the request at fault: a header by name, else the URL or the request as a whole.
            part = header.group(1) if header else "url" if "url" in reason.lower() else "request"
            violation = {"field": part, "description": reason or "is malformed"}
            details.append({"@type": BAD_REQUEST_TYPE, "fieldViolations": [violation]})
        name = _PROTOCOL_STATUS.get(status, "INVALID_ARGUMENT" if status < 500 else "INTERNAL")
        response = web.json_response(error_body(status, name, text, details), status=status)
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class _JsonErrorRunner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        return _JsonErrorServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            **plain._kwargs,
        )


async def start_http(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start ``app`` on host:port (0 picks a free port); returns the runner and bound port.
    Requests aiohttp refuses before ``app`` sees them are answered with ``error_body``."""
    runner = _JsonErrorRunner(app, access_log=None, handle_signals=False)
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
