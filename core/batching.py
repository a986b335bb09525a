"""Coalescing concurrent single-item calls into batched ones.

Many coroutines each ``await batcher.submit(item)``; the batcher hands up to
``max_items`` of them to ``flush`` at once and gives each caller its own result (or
the batch's error). Flushes run one after another and a flush starts as soon as
the previous one ended, so an idle batcher adds no delay and a busy one grows its
batches by itself: everything that arrived during one flush goes into the next.
While busy (the last batch held more than one item), a flush first waits up to
``linger`` for a full batch: fewer, larger batches cost less per item. This keeps
one database transaction per batch instead of one per run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(
        self,
        flush: Callable[[list[T]], Awaitable[Sequence[R]]],
        max_items: int = 200,
        linger: float = 0.0,
    ) -> None:
        self._flush = flush
        self._max_items = max_items
        self._linger = linger
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._wakeup = asyncio.Event()
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._busy = False

    async def submit(self, item: T) -> R:
        return await self.put(item)

    def put(self, item: T) -> asyncio.Future[R]:
        """Queue ``item`` without waiting; the future gets its result."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._wakeup.set()
        if len(self._pending) >= self._max_items:
            self._full.set()
        return future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            if self._busy and self._linger > 0 and not self._full.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), timeout=self._linger)
            batch, self._pending = self._pending[: self._max_items], self._pending[self._max_items :]
            if not self._pending:
                self._wakeup.clear()
            if len(self._pending) < self._max_items:
                self._full.clear()
            if not batch:
                continue
            self._busy = len(batch) > 1
            try:
                results = await self._flush([item for item, _ in batch])
            except Exception as exc:  # each caller decides how to retry
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
