"""Database rows → domain objects (shared by the repositories).

Every run on the hot path is read this way three times (claimed, taken, finished), so
the objects are built directly: enum members looked up by value in a dict, and the
frozen dataclasses ``assembled`` without their generated ``__init__``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any, TypeVar

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
    assembled,
)

E = TypeVar("E", bound=enum.Enum)


def _members(kind: type[E]) -> dict[Any, E]:
    return {member.value: member for member in kind}


_JOB_TYPE = _members(JobType)
_JOB_STATE = _members(JobState)
_RETRY_STRATEGY = _members(RetryStrategy)
_MISFIRE = _members(MisfirePolicy)
_OVERLAP = _members(OverlapPolicy)
_NETWORK = _members(Network)
_RUN_STATUS = _members(RunStatus)
_RUN_TRIGGER = _members(RunTrigger)


def job_from_row(row: Any, names: Sequence[str] | None = None) -> Job:
    # One dict, not an attribute lookup per column: a row without a column (the
    # script, the cursor) would raise and catch an AttributeError for each. ``names``,
    # the result's keys, saves working them out again for every row.
    r = dict(zip(names, row, strict=True)) if names is not None else row._asdict()
    retry = assembled(
        RetryPolicy,
        {
            "max_attempts": r["retry_max_attempts"],
            "strategy": _RETRY_STRATEGY[r["retry_strategy"]],
            "initial_delay_seconds": r["retry_initial_delay_seconds"],
            "max_delay_seconds": r["retry_max_delay_seconds"],
            "multiplier": r["retry_multiplier"],
        },
    )
    return assembled(
        Job,
        {
            "id": r["id"],
            "owner_id": r["owner_id"],
            "name": r["name"],
            "job_type": _JOB_TYPE[r["job_type"]],
            "cron_expr": r["cron_expr"],
            "timezone": r["timezone"],
            "scheduled_at": r["scheduled_at"],
            "script_content": r.get("script_content", ""),
            "timeout_seconds": r["timeout_seconds"],
            "retry_policy": retry,
            "misfire_policy": _MISFIRE[r["misfire_policy"]],
            "overlap_policy": _OVERLAP[r["overlap_policy"]],
            "queue": r["queue"],
            "state": _JOB_STATE[r["state"]],
            "version": r["version"],
            "create_time": r["created_at"],
            "update_time": r["updated_at"],
            "max_lateness_seconds": r["max_lateness_seconds"],
            "next_fire_time": r.get("next_fire_at"),
            "network": _NETWORK[r["network"]],
        },
    )


def run_from_row(row: Any) -> Run:
    return assembled(
        Run,
        {
            "id": row.id,
            "job_id": row.job_id,
            "attempt": row.attempt,
            "status": _RUN_STATUS[row.status],
            "trigger": _RUN_TRIGGER[row.trigger],
            "scheduled_at": row.scheduled_at,
            "due_at": row.due_at,
            "queued_at": row.queued_at,
            "started_at": row.started_at,
            "finished_at": row.finished_at,
            "worker_id": row.worker_id,
            "exit_code": row.exit_code or 0,
            "error": row.error,
            "skip_reason": row.skip_reason,
            "fencing_token": row.fencing_token,
            "queue": row.queue,
            "cancel_requested": bool(row.cancel_requested),
        },
    )
