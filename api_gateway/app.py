"""The gateway's aiohttp application: one generic handler per route, a long-lived
gRPC channel per backend, a deadline on every call, errors as
``{"error": {"code", "status", "message", "details"}}``."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

from api_gateway.console import add_console
from api_gateway.openapi import build_openapi
from api_gateway.routes import ROUTES, HttpCall, Route
from api_gateway.translate import error_body, header, rpc_error_body, to_json, violations_body
from core.errors import FieldViolation, InvalidArgument
from core.peers import FORWARDED_FOR, Network, client_address, forwarded_for
from core.rpc import create_channel
from gen.jobmesh.v1 import auth_pb2_grpc, health_pb2_grpc, job_pb2_grpc, run_pb2, run_pb2_grpc

log = logging.getLogger(__name__)

DEADLINE_SECONDS = 15.0
WATCH_DEADLINE_SECONDS = 25 * 3600.0  # longer than the longest allowed run
# A job's script may be 256 KiB, JSON escaping can double it; the rest of a body is small.
MAX_BODY_BYTES = 1024 * 1024 + 2 * 256 * 1024
# A job body nests two deep; the bound keeps every later walk over a body from recursing far.
MAX_JSON_DEPTH = 32

SWAGGER_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>jobmesh API</title>
<link rel="stylesheet" href="/swagger/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/swagger/static/swagger-ui-bundle.js"></script>
<script src="/swagger/static/swagger-ui-standalone-preset.js"></script>
<script>
window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
  persistAuthorization: true, presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
  layout: "StandaloneLayout"});
</script></body></html>
"""


@dataclass
class Backends:
    scheduler: grpc.aio.Channel
    monitor: grpc.aio.Channel

    def stubs(self) -> dict[str, Any]:
        return {
            "auth": auth_pb2_grpc.AuthServiceStub(self.scheduler),
            "jobs": job_pb2_grpc.JobServiceStub(self.scheduler),
            "runs": run_pb2_grpc.RunServiceStub(self.scheduler),
            "health": health_pb2_grpc.HealthServiceStub(self.monitor),
        }

    async def close(self) -> None:
        await self.scheduler.close()
        await self.monitor.close()


def connect(scheduler_addr: str, monitor_addr: str) -> Backends:
    return Backends(create_channel(scheduler_addr), create_channel(monitor_addr))


def _json_error(status: int, code: grpc.StatusCode, message: str) -> web.Response:
    return web.json_response(error_body(status, code, message, []), status=status)


def _invalid(error: InvalidArgument) -> web.Response:
    if not error.violations:
        return _json_error(400, grpc.StatusCode.INVALID_ARGUMENT, error.message)
    return web.json_response(violations_body(error), status=400)


async def _read_body(request: web.Request) -> Any:
    if not request.can_read_body:
        return None
    raw = await request.read()
    if not raw:
        return None
    too_deep = FieldViolation("body", f"must not nest arrays and objects more than {MAX_JSON_DEPTH} deep")
    try:
        body = json.loads(raw)
    except RecursionError:
        raise InvalidArgument(too_deep) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(FieldViolation("body", f"is not valid JSON: {exc}")) from exc
    if _nesting(body) > MAX_JSON_DEPTH:
        raise InvalidArgument(too_deep)
    return body


