"""Giving messages back to their queues (a dead worker's whole processing list, or one
run a stopping worker did not start) is one atomic move: against a real Redis, with
a worker popping and an observer counting at the same time, no message is ever in
no list, none is lost and none doubled, and the oldest is taken first."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from core import keys
from core.dispatch_queue import REQUEUE_PAGE, DispatchQueue

pytestmark = pytest.mark.timeout(60)

SLOT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
QUEUE = keys.queue("default")


def messages(n: int) -> list[bytes]:
    return [keys.QueueMessage(f"run-{i:05d}", SLOT, SLOT, "default").encode().encode() for i in range(n)]


async def taken_by(dispatch: DispatchQueue, worker_id: str, sent: list[bytes], redis: Redis) -> None:
    """``sent`` pushed (the first one first) and all popped by ``worker_id``."""
    await redis.lpush(QUEUE, *sent)
    await redis.sadd(keys.QUEUES, "default")  # as a push does: the reaper looks in the queues known
    while await dispatch.pop_many(worker_id, "default", 100):
        pass
    assert await redis.llen(keys.processing("default", worker_id)) == len(sent)


async def test_a_dead_workers_list_goes_back_whole_while_others_pop_and_nothing_is_ever_missing(
    redis: Redis,
) -> None:
    dispatch = DispatchQueue(redis)
    sent = messages(6 * REQUEUE_PAGE + 7)
    await taken_by(dispatch, "dead", sent, redis)
    stop = asyncio.Event()
    seen: list[tuple[int, int]] = []  # (messages anywhere, messages still in the dead list)

    async def live_worker() -> None:
        while not stop.is_set():
            await dispatch.pop_many("alive", "default", 7)

    async def observer() -> None:
        while not stop.is_set():
            async with redis.pipeline(transaction=True) as pipe:
                pipe.llen(QUEUE)
                pipe.llen(keys.processing("default", "dead"))
                pipe.llen(keys.processing("default", "alive"))
                queued, dead, alive = await pipe.execute()
            seen.append((queued + dead + alive, dead))

    racing = [asyncio.create_task(live_worker()), asyncio.create_task(observer())]
    await asyncio.sleep(0.05)
    moved = await dispatch.requeue_processing("dead")
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*racing)

    assert moved == len(sent)
    assert any(0 < dead < len(sent) for _, dead in seen), "the observer looked while the requeue went on"
    assert {total for total, _ in seen} == {len(sent)}, "at every instant, every message is in exactly one list"
    assert await redis.llen(keys.processing("default", "dead")) == 0
    everywhere = await redis.lrange(QUEUE, 0, -1) + await redis.lrange(keys.processing("default", "alive"), 0, -1)
    assert sorted(everywhere) == sorted(sent), "nothing lost, nothing doubled"


async def test_the_oldest_goes_first_and_a_message_no_longer_held_is_not_put_back(redis: Redis) -> None:
    dispatch = DispatchQueue(redis)
    sent = messages(REQUEUE_PAGE + 3)
    older, newer = sent[:-1], sent[-1:]
    await taken_by(dispatch, "dead", older, redis)
    await redis.lpush(keys.processing("default", "dead"), b"not a queue message")
    await redis.lpush(QUEUE, *newer)  # pushed after the dead worker took the others

    assert await dispatch.requeue_processing("dead") == len(older), "the malformed one is dropped"
    order = list(reversed(await redis.lrange(QUEUE, 0, -1)))  # the consuming end first
    assert order == older + newer, "taken again in the order first taken, before what came later"

    # The same move a worker makes to give back one message: once only.
    [first] = await dispatch.pop_many("w", "default", 1)
    assert await dispatch.requeue("w", [(first, "default")]) == 1
    assert await dispatch.requeue("w", [(first, "default")]) == 0, "no longer in the list: not pushed again"
    assert await redis.lrange(QUEUE, -1, -1) == [first], "back next to be taken"
    assert await redis.llen(QUEUE) == len(sent)
