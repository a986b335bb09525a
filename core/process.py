"""Entry-point helpers: signal handling and the serve-until-SIGTERM loop."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Coroutine
from typing import Any

import uvloop


async def wait_for_shutdown_signal() -> int:
    """Block until SIGTERM or SIGINT; returns the signal number."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[int] = loop.create_future()

    def on_signal(signum: int) -> None:
        if not received.done():
            received.set_result(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        return await received
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def settle_heap() -> None:
    """After start-up: move everything allocated so far out of the collector's view
    (it lives as long as the process) and collect the young generation less often,
    so a full collection does not stall the event loop for a slot's worth of time."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 50)


def run_service(main: Coroutine[Any, Any, None]) -> None:
    """Run a process's main coroutine on uvloop (libuv's event loop: less overhead per
    socket event and callback than the standard loop, for gRPC, database and Redis)."""
    uvloop.run(main)
