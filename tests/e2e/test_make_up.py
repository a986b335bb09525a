"""`make up` from a fresh copy of the repository: installs, migrates, starts all four
processes (and a private redis-server when none answers), reaches ready, and Ctrl-C
leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.hostile import hostile_script
from tests.support.processes import ROOT, Proc, free_port, health_serving, listed_services, mesh_port_settings
from tests.support.real_mesh import RealMesh, final, wait_runs

pytestmark = pytest.mark.e2e


def copy_repository(dest: Path) -> None:
    """The working tree as a clone of it would hold it: tracked and new files, nothing ignored."""
    listing = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    files = subprocess.run(listing, cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source = ROOT / name
        if source.exists():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())


def leftovers(*markers: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if all(m in line for m in markers) and "ps -eo" not in line]


@pytest.mark.timeout(300)
def test_make_up_from_fresh_copy(tmp_path: Path, procs: list[Proc]) -> None:
    repo = tmp_path / "jobmesh"
    copy_repository(repo)
    ports = {name: free_port() for name in ("sched", "sched_metrics", "mon_grpc", "mon_http", "gw", "redis")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBMESH_") and k != "VIRTUAL_ENV"}
    env["PATH"] = ":".join(p for p in env["PATH"].split(":") if ".venv" not in p)
    env.update(
        mesh_port_settings(ports),
        # Nothing answers on this port: `make up` must start its own redis-server.
        JOBMESH_REDIS_URL=f"redis://127.0.0.1:{ports['redis']}/0",
    )
    popen = subprocess.Popen(
        ["make", "up"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    proc = Proc("make up", popen)
    procs.append(proc)
    proc.read_until(r"jobmesh: ready", timeout=240)
    assert (repo / ".jobmesh" / "jobmesh.db").exists(), "the embedded default is a SQLite file under .jobmesh/"
    assert not (repo / "node_modules").exists(), "`make up` needs Python only, not Node"
    assert health_serving(ports["sched"])
    assert {"jobmesh.v1.AuthService", "jobmesh.v1.JobService", "jobmesh.v1.RunService"} <= listed_services(
        ports["sched"]
    )
    assert "jobmesh.v1.HealthService" in listed_services(ports["mon_grpc"])
    with urllib.request.urlopen(f"http://127.0.0.1:{ports['gw']}/api/health", timeout=5) as resp:
        assert resp.status == 200
    assert leftovers("redis-server", f":{ports['redis']}"), "a private redis-server runs"
    # A script runs through the mesh (SQLite, the fork server) and its output is kept.
    mesh = RealMesh(f"http://127.0.0.1:{ports['gw']}", "", "")
    token, _ = mesh.user("newcomer")
    job = mesh.create_one_time(token, "print('hi')")
    runs = wait_runs(mesh, token, job["jobId"], final, timeout=60)
    assert [r["status"] for r in runs] == ["RUN_STATUS_SUCCEEDED"], runs
    status, logs = mesh.call("GET", f"/api/jobs/{job['jobId']}/runs/{runs[0]['id']}/logs", token=token)
    assert status == 200 and logs["stdout"] == "hi\n", logs
    # Another user's hostile job, on the default set-up: the sandbox holds.
    attacker_token, _ = mesh.user("attacker")
    attack = mesh.create_one_time(attacker_token, hostile_script(repo, (ports["redis"], 6379, 3306)))
    [run] = wait_runs(mesh, attacker_token, attack["jobId"], final, timeout=60)
    status, logs = mesh.call("GET", f"/api/jobs/{attack['jobId']}/runs/{run['id']}/logs", token=attacker_token)
    assert run["status"] == "RUN_STATUS_SUCCEEDED", (run, logs)
    assert json.loads(logs["stdout"]) == {"secrets": [], "killed": [], "reached": [], "seen": []}, logs

    os.killpg(popen.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    # make re-raises the SIGINT it received once its child is done; jobmesh itself exits cleanly.
    assert popen.wait(timeout=30) in (0, -signal.SIGINT)
    proc.drain()
    assert any("jobmesh: stopped" in line for line in proc.output), "\n".join(proc.output[-30:])
    deadline = time.monotonic() + 10
    while leftovers(str(repo)) or leftovers("redis-server", f":{ports['redis']}"):
        assert time.monotonic() < deadline, f"orphans left: {leftovers(str(repo))}"
        time.sleep(0.2)
