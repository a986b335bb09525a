"""Rows → domain objects: assembled without the dataclasses' __init__, so every field
must be there and equal to what __init__ would have built."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from core.domain import (
    Job,
    JobState,
    JobType,
    MisfirePolicy,
    Network,
    OverlapPolicy,
    RetryPolicy,
    RetryStrategy,
    Run,
    RunStatus,
    RunTrigger,
)
from db.models import UtcDateTime
from db.repositories.rows import job_from_row, run_from_row

NOW = datetime(2026, 11, 27, 12, 30, 15, 250000, tzinfo=UTC)


def row(**columns: Any) -> SimpleNamespace:
    return SimpleNamespace(**columns, _asdict=lambda: dict(columns))


def job_columns(**changes: Any) -> dict[str, Any]:
    columns: dict[str, Any] = {
        "id": "j1", "owner_id": "u1", "name": "nightly", "job_type": "RECURRING", "cron_expr": "0 3 * * *",
        "timezone": "Europe/Paris", "scheduled_at": None, "script_content": "print(1)", "timeout_seconds": 90,
        "retry_max_attempts": 4, "retry_strategy": "LINEAR_BACKOFF", "retry_initial_delay_seconds": 5,
        "retry_max_delay_seconds": 600, "retry_multiplier": 1.5, "misfire_policy": "SKIP",
        "overlap_policy": "FORBID", "network": "HOST", "queue": "reports", "max_lateness_seconds": 30,
        "state": "PAUSED", "version": 7, "request_id": None, "created_at": NOW, "updated_at": NOW + timedelta(hours=1),
        "deleted_at": None,
    }  # fmt: skip
    columns.update(changes)
    return columns


def test_a_job_row_becomes_the_job_init_would_build() -> None:
    job = job_from_row(row(**job_columns(next_fire_at=NOW + timedelta(days=1))))
    expected = Job(
        id="j1", owner_id="u1", name="nightly", job_type=JobType.RECURRING, cron_expr="0 3 * * *",
        timezone="Europe/Paris", scheduled_at=None, script_content="print(1)", timeout_seconds=90,
        retry_policy=RetryPolicy(4, RetryStrategy.LINEAR_BACKOFF, 5, 600, 1.5),
        misfire_policy=MisfirePolicy.SKIP, overlap_policy=OverlapPolicy.FORBID, queue="reports",
        state=JobState.PAUSED, version=7, create_time=NOW, update_time=NOW + timedelta(hours=1),
        max_lateness_seconds=30, next_fire_time=NOW + timedelta(days=1), network=Network.HOST,
    )  # fmt: skip
    assert job == expected
    assert hash(job) == hash(expected)
    assert vars(job).keys() == {f.name for f in fields(Job)}
    assert vars(job.retry_policy).keys() == {f.name for f in fields(RetryPolicy)}
    assert job.retry_policy.base_delay(3) == 15.0


def test_a_job_row_without_script_or_cursor_gets_the_defaults() -> None:
    columns = job_columns(job_type="ONE_TIME", scheduled_at=NOW, state="ACTIVE")
    del columns["script_content"]
    job = job_from_row(row(**columns))
    assert job.script_content == ""
    assert job.next_fire_time is None
    assert job.job_type is JobType.ONE_TIME
    assert job.state is JobState.ACTIVE
    assert job.with_changes(state=JobState.COMPLETED).state is JobState.COMPLETED


def test_a_run_row_becomes_the_run_init_would_build() -> None:
    columns = {
        "id": "r1", "job_id": "j1", "attempt": 2, "status": "RUNNING", "trigger": "RETRY", "scheduled_at": NOW,
        "due_at": NOW + timedelta(seconds=5), "queued_at": NOW, "started_at": NOW + timedelta(seconds=6),
        "finished_at": None, "worker_id": "w1", "exit_code": None, "error": "", "skip_reason": "",
        "fencing_token": "abc", "queue": "default", "cancel_requested": False, "created_at": NOW,
    }  # fmt: skip
    run = run_from_row(row(**columns))
    expected = Run(
        id="r1", job_id="j1", attempt=2, status=RunStatus.RUNNING, trigger=RunTrigger.RETRY, scheduled_at=NOW,
        due_at=NOW + timedelta(seconds=5), queued_at=NOW, started_at=NOW + timedelta(seconds=6), finished_at=None,
        worker_id="w1", exit_code=0, error="", skip_reason="", fencing_token="abc", queue="default",
    )  # fmt: skip
    assert run == expected
    assert hash(run) == hash(expected)
    assert vars(run).keys() == {f.name for f in fields(Run)}


def test_a_job_row_read_by_the_result_keys_is_the_same_job() -> None:
    columns = job_columns()
    names = tuple(columns)
    values = tuple(columns.values())
    assert job_from_row(values, names) == job_from_row(row(**columns))


def test_utc_datetimes_are_stored_naive_utc_and_read_aware() -> None:
    column, dialect = UtcDateTime(), None
    paris = datetime(2026, 11, 27, 13, 30, 15, 250000, tzinfo=ZoneInfo("Europe/Paris"))
    stored = column.process_bind_param(paris, dialect)  # type: ignore[arg-type]
    assert stored == datetime(2026, 11, 27, 12, 30, 15, 250000)
    assert stored is not None and stored.tzinfo is None
    assert column.process_bind_param(NOW, dialect) == stored  # type: ignore[arg-type]
    read = column.process_result_value(stored, dialect)  # type: ignore[arg-type]
    assert read == NOW and read is not None and read.tzinfo is UTC
    assert column.process_bind_param(None, dialect) is None  # type: ignore[arg-type]
    assert column.process_result_value(None, dialect) is None  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="naive"):
        column.process_bind_param(datetime(2026, 1, 1), dialect)  # type: ignore[arg-type]
