"""Gateway pieces that need no backend: CORS, the OpenAPI document, enum spellings."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api_gateway.app import build_app, connect
from api_gateway.openapi import build_openapi
from api_gateway.translate import parse
from core.errors import InvalidArgument
from gen.jobmesh.v1 import job_pb2


async def test_cors_preflight_and_headers() -> None:
    backends = connect("127.0.0.1:1", "127.0.0.1:1")
    client = TestClient(TestServer(build_app(backends, ["https://app.example.com"])))
    await client.start_server()
    try:
        resp = await client.options("/api/jobs", headers={"Origin": "https://app.example.com"})
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
        other = await client.get("/openapi.json", headers={"Origin": "https://evil.example.com"})
        assert other.status == 200 and "Access-Control-Allow-Origin" not in other.headers
    finally:
        await client.close()
        await backends.close()


def test_openapi_is_generated_from_the_route_table() -> None:
    spec = build_openapi()
    assert "/api/jobs/{jobId}/runs/{runId}/cancel" in spec["paths"]
    job = spec["components"]["schemas"]["Job"]["properties"]
    assert {"cronExpr", "retryPolicy", "scheduledAt", "jobId"} <= set(job)
    assert "Recurring" in job["jobType"]["enum"] and "JOB_TYPE_RECURRING" in job["jobType"]["enum"]
    assert spec["paths"]["/api/health"]["get"].get("security") is None
    assert spec["paths"]["/api/jobs"]["post"]["security"] == [{"bearerAuth": []}]


def test_earlier_spellings_are_accepted() -> None:
    job = parse(
        {"jobType": "OneTime", "scheduledAt": "2030-01-01T10:00:00", "retryPolicy": {"strategy": "LinearBackoff"}},
        job_pb2.Job(),
    )
    assert job.job_type == job_pb2.JOB_TYPE_ONE_TIME  # type: ignore[attr-defined]
    assert job.retry_policy.strategy == job_pb2.RETRY_STRATEGY_LINEAR_BACKOFF  # type: ignore[attr-defined]
    assert job.scheduled_at.ToJsonString() == "2030-01-01T10:00:00Z"  # type: ignore[attr-defined]
    with pytest.raises(InvalidArgument) as info:
        parse({"jobType": "Weekly"}, job_pb2.Job())
    assert info.value.violations[0].field == "jobType"


def test_network_accepts_proto_and_earlier_spellings() -> None:
    for spelling in ("NETWORK_HOST", "Host"):
        job = parse({"network": spelling}, job_pb2.Job())
        assert job.network == job_pb2.NETWORK_HOST  # type: ignore[attr-defined]
    for spelling in ("NETWORK_NONE", "None"):
        job = parse({"network": spelling}, job_pb2.Job())
        assert job.network == job_pb2.NETWORK_NONE  # type: ignore[attr-defined]
    with pytest.raises(InvalidArgument) as info:
        parse({"network": "Bridge"}, job_pb2.Job())
    assert info.value.violations[0].field == "network"
    network = build_openapi()["components"]["schemas"]["Job"]["properties"]["network"]
    assert {"Host", "None", "NETWORK_HOST", "NETWORK_NONE"} <= set(network["enum"])
