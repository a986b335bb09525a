"""The console's files as the gateway serves them, without a backend: the vendored browser
libraries are the npm packages declared, every page route answers with the page under a
Content-Security-Policy, the modules import only what ships, and the API routes the
console added are in the route table and the OpenAPI document."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from api_gateway.app import build_app, connect
from api_gateway.console import CONSOLE_DIR, PAGES
from api_gateway.openapi import build_openapi
from api_gateway.routes import ROUTES, HttpCall
from gen.jobmesh.v1 import job_pb2, run_pb2

VENDOR = CONSOLE_DIR / "vendor"


def test_vendored_files_are_the_declared_packages() -> None:
    manifest = json.loads((VENDOR / "vendor.json").read_text())
    listed: set[Path] = {VENDOR / "vendor.json"}
    for package in manifest["packages"]:
        assert re.fullmatch(r"\d+\.\d+\.\d+", package["version"]), package
        assert package["license"] and package["integrity"].startswith("sha512-")
        for entry in package["files"]:
            path = VENDOR / entry["path"]
            listed.add(path)
            assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], (
                f"{entry['path']} is not {package['name']}@{package['version']}/{entry['from']}: "
                "run scripts/vendor_console.py --update"
            )
            if entry["from"] == "package.json":  # the copy says which release it is
                declared = json.loads(path.read_text())
                assert (declared["name"], declared["version"], declared["license"]) == (
                    package["name"],
                    package["version"],
                    package["license"],
                )
    on_disk = {p for p in VENDOR.rglob("*") if p.is_file()}
    assert on_disk == listed, f"files in vendor/ that vendor.json does not declare: {sorted(on_disk - listed)}"


def test_modules_import_only_what_ships() -> None:
    page = (CONSOLE_DIR / "index.html").read_text()
    (import_map,) = re.findall(r'<script type="importmap">(.*?)</script>', page, re.S)
    mapped = json.loads(import_map)["imports"]
    for target in mapped.values():
        assert (CONSOLE_DIR / target.removeprefix("/console/")).is_file(), target
    sources = [*CONSOLE_DIR.joinpath("js").rglob("*.js")]
    assert sources
    for source in sources:
        text = source.read_text()
        for specifier in re.findall(r'^import\s[^;]*?from\s+"([^"]+)"', text, re.M | re.S):
            if specifier.startswith("."):
                assert (source.parent / specifier).resolve().is_file(), (source.name, specifier)
            else:
                assert specifier in mapped, (source.name, specifier)
        assert "http://" not in text and "https://" not in text, source.name  # no other origin, ever
        assert "innerHTML" not in text and "eval(" not in text, source.name


async def test_pages_and_files_are_served_under_the_policy() -> None:
    backends = connect("127.0.0.1:1", "127.0.0.1:1")
    client = TestClient(TestServer(build_app(backends)))
    await client.start_server()
    try:
        pages = [p.replace("{jobId}", "0" * 8).replace("{runId}", "1" * 8) for p in PAGES]
        policies = set()
        for path in pages:
            resp = await client.get(path)
            assert resp.status == 200, path
            assert resp.content_type == "text/html"
            assert '<script type="module" src="/console/js/main.js">' in await resp.text()
            policies.add(resp.headers["Content-Security-Policy"])
        (policy,) = policies
        assert "script-src 'self' 'sha256-" in policy and "'unsafe-inline'" not in policy
        assert "connect-src 'self'" in policy and "default-src 'none'" in policy
        for path in ("/console/js/main.js", "/console/app.css", "/console/vendor/preact/preact.mjs"):
            resp = await client.get(path)
            assert resp.status == 200, path
            assert resp.headers["Content-Security-Policy"] == policy
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert (await client.get("/console/js/main.js")).content_type in ("text/javascript", "application/javascript")
        missing = await client.get("/console/nothing.js")
        assert missing.status == 404 and (await missing.json())["error"]["status"] == "NOT_FOUND"
        traversal = await client.get("/console/../app.py")
        assert traversal.status == 404
        # The API and its documents are untouched.
        assert (await client.get("/openapi.json")).status == 200
        swagger = await client.get("/swagger")
        assert swagger.status == 200 and "Content-Security-Policy" not in swagger.headers
        assert (await client.get("/jobs/a/b/c/d")).status == 404
    finally:
        await client.close()
        await backends.close()


def test_routes_the_console_reads() -> None:
    recent = next(r for r in ROUTES if r.rpc == "BatchListRecentRuns")
    message = recent.build(HttpCall({}, {"jobIds": " a , b,,c ", "count": "5"}, None, {}))
    assert isinstance(message, run_pb2.BatchListRecentRunsRequest)
    assert (list(message.job_ids), message.count) == (["a", "b", "c"], 5)
    running = next(r for r in ROUTES if r.rpc == "ListRunningRuns")
    assert running.build(HttpCall({}, {"pageSize": "7"}, None, {})) == run_pb2.ListRunningRunsRequest(page_size=7)
    jobs = next(r for r in ROUTES if r.rpc == "ListJobs")
    listed = jobs.build(HttpCall({}, {"queue": "night", "name": "Report", "state": "PAUSED"}, None, {}))
    assert isinstance(listed, job_pb2.ListJobsRequest)
    assert (listed.queue, listed.name_contains, listed.state) == ("night", "Report", job_pb2.JOB_STATE_PAUSED)
    spec = build_openapi()
    assert spec["paths"]["/api/runs/recent"]["get"]["security"] == [{"bearerAuth": []}]
    assert "/api/runs/running" in spec["paths"]
    assert {p["name"] for p in spec["paths"]["/api/jobs"]["get"]["parameters"]} >= {"queue", "name"}
    assert "scheduleDescription" in spec["components"]["schemas"]["Job"]["properties"]
    assert "description" in spec["components"]["schemas"]["PreviewScheduleResponse"]["properties"]
    metrics = spec["components"]["schemas"]["GetMetricsResponse"]["properties"]
    assert {"latenessP50Seconds", "latenessP99Seconds", "schedulersAlive"} <= set(metrics)
