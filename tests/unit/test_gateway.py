"""Gateway pieces that need no backend: CORS, the OpenAPI document, enum spellings."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api_gateway.app import build_app, connect
from api_gateway.openapi import build_openapi
from api_gateway.translate import parse
from core.errors import InvalidArgument
from core.http import start_http
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


@pytest.mark.parametrize(
    ("body", "field"),
    [({"retryPolicy": "x"}, "retryPolicy"), ({"retryPolicy": []}, "retryPolicy"), ({"nmae": "typo"}, "nmae"),
     ({"retryPolicy": {"tries": 3}}, "retryPolicy.tries"), ({"jobType": True}, "jobType"),
     ({"jobType": 1.0}, "jobType"), ({"retryPolicy": {"maxAttempts": 1.5}}, "retryPolicy.maxAttempts")],
)  # fmt: skip
def test_bodies_name_unknown_fields_and_values_of_the_wrong_shape(body: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse(body, job_pb2.Job())
    assert field in [v.field for v in info.value.violations]


def test_keys_a_route_reads_itself_and_nulls_are_not_unknown() -> None:
    job = parse({"requestId": "k", "name": "n", "retryPolicy": None}, job_pb2.Job(), consumed=("requestId",))
    assert job.name == "n" and not job.HasField("retry_policy")  # type: ignore[attr-defined]


async def test_requests_aiohttp_refuses_are_answered_in_json() -> None:
    backends = connect("127.0.0.1:1", "127.0.0.1:1")
    runner, port = await start_http(build_app(backends), "127.0.0.1", 0)
    try:
        cases = [
            (b"GET /api/jobs HTTP/1.1\r\nAuthorization: Bearer a\x00b\r\n", "Authorization"),
            (b"GET /api/jobs HTTP/1.1\r\nX-Request-Id: \x01\r\n", "X-Request-Id"),
            (b"GET /api/jobs HTTP/1.1\r\nX-Long: " + b"a" * 9000 + b"\r\n", "request"),  # aiohttp quotes no name
            (b"GET /api/jobs/\xff HTTP/1.1\r\n", "url"),
        ]
        for head_lines, field in cases:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head_lines + b"Host: gw\r\nConnection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.split(b" ")[1] == b"400" and b"application/json" in head, answer
            error = json.loads(body)["error"]
            assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT"
            assert [v["field"] for v in error["details"][0]["fieldViolations"]] == [field]
            assert b"a\x00b" not in body and b"aaaa" not in body, "header values are not echoed"
    finally:
        await runner.cleanup()
        await backends.close()


def test_openapi_states_the_length_limits() -> None:
    schemas = build_openapi()["components"]["schemas"]
    job = schemas["Job"]["properties"]
    assert (job["name"]["maxLength"], job["cronExpr"]["maxLength"], job["timezone"]["maxLength"]) == (200, 255, 64)
    assert "maxLength" not in job["scriptContent"], "measured in bytes, by the scheduler"
    assert schemas["LoginRequest"]["properties"]["password"]["maxLength"] == 128
