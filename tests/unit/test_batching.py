"""The batcher coalesces concurrent calls and gives each caller its own answer."""

from __future__ import annotations

import asyncio
import time

import pytest

from core.batching import Batcher


async def test_concurrent_calls_share_batches() -> None:
    sizes: list[int] = []

    async def flush(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(flush, max_items=50, linger=0.01)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(120)))
    await batcher.close()
    assert results == [i * 10 for i in range(120)]
    assert sum(sizes) == 120 and max(sizes) <= 50 and len(sizes) <= 4


async def test_a_failed_flush_fails_its_callers_only() -> None:
    calls = 0

    async def flush(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database down")
        return items

    batcher: Batcher[int, int] = Batcher(flush, linger=0.01)
    with pytest.raises(RuntimeError):
        await batcher.submit(1)
    assert await batcher.submit(2) == 2
    await batcher.close()


async def test_an_idle_batcher_flushes_at_once_and_a_busy_one_batches() -> None:
    sizes: list[int] = []
    release = asyncio.Event()

    async def flush(items: list[int]) -> list[int]:
        sizes.append(len(items))
        if len(sizes) == 1:
            await release.wait()  # a slow first flush: the others arrive meanwhile
        return items

    batcher: Batcher[int, int] = Batcher(flush)
    first = asyncio.create_task(batcher.submit(0))
    await asyncio.sleep(0.01)
    assert sizes == [1], "the first item did not wait for company"
    rest = [asyncio.create_task(batcher.submit(i)) for i in range(1, 31)]
    await asyncio.sleep(0.01)
    release.set()
    assert await first == 0 and await asyncio.gather(*rest) == list(range(1, 31))
    await batcher.close()
    assert sizes == [1, 30]


async def test_linger_applies_only_while_busy() -> None:
    sizes: list[int] = []

    async def flush(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return items

    batcher: Batcher[int, int] = Batcher(flush, max_items=10, linger=0.2)
    started = time.perf_counter()
    assert await batcher.submit(1) == 1
    assert time.perf_counter() - started < 0.1, "a lone item waited for the linger"
    assert list(await asyncio.gather(batcher.submit(2), batcher.submit(3))) == [2, 3]  # two at once: busy
    first = asyncio.create_task(batcher.submit(4))
    await asyncio.sleep(0.05)
    rest = [asyncio.create_task(batcher.submit(i)) for i in range(5, 8)]
    assert await asyncio.gather(first, *rest) == [4, 5, 6, 7]
    await batcher.close()
    assert sizes == [1, 2, 4], "while busy, the flush did not wait for company"
