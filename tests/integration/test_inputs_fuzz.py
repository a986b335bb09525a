"""Generated and mutated requests against every gRPC method and every REST route:
never INTERNAL / UNKNOWN / 5xx, an INVALID_ARGUMENT always names a field, and a
refused request stores nothing.

Requests are drawn from each request message's descriptor (every field type;
unknown enum numbers; timestamps beyond the calendar; huge, odd and control-laden
strings; ids of real jobs and runs), from valid requests with fields overwritten,
and as raw bytes (random, or a valid message with bytes spliced in). Examples are
drawn first, then sent (hypothesis runs outside the event loop serving the scheduler).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api_gateway.routes import ROUTES, Route
from api_gateway.translate import enum_aliases
from gen.jobmesh.v1 import auth_pb2, health_pb2, job_pb2, run_pb2
from tests.support.inputs import Stack, stored
from tests.support.jobs import one_time, recurring
from tests.support.rpc import Client

SERVICES = [
    job_pb2.DESCRIPTOR.services_by_name["JobService"],
    run_pb2.DESCRIPTOR.services_by_name["RunService"],
    auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
    health_pb2.DESCRIPTOR.services_by_name["HealthService"],
]
FORBIDDEN_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
# Failed sign-ins are recorded (and throttled) on purpose: these may change state when refused.
BOOKKEEPING = {"Login", "Refresh", "ChangePassword"}
GRPC_EXAMPLES = {"structured": 40, "mutated": 15, "bytes": 10}  # per method
REST_EXAMPLES = 35  # per route
FIRST_SECOND, LAST_SECOND = -62_135_596_800, 253_402_300_799
BOUNDARY_LENGTHS = [0, 1, 36, 37, 63, 64, 65, 128, 129, 200, 201, 254, 255, 256, 1024, 5000]


@dataclass
class Known:
    """Real objects for ids and tokens, so that generated requests also get past the id checks."""

    job_ids: list[str]
    run_ids: list[str]
    user_ids: list[str]
    tokens: dict[str, str]
    templates: dict[str, Message] = field(default_factory=dict)


def odd_strings(known: Known) -> st.SearchStrategy[str]:
    ids = known.job_ids + known.run_ids + known.user_ids
    special = [
        "", " ", "UTC", "Europe/Berlin", "America/New_York", "../etc/passwd", "@daily", "*/5 * * * *",
        "0\t0 * * *", "61 * * * *", "print(1)", "def broken(:", "default", "a@example.com", "name\x00",
        "\x1b[2J", "rtl\u202eoverride", "line\u2028sep", "tab\there", "\x7f", "\x9b", "' OR 1=1 --",
        "%00", "{" + "0" * 32 + "}", "00000000-0000-0000-0000-000000000000", "👨\u200d👩\u200d👧", "\ufeff",
        "retry_policy.max_attempts", "name", "state", "job_type", "id",
    ]  # fmt: skip
    return st.one_of(
        st.sampled_from(ids + special),
        st.text(st.characters(codec="utf-8"), max_size=40),
        st.builds(lambda n, c: c * n, st.sampled_from(BOUNDARY_LENGTHS), st.sampled_from(["x", "é", "界", "\x00"])),
    )


INT32 = st.one_of(
    st.integers(-(2**31), 2**31 - 1),
    st.sampled_from([0, 1, -1, 2, 3, 10, 20, 100, 101, 500, 501, 86400, 86401, 2**31 - 1, -(2**31)]),
)
INT64 = st.one_of(INT32, st.integers(-(2**63), 2**63 - 1))
TIMESTAMPS = st.tuples(
    st.one_of(
        st.integers(FIRST_SECOND, LAST_SECOND),
        st.integers(-(2**63), 2**63 - 1),
        st.sampled_from([FIRST_SECOND - 1, FIRST_SECOND, LAST_SECOND, LAST_SECOND + 1, 0]),
        st.integers(0, 7 * 86400).map(lambda d: int(time.time()) + d - 86400 * 3),
    ),
    st.one_of(st.sampled_from([0, 999_999_999, 1_000_000_000, -1]), st.integers(-(2**31), 2**31 - 1)),
)


def value_strategy(fd: FieldDescriptor, known: Known, depth: int) -> st.SearchStrategy[Any]:
    if fd.type == FieldDescriptor.TYPE_STRING:
        return odd_strings(known)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=64 if fd.type == FieldDescriptor.TYPE_DOUBLE else 32)
    if fd.enum_type is not None:
        return st.one_of(st.sampled_from([v.number for v in fd.enum_type.values]), st.integers(-3, 12), INT32)
    if fd.message_type is not None:
        if fd.message_type.full_name == "google.protobuf.Timestamp":
            return TIMESTAMPS
        return message_recipe(fd.message_type, known, depth + 1)
    if fd.type in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
        return INT64
    return INT32


def field_strategy(fd: FieldDescriptor, known: Known, depth: int) -> st.SearchStrategy[Any]:
    single = value_strategy(fd, known, depth)
    return st.lists(single, max_size=40 if depth < 2 else 3) if fd.is_repeated else single


def message_recipe(descriptor: Descriptor, known: Known, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    if depth > 3:
        return st.just({})
    return st.fixed_dictionaries({}, optional={fd.name: field_strategy(fd, known, depth) for fd in descriptor.fields})


def fill(message: Message, recipe: dict[str, Any]) -> Message:
    """Set ``recipe``'s values on ``message`` (any value its field's type can hold)."""
    for name, value in recipe.items():
        fd = message.DESCRIPTOR.fields_by_name[name]
        if fd.message_type is not None and fd.message_type.full_name == "google.protobuf.Timestamp":
            stamp = getattr(message, name)
            stamp.seconds, stamp.nanos = value
        elif fd.message_type is not None and not fd.is_repeated:
            sub = getattr(message, name)
            sub.SetInParent()
            fill(sub, value)
        elif fd.is_repeated:
            del getattr(message, name)[:]
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)
    return message


def spliced(raw: bytes) -> st.SearchStrategy[bytes]:
    """A valid message with bytes cut out of it and others put in."""
    return st.tuples(st.integers(0, len(raw)), st.integers(0, 6), st.binary(max_size=8)).map(
        lambda t: raw[: t[0]] + t[2] + raw[t[0] + t[1] :]
    )


@dataclass(frozen=True)
class GrpcExample:
    service: str
    method: str
    token: str  # a role name of Known.tokens, or ""
    request: Message | bytes


def grpc_examples(known: Known) -> list[GrpcExample]:
    examples: list[GrpcExample] = []
    roles = st.sampled_from(["USER", "USER", "ADMIN", "VIEWER", ""])
    for service in SERVICES:
        for method in service.methods:
            cls = message_factory.GetMessageClass(method.input_type)
            template = known.templates.get(method.name, cls())
            name = service.full_name
            strategies: dict[str, st.SearchStrategy[GrpcExample]] = {
                "structured": st.builds(
                    lambda r, t, c=cls, m=method.name, s=name: GrpcExample(s, m, t, fill(c(), r)),
                    message_recipe(method.input_type, known),
                    roles,
                ),
                "mutated": st.builds(
                    lambda r, t, c=cls, base=template, m=method.name, s=name: GrpcExample(
                        s, m, t, fill(_copy(c, base), r)
                    ),
                    message_recipe(method.input_type, known).filter(lambda r: len(r) <= 2),
                    roles,
                ),
                "bytes": st.builds(
                    lambda raw, t, m=method.name, s=name: GrpcExample(s, m, t, raw),
                    st.one_of(st.binary(max_size=120), spliced(template.SerializeToString())),
                    roles,
                ),
            }
            for kind, strategy in strategies.items():
                examples.extend(draw(strategy, GRPC_EXAMPLES[kind]))
    return examples


def _copy(cls: type[Message], base: Message) -> Message:
    out = cls()
    out.CopyFrom(base)
    return out


def draw(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    found: list[Any] = []

    @settings(
        max_examples=count, deadline=None, database=None, suppress_health_check=list(HealthCheck), derandomize=True
    )
    @given(strategy)
    def collect(example: Any) -> None:
        found.append(example)

    collect()
    return found


@dataclass
class Tally:
    sent: int = 0
    by_code: dict[str, int] = field(default_factory=dict)
    covered: set[str] = field(default_factory=set)

    def count(self, what: str, code: str) -> None:
        self.sent += 1
        self.covered.add(what)
        self.by_code[code] = self.by_code.get(code, 0) + 1


def grpc_call(stack: Stack, example: GrpcExample) -> Callable[..., Any]:
    channel = stack.monitor if example.service == "jobmesh.v1.HealthService" else stack.scheduler.channel
    path = f"/{example.service}/{example.method}"
    streaming = example.method == "WatchRun"
    serializer = None if isinstance(example.request, bytes) else type(example.request).SerializeToString
    kind = channel.unary_stream if streaming else channel.unary_unary
    call: Callable[..., Any] = kind(path, request_serializer=serializer)
    return call


async def send_grpc(stack: Stack, example: GrpcExample, known: Known) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    token = known.tokens.get(example.token, "")
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    call = grpc_call(stack, example)(example.request, metadata=metadata, timeout=10)
    try:
        if example.method == "WatchRun":
            async for _ in call:
                break  # a run that exists streams until it ends: its first event is enough
            call.cancel()
        else:
            await call
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or "", violations_of(err)
    return grpc.StatusCode.OK, "", {}


def violations_of(err: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(err)
    out: dict[str, str] = {}
    for detail in status.details if status is not None else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.update({v.field: v.description for v in bad.field_violations})
    return out


# REST -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RestExample:
    route: Route
    path: str
    query: dict[str, str]
    body: bytes | None
    token: str


JSON_JUNK: st.SearchStrategy[Any] = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)


def json_value(fd: FieldDescriptor, known: Known, depth: int) -> st.SearchStrategy[Any]:
    if fd.enum_type is not None:
        return st.one_of(st.sampled_from(sorted(enum_aliases(fd.enum_type))), st.integers(-3, 12), JSON_JUNK)
    if fd.message_type is not None:
        if fd.message_type.full_name == "google.protobuf.Timestamp":
            moments = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31))
            forms = ["2030-01-01T00:00:00Z", "10000-01-01T00:00:00Z", "0000-01-01T00:00:00Z", "2030-02-30T00:00:00Z"]
            return st.one_of(
                moments.map(lambda d: d.isoformat()),
                moments.map(lambda d: d.isoformat() + "Z"),
                st.just((datetime.now(UTC) + timedelta(hours=1)).isoformat()),
                st.sampled_from(forms),
                JSON_JUNK,
            )
        if depth < 2:
            return st.one_of(json_body(fd.message_type, known, depth + 1), JSON_JUNK)
        return JSON_JUNK
    if fd.type == FieldDescriptor.TYPE_STRING:
        return st.one_of(odd_strings(known), JSON_JUNK)
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return st.one_of(st.booleans(), JSON_JUNK)
    return st.one_of(INT64, st.floats(), INT64.map(str), JSON_JUNK)


def json_body(descriptor: Descriptor, known: Known, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    optional: dict[str, st.SearchStrategy[Any]] = {
        fd.json_name: json_value(fd, known, depth) for fd in descriptor.fields if not fd.is_repeated
    }
    optional["unknownField"] = JSON_JUNK
    return st.fixed_dictionaries({}, optional=optional)


def rest_bodies(route: Route, known: Known) -> st.SearchStrategy[bytes | None]:
    if route.body is None:
        return st.one_of(st.none(), st.binary(max_size=30))
    valid = {
        "CreateJob": {"jobType": "Recurring", "cronExpr": "@daily", "scriptContent": "pass"},
        "SignUp": {"username": "fuzzed", "email": "fuzzed@example.com", "password": "p" * 10},
    }.get(route.rpc, {})
    descriptor = cast(Descriptor, route.body.DESCRIPTOR)  # upb's descriptor class, typed apart
    structured = json_body(descriptor, known).map(lambda b: json.dumps({**valid, **b}).encode())
    return st.one_of(
        structured,
        structured,
        structured,
        JSON_JUNK.map(lambda j: json.dumps(j).encode()),
        st.integers(1, 60_000).map(lambda n: b"[" * n),
        st.binary(max_size=60),
    )


def query_value(name: str, kind: str) -> st.SearchStrategy[str]:
    numbers = st.one_of(INT64.map(str), st.sampled_from(["", "x", "1.5", "١٢", "1_0", " 5", "9" * 5000]))
    if name == "follow":  # following a real run's log streams until the run ends: never "true" here
        return st.sampled_from(["", "false", "0", "no", "maybe"])
    if kind == "integer":
        return numbers
    return st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=300)


def rest_examples(known: Known) -> list[RestExample]:
    examples: list[RestExample] = []
    ids = st.one_of(
        st.sampled_from(known.job_ids + known.run_ids + known.user_ids),
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=50),
        st.sampled_from(["%00", "x" * 300, "..", "00000000-0000-0000-0000-000000000000"]),
    )
    for route in ROUTES:
        params = [p for p in route.path.split("/") if p.startswith("{")]
        query = st.fixed_dictionaries(
            {}, optional={q.name: query_value(q.name, q.type) for q in route.query} | {"junk": st.text(max_size=5)}
        )
        strategy = st.builds(
            lambda values, q, body, token, r=route, names=params: RestExample(
                r, _fill_path(r.path, dict(zip(names, values, strict=True))), q, body, token
            ),
            st.tuples(*[ids for _ in params]),
            query,
            rest_bodies(route, known),
            st.sampled_from(["USER", "USER", "ADMIN", "VIEWER", ""]),
        )
        examples.extend(draw(strategy, REST_EXAMPLES))
    return examples


def _fill_path(template: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        segment = value if value.startswith("%") else urllib.parse.quote(value, safe="")
        template = template.replace(name, segment)
    return template


async def send_rest(stack: Stack, example: RestExample, known: Known) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    token = known.tokens.get(example.token, "")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    url = stack.base + example.path
    if example.query:
        url += "?" + urllib.parse.urlencode(example.query)
    async with stack.http.request(
        example.route.method, url, data=example.body, headers=headers, allow_redirects=False
    ) as resp:
        raw = await resp.read()
        return resp.status, json.loads(raw) if raw else None


# The test -------------------------------------------------------------------------


async def prepare(stack: Stack) -> Known:
    users = {role: await stack.scheduler.user(role) for role in ("USER", "ADMIN", "VIEWER")}
    user = users["USER"]
    jobs = [
        await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring()), metadata=user.md),
        await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=one_time()), metadata=user.md),
    ]
    run = await user.jobs.RunJobNow(job_pb2.RunJobNowRequest(id=jobs[0].id), metadata=user.md)
    known = Known(
        job_ids=[j.id for j in jobs],
        run_ids=[run.id],
        user_ids=[c.user_id for c in users.values()],
        tokens={role: c.token for role, c in users.items()},
    )
    known.templates = templates(jobs[0], run.id, user)
    return known


def templates(job: job_pb2.Job, run_id: str, user: Client) -> dict[str, Message]:
    """A valid request per method, for the mutated examples."""
    from google.protobuf.field_mask_pb2 import FieldMask

    return {
        "CreateJob": job_pb2.CreateJobRequest(job=recurring(), request_id="fuzz"),
        "GetJob": job_pb2.GetJobRequest(id=job.id),
        "ListJobs": job_pb2.ListJobsRequest(page_size=2, state=job_pb2.JOB_STATE_ACTIVE),
        "UpdateJob": job_pb2.UpdateJobRequest(
            job=job_pb2.Job(id=job.id, version=job.version, name="n"), update_mask=FieldMask(paths=["name"])
        ),
        "PauseJob": job_pb2.PauseJobRequest(id=job.id),
        "ResumeJob": job_pb2.ResumeJobRequest(id=job.id),
        "RunJobNow": job_pb2.RunJobNowRequest(id=job.id),
        "PreviewSchedule": job_pb2.PreviewScheduleRequest(cron_expr="@daily", timezone="Europe/Berlin", count=3),
        "ListRuns": run_pb2.ListRunsRequest(job_id=job.id, page_size=5),
        "GetRun": run_pb2.GetRunRequest(run_id=run_id, job_id=job.id),
        "GetRunLogs": run_pb2.GetRunLogsRequest(run_id=run_id),
        "WatchRun": run_pb2.WatchRunRequest(run_id=run_id),
        "Login": auth_pb2.LoginRequest(email="nobody@example.com", password="p" * 10),
        "SignUp": auth_pb2.SignUpRequest(username="fuzz", email="fuzz@example.com", password="p" * 10),
        "SetUserRole": auth_pb2.SetUserRoleRequest(user_id=user.user_id, role=auth_pb2.ROLE_USER),
        "ListUsers": auth_pb2.ListUsersRequest(page_size=3),
    }


async def check_grpc(stack: Stack, known: Known, examples: list[GrpcExample]) -> Tally:
    tally = Tally()
    before = await stored(stack.scheduler.app.db)
    for example in examples:
        code, message, violations = await send_grpc(stack, example, known)
        tally.count(f"{example.service}/{example.method}", code.name)
        where = (example.service, example.method, example.request, code, message)
        assert code not in FORBIDDEN_CODES, where
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            assert example.method in BOOKKEEPING, where
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            assert violations or message == "malformed request message", where
        after = await stored(stack.scheduler.app.db)
        if code != grpc.StatusCode.OK and example.method not in BOOKKEEPING:
            assert after == before, where
        before = after
    return tally


async def check_rest(stack: Stack, known: Known, examples: list[RestExample]) -> Tally:
    tally = Tally()
    before = await stored(stack.scheduler.app.db)
    for example in examples:
        status, payload = await send_rest(stack, example, known)
        tally.count(f"{example.route.method} {example.route.path}", str(status))
        where = (example.route.method, example.path, example.query, (example.body or b"")[:300], status, payload)
        assert status < 500, where
        assert isinstance(payload, dict), where
        if status >= 400:
            error = payload["error"]
            assert error["code"] == status, where
            if error["status"] == "INVALID_ARGUMENT":
                assert [v for d in error["details"] for v in d.get("fieldViolations", [])], where
        if status == 429:
            assert example.route.rpc in BOOKKEEPING, where
        after = await stored(stack.scheduler.app.db)
        if status >= 300 and example.route.rpc not in BOOKKEEPING:
            assert after == before, where
        before = after
    return tally


@pytest.mark.timeout(150)
async def test_generated_requests_never_fail_the_server_nor_store_when_refused(stack: Stack) -> None:
    started = time.monotonic()
    known = await prepare(stack)
    loop = asyncio.get_running_loop()
    grpc_cases = await loop.run_in_executor(None, grpc_examples, known)
    rest_cases = await loop.run_in_executor(None, rest_examples, known)
    grpc_tally = await check_grpc(stack, known, grpc_cases)
    rest_tally = await check_rest(stack, known, rest_cases)
    methods = {f"{s.full_name}/{m.name}" for s in SERVICES for m in s.methods}
    routes = {f"{r.method} {r.path}" for r in ROUTES}
    assert grpc_tally.covered == methods and rest_tally.covered == routes
    figures = {
        "grpc": {"examples": grpc_tally.sent, "methods": len(methods), "codes": grpc_tally.by_code},
        "rest": {"examples": rest_tally.sent, "routes": len(routes), "statuses": rest_tally.by_code},
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(figures, sort_keys=True))
