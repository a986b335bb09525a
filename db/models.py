"""SQLAlchemy 2 models. Times are naive UTC in the database (UtcDateTime converts).

On MySQL/MariaDB ``job_run`` is RANGE COLUMNS-partitioned hourly by
``scheduled_at`` (see db/partitions.py); hence no foreign keys anywhere and a
primary key that includes ``scheduled_at``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python, naive UTC with microseconds in the database."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "mysql":
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    # Both directions build the datetime with its constructor: on 3.11 that costs less
    # than half of ``replace(tzinfo=...)``, and every run row read or written holds
    # several of them.

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not UTC:
            if value.tzinfo is None:
                raise ValueError("naive datetime given to a UTC column")
            value = value.astimezone(UTC)
        v = value
        return datetime(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        v = value
        return datetime(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, UTC)


LongText = Text().with_variant(mysql.MEDIUMTEXT(), "mysql")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UserRow(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    token_version: Mapped[int] = mapped_column(Integer, server_default="0")
    disabled: Mapped[bool] = mapped_column(Boolean, server_default=false())


class LoginThrottleRow(Base):
    """Login attempts per (account, client address): the account is a digest of the
    normalized email, whether or not an account has it (core/throttle.py)."""

    __tablename__ = "login_throttle"
    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    client: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    checked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class RefreshTokenRow(Base):
    __tablename__ = "refresh_tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36), index=True)
    family_id: Mapped[str] = mapped_column(String(36), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The account's token version when issued: once it moves on, the token is dead.
    token_version: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class JobRow(Base):
    __tablename__ = "job_definition"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(36))
    name: Mapped[str] = mapped_column(String(200), default="")
    job_type: Mapped[str] = mapped_column(String(16))
    cron_expr: Mapped[str] = mapped_column(String(255), default="")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    scheduled_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    script_content: Mapped[str] = mapped_column(LongText)
    timeout_seconds: Mapped[int] = mapped_column(Integer)
    retry_max_attempts: Mapped[int] = mapped_column(Integer)
    retry_strategy: Mapped[str] = mapped_column(String(32))
    retry_initial_delay_seconds: Mapped[int] = mapped_column(Integer)
    retry_max_delay_seconds: Mapped[int] = mapped_column(Integer)
    retry_multiplier: Mapped[float] = mapped_column(Float)
    misfire_policy: Mapped[str] = mapped_column(String(16))
    overlap_policy: Mapped[str] = mapped_column(String(16))
    network: Mapped[str] = mapped_column(String(16), server_default="NONE")
    queue: Mapped[str] = mapped_column(String(64))
    max_lateness_seconds: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)

    __table_args__ = (
        UniqueConstraint("owner_id", "request_id"),
        Index("ix_job_definition_owner_state_created", "owner_id", "state", "created_at"),
        Index("ix_job_definition_state_created", "state", "created_at"),
    )


class ScheduleStateRow(Base):
    """The materializer's cursor: one row per active recurring job (the hot set)."""

    __tablename__ = "job_schedule_state"
    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    next_fire_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    last_fire_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)


class RunRow(Base):
    __tablename__ = "job_run"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    scheduled_at: Mapped[datetime] = mapped_column(UtcDateTime(), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(36))
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    trigger: Mapped[str] = mapped_column(String(16))
    queue: Mapped[str] = mapped_column(String(64))
    due_at: Mapped[datetime] = mapped_column(UtcDateTime())
    worker_id: Mapped[str] = mapped_column(String(128), default="")
    fencing_token: Mapped[str] = mapped_column(String(32), default="")
    queued_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str] = mapped_column(String(1000), default="")
    skip_reason: Mapped[str] = mapped_column(String(32), default="")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (
        UniqueConstraint("job_id", "scheduled_at", "attempt"),
        Index("ix_job_run_id", "id"),
        Index("ix_job_run_status_due", "status", "due_at"),
        Index("ix_job_run_status_worker", "status", "worker_id"),
        Index("ix_job_run_status_queued", "status", "queued_at"),
        Index("ix_job_run_job_status", "job_id", "status"),
        Index("ix_job_run_finished", "finished_at"),
    )


class RunOutputRow(Base):
    """Captured output tails, apart from the hot run rows."""

    __tablename__ = "run_output"
    run_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    scheduled_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    stdout: Mapped[str] = mapped_column(LongText, default="")
    stderr: Mapped[str] = mapped_column(LongText, default="")
    stdout_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    stderr_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
