"""Shared set-up for the benchmarks: a fresh MariaDB database, a Redis keyspace,
jobmesh processes started from this checkout, and small statistics helpers."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MYSQL_ROOT = os.environ.get("JOBMESH_BENCH_MYSQL", "mysql+asyncmy://root@127.0.0.1:3306")
REDIS_URL = os.environ.get("JOBMESH_BENCH_REDIS", "redis://127.0.0.1:6379/14")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


@contextmanager
def fresh_database() -> Iterator[str]:
    name = f"jobmesh_bench_{uuid.uuid4().hex[:8]}"
    subprocess.run(["mysql", "-uroot", "-h127.0.0.1", "-e", f"CREATE DATABASE {name}"], check=True)
    url = f"{MYSQL_ROOT}/{name}"
    try:
        # Alembic runs its own event loop: migrate in a child process.
        subprocess.run(
            [sys.executable, "-c", f"from db import migrate; migrate.upgrade({url!r})"], cwd=ROOT, check=True
        )
        yield url
    finally:
        subprocess.run(["mysql", "-uroot", "-h127.0.0.1", "-e", f"DROP DATABASE IF EXISTS {name}"], check=True)


def flush_redis() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    client.close()


def env_for(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBMESH_")}
    env.update(
        JOBMESH_DATABASE_URL=database_url,
        JOBMESH_REDIS_URL=REDIS_URL,
        JOBMESH_JWT_SECRET="bench-secret-" + "z" * 32,
        JOBMESH_LOG_LEVEL="WARNING",
        JOBMESH_SCHEDULER_METRICS_PORT="0",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@dataclass
class Processes:
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, module: str, env: dict[str, str], ready: str = " ready ") -> re.Match[str] | None:
        proc = subprocess.Popen(
            [sys.executable, "-m", module], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline().decode(errors="replace")
            if not line and proc.poll() is not None:
                raise RuntimeError(f"{module} exited")
            if ready in line:
                # Keep draining its output (a full pipe would stall the process) into a log.
                log_path = Path("/tmp") / f"jobmesh-bench-{module}-{proc.pid}.log"
                threading.Thread(target=_drain, args=(proc.stdout, log_path), daemon=True).start()
                return re.search(r"grpc=[\d.]+:(\d+)", line)
        raise RuntimeError(f"{module} did not become ready")

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
            if proc.stdout is not None:
                proc.stdout.close()


def _drain(stream: Any, path: Path) -> None:
    with path.open("wb") as out:
        for line in stream:
            out.write(line)
            out.flush()


@contextmanager
def processes() -> Iterator[Processes]:
    group = Processes()
    try:
        yield group
    finally:
        group.stop()
