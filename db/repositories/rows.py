"""Database rows → domain objects (shared by the repositories)."""

from __future__ import annotations

from typing import Any

from core.domain import (
    Job,
    JobState,
    JobType,
    MisfirePolicy,
    OverlapPolicy,
    RetryPolicy,
    RetryStrategy,
    Run,
    RunStatus,
    RunTrigger,
)


def job_from_row(row: Any) -> Job:
    return Job(
        id=row.id,
        owner_id=row.owner_id,
        name=row.name,
        job_type=JobType(row.job_type),
        cron_expr=row.cron_expr,
        timezone=row.timezone,
        scheduled_at=row.scheduled_at,
        script_content=getattr(row, "script_content", ""),
        timeout_seconds=row.timeout_seconds,
        retry_policy=RetryPolicy(
            max_attempts=row.retry_max_attempts,
            strategy=RetryStrategy(row.retry_strategy),
            initial_delay_seconds=row.retry_initial_delay_seconds,
            max_delay_seconds=row.retry_max_delay_seconds,
            multiplier=row.retry_multiplier,
        ),
        misfire_policy=MisfirePolicy(row.misfire_policy),
        overlap_policy=OverlapPolicy(row.overlap_policy),
        queue=row.queue,
        state=JobState(row.state),
        version=row.version,
        create_time=row.created_at,
        update_time=row.updated_at,
        max_lateness_seconds=row.max_lateness_seconds,
        next_fire_time=getattr(row, "next_fire_at", None),
    )


def run_from_row(row: Any) -> Run:
    return Run(
        id=row.id,
        job_id=row.job_id,
        attempt=row.attempt,
        status=RunStatus(row.status),
        trigger=RunTrigger(row.trigger),
        scheduled_at=row.scheduled_at,
        due_at=row.due_at,
        queued_at=row.queued_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        worker_id=row.worker_id,
        exit_code=row.exit_code or 0,
        error=row.error,
        skip_reason=row.skip_reason,
        fencing_token=row.fencing_token,
        queue=row.queue,
    )
