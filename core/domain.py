"""Domain types: what jobs, runs, accounts and the mesh's health are, and their pure rules.

Statuses and policies are ``str`` enums whose values are stored in the database;
domain objects are frozen dataclasses. None of them knows protobuf: core/convert.py
is the one place they are read from and written to the wire.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime
from typing import Any, TypeVar

from core.auth import Role


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


class LogStream(enum.StrEnum):
    """Which of a run's output streams a piece of its output came from."""

    STDOUT = "stdout"
    STDERR = "stderr"


class SkipReason(enum.StrEnum):
    PAUSED = "paused"
    OVERLAP = "overlap"
    MISFIRE = "misfire"
    LATE = "late"
    REPLACED = "replaced"
    JOB_DELETED = "job_deleted"


T = TypeVar("T")


def assembled(kind: type[T], fields: dict[str, Any]) -> T:
    """A frozen dataclass from values that already hold every field, typed, without
    its generated ``__init__`` (which sets each field through ``object.__setattr__``):
    for copies and database rows on hot paths."""
    obj = object.__new__(kind)
    vars(obj).update(fields)
    return obj


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
    # Its cancel was asked for (by a user, or by a REPLACE overlap): however it ends, no retry follows.
    cancel_requested: bool = False


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


@dataclass(frozen=True)
class Session:
    """What signing up, logging in or refreshing gives: a new access and refresh token."""

    access_token: str
    refresh_token: str
    user: User
    expires_in: int


@dataclass(frozen=True)
class PreviewSlot:
    """One fire time of a schedule preview."""

    at: datetime
    local: datetime
    utc_offset: str
    dst_transition: bool
    note: str


@dataclass(frozen=True)
class OutputChunk:
    """A piece of a run's output, as a watcher receives it."""

    stream: LogStream
    data: str


WatchEvent = Run | OutputChunk


class HealthStatus(enum.StrEnum):
    SERVING = "SERVING"
    DEGRADED = "DEGRADED"  # working, with a part missing (no worker alive, one running unsandboxed)
    NOT_SERVING = "NOT_SERVING"


@dataclass(frozen=True)
class Component:
    name: str
    status: HealthStatus
    detail: str


@dataclass(frozen=True)
class HealthReport:
    status: HealthStatus
    components: list[Component]
    checked_at: datetime


@dataclass(frozen=True)
class Figures:
    jobs_by_state: dict[str, int] = field(default_factory=dict)
    runs_by_status: dict[str, int] = field(default_factory=dict)
    queue_depths: dict[str, int] = field(default_factory=dict)
    workers_alive: int = 0
    oldest_pending_age_seconds: float = 0.0
    runs_last_minute: int = 0
    runs_last_hour: int = 0
    lateness_p50_seconds: float = 0.0
    lateness_p99_seconds: float = 0.0
    lateness_sample_size: int = 0
    schedulers_alive: int = 0
