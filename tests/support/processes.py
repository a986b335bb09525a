"""Starting real jobmesh processes for end-to-end tests."""

from __future__ import annotations

import os
import re
import select
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.services import REDIS_TEST_CLUSTER

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
        JOBMESH_REDIS_CLUSTER=str(REDIS_TEST_CLUSTER).lower(),
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


def grpcurl() -> str:
    return shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


def health_serving(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def listed_services(port: int) -> set[str]:
    out = subprocess.run([grpcurl(), "-plaintext", f"127.0.0.1:{port}", "list"], capture_output=True, text=True,
                         timeout=20, check=True)  # fmt: skip
    return set(out.stdout.split())


def descendants(root: int) -> dict[int, list[str]]:
    """Every live process below ``root``: pid -> command line."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # it ended meanwhile
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: dict[int, list[str]] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent:
                try:
                    found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
                except OSError:
                    continue
                frontier.append(pid)
    return found


def module_of(cmdline: list[str]) -> str:
    return cmdline[cmdline.index("-m") + 1] if "-m" in cmdline else cmdline[0]


def mesh_port_settings(ports: dict[str, int]) -> dict[str, str]:
    """The JOBMESH_* listening ports of the four processes, from ``ports`` keyed
    sched, sched_metrics, mon_grpc, mon_http and gw."""
    return {
        "JOBMESH_SCHEDULER_PORT": str(ports["sched"]),
        "JOBMESH_SCHEDULER_METRICS_PORT": str(ports["sched_metrics"]),
        "JOBMESH_MONITOR_GRPC_PORT": str(ports["mon_grpc"]),
        "JOBMESH_MONITOR_HTTP_PORT": str(ports["mon_http"]),
        "JOBMESH_GATEWAY_PORT": str(ports["gw"]),
    }


def start_jobmesh_up(env: dict[str, str]) -> Proc:
    """`jobmesh up` (the launcher, run from ROOT) in a session of its own, so that its
    whole process group can be signalled."""
    popen = subprocess.Popen(
        [sys.executable, "-c", "from launcher.cli import main; main()", "up"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    return Proc("jobmesh up", popen)
