"""JSON ↔ proto translation for the REST surface, and gRPC status → HTTP.

The REST body of a message *is* its proto JSON mapping (lowerCamelCase). On top of
it, the earlier HTTP API's spellings are accepted: CamelCase enum values
("Recurring", "ExponentialBackoff"), unprefixed ones ("RECURRING"), and
timestamps without a zone (read as UTC).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Mapping
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from grpc_status import rpc_status

from core import http
from core.errors import FieldViolation, InvalidArgument, Violations

# gRPC status → HTTP, as grpc-gateway maps them.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NAIVE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")
_PARSE_FIELD = re.compile(r"Failed to parse (\w+) field")
_PARSE_WHERE = re.compile(r"( at [\w.]+)?\.*$")  # json_format's " at Job.retryPolicy.maxAttempts.."
_MAX_ECHOED_KEY = 100
# Far above any bearer token; the scheduler refuses metadata beyond 8 KiB as a whole.
MAX_HEADER_CHARS = 4096


def enum_prefix(enum: Any) -> str:
    return str(enum.values[0].name).removesuffix("UNSPECIFIED")


@functools.cache  # descriptors live as long as the process; callers only read
def enum_aliases(enum: Any) -> dict[str, str]:
    """Every accepted spelling → the proto value name."""
    prefix = enum_prefix(enum)
    out: dict[str, str] = {}
    for value in enum.values:
        if value.number == 0:
            out[value.name] = value.name  # what an unset field reads as
            continue
        short = value.name.removeprefix(prefix)
        camel = "".join(part.capitalize() for part in short.split("_"))
        for spelling in (value.name, short, camel, short.lower()):
            out[spelling] = value.name
    return out


@functools.cache
def _fields_by_name(descriptor: Any) -> dict[str, Any]:
    """A message's fields by their JSON and their proto names."""
    return {f.json_name: f for f in descriptor.fields} | {f.name: f for f in descriptor.fields}


def _enum_problem(value: Any, enum: Any) -> str:
    """Why ``value`` names no value of ``enum`` ("" when it names one; a number the enum
    lacks is the server's to refuse, as it is over gRPC)."""
    aliases = enum_aliases(enum)
    if isinstance(value, str) and value in aliases:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return ""
    choices = sorted(v for k, v in aliases.items() if k == v and not v.endswith("UNSPECIFIED"))
    friendly = sorted({k for k in aliases if k[:1].isupper() and k[1:2].islower()})
    return f"must be one of {', '.join(friendly + choices)}"


def _normalize(data: dict[str, Any], descriptor: Any, path: str, v: Violations) -> dict[str, Any]:
    """``data`` with every key the field's JSON name and the earlier API's spellings
    turned into the proto JSON mapping's; unknown keys and values of the wrong shape
    are recorded in ``v`` (as grpc-gateway refuses unknown fields)."""
    fields = _fields_by_name(descriptor)
    out: dict[str, Any] = {}
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            v.add(f"{path}{key[:_MAX_ECHOED_KEY]}", f"is not a field of {descriptor.name}")
            continue
        name = f"{path}{field.json_name}"
        if field.type == FieldDescriptor.TYPE_ENUM and value is not None:
            problem = _enum_problem(value, field.enum_type)
            if problem:
                v.add(name, problem)
                continue
            value = enum_aliases(field.enum_type).get(value, value) if isinstance(value, str) else value
        elif field.type == FieldDescriptor.TYPE_MESSAGE and value is not None:
            full = field.message_type.full_name
            if full == "google.protobuf.Timestamp" and isinstance(value, str) and _NAIVE_TIME.match(value):
                value = value + "Z"
            elif (
                full not in ("google.protobuf.Timestamp", "google.protobuf.FieldMask")
                and not field.message_type.GetOptions().map_entry
            ):
                if not isinstance(value, dict):
                    v.add(name, "must be a JSON object")
                    continue
                value = _normalize(value, field.message_type, f"{name}.", v)
        out[field.json_name] = value
    return out


def parse(data: Any, message: Message, field: str = "body", consumed: Collection[str] = ()) -> Message:
    """JSON object → proto message; a bad value or an unknown field is a 400 naming
    the field. ``consumed``: top-level keys the caller reads itself."""
    if not isinstance(data, dict):
        raise InvalidArgument(FieldViolation(field, "must be a JSON object"))
    v = Violations()
    normalized = _normalize({k: x for k, x in data.items() if k not in consumed}, message.DESCRIPTOR, "", v)
    v.raise_if_any()
    try:
        json_format.ParseDict(normalized, message)
    except json_format.ParseError as exc:
        text = str(exc)
        name = ".".join(_PARSE_FIELD.findall(text)) or field
        description = _PARSE_WHERE.sub("", text.rsplit(" field: ", 1)[-1])
        raise InvalidArgument(FieldViolation(name, description[:300])) from exc
    return message


def to_json(message: Message) -> dict[str, Any]:
    result: dict[str, Any] = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    return result


def error_body(http_status: int, code: grpc.StatusCode, message: str, details: list[dict[str, Any]]) -> dict[str, Any]:
    return http.error_body(http_status, code.name, message, details)


def rpc_error_body(err: grpc.aio.AioRpcError) -> tuple[int, dict[str, Any]]:
    code = err.code()
    status = HTTP_STATUS.get(code, 500)
    details: list[dict[str, Any]] = []
    try:
        rich = rpc_status.from_call(err)
    except ValueError:
        rich = None
    if rich is not None:
        for detail in rich.details:
            details.append(json_format.MessageToDict(detail))
    return status, error_body(status, code, err.details() or code.name, details)


def violations_body(error: InvalidArgument) -> dict[str, Any]:
    detail = {
        "@type": http.BAD_REQUEST_TYPE,
        "fieldViolations": [{"field": v.field, "description": v.description} for v in error.violations],
    }
    return error_body(400, grpc.StatusCode.INVALID_ARGUMENT, error.message, [detail])


def header(headers: Mapping[str, str], name: str) -> str:
    """A request header the gateway passes on (as gRPC metadata, or into a request
    field), "" when absent: printable ASCII, as gRPC metadata must be, and short."""
    value = headers.get(name, "")
    if value and not (len(value) <= MAX_HEADER_CHARS and value.isascii() and value.isprintable()):
        raise InvalidArgument(FieldViolation(name, f"must be at most {MAX_HEADER_CHARS} printable ASCII characters"))
    return value


def snake(name: str) -> str:
    return _CAMEL.sub("_", name).lower()
