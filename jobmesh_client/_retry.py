"""Retrying calls the server could not take (UNAVAILABLE): capped exponential backoff
with full jitter, so many clients that lost the same server do not return in step."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from core import errors

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """``attempts`` calls in all; before the n-th retry a random wait in
    [0, min(max_delay, initial_delay * multiplier**(n-1))]."""

    attempts: int = 5
    initial_delay: float = 0.2
    max_delay: float = 5.0
    multiplier: float = 2.0

    def delays(self, rand: Callable[[], float] = random.random) -> Iterator[float]:
        """The waits before each retry (``attempts - 1`` of them)."""
        for n in range(max(self.attempts - 1, 0)):
            yield rand() * min(self.max_delay, self.initial_delay * self.multiplier**n)


DEFAULT_BACKOFF = Backoff()
NO_RETRY = Backoff(attempts=1)


async def with_retries(
    call: Callable[[], Awaitable[T]],
    backoff: Backoff,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """``call()``, again after a wait for as long as it raises ``Unavailable`` and
    attempts remain; any other error, or the last ``Unavailable``, is raised."""
    delays = backoff.delays()
    while True:
        try:
            return await call()
        except errors.Unavailable:
            delay = next(delays, None)
            if delay is None:
                raise
            await sleep(delay)
