"""The Redis side of jobmesh, in one place: every operation on the keys of ``core.keys``.

Queues and processing lists (push, pop, give back), the runs' live logs, cancel
requests, and the heartbeats of workers and schedulers. Redis is a cache of dispatch:
whatever is lost here, the database says again (see ``core.keys``).

A change to several keys is atomic: a Lua script of ``core/lua`` (each headed by the
KEYS and ARGV it takes; ``Script`` reads that header and every call is checked against
it) or MULTI. The hot path costs one round trip per batch: a push (dispatcher); a pop,
the starts, the live output, the results (worker).

A message moves between a queue and a processing list in one step, never through
neither: a pop is an LMOVE, and a message goes back (``requeue``, requeue.lua) by
one script, whether a worker gives back a run it did not start or the reaper empties
the list of a worker that stopped heartbeating.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files
from typing import Any, TypeVar, cast

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from core import keys, runlog
from core.domain import LogStream, Run, RunStatus
from core.redis_client import RedisClient

_T = TypeVar("_T")

CANCEL_FLAG_TTL_SECONDS = 3600
# The messages one requeue.lua call moves when the reaper empties a processing list: a
# script holds Redis for its whole run.
REQUEUE_PAGE = 500
# How an output entry's kind is spelled in a live log (see core.runlog), both ways.
_KIND = {LogStream.STDOUT: "out", LogStream.STDERR: "err"}
_STREAM = {kind.encode(): stream for stream, kind in _KIND.items()}

_POSITION = re.compile(r"^-- (KEYS|ARGV)\[(\d+)(\.\.)?\]\s+(\w+(?:\.\.\.)?)(?:\s|$)")


@dataclass(frozen=True)
class Layout:
    """What a script takes in KEYS or ARGV, from its header: the names of its fixed
    positions, then, if any, the name of the group repeated to the end (``run...``)."""

    fixed: tuple[str, ...]
    repeated: str | None

    def fits(self, count: int) -> bool:
        return count >= len(self.fixed) if self.repeated else count == len(self.fixed)


@dataclass(frozen=True)
class Script:
    """A Lua script of ``core/lua`` (shipped with the package) and its header's layout."""

    name: str
    source: str
    keys: Layout
    argv: Layout

    @classmethod
    def load(cls, name: str) -> Script:
        source = (files("core") / "lua" / f"{name}.lua").read_text(encoding="utf-8")
        return cls(name, source, *header_layouts(source))


def header_layouts(source: str) -> tuple[Layout, Layout]:
    """The KEYS and ARGV layouts a script's header documents: lines such as
    ``-- KEYS[1]  queue  ...`` for a fixed position, ``-- ARGV[4..]  run...  ...`` for a
    group repeated to the end. Positions run from 1 in order; a repeated group is last."""
    found: dict[str, tuple[list[str], str | None]] = {"KEYS": ([], None), "ARGV": ([], None)}
    for line in source.splitlines():
        if not line.startswith("--"):
            break
        match = _POSITION.match(line)
        if match is None:
            continue
        table, position, repeated, name = match.groups()
        fixed, group = found[table]
        if group is not None or int(position) != len(fixed) + 1 or bool(repeated) != name.endswith("..."):
            raise ValueError(f"{table}[{position}] {name}: out of order, or a repeated group not marked as one")
        if repeated:
            found[table] = (fixed, name)
        else:
            fixed.append(name)
    return Layout(tuple(found["KEYS"][0]), found["KEYS"][1]), Layout(tuple(found["ARGV"][0]), found["ARGV"][1])


SCRIPTS = {name: Script.load(name) for name in ("pop_many", "started", "append_output", "finished", "requeue")}


