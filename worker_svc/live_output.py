"""What a worker's runs print, on its way to their live logs in Redis.

The executor hands over output as it reads it (``put``, from a reader callback: it must
not wait); one task appends what is pending for every run to their logs, one Lua call
(``DispatchQueue.append_output``) per batch, and a batch starts as soon as the previous
one ended. A run's pending output is bounded like its log: when a script prints faster
than Redis takes it, only its newest ``runlog.LIVE_CAP_BYTES`` (in at most
``runlog.MAX_ENTRIES`` entries) wait, and the bytes dropped before them are counted,
so the log's offsets show the gap to its readers. Best effort: the result row, with
its captured tails, is what counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from redis.exceptions import RedisError

from core import runlog
from core.dispatch_queue import DispatchQueue
from core.domain import LogStream

log = logging.getLogger(__name__)

# The most output one append carries (a batch takes whole runs, so at least one run's).
BATCH_BYTES = 4 * 1024 * 1024
# How long the end of a run waits for its last output to reach its log.
FINISH_SECONDS = 2.0


def _is_continuation(byte: int) -> bool:
    return 0x80 <= byte < 0xC0


def _split_at(data: bytes | bytearray | memoryview, at: int) -> int:
    """The character boundary at or before ``at`` in UTF-8 ``data``."""
    while 0 < at < len(data) and _is_continuation(data[at]):
        at -= 1
    return at


def _cut_at(data: bytes | bytearray | memoryview, at: int) -> int:
    """The character boundary at or after ``at`` in UTF-8 ``data``."""
    while at < len(data) and _is_continuation(data[at]):
        at += 1
    return at


class PendingOutput:
    """One run's output not yet handed to Redis: entries of one stream each, at most
    ``entry_bytes`` each, ``max_entries`` and ``cap`` bytes in all (the newest ones),
    always split between characters."""

    def __init__(self, cap: int, max_entries: int, entry_bytes: int) -> None:
        self._cap = cap
        self._max_entries = max_entries
        self._entry_bytes = entry_bytes
        self._entries: deque[tuple[LogStream, bytearray]] = deque()
        self.size = 0
        self.dropped = 0  # bytes dropped before the first entry

    def __bool__(self) -> bool:
        return bool(self._entries)

    def add(self, stream: LogStream, data: bytes) -> None:
        view = memoryview(data)
        if len(view) > self._cap:  # only its newest bytes can stay, and nothing before it
            cut = _cut_at(view, len(view) - self._cap)
            self.dropped += self.size + cut
            self._entries.clear()
            self.size = 0
            view = view[cut:]
        while view:
            last = self._entries[-1] if self._entries else None
            room = self._entry_bytes - len(last[1]) if last is not None and last[0] == stream else 0
            take = len(view) if len(view) <= room else _split_at(view, room)
            if last is None or last[0] != stream or take == 0:
                last = (stream, bytearray())
                self._entries.append(last)
                take = len(view) if len(view) <= self._entry_bytes else _split_at(view, self._entry_bytes)
                take = take or _cut_at(view, 1)  # an entry holds at least one character
            last[1].extend(view[:take])
            self.size += take
            view = view[take:]
        self._shrink()

    def _shrink(self) -> None:
        while self.size > self._cap or len(self._entries) > self._max_entries:
            first = self._entries[0][1]
            excess = self.size - self._cap
            cut = len(first) if len(self._entries) > self._max_entries else _cut_at(first, min(excess, len(first)))
            if cut >= len(first):
                self._entries.popleft()
            else:
                del first[:cut]
            self.size -= cut
            self.dropped += cut

    def take(self) -> tuple[int, list[tuple[LogStream, bytes]]]:
        """What is pending (bytes dropped before it, its entries); empties it."""
        out = self.dropped, [(stream, bytes(data)) for stream, data in self._entries]
        self._entries.clear()
        self.size = 0
        self.dropped = 0
        return out


class _Run:
    def __init__(self, queue: str) -> None:
        self.queue = queue  # its live log is in its queue's slot (core.keys)
        self.pending = PendingOutput(runlog.LIVE_CAP_BYTES, runlog.MAX_ENTRIES, runlog.MAX_ENTRY_BYTES)
        self.in_flight = 0
        self.idle = asyncio.Event()  # nothing pending, nothing in flight
        self.idle.set()
        self.ended = False  # forget it once idle


class LiveOutput:
    """The live output of every run a worker executes; see the module docstring."""

    def __init__(self, dispatch: DispatchQueue) -> None:
        self._dispatch = dispatch
        self._runs: dict[str, _Run] = {}
        self._ready: dict[str, None] = {}  # runs with pending output, oldest first
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def put(self, run_id: str, queue: str, stream: LogStream, text: str) -> None:
        """Queue the output of a run (of ``queue``); never waits."""
        run = self._runs.get(run_id)
        if run is None:
            run = self._runs[run_id] = _Run(queue)
        run.pending.add(stream, text.encode())
        run.idle.clear()
        self._ready[run_id] = None
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._append_loop())
        self._wakeup.set()

    async def finish(self, run_id: str, timeout: float = FINISH_SECONDS) -> None:
        """The run's script has ended: wait (at most ``timeout``) until what it printed
        is in its log, so the log's end entry comes after it. The run is forgotten
        once that is so (later, if Redis is that slow: its last output still goes)."""
        run = self._runs.get(run_id)
        if run is None:
            return
        run.ended = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.idle.wait(), timeout)
        if run.idle.is_set():
            self._forget(run_id, run)

    async def flush(self) -> None:
        """Until everything put so far is in the logs (or failed)."""
        for run in list(self._runs.values()):
            await run.idle.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _append_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch: list[tuple[str, _Run, int, list[tuple[LogStream, bytes]]]] = []
            size = 0
            while self._ready and size < BATCH_BYTES:
                run_id = next(iter(self._ready))
                del self._ready[run_id]
                run = self._runs[run_id]
                dropped, entries = run.pending.take()
                run.in_flight += 1
                batch.append((run_id, run, dropped, entries))
                size += sum(len(data) for _, data in entries)
            if self._ready:
                self._wakeup.set()
            await self._append(batch)

    async def _append(self, batch: list[tuple[str, _Run, int, list[tuple[LogStream, bytes]]]]) -> None:
        failed = True
        try:
            await self._dispatch.append_output(
                [(run_id, run.queue, dropped, entries) for run_id, run, dropped, entries in batch]
            )
            failed = False
        except (RedisError, OSError) as exc:
            log.debug("live output of %d run(s) not published: %s", len(batch), exc)
        finally:
            for run_id, run, dropped, entries in batch:
                if failed:  # lost: the next entry's offset shows the gap
                    run.pending.dropped += dropped + sum(len(data) for _, data in entries)
                run.in_flight -= 1
                if run.in_flight == 0 and not run.pending:
                    run.idle.set()
                    if run.ended:
                        self._forget(run_id, run)

    def _forget(self, run_id: str, run: _Run) -> None:
        if self._runs.get(run_id) is run:  # not a later run of the same id (handed back)
            del self._runs[run_id]
