"""Domain types and their one proto <-> domain conversion.

Statuses and policies are ``str`` enums whose values are stored in the database;
the proto enum value for ``X`` is ``<PREFIX>_X`` and is mapped explicitly here.
Only this module, servicers and gateway clients import ``gen``.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field, replace
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from core.auth import Role
from gen.jobmesh.v1 import auth_pb2, job_pb2, run_pb2


class JobType(enum.StrEnum):
    ONE_TIME = "ONE_TIME"
    RECURRING = "RECURRING"


class JobState(enum.StrEnum):
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    DELETED = "DELETED"


class RetryStrategy(enum.StrEnum):
    EXPONENTIAL_BACKOFF = "EXPONENTIAL_BACKOFF"
    LINEAR_BACKOFF = "LINEAR_BACKOFF"
    FIXED_BACKOFF = "FIXED_BACKOFF"


class MisfirePolicy(enum.StrEnum):
    SKIP = "SKIP"
    RUN_ONCE = "RUN_ONCE"
    RUN_ALL = "RUN_ALL"


class OverlapPolicy(enum.StrEnum):
    ALLOW = "ALLOW"
    FORBID = "FORBID"
    REPLACE = "REPLACE"


class Network(enum.StrEnum):
    NONE = "NONE"
    HOST = "HOST"


class RunStatus(enum.StrEnum):
    PENDING = "PENDING"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    CANCELLED = "CANCELLED"
    LOST = "LOST"
    SKIPPED = "SKIPPED"

    @property
    def is_final(self) -> bool:
        return self not in (RunStatus.PENDING, RunStatus.QUEUED, RunStatus.RUNNING)

    @property
    def is_retryable(self) -> bool:
        return self in (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.LOST)


class RunTrigger(enum.StrEnum):
    SCHEDULE = "SCHEDULE"
    MANUAL = "MANUAL"
    RETRY = "RETRY"
    CATCH_UP = "CATCH_UP"


class SkipReason(enum.StrEnum):
    PAUSED = "paused"
    OVERLAP = "overlap"
    MISFIRE = "misfire"
    LATE = "late"
    REPLACED = "replaced"
    JOB_DELETED = "job_deleted"


E = TypeVar("E", bound=enum.StrEnum)
T = TypeVar("T")


def assembled(kind: type[T], fields: dict[str, Any]) -> T:
    """A frozen dataclass from values that already hold every field, typed, without
    its generated ``__init__`` (which sets each field through ``object.__setattr__``):
    for copies and database rows on hot paths."""
    obj = object.__new__(kind)
    vars(obj).update(fields)
    return obj


_PREFIX: dict[type[enum.StrEnum], tuple[str, Any]] = {
    JobType: ("JOB_TYPE_", job_pb2.JobType),
    JobState: ("JOB_STATE_", job_pb2.JobState),
    RetryStrategy: ("RETRY_STRATEGY_", job_pb2.RetryStrategy),
    MisfirePolicy: ("MISFIRE_POLICY_", job_pb2.MisfirePolicy),
    OverlapPolicy: ("OVERLAP_POLICY_", job_pb2.OverlapPolicy),
    Network: ("NETWORK_", job_pb2.Network),
    RunStatus: ("RUN_STATUS_", run_pb2.RunStatus),
    RunTrigger: ("RUN_TRIGGER_", run_pb2.RunTrigger),
    Role: ("ROLE_", auth_pb2.Role),
}


def _enum_tables() -> tuple[dict[enum.StrEnum, int], dict[type[enum.StrEnum], dict[int, Any]]]:
    """Each domain enum's members and their proto numbers, both ways (worked out once;
    a member without a proto value fails here, at import)."""
    to_proto: dict[enum.StrEnum, int] = {}
    from_proto: dict[type[enum.StrEnum], dict[int, Any]] = {}
    for cls, (prefix, proto_enum) in _PREFIX.items():
        from_proto[cls] = {}
        for member in cls:
            number: int = proto_enum.Value(prefix + member.value)
            to_proto[member] = number
            from_proto[cls][number] = member
    return to_proto, from_proto


_TO_PROTO, _FROM_PROTO = _enum_tables()


def enum_to_proto(value: enum.StrEnum | None) -> int:
    return 0 if value is None else _TO_PROTO[value]


def enum_from_proto(cls: type[E], number: int) -> E | None:
    """None for the UNSPECIFIED (0) value or an unknown number (requests holding an
    unknown number are refused before they get here: validation.check_request)."""
    member: E | None = _FROM_PROTO[cls].get(number)
    return member


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ts_to_proto(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.astimezone(UTC)
    since = value - _EPOCH  # exact, unlike Timestamp.FromDatetime's time-tuple round trip, and cheaper
    return Timestamp(seconds=since.days * 86400 + since.seconds, nanos=since.microseconds * 1000)


def ts_from_proto(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


DEFAULT_TIMEOUT_SECONDS = 3600
DEFAULT_MAX_DELAY_SECONDS = 86400
DEFAULT_MULTIPLIER = 2.0
DEFAULT_QUEUE = "default"


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 1
    strategy: RetryStrategy = RetryStrategy.EXPONENTIAL_BACKOFF
    initial_delay_seconds: int = 0
    max_delay_seconds: int = DEFAULT_MAX_DELAY_SECONDS
    multiplier: float = DEFAULT_MULTIPLIER

    def base_delay(self, failed_attempt: int) -> float:
        """Delay before attempt ``failed_attempt + 1``, without jitter."""
        d = float(self.initial_delay_seconds)
        if self.strategy is RetryStrategy.FIXED_BACKOFF:
            delay = d
        elif self.strategy is RetryStrategy.LINEAR_BACKOFF:
            delay = d * failed_attempt
        else:
            delay = d * self.multiplier ** (failed_attempt - 1)
        return min(delay, float(self.max_delay_seconds))

    def delay(self, failed_attempt: int, rng: random.Random | None = None) -> float:
        """``base_delay`` with ±10 % jitter (so retries of many runs spread out)."""
        jitter = (rng or random).uniform(-0.1, 0.1)
        return max(0.0, self.base_delay(failed_attempt) * (1.0 + jitter))

    def to_proto(self) -> job_pb2.RetryPolicy:
        return job_pb2.RetryPolicy(
            max_attempts=self.max_attempts,
            strategy=enum_to_proto(self.strategy),  # type: ignore[arg-type]
            initial_delay_seconds=self.initial_delay_seconds,
            max_delay_seconds=self.max_delay_seconds,
            multiplier=self.multiplier,
        )

    @classmethod
    def from_proto(cls, pb: job_pb2.RetryPolicy) -> RetryPolicy:
        """Defaults fill zero values (see the proto comments); validation comes after."""
        return cls(
            max_attempts=pb.max_attempts or 1,
            strategy=enum_from_proto(RetryStrategy, pb.strategy) or RetryStrategy.EXPONENTIAL_BACKOFF,
            initial_delay_seconds=pb.initial_delay_seconds,
            max_delay_seconds=pb.max_delay_seconds or DEFAULT_MAX_DELAY_SECONDS,
            multiplier=pb.multiplier or DEFAULT_MULTIPLIER,
        )


@dataclass(frozen=True)
class Job:
    id: str = ""
    owner_id: str = ""
    name: str = ""
    job_type: JobType | None = None
    cron_expr: str = ""
    timezone: str = "UTC"
    scheduled_at: datetime | None = None
    script_content: str = ""
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    misfire_policy: MisfirePolicy = MisfirePolicy.RUN_ONCE
    overlap_policy: OverlapPolicy = OverlapPolicy.ALLOW
    queue: str = DEFAULT_QUEUE
    state: JobState = JobState.ACTIVE
    version: int = 1
    create_time: datetime | None = None
    update_time: datetime | None = None
    max_lateness_seconds: int = 0
    next_fire_time: datetime | None = None
    network: Network = Network.NONE
    # Raw numbers as the client sent them, kept for validation messages.
    raw_multiplier: float | None = None

    def to_proto(self) -> job_pb2.Job:
        return job_pb2.Job(
            id=self.id,
            owner_id=self.owner_id,
            name=self.name,
            job_type=enum_to_proto(self.job_type),  # type: ignore[arg-type]
            cron_expr=self.cron_expr,
            timezone=self.timezone,
            scheduled_at=ts_to_proto(self.scheduled_at),
            script_content=self.script_content,
            timeout_seconds=self.timeout_seconds,
            retry_policy=self.retry_policy.to_proto(),
            misfire_policy=enum_to_proto(self.misfire_policy),  # type: ignore[arg-type]
            overlap_policy=enum_to_proto(self.overlap_policy),  # type: ignore[arg-type]
            queue=self.queue,
            state=enum_to_proto(self.state),  # type: ignore[arg-type]
            version=self.version,
            create_time=ts_to_proto(self.create_time),
            update_time=ts_to_proto(self.update_time),
            max_lateness_seconds=self.max_lateness_seconds,
            next_fire_time=ts_to_proto(self.next_fire_time),
            network=enum_to_proto(self.network),  # type: ignore[arg-type]
        )

    @classmethod
    def from_proto(cls, pb: job_pb2.Job) -> Job:
        """Client input → Job with defaults for unset fields (output-only fields dropped)."""
        return cls(
            name=pb.name,
            job_type=enum_from_proto(JobType, pb.job_type),
            cron_expr=pb.cron_expr.strip(),
            timezone=pb.timezone or "UTC",
            scheduled_at=ts_from_proto(pb.scheduled_at) if pb.HasField("scheduled_at") else None,
            script_content=pb.script_content,
            timeout_seconds=pb.timeout_seconds or DEFAULT_TIMEOUT_SECONDS,
            retry_policy=RetryPolicy.from_proto(pb.retry_policy),
            misfire_policy=enum_from_proto(MisfirePolicy, pb.misfire_policy) or MisfirePolicy.RUN_ONCE,
            overlap_policy=enum_from_proto(OverlapPolicy, pb.overlap_policy) or OverlapPolicy.ALLOW,
            queue=pb.queue or DEFAULT_QUEUE,
            max_lateness_seconds=pb.max_lateness_seconds,
            network=enum_from_proto(Network, pb.network) or Network.NONE,
            raw_multiplier=pb.retry_policy.multiplier,
        )

    def with_changes(self, **changes: Any) -> Job:
        """A copy with ``changes``; as ``dataclasses.replace`` but without re-running
        ``__init__`` over every field (this is on the path of every create)."""
        unknown = changes.keys() - _JOB_FIELDS
        if unknown:
            raise TypeError(f"Job has no field {', '.join(sorted(unknown))}")
        return assembled(Job, {**vars(self), **changes})


_JOB_FIELDS = frozenset(f.name for f in dataclass_fields(Job))


@dataclass(frozen=True)
class Run:
    id: str
    job_id: str
    attempt: int
    status: RunStatus
    trigger: RunTrigger
    scheduled_at: datetime
    due_at: datetime
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker_id: str = ""
    exit_code: int = 0
    error: str = ""
    skip_reason: str = ""
    fencing_token: str = ""
    queue: str = DEFAULT_QUEUE

    def to_proto(self) -> run_pb2.Run:
        return run_pb2.Run(
            id=self.id,
            job_id=self.job_id,
            attempt=self.attempt,
            status=enum_to_proto(self.status),  # type: ignore[arg-type]
            trigger=enum_to_proto(self.trigger),  # type: ignore[arg-type]
            scheduled_at=ts_to_proto(self.scheduled_at),
            queued_at=ts_to_proto(self.queued_at),
            started_at=ts_to_proto(self.started_at),
            finished_at=ts_to_proto(self.finished_at),
            worker_id=self.worker_id,
            exit_code=self.exit_code,
            error=self.error,
            skip_reason=self.skip_reason,
            due_at=ts_to_proto(self.due_at),
        )


@dataclass(frozen=True)
class RunOutput:
    run_id: str
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False


@dataclass(frozen=True)
class User:
    id: str
    username: str
    email: str
    role: Role
    password_hash: str
    create_time: datetime
    # Moves on whenever the account's sessions end (password change, disable): access
    # tokens carry the version they were issued under.
    token_version: int = 0
    disabled: bool = False

    def to_proto(self) -> auth_pb2.User:
        return auth_pb2.User(
            id=self.id,
            username=self.username,
            email=self.email,
            role=enum_to_proto(self.role),  # type: ignore[arg-type]
            create_time=ts_to_proto(self.create_time),
            disabled=self.disabled,
        )


_RETRY_FIELDS = {f.name for f in dataclass_fields(RetryPolicy)}


def job_changes_from_proto(pb: job_pb2.Job, paths: list[str], current: Job) -> dict[str, Any]:
    """The fields an UpdateJob changes, as domain values.

    ``paths`` is the update mask; empty means every field the client set to a
    non-default value. ``retry_policy.<field>`` paths change one policy field.
    Unknown paths come back under their own name so the caller can reject them.
    """
    incoming = Job.from_proto(pb)
    if not paths:
        paths = [f.name for f, _ in pb.ListFields() if f.name not in ("id", "version")]
    changes: dict[str, Any] = {}
    policy_changes: dict[str, Any] = {}
    for path in paths:
        head, _, sub = path.partition(".")
        if head == "retry_policy" and sub:
            if sub in _RETRY_FIELDS:
                policy_changes[sub] = getattr(incoming.retry_policy, sub)
                if sub == "multiplier":
                    changes["raw_multiplier"] = pb.retry_policy.multiplier
            else:
                changes[path] = None
        elif head == "retry_policy":
            changes["retry_policy"] = incoming.retry_policy
            changes["raw_multiplier"] = pb.retry_policy.multiplier
        elif head == "scheduled_at":
            changes["scheduled_at"] = incoming.scheduled_at
        else:
            changes[path] = getattr(incoming, path, None)
    if policy_changes:
        base = changes.get("retry_policy", current.retry_policy)
        changes["retry_policy"] = replace(base, **policy_changes)
    return changes
