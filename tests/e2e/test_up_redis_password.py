"""`jobmesh up` with a password in JOBMESH_REDIS_URL and no Redis there: the private
redis-server it starts asks for that password (never shown on a command line), and
the mesh it starts reaches Redis with it and runs a job."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import Proc, descendants, free_port, mesh_port_settings, start_jobmesh_up
from tests.support.real_mesh import RealMesh, final, wait_runs

pytestmark = pytest.mark.e2e

PASSWORD = "up-redis-p@ss"


def redis_cli(port: int, *args: str) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(port), "--no-auth-warning", *args, "PING"], capture_output=True, text=True, check=False
    ).stdout.strip()


@pytest.mark.timeout(180)
def test_up_starts_redis_with_the_urls_password_and_the_mesh_uses_it(tmp_path: Path, procs: list[Proc]) -> None:
    ports = {name: free_port() for name in ("sched", "sched_metrics", "mon_grpc", "mon_http", "gw", "redis")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBMESH_")}
    env.update(
        JOBMESH_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'jobmesh.db'}",
        JOBMESH_REDIS_URL=f"redis://:up-redis-p%40ss@127.0.0.1:{ports['redis']}/0",
        **mesh_port_settings(ports),
        JOBMESH_SHUTDOWN_GRACE_SECONDS="1",
        JOBMESH_JWT_SECRET="up-redis-secret-" + "s" * 32,
        JOBMESH_WORKER_SANDBOX="off",
    )
    up = start_jobmesh_up(env)
    procs.append(up)
    try:
        up.read_until(r"jobmesh: ready", timeout=120)
        assert "NOAUTH" in redis_cli(ports["redis"])
        assert redis_cli(ports["redis"], "-a", PASSWORD) == "PONG"
        assert not [c for c in descendants(up.popen.pid).values() if any(PASSWORD in arg for arg in c)]
        mesh = RealMesh(f"http://127.0.0.1:{ports['gw']}", "", "")
        token, _ = mesh.user("upredis")
        job = mesh.create_one_time(token, "print('through a password')")
        runs = wait_runs(mesh, token, job["id"], final)
        assert [r["status"] for r in runs] == ["RUN_STATUS_SUCCEEDED"], runs
    finally:
        os.killpg(up.popen.pid, signal.SIGTERM)
        try:
            up.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(up.popen.pid, signal.SIGKILL)
        up.drain()
