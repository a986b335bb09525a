"""The one proto <-> domain conversion.

Every message a service answers is built here, and every request field a domain
function takes that is not a plain string or number is read here: the domain types
(core/domain.py) know nothing of protobuf, and only this module, the servicers that
call it and the gateway's JSON translation import ``gen``.

Enums are paired value for value in explicit tables (a table that leaves out a value
of either enum fails at import); a proto enum's UNSPECIFIED (0) is the domain's None,
and a number the proto enum does not define is refused with the field named.
Decoding reads what a client sends: zero values take the defaults the proto comments
state, output-only fields are dropped, and what only the wire can tell (a multiplier
that was sent, as against one left out) is checked here, where it is still known.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import fields, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from core import cron, validation
from core.auth import Role
from core.domain import (
    DEFAULT_MAX_DELAY_SECONDS,
    DEFAULT_MULTIPLIER,
    DEFAULT_QUEUE,
    DEFAULT_TIMEOUT_SECONDS,
    Component,
    Figures,
    HealthReport,
    HealthStatus,
    Job,
    JobState,
    JobType,
    LogStream,
    MisfirePolicy,
    Network,
    OutputChunk,
    OverlapPolicy,
    PreviewSlot,
    RetryPolicy,
    RetryStrategy,
    Run,
    RunOutput,
    RunStatus,
    RunTrigger,
    Session,
    User,
    WatchEvent,
)
from core.errors import FieldViolation, InvalidArgument
from core.paging import Page
from gen.jobmesh.v1 import auth_pb2, health_pb2, job_pb2, run_pb2

if TYPE_CHECKING:
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

E = TypeVar("E", bound=enum.Enum)
V = TypeVar("V", bound=int)


class EnumTable(Generic[E, V]):
    """A domain enum and its proto enum, paired value for value."""

    def __init__(self, domain: type[E], proto: _EnumTypeWrapper[V], pairs: Mapping[E, V]) -> None:
        self.domain = domain
        self.descriptor = proto.DESCRIPTOR
        self._to_proto = dict(pairs)
        self._from_proto = {int(number): member for member, number in pairs.items()}
        self._unspecified = proto.Value(self.descriptor.values_by_number[0].name)
        defined = {value.number for value in self.descriptor.values if value.number != 0}
        if set(self._to_proto) != set(domain) or set(self._from_proto) != defined or len(defined) != len(pairs):
            raise TypeError(f"{domain.__name__} and {self.descriptor.full_name} are not paired value for value")

    def to_proto(self, member: E | None) -> V:
        return self._unspecified if member is None else self._to_proto[member]

    def from_proto(self, number: int, field: str) -> E | None:
        """The member for ``number``; None for UNSPECIFIED (0)."""
        if number == 0:
            return None
        member = self._from_proto.get(number)
        if member is None:
            raise InvalidArgument(FieldViolation(field, validation.enum_problem(self.descriptor, number)))
        return member

    def required(self, number: int, field: str) -> E:
        """As ``from_proto``, for a field that UNSPECIFIED cannot stand for."""
        member = self.from_proto(number, field)
        if member is None:
            raise InvalidArgument(FieldViolation(field, "is required"))
        return member


JOB_TYPES = EnumTable(
    JobType,
    job_pb2.JobType,
    {JobType.ONE_TIME: job_pb2.JOB_TYPE_ONE_TIME, JobType.RECURRING: job_pb2.JOB_TYPE_RECURRING},
)
JOB_STATES = EnumTable(
    JobState,
    job_pb2.JobState,
    {
        JobState.ACTIVE: job_pb2.JOB_STATE_ACTIVE,
        JobState.PAUSED: job_pb2.JOB_STATE_PAUSED,
        JobState.COMPLETED: job_pb2.JOB_STATE_COMPLETED,
        JobState.DELETED: job_pb2.JOB_STATE_DELETED,
    },
)
RETRY_STRATEGIES = EnumTable(
    RetryStrategy,
    job_pb2.RetryStrategy,
    {
        RetryStrategy.EXPONENTIAL_BACKOFF: job_pb2.RETRY_STRATEGY_EXPONENTIAL_BACKOFF,
        RetryStrategy.LINEAR_BACKOFF: job_pb2.RETRY_STRATEGY_LINEAR_BACKOFF,
        RetryStrategy.FIXED_BACKOFF: job_pb2.RETRY_STRATEGY_FIXED_BACKOFF,
    },
)
MISFIRE_POLICIES = EnumTable(
    MisfirePolicy,
    job_pb2.MisfirePolicy,
    {
        MisfirePolicy.SKIP: job_pb2.MISFIRE_POLICY_SKIP,
        MisfirePolicy.RUN_ONCE: job_pb2.MISFIRE_POLICY_RUN_ONCE,
        MisfirePolicy.RUN_ALL: job_pb2.MISFIRE_POLICY_RUN_ALL,
    },
)
OVERLAP_POLICIES = EnumTable(
    OverlapPolicy,
    job_pb2.OverlapPolicy,
    {
        OverlapPolicy.ALLOW: job_pb2.OVERLAP_POLICY_ALLOW,
        OverlapPolicy.FORBID: job_pb2.OVERLAP_POLICY_FORBID,
        OverlapPolicy.REPLACE: job_pb2.OVERLAP_POLICY_REPLACE,
    },
)
NETWORKS = EnumTable(
    Network,
    job_pb2.Network,
    {Network.NONE: job_pb2.NETWORK_NONE, Network.HOST: job_pb2.NETWORK_HOST},
)
RUN_STATUSES = EnumTable(
    RunStatus,
    run_pb2.RunStatus,
    {
        RunStatus.PENDING: run_pb2.RUN_STATUS_PENDING,
        RunStatus.QUEUED: run_pb2.RUN_STATUS_QUEUED,
        RunStatus.RUNNING: run_pb2.RUN_STATUS_RUNNING,
        RunStatus.SUCCEEDED: run_pb2.RUN_STATUS_SUCCEEDED,
        RunStatus.FAILED: run_pb2.RUN_STATUS_FAILED,
        RunStatus.TIMED_OUT: run_pb2.RUN_STATUS_TIMED_OUT,
        RunStatus.CANCELLED: run_pb2.RUN_STATUS_CANCELLED,
        RunStatus.LOST: run_pb2.RUN_STATUS_LOST,
        RunStatus.SKIPPED: run_pb2.RUN_STATUS_SKIPPED,
    },
)
RUN_TRIGGERS = EnumTable(
    RunTrigger,
    run_pb2.RunTrigger,
    {
        RunTrigger.SCHEDULE: run_pb2.RUN_TRIGGER_SCHEDULE,
        RunTrigger.MANUAL: run_pb2.RUN_TRIGGER_MANUAL,
        RunTrigger.RETRY: run_pb2.RUN_TRIGGER_RETRY,
        RunTrigger.CATCH_UP: run_pb2.RUN_TRIGGER_CATCH_UP,
    },
)
LOG_STREAMS = EnumTable(
    LogStream,
    run_pb2.LogStream,
    {LogStream.STDOUT: run_pb2.LOG_STREAM_STDOUT, LogStream.STDERR: run_pb2.LOG_STREAM_STDERR},
)
ROLES = EnumTable(
    Role,
    auth_pb2.Role,
    {Role.ADMIN: auth_pb2.ROLE_ADMIN, Role.USER: auth_pb2.ROLE_USER, Role.VIEWER: auth_pb2.ROLE_VIEWER},
)
HEALTH_STATUSES = EnumTable(
    HealthStatus,
    health_pb2.HealthStatus,
    {
        HealthStatus.SERVING: health_pb2.HEALTH_STATUS_SERVING,
        HealthStatus.DEGRADED: health_pb2.HEALTH_STATUS_DEGRADED,
        HealthStatus.NOT_SERVING: health_pb2.HEALTH_STATUS_NOT_SERVING,
    },
)


# Timestamps ------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp_to_proto(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.astimezone(UTC)
    since = value - _EPOCH  # exact, unlike Timestamp.FromDatetime's time-tuple round trip, and cheaper
    return Timestamp(seconds=since.days * 86400 + since.seconds, nanos=since.microseconds * 1000)


def timestamp_from_proto(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def optional_timestamp(message: Any, name: str) -> datetime | None:
    """The Timestamp field ``name`` of ``message``; None when it is not set."""
    return timestamp_from_proto(getattr(message, name)) if message.HasField(name) else None


# Jobs ------------------------------------------------------------------------------


def retry_policy_to_proto(policy: RetryPolicy) -> job_pb2.RetryPolicy:
    return job_pb2.RetryPolicy(
        max_attempts=policy.max_attempts,
        strategy=RETRY_STRATEGIES.to_proto(policy.strategy),
        initial_delay_seconds=policy.initial_delay_seconds,
        max_delay_seconds=policy.max_delay_seconds,
        multiplier=policy.multiplier,
    )


def retry_policy_from_proto(pb: job_pb2.RetryPolicy, field: str = "job.retry_policy") -> RetryPolicy:
    """Zero values take their defaults; the domain's rules are checked later
    (validation.check_retry_policy), all but the one only the wire can tell."""
    policy = _retry_policy(pb, field)
    _refuse_stray_multiplier(pb.multiplier, policy.strategy, field)
    return policy


def _retry_policy(pb: job_pb2.RetryPolicy, field: str) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=pb.max_attempts or 1,
        strategy=RETRY_STRATEGIES.from_proto(pb.strategy, f"{field}.strategy") or RetryStrategy.EXPONENTIAL_BACKOFF,
        initial_delay_seconds=pb.initial_delay_seconds,
        max_delay_seconds=pb.max_delay_seconds or DEFAULT_MAX_DELAY_SECONDS,
        multiplier=pb.multiplier or DEFAULT_MULTIPLIER,
    )


def _refuse_stray_multiplier(sent: float, strategy: RetryStrategy, field: str) -> None:
    """A multiplier sent (any number but 0, NaN included) for a strategy that has none.
    Once decoded, one sent as 2 and one left out (2 by default) look alike."""
    if sent and strategy is not RetryStrategy.EXPONENTIAL_BACKOFF:
        raise InvalidArgument(
            FieldViolation(f"{field}.multiplier", "applies only to RETRY_STRATEGY_EXPONENTIAL_BACKOFF")
        )


def job_to_proto(job: Job) -> job_pb2.Job:
    return job_pb2.Job(
        id=job.id,
        owner_id=job.owner_id,
        name=job.name,
        job_type=JOB_TYPES.to_proto(job.job_type),
        cron_expr=job.cron_expr,
        timezone=job.timezone,
        scheduled_at=timestamp_to_proto(job.scheduled_at),
        script_content=job.script_content,
        timeout_seconds=job.timeout_seconds,
        retry_policy=retry_policy_to_proto(job.retry_policy),
        misfire_policy=MISFIRE_POLICIES.to_proto(job.misfire_policy),
        overlap_policy=OVERLAP_POLICIES.to_proto(job.overlap_policy),
        queue=job.queue,
        state=JOB_STATES.to_proto(job.state),
        version=job.version,
        create_time=timestamp_to_proto(job.create_time),
        update_time=timestamp_to_proto(job.update_time),
        max_lateness_seconds=job.max_lateness_seconds,
        next_fire_time=timestamp_to_proto(job.next_fire_time),
        network=NETWORKS.to_proto(job.network),
        schedule_description=cron.describe(job.cron_expr) if job.job_type is JobType.RECURRING else "",
    )


def job_from_proto(pb: job_pb2.Job, field: str = "job") -> Job:
    """A client's job (CreateJob): zero values take their defaults, output-only fields
    (id, owner, state, version, times) are dropped."""
    job = _job(pb, field)
    _refuse_stray_multiplier(pb.retry_policy.multiplier, job.retry_policy.strategy, f"{field}.retry_policy")
    return job


def _job(pb: job_pb2.Job, field: str) -> Job:
    return Job(
        name=pb.name,
        job_type=JOB_TYPES.from_proto(pb.job_type, f"{field}.job_type"),
        cron_expr=pb.cron_expr.strip(),
        timezone=pb.timezone or "UTC",
        scheduled_at=optional_timestamp(pb, "scheduled_at"),
        script_content=pb.script_content,
        timeout_seconds=pb.timeout_seconds or DEFAULT_TIMEOUT_SECONDS,
        retry_policy=_retry_policy(pb.retry_policy, f"{field}.retry_policy"),
        misfire_policy=MISFIRE_POLICIES.from_proto(pb.misfire_policy, f"{field}.misfire_policy")
        or MisfirePolicy.RUN_ONCE,
        overlap_policy=OVERLAP_POLICIES.from_proto(pb.overlap_policy, f"{field}.overlap_policy") or OverlapPolicy.ALLOW,
        queue=pb.queue or DEFAULT_QUEUE,
        max_lateness_seconds=pb.max_lateness_seconds,
        network=NETWORKS.from_proto(pb.network, f"{field}.network") or Network.NONE,
    )


def job_answer_from_proto(pb: job_pb2.Job, field: str = "job") -> Job:
    """A job as the services answer it (a client reads it), output-only fields included."""
    return replace(
        _job(pb, field),
        id=pb.id,
        owner_id=pb.owner_id,
        state=JOB_STATES.required(pb.state, f"{field}.state"),
        version=pb.version,
        create_time=optional_timestamp(pb, "create_time"),
        update_time=optional_timestamp(pb, "update_time"),
        next_fire_time=optional_timestamp(pb, "next_fire_time"),
    )


_RETRY_FIELDS = frozenset(f.name for f in fields(RetryPolicy))


def job_changes_from_proto(pb: job_pb2.Job, paths: list[str], current: Job, field: str = "job") -> dict[str, Any]:
    """The fields an UpdateJob changes, as domain values.

    ``paths`` is the update mask; empty means every field the client set to a
    non-default value. ``retry_policy.<field>`` paths change one policy field.
    Unknown paths come back under their own name so the caller can reject them.
    """
    incoming = _job(pb, field)
    if not paths:
        paths = [f.name for f, _ in pb.ListFields() if f.name not in ("id", "version")]
    changes: dict[str, Any] = {}
    policy_changes: dict[str, Any] = {}
    multiplier_sent = False
    for path in paths:
        head, _, sub = path.partition(".")
        if head == "retry_policy" and sub:
            if sub in _RETRY_FIELDS:
                policy_changes[sub] = getattr(incoming.retry_policy, sub)
                multiplier_sent = multiplier_sent or sub == "multiplier"
            else:
                changes[path] = None
        elif head == "retry_policy":
            changes["retry_policy"] = incoming.retry_policy
            multiplier_sent = True
        elif head == "scheduled_at":
            changes["scheduled_at"] = incoming.scheduled_at
        else:
            changes[path] = getattr(incoming, path, None)
    if policy_changes:
        base = changes.get("retry_policy", current.retry_policy)
        changes["retry_policy"] = replace(base, **policy_changes)
    if multiplier_sent:
        strategy = changes["retry_policy"].strategy  # after the update: the current one unless it changes too
        _refuse_stray_multiplier(pb.retry_policy.multiplier, strategy, f"{field}.retry_policy")
    return changes


def job_page_to_proto(page: Page[Job]) -> job_pb2.ListJobsResponse:
    return job_pb2.ListJobsResponse(
        jobs=[job_to_proto(j) for j in page.items],
        next_page_token=page.next_page_token,
        total_size=page.total_size or 0,
    )


def fire_time_to_proto(slot: PreviewSlot) -> job_pb2.FireTime:
    return job_pb2.FireTime(
        time=timestamp_to_proto(slot.at),
        local_time=slot.local.isoformat(),
        utc_offset=slot.utc_offset,
        dst_transition=slot.dst_transition,
        note=slot.note,
    )


def fire_time_from_proto(pb: job_pb2.FireTime) -> PreviewSlot:
    return PreviewSlot(
        at=timestamp_from_proto(pb.time),
        local=datetime.fromisoformat(pb.local_time),
        utc_offset=pb.utc_offset,
        dst_transition=pb.dst_transition,
        note=pb.note,
    )


def preview_to_proto(slots: Iterable[PreviewSlot], description: str) -> job_pb2.PreviewScheduleResponse:
    return job_pb2.PreviewScheduleResponse(fire_times=[fire_time_to_proto(s) for s in slots], description=description)


# Runs ------------------------------------------------------------------------------


def run_to_proto(run: Run) -> run_pb2.Run:
    return run_pb2.Run(
        id=run.id,
        job_id=run.job_id,
        attempt=run.attempt,
        status=RUN_STATUSES.to_proto(run.status),
        trigger=RUN_TRIGGERS.to_proto(run.trigger),
        scheduled_at=timestamp_to_proto(run.scheduled_at),
        queued_at=timestamp_to_proto(run.queued_at),
        started_at=timestamp_to_proto(run.started_at),
        finished_at=timestamp_to_proto(run.finished_at),
        worker_id=run.worker_id,
        exit_code=run.exit_code,
        error=run.error,
        skip_reason=run.skip_reason,
        due_at=timestamp_to_proto(run.due_at),
    )


def run_from_proto(pb: run_pb2.Run, field: str = "run") -> Run:
    """A run as the services answer it; what the wire does not carry (the fencing
    token, the queue, a cancel asked for) takes its default."""
    return Run(
        id=pb.id,
        job_id=pb.job_id,
        attempt=pb.attempt,
        status=RUN_STATUSES.required(pb.status, f"{field}.status"),
        trigger=RUN_TRIGGERS.required(pb.trigger, f"{field}.trigger"),
        scheduled_at=timestamp_from_proto(pb.scheduled_at),
        due_at=timestamp_from_proto(pb.due_at),
        queued_at=optional_timestamp(pb, "queued_at"),
        started_at=optional_timestamp(pb, "started_at"),
        finished_at=optional_timestamp(pb, "finished_at"),
        worker_id=pb.worker_id,
        exit_code=pb.exit_code,
        error=pb.error,
        skip_reason=pb.skip_reason,
    )


def run_page_to_proto(page: Page[Run]) -> run_pb2.ListRunsResponse:
    return run_pb2.ListRunsResponse(runs=[run_to_proto(r) for r in page.items], next_page_token=page.next_page_token)


def run_output_to_proto(output: RunOutput) -> run_pb2.GetRunLogsResponse:
    return run_pb2.GetRunLogsResponse(
        run_id=output.run_id,
        stdout=output.stdout,
        stderr=output.stderr,
        stdout_truncated=output.stdout_truncated,
        stderr_truncated=output.stderr_truncated,
    )


def run_output_from_proto(pb: run_pb2.GetRunLogsResponse) -> RunOutput:
    return RunOutput(pb.run_id, pb.stdout, pb.stderr, pb.stdout_truncated, pb.stderr_truncated)


def watch_event_to_proto(event: WatchEvent) -> run_pb2.WatchRunResponse:
    if isinstance(event, OutputChunk):
        chunk = run_pb2.LogChunk(stream=LOG_STREAMS.to_proto(event.stream), data=event.data)
        return run_pb2.WatchRunResponse(chunk=chunk)
    return run_pb2.WatchRunResponse(run=run_to_proto(event))


def watch_event_from_proto(pb: run_pb2.WatchRunResponse) -> WatchEvent:
    if pb.WhichOneof("event") == "chunk":
        return OutputChunk(LOG_STREAMS.required(pb.chunk.stream, "chunk.stream"), pb.chunk.data)
    return run_from_proto(pb.run)


# Accounts --------------------------------------------------------------------------


def user_to_proto(user: User) -> auth_pb2.User:
    return auth_pb2.User(
        id=user.id,
        username=user.username,
        email=user.email,
        role=ROLES.to_proto(user.role),
        create_time=timestamp_to_proto(user.create_time),
        disabled=user.disabled,
    )


def user_from_proto(pb: auth_pb2.User, field: str = "user") -> User:
    """An account as the services answer it; its password hash and token version
    never leave the server, so they come back empty."""
    return User(
        id=pb.id,
        username=pb.username,
        email=pb.email,
        role=ROLES.required(pb.role, f"{field}.role"),
        password_hash="",
        create_time=timestamp_from_proto(pb.create_time),
        disabled=pb.disabled,
    )


def user_page_to_proto(page: Page[User]) -> auth_pb2.ListUsersResponse:
    return auth_pb2.ListUsersResponse(
        users=[user_to_proto(u) for u in page.items], next_page_token=page.next_page_token
    )


SessionResponse = TypeVar(
    "SessionResponse",
    auth_pb2.SignUpResponse,
    auth_pb2.LoginResponse,
    auth_pb2.RefreshResponse,
    auth_pb2.ChangePasswordResponse,
)


def session_to_proto(session: Session, response: type[SessionResponse]) -> SessionResponse:
    """A new session as any of the responses that carry one (they share their fields)."""
    return response(
        access_token=session.access_token,
        token=session.access_token,
        refresh_token=session.refresh_token,
        user_id=session.user.id,
        email=session.user.email,
        role=ROLES.to_proto(session.user.role),
        expires_in=session.expires_in,
        username=session.user.username,
    )


def session_from_proto(pb: SessionResponse, user: User) -> Session:
    """A session as a client receives it; the answer names the user only in part, so
    the caller passes the account (GetCurrentUser) it belongs to."""
    return Session(
        access_token=pb.access_token or pb.token,
        refresh_token=pb.refresh_token,
        user=user,
        expires_in=pb.expires_in,
    )


# Health ----------------------------------------------------------------------------


def health_report_to_proto(report: HealthReport) -> health_pb2.GetHealthResponse:
    return health_pb2.GetHealthResponse(
        status=HEALTH_STATUSES.to_proto(report.status),
        components=[
            health_pb2.ComponentHealth(name=c.name, status=HEALTH_STATUSES.to_proto(c.status), detail=c.detail)
            for c in report.components
        ],
        check_time=timestamp_to_proto(report.checked_at),
    )


def health_report_from_proto(pb: health_pb2.GetHealthResponse) -> HealthReport:
    return HealthReport(
        status=HEALTH_STATUSES.required(pb.status, "status"),
        components=[
            Component(c.name, HEALTH_STATUSES.required(c.status, f"components[{i}].status"), c.detail)
            for i, c in enumerate(pb.components)
        ],
        checked_at=timestamp_from_proto(pb.check_time),
    )


def figures_to_proto(figures: Figures) -> health_pb2.GetMetricsResponse:
    return health_pb2.GetMetricsResponse(
        jobs_by_state=figures.jobs_by_state,
        runs_by_status=figures.runs_by_status,
        queue_depths=figures.queue_depths,
        workers_alive=figures.workers_alive,
        oldest_pending_age_seconds=figures.oldest_pending_age_seconds,
        runs_last_minute=figures.runs_last_minute,
        runs_last_hour=figures.runs_last_hour,
        lateness_p50_seconds=figures.lateness_p50_seconds,
        lateness_p99_seconds=figures.lateness_p99_seconds,
        lateness_sample_size=figures.lateness_sample_size,
        schedulers_alive=figures.schedulers_alive,
    )


def figures_from_proto(pb: health_pb2.GetMetricsResponse) -> Figures:
    return Figures(
        jobs_by_state=dict(pb.jobs_by_state),
        runs_by_status=dict(pb.runs_by_status),
        queue_depths=dict(pb.queue_depths),
        workers_alive=pb.workers_alive,
        oldest_pending_age_seconds=pb.oldest_pending_age_seconds,
        runs_last_minute=pb.runs_last_minute,
        runs_last_hour=pb.runs_last_hour,
        lateness_p50_seconds=pb.lateness_p50_seconds,
        lateness_p99_seconds=pb.lateness_p99_seconds,
        lateness_sample_size=pb.lateness_sample_size,
        schedulers_alive=pb.schedulers_alive,
    )
