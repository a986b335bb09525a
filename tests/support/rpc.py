"""gRPC clients for the tests and checks on the statuses they get back."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gen.jobmesh.v1 import auth_pb2_grpc, job_pb2_grpc, run_pb2_grpc


class Client:
    """gRPC stubs plus a bearer token."""

    def __init__(self, channel: grpc.aio.Channel, token: str = "", user_id: str = "") -> None:
        self.channel = channel
        self.token = token
        self.user_id = user_id
        self.auth = auth_pb2_grpc.AuthServiceStub(channel)
        self.jobs = job_pb2_grpc.JobServiceStub(channel)
        self.runs = run_pb2_grpc.RunServiceStub(channel)

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def as_user(self, token: str, user_id: str = "") -> Client:
        return Client(self.channel, token, user_id)


def field_violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    """The BadRequest details of a failed call: field -> description."""
    status = rpc_status.from_call(err)
    out: dict[str, str] = {}
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.update({v.field: v.description for v in bad.field_violations})
    return out


async def expect_code(call: object, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    """Await ``call``, which must fail with ``code``; returns the error."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == code, info.value.details()
    return info.value
