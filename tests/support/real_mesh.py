"""The whole mesh as real processes on a fresh MariaDB database, for REST tests."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from db import migrate
from tests.support.processes import Proc, base_env, free_port, mesh_port_settings, start
from tests.support.services import REDIS_TEST_CLUSTER, REDIS_TEST_URL, mysql, new_database


@dataclass
class RealMesh:
    gateway: str
    monitor_http: str
    scheduler_metrics: str
    procs: list[Proc] = field(default_factory=list)

    def call(
        self, method: str, path: str, body: Any = None, token: str = "", raw: bytes | None = None
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.gateway + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=20) as resp:
                payload = resp.read()
                return resp.status, json.loads(payload) if payload else None
        except urllib.error.HTTPError as err:
            payload = err.read()
            return err.code, json.loads(payload) if payload else None

    def create_one_time(self, token: str, script: str) -> dict[str, Any]:
        """A one-time job due now, created over REST."""
        status, job = self.call(
            "POST",
            "/api/jobs",
            {"jobType": "OneTime", "scheduledAt": datetime.now(UTC).isoformat(), "scriptContent": script},
            token,
        )
        assert status == 201, job
        created: dict[str, Any] = job
        return created

    def user(self, name: str) -> tuple[str, str]:
        status, body = self.call(
            "POST",
            "/api/auth/signup",
            {"username": name, "email": f"{name}@example.com", "password": "correct horse battery"},
        )
        assert status == 201, body
        status, body = self.call(
            "POST", "/api/auth/login", {"email": f"{name}@example.com", "password": "correct horse battery"}
        )
        assert status == 200, body
        return body["token"], body["userId"]


@contextmanager
def start_mesh(**extra_env: str) -> Iterator[RealMesh]:
    """The four processes on a fresh database (``extra_env``: more JOBMESH_* settings)."""
    import redis
    import redis.cluster

    client = (redis.cluster.RedisCluster if REDIS_TEST_CLUSTER else redis.Redis).from_url(REDIS_TEST_URL)
    client.flushdb()
    client.close()
    name, url = new_database()
    migrate.upgrade(url)
    ports = {k: free_port() for k in ("sched", "sched_metrics", "mon_grpc", "mon_http", "gw")}
    env = base_env(
        url,
        REDIS_TEST_URL,
        **mesh_port_settings(ports),
        JOBMESH_SCHEDULER_ADDR=f"127.0.0.1:{ports['sched']}",
        JOBMESH_MONITOR_ADDR=f"127.0.0.1:{ports['mon_grpc']}",
        JOBMESH_WORKER_SLOTS="4",
        **extra_env,
    )
    mesh = RealMesh(
        f"http://127.0.0.1:{ports['gw']}",
        f"http://127.0.0.1:{ports['mon_http']}",
        f"http://127.0.0.1:{ports['sched_metrics']}",
    )
    try:
        for module in ("scheduler_svc.main", "worker_svc.main", "monitor_svc.main", "api_gateway.main"):
            proc = start(module, env)
            mesh.procs.append(proc)
            proc.read_until(" ready ")
        yield mesh
    finally:
        for proc in mesh.procs:
            proc.kill()
        mysql(f"DROP DATABASE IF EXISTS {name}")


def wait_runs(mesh: RealMesh, token: str, job_id: str, done: Any, timeout: float = 45) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = mesh.call("GET", f"/api/jobs/{job_id}/runs?page=1&pageSize=50", token=token)
        assert status == 200, body
        runs: list[dict[str, Any]] = body["runs"]
        if done(runs):
            return runs
        assert time.monotonic() < deadline, runs
        time.sleep(0.25)


def final(runs: list[dict[str, Any]]) -> bool:
    return bool(runs) and all(
        r["status"] not in ("RUN_STATUS_PENDING", "RUN_STATUS_QUEUED", "RUN_STATUS_RUNNING") for r in runs
    )
