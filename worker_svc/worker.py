"""The worker loop: reliable pop, fenced start, isolated execution, fenced result.

Pop is BLMOVE from the queue into this worker's processing list, so a message
survives a crash between pop and start (the reaper hands it back). A run starts
only through the QUEUED → RUNNING compare-and-set, which writes a fresh fencing
token; losing it drops the message. Results carry the token and are refused if the
attempt was superseded.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError

from core import keys
from core.attempts import RunResult
from core.batching import Batcher
from core.dispatch_queue import DispatchQueue
from core.domain import Job, LogStream, Network, Run, RunOutput, RunStatus, utcnow
from core.errors import JobmeshError
from db.repositories.run_lifecycle import RunLifecycleRepository
from worker_svc.live_output import LiveOutput
from worker_svc.sandbox import ExecResult, Executor, Outcome

log = logging.getLogger(__name__)

POP_TIMEOUT_SECONDS = 1.0
MAX_FETCH = 100
RESULT_RETRY_SECONDS = 1.0
LOOPS_STOP_SECONDS = 2.0
# While results keep coming, a write of them waits this long for more: fewer, larger
# transactions. The slot is free already; only the result row is this much later.
RESULT_LINGER_SECONDS = 0.03
# A run taken ahead (prefetched) that finds no free slot this long after its due
# time goes back to the queue for another worker.
PREFETCH_HOLD_SECONDS = 1.0


@dataclass(frozen=True)
class Started:
    run: Run
    job: Job
    token: str
    cancelled: bool


class _Slot:
    """One execution slot, released exactly once: when the script ends, or when
    the run is dropped before it starts."""

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self._semaphore: asyncio.Semaphore | None = semaphore

    def release(self) -> None:
        if self._semaphore is not None:
            self._semaphore.release()
            self._semaphore = None


@dataclass(frozen=True)
class WorkerConfig:
    worker_id: str
    queues: list[str]
    slots: int
    heartbeat_seconds: float
    shutdown_grace_seconds: float
    prefetch: int = 0
    # False when JOBMESH_WORKER_SANDBOX=off: published with each heartbeat, so the
    # monitor shows the worker as running scripts without isolation.
    sandboxed: bool = True


class Worker:
    def __init__(
        self, config: WorkerConfig, runs: RunLifecycleRepository, dispatch: DispatchQueue, executor: Executor
    ) -> None:
        self.config = config
        self._runs = runs
        self._dispatch = dispatch
        self._executor = executor
        self._stopping = asyncio.Event()
        self._cancel_events: dict[str, asyncio.Event] = {}
        self._active: dict[str, asyncio.Task[Any]] = {}
        self._handing_back = False
        # Runs held (taken, not yet ended): the slots plus the prefetch, so the next
        # runs are already taken (their fenced start done) when a script ends.
        self._free = asyncio.Semaphore(config.slots + config.prefetch)
        self._executing = asyncio.Semaphore(config.slots)
        self._prefetch_paused = False
        self._handlers: set[asyncio.Task[None]] = set()
        self._starter: Batcher[tuple[str, datetime], Started | None] = Batcher(self._start_batch)
        self._finisher: Batcher[tuple[RunResult, bytes], bool] = Batcher(
            self._finish_batch, linger=RESULT_LINGER_SECONDS
        )
        # Live output (one Lua call per batch of runs), bounded per run.
        self._live = LiveOutput(dispatch)
        self._user_cancelled: set[str] = set()

    @property
    def busy(self) -> int:
        return len(self._active)

    async def run(self) -> None:
        """Serve until ``stop()``; then finish or hand back what is running."""
        await self._heartbeat_once()
        tasks = [
            asyncio.create_task(self._heartbeat_loop()),
            asyncio.create_task(self._cancel_listener()),
        ]
        fetcher = asyncio.create_task(self._fetch_loop())
        await self._stopping.wait()
        # The fetcher notices the stop within one pop timeout, unless it waits for a free
        # slot; then it holds nothing and can be cancelled.
        _, waiting = await asyncio.wait({fetcher}, timeout=POP_TIMEOUT_SECONDS + 1.0)
        for task in waiting:
            task.cancel()
        await asyncio.gather(fetcher, return_exceptions=True)
        # A run still executing is ended by hand_back_after(), so this wait is bounded.
        if self._handlers:
            _, pending = await asyncio.wait(self._handlers, timeout=self.config.shutdown_grace_seconds + 5.0)
            for task in pending:
                log.warning("run handler did not stop in time; cancelling it")
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
        for task in tasks:
            task.cancel()
        # A Redis read can miss its cancellation (the pub/sub listener was seen to): the
        # stop does not wait on the background loops for more than a moment.
        _, stuck = await asyncio.wait(tasks, timeout=LOOPS_STOP_SECONDS)
        if stuck:
            log.warning("%d background loop(s) did not stop when cancelled; leaving them", len(stuck))
        with contextlib.suppress(RedisError, OSError):
            await self._dispatch.workers_gone([self.config.worker_id])
        await self._starter.close()
        await self._finisher.close()
        await self._live.close()
        await self._executor.close()

    def stop(self) -> None:
        self._stopping.set()

    # Loops ------------------------------------------------------------------

    async def _heartbeat_once(self) -> None:
        config = self.config
        await self._dispatch.worker_heartbeat(config.worker_id, config.sandboxed, config.heartbeat_seconds)

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await self._heartbeat_once()
            except (RedisError, OSError) as exc:
                log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(self.config.heartbeat_seconds)

    async def _cancel_listener(self) -> None:
        while True:
            try:
                async for run_id in self._dispatch.cancel_requests():
                    event = self._cancel_events.get(run_id)
                    if event is not None:
                        self._user_cancelled.add(run_id)
                        event.set()
            except (RedisError, OSError) as exc:
                log.warning("cancel listener: %s", exc)
                await asyncio.sleep(1.0)

    async def _fetch_loop(self) -> None:
        """Pop as many messages as there are free slots in one round trip (a Lua
        script of LMOVEs into this worker's processing list), blocking on BLMOVE
        only when the queues are empty; each message runs in its own task."""
        queue_index = 0
        while not self._stopping.is_set():
            await self._free.acquire()
            free = 1
            if self._prefetch_paused:
                # A prefetched run found no slot: take only what can run now.
                await self._executing.acquire()
                self._executing.release()
                self._prefetch_paused = False
            while free < MAX_FETCH and not self._free.locked():
                await self._free.acquire()
                free += 1
            queue = self.config.queues[queue_index % len(self.config.queues)]
            queue_index += 1
            try:
                raws = await self._dispatch.pop_many(self.config.worker_id, queue, free)
                if not raws:
                    one = await self._dispatch.pop_blocking(self.config.worker_id, queue, POP_TIMEOUT_SECONDS)
                    raws = [one] if one is not None else []
            except (RedisError, OSError) as exc:
                log.warning("pop from %s failed: %s", queue, exc)
                raws = []
                await asyncio.sleep(1.0)
            for _ in range(free - len(raws)):
                self._free.release()
            for raw in raws:
                task = asyncio.create_task(self._guarded(raw, queue))
                self._handlers.add(task)
                task.add_done_callback(self._handlers.discard)

    async def _guarded(self, raw: bytes, queue: str) -> None:
        slot = _Slot(self._free)
        try:
            await self._handle(raw, queue, slot)
        except Exception:
            log.exception("handling a message failed")
        finally:
            slot.release()

    # One run ----------------------------------------------------------------

    async def _handle(self, raw: bytes, queue: str, slot: _Slot) -> None:
        """Take the run (popped from ``queue``) at once (the fenced start, batched), start
        the script at its slot, free the slot when the script ends, then report (batched)."""
        try:
            msg = keys.QueueMessage.decode(raw)
        except (ValueError, KeyError):
            log.error("dropping malformed queue message %r", raw[:200])
            await self._dispatch.forget(self.config.worker_id, queue, raw)
            return
        if self._stopping.is_set():
            # Popped while the worker stops (a BLMOVE can return a message handed back
            # a moment ago): it goes back untaken, for another worker.
            try:
                await self._requeue(raw, msg.queue)
            except (RedisError, OSError) as exc:  # the reaper hands it back once we are gone
                log.warning("could not give back run %s: %s", msg.run_id, exc)
            return
        started = await self._start(msg)
        if started is None:
            await self._dispatch.forget(self.config.worker_id, queue, raw)
            return
        event = asyncio.Event()
        run, job, token = started.run, started.job, started.token
        if started.cancelled:
            self._user_cancelled.add(run.id)
            event.set()
        self._cancel_events[run.id] = event
        task = asyncio.current_task()
        assert task is not None
        self._active[run.id] = task

        # Incremental decoders: a character split across two reads stays whole.
        decoders = {stream: codecs.getincrementaldecoder("utf-8")(errors="replace") for stream in LogStream}

        def on_output(stream: LogStream, chunk: bytes) -> None:
            text = decoders[stream].decode(chunk)
            if text:
                self._live.put(run.id, run.queue, stream, text)

        began = utcnow()
        give_back = False
        try:
            wait = (msg.due_at - began).total_seconds()
            if wait > 0 and not event.is_set():
                # Dispatched ahead: the script starts at its slot, not before. The
                # cancel event doubles as the alarm clock (a timer, not a task per run).
                alarm = asyncio.get_running_loop().call_later(min(wait, 5.0), event.set)
                await event.wait()
                alarm.cancel()
                if run.id not in self._user_cancelled and not self._handing_back:
                    event.clear()  # woken by the alarm, not by a cancel
                began = utcnow()
            if not event.is_set() and not await self._acquire_execution(event):
                give_back = not event.is_set()
            if event.is_set() or give_back:
                result = ExecResult(Outcome.CANCELLED, -1, "cancelled", "", "", False, False)
            else:
                began = utcnow()
                try:
                    result = await self._executor.run(
                        job.script_content,
                        float(job.timeout_seconds),
                        event,
                        on_output,
                        host_network=job.network is Network.HOST,
                    )
                finally:
                    self._executing.release()
        except Exception as exc:  # the run must still end in a recorded state
            log.exception("executor failed for run %s", run.id)
            result = ExecResult(Outcome.FAILED, -1, f"executor error: {exc}"[:1000], "", "", False, False)
        finally:
            self._cancel_events.pop(run.id, None)
            self._active.pop(run.id, None)
            by_user = run.id in self._user_cancelled
            self._user_cancelled.discard(run.id)
            slot.release()  # the result is written in the background: take the next run now
        await self._live.finish(run.id)  # its output before its end entry, then forget it
        if give_back or (self._handing_back and result.outcome is Outcome.CANCELLED and not by_user):
            await self._hand_back(run, token, raw, msg.queue)
            return
        await self._report(run, token, result, raw, began)

    async def _acquire_execution(self, cancel: asyncio.Event) -> bool:
        """An execution slot for a taken run: at once when one is free, else within
        PREFETCH_HOLD_SECONDS (False: give the run back; also when cancelled)."""
        if not self._executing.locked():
            await self._executing.acquire()
            return True
        waiter = asyncio.ensure_future(self._executing.acquire())
        cancelled = asyncio.ensure_future(cancel.wait())
        try:
            await asyncio.wait({waiter, cancelled}, timeout=PREFETCH_HOLD_SECONDS, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancelled.cancel()
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
        acquired = waiter.done() and not waiter.cancelled()
        if acquired and cancel.is_set():
            self._executing.release()
            return False
        if not acquired and not cancel.is_set():
            self._prefetch_paused = True
        return acquired

    async def _start(self, msg: keys.QueueMessage) -> Started | None:
        while True:
            try:
                return await self._starter.submit((msg.run_id, msg.scheduled_at))
            except (JobmeshError, RedisError, OSError) as exc:
                # Database down: the message stays in our processing list; try again.
                log.warning("start of run %s failed: %s", msg.run_id, exc)
                await asyncio.sleep(RESULT_RETRY_SECONDS)

    async def _start_batch(self, keys_: list[tuple[str, datetime]]) -> list[Started | None]:
        """One compare-and-set for every run popped in this instant, then one Redis
        round trip: their cancel flags, and the RUNNING entry of each live log."""
        token = secrets.token_hex(8)
        won = await self._runs.start(keys_, self.config.worker_id, token, utcnow())
        by_id = {run.id: (run, job, cancelled) for run, job, cancelled in won}
        flags: list[bool] = []
        if won:
            try:
                flags = await self._dispatch.started([run for run, _, _ in won])
            except (RedisError, OSError) as exc:
                log.warning("cancel flags unreadable: %s", exc)
        flagged = {run.id for (run, _, _), flag in zip(won, flags, strict=False) if flag}
        out: list[Started | None] = []
        for run_id, _ in keys_:
            hit = by_id.pop(run_id, None)  # a duplicate message in the same batch gets nothing
            out.append(Started(hit[0], hit[1], token, hit[2] or run_id in flagged) if hit is not None else None)
        return out

    async def _report(self, run: Run, token: str, result: ExecResult, raw: bytes, began: datetime) -> None:
        status = {
            Outcome.SUCCEEDED: RunStatus.SUCCEEDED,
            Outcome.FAILED: RunStatus.FAILED,
            Outcome.TIMED_OUT: RunStatus.TIMED_OUT,
            Outcome.CANCELLED: RunStatus.CANCELLED,
        }[result.outcome]
        output = None
        if result.stdout or result.stderr:
            output = RunOutput(run.id, result.stdout, result.stderr, result.stdout_truncated, result.stderr_truncated)
        report = RunResult(run.id, run.scheduled_at, token, status, result.exit_code, result.error, output, began)
        delay = RESULT_RETRY_SECONDS
        while True:
            try:
                await self._finisher.submit((report, raw))
                return
            except (JobmeshError, RedisError, OSError) as exc:
                # Keep the result until the database takes it; the reaper will not
                # touch the run while our heartbeat goes on.
                log.warning("writing result of run %s failed: %s; retrying", run.id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _finish_batch(self, items: list[tuple[RunResult, bytes]]) -> list[bool]:
        """One fenced write of every result ready in this instant, then one Redis round
        trip: each live log's end entry, and the messages off the processing list."""
        outcome = await self._runs.finish([report for report, _ in items], utcnow())
        if outcome.rejected:
            log.warning("results rejected (attempts superseded): %s", ", ".join(outcome.rejected))
        accepted = set(outcome.accepted)
        try:
            await self._dispatch.finished(
                self.config.worker_id, [(report.run_id, report.status, raw) for report, raw in items]
            )
        except (RedisError, OSError) as exc:
            # The results are written; stale processing entries are dropped by the CAS later.
            log.warning("post-result cleanup failed: %s", exc)
        return [report.run_id in accepted for report, _ in items]

    async def hand_back_after(self, grace: float) -> None:
        """After SIGTERM: wait ``grace`` for running scripts, then cancel the rest."""
        deadline = time.monotonic() + grace
        while self._active and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        self._handing_back = True
        for event in list(self._cancel_events.values()):
            event.set()

    async def _requeue(self, raw: bytes, queue: str) -> None:
        """The message from our processing list back onto its queue, next to be taken."""
        await self._dispatch.requeue(self.config.worker_id, [(raw, queue)])

    async def _hand_back(self, run: Run, token: str, raw: bytes, queue: str) -> None:
        delay = RESULT_RETRY_SECONDS
        while True:
            try:
                handed = await self._runs.hand_back(run, token, utcnow())
                break
            except (JobmeshError, RedisError, OSError) as exc:
                if self._handing_back:
                    # Stopping: our heartbeat ends with the process and the reaper makes the run LOST.
                    log.warning("hand-back of run %s failed: %s", run.id, exc)
                    return
                # Running on: the reaper never reclaims a run of a live worker, so a run
                # given up here would stay RUNNING for good.
                log.warning("hand-back of run %s failed: %s; retrying", run.id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        if not handed:
            return
        try:
            await self._requeue(raw, queue)
        except (RedisError, OSError) as exc:
            # The run is QUEUED again in the database: the reconciler pushes it again.
            log.warning("requeue of run %s failed: %s", run.id, exc)
            return
        log.info("handed back run %s", run.id)
