"""A steady load of recurring jobs (default 1,000 jobs firing every second = 1,000
runs/s) for 60 s through the whole mesh with the noop executor: lateness
(start - slot) p50/p99/max and missed slots.

    .venv/bin/python -m bench.lateness [--jobs 1000] [--seconds 60] [--workers 2] [--slots 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select, update

from bench.common import env_for, flush_redis, free_port, fresh_database, percentile, processes
from bench.scale import job_values
from core.ids import new_id
from db.engine import Database
from db.models import JobRow, RunRow, ScheduleStateRow


async def run(jobs: int, seconds: float, workers: int, slots: int) -> dict[str, object]:
    flush_redis()
    with fresh_database() as url, processes() as procs:
        db = Database.from_url(url, 4)
        try:
            for _ in range(workers):
                procs.start(
                    "worker_svc.main", env_for(url, JOBMESH_WORKER_EXECUTOR="noop", JOBMESH_WORKER_SLOTS=str(slots))
                )
            procs.start(
                "scheduler_svc.main", env_for(url, JOBMESH_SCHEDULER_PORT=str(free_port()), JOBMESH_LOG_LEVEL="INFO")
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
            await asyncio.sleep((end - datetime.now(UTC)).total_seconds())
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
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slots", type=int, default=500)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.jobs, args.seconds, args.workers, args.slots))))


if __name__ == "__main__":
    main()
