"""A hostile user's job through the real mesh (scheduler, worker with its fork server,
gateway): it finds no secret, no other process, no store, no other user's script,
and the mesh and the other user's run carry on. And a worker that cannot build the
sandbox refuses to start unless told to run without it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.support.hostile import hostile_script
from tests.support.processes import ROOT, Proc, base_env, start
from tests.support.real_mesh import RealMesh, final, wait_runs
from tests.support.services import REDIS_TEST_URL

pytestmark = pytest.mark.e2e


def test_a_hostile_job_finds_nothing_and_harms_no_one(real_mesh: RealMesh) -> None:
    victim_token, _ = real_mesh.user("victim")
    attacker_token, _ = real_mesh.user("attacker")
    victim = real_mesh.create_one_time(
        victim_token, "import time\nAPI_KEY = 'victim-key-4242'\ntime.sleep(4)\nprint('ok')"
    )
    # The victim's run is in flight while the attacker's runs.
    wait_runs(
        real_mesh, victim_token, victim["jobId"], lambda runs: any(r["status"] == "RUN_STATUS_RUNNING" for r in runs)
    )
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
