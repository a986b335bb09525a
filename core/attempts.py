"""A run's attempts: how a run is made, what an attempt reports, and what follows it.

The rules are pure (no storage, no clock but the one passed in): the repository that
writes a batch of results asks ``follow_up`` what the ended attempts lead to (the next
attempt of each that may be retried, the one-time jobs now complete) and persists that.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from core.domain import Job, JobState, JobType, Run, RunOutput, RunStatus, RunTrigger
from core.ids import new_id


def new_run(
    job: Job,
    scheduled_at: datetime,
    trigger: RunTrigger,
    *,
    attempt: int = 1,
    due_at: datetime | None = None,
    status: RunStatus = RunStatus.PENDING,
    skip_reason: str = "",
    now: datetime | None = None,
) -> Run:
    return Run(
        id=new_id(),
        job_id=job.id,
        attempt=attempt,
        status=status,
        trigger=trigger,
        scheduled_at=scheduled_at,
        due_at=due_at or scheduled_at,
        queue=job.queue,
        skip_reason=skip_reason,
        finished_at=now if status is RunStatus.SKIPPED else None,
    )


@dataclass(frozen=True)
class RunResult:
    """What a worker (or the reaper) reports for one started attempt."""

    run_id: str
    scheduled_at: datetime
    fencing_token: str
    status: RunStatus
    exit_code: int = 0
    error: str = ""
    output: RunOutput | None = None
    started_at: datetime | None = None  # when the script really started (the take can be earlier)


@dataclass
class FinishOutcome:
    """What became of a batch of results: accepted (the attempt's token was current) or
    rejected (superseded), and the next attempts the accepted ones led to."""

    accepted: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    retries: list[Run] = field(default_factory=list)


def next_attempt(run: Run, job: Job, now: datetime, rng: random.Random | None = None) -> Run | None:
    """The attempt that follows ``run``, which has just ended with ``run.status``; None
    when it ends for good: it succeeded or was cancelled, its cancel was asked for, its
    job has no attempts left or was deleted. The next attempt keeps the slot
    (``scheduled_at``) and is due after the policy's delay, with jitter drawn from ``rng``."""
    if (
        not run.status.is_retryable
        or run.cancel_requested
        or run.attempt >= job.retry_policy.max_attempts
        or job.state is JobState.DELETED
    ):
        return None
    delay = job.retry_policy.delay(run.attempt, rng)
    return new_run(
        job, run.scheduled_at, RunTrigger.RETRY, attempt=run.attempt + 1, due_at=now + timedelta(seconds=delay)
    )


def completes_job(run: Run, job: Job) -> bool:
    """Whether ``run``, ended for good (no attempt follows), completes its job: a one-time
    job is done with its slot's run; a run asked for by hand (RunJobNow) is not that."""
    return job.job_type is JobType.ONE_TIME and run.trigger is not RunTrigger.MANUAL


@dataclass(frozen=True)
class FollowUp:
    retries: list[Run]  # the next attempts, to insert
    completed_job_ids: list[str]  # one-time jobs to mark COMPLETED (if still ACTIVE)


def follow_up(
    ended: Iterable[Run], jobs: Mapping[str, Job], now: datetime, rng: random.Random | None = None
) -> FollowUp:
    """What the runs in ``ended`` (each with the status it has just ended with) lead to,
    given their jobs by id; a run whose job is not in ``jobs`` leads to nothing."""
    retries: list[Run] = []
    completed: list[str] = []
    for run in ended:
        job = jobs.get(run.job_id)
        if job is None:
            continue
        retry = next_attempt(run, job, now, rng)
        if retry is not None:
            retries.append(retry)
        elif completes_job(run, job):
            completed.append(job.id)
    return FollowUp(retries, completed)
