"""A steady load of recurring jobs (default 1,000 jobs firing every second = 1,000
runs/s) for 60 s through the whole mesh with the noop executor: lateness
(start - slot) p50/p99/max and missed slots.

With ``--login-flood N``, N clients hammer the scheduler's Login during the whole
measurement (each one login after another, every one for a new unknown email, so
every one costs a password check): the scheduling loops must not notice.

    .venv/bin/python -m bench.lateness [--jobs 1000] [--seconds 60] [--workers 2] [--slots 500] [--login-flood 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import grpc
from sqlalchemy import insert, select, update

from bench.common import env_for, flush_redis, free_port, fresh_database, percentile, processes
from bench.scale import job_values
from core.ids import new_id
from db.engine import Database
from db.models import JobRow, RunRow, ScheduleStateRow
from gen.jobmesh.v1 import auth_pb2, auth_pb2_grpc


async def flood_logins(addr: str, clients: int, stop: asyncio.Event) -> dict[str, object]:
    """``clients`` concurrent callers, each logging in again as soon as answered."""
    codes: Counter[str] = Counter()
    latencies: list[float] = []

    async def client(stub: auth_pb2_grpc.AuthServiceStub) -> None:
        while not stop.is_set():
            request = auth_pb2.LoginRequest(email=f"flood-{uuid.uuid4().hex}@example.com", password="wrong password")
            started = time.perf_counter()
            try:
                await stub.Login(request, timeout=30)
                codes["OK"] += 1
            except grpc.aio.AioRpcError as err:
                codes[err.code().name] += 1
            latencies.append(time.perf_counter() - started)

    async with grpc.aio.insecure_channel(addr) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        began = time.perf_counter()
        await asyncio.gather(*(client(stub) for _ in range(clients)))
        elapsed = time.perf_counter() - began
    return {
        "login_flood_clients": clients,
        "logins_answered": sum(codes.values()),
        "logins_per_second": round(sum(codes.values()) / elapsed, 1) if elapsed else 0.0,
        "login_codes": dict(codes),
        "login_latency_p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "login_latency_p99_ms": round(percentile(latencies, 99) * 1000, 1),
    }


async def run(jobs: int, seconds: float, workers: int, slots: int, login_flood: int = 0) -> dict[str, object]:
    flush_redis()
    with fresh_database() as url, processes() as procs:
        db = Database.from_url(url, 4)
        try:
            for _ in range(workers):
                procs.start(
                    "worker_svc.main", env_for(url, JOBMESH_WORKER_EXECUTOR="noop", JOBMESH_WORKER_SLOTS=str(slots))
                )
            scheduler_port = free_port()
            procs.start(
                "scheduler_svc.main", env_for(url, JOBMESH_SCHEDULER_PORT=str(scheduler_port), JOBMESH_LOG_LEVEL="INFO")
            )
            start = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
            ids = [new_id() for _ in range(jobs)]
            rows = []
            for i in ids:
                values = job_values(i, datetime.now(UTC))
                values["cron_expr"] = "* * * * * *"
                rows.append(values)
            async with db.transaction() as conn:
                await conn.execute(insert(JobRow), rows)
                await conn.execute(insert(ScheduleStateRow), [{"job_id": i, "next_fire_at": start} for i in ids])
            end = start + timedelta(seconds=seconds)
            flood: asyncio.Task[dict[str, object]] | None = None
            stop_flood = asyncio.Event()
            if login_flood:
                await asyncio.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds()))
                flood = asyncio.create_task(flood_logins(f"127.0.0.1:{scheduler_port}", login_flood, stop_flood))
            await asyncio.sleep((end - datetime.now(UTC)).total_seconds())
            stop_flood.set()
            flood_figures = await flood if flood is not None else {}
            async with db.transaction() as conn:
                await conn.execute(update(JobRow).values(state="PAUSED"))
            await asyncio.sleep(5)
            async with db.transaction() as conn:
                result = (
                    await conn.execute(
                        select(RunRow.scheduled_at, RunRow.started_at, RunRow.status).where(
                            RunRow.scheduled_at >= start, RunRow.scheduled_at < end
                        )
                    )
                ).all()
        finally:
            await db.close()
    expected = jobs * int(seconds)
    started = [r for r in result if r.started_at is not None]
    lateness = [(r.started_at - r.scheduled_at).total_seconds() for r in started]
    return {
        "jobs": jobs,
        "seconds": seconds,
        "target_runs_per_second": jobs,
        "expected_runs": expected,
        "recorded_runs": len(result),
        "started_runs": len(started),
        "missed_slots": max(0, expected - len(result)),
        "lateness_p50_ms": round(percentile(lateness, 50) * 1000, 1),
        "lateness_p99_ms": round(percentile(lateness, 99) * 1000, 1),
        "lateness_max_ms": round(max(lateness, default=0) * 1000, 1),
        **flood_figures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slots", type=int, default=500)
    parser.add_argument("--login-flood", type=int, default=0, help="clients hammering Login while measured")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.jobs, args.seconds, args.workers, args.slots, args.login_flood))))


if __name__ == "__main__":
    main()
