"""Login throttling per (account, client address): growing delays, never a lock.

Every attempt is charged to its pair before the password is checked, in one atomic
step, so parallel guesses are counted one by one. The first ``free_failures``
attempts are checked at once; after that an attempt is checked only when the delay
earned by the attempts before it (``first_delay``, doubling, capped) has passed since
the last attempt that was checked. Attempts refused meanwhile are charged too, so
hammering only makes the wait longer. A correct password clears the pair. The owner
at another address has a pair of her own, and an unknown email has one just like an
existing account, so the answers never tell them apart.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

# A pair with no attempt for this long is forgotten (and starts with free attempts again).
FORGET_AFTER = timedelta(days=1)


@dataclass(frozen=True)
class LoginThrottle:
    free_failures: int = 5
    first_delay_seconds: float = 1.0
    max_delay_seconds: float = 900.0

    def delay(self, failures: int) -> float:
        """Seconds an attempt waits after ``failures`` charged ones: 0 for the free
        ones, then first_delay, doubling with each further one, up to max_delay."""
        if failures < self.free_failures:
            return 0.0
        doublings = min(failures - self.free_failures, 64)
        return float(min(self.max_delay_seconds, self.first_delay_seconds * 2.0**doublings))

    def wait(self, failures: int, last_checked: datetime | None, now: datetime) -> float:
        """Seconds until an attempt arriving at ``now`` may be checked, given the
        ``failures`` charged before it and when the last checked attempt came; 0: now."""
        delay = self.delay(failures)
        if delay <= 0 or last_checked is None:
            return 0.0
        return max(0.0, (last_checked + timedelta(seconds=delay) - now).total_seconds())


@dataclass(frozen=True)
class LoginCharge:
    """One attempt, charged: the pair's count including it, and whether it was let
    through to the password check."""

    failures: int
    admitted: bool

    def retry_after(self, throttle: LoginThrottle) -> int:
        """Whole seconds after which another attempt is sure to be checked: the delay
        it has earned, counted from now rather than from the last checked attempt, so
        the answer depends on the count alone and tells nothing of that attempt's time."""
        return max(1, math.ceil(throttle.delay(self.failures)))


def account_key(normalized_email: str) -> str:
    """The pair's account half: a fixed-width digest of the normalized email,
    the same whether or not an account has it."""
    return hashlib.sha256(normalized_email.encode()).hexdigest()
