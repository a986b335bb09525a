"""The REST route table: each route names the RPC it translates to and how the
HTTP request becomes the RPC's request message. OpenAPI is generated from it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message

from api_gateway.translate import header, parse, snake
from core.errors import FieldViolation, InvalidArgument
from gen.jobmesh.v1 import auth_pb2, health_pb2, job_pb2, run_pb2


@dataclass(frozen=True)
class HttpCall:
    path: Mapping[str, str]
    query: Mapping[str, str]
    body: Any
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # "string" | "integer" | "boolean"
    description: str
    enum: Message | None = None  # proto message whose enum field lists the values
    enum_field: str = ""


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    service: str  # auth | jobs | runs | health
    rpc: str
    response: type[Message]
    build: Callable[[HttpCall], Message]
    summary: str
    tag: str
    body: type[Message] | None = None
    body_extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    query: tuple[Param, ...] = ()
    status: int = 200
    public: bool = False
    aliases: Callable[[dict[str, Any]], dict[str, Any]] | None = None


def _int(call: HttpCall, name: str, default: int = 0) -> int:
    raw = call.query.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidArgument(FieldViolation(name, "must be an integer")) from None
    if not -(2**31) <= value < 2**31:
        raise InvalidArgument(FieldViolation(name, "is out of range"))
    return value


def _paging(call: HttpCall) -> dict[str, Any]:
    size = _int(call, "pageSize", 20)
    page = _int(call, "page", 1)
    if page < 1:
        raise InvalidArgument(FieldViolation("page", "must be at least 1"))
    if not 0 <= size <= 500:
        raise InvalidArgument(FieldViolation("pageSize", "must be between 0 and 500"))
    token = call.query.get("pageToken", "")
    per_page = size or 20
    skip = 0 if token else (page - 1) * per_page
    if skip >= 2**31:  # the request's skip is an int32
        raise InvalidArgument(
            FieldViolation("page", f"must be at most {(2**31 - 1) // per_page + 1} with {per_page} per page")
        )
    return {"page_size": size, "page_token": token, "skip": skip}


def _enum_query(call: HttpCall, name: str, message: Message, field_name: str) -> int:
    raw = call.query.get(name, "")
    if not raw:
        return 0
    probe = parse({field_name: raw}, type(message)(), field=name)
    value: int = getattr(probe, snake(field_name))
    return value


def job_aliases(data: dict[str, Any]) -> dict[str, Any]:
    """Earlier clients read jobId as well as id."""
    data["jobId"] = data.get("id", "")
    return data


def jobs_page_aliases(data: dict[str, Any]) -> dict[str, Any]:
    data["jobs"] = [job_aliases(j) for j in data.get("jobs", [])]
    return data


def session_aliases(data: dict[str, Any]) -> dict[str, Any]:
    data.setdefault("token", data.get("accessToken", ""))
    return data


# Builders -------------------------------------------------------------------------


def build_create_job(call: HttpCall) -> Message:
    body = call.body if isinstance(call.body, dict) else {}
    if not isinstance(body.get("requestId", ""), str):
        raise InvalidArgument(FieldViolation("requestId", "must be a string"))
    request_id = body.get("requestId") or header(call.headers, "Idempotency-Key")
    # jobId: the alias of id the gateway adds to a job it returns; ignored like id.
    job = parse(call.body, job_pb2.Job(), consumed=("requestId", "jobId"))
    return job_pb2.CreateJobRequest(job=job, request_id=request_id)  # type: ignore[arg-type]


def build_update_job(call: HttpCall) -> Message:
    body = call.body
    if not isinstance(body, dict):
        raise InvalidArgument(FieldViolation("body", "must be a JSON object"))
    if "version" not in body:
        raise InvalidArgument(FieldViolation("version", "is required (the version you read)"))
    fields = {k: v for k, v in body.items() if k not in ("id", "jobId", "version", "job_id")}
    job = parse({**fields, "version": body["version"]}, job_pb2.Job())
    job.id = call.path["jobId"]  # type: ignore[attr-defined]
    paths: list[str] = []
    for key, value in fields.items():
        name = snake(key)
        if name == "retry_policy" and isinstance(value, dict):
            paths.extend(f"retry_policy.{snake(k)}" for k in value)
        else:
            paths.append(name)
    if not paths:
        raise InvalidArgument(FieldViolation("body", "names no field to change"))
    return job_pb2.UpdateJobRequest(job=job, update_mask=FieldMask(paths=paths))  # type: ignore[arg-type]


def build_list_jobs(call: HttpCall) -> Message:
    return job_pb2.ListJobsRequest(
        state=_enum_query(call, "state", job_pb2.Job(), "state"),  # type: ignore[arg-type]
        job_type=_enum_query(call, "jobType", job_pb2.Job(), "jobType"),  # type: ignore[arg-type]
        owner_id=call.query.get("ownerId", ""),
        queue=call.query.get("queue", ""),
        name_contains=call.query.get("name", ""),
        **_paging(call),
    )


def build_list_runs(call: HttpCall) -> Message:
    return run_pb2.ListRunsRequest(
        job_id=call.path["jobId"],
        status=_enum_query(call, "status", run_pb2.Run(), "status"),  # type: ignore[arg-type]
        **_paging(call),
    )


def build_preview(call: HttpCall) -> Message:
    request = job_pb2.PreviewScheduleRequest(
        cron_expr=call.query.get("cronExpr", ""), timezone=call.query.get("timezone", ""), count=_int(call, "count")
    )
    if call.query.get("after"):
        parse({"after": call.query["after"]}, request, field="after")
    return request


def build_recent_runs(call: HttpCall) -> Message:
    ids = [i.strip() for i in call.query.get("jobIds", "").split(",") if i.strip()]
    return run_pb2.BatchListRecentRunsRequest(job_ids=ids, count=_int(call, "count"))


PAGING = (
    Param("page", "integer", "1-based page number (default 1)"),
    Param("pageSize", "integer", "Items per page, 1-500 (default 20)"),
    Param("pageToken", "string", "nextPageToken of the previous page (instead of page)"),
)
JOB_ID = {"jobId": "The job's id"}

ROUTES: tuple[Route, ...] = (
    Route("POST", "/api/auth/signup", "auth", "SignUp", auth_pb2.SignUpResponse,
          lambda c: parse(c.body, auth_pb2.SignUpRequest()), "Create an account", "auth",
          body=auth_pb2.SignUpRequest, status=201, public=True, aliases=session_aliases),
    Route("POST", "/api/auth/login", "auth", "Login", auth_pb2.LoginResponse,
          lambda c: parse(c.body, auth_pb2.LoginRequest()), "Log in", "auth",
          body=auth_pb2.LoginRequest, public=True, aliases=session_aliases),
    Route("POST", "/api/auth/refresh", "auth", "Refresh", auth_pb2.RefreshResponse,
          lambda c: parse(c.body, auth_pb2.RefreshRequest()), "Exchange a refresh token", "auth",
          body=auth_pb2.RefreshRequest, public=True, aliases=session_aliases),
    Route("GET", "/api/auth/me", "auth", "GetCurrentUser", auth_pb2.User,
          lambda c: auth_pb2.GetCurrentUserRequest(), "The caller's account", "auth"),
    Route("GET", "/api/users", "auth", "ListUsers", auth_pb2.ListUsersResponse,
          lambda c: auth_pb2.ListUsersRequest(page_size=_int(c, "pageSize"), page_token=c.query.get("pageToken", "")),
          "List accounts (admin)", "auth", query=PAGING[1:]),
    Route("PUT", "/api/users/{userId}/role", "auth", "SetUserRole", auth_pb2.User,
          lambda c: parse({**(c.body if isinstance(c.body, dict) else {}), "userId": c.path["userId"]},
                          auth_pb2.SetUserRoleRequest()),
          "Change an account's role (admin); effective from its next request", "auth",
          body=auth_pb2.SetUserRoleRequest),
    Route("PUT", "/api/users/{userId}/disabled", "auth", "SetUserDisabled", auth_pb2.User,
          lambda c: parse({**(c.body if isinstance(c.body, dict) else {}), "userId": c.path["userId"]},
                          auth_pb2.SetUserDisabledRequest()),
          "Disable or enable an account (admin); disabling ends its sessions at once", "auth",
          body=auth_pb2.SetUserDisabledRequest),
    Route("PUT", "/api/auth/me/password", "auth", "ChangePassword", auth_pb2.ChangePasswordResponse,
          lambda c: parse(c.body, auth_pb2.ChangePasswordRequest()),
          "Change the caller's password; ends every session and returns a new one", "auth",
          body=auth_pb2.ChangePasswordRequest, aliases=session_aliases),
    Route("POST", "/api/jobs", "jobs", "CreateJob", job_pb2.Job, build_create_job, "Create a job", "jobs",
          body=job_pb2.Job, body_extra={"requestId": {"type": "string", "description": "Idempotency key"}},
          status=201, aliases=job_aliases),
    Route("GET", "/api/jobs", "jobs", "ListJobs", job_pb2.ListJobsResponse, build_list_jobs, "List jobs", "jobs",
          query=(*PAGING, Param("state", "string", "Only jobs in this state", job_pb2.Job(), "state"),
                 Param("jobType", "string", "Only jobs of this type", job_pb2.Job(), "jobType"),
                 Param("ownerId", "string", "Admins and viewers: only this owner's jobs"),
                 Param("queue", "string", "Only jobs of this queue"),
                 Param("name", "string", "Only jobs whose name contains this text (case-insensitive)")),
          aliases=jobs_page_aliases),
    Route("GET", "/api/jobs/{jobId}", "jobs", "GetJob", job_pb2.Job,
          lambda c: job_pb2.GetJobRequest(id=c.path["jobId"]), "Get a job", "jobs", aliases=job_aliases),
    Route("PUT", "/api/jobs/{jobId}", "jobs", "UpdateJob", job_pb2.Job, build_update_job,
          "Change the given fields of a job; version must be current (409 otherwise)", "jobs",
          body=job_pb2.Job, aliases=job_aliases),
    Route("PATCH", "/api/jobs/{jobId}", "jobs", "UpdateJob", job_pb2.Job, build_update_job,
          "Same as PUT: a partial update carrying version", "jobs", body=job_pb2.Job, aliases=job_aliases),
    Route("DELETE", "/api/jobs/{jobId}", "jobs", "DeleteJob", job_pb2.Job,
          lambda c: job_pb2.DeleteJobRequest(id=c.path["jobId"]), "Delete a job (soft)", "jobs", aliases=job_aliases),
    Route("PATCH", "/api/jobs/{jobId}/pause", "jobs", "PauseJob", job_pb2.Job,
          lambda c: job_pb2.PauseJobRequest(id=c.path["jobId"]), "Pause a job", "jobs", aliases=job_aliases),
    Route("PATCH", "/api/jobs/{jobId}/resume", "jobs", "ResumeJob", job_pb2.Job,
          lambda c: job_pb2.ResumeJobRequest(id=c.path["jobId"]), "Resume a paused job", "jobs", aliases=job_aliases),
    Route("POST", "/api/jobs/{jobId}/run", "jobs", "RunJobNow", run_pb2.Run,
          lambda c: job_pb2.RunJobNowRequest(id=c.path["jobId"]), "Run a job now", "jobs", status=201),
    Route("GET", "/api/schedule/preview", "jobs", "PreviewSchedule", job_pb2.PreviewScheduleResponse, build_preview,
          "Next fire times of a cron expression, DST transitions marked", "jobs",
          query=(Param("cronExpr", "string", "Cron expression"), Param("timezone", "string", "IANA time zone"),
                 Param("count", "integer", "How many, 1-100 (default 10)"),
                 Param("after", "string", "Start after this instant (RFC 3339)"))),
    Route("GET", "/api/jobs/{jobId}/runs", "runs", "ListRuns", run_pb2.ListRunsResponse, build_list_runs,
          "List a job's runs, newest first", "runs",
          query=(*PAGING, Param("status", "string", "Only runs in this status", run_pb2.Run(), "status"))),
    Route("GET", "/api/jobs/{jobId}/runs/{runId}", "runs", "GetRun", run_pb2.Run,
          lambda c: run_pb2.GetRunRequest(run_id=c.path["runId"], job_id=c.path["jobId"]), "Get a run", "runs"),
    Route("GET", "/api/jobs/{jobId}/runs/{runId}/logs", "runs", "GetRunLogs", run_pb2.GetRunLogsResponse,
          lambda c: run_pb2.GetRunLogsRequest(run_id=c.path["runId"], job_id=c.path["jobId"]),
          "A run's captured stdout and stderr; with follow=true, live as Server-Sent Events until it ends",
          "runs", query=(Param("follow", "boolean", "Stream output and status changes (text/event-stream)"),)),
    Route("POST", "/api/jobs/{jobId}/runs/{runId}/cancel", "runs", "CancelRun", run_pb2.Run,
          lambda c: run_pb2.CancelRunRequest(run_id=c.path["runId"], job_id=c.path["jobId"]), "Cancel a run", "runs"),
    Route("GET", "/api/runs/recent", "runs", "BatchListRecentRuns", run_pb2.BatchListRecentRunsResponse,
          build_recent_runs, "The newest runs of several jobs at once", "runs",
          query=(Param("jobIds", "string", "Comma-separated job ids, at most 100"),
                 Param("count", "integer", "Runs per job, 1-50 (default 20)"))),
    Route("GET", "/api/runs/running", "runs", "ListRunningRuns", run_pb2.ListRunningRunsResponse,
          lambda c: run_pb2.ListRunningRunsRequest(page_size=_int(c, "pageSize")),
          "Runs executing now, the longest running first", "runs", query=PAGING[1:2]),
    Route("GET", "/api/health", "health", "GetHealth", health_pb2.GetHealthResponse,
          lambda c: health_pb2.GetHealthRequest(), "Health of the mesh", "health", public=True),
    Route("GET", "/api/health/metrics", "health", "GetMetrics", health_pb2.GetMetricsResponse,
          lambda c: health_pb2.GetMetricsRequest(), "Current figures of the mesh", "health", public=True),
)  # fmt: skip
