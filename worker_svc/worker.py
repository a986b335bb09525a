"""The worker loop: reliable pop, fenced start, isolated execution, fenced result.

Pop is BLMOVE from the queue into this worker's processing list, so a message
survives a crash between pop and start (the reaper hands it back). A run starts
only through the QUEUED → RUNNING compare-and-set, which writes a fresh fencing
token; losing it drops the message. Results carry the token and are refused if the
attempt was superseded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from core import keys, runlog
from core.domain import Job, Run, RunOutput, RunStatus, utcnow
from core.errors import JobmeshError
from db.repositories.runs import RunRepository, RunResult
from worker_svc.executor import ExecResult, Outcome, SubprocessExecutor

log = logging.getLogger(__name__)

POP_TIMEOUT_SECONDS = 1.0
RESULT_RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class WorkerConfig:
    worker_id: str
    queues: list[str]
    slots: int
    heartbeat_seconds: float
    shutdown_grace_seconds: float


class Worker:
    def __init__(self, config: WorkerConfig, runs: RunRepository, redis: Redis, executor: SubprocessExecutor) -> None:
        self.config = config
        self._runs = runs
        self._redis = redis
        self._executor = executor
        self._stopping = asyncio.Event()
        self._cancel_events: dict[str, asyncio.Event] = {}
        self._active: dict[str, asyncio.Task[Any]] = {}
        self._processing = keys.processing(config.worker_id)
        self._handing_back = False
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
            *(asyncio.create_task(self._slot_loop(i)) for i in range(self.config.slots)),
        ]
        await self._stopping.wait()
        slots = tasks[2:]
        # Slots notice the stop within one pop timeout; a run still executing is
        # ended by hand_back_after(), so this wait is bounded.
        _, pending = await asyncio.wait(slots, timeout=self.config.shutdown_grace_seconds + 5.0)
        for task in pending:
            log.warning("slot did not stop in time; cancelling it")
            task.cancel()
        await asyncio.gather(*slots, return_exceptions=True)
        for task in tasks[:2]:
            task.cancel()
        await asyncio.gather(*tasks[:2], return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            await self._redis.zrem(keys.WORKERS, self.config.worker_id)
        self._executor.close()

    def stop(self) -> None:
        self._stopping.set()

    # Loops ------------------------------------------------------------------

    async def _heartbeat_once(self) -> None:
        await self._redis.zadd(keys.WORKERS, {self.config.worker_id: time.time()})

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

    async def _slot_loop(self, slot: int) -> None:
        queue_index = slot
        while not self._stopping.is_set():
            queue = self.config.queues[queue_index % len(self.config.queues)]
            queue_index += 1
            try:
                raw: Any = await self._redis.blmove(
                    keys.queue(queue),
                    self._processing,
                    POP_TIMEOUT_SECONDS,  # type: ignore[arg-type]  # redis accepts float seconds
                    "RIGHT",
                    "LEFT",
                )
            except (RedisError, OSError) as exc:
                log.warning("pop from %s failed: %s", queue, exc)
                await asyncio.sleep(1.0)
                continue
            if raw is None:
                continue
            try:
                await self._handle(raw)
            except Exception:
                log.exception("handling a message failed")

    # One run ----------------------------------------------------------------

    async def _handle(self, raw: bytes) -> None:
        try:
            msg = keys.QueueMessage.decode(raw)
        except (ValueError, KeyError):
            log.error("dropping malformed queue message %r", raw[:200])
            await self._redis.lrem(self._processing, 1, raw)  # type: ignore[arg-type]
            return
        wait = (msg.due_at - utcnow()).total_seconds()
        if wait > 0:
            await asyncio.sleep(min(wait, 5.0))
        token = secrets.token_hex(8)
        started = await self._start(msg, token)
        if started is None:
            await self._redis.lrem(self._processing, 1, raw)  # type: ignore[arg-type]
            return
        run, job, cancel_requested = started
        event = asyncio.Event()
        if cancel_requested or await self._redis.exists(keys.cancel_flag(run.id)):
            self._user_cancelled.add(run.id)
            event.set()
        self._cancel_events[run.id] = event
        task = asyncio.current_task()
        assert task is not None
        self._active[run.id] = task
        await self._publish(run.id, [(runlog.STATUS, RunStatus.RUNNING.value)])

        async def on_output(stream: str, chunk: bytes) -> None:
            kind = runlog.OUT if stream == "stdout" else runlog.ERR
            await self._publish(run.id, [(kind, chunk.decode("utf-8", errors="replace"))])

        try:
            result = await self._executor.run(job.script_content, float(job.timeout_seconds), event, on_output)
        except Exception as exc:  # the run must still end in a recorded state
            log.exception("executor failed for run %s", run.id)
            result = ExecResult(Outcome.FAILED, -1, f"executor error: {exc}"[:1000], "", "", False, False)
        finally:
            self._cancel_events.pop(run.id, None)
            self._active.pop(run.id, None)
            by_user = run.id in self._user_cancelled
            self._user_cancelled.discard(run.id)
        if self._handing_back and result.outcome is Outcome.CANCELLED and not by_user:
            await self._hand_back(run, token, raw, msg.queue)
            return
        status = await self._report(run, token, result)
        await self._publish(run.id, [(runlog.END, status.value)])
        with contextlib.suppress(RedisError, OSError):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.lrem(self._processing, 1, raw)  # type: ignore[arg-type]
                pipe.zrem(keys.INFLIGHT, run.id)
                await pipe.execute()

    async def _start(self, msg: keys.QueueMessage, token: str) -> tuple[Run, Job, bool] | None:
        while True:
            try:
                won = await self._runs.start([(msg.run_id, msg.scheduled_at)], self.config.worker_id, token, utcnow())
                return won[0] if won else None
            except JobmeshError as exc:
                # Database down: the message stays in our processing list; try again.
                log.warning("start of run %s failed: %s", msg.run_id, exc)
                await asyncio.sleep(RESULT_RETRY_SECONDS)

    async def _publish(self, run_id: str, entries: list[tuple[str, str]]) -> None:
        """Live output for WatchRun; best effort (the result row is what counts)."""
        try:
            await runlog.append(self._redis, run_id, entries)
        except (RedisError, OSError) as exc:
            log.debug("live output of %s not published: %s", run_id, exc)

    async def _report(self, run: Run, token: str, result: ExecResult) -> RunStatus:
        status = {
            Outcome.SUCCEEDED: RunStatus.SUCCEEDED,
            Outcome.FAILED: RunStatus.FAILED,
            Outcome.TIMED_OUT: RunStatus.TIMED_OUT,
            Outcome.CANCELLED: RunStatus.CANCELLED,
        }[result.outcome]
        report = RunResult(
            run_id=run.id,
            scheduled_at=run.scheduled_at,
            fencing_token=token,
            status=status,
            exit_code=result.exit_code,
            error=result.error,
            output=RunOutput(run.id, result.stdout, result.stderr, result.stdout_truncated, result.stderr_truncated),
        )
        delay = RESULT_RETRY_SECONDS
        while True:
            try:
                outcome = await self._runs.finish([report], utcnow())
                if outcome.rejected:
                    log.warning("result of run %s rejected: attempt superseded", run.id)
                return status
            except JobmeshError as exc:
                # Keep the result until the database takes it; the reaper will not
                # touch the run while our heartbeat goes on.
                log.warning("writing result of run %s failed: %s; retrying", run.id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def hand_back_after(self, grace: float) -> None:
        """After SIGTERM: wait ``grace`` for running scripts, then cancel the rest."""
        deadline = time.monotonic() + grace
        while self._active and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        self._handing_back = True
        for event in list(self._cancel_events.values()):
            event.set()

    async def _hand_back(self, run: Run, token: str, raw: bytes, queue: str) -> None:
        try:
            if await self._runs.hand_back(run, token, utcnow()):
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.lrem(self._processing, 1, raw)  # type: ignore[arg-type]
                    pipe.rpush(keys.queue(queue), raw)  # the consuming end: next to be taken
                    await pipe.execute()
                log.info("handed back run %s", run.id)
        except (JobmeshError, RedisError, OSError) as exc:
            # The reaper will find it: our heartbeat stops when we exit.
            log.warning("hand-back of run %s failed: %s", run.id, exc)
