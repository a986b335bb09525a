"""Background loops that survive their dependencies failing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from core.errors import JobmeshError

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 5.0


async def run_loop(
    name: str,
    tick: Callable[[], Awaitable[int]],
    interval: float,
    stop: asyncio.Event,
    full_batch: int | None = None,
    on_tick: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Call ``tick`` every ``interval`` seconds until ``stop`` is set.

    A tick that returned ``full_batch`` items runs again at once (there is more).
    Errors (database or Redis down) are logged and retried with backoff; the loop
    never dies of them.
    """
    backoff = interval
    while not stop.is_set():
        try:
            done = await tick()
            if on_tick is not None:
                await on_tick()
            backoff = interval
            if full_batch is not None and done >= full_batch:
                continue
            delay = interval
        except asyncio.CancelledError:
            raise
        except (JobmeshError, RedisError, ConnectionError, OSError, TimeoutError) as exc:
            log.warning("%s: %s", name, exc)
            backoff = min(MAX_BACKOFF_SECONDS, max(backoff * 2, 0.1))
            delay = backoff
        except Exception:
            log.exception("%s failed", name)
            backoff = min(MAX_BACKOFF_SECONDS, max(backoff * 2, 0.1))
            delay = backoff
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
