"""Password hashing (argon2id) off the event loop.

One argon2id check takes ~0.1 s of CPU. Done on the event loop, a flood of logins
would stall every loop of the process (the scheduler's materializer and dispatcher
among them). Here it runs in a few threads (argon2 releases the GIL) at a lower
priority, so the loop's thread wins the CPU, and at most ``threads + queue`` checks
are admitted at once: beyond that the caller gets RESOURCE_EXHAUSTED at once instead
of a queue that grows without end.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from argon2 import PasswordHasher as _Argon2
from argon2 import exceptions as argon2_errors

from core.errors import ResourceExhausted

log = logging.getLogger(__name__)

T = TypeVar("T")
# Added to the hashing threads' nice value (argon2's own lane threads inherit it).
HASHING_NICE_INCREMENT = 10
MAX_NICE = 19


class PasswordHasher:
    """argon2id with library defaults; ``needs_rehash`` tells when parameters changed."""

    def __init__(self) -> None:
        self._argon = _Argon2()

    def hash(self, password: str) -> str:
        return self._argon.hash(password)

    def verify(self, stored_hash: str, password: str) -> bool:
        try:
            return bool(self._argon.verify(stored_hash, password))
        except (argon2_errors.VerificationError, argon2_errors.InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        try:
            return bool(self._argon.check_needs_rehash(stored_hash))
        except argon2_errors.InvalidHashError:
            return True


def _lower_priority() -> None:
    """Runs first in each hashing thread: raise this thread's nice value (Linux
    schedules threads apart, so the event loop's thread keeps its priority)."""
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(MAX_NICE, current + HASHING_NICE_INCREMENT))
    except (OSError, AttributeError) as exc:  # not Linux, or not permitted: full priority
        log.debug("hashing thread keeps its priority: %s", exc)


class HashingPool:
    """``hash``/``verify`` in a bounded pool of low-priority threads."""

    def __init__(self, threads: int, queue: int) -> None:
        self._hasher = PasswordHasher()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, threads), thread_name_prefix="argon2", initializer=_lower_priority
        )
        self._capacity = max(1, threads) + max(0, queue)
        self._pending = 0  # admitted and not finished; changed on the event loop's thread only

    def has_room(self) -> bool:
        return self._pending < self._capacity

    async def hash(self, password: str) -> str:
        return await self._run(self._hasher.hash, password)

    async def verify(self, stored_hash: str, password: str) -> bool:
        return await self._run(self._hasher.verify, stored_hash, password)

    def needs_rehash(self, stored_hash: str) -> bool:
        """Reads the hash's parameters only: cheap enough for the loop."""
        return self._hasher.needs_rehash(stored_hash)

    def hash_now(self, password: str) -> str:
        """On the caller's thread: for start-up only, before anything is served."""
        return self._hasher.hash(password)

    def _run(self, fn: Callable[..., T], *args: str) -> asyncio.Future[T]:
        # Admission is decided here, synchronously: a caller that checked has_room()
        # and calls this without awaiting in between is admitted.
        if not self.has_room():
            raise ResourceExhausted("too many password checks in progress; try again shortly", reason="HASHING_BUSY")
        loop = asyncio.get_running_loop()
        self._pending += 1
        future = self._executor.submit(fn, *args)

        def finished(_: concurrent.futures.Future[T]) -> None:
            # The slot is held until the thread is done, even if the caller went away.
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(self._release)

        future.add_done_callback(finished)
        return asyncio.wrap_future(future, loop=loop)

    def _release(self) -> None:
        self._pending -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
