"""The rule `jobmesh up` applies to a process that exits: restart with a doubling delay,
start afresh after a healthy run, give up when it keeps failing at start-up."""

from __future__ import annotations

import pytest

from launcher.restarts import CrashHistory, RestartDecision, RestartPolicy, after_exit, describe_exit

POLICY = RestartPolicy(
    initial_delay_seconds=0.5,
    max_delay_seconds=30.0,
    stable_after_seconds=30.0,
    startup_seconds=10.0,
    max_startup_failures=5,
)


def crashes(*uptimes: float) -> list[RestartDecision]:
    history = CrashHistory()
    decisions = []
    for uptime in uptimes:
        decision = after_exit(POLICY, history, uptime)
        decisions.append(decision)
        history = decision.history
    return decisions


def test_the_delay_doubles_with_each_crash_in_a_row_up_to_the_cap() -> None:
    decisions = crashes(*[20.0] * 9)  # each ran past start-up but not long enough to count as healthy
    assert [d.delay_seconds for d in decisions] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert not any(d.give_up for d in decisions)


def test_a_healthy_run_starts_the_backoff_afresh() -> None:
    decisions = crashes(20.0, 20.0, 20.0, 3600.0)
    assert [d.delay_seconds for d in decisions] == [0.5, 1, 2, 0.5]
    assert decisions[-1].history == CrashHistory(crashes=1, startup_failures=0)


def test_five_start_up_failures_in_a_row_give_up() -> None:
    decisions = crashes(0.1, 0.2, 1.0, 9.0, 0.3)
    assert [d.give_up for d in decisions] == [False, False, False, False, True]
    assert decisions[-1].history.startup_failures == 5


def test_a_run_past_start_up_breaks_the_start_up_streak() -> None:
    decisions = crashes(0.1, 0.1, 0.1, 0.1, 15.0, 0.1, 0.1, 0.1, 0.1)
    assert not any(d.give_up for d in decisions)
    assert decisions[-1].history.startup_failures == 4
    assert decisions[-1].delay_seconds == 30.0  # the backoff itself kept growing: no healthy run


def test_a_long_crash_loop_keeps_the_delay_finite() -> None:
    decisions = crashes(*[20.0] * 2000)
    assert decisions[-1].delay_seconds == 30.0 and not decisions[-1].give_up


@pytest.mark.parametrize(
    ("returncode", "said"),
    [(0, "exit code 0"), (3, "exit code 3"), (-9, "killed by SIGKILL"), (-15, "killed by SIGTERM")],
)
def test_an_exit_is_described_by_its_code_or_signal(returncode: int, said: str) -> None:
    assert describe_exit(returncode) == said
