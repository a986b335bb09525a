"""Entry-point helpers: signal handling and the serve-until-SIGTERM loop."""

from __future__ import annotations

import asyncio
import signal


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
