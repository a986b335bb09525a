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

from redis.asyncio import Redis
from redis.exceptions import RedisError

from core import keys, runlog
from core.batching import Batcher
from core.domain import Job, Network, Run, RunOutput, RunStatus, utcnow
from core.errors import JobmeshError
from db.repositories.runs import RunRepository, RunResult
from worker_svc.live_output import LiveOutput
from worker_svc.sandbox import ExecResult, Executor, Outcome

log = logging.getLogger(__name__)

POP_TIMEOUT_SECONDS = 1.0
MAX_FETCH = 100
# KEYS[1] queue, KEYS[2] processing list; ARGV[1] how many. Atomic, so a message
# is always in exactly one of the two lists.
POP_MANY = """
local out = {}
for i = 1, tonumber(ARGV[1]) do
  local m = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not m then break end
  out[#out + 1] = m
end
return out
"""
# The live-log side of a batch of starts, one round trip. KEYS: each run's cancel
# flag, then each run's live log; ARGV: ttl, max entries, the status entry's kind and
# text. Appends the RUNNING entry to each log; returns each run's cancel flag.
STARTED_LOGS = """
local n = #KEYS / 2
local flags = {}
for i = 1, n do
  flags[i] = redis.call('EXISTS', KEYS[i])
  redis.call('XADD', KEYS[n + i], 'MAXLEN', '~', ARGV[2], '*', 'k', ARGV[3], 'd', ARGV[4])
  redis.call('EXPIRE', KEYS[n + i], ARGV[1])
end
return flags
"""
# The Redis side of a batch of results, one round trip. KEYS: this worker's
# processing list, the in-flight set, then each run's live log; ARGV: ttl, max
# entries, the end entry's kind, then per run: its final status, its queue message,
# its id. Ends each live log and forgets the messages.
FINISHED = """
for i = 3, #KEYS do
  local at = 4 + (i - 3) * 3
  redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[2], '*', 'k', ARGV[3], 'd', ARGV[at])
  redis.call('EXPIRE', KEYS[i], ARGV[1])
  redis.call('LREM', KEYS[1], 1, ARGV[at + 1])
  redis.call('ZREM', KEYS[2], ARGV[at + 2])
end
"""
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
    def __init__(self, config: WorkerConfig, runs: RunRepository, redis: Redis, executor: Executor) -> None:
        self.config = config
        self._runs = runs
        self._redis = redis
        self._executor = executor
        self._stopping = asyncio.Event()
        self._cancel_events: dict[str, asyncio.Event] = {}
        self._active: dict[str, asyncio.Task[Any]] = {}
        self._processing = keys.processing(config.worker_id)
        self._handing_back = False
        # Runs held (taken, not yet ended): the slots plus the prefetch, so the next
        # runs are already taken (their fenced start done) when a script ends.
        self._free = asyncio.Semaphore(config.slots + config.prefetch)
        self._executing = asyncio.Semaphore(config.slots)
        self._prefetch_paused = False
        self._handlers: set[asyncio.Task[None]] = set()
        self._pop_many = redis.register_script(POP_MANY)
        self._started_logs = redis.register_script(STARTED_LOGS)
        self._finished = redis.register_script(FINISHED)
        self._starter: Batcher[tuple[str, datetime], Started | None] = Batcher(self._start_batch)
        self._finisher: Batcher[tuple[RunResult, bytes], bool] = Batcher(
            self._finish_batch, linger=RESULT_LINGER_SECONDS
        )
        # Live output (one Lua call per batch of runs, runlog.APPEND_LOGS), bounded per run.
        self._live = LiveOutput(redis)
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
            await self._redis.zrem(keys.WORKERS, self.config.worker_id)
        await self._starter.close()
        await self._finisher.close()
        await self._live.close()
        await self._executor.close()

    def stop(self) -> None:
        self._stopping.set()

    # Loops ------------------------------------------------------------------

    async def _heartbeat_once(self) -> None:
        # One round trip (MULTI/EXEC): the liveness score, and what the worker says of
        # itself, which expires on its own a minute (or ten heartbeats) after the last.
        info = keys.worker_info(self.config.worker_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.WORKERS, {self.config.worker_id: time.time()})
            pipe.hset(info, "sandbox", "on" if self.config.sandboxed else "off")
            pipe.expire(info, max(60, int(10 * self.config.heartbeat_seconds) + 1))
            await pipe.execute()

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
                pubsub = self._redis.pubsub()
                await pubsub.subscribe(keys.CANCEL_CHANNEL)
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    data = message["data"]
                    run_id = data.decode() if isinstance(data, bytes) else str(data)
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
                raws: list[Any] = await self._pop_many(keys=[keys.queue(queue), self._processing], args=[free])
                if not raws:
                    one: Any = await self._redis.blmove(
                        keys.queue(queue),
                        self._processing,
                        POP_TIMEOUT_SECONDS,  # type: ignore[arg-type]  # redis accepts float seconds
                        "RIGHT",
                        "LEFT",
                    )
                    raws = [one] if one is not None else []
            except (RedisError, OSError) as exc:
                log.warning("pop from %s failed: %s", queue, exc)
                raws = []
                await asyncio.sleep(1.0)
            for _ in range(free - len(raws)):
                self._free.release()
            for raw in raws:
                task = asyncio.create_task(self._guarded(raw))
                self._handlers.add(task)
                task.add_done_callback(self._handlers.discard)

    async def _guarded(self, raw: bytes) -> None:
        slot = _Slot(self._free)
        try:
            await self._handle(raw, slot)
        except Exception:
            log.exception("handling a message failed")
        finally:
            slot.release()

    # One run ----------------------------------------------------------------

    async def _handle(self, raw: bytes, slot: _Slot) -> None:
        """Take the run at once (the fenced start, batched), start the script at its
        slot, free the slot when the script ends, then report (batched)."""
        try:
            msg = keys.QueueMessage.decode(raw)
        except (ValueError, KeyError):
            log.error("dropping malformed queue message %r", raw[:200])
            await self._redis.lrem(self._processing, 1, raw)  # type: ignore[arg-type]
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
            await self._redis.lrem(self._processing, 1, raw)  # type: ignore[arg-type]
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
        decoders = {name: codecs.getincrementaldecoder("utf-8")(errors="replace") for name in ("stdout", "stderr")}

        def on_output(stream: str, chunk: bytes) -> None:
            text = decoders[stream].decode(chunk)
            if text:
                self._live.put(run.id, runlog.OUT if stream == "stdout" else runlog.ERR, text)

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
        flags: list[Any] = []
        if won:
            try:
                flags = await self._started_logs(
                    keys=[keys.cancel_flag(run.id) for run, _, _ in won]
                    + [keys.run_log_channel(run.id) for run, _, _ in won],
                    args=[runlog.TTL_SECONDS, runlog.MAX_ENTRIES, runlog.STATUS, RunStatus.RUNNING.value],
                )
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
        args: list[Any] = [runlog.TTL_SECONDS, runlog.MAX_ENTRIES, runlog.END]
        for report, raw in items:
            args += [report.status.value, raw, report.run_id]
        try:
            await self._finished(
                keys=[self._processing, keys.INFLIGHT, *(keys.run_log_channel(r.run_id) for r, _ in items)], args=args
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
        """The message from our processing list back onto its queue's consuming end."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lrem(self._processing, 1, raw)  # type: ignore[arg-type]
            pipe.rpush(keys.queue(queue), raw)  # next to be taken
            await pipe.execute()

    async def _hand_back(self, run: Run, token: str, raw: bytes, queue: str) -> None:
        try:
            if await self._runs.hand_back(run, token, utcnow()):
                await self._requeue(raw, queue)
                log.info("handed back run %s", run.id)
        except (JobmeshError, RedisError, OSError) as exc:
            # The reaper will find it: our heartbeat stops when we exit.
            log.warning("hand-back of run %s failed: %s", run.id, exc)
