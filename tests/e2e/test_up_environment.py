"""`jobmesh up` hands each process only the settings it reads: the worker, which runs
untrusted scripts, never holds the JWT secret or the admin password (a script that
reads its worker's /proc/<pid>/environ finds neither), while the scheduler still
signs tokens and creates the admin."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import Proc, descendants, free_port, mesh_port_settings, module_of, start_jobmesh_up
from tests.support.real_mesh import RealMesh

pytestmark = pytest.mark.e2e

SECRET = "up-environment-secret-" + "s" * 32
ADMIN_PASSWORD = "up-environment-admin-password"


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


@pytest.mark.timeout(180)
def test_worker_holds_no_auth_secret(tmp_path: Path, procs: list[Proc]) -> None:
    ports = {name: free_port() for name in ("sched", "sched_metrics", "mon_grpc", "mon_http", "gw", "redis")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBMESH_")}
    env.update(
        JOBMESH_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'jobmesh.db'}",
        JOBMESH_REDIS_URL=f"redis://127.0.0.1:{ports['redis']}/0",  # a private redis-server, started by `up`
        **mesh_port_settings(ports),
        JOBMESH_SHUTDOWN_GRACE_SECONDS="1",
        JOBMESH_JWT_SECRET=SECRET,
        JOBMESH_JWT_ISSUER="jobmesh-up-test",
        JOBMESH_ADMIN_EMAIL="root@example.com",
        JOBMESH_ADMIN_PASSWORD=ADMIN_PASSWORD,
        JOBMESH_WORKER_SLOTS="3",
    )
    up = start_jobmesh_up(env)
    popen = up.popen
    procs.append(up)
    try:
        check_environments(up, ports["gw"])
    finally:
        os.killpg(popen.pid, signal.SIGTERM)  # the launcher stops its children; the group catches a straggler
        try:
            popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
        up.drain()


def check_environments(up: Proc, gateway_port: int) -> None:
    up.read_until(r"jobmesh: ready", timeout=120)
    up.read_until(r"\[worker\] worker_svc ready .*slots=3")  # its JOBMESH_WORKER_* settings reached it

    mesh = RealMesh(f"http://127.0.0.1:{gateway_port}", "", "")
    status, body = mesh.call("POST", "/api/auth/login", {"email": "root@example.com", "password": ADMIN_PASSWORD})
    assert status == 200 and body["role"] == "ROLE_ADMIN", body

    processes = descendants(up.popen.pid)
    by_module: dict[str, list[int]] = {}
    for pid, cmdline in processes.items():
        by_module.setdefault(module_of(cmdline), []).append(pid)
    assert {"scheduler_svc.main", "worker_svc.main", "monitor_svc.main", "api_gateway.main"} <= set(by_module)
    assert environ_of(by_module["scheduler_svc.main"][0])["JOBMESH_JWT_SECRET"] == SECRET
    scheduler = by_module["scheduler_svc.main"][0]
    for pid, cmdline in processes.items():
        if pid == scheduler:
            continue
        environ = environ_of(pid)
        held = {k for k, v in environ.items() if k.startswith(("JOBMESH_JWT_", "JOBMESH_ADMIN_"))}
        held |= {k for k, v in environ.items() if v in (SECRET, ADMIN_PASSWORD)}
        assert not held, f"{module_of(cmdline)} (pid {pid}) holds {held}"
    worker_env = environ_of(by_module["worker_svc.main"][0])
    assert worker_env["JOBMESH_WORKER_SLOTS"] == "3" and "PATH" in worker_env