class RegisteredScript:
    """A script registered with a client (EVALSHA, loaded again if Redis forgot it);
    each call is checked against the script's header."""

    def __init__(self, redis: RedisClient, script: Script) -> None:
        self._script = script
        self._call = redis.register_script(script.source)

    async def __call__(self, keys: list[Any], args: list[Any]) -> Any:
        script = self._script
        assert script.keys.fits(len(keys)) and script.argv.fits(len(args)), f"{script.name}.lua called off its header"
        return await self._call(keys=keys, args=args)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class DispatchQueue:
    """Every key operation, on a single Redis or a Redis Cluster (``RedisCluster``).

    On a single Redis each batch is one call, whatever queues its runs are of. On a
    cluster a batch is cut by queue (a queue's keys share a slot, see ``core.keys``):
    one call or MULTI per queue, sent together; a ``Run`` names its queue."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self._cluster = isinstance(redis, RedisCluster)
        self._pop_many = RegisteredScript(redis, SCRIPTS["pop_many"])
        self._started = RegisteredScript(redis, SCRIPTS["started"])
        self._append_output = RegisteredScript(redis, SCRIPTS["append_output"])
        self._finished = RegisteredScript(redis, SCRIPTS["finished"])
        self._requeue = RegisteredScript(redis, SCRIPTS["requeue"])

    def _slots(self, items: Sequence[_T], queue_of: Callable[[_T], str]) -> list[list[_T]]:
        """``items`` in one group (a single Redis), or grouped by queue (a cluster)."""
        if not self._cluster:
            return [list(items)] if items else []
        groups: dict[str, list[_T]] = {}
        for item in items:
            groups.setdefault(queue_of(item), []).append(item)
        return list(groups.values())

    # Dispatch (scheduler) ---------------------------------------------------

    async def push(self, runs: Sequence[Run], now: datetime) -> None:
        """Each run's message onto its queue and the run into its queue's in-flight set
        in one MULTI (at once: a worker cannot finish it before it is in there), its
        queue's name into the set of queues. A single Redis: one MULTI for the batch;
        a cluster: the names first, then one MULTI per queue."""
        if not runs:
            return
        if self._cluster:
            await self._redis.sadd(keys.QUEUES, *{run.queue for run in runs})
        groups = self._slots(runs, lambda run: run.queue)
        await asyncio.gather(*(self._push_group(group, now, with_names=not self._cluster) for group in groups))

    async def _push_group(self, runs: Sequence[Run], now: datetime, with_names: bool) -> None:
        by_queue: dict[str, list[Run]] = {}
        for run in runs:
            by_queue.setdefault(run.queue, []).append(run)
        async with self._redis.pipeline(transaction=True) as pipe:
            for queue, queued in by_queue.items():
                pipe.lpush(
                    keys.queue(queue),
                    *(keys.QueueMessage(r.id, r.scheduled_at, r.due_at, r.queue).encode() for r in queued),
                )
                pipe.zadd(keys.inflight(queue), {r.id: now.timestamp() for r in queued})
            if with_names:
                pipe.sadd(keys.QUEUES, *by_queue)
            await pipe.execute()

    async def in_flight(self, runs: Sequence[Run]) -> list[bool]:
        """Whether each run is pushed and not finished, as far as Redis knows (one
        ZMSCORE per queue, in one pipeline)."""
        by_queue: dict[str, list[str]] = {}
        for run in runs:
            by_queue.setdefault(run.queue, []).append(run.id)
        if not by_queue:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for queue, ids in by_queue.items():
                pipe.zmscore(keys.inflight(queue), ids)
            answers = await pipe.execute()
        held = {
            run_id
            for ids, scores in zip(by_queue.values(), answers, strict=True)
            for run_id, score in zip(ids, scores, strict=True)
            if score is not None
        }
        return [run.id in held for run in runs]

    async def request_cancel(self, runs: Sequence[Run]) -> None:
        """Flag each run (for a worker that takes it later) and publish it (for the one
        running it now): one MULTI on a single Redis; on a cluster the flags (a MULTI
        per queue), then the messages."""
        if not runs:
            return
        if not self._cluster:
            async with self._redis.pipeline(transaction=True) as pipe:
                for run in runs:
                    pipe.set(keys.cancel_flag(run.queue, run.id), "1", ex=CANCEL_FLAG_TTL_SECONDS)
                    pipe.publish(keys.CANCEL_CHANNEL, run.id)
                await pipe.execute()
            return

        async def flag(group: list[Run]) -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                for run in group:
                    pipe.set(keys.cancel_flag(run.queue, run.id), "1", ex=CANCEL_FLAG_TTL_SECONDS)
                await pipe.execute()

        await asyncio.gather(*(flag(group) for group in self._slots(runs, lambda run: run.queue)))
        for run in runs:
            await self._redis.publish(keys.CANCEL_CHANNEL, run.id)

    # Taking and ending runs (worker) ----------------------------------------

    async def pop_many(self, worker_id: str, queue: str, count: int) -> list[bytes]:
        """Up to ``count`` messages from ``queue`` into the worker's processing list of
        that queue, in one round trip (pop_many.lua); none if the queue is empty."""
        raws: list[bytes] = await self._pop_many(
            keys=[keys.queue(queue), keys.processing(queue, worker_id)], args=[count]
        )
        return raws

    async def pop_blocking(self, worker_id: str, queue: str, timeout: float) -> bytes | None:
        """One message from ``queue`` into the worker's processing list, waiting up to
        ``timeout`` seconds for one (BLMOVE)."""
        raw: Any = await self._redis.blmove(
            keys.queue(queue),
            keys.processing(queue, worker_id),
            timeout,  # type: ignore[arg-type]  # redis accepts float seconds
            "RIGHT",
            "LEFT",
        )
        return cast("bytes | None", raw)  # the client does not decode

    async def forget(self, worker_id: str, queue: str, raw: bytes) -> None:
        """A message off the worker's processing list of ``queue``, for good (its run
        will not run here)."""
        await self._redis.lrem(keys.processing(queue, worker_id), 1, raw)  # type: ignore[arg-type]

    async def requeue(self, worker_id: str, messages: Sequence[tuple[bytes, str]]) -> int:
        """Messages (each with its queue's name) from the worker's processing lists back
        onto their queues, next to be taken, in one script (requeue.lua; on a cluster
        one per queue); a message no longer in its list is left alone. Returns how
        many moved."""
        if not messages:
            return 0

        async def move(group: list[tuple[bytes, str]]) -> int:
            move_keys: list[str] = []
            for _, queue in group:
                move_keys += (keys.processing(queue, worker_id), keys.queue(queue))
            moved: int = await self._requeue(keys=move_keys, args=[raw for raw, _ in group])
            return moved

        return sum(await asyncio.gather(*(move(g) for g in self._slots(messages, lambda m: m[1]))))

    async def requeue_processing(self, worker_id: str) -> int:
        """Everything in a (dead) worker's processing lists (one per queue ever pushed
        to) back onto their queues, through the same script as ``requeue``, a page of
        a list per call, the oldest message next to be taken; a malformed message is
        dropped. Returns how many moved."""
        moved = 0
        for name in sorted(_text(n) for n in await self._redis.smembers(keys.QUEUES)):
            source = keys.processing(name, worker_id)
            while True:
                # Newest first, as the list holds them: requeue.lua finds each at the list's head.
                raws: list[Any] = await self._redis.lrange(source, 0, REQUEUE_PAGE - 1)
                if not raws:
                    break
                messages: list[tuple[bytes, str]] = []
                for raw in raws:
                    try:
                        keys.QueueMessage.decode(raw)
                        messages.append((raw, name))
                    except (ValueError, KeyError):
                        await self.forget(worker_id, name, raw)
                moved += await self.requeue(worker_id, messages)
        return moved

    async def started(self, runs: Sequence[Run]) -> list[bool]:
        """For runs a worker has just taken, in one round trip (started.lua; on a
        cluster one per queue): the RUNNING entry of each live log, and whether each
        run's cancel was requested already."""
        if not runs:
            return []

        async def start(group: list[Run]) -> dict[str, bool]:
            run_keys: list[str] = []
            for run in group:
                run_keys += (keys.cancel_flag(run.queue, run.id), keys.run_log_channel(run.queue, run.id))
            flags: list[int] = await self._started(
                keys=run_keys,
                args=[runlog.TTL_SECONDS, runlog.MAX_ENTRIES, runlog.STATUS, RunStatus.RUNNING.value],
            )
            return {run.id: bool(flag) for run, flag in zip(group, flags, strict=True)}

        flagged: dict[str, bool] = {}
        for answer in await asyncio.gather(*(start(g) for g in self._slots(runs, lambda run: run.queue))):
            flagged.update(answer)
        return [flagged[run.id] for run in runs]

    async def finished(self, worker_id: str, ended: Sequence[tuple[str, RunStatus, bytes]]) -> None:
        """For runs whose results are written (id, final status, queue message), in one
        round trip (finished.lua; on a cluster one per queue): each live log's end
        entry; each message off the worker's processing list, each run out of its
        queue's in-flight set."""
        queued = [(run_id, status, raw, keys.QueueMessage.decode(raw).queue) for run_id, status, raw in ended]

        async def finish(group: list[tuple[str, RunStatus, bytes, str]]) -> None:
            run_keys: list[str] = []
            args: list[Any] = [runlog.TTL_SECONDS, runlog.MAX_ENTRIES, runlog.END]
            for run_id, status, raw, queue in group:
                run_keys += (
                    keys.processing(queue, worker_id),
                    keys.inflight(queue),
                    keys.run_log_channel(queue, run_id),
                )
                args += (status.value, raw, run_id)
            await self._finished(keys=run_keys, args=args)

        await asyncio.gather(*(finish(g) for g in self._slots(queued, lambda item: item[3])))

    async def append_output(self, batch: Sequence[tuple[str, str, int, Sequence[tuple[LogStream, bytes]]]]) -> None:
        """Output of a batch of runs onto their live logs, in one round trip
        (append_output.lua; on a cluster one per queue): per run, its id, its queue, the
        bytes of its output dropped before these entries, and the entries (stream, text)."""

        async def append(group: list[tuple[str, str, int, Sequence[tuple[LogStream, bytes]]]]) -> None:
            args: list[Any] = [runlog.TTL_SECONDS, runlog.MAX_ENTRIES, runlog.LIVE_CAP_BYTES]
            for _, _, dropped, entries in group:
                args += (len(entries), dropped)
                for stream, data in entries:
                    args += (_KIND[stream], data)
            await self._append_output(
                keys=[keys.run_log_channel(queue, run_id) for run_id, queue, _, _ in group], args=args
            )

        await asyncio.gather(*(append(g) for g in self._slots(batch, lambda item: item[1])))

    async def cancel_requests(self) -> AsyncIterator[str]:
        """The ids of runs whose cancel is published from now on, for as long as the
        iteration goes on. On a cluster the subscription is held on the node serving
        the channel's slot (a cluster forwards every PUBLISH to all its nodes); when
        that connection fails, the iteration ends with an error and the caller
        subscribes again."""
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(keys.CANCEL_CHANNEL)
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    yield _text(message["data"])
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    # Live logs (WatchRun) ---------------------------------------------------

    async def read_run_log(self, queue: str, run_id: str, after: str, block_ms: int | None) -> list[runlog.LogEntry]:
        """A run's live log entries after entry ``after`` (at most a page), waiting up to
        ``block_ms`` for one when there are none (None: not waiting)."""
        result: Any = await self._redis.xread({keys.run_log_channel(queue, run_id): after}, count=500, block=block_ms)
        out: list[runlog.LogEntry] = []
        for _, entries in result or []:
            for entry_id, fields in entries:
                kind = fields.get(b"k", b"")
                data = fields.get(b"d", b"").decode(errors="replace")
                offset = int(fields[b"o"]) if b"o" in fields else None
                out.append(runlog.LogEntry(_text(entry_id), _STREAM.get(kind) or kind.decode(), data, offset))
        return out

    # Heartbeats -------------------------------------------------------------

    async def worker_heartbeat(self, worker_id: str, sandboxed: bool, heartbeat_seconds: float) -> None:
        """One MULTI: the worker's liveness score, and what it says of itself, which
        expires on its own a minute (or ten heartbeats) after the last."""
        info = keys.worker_info(worker_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.WORKERS, {worker_id: time.time()})
            pipe.hset(info, "sandbox", "on" if sandboxed else "off")
            pipe.expire(info, max(60, int(10 * heartbeat_seconds) + 1))
            await pipe.execute()

    async def workers_gone(self, worker_ids: Sequence[str]) -> None:
        if worker_ids:
            await self._redis.zrem(keys.WORKERS, *worker_ids)

    async def workers_silent_since(self, cutoff: float) -> list[str]:
        """Workers whose last heartbeat (unix seconds) is at or before ``cutoff``."""
        silent: list[Any] = await self._redis.zrangebyscore(keys.WORKERS, "-inf", cutoff)
        return [_text(m) for m in silent]

    async def last_heartbeats(self, worker_ids: Sequence[str]) -> list[float | None]:
        """Each worker's last heartbeat (unix seconds), None for one Redis does not know."""
        scores: list[float | None] = await self._redis.zmscore(keys.WORKERS, list(worker_ids))
        return scores

    async def workers_alive(self, within_seconds: float) -> list[str]:
        """Workers that heartbeated in the last ``within_seconds``."""
        alive: list[Any] = await self._redis.zrangebyscore(keys.WORKERS, time.time() - within_seconds, "+inf")
        return [_text(m) for m in alive]

    async def count_workers_alive(self, within_seconds: float) -> int:
        return int(await self._redis.zcount(keys.WORKERS, time.time() - within_seconds, "+inf"))

    async def unsandboxed(self, worker_ids: Sequence[str]) -> list[str]:
        """Those of ``worker_ids`` that say they run scripts without the sandbox (sorted)."""
        if not worker_ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for worker_id in worker_ids:
                pipe.hget(keys.worker_info(worker_id), "sandbox")
            sandboxes = await pipe.execute()
        return sorted(w for w, s in zip(worker_ids, sandboxes, strict=True) if s is not None and _text(s) == "off")

    async def scheduler_heartbeat(self, scheduler_id: str) -> None:
        await self._redis.zadd(keys.SCHEDULERS, {scheduler_id: time.time()})

    async def scheduler_gone(self, scheduler_id: str) -> None:
        await self._redis.zrem(keys.SCHEDULERS, scheduler_id)

    async def count_schedulers_alive(self, within_seconds: float) -> int:
        return int(await self._redis.zcount(keys.SCHEDULERS, time.time() - within_seconds, "+inf"))

    # Figures (monitor) ------------------------------------------------------

    async def queue_depths(self) -> dict[str, int]:
        """Messages waiting in each queue ever pushed to."""
        names = sorted(_text(n) for n in await self._redis.smembers(keys.QUEUES))
        if not names:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.llen(keys.queue(name))
            depths = await pipe.execute()
        return {name: int(depth) for name, depth in zip(names, depths, strict=True)}
