"""gRPC status → the project's exceptions (core/errors.py): the inverse of the server's
one table (core.rpc.ERROR_TABLE), with the ErrorInfo reason and the BadRequest field
violations read back from the status details."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from core import errors
from core.rpc import ERROR_TABLE

_DETAILS_KEY = "grpc-status-details-bin"

ERROR_OF_STATUS: dict[grpc.StatusCode, type[errors.JobmeshError]] = {
    **{code: cls for cls, code in ERROR_TABLE.items()},
    # The call did not finish in time: as a dependency that is down, worth a retry.
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.Unavailable,
}


def error_from_status(
    code: grpc.StatusCode, message: str, trailing_metadata: Iterable[tuple[str, Any]] | None
) -> errors.JobmeshError:
    """The exception a failed call stands for: its class from ``code``, its reason and
    field violations from the ``google.rpc.Status`` details in ``trailing_metadata``."""
    reason = ""
    violations: list[errors.FieldViolation] = []
    for key, value in trailing_metadata or ():
        if key != _DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        message = status.message or message
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations += [errors.FieldViolation(v.field, v.description) for v in bad.field_violations]
    cls = ERROR_OF_STATUS.get(code, errors.Internal)
    error: errors.JobmeshError
    if cls is errors.InvalidArgument:
        error = errors.InvalidArgument(violations, message or None)
    else:
        error = cls(message or code.name.lower().replace("_", " "))
    if reason:
        error.reason = reason
    return error


def error_from_rpc(exc: grpc.RpcError) -> errors.JobmeshError:
    """``error_from_status`` for a raised ``grpc.aio.AioRpcError``."""
    return error_from_status(exc.code(), exc.details() or "", exc.trailing_metadata())
