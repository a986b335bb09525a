"""CreateJob throughput over gRPC (64 in flight) and over REST, against a trivial
grpcio echo server measured the same way in the same run.

    .venv/bin/python -m bench.api [--seconds 10] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import grpc

from bench.common import env_for, flush_redis, free_port, fresh_database, percentile, processes
from gen.jobmesh.v1 import auth_pb2, auth_pb2_grpc, job_pb2, job_pb2_grpc

SCRIPT = "print('hello')"


async def drive(call: Callable[[int], Awaitable[None]], seconds: float, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    counter = 0

    async def loop() -> None:
        nonlocal errors, counter
        while time.perf_counter() < deadline:
            counter += 1
            started = time.perf_counter()
            try:
                await call(counter)
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "requests": len(latencies),
        "errors": errors,
    }


def job(n: int) -> job_pb2.Job:
    at = job_pb2.Job().scheduled_at
    at.FromDatetime(datetime.now(UTC) + timedelta(days=1))
    return job_pb2.Job(name=f"bench-{n}", job_type=job_pb2.JOB_TYPE_ONE_TIME, scheduled_at=at, script_content=SCRIPT)


async def run(seconds: float, concurrency: int) -> dict[str, object]:
    result: dict[str, object] = {"seconds": seconds, "concurrency": concurrency}
    with processes() as procs:
        port = int(procs.start("bench.echo_server", env_for("sqlite://"), " ready ").group(1))  # type: ignore[union-attr]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            echo = channel.unary_unary("/bench.Echo/Echo")
            payload = job(0).SerializeToString()

            async def echo_call(_: int) -> None:
                await echo(payload, timeout=10)

            await drive(echo_call, 1.0, concurrency)  # warm-up
            result["echo_grpc"] = await drive(echo_call, seconds, concurrency)

    flush_redis()
    with fresh_database() as url, processes() as procs:
        sched_port, gw_port = free_port(), free_port()
        env = env_for(url, JOBMESH_SCHEDULER_PORT=str(sched_port), JOBMESH_GATEWAY_PORT=str(gw_port),
                      JOBMESH_SCHEDULER_ADDR=f"127.0.0.1:{sched_port}")  # fmt: skip
        procs.start("scheduler_svc.main", env)
        procs.start("api_gateway.main", env)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{sched_port}") as channel:
            auth = auth_pb2_grpc.AuthServiceStub(channel)
            session = await auth.SignUp(
                auth_pb2.SignUpRequest(username="bench", email="bench@example.com", password="bench password")
            )
            md = (("authorization", f"Bearer {session.access_token}"),)
            jobs = job_pb2_grpc.JobServiceStub(channel)

            async def create_grpc(n: int) -> None:
                await jobs.CreateJob(job_pb2.CreateJobRequest(job=job(n)), metadata=md, timeout=10)

            await drive(create_grpc, 1.0, concurrency)
            result["create_job_grpc"] = await drive(create_grpc, seconds, concurrency)

        headers = {"Authorization": f"Bearer {session.access_token}", "Content-Type": "application/json"}
        at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{gw_port}", connector=connector) as http:

            async def create_rest(n: int) -> None:
                body = {"name": f"rest-{n}", "jobType": "OneTime", "scheduledAt": at, "scriptContent": SCRIPT}
                async with http.post("/api/jobs", json=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 201:
                        raise RuntimeError(resp.status)

            await drive(create_rest, 1.0, concurrency)
            result["create_job_rest"] = await drive(create_rest, seconds, concurrency)

    echo_rps = result["echo_grpc"]["rps"]  # type: ignore[index]
    result["ratio_grpc_vs_echo"] = round(result["create_job_grpc"]["rps"] / echo_rps, 3)  # type: ignore[index]
    result["ratio_rest_vs_echo"] = round(result["create_job_rest"]["rps"] / echo_rps, 3)  # type: ignore[index]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.seconds, args.concurrency))))


if __name__ == "__main__":
    main()
