"""A hostile user's job through the real mesh (scheduler, worker with its fork server,
gateway): it finds no secret, no other process, no store, no other user's script,
and the mesh and the other user's run carry on. And a worker that cannot build the
sandbox refuses to start unless told to run without it."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import REDIS_TEST_URL
from tests.e2e.mesh import RealMesh, final, real_mesh, wait_runs  # noqa: F401
from tests.e2e.procs import ROOT, Proc, base_env, start

pytestmark = pytest.mark.e2e


def hostile_script(root: Path, ports: tuple[int, ...] = (6379, 3306)) -> str:
    """A job that looks for the mesh's secrets, processes, stores and files, and
    prints what it found (all lists empty when the sandbox holds)."""
    return f"""
import glob, json, os, signal, socket
out = {{"secrets": [], "killed": [], "reached": [], "seen": []}}
for path in glob.glob("/proc/*/environ") + glob.glob("/proc/*/cmdline"):
    try:
        if b"JOBMESH" in open(path, "rb").read():
            out["secrets"].append(path)
    except OSError:
        pass
for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()] + [os.getppid()]:
    if pid not in (0, os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
            out["killed"].append(pid)
        except OSError:
            pass
for port in {ports!r}:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        out["reached"].append(port)
    except OSError:
        pass
for pattern in ("{root}/core/*.py", "{root}/.jobmesh/*", "/tmp/jobmesh-*/run-*/job.py", "/tmp/*"):
    out["seen"] += glob.glob(pattern)
print(json.dumps(out))
"""


def test_a_hostile_job_finds_nothing_and_harms_no_one(real_mesh: RealMesh) -> None:  # noqa: F811
    victim_token, _ = real_mesh.user("victim")
    attacker_token, _ = real_mesh.user("attacker")
    victim = real_mesh.create_one_time(
        victim_token, "import time\nAPI_KEY = 'victim-key-4242'\ntime.sleep(4)\nprint('ok')"
    )
    time.sleep(1.0)  # the victim's run is in flight while the attacker's runs
    attacker = real_mesh.create_one_time(attacker_token, hostile_script(ROOT))
    [attack] = wait_runs(real_mesh, attacker_token, attacker["jobId"], final)
    status, logs = real_mesh.call(
        "GET", f"/api/jobs/{attacker['jobId']}/runs/{attack['id']}/logs", token=attacker_token
    )
    assert status == 200 and attack["status"] == "RUN_STATUS_SUCCEEDED", (attack, logs)
    report = json.loads(logs["stdout"].splitlines()[-1])
    assert report == {"secrets": [], "killed": [], "reached": [], "seen": []}, report
    [done] = wait_runs(real_mesh, victim_token, victim["jobId"], final)
    assert done["status"] == "RUN_STATUS_SUCCEEDED", done
    assert all(proc.popen.poll() is None for proc in real_mesh.procs), "every mesh process still runs"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_a_worker_that_cannot_build_the_sandbox_refuses_to_start(mysql_url: str, procs: list[Proc]) -> None:
    # Root without capabilities: no namespaces, no mounts, no uid switch.
    powerless = ("setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--")
    refused = start("worker_svc.main", base_env(mysql_url, REDIS_TEST_URL), prefix=powerless)
    procs.append(refused)
    assert refused.popen.wait(timeout=60) != 0
    refused.drain()
    said = "\n".join(refused.output)
    assert "JOBMESH_WORKER_SANDBOX=off" in said and "sandbox" in said, said
    unsandboxed = start(
        "worker_svc.main", base_env(mysql_url, REDIS_TEST_URL, JOBMESH_WORKER_SANDBOX="off"), prefix=powerless
    )
    procs.append(unsandboxed)
    unsandboxed.read_until(r"worker_svc ready")
    assert any("WITHOUT isolation" in line for line in unsandboxed.output)
    assert Path("/proc", str(unsandboxed.popen.pid)).exists()
