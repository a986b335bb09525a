"""The interceptor: principal and request id into context, errors into statuses
(with details), every call counted by its final code, unary and streaming alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from core import auth, errors, logs
from core.rpc import ServiceInterceptor, create_server, stop_server
from gen.jobmesh.v1 import job_pb2
from tests.support.polling import wait_for

SERVICE = "test.Probe"


def _behave(request: bytes) -> bytes:
    """b"ok" answers with the principal and request id; other requests raise."""
    if request == b"invalid":
        raise errors.InvalidArgument(errors.FieldViolation("job.name", "must not be empty"))
    if request == b"missing":
        raise errors.NotFound("no such thing")
    if request == b"bug":
        raise RuntimeError("a bug with a secret in its message")
    return f"{auth.principal_var.get()}|{logs.request_id_var.get()}".encode()


async def _unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return _behave(request)


async def _stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"first"
    if request == b"hang":
        await asyncio.sleep(60)
    yield _behave(request)


async def _collect(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    return b",".join([_behave(request) async for request in requests])


async def _chat(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    async for request in requests:
        yield _behave(request)


def _add(servicer: Any, server: grpc.aio.Server) -> None:
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary),
            "Stream": grpc.unary_stream_rpc_method_handler(_stream),
            "Collect": grpc.stream_unary_rpc_method_handler(_collect),
            "Chat": grpc.stream_stream_rpc_method_handler(_chat),
        },
    )
    server.add_generic_rpc_handlers((handler,))


async def _authenticate(method: str, metadata: Any) -> str:
    token = dict(metadata).get("authorization", "")
    if token != "Bearer good":
        raise errors.Unauthenticated("bad token")
    return "alice"


def _handled(method: str, code: str) -> float:
    labels = {"grpc_service": SERVICE, "grpc_method": method, "grpc_code": code}
    return REGISTRY.get_sample_value("grpc_server_handled_total", labels) or 0.0


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    rpc = await create_server("127.0.0.1:0", [(_add, None, SERVICE)], [ServiceInterceptor(_authenticate)])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{rpc.port}") as ch:
        yield ch
    await stop_server(rpc, 0)


GOOD = (("authorization", "Bearer good"),)


@pytest.mark.parametrize("kind", ["Unary", "Stream"])
async def test_errors_become_statuses_with_details_and_are_counted(channel: grpc.aio.Channel, kind: str) -> None:
    path = f"/{SERVICE}/{kind}"
    call = channel.unary_unary(path) if kind == "Unary" else channel.unary_stream(path)

    async def invoke(request: bytes, metadata: Any = GOOD) -> list[bytes]:
        result = call(request, metadata=metadata)
        if kind == "Unary":
            return [await result]
        return [item async for item in result]

    before = {
        code: _handled(kind, code) for code in ("OK", "INVALID_ARGUMENT", "NOT_FOUND", "INTERNAL", "UNAUTHENTICATED")
    }
    answer = await invoke(b"ok", (*GOOD, ("x-request-id", "req-42")))
    assert answer[-1] == b"alice|req-42"
    generated = (await invoke(b"ok"))[-1].split(b"|")[1]
    assert len(generated) == 32 and generated != b"req-42"  # a fresh id when the client sends none

    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await invoke(b"invalid")
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(bad.value)
    assert status is not None
    violations = error_details_pb2.BadRequest()
    assert any(d.Unpack(violations) for d in status.details)
    assert [(v.field, v.description) for v in violations.field_violations] == [("job.name", "must not be empty")]

    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await invoke(b"missing")
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND and missing.value.details() == "no such thing"

    with pytest.raises(grpc.aio.AioRpcError) as bug:
        await invoke(b"bug")
    assert bug.value.code() is grpc.StatusCode.INTERNAL and bug.value.details() == "internal error"

    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await invoke(b"ok", ())
    assert anonymous.value.code() is grpc.StatusCode.UNAUTHENTICATED

    after = {code: _handled(kind, code) for code in before}
    assert {code: after[code] - before[code] for code in before} == {
        "OK": 2,
        "INVALID_ARGUMENT": 1,
        "NOT_FOUND": 1,
        "INTERNAL": 1,
        "UNAUTHENTICATED": 1,
    }


@pytest.mark.parametrize("kind", ["Collect", "Chat"])
async def test_methods_that_take_a_stream_are_guarded_too(channel: grpc.aio.Channel, kind: str) -> None:
    path = f"/{SERVICE}/{kind}"
    call = channel.stream_unary(path) if kind == "Collect" else channel.stream_stream(path)

    async def invoke(requests: list[bytes], metadata: Any = GOOD) -> list[bytes]:
        result = call(iter(requests), metadata=metadata)
        if kind == "Collect":
            return [await result]
        return [item async for item in result]

    before = _handled(kind, "UNAUTHENTICATED")
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await invoke([b"ok"], ())
    assert anonymous.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert _handled(kind, "UNAUTHENTICATED") == before + 1

    answer = await invoke([b"ok", b"ok"], (*GOOD, ("x-request-id", "req-7")))
    assert b",".join(answer) == b"alice|req-7,alice|req-7"
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await invoke([b"ok", b"invalid"])
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_stream_the_client_cancels_is_counted_as_cancelled(channel: grpc.aio.Channel) -> None:
    before = _handled("Stream", "CANCELLED")
    call = channel.unary_stream(f"/{SERVICE}/Stream")(b"hang", metadata=GOOD)
    assert await call.read() == b"first"
    call.cancel()
    await wait_for(lambda: _handled("Stream", "CANCELLED") == before + 1, timeout=5)


TYPED = "test.Typed"
A_UUID = "01890a5d-ac96-774b-bcce-b302099a8057"


async def _echo(request: Any, context: grpc.aio.ServicerContext) -> Any:
    return request


async def _verbose(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    violations = [errors.FieldViolation(f"field{i}" * 20, "é" * 1000) for i in range(300)]
    raise errors.InvalidArgument(violations, "界" * 5000)


def _add_typed(servicer: Any, server: grpc.aio.Server) -> None:
    echo = grpc.unary_unary_rpc_method_handler(
        _echo,
        request_deserializer=job_pb2.GetJobRequest.FromString,
        response_serializer=job_pb2.GetJobRequest.SerializeToString,
    )
    handler = grpc.method_handlers_generic_handler(
        TYPED, {"Echo": echo, "Verbose": grpc.unary_unary_rpc_method_handler(_verbose)}
    )
    server.add_generic_rpc_handlers((handler,))


async def test_requests_are_checked_before_a_handler_sees_them() -> None:
    rpc = await create_server("127.0.0.1:0", [(_add_typed, None, TYPED)], [ServiceInterceptor()])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{rpc.port}") as ch:
            echo = ch.unary_unary(f"/{TYPED}/Echo")  # raw bytes in and out
            good = job_pb2.GetJobRequest(id=A_UUID).SerializeToString()
            assert await echo(good) == good
            with pytest.raises(grpc.aio.AioRpcError) as garbage:
                await echo(b"\x0a\x05ab")  # a length past the end
            assert garbage.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert garbage.value.details() == "malformed request message"
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await echo(job_pb2.GetJobRequest(id="x\x00").SerializeToString())
            assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            status = rpc_status.from_call(bad.value)
            assert status is not None
            found = error_details_pb2.BadRequest()
            assert any(d.Unpack(found) for d in status.details)
            assert [v.field for v in found.field_violations] == ["id"]
            # An error saying more than trailers can carry is cut, not turned into RESOURCE_EXHAUSTED.
            with pytest.raises(grpc.aio.AioRpcError) as verbose:
                await ch.unary_unary(f"/{TYPED}/Verbose")(b"")
            assert verbose.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            status = rpc_status.from_call(verbose.value)
            assert status is not None
            assert any(d.Unpack(found) for d in status.details) and 0 < len(found.field_violations) < 300
    finally:
        await stop_server(rpc, 0)
