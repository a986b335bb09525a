"""gRPC plumbing shared by every process.

- ``ERROR_TABLE``: the one mapping from the project's errors to gRPC status codes,
  with ``google.rpc`` details (ErrorInfo always, BadRequest for field violations).
- ``ServiceInterceptor``: the interceptor chain in one class - request id and
  principal into context, authentication, error translation, per-RPC metrics.
- ``create_server`` / ``create_channel``: factories with health, reflection,
  message-size limits and keepalive configured the same way everywhere.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, NamedTuple, NoReturn

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import SERVICE_NAME as HEALTH_SERVICE_NAME
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from core import auth, errors, logs, metrics, validation

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
ERROR_DOMAIN = "jobmesh.dev"
KEEPALIVE_MS = 30_000

ERROR_TABLE: dict[type[errors.JobmeshError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Conflict: grpc.StatusCode.ABORTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    errors.Internal: grpc.StatusCode.INTERNAL,
}

# Paths that need no bearer token.
_ALWAYS_PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

# A status travels in trailers, which a client refuses beyond its metadata limit
# (8 KiB by default, RESOURCE_EXHAUSTED): what an error says is cut to fit, the
# message to a length whose percent-encoding fits, the violations to a byte budget.
_MAX_STATUS_MESSAGE_CHARS = 300
_MAX_VIOLATION_FIELD_CHARS = 120
_MAX_VIOLATION_DESCRIPTION_CHARS = 300
_VIOLATIONS_BUDGET_BYTES = 2400


def status_code_of(error: errors.JobmeshError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    return grpc.StatusCode.INTERNAL


def to_grpc_status(error: errors.JobmeshError) -> grpc.Status:
    code = status_code_of(error)
    details: list[any_pb2.Any] = []
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN))
    details.append(info)
    if isinstance(error, errors.InvalidArgument) and error.violations:
        packed = any_pb2.Any()
        packed.Pack(error_details_pb2.BadRequest(field_violations=_fitting(error.violations)))
        details.append(packed)
    message = error.message[:_MAX_STATUS_MESSAGE_CHARS] if code != grpc.StatusCode.INTERNAL else "internal error"
    status = status_pb2.Status(code=code.value[0], message=message, details=details)
    result: grpc.Status = rpc_status.to_status(status)
    return result


def _fitting(violations: list[errors.FieldViolation]) -> list[error_details_pb2.BadRequest.FieldViolation]:
    out: list[error_details_pb2.BadRequest.FieldViolation] = []
    budget = _VIOLATIONS_BUDGET_BYTES
    for v in violations:
        item = error_details_pb2.BadRequest.FieldViolation(
            field=v.field[:_MAX_VIOLATION_FIELD_CHARS], description=v.description[:_MAX_VIOLATION_DESCRIPTION_CHARS]
        )
        budget -= item.ByteSize()
        if budget < 0:
            break
        out.append(item)
    return out


def _internal_status() -> grpc.Status:
    result: grpc.Status = rpc_status.to_status(status_pb2.Status(code=code_pb2.INTERNAL, message="internal error"))
    return result


Authenticate = Callable[[str, Sequence[tuple[str, Any]]], Awaitable[Any]]


class ServiceInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Context, authentication, error translation and metrics for every RPC.

    ``await authenticate(method, metadata)`` returns the principal (stored in
    ``principal_var``) or raises ``Unauthenticated``; methods in ``public`` skip it.
    """

    def __init__(self, authenticate: Authenticate | None = None, public: Sequence[str] = ()) -> None:
        self._authenticate = authenticate
        self._public = frozenset(public)
        # method -> (the registered handler, its wrapper): wrapped once, not per call.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        if handler is None or method.startswith(_ALWAYS_PUBLIC_PREFIXES):
            return handler
        wrapped = self._wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """Every kind of method is wrapped: one left unwrapped would skip authentication."""
        needs_auth = self._authenticate is not None and method not in self._public
        deserializer = _tolerant(handler.request_deserializer)
        serializer = handler.response_serializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_single_response(handler.unary_unary, method, needs_auth, _admit),
                request_deserializer=deserializer,
                response_serializer=serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_streamed_response(handler.unary_stream, method, needs_auth, _admit),
                request_deserializer=deserializer,
                response_serializer=serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_single_response(handler.stream_unary, method, needs_auth, _admit_each),
                request_deserializer=deserializer,
                response_serializer=serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_streamed_response(handler.stream_stream, method, needs_auth, _admit_each),
                request_deserializer=deserializer,
                response_serializer=serializer,
            )
        raise TypeError(f"{method}: a method handler of no known kind")

    async def _enter(self, method: str, context: grpc.aio.ServicerContext, needs_auth: bool) -> None:
        """Request id and principal into context (raises Unauthenticated)."""
        metadata = context.invocation_metadata() or ()
        request_id = ""
        for key, value in metadata:
            if key == "x-request-id":
                request_id = str(value)
                break
        logs.request_id_var.set(request_id or os.urandom(16).hex())
        if needs_auth and self._authenticate is not None:
            auth.principal_var.set(await self._authenticate(method, metadata))

    async def _fail(
        self,
        method: str,
        context: grpc.aio.ServicerContext,
        exc: BaseException,
        observe: metrics.Observe,
        started: float,
    ) -> NoReturn:
        """Counts a call that failed and ends it: a project error or a bug aborts it
        with its status (details included); an abort or a cancellation goes on up."""
        status: grpc.Status | None = None
        if isinstance(exc, errors.JobmeshError):
            code = status_code_of(exc)
            _log_error(method, exc, code)
            status = to_grpc_status(exc)
        elif isinstance(exc, grpc.aio.AbortError):
            code = context.code() or grpc.StatusCode.UNKNOWN
        elif not isinstance(exc, Exception):  # cancelled, or the client went away
            code = grpc.StatusCode.CANCELLED
        else:
            log.error("unhandled error in %s", method, exc_info=exc)
            code, status = grpc.StatusCode.INTERNAL, _internal_status()
        observe(code, time.perf_counter() - started)
        if status is None:
            raise exc
        await context.abort_with_status(status)
        raise AssertionError("abort_with_status() ends the call by raising")

    # One RPC: context and principal in, errors translated, metrics out. Written
    # out in each wrapper (no context manager): this runs on every call.
    def _wrap_single_response(self, inner: Any, method: str, needs_auth: bool, admit: Callable[[Any], Any]) -> Any:
        observe = metrics.rpc_observer(*_split(method))

        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            try:
                await self._enter(method, context, needs_auth)
                response = await inner(admit(request), context)
            except BaseException as exc:
                await self._fail(method, context, exc, observe, started)
            observe(grpc.StatusCode.OK, time.perf_counter() - started)
            return response

        return handle

    def _wrap_streamed_response(self, inner: Any, method: str, needs_auth: bool, admit: Callable[[Any], Any]) -> Any:
        observe = metrics.rpc_observer(*_split(method))

        async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            try:
                await self._enter(method, context, needs_auth)
                async for item in inner(admit(request), context):
                    yield item
            except BaseException as exc:
                await self._fail(method, context, exc, observe, started)
            observe(grpc.StatusCode.OK, time.perf_counter() - started)

        return handle


