"""`jobmesh up` hands each process only the settings it reads: the worker, which runs
untrusted scripts, never holds the JWT secret or the admin password (a script that
reads its worker's /proc/<pid>/environ finds neither), while the scheduler still
signs tokens and creates the admin."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.mesh import RealMesh
from tests.e2e.procs import ROOT, Proc, free_port

pytestmark = pytest.mark.e2e

SECRET = "up-environment-secret-" + "s" * 32
ADMIN_PASSWORD = "up-environment-admin-password"


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


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


@pytest.mark.timeout(180)
def test_worker_holds_no_auth_secret(tmp_path: Path, procs: list[Proc]) -> None:
    ports = {name: free_port() for name in ("sched", "sched_metrics", "mon_grpc", "mon_http", "gw", "redis")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBMESH_")}
    env.update(
        JOBMESH_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'jobmesh.db'}",
        JOBMESH_REDIS_URL=f"redis://127.0.0.1:{ports['redis']}/0",  # a private redis-server, started by `up`
        JOBMESH_SCHEDULER_PORT=str(ports["sched"]),
        JOBMESH_SCHEDULER_METRICS_PORT=str(ports["sched_metrics"]),
        JOBMESH_MONITOR_GRPC_PORT=str(ports["mon_grpc"]),
        JOBMESH_MONITOR_HTTP_PORT=str(ports["mon_http"]),
        JOBMESH_GATEWAY_PORT=str(ports["gw"]),
        JOBMESH_SHUTDOWN_GRACE_SECONDS="1",
        JOBMESH_JWT_SECRET=SECRET,
        JOBMESH_JWT_ISSUER="jobmesh-up-test",
        JOBMESH_ADMIN_EMAIL="root@example.com",
        JOBMESH_ADMIN_PASSWORD=ADMIN_PASSWORD,
        JOBMESH_WORKER_SLOTS="3",
    )
    popen = subprocess.Popen(
        [sys.executable, "-c", "from launcher.cli import main; main()", "up"],  # the `jobmesh` command, from ROOT
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    up = Proc("jobmesh up", popen)
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
