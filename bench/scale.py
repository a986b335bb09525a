"""One materializer tick with 10k vs 1M stored recurring jobs, of which the same 1k
are due: the tick must cost O(due rows), not O(all jobs).

    .venv/bin/python -m bench.scale [--small 10000] [--large 1000000] [--due 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, insert, update

from bench.common import fresh_database
from core.ids import new_id
from db.engine import Database
from db.models import JobRow, RunRow, ScheduleStateRow
from db.repositories.schedules import ScheduleRepository
from scheduler_svc.materializer import Materializer, MaterializerConfig

CHUNK = 5000


def job_values(job_id: str, now: datetime) -> dict[str, object]:
    return {
        "id": job_id, "owner_id": "bench", "name": "", "job_type": "RECURRING", "cron_expr": "* * * * *",
        "timezone": "UTC", "scheduled_at": None, "script_content": "pass", "timeout_seconds": 60,
        "retry_max_attempts": 1, "retry_strategy": "FIXED_BACKOFF", "retry_initial_delay_seconds": 0,
        "retry_max_delay_seconds": 0, "retry_multiplier": 1.0, "misfire_policy": "RUN_ONCE",
        "overlap_policy": "ALLOW", "queue": "default", "max_lateness_seconds": 0, "state": "ACTIVE",
        "version": 1, "request_id": None, "created_at": now, "updated_at": now, "deleted_at": None,
    }  # fmt: skip


async def grow(db: Database, have: int, want: int, now: datetime) -> None:
    """Add jobs whose cursors lie a day ahead (stored, not due)."""
    far = now + timedelta(days=1)
    while have < want:
        n = min(CHUNK, want - have)
        ids = [new_id() for _ in range(n)]
        async with db.transaction() as conn:
            await conn.execute(insert(JobRow), [job_values(i, now) for i in ids])
            await conn.execute(
                insert(ScheduleStateRow), [{"job_id": i, "next_fire_at": far, "version": 1} for i in ids]
            )
        have += n


async def tick_time(db: Database, due_ids: list[str], now: datetime, repeats: int = 5) -> float:
    """Median time of one tick that materializes the same due jobs."""
    materializer = Materializer(
        ScheduleRepository(db),
        MaterializerConfig(lookahead=timedelta(seconds=1), misfire_grace=timedelta(seconds=30),
                           run_all_cap=100, batch_size=len(due_ids)),
    )  # fmt: skip
    times = []
    for _ in range(repeats):
        async with db.transaction() as conn:
            await conn.execute(delete(RunRow))
            await conn.execute(
                update(ScheduleStateRow).where(ScheduleStateRow.job_id.in_(due_ids)).values(next_fire_at=now)
            )
        started = time.perf_counter()
        written = await materializer.tick(now + timedelta(milliseconds=500))
        times.append(time.perf_counter() - started)
        assert written == len(due_ids), written
    return sorted(times)[len(times) // 2]


async def run(small: int, large: int, due: int) -> dict[str, object]:
    with fresh_database() as url:
        db = Database.from_url(url, 4)
        try:
            now = datetime.now(UTC).replace(microsecond=0)
            due_ids = [new_id() for _ in range(due)]
            async with db.transaction() as conn:
                await conn.execute(insert(JobRow), [job_values(i, now) for i in due_ids])
                await conn.execute(insert(ScheduleStateRow), [{"job_id": i, "next_fire_at": now} for i in due_ids])
            await grow(db, due, small, now)
            small_tick = await tick_time(db, due_ids, now)
            started = time.perf_counter()
            await grow(db, small, large, now)
            grow_seconds = time.perf_counter() - started
            large_tick = await tick_time(db, due_ids, now)
        finally:
            await db.close()
    return {
        "due_jobs": due,
        "small_jobs": small,
        "large_jobs": large,
        "tick_ms_small": round(small_tick * 1000, 1),
        "tick_ms_large": round(large_tick * 1000, 1),
        "ratio_large_vs_small": round(large_tick / small_tick, 3),
        "setup_seconds_for_large": round(grow_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=1000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.small, args.large, args.due))))


if __name__ == "__main__":
    main()
