"""Backoff of each strategy, with ±10 % jitter, capped at the max delay."""

from __future__ import annotations

import random

import pytest

from core.domain import RetryPolicy, RetryStrategy


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
