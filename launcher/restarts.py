"""The rule ``jobmesh up`` applies when one of its processes exits: restart it after a
delay that doubles with every crash in a row, or give up when it keeps failing at start-up.

A pure function of the process's crash history and how long its last run lasted, so it is
tested without starting anything.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class RestartPolicy:
    """When and how soon a process that exited is started again."""

    initial_delay_seconds: float = 0.5
    max_delay_seconds: float = 30.0
    # A run that lasted this long was healthy: the next crash starts the backoff afresh.
    stable_after_seconds: float = 30.0
    # A run that ended sooner than this failed at start-up.
    startup_seconds: float = 10.0
    # This many start-up failures in a row: the process cannot start, so the mesh stops.
    max_startup_failures: int = 5


@dataclass(frozen=True)
class CrashHistory:
    """A process's crashes since it last ran long enough to count as healthy."""

    crashes: int = 0
    startup_failures: int = 0


@dataclass(frozen=True)
class RestartDecision:
    history: CrashHistory
    give_up: bool
    delay_seconds: float


def after_exit(policy: RestartPolicy, history: CrashHistory, uptime_seconds: float) -> RestartDecision:
    """What to do about a process that exited after running ``uptime_seconds``."""
    if uptime_seconds >= policy.stable_after_seconds:
        history = CrashHistory()
    early = uptime_seconds < policy.startup_seconds
    history = replace(
        history,
        crashes=history.crashes + 1,
        startup_failures=history.startup_failures + 1 if early else 0,
    )
    if history.startup_failures >= policy.max_startup_failures:
        return RestartDecision(history, give_up=True, delay_seconds=0.0)
    # min() first on the exponent keeps 2**n finite however long a process keeps crashing.
    delay = policy.initial_delay_seconds * 2 ** min(history.crashes - 1, 64)
    return RestartDecision(history, give_up=False, delay_seconds=min(delay, policy.max_delay_seconds))


def describe_exit(returncode: int) -> str:
    """``exit code 1`` or ``killed by SIGKILL`` (asyncio reports a signal as ``-signum``)."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"
