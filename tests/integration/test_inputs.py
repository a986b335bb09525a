"""Bad input, through gRPC and through the REST gateway: INVALID_ARGUMENT / 400 naming
the field, nothing stored, never a 5xx, INTERNAL, UNKNOWN or RESOURCE_EXHAUSTED."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_status import rpc_status

from gen.jobmesh.v1 import auth_pb2, job_pb2, run_pb2
from tests.support.inputs import Stack, stored
from tests.support.jobs import one_time, recurring
from tests.support.rpc import expect_code, field_violations

LAST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z
FIRST_SECOND = -62_135_596_800  # 0001-01-01T00:00:00Z
# A cron list that cronsim accepts, longer than the 255-character column.
LONG_CRON = "0" + ",0" * 200 + " * * * *"
TEXT_CONTROLS = ["a\x00b", "\x1b[31mred\x1b[0m", "evil\u202etxt.exe", "two\nlines", "a\u2028b", "tab\there", "\x9b31m"]


async def refused(call: Any, field: str) -> str:
    """The call is refused with INVALID_ARGUMENT naming ``field``; its description."""
    err = await expect_code(call, grpc.StatusCode.INVALID_ARGUMENT)
    found = field_violations(err)
    assert field in found, (field, found, err.details())
    return found[field]


def rest_violations(payload: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for detail in payload["error"]["details"]:
        out.update({v["field"]: v["description"] for v in detail.get("fieldViolations", [])})
    return out


def rest_refused(status: int, payload: Any, field: str) -> str:
    assert status == 400, (status, payload)
    assert payload["error"]["status"] == "INVALID_ARGUMENT" and payload["error"]["code"] == 400, payload
    found = rest_violations(payload)
    assert field in found, (field, payload)
    return found[field]


def stamp(seconds: int, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=nanos)


async def test_grpc_create_job_refuses_what_it_used_to_store_or_crash_on(stack: Stack) -> None:
    user = await stack.scheduler.user()
    before = await stored(stack.scheduler.app.db)
    cases: list[tuple[str, job_pb2.Job, str]] = [
        ("job.scheduled_at", one_time(), "after year 9999"),
        ("job.scheduled_at", one_time(), "before year 1"),
        ("job.scheduled_at", one_time(), "nanos 2e9"),
        ("job.cron_expr", recurring(LONG_CRON), "256+ characters"),
        ("job.timezone", recurring(timezone="Europe/" + "x" * 5000), "5,000 characters"),
        ("job.misfire_policy", recurring(misfire_policy=99), "unknown enum number"),
        ("job.overlap_policy", recurring(overlap_policy=-5), "unknown enum number"),
        ("job.network", recurring(network=9), "unknown enum number"),
        ("job.job_type", job_pb2.Job(job_type=7, cron_expr="@daily", script_content="pass"), "unknown"),  # type: ignore[arg-type]
        ("job.state", recurring(state=42), "unknown enum number, output-only field"),
        ("job.owner_id", recurring(owner_id="someone-else"), "not a UUID"),
        ("job.name", recurring(name="n" * 201), "201 characters"),
        ("job.queue", recurring(queue="q" * 65), "65 characters"),
    ]
    cases[0][1].scheduled_at.CopyFrom(stamp(LAST_SECOND + 1))
    cases[1][1].scheduled_at.CopyFrom(stamp(FIRST_SECOND - 1))
    cases[2][1].scheduled_at.CopyFrom(stamp(int(datetime.now(UTC).timestamp()) + 3600, 2_000_000_000))
    policy = job_pb2.RetryPolicy(strategy=77)  # type: ignore[arg-type]
    cases.append(("job.retry_policy.strategy", recurring(retry_policy=policy), "unknown enum number"))
    for text in TEXT_CONTROLS:
        cases.append(("job.name", recurring(name=text), f"name {text!r}"))
    for field, job, why in cases:
        description = await refused(user.jobs.CreateJob(job_pb2.CreateJobRequest(job=job), metadata=user.md), field)
        assert description, why
    await refused(
        user.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring(), request_id="id\x00"), metadata=user.md),
        "request_id",
    )
    # The description says what is wrong without echoing a 5,000-character value.
    text = await refused(
        user.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring(timezone="x" * 5000)), metadata=user.md),
        "job.timezone",
    )
    assert text == "must be at most 64 characters (got 5000)"
    assert await stored(stack.scheduler.app.db) == before
    # The limits themselves, and text that is not plain ASCII, are accepted.
    edge = one_time(name="n" * 200, queue="q" * 64)
    edge.scheduled_at.CopyFrom(stamp(LAST_SECOND, 999_999_999))
    job = await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=edge, request_id="r" * 64), metadata=user.md)
    assert job.scheduled_at.seconds == LAST_SECOND
    for name in ("Ünïcødé ジョブ", "family 👨\u200d👩\u200d👧", "שלום עולם", "non\xa0breaking"):
        made = await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring(name=name)), metadata=user.md)
        assert made.name == name
    tabbed = await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring("0\t9 * * *")), metadata=user.md)
    assert tabbed.cron_expr == "0\t9 * * *"
    # 0 is the documented default (proto comments), as it is over REST.
    zeros = recurring(timeout_seconds=0, retry_policy=job_pb2.RetryPolicy(max_attempts=0, max_delay_seconds=0))
    job = await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=zeros), metadata=user.md)
    assert job.timeout_seconds == 3600 and job.retry_policy.max_attempts == 1
    assert job.retry_policy.max_delay_seconds == 86400 and job.retry_policy.multiplier == 2


async def test_grpc_every_other_request_checks_its_fields(stack: Stack) -> None:
    user = await stack.scheduler.user()
    admin = await stack.scheduler.user("ADMIN")
    job = await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring()), metadata=user.md)
    run = await user.jobs.RunJobNow(job_pb2.RunJobNowRequest(id=job.id), metadata=user.md)
    before = await stored(stack.scheduler.app.db)
    jobs, runs, auth = user.jobs, user.runs, stack.scheduler.anon.auth
    md = user.md
    await refused(jobs.ListJobs(job_pb2.ListJobsRequest(state=42), metadata=md), "state")  # type: ignore[arg-type]
    await refused(jobs.ListJobs(job_pb2.ListJobsRequest(job_type=-1), metadata=md), "job_type")  # type: ignore[arg-type]
    await refused(jobs.ListJobs(job_pb2.ListJobsRequest(owner_id="nobody"), metadata=admin.md), "owner_id")
    await refused(jobs.ListJobs(job_pb2.ListJobsRequest(page_token="t" * 129), metadata=md), "page_token")
    for forged in ({"o": float("inf"), "f": "x"}, {"o": 10**30, "f": "x"}, [1, 2], {"o": -1}):
        token = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("=")
        await refused(jobs.ListJobs(job_pb2.ListJobsRequest(page_token=token), metadata=md), "page_token")
    for rpc, request in (
        (jobs.GetJob, job_pb2.GetJobRequest(id="{{" + job.id.replace("-", "") + "}}")),  # 36 characters
        (jobs.DeleteJob, job_pb2.DeleteJobRequest(id=job.id + "\x00")),
        (jobs.PauseJob, job_pb2.PauseJobRequest(id="x" * 5000)),
        (jobs.ResumeJob, job_pb2.ResumeJobRequest(id="")),
        (jobs.RunJobNow, job_pb2.RunJobNowRequest(id="urn:uuid:" + job.id)),
    ):
        await refused(rpc(request, metadata=md), "id")
    update = job_pb2.Job(id=job.id, version=job.version, misfire_policy=99)  # type: ignore[arg-type]
    await refused(jobs.UpdateJob(job_pb2.UpdateJobRequest(job=update), metadata=md), "job.misfire_policy")
    update = job_pb2.Job(id=job.id, version=-1, name="x")
    await refused(jobs.UpdateJob(job_pb2.UpdateJobRequest(job=update), metadata=md), "job.version")
    update = job_pb2.Job(id="not-a-job", version=1, name="x")
    await refused(jobs.UpdateJob(job_pb2.UpdateJobRequest(job=update), metadata=md), "job.id")
    update = job_pb2.Job(id=job.id, version=job.version, name="x")
    many = FieldMask(paths=["name"] * 33)
    await refused(
        jobs.UpdateJob(job_pb2.UpdateJobRequest(job=update, update_mask=many), metadata=md), "update_mask.paths"
    )
    odd = FieldMask(paths=["name\x1b"])
    await refused(
        jobs.UpdateJob(job_pb2.UpdateJobRequest(job=update, update_mask=odd), metadata=md), "update_mask.paths[0]"
    )
    update = job_pb2.Job(id=job.id, version=job.version, name="bidi\u202e")
    await refused(jobs.UpdateJob(job_pb2.UpdateJobRequest(job=update), metadata=md), "job.name")
    update = job_pb2.Job(id=job.id, version=job.version, cron_expr=LONG_CRON)
    await refused(jobs.UpdateJob(job_pb2.UpdateJobRequest(job=update), metadata=md), "job.cron_expr")
    for after in (stamp(LAST_SECOND + 1), stamp(FIRST_SECOND - 1), stamp(0, 2_000_000_000), stamp(0, -1)):
        await refused(
            jobs.PreviewSchedule(job_pb2.PreviewScheduleRequest(cron_expr="@daily", after=after), metadata=md), "after"
        )
    await refused(
        jobs.PreviewSchedule(job_pb2.PreviewScheduleRequest(cron_expr="@daily", timezone="x" * 5000), metadata=md),
        "timezone",
    )
    await refused(runs.ListRuns(run_pb2.ListRunsRequest(job_id=job.id, status=42), metadata=md), "status")  # type: ignore[arg-type]
    await refused(runs.ListRuns(run_pb2.ListRunsRequest(job_id="j"), metadata=md), "job_id")
    await refused(runs.GetRun(run_pb2.GetRunRequest(run_id=run.id, job_id="not-a-uuid"), metadata=md), "job_id")
    await refused(runs.GetRunLogs(run_pb2.GetRunLogsRequest(run_id="r"), metadata=md), "run_id")
    await refused(runs.CancelRun(run_pb2.CancelRunRequest(run_id=run.id, job_id="\u202e"), metadata=md), "job_id")
    await refused(runs.WatchRun(run_pb2.WatchRunRequest(run_id="x" * 100), metadata=md).read(), "run_id")
    await refused(
        auth.SignUp(auth_pb2.SignUpRequest(username="nul_user", email="a\x00b@example.com", password="p" * 12)), "email"
    )
    await refused(auth.Login(auth_pb2.LoginRequest(email="x" * 5000 + "@example.com", password="p" * 12)), "email")
    await refused(auth.Refresh(auth_pb2.RefreshRequest(refresh_token="t" * 5000)), "refresh_token")
    await refused(
        admin.auth.SetUserRole(auth_pb2.SetUserRoleRequest(user_id=user.user_id, role=42), metadata=admin.md),  # type: ignore[arg-type]
        "role",
    )
    await refused(
        admin.auth.SetUserRole(auth_pb2.SetUserRoleRequest(user_id="me", role=auth_pb2.ROLE_ADMIN), metadata=admin.md),
        "user_id",
    )
    await refused(admin.auth.ListUsers(auth_pb2.ListUsersRequest(page_token="\x00"), metadata=admin.md), "page_token")
    assert await stored(stack.scheduler.app.db) == before
    # The calendar's ends are inputs like any other: the preview stops where it ends.
    late = await jobs.PreviewSchedule(
        job_pb2.PreviewScheduleRequest(
            cron_expr="@yearly", timezone="Pacific/Kiritimati", after=stamp(LAST_SECOND - 60)
        ),
        metadata=md,
    )
    assert list(late.fire_times) == []
    early = await jobs.PreviewSchedule(
        job_pb2.PreviewScheduleRequest(
            cron_expr="@daily", timezone="America/New_York", after=stamp(FIRST_SECOND), count=2
        ),
        metadata=md,
    )
    assert all(f.time.seconds > FIRST_SECOND for f in early.fire_times)


async def test_grpc_bytes_that_are_no_message_are_invalid_argument_without_internals(stack: Stack) -> None:
    user = await stack.scheduler.user()
    before = await stored(stack.scheduler.app.db)
    # A truncated varint, wire type 7, field number 0, a length past the end, an 11-byte varint.
    garbage = [b"\xff\xff\xff", b"\x07", b"\x00", b"\x0a\x05ab", b"\x08" + b"\x80" * 10 + b"\x01"]
    for path in (
        "/jobmesh.v1.JobService/CreateJob",
        "/jobmesh.v1.JobService/ListJobs",
        "/jobmesh.v1.AuthService/Login",
    ):
        call = stack.scheduler.channel.unary_unary(path)
        for raw in garbage:
            err = await expect_code(call(raw, metadata=user.md), grpc.StatusCode.INVALID_ARGUMENT)
            assert err.details() == "malformed request message"
            status = rpc_status.from_call(err)
            assert status is not None and "Error parsing" not in str(status) and "DecodeError" not in str(status)
    stream = stack.scheduler.channel.unary_stream("/jobmesh.v1.RunService/WatchRun")
    err = await expect_code(stream(b"\xff\xff", metadata=user.md).read(), grpc.StatusCode.INVALID_ARGUMENT)
    assert err.details() == "malformed request message"
    assert await stored(stack.scheduler.app.db) == before


# REST -----------------------------------------------------------------------------


async def test_rest_bodies_that_used_to_answer_500(stack: Stack) -> None:
    token = (await stack.scheduler.user()).token
    before = await stored(stack.scheduler.app.db)
    deep = b"[" * 50_000
    for path, who in (("/api/jobs", token), ("/api/auth/login", ""), ("/api/auth/signup", "")):
        status, payload = await stack.call("POST", path, raw=deep, token=who)
        assert "nest" in rest_refused(status, payload, "body")
    nested: Any = 1
    for _ in range(40):  # parses fine as JSON, nests deeper than any body may
        nested = [nested]
    status, payload = await stack.call("POST", "/api/jobs", {"name": nested}, token)
    rest_refused(status, payload, "body")
    for scheduled in ("10000-01-01T00:00:00Z", "0000-12-31T23:59:59Z"):
        body = {"jobType": "OneTime", "scheduledAt": scheduled, "scriptContent": "pass"}
        rest_refused(*await stack.call("POST", "/api/jobs", body, token), "scheduledAt")
    status, payload = await stack.call(
        "POST", "/api/jobs", {"jobType": "Recurring", "cronExpr": LONG_CRON, "scriptContent": "pass"}, token
    )
    rest_refused(status, payload, "job.cron_expr")
    status, payload = await stack.call(
        "POST",
        "/api/jobs",
        {"jobType": "Recurring", "cronExpr": "@daily", "timezone": "x" * 5000, "scriptContent": "pass"},
        token,
    )
    rest_refused(status, payload, "job.timezone")
    status, payload = await stack.call(
        "GET", "/api/schedule/preview?cronExpr=@daily&timezone=" + "x" * 5000, token=token
    )
    rest_refused(status, payload, "timezone")
    assert await stored(stack.scheduler.app.db) == before


async def test_rest_headers_the_gateway_cannot_pass_on_are_a_json_400(stack: Stack) -> None:
    token = (await stack.scheduler.user()).token
    for value in (b"Bearer a\x00b", b"Bearer a\x01b", b"Bearer \x1b[2J"):
        status, content_type, payload = await stack.raw_http(
            b"GET /api/jobs HTTP/1.1\r\nHost: gw\r\nAuthorization: " + value + b"\r\nConnection: close\r\n\r\n"
        )
        assert content_type.startswith("application/json")
        assert "a\\x00b" not in json.dumps(payload), "the header's value is not echoed"
        rest_refused(status, payload, "Authorization")
    for name, value in ((b"Authorization", b"Bearer \xff\xfe"), (b"X-Request-Id", b"\xc3\x28"),
                        (b"Authorization", b"Bearer " + b"a" * 5000)):  # fmt: skip
        status, content_type, payload = await stack.raw_http(
            b"GET /api/jobs HTTP/1.1\r\nHost: gw\r\n" + name + b": " + value + b"\r\nConnection: close\r\n\r\n"
        )
        rest_refused(status, payload, name.decode())
    body = json.dumps({"jobType": "Recurring", "cronExpr": "@daily", "scriptContent": "pass"}).encode()
    status, _, payload = await stack.raw_http(
        b"POST /api/jobs HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + token.encode()
        + b"\r\nIdempotency-Key: \xff\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )  # fmt: skip
    rest_refused(status, payload, "Idempotency-Key")


async def test_rest_refuses_what_it_used_to_accept_silently(stack: Stack) -> None:
    user = await stack.scheduler.user()
    token = user.token
    base = {"jobType": "Recurring", "cronExpr": "@daily", "scriptContent": "pass"}
    before = await stored(stack.scheduler.app.db)
    cases: list[tuple[dict[str, Any], str]] = [
        ({**base, "retryPolicy": "x"}, "retryPolicy"),
        ({**base, "retryPolicy": []}, "retryPolicy"),
        ({**base, "retryPolicy": 3}, "retryPolicy"),
        ({**base, "retryPolicy": {"maxAttempts": 2, "backoff": "fast"}}, "retryPolicy.backoff"),
        ({**base, "nmae": "typo"}, "nmae"),
        ({**base, "jobType": True}, "jobType"),
        ({**base, "misfirePolicy": 99}, "job.misfire_policy"),
        ({**base, "overlapPolicy": -5}, "job.overlap_policy"),
        ({**base, "retryPolicy": {"strategy": 77}}, "job.retry_policy.strategy"),
        ({**base, "requestId": {"k": 1}}, "requestId"),
        ({**base, "requestId": 0}, "requestId"),
        ({**base, "retryPolicy": {"maxAttempts": 1.5}}, "retryPolicy.maxAttempts"),
    ]
    cases += [({**base, "name": text}, "job.name") for text in TEXT_CONTROLS]
    for body, field in cases:
        rest_refused(*await stack.call("POST", "/api/jobs", body, token), field)
    for path, body, field in (
        ("/api/auth/login", {"email": "a@example.com", "password": "pw", "rememberMe": True}, "rememberMe"),
        (
            "/api/auth/signup",
            {"username": "abc", "email": "a@example.com", "password": "p" * 10, "role": "ADMIN"},
            "role",
        ),
        ("/api/auth/refresh", {"refreshToken": "t", "extra": 1}, "extra"),
    ):
        rest_refused(*await stack.call("POST", path, body, ""), field)
    for query, field in (("state=42", "state"), ("jobType=Weekly", "jobType"), ("ownerId=x", "owner_id"),
                         ("page=2147483647", "page"), ("page=107374184&pageSize=20", "page"), ("page=x", "page"),
                         ("pageSize=501", "pageSize"), ("pageToken=" + "t" * 200, "page_token")):  # fmt: skip
        rest_refused(*await stack.call("GET", f"/api/jobs?{query}", token=token), field)
    job = await user.jobs.CreateJob(job_pb2.CreateJobRequest(job=recurring()), metadata=user.md)
    snapshot = await stored(stack.scheduler.app.db)
    for body, field in (
        ({"version": job.version, "bogus": 1}, "bogus"),
        ({"version": job.version, "retryPolicy": {"tries": 3}}, "retryPolicy.tries"),
        ({"version": job.version, "name": "\x00"}, "job.name"),
        ({"version": job.version, "misfirePolicy": 99}, "job.misfire_policy"),
        ({"version": -3, "name": "x"}, "job.version"),
    ):
        rest_refused(*await stack.call("PUT", f"/api/jobs/{job.id}", body, token), field)
    rest_refused(*await stack.call("GET", "/api/jobs/%00", token=token), "id")
    rest_refused(*await stack.call("GET", f"/api/jobs/{job.id}/runs?status=42", token=token), "status")
    rest_refused(*await stack.call("GET", f"/api/jobs/{job.id}/runs/x%1b", token=token), "run_id")
    assert await stored(stack.scheduler.app.db) == snapshot
    # Nothing of the refused creates was stored either.
    assert snapshot["counts"]["job_definition"] == before["counts"]["job_definition"] + 1
    # What is accepted: 0 is the documented default, as over gRPC; jobId (which the
    # gateway adds to a job it returns) is ignored like id.
    body = {"jobType": "Recurring", "cronExpr": "@daily", "scriptContent": "pass", "timeoutSeconds": 0,
            "retryPolicy": {"maxAttempts": 0}, "jobId": "ignored like id"}  # fmt: skip
    status, job = await stack.call("POST", "/api/jobs", body, token)
    assert status == 201, job
    assert job["timeoutSeconds"] == 3600 and job["retryPolicy"]["maxAttempts"] == 1
    status, updated = await stack.call(
        "PUT", f"/api/jobs/{job['id']}", {"timeoutSeconds": 0, "name": "renamed", "version": job["version"]}, token
    )
    assert status == 200 and updated["timeoutSeconds"] == 3600 and updated["name"] == "renamed"
    at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    status, once = await stack.call(
        "POST", "/api/jobs", {"jobType": "OneTime", "scheduledAt": at, "scriptContent": "pass", "requestId": "k"}, token
    )
    assert status == 201, once
