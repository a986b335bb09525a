"""Starting real jobmesh processes for end-to-end tests."""

from __future__ import annotations

import os
import re
import select
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBMESH_")}
    env.update(
        JOBMESH_DATABASE_URL=database_url,
        JOBMESH_REDIS_URL=redis_url,
        JOBMESH_JWT_SECRET="e2e-secret-" + "y" * 32,
        JOBMESH_SHUTDOWN_GRACE_SECONDS="2",
        JOBMESH_SCHEDULER_METRICS_PORT="0",
        JOBMESH_WORKER_HEARTBEAT_SECONDS="0.3",
        JOBMESH_WORKER_HEARTBEAT_TTL_SECONDS="3",
        JOBMESH_REQUEUE_AFTER_SECONDS="3",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    output: list[str] = field(default_factory=list)

    def read_until(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """Read the process's output until a line matches ``pattern``."""
        assert self.popen.stdout is not None
        regex = re.compile(pattern)
        for line in self.output:
            if m := regex.search(line):
                return m
        sel = selectors.DefaultSelector()
        sel.register(self.popen.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        buffer = b""
        while time.monotonic() < deadline:
            if not sel.select(timeout=0.2):
                if self.popen.poll() is not None:
                    break
                continue
            chunk = os.read(self.popen.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            *lines, rest = buffer.split(b"\n")
            buffer = rest
            for raw in lines:
                line = raw.decode(errors="replace")
                self.output.append(line)
                if m := regex.search(line):
                    return m
        raise AssertionError(f"{self.name}: no line matching {pattern!r}; output:\n" + "\n".join(self.output[-40:]))

    def read_available(self) -> None:
        """What the process has written so far, without waiting for it to exit."""
        if self.popen.stdout is None or self.popen.stdout.closed:
            return
        fd = self.popen.stdout.fileno()
        data = b""
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and select.select([fd], [], [], 0.2)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
        self.output.extend(data.decode(errors="replace").splitlines())

    def drain(self) -> None:
        if self.popen.stdout is None or self.popen.stdout.closed:
            return
        try:
            rest = self.popen.stdout.read() or b""
        except ValueError:
            rest = b""
        self.output.extend(rest.decode(errors="replace").splitlines())

    def terminate(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds it took)."""
        started = time.monotonic()
        self.popen.send_signal(signal.SIGTERM)
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.send_signal(signal.SIGQUIT)  # faulthandler dumps the stacks
            time.sleep(1.0)
            self.read_available()  # the dump and what came before it (the process still runs)
            self.kill()
            raise AssertionError(
                f"{self.name} still running {timeout} s after SIGTERM:\n" + "\n".join(self.output[-60:])
            ) from None
        took = time.monotonic() - started
        self.drain()
        return code, took

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        if self.popen.stdout is not None and not self.popen.stdout.closed:
            self.popen.stdout.close()


def start(module: str, env: dict[str, str], name: str | None = None, prefix: tuple[str, ...] = ()) -> Proc:
    """``module`` in a new process (``prefix``: a command that runs it, e.g. setpriv)."""
    popen = subprocess.Popen(
        [*prefix, sys.executable, "-m", module],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    return Proc(name or module, popen)