def _nesting(value: Any) -> int:
    """How deep arrays and objects nest in ``value``, counted without recursion."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            break
        pending.extend((child, depth + 1) for child in children)
    return deepest


TRUSTED_PROXIES: web.AppKey[tuple[Network, ...]] = web.AppKey("trusted_proxies")


def _metadata(request: web.Request) -> list[tuple[str, str]]:
    # The client's address, for the scheduler's login throttling. What the client
    # says in X-Forwarded-For counts only when it comes through a proxy the gateway
    # trusts; the scheduler in turn believes it only from the gateway.
    trusted: tuple[Network, ...] = request.app.get(TRUSTED_PROXIES, ())
    hops = forwarded_for(request.headers.items()) if trusted else []
    metadata: list[tuple[str, str]] = [(FORWARDED_FOR, client_address(request.remote or "", hops, trusted))]
    auth = header(request.headers, "Authorization")
    if auth:
        metadata.append(("authorization", auth))
    request_id = header(request.headers, "X-Request-Id")
    if request_id:
        metadata.append(("x-request-id", request_id))
    return metadata


async def follow_logs(request: web.Request, stubs: dict[str, Any]) -> web.StreamResponse:
    """``…/logs?follow=true``: RunService.WatchRun as Server-Sent Events.

    Events: ``run`` (the run, first and whenever its status changes; the last one is
    final) and ``chunk`` (``{"stream": "LOG_STREAM_STDOUT", "data": "..."}``).
    """
    call = stubs["runs"].WatchRun(
        run_pb2.WatchRunRequest(run_id=request.match_info["runId"], job_id=request.match_info["jobId"]),
        metadata=_metadata(request),
        timeout=WATCH_DEADLINE_SECONDS,
    )
    response: web.StreamResponse | None = None
    try:
        async for event in call:
            if response is None:
                response = web.StreamResponse(
                    headers={
                        "Content-Type": "text/event-stream",
                        "Cache-Control": "no-cache",
                        "X-Accel-Buffering": "no",
                    }
                )
                await response.prepare(request)
            kind = event.WhichOneof("event")
            data = to_json(event.run if kind == "run" else event.chunk)
            await response.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())
    except grpc.aio.AioRpcError as err:
        if response is None:
            status, payload = rpc_error_body(err)
            return web.json_response(payload, status=status)
        _, payload = rpc_error_body(err)
        await response.write(f"event: error\ndata: {json.dumps(payload)}\n\n".encode())
    finally:
        call.cancel()
    if response is None:
        return web.json_response(error_body(500, grpc.StatusCode.INTERNAL, "empty stream", []), status=500)
    await response.write_eof()
    return response


def make_handler(route: Route, stubs: dict[str, Any]) -> Any:
    method = getattr(stubs[route.service], route.rpc)

    async def handle(request: web.Request) -> web.StreamResponse:
        if route.rpc == "GetRunLogs" and request.query.get("follow", "").lower() in ("1", "true", "yes"):
            return await follow_logs(request, stubs)
        try:
            body = await _read_body(request) if route.body is not None else None
            call = HttpCall(request.match_info, request.query, body, request.headers)
            message = route.build(call)
        except (ValueError, TypeError, OverflowError) as exc:  # a value the message type cannot hold
            return web.json_response(error_body(400, grpc.StatusCode.INVALID_ARGUMENT, str(exc)[:300], []), status=400)
        except InvalidArgument as exc:
            return _invalid(exc)
        try:
            response = await method(message, metadata=_metadata(request), timeout=DEADLINE_SECONDS)
        except grpc.aio.AioRpcError as err:
            status, payload = rpc_error_body(err)
            return web.json_response(payload, status=status)
        data = to_json(response)
        if route.aliases is not None:
            data = route.aliases(data)
        status = route.status
        if route.rpc == "GetHealth" and data.get("status") == "HEALTH_STATUS_NOT_SERVING":
            status = 503
        return web.json_response(data, status=status)

    return handle


@web.middleware
async def errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error leaves as the JSON error body, never HTML or a stack trace."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPRequestEntityTooLarge:
        return _json_error(413, grpc.StatusCode.RESOURCE_EXHAUSTED, f"request body larger than {MAX_BODY_BYTES} bytes")
    except web.HTTPNotFound:
        return _json_error(404, grpc.StatusCode.NOT_FOUND, f"no route for {request.path}")
    except web.HTTPMethodNotAllowed:
        return _json_error(405, grpc.StatusCode.UNIMPLEMENTED, f"{request.method} not allowed on {request.path}")
    except web.HTTPException:
        raise
    except InvalidArgument as exc:  # e.g. a header that cannot be passed on
        return _invalid(exc)
    except Exception:
        log.exception("gateway error on %s %s", request.method, request.path)
        return _json_error(500, grpc.StatusCode.INTERNAL, "internal error")


def cors_middleware(origins: list[str]) -> Any:
    allowed = set(origins)

    @web.middleware
    async def cors(request: web.Request, handler: Any) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        ok = origin is not None and ("*" in allowed or origin in allowed)
        if request.method == "OPTIONS" and ok:
            response: web.StreamResponse = web.Response(status=204)
        else:
            response = await handler(request)
        if ok and origin is not None:
            response.headers["Access-Control-Allow-Origin"] = "*" if "*" in allowed else origin
            response.headers["Access-Control-Allow-Headers"] = (
                "Authorization, Content-Type, Idempotency-Key, X-Request-Id"
            )
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
            response.headers["Vary"] = "Origin"
        return response

    return cors


def build_app(
    backends: Backends, cors_origins: list[str] | None = None, trusted_proxies: tuple[Network, ...] = ()
) -> web.Application:
    middlewares = [errors_middleware]
    if cors_origins:
        middlewares.insert(0, cors_middleware(cors_origins))
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=middlewares)
    app[TRUSTED_PROXIES] = trusted_proxies
    stubs = backends.stubs()
    for route in ROUTES:
        app.router.add_route(route.method, route.path, make_handler(route, stubs))
    spec = build_openapi()

    async def openapi(_: web.Request) -> web.Response:
        return web.json_response(spec)

    async def swagger(_: web.Request) -> web.Response:
        return web.Response(text=SWAGGER_HTML, content_type="text/html")

    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/swagger", swagger)
    app.router.add_get("/swagger/", swagger)
    app.router.add_static("/swagger/static", Path(swagger_ui_path))
    add_console(app)
    return app
