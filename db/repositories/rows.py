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
    # One dict, not an attribute lookup per column: a row without a column (the
    # script, the cursor) would raise and catch an AttributeError for each.
    r = row._asdict()
    return Job(
        id=r["id"],
        owner_id=r["owner_id"],
        name=r["name"],
        job_type=JobType(r["job_type"]),
        cron_expr=r["cron_expr"],
        timezone=r["timezone"],
        scheduled_at=r["scheduled_at"],
        script_content=r.get("script_content", ""),
        timeout_seconds=r["timeout_seconds"],
        retry_policy=RetryPolicy(
            max_attempts=r["retry_max_attempts"],
            strategy=RetryStrategy(r["retry_strategy"]),
            initial_delay_seconds=r["retry_initial_delay_seconds"],
            max_delay_seconds=r["retry_max_delay_seconds"],
            multiplier=r["retry_multiplier"],
        ),
        misfire_policy=MisfirePolicy(r["misfire_policy"]),
        overlap_policy=OverlapPolicy(r["overlap_policy"]),
        queue=r["queue"],
        state=JobState(r["state"]),
        version=r["version"],
        create_time=r["created_at"],
        update_time=r["updated_at"],
        max_lateness_seconds=r["max_lateness_seconds"],
        next_fire_time=r.get("next_fire_at"),
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