class _Malformed:
    """What a request that does not decode as its message type arrives as."""


_MALFORMED = _Malformed()


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """The deserializer, answering bytes that are not a valid message with _MALFORMED:
    raising here would end the call as UNKNOWN with the decoder's text."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError:
            return _MALFORMED

    return deserialize


def _admit(request: Any) -> Any:
    """``request``, unless it did not decode or its fields break validation.check_request."""
    if request is _MALFORMED:
        raise errors.InvalidArgument([], "malformed request message")
    if isinstance(request, Message):
        validation.validate_request(request)
    return request


async def _admit_each(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A client's stream of requests, each admitted as it arrives."""
    async for request in requests:
        yield _admit(request)


def _split(method: str) -> tuple[str, str]:
    _, service, name = method.split("/", 2)
    return service, name


def _log_error(method: str, exc: errors.JobmeshError, code: grpc.StatusCode) -> None:
    if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE):
        log.error("%s failed: %s", method, exc, exc_info=exc)
    else:
        log.debug("%s -> %s: %s", method, code.name, exc)


class RpcServer(NamedTuple):
    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer


ServiceSpec = tuple[Callable[[Any, grpc.aio.Server], None], Any, str]


async def create_server(
    addr: str,
    services: Sequence[ServiceSpec] = (),
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> RpcServer:
    """Start a gRPC server on ``addr`` ("host:0" picks a free port).

    Registers the given services (``(add_XServicer_to_server, servicer, full name)``),
    grpc.health.v1 (every service SERVING) and server reflection.
    """
    server = grpc.aio.server(
        interceptors=list(interceptors),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
            # Accept the keepalive pings create_channel() sends (every 30 s, also
            # when idle); the default policy answers them with GOAWAY too_many_pings.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", KEEPALIVE_MS // 2),
            ("grpc.http2.max_ping_strikes", 0),
        ],
    )
    for add, servicer, _ in services:
        add(servicer, server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = [name for _, _, name in services]
    reflection.enable_server_reflection([*names, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME], server)
    try:
        port = server.add_insecure_port(addr)
    except RuntimeError as exc:
        raise errors.Unavailable(f"cannot bind {addr}: {exc}") from exc
    await server.start()
    for name in ["", *names]:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RpcServer(server, port, health)


async def stop_server(rpc: RpcServer, grace: float) -> None:
    """Health NOT_SERVING first (load balancers drain), then finish in-flight RPCs."""
    await rpc.health.enter_graceful_shutdown()
    await rpc.server.stop(grace)


def create_channel(addr: str) -> grpc.aio.Channel:
    """A long-lived client channel with keepalive and the server's message limits."""
    return grpc.aio.insecure_channel(
        addr,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", KEEPALIVE_MS),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        ],
    )
