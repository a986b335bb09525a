"""The earlier HTTP API, end to end against the real mesh, plus its contract checks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.client import HTTPConnection
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.support.polling import poll_until
from tests.support.real_mesh import RealMesh, final, wait_runs

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(180)
def test_original_http_flow(real_mesh: RealMesh) -> None:
    mesh = real_mesh
    token, user_id = mesh.user("flow")
    policy = {"maxAttempts": 3, "strategy": "ExponentialBackoff", "initialDelaySeconds": 1, "maxDelaySeconds": 2,
              "multiplier": 2}  # fmt: skip
    status, recurring = mesh.call(
        "POST", "/api/jobs",
        {"name": "every minute", "jobType": "Recurring", "cronExpr": "*/1 * * * *", "timezone": "UTC",
         "scriptContent": "print('tick')", "timeoutSeconds": 30, "retryPolicy": policy}, token,
    )  # fmt: skip
    assert status == 201, recurring
    assert recurring["jobId"] == recurring["id"] and recurring["jobType"] == "JOB_TYPE_RECURRING"
    assert recurring["retryPolicy"]["strategy"] == "RETRY_STRATEGY_EXPONENTIAL_BACKOFF"
    at = (datetime.now(UTC) + timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%S")  # no zone: read as UTC
    status, once = mesh.call(
        "POST",
        "/api/jobs",
        {"jobType": "OneTime", "scheduledAt": at, "scriptContent": "print('hello from jobmesh')"},
        token,
    )
    assert status == 201, once
    runs = wait_runs(mesh, token, once["jobId"], final)
    assert [r["status"] for r in runs] == ["RUN_STATUS_SUCCEEDED"]
    status, logs = mesh.call("GET", f"/api/jobs/{once['jobId']}/runs/{runs[0]['id']}/logs", token=token)
    assert status == 200 and logs["stdout"] == "hello from jobmesh\n"
    status, run = mesh.call("GET", f"/api/jobs/{once['jobId']}/runs/{runs[0]['id']}", token=token)
    assert status == 200 and run["id"] == runs[0]["id"]

    status, failing = mesh.call(
        "POST", "/api/jobs",
        {"jobType": "OneTime", "scheduledAt": datetime.now(UTC).isoformat(), "scriptContent": "raise SystemExit(3)",
         "retryPolicy": {"maxAttempts": 3, "strategy": "FixedBackoff", "initialDelaySeconds": 0}}, token,
    )  # fmt: skip
    assert status == 201, failing
    runs = wait_runs(mesh, token, failing["jobId"], lambda rs: len(rs) == 3 and final(rs))
    assert [r["status"] for r in runs] == ["RUN_STATUS_FAILED"] * 3 and {r["exitCode"] for r in runs} == {3}

    status, slow = mesh.call(
        "POST", "/api/jobs",
        {"jobType": "OneTime", "scheduledAt": datetime.now(UTC).isoformat(), "timeoutSeconds": 2,
         "scriptContent": "import time\ntime.sleep(30)"}, token,
    )  # fmt: skip
    runs = wait_runs(mesh, token, slow["jobId"], final)
    assert [r["status"] for r in runs] == ["RUN_STATUS_TIMED_OUT"]

    job_id = recurring["jobId"]
    status, paused = mesh.call("PATCH", f"/api/jobs/{job_id}/pause", token=token)
    assert status == 200 and paused["state"] == "JOB_STATE_PAUSED"
    status, resumed = mesh.call("PATCH", f"/api/jobs/{job_id}/resume", token=token)
    assert status == 200 and resumed["state"] == "JOB_STATE_ACTIVE"
    status, updated = mesh.call(
        "PUT", f"/api/jobs/{job_id}", {"cronExpr": "*/5 * * * *", "version": resumed["version"]}, token
    )
    assert status == 200 and updated["cronExpr"] == "*/5 * * * *" and updated["version"] == resumed["version"] + 1
    status, stale = mesh.call(
        "PUT", f"/api/jobs/{job_id}", {"cronExpr": "*/7 * * * *", "version": resumed["version"]}, token
    )
    assert status == 409 and stale["error"]["status"] == "ABORTED"
    status, _ = mesh.call("DELETE", f"/api/jobs/{job_id}", token=token)
    assert status == 200
    status, listing = mesh.call("GET", "/api/jobs?page=1&pageSize=20", token=token)
    assert status == 200 and job_id not in [j["jobId"] for j in listing["jobs"]]
    assert {j["ownerId"] for j in listing["jobs"]} == {user_id}


def test_status_mapping_and_visibility(real_mesh: RealMesh) -> None:
    mesh = real_mesh
    token, _ = mesh.user("mapper")
    other, _ = mesh.user("other")
    status, job = mesh.call(
        "POST", "/api/jobs", {"jobType": "Recurring", "cronExpr": "@daily", "scriptContent": "pass"}, token
    )
    assert status == 201
    job_id = job["jobId"]
    cases = [
        # (method, path, body, token, expected HTTP, expected gRPC status)
        ("GET", "/api/jobs", None, "", 401, "UNAUTHENTICATED"),
        ("GET", f"/api/jobs/{job_id}", None, other, 404, "NOT_FOUND"),
        ("GET", "/api/jobs/not-a-uuid", None, token, 400, "INVALID_ARGUMENT"),
        ("POST", "/api/jobs", {"jobType": "Recurring", "cronExpr": "99 * * * *", "scriptContent": "pass"}, token, 400,
         "INVALID_ARGUMENT"),
        ("PATCH", f"/api/jobs/{job_id}/resume", None, token, 400, "FAILED_PRECONDITION"),
        ("POST", "/api/auth/signup", {"username": "mapper", "email": "mapper@example.com",
                                      "password": "long enough pw"}, "", 409, "ALREADY_EXISTS"),
        ("PUT", f"/api/jobs/{job_id}", {"name": "x", "version": 99}, token, 409, "ABORTED"),
        ("GET", "/api/users", None, token, 403, "PERMISSION_DENIED"),
        ("GET", f"/api/jobs/{job_id}/runs/00000000-0000-7000-8000-000000000000", None, token, 404, "NOT_FOUND"),
    ]  # fmt: skip
    for method, path, body, who, http, grpc_status in cases:
        status, payload = mesh.call(method, path, body, who)
        assert (status, payload["error"]["status"], payload["error"]["code"]) == (http, grpc_status, http), (
            path,
            payload,
        )
    status, payload = mesh.call(
        "POST", "/api/jobs", {"jobType": "Recurring", "cronExpr": "99 * * * *", "scriptContent": "pass"}, token
    )
    violations = payload["error"]["details"][-1]["fieldViolations"]
    assert violations[0]["field"] == "job.cron_expr"
    status, payload = mesh.call("POST", "/api/jobs", raw=b"{not json", token=token)
    assert status == 400 and payload["error"]["status"] == "INVALID_ARGUMENT"
    status, payload = mesh.call("POST", "/api/jobs", raw=b"x" * (3 * 1024 * 1024), token=token)
    assert status == 413 and payload["error"]["code"] == 413
    for _ in range(5):
        mesh.call("POST", "/api/auth/login", {"email": "mapper@example.com", "password": "wrong password"})
    status, payload = mesh.call(
        "POST", "/api/auth/login", {"email": "mapper@example.com", "password": "wrong password"}
    )
    assert (status, payload["error"]["status"]) == (429, "RESOURCE_EXHAUSTED")
    status, payload = mesh.call("GET", "/api/nowhere", token=token)
    assert status == 404 and payload["error"]["status"] == "NOT_FOUND"
    status, health = mesh.call("GET", "/api/health")
    assert status == 200 and health["status"] == "HEALTH_STATUS_SERVING"


def call_from(
    mesh: RealMesh, source: str, method: str, path: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """A request from a chosen loopback address (any 127.x.y.z is this host)."""
    gateway = urlparse(mesh.gateway)
    assert gateway.hostname is not None
    conn = HTTPConnection(gateway.hostname, gateway.port, timeout=30, source_address=(source, 0))
    try:
        conn.request(method, path, json.dumps(body), {"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


@pytest.mark.timeout(120)
def test_login_throttling_counts_the_http_client_not_what_it_claims(real_mesh: RealMesh) -> None:
    mesh = real_mesh
    mesh.user("quinn")
    wrong = {"email": "quinn@example.com", "password": "wrong password"}
    right = {"email": "quinn@example.com", "password": "correct horse battery"}

    def guess(i: int) -> int:
        # Each guess claims to come from somewhere else; the gateway trusts no proxy here.
        return call_from(mesh, "127.0.0.1", "POST", "/api/auth/login", wrong, {"X-Forwarded-For": f"198.51.100.{i}"})[0]

    with ThreadPoolExecutor(20) as pool:
        statuses = sorted(pool.map(guess, range(20)))
    assert statuses == [401] * 5 + [429] * 15
    status, payload = call_from(mesh, "127.0.0.1", "POST", "/api/auth/login", right, {"X-Forwarded-For": "203.0.113.1"})
    assert (status, payload["error"]["status"]) == (429, "RESOURCE_EXHAUSTED")
    # The owner, from another address, logs in and changes her password; the old token is dead at once.
    status, session = call_from(mesh, "127.0.0.2", "POST", "/api/auth/login", right)
    assert status == 200, session
    auth = {"Authorization": f"Bearer {session['token']}"}
    change = {"currentPassword": "correct horse battery", "newPassword": "a brand new passphrase"}
    status, renewed = call_from(mesh, "127.0.0.2", "PUT", "/api/auth/me/password", change, auth)
    assert status == 200 and renewed["token"] and renewed["userId"] == session["userId"], renewed
    assert mesh.call("GET", "/api/auth/me", token=session["token"])[0] == 401
    assert mesh.call("GET", "/api/auth/me", token=renewed["token"])[0] == 200


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool (Debian package prometheus) is installed by .ci/run"
    return path


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text: str = resp.read().decode()
    return text


def sample(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.timeout(120)
def test_prometheus_metrics(real_mesh: RealMesh) -> None:
    mesh = real_mesh
    token, _ = mesh.user("metrics")
    for script in ("print(1)", "raise SystemExit(1)"):
        job = mesh.create_one_time(token, script)
        wait_runs(mesh, token, job["jobId"], final)
    # The monitor observes finished runs 5 s behind, so late commits are not missed.
    poll_until(lambda: sample(scrape(mesh.monitor_http + "/metrics"), "jobmesh_run_duration_seconds_count") >= 2, 30)
    status, _ = mesh.call("GET", "/api/health")  # one RPC the monitor's own gRPC metrics count
    assert status == 200
    text = scrape(mesh.monitor_http + "/metrics")
    for name in ("jobmesh_jobs", "jobmesh_runs", "jobmesh_queue_depth", "jobmesh_workers_alive",
                 "jobmesh_oldest_pending_age_seconds", "jobmesh_run_duration_seconds_bucket",
                 "jobmesh_schedule_lateness_seconds_bucket", "jobmesh_runs_finished_total",
                 "jobmesh_runs_skipped_total",
                 "grpc_server_handled_total", "grpc_server_handling_seconds_bucket"):  # fmt: skip
        assert f"\n{name}" in text, name
    assert sample(text, "jobmesh_workers_alive") == 1
    assert 'jobmesh_runs_finished_total{status="SUCCEEDED"}' in text
    assert sample(text, "jobmesh_run_duration_seconds_count") >= 2
    assert sample(text, "jobmesh_jobs") >= 2
    for url in (mesh.monitor_http + "/metrics", mesh.scheduler_metrics + "/metrics"):
        body = scrape(url)
        result = subprocess.run([promtool(), "check", "metrics"], input=body, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    scheduler_text = scrape(mesh.scheduler_metrics + "/metrics")
    assert (
        'grpc_server_handled_total{grpc_code="OK",grpc_method="CreateJob",grpc_service="jobmesh.v1.JobService"}'
        in scheduler_text
    )
    status, figures = mesh.call("GET", "/api/health/metrics")
    assert status == 200 and figures["workersAlive"] == 1 and figures["jobsByState"]["COMPLETED"] >= "2"


@pytest.mark.timeout(300)
def test_schemathesis_finds_no_server_errors(real_mesh: RealMesh, tmp_path: Path) -> None:
    mesh = real_mesh
    token, _ = mesh.user("fuzzer")
    binary = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [str(binary), "run", f"{mesh.gateway}/openapi.json", "--header", f"Authorization: Bearer {token}",
         "--checks", "not_a_server_error,response_schema_conformance", "--max-examples", "25",
         "--exclude-path", "/api/auth/login", "--exclude-path", "/api/auth/signup",
         "--phases", "examples,fuzzing", "--no-color"],
        capture_output=True, text=True, timeout=280, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def chromium() -> str:
    path = shutil.which("chromium")
    assert path, "chromium (Debian package) is installed by .ci/run"
    return path


@pytest.mark.timeout(120)
def test_swagger_ui_renders_in_headless_chromium(real_mesh: RealMesh, tmp_path: Path) -> None:
    result = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=10000", "--dump-dom", f"{real_mesh.gateway}/swagger"],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    dom = result.stdout
    assert "jobmesh REST API" in dom, dom[-2000:] + result.stderr[-2000:]
    assert "/api/jobs/{jobId}/runs" in dom
    assert "Authorize" in dom


@pytest.mark.timeout(60)
def test_follow_logs_as_server_sent_events(real_mesh: RealMesh) -> None:
    import json

    mesh = real_mesh
    token, _ = mesh.user("follower")
    script = "import time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(0.4)\n"
    job = mesh.create_one_time(token, script)
    runs = wait_runs(mesh, token, job["jobId"], lambda rs: bool(rs))
    request = urllib.request.Request(
        f"{mesh.gateway}/api/jobs/{job['jobId']}/runs/{runs[0]['id']}/logs?follow=true",
        headers={"Authorization": f"Bearer {token}"},
    )
    events: list[tuple[str, dict[str, Any]]] = []
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        kind = ""
        for raw in resp:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
    chunks = "".join(d["data"] for k, d in events if k == "chunk")
    assert chunks == "tick 0\ntick 1\ntick 2\n"
    assert events[0][0] == "run" and events[-1][0] == "run"
    assert events[-1][1]["status"] == "RUN_STATUS_SUCCEEDED"
