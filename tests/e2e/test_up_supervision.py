"""`jobmesh up` keeps the mesh running: a process killed by anything is logged and started
again (the gateway on its own port, a private Redis too) while the others keep serving; a
process that cannot start makes it give up, naming it; Ctrl-C still stops everything."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.processes import ROOT, Proc, descendants, free_port, module_of
from tests.support.real_mesh import RealMesh, final, wait_runs

pytestmark = pytest.mark.e2e

PORT_NAMES = ("sched", "sched_metrics", "mon_grpc", "mon_http", "gw", "redis")


def start_up(tmp_path: Path, ports: dict[str, int], procs: list[Proc]) -> Proc:
    """`jobmesh up` on its own SQLite file, ports and private redis-server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBMESH_")}
    env.update(
        JOBMESH_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'jobmesh.db'}",
        JOBMESH_REDIS_URL=f"redis://127.0.0.1:{ports['redis']}/0",  # nothing answers: `up` starts one
        JOBMESH_SCHEDULER_PORT=str(ports["sched"]),
        JOBMESH_SCHEDULER_METRICS_PORT=str(ports["sched_metrics"]),
        JOBMESH_MONITOR_GRPC_PORT=str(ports["mon_grpc"]),
        JOBMESH_MONITOR_HTTP_PORT=str(ports["mon_http"]),
        JOBMESH_GATEWAY_PORT=str(ports["gw"]),
        JOBMESH_SHUTDOWN_GRACE_SECONDS="1",
    )
    popen = subprocess.Popen(
        [sys.executable, "-c", "from launcher.cli import main; main()", "up"],  # the `jobmesh` command, from ROOT
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    up = Proc("jobmesh up", popen)
    procs.append(up)
    return up


def stop_group(up: Proc) -> None:
    """Whatever the test left running (the launcher stops its children; the group catches a straggler)."""
    if up.popen.poll() is None:
        os.killpg(up.popen.pid, signal.SIGTERM)
        try:
            up.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(up.popen.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(up.popen.pid, signal.SIGKILL)


def said(up: Proc, pattern: str) -> None:
    """``up`` has printed a line matching ``pattern`` (read already: it came before a later one)."""
    assert any(re.search(pattern, line) for line in up.output), "\n".join(up.output[-40:])


def pid_of(up: Proc, module: str) -> int:
    [pid] = [pid for pid, cmdline in descendants(up.popen.pid).items() if module_of(cmdline) == module]
    return pid


def holding(marker: str) -> list[int]:
    """Live processes whose environment mentions ``marker`` (this test's database file)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            with contextlib.suppress(OSError):
                if marker.encode() in (entry / "environ").read_bytes() and alive(int(entry.name)):
                    found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class GatewayWatch:
    """Asks the gateway for /api/health every 0.1 s and keeps the times it did not answer."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/api/health"
        self.answers = 0
        self.silences: list[str] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()

    def watch(self) -> None:
        while not self.done.wait(0.1):
            try:
                with urllib.request.urlopen(self.url, timeout=5):
                    pass
            except urllib.error.HTTPError:
                pass  # an answer (the health of the mesh may well be degraded meanwhile)
            except OSError as err:
                self.silences.append(repr(err))
                continue
            self.answers += 1

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=10)


def gateway_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@pytest.mark.timeout(300)
def test_killed_processes_come_back_and_ctrl_c_stops_everything(tmp_path: Path, procs: list[Proc]) -> None:
    ports = {name: free_port() for name in PORT_NAMES}
    up = start_up(tmp_path, ports, procs)
    try:
        up.read_until(r"jobmesh: ready", timeout=120)
        mesh = RealMesh(f"http://127.0.0.1:{ports['gw']}", "", "")
        token, _ = mesh.user("survivor")

        # The worker, killed: logged, restarted, and the new one runs a job created after the kill,
        # while the gateway keeps answering.
        watch = GatewayWatch(ports["gw"])
        worker = pid_of(up, "worker_svc.main")
        os.kill(worker, signal.SIGKILL)
        job = mesh.create_one_time(token, "print('after the crash')")
        new_worker = int(up.read_until(r"jobmesh: worker is back \(pid (\d+)\)", timeout=60)[1])
        said(up, rf"jobmesh: worker \(pid {worker}\) exited: killed by SIGKILL after [\d.]+ s")
        said(up, r"jobmesh: restarting worker in 0\.5 s")
        assert new_worker != worker
        runs = wait_runs(mesh, token, job["jobId"], final, timeout=60)
        assert [r["status"] for r in runs] == ["RUN_STATUS_SUCCEEDED"], runs
        watch.stop()
        assert watch.answers > 0 and not watch.silences, watch.silences

        # The gateway, killed: back on the same port.
        gateway = pid_of(up, "api_gateway.main")
        os.kill(gateway, signal.SIGKILL)
        up.read_until(r"jobmesh: gateway is back", timeout=60)
        said(up, rf"jobmesh: gateway \(pid {gateway}\) exited: killed by SIGKILL")
        assert gateway_answers(ports["gw"])
        assert pid_of(up, "api_gateway.main") != gateway

        # The private redis-server, killed: back on the same port.
        redis = next(pid for pid, cmdline in descendants(up.popen.pid).items() if "redis-server" in cmdline[0])
        os.kill(redis, signal.SIGKILL)
        up.read_until(r"jobmesh: redis is back", timeout=60)
        said(up, rf"jobmesh: redis \(pid {redis}\) exited: killed by SIGKILL")
        with socket.create_connection(("127.0.0.1", ports["redis"]), timeout=5) as conn:
            conn.sendall(b"PING\r\n")
            assert conn.recv(64) == b"+PONG\r\n"

        # Ctrl-C: everything stops, the restarted processes included.
        children = set(descendants(up.popen.pid))
        assert new_worker in children
        before = len(up.output)
        os.killpg(up.popen.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert up.popen.wait(timeout=30) == 0
        up.drain()
        assert any("jobmesh: stopped" in line for line in up.output), "\n".join(up.output[-30:])
        after_ctrl_c = up.output[before:]
        assert not [line for line in after_ctrl_c if "exited:" in line or "restarting" in line], after_ctrl_c
        deadline = time.monotonic() + 10
        while left := [pid for pid in children if alive(pid)] + holding(str(tmp_path)):
            assert time.monotonic() < deadline, f"left running: {left}"
            time.sleep(0.1)
    finally:
        stop_group(up)


@pytest.mark.timeout(240)
def test_a_process_that_cannot_start_makes_up_give_up(tmp_path: Path, procs: list[Proc]) -> None:
    ports = {name: free_port() for name in PORT_NAMES}
    # Something else holds the gateway's port: only the gateway fails, and it does at every start.
    with socket.create_server(("127.0.0.1", ports["gw"])):
        up = start_up(tmp_path, ports, procs)
        try:
            code = up.popen.wait(timeout=180)
            up.drain()
            output = "\n".join(up.output)
            assert code != 0, output
            assert "jobmesh: giving up: gateway failed 5 times in a row" in output, output
            assert output.count("jobmesh: restarting gateway in") == 4, output
            last_output = output.split("jobmesh: its last output:\n", 1)[-1]
            assert last_output.startswith("  [gateway] ") and "address already in use" in last_output, output
            assert "jobmesh: stopped" in output, output
            assert "jobmesh: ready" not in output, output
            assert not any("restarting scheduler" in line or "restarting worker" in line for line in up.output)
            deadline = time.monotonic() + 10
            while left := holding(str(tmp_path)):
                assert time.monotonic() < deadline, f"left running: {left}"
                time.sleep(0.1)
        finally:
            stop_group(up)
