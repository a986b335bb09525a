"""Each process starts, answers health, serves reflection and exits 0 on SIGTERM within 10 s."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.support.processes import Proc, base_env, free_port, health_serving, listed_services, start
from tests.support.services import REDIS_TEST_URL

pytestmark = pytest.mark.e2e


def stop_cleanly(proc: Proc) -> None:
    code, took = proc.terminate()
    assert code == 0, f"{proc.name} exited {code}:\n" + "\n".join(proc.output[-30:])
    assert took < 10.0


def test_scheduler(mysql_url: str, procs: list[Proc]) -> None:
    port = free_port()
    proc = start("scheduler_svc.main", base_env(mysql_url, REDIS_TEST_URL, JOBMESH_SCHEDULER_PORT=str(port)))
    procs.append(proc)
    proc.read_until(r"scheduler_svc ready")
    assert health_serving(port)
    assert {"jobmesh.v1.AuthService", "jobmesh.v1.JobService", "jobmesh.v1.RunService"} <= listed_services(port)
    stop_cleanly(proc)


def test_worker(mysql_url: str, procs: list[Proc]) -> None:
    proc = start("worker_svc.main", base_env(mysql_url, REDIS_TEST_URL))
    procs.append(proc)
    port = int(proc.read_until(r"worker_svc ready .*grpc=127\.0\.0\.1:(\d+)").group(1))
    assert health_serving(port)
    stop_cleanly(proc)


def test_monitor(mysql_url: str, procs: list[Proc]) -> None:
    grpc_port, http_port = free_port(), free_port()
    env = base_env(mysql_url, REDIS_TEST_URL, JOBMESH_MONITOR_GRPC_PORT=str(grpc_port),
                   JOBMESH_MONITOR_HTTP_PORT=str(http_port))  # fmt: skip
    proc = start("monitor_svc.main", env)
    procs.append(proc)
    proc.read_until(r"monitor_svc ready")
    assert health_serving(grpc_port)
    assert "jobmesh.v1.HealthService" in listed_services(grpc_port)
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/api/health", timeout=5) as resp:
        body = json.load(resp)
    # Database and Redis answer; with no scheduler or worker running the mesh may be DEGRADED.
    assert body["status"] in ("HEALTH_STATUS_SERVING", "HEALTH_STATUS_DEGRADED")
    assert {c["name"]: c["status"] for c in body["components"]}["database"] == "HEALTH_STATUS_SERVING"
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as resp:
        assert b"grpc_server_handled_total" in resp.read()
    stop_cleanly(proc)


def test_gateway(mysql_url: str, procs: list[Proc]) -> None:
    port, monitor_port = free_port(), free_port()
    env = base_env(
        mysql_url,
        REDIS_TEST_URL,
        JOBMESH_GATEWAY_PORT=str(port),
        JOBMESH_MONITOR_GRPC_PORT=str(monitor_port),
        JOBMESH_MONITOR_HTTP_PORT="0",
        JOBMESH_MONITOR_ADDR=f"127.0.0.1:{monitor_port}",
    )
    monitor = start("monitor_svc.main", env)
    procs.append(monitor)
    monitor.read_until(r"monitor_svc ready")
    proc = start("api_gateway.main", env)
    procs.append(proc)
    proc.read_until(r"api_gateway ready")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as resp:
        assert resp.status == 200 and json.load(resp)["components"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json", timeout=5) as resp:
        assert json.load(resp)["openapi"].startswith("3.")
    stop_cleanly(proc)
    stop_cleanly(monitor)
