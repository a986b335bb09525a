"""Backoff of each strategy, with ±10 % jitter, capped at the max delay; and what follows
an attempt that has ended: the next attempt, or, for a one-time job, its completion."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.attempts import completes_job, follow_up, next_attempt
from core.domain import Job, JobState, JobType, RetryPolicy, RetryStrategy, Run, RunStatus, RunTrigger


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (RetryStrategy.FIXED_BACKOFF, [10, 10, 10, 10, 10]),
        (RetryStrategy.LINEAR_BACKOFF, [10, 20, 30, 40, 50]),
        (RetryStrategy.EXPONENTIAL_BACKOFF, [10, 30, 90, 270, 500]),
    ],
)
def test_delays_within_jitter_bounds(strategy: RetryStrategy, expected: list[float]) -> None:
    policy = RetryPolicy(
        max_attempts=6, strategy=strategy, initial_delay_seconds=10, max_delay_seconds=500, multiplier=3
    )
    rng = random.Random(7)
    for attempt, base in enumerate(expected, start=1):
        assert policy.base_delay(attempt) == base
        samples = [policy.delay(attempt, rng) for _ in range(500)]
        assert all(base * 0.9 <= d <= base * 1.1 for d in samples)
        assert max(samples) - min(samples) > base * 0.1, "jitter spreads retries"


def test_zero_delay_stays_zero() -> None:
    assert RetryPolicy(max_attempts=3, initial_delay_seconds=0).delay(2) == 0


# What follows an ended attempt (core.attempts): decided without a database -----------

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SLOT = datetime(2026, 3, 1, 11, 0, tzinfo=UTC)


def job_with(max_attempts: int = 3, **changes: Any) -> Job:
    policy = RetryPolicy(max_attempts=max_attempts, strategy=RetryStrategy.FIXED_BACKOFF, initial_delay_seconds=60)
    return Job(id="j1", job_type=JobType.RECURRING, queue="reports", retry_policy=policy).with_changes(**changes)


def ended(status: RunStatus, attempt: int = 1, **changes: Any) -> Run:
    return replace(
        Run(
            id=f"r{attempt}",
            job_id="j1",
            attempt=attempt,
            status=status,
            trigger=RunTrigger.SCHEDULE if attempt == 1 else RunTrigger.RETRY,
            scheduled_at=SLOT,
            due_at=SLOT,
            worker_id="w1",
            fencing_token="t",
        ),
        **changes,
    )


@pytest.mark.parametrize("status", [RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.LOST])
def test_a_retryable_end_with_attempts_left_leads_to_the_next_attempt_of_the_same_slot(status: RunStatus) -> None:
    retry = next_attempt(ended(status, attempt=2), job_with(max_attempts=3), NOW, random.Random(1))
    assert retry is not None
    assert (retry.job_id, retry.attempt, retry.status, retry.trigger) == ("j1", 3, RunStatus.PENDING, RunTrigger.RETRY)
    assert retry.scheduled_at == SLOT, "the slot stays the slot it was"
    assert retry.queue == "reports"
    assert NOW + timedelta(seconds=54) <= retry.due_at <= NOW + timedelta(seconds=66), "the fixed delay, ±10 %"
    assert retry.id not in ("r2", "") and not retry.worker_id and not retry.fencing_token


@pytest.mark.parametrize(
    ("run", "job"),
    [
        (ended(RunStatus.SUCCEEDED), job_with()),
        (ended(RunStatus.CANCELLED), job_with()),
        (ended(RunStatus.FAILED, attempt=3), job_with(max_attempts=3)),
        (ended(RunStatus.FAILED), job_with(max_attempts=1)),
        (ended(RunStatus.FAILED, cancel_requested=True), job_with()),
        (ended(RunStatus.LOST), job_with(state=JobState.DELETED)),
    ],
    ids=["succeeded", "cancelled", "last-attempt", "no-retries", "cancel-asked-for", "job-deleted"],
)
def test_no_attempt_follows_an_end_for_good(run: Run, job: Job) -> None:
    assert next_attempt(run, job, NOW, random.Random(1)) is None


def test_the_same_draws_give_the_same_delay() -> None:
    first = next_attempt(ended(RunStatus.FAILED), job_with(), NOW, random.Random(5))
    again = next_attempt(ended(RunStatus.FAILED), job_with(), NOW, random.Random(5))
    assert first is not None and again is not None and first.due_at == again.due_at


def test_a_one_time_job_completes_with_its_slots_run_not_with_a_run_asked_for_by_hand() -> None:
    one_time = job_with(job_type=JobType.ONE_TIME)
    assert completes_job(ended(RunStatus.SUCCEEDED), one_time)
    assert completes_job(ended(RunStatus.FAILED, attempt=3), one_time), "a retry of its slot counts too"
    assert not completes_job(ended(RunStatus.SUCCEEDED, trigger=RunTrigger.MANUAL), one_time)
    assert not completes_job(ended(RunStatus.SUCCEEDED), job_with()), "a recurring job goes on"


def test_follow_up_retries_what_may_be_retried_and_completes_one_time_jobs_otherwise() -> None:
    jobs = {
        "j1": job_with(max_attempts=2),
        "j2": job_with(job_type=JobType.ONE_TIME).with_changes(id="j2"),
        "j3": job_with(job_type=JobType.ONE_TIME, max_attempts=2).with_changes(id="j3"),
    }
    runs = [
        ended(RunStatus.FAILED),  # j1: retried
        ended(RunStatus.SUCCEEDED, job_id="j2"),  # j2: done
        ended(RunStatus.FAILED, job_id="j3"),  # j3: retried, so not done yet
        ended(RunStatus.FAILED, job_id="gone"),  # its job is not there: nothing follows
    ]
    then = follow_up(runs, jobs, NOW, random.Random(1))
    assert [(r.job_id, r.attempt) for r in then.retries] == [("j1", 2), ("j3", 2)]
    assert then.completed_job_ids == ["j2"]
