"""Keeps ``jobmesh up``'s processes running: each one is started, its output forwarded
with its name in front, and started again after a crash as ``launcher.restarts`` decides."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from launcher.restarts import CrashHistory, RestartPolicy, after_exit, describe_exit

TAIL_LINES = 15
# After a process exits, how long its last lines may take to come through the pipe (a
# grandchild that still holds it open must not hold up the restart).
DRAIN_SECONDS = 1.0
PROBE_INTERVAL_SECONDS = 0.1


@dataclass
class Child:
    """One supervised process: how to start it, and its state across restarts."""

    name: str
    argv: Sequence[str]
    env: dict[str, str]
    # Ready when this answers True; without it, when the process prints a line with "ready".
    probe: Callable[[], Awaitable[bool]] | None = None
    proc: asyncio.subprocess.Process | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))


def say(text: str) -> None:
    print(f"jobmesh: {text}", flush=True)


async def supervise(
    child: Child, policy: RestartPolicy, failed: asyncio.Future[tuple[str, str]], stopping: Callable[[], bool]
) -> None:
    """Run ``child`` until cancelled; when it may not be restarted, give ``failed`` its name and why."""
    history = CrashHistory()
    try:
        while True:
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                *child.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=child.env,
            )  # fmt: skip
            child.proc = proc
            returncode = await _run_once(child, proc, restarted=history.crashes > 0)
            if stopping():
                return  # it got the Ctrl-C too: not a crash
            uptime = time.monotonic() - started
            decision = after_exit(policy, history, uptime)
            history = decision.history
            how = describe_exit(returncode)
            say(f"{child.name} (pid {proc.pid}) exited: {how} after {uptime:.1f} s")
            if decision.give_up:
                reason = (
                    f"{child.name} failed {history.startup_failures} times in a row within "
                    f"{policy.startup_seconds:g} s of starting (last: {how})"
                )
                if not failed.done():
                    failed.set_result((child.name, reason))
                return
            say(f"restarting {child.name} in {decision.delay_seconds:g} s (crash {history.crashes} in a row)")
            await asyncio.sleep(decision.delay_seconds)
    except Exception as exc:  # e.g. the executable vanished: the mesh cannot keep this process
        if not failed.done():
            failed.set_result((child.name, f"{child.name} could not be started: {exc!r}"))


async def _run_once(child: Child, proc: asyncio.subprocess.Process, restarted: bool) -> int:
    """Forward ``proc``'s output until it exits; its exit status."""
    run_ready = asyncio.Event()
    assert proc.stdout is not None
    forwarder = asyncio.create_task(_forward(child, proc.stdout, run_ready))
    helpers = [asyncio.create_task(_announce(child, proc, run_ready, restarted))]
    if child.probe is not None:
        helpers.append(asyncio.create_task(_poll(child.probe, run_ready)))
    try:
        returncode = await proc.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(forwarder), DRAIN_SECONDS)
        return returncode
    finally:
        for task in (forwarder, *helpers):
            task.cancel()


async def _forward(child: Child, stream: asyncio.StreamReader, ready: asyncio.Event) -> None:
    while True:
        line = await stream.readline()
        if not line:
            return
        text = line.decode(errors="replace").rstrip()
        if child.probe is None and " ready " in f" {text} ":
            ready.set()
        child.tail.append(f"[{child.name}] {text}")
        print(f"[{child.name}] {text}", flush=True)


async def _poll(probe: Callable[[], Awaitable[bool]], ready: asyncio.Event) -> None:
    while not await probe():
        await asyncio.sleep(PROBE_INTERVAL_SECONDS)
    ready.set()


async def _announce(child: Child, proc: asyncio.subprocess.Process, run_ready: asyncio.Event, restarted: bool) -> None:
    await run_ready.wait()
    child.ready.set()
    if restarted:
        say(f"{child.name} is back (pid {proc.pid})")


async def terminate(procs: Sequence[asyncio.subprocess.Process], timeout: float) -> None:
    """SIGTERM to each of ``procs`` still running, SIGKILL to those left after ``timeout``."""
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), timeout)
    except TimeoutError:
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        await asyncio.gather(*(p.wait() for p in procs))
