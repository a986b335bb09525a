"""The control plane alone: N one-time jobs due at the same instant, executed by the
worker's ``noop`` executor (records completion without spawning). Prints runs/s
from the due instant to the last result written, and lateness (start - slot).

    .venv/bin/python -m bench.pipeline [--runs 50000] [--workers 2] [--slots 64] [--schedulers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select

from bench.common import env_for, flush_redis, free_port, fresh_database, percentile, processes
from bench.scale import job_values
from core.ids import new_id
from db.engine import Database
from db.models import JobRow, RunRow

CHUNK = 5000
FINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED", "LOST", "SKIPPED")


async def seed(db: Database, n: int, due: datetime, now: datetime) -> None:
    for start in range(0, n, CHUNK):
        ids = [new_id() for _ in range(min(CHUNK, n - start))]
        jobs = []
        for i in ids:
            values = job_values(i, now)
            values.update(job_type="ONE_TIME", cron_expr="", scheduled_at=due)
            jobs.append(values)
        runs = [
            {"id": new_id(), "scheduled_at": due, "job_id": i, "attempt": 1, "status": "PENDING", "trigger": "SCHEDULE",
             "queue": "default", "due_at": due, "worker_id": "", "fencing_token": "", "error": "", "skip_reason": "",
             "cancel_requested": False, "created_at": now}
            for i in ids
        ]  # fmt: skip
        async with db.transaction() as conn:
            await conn.execute(insert(JobRow), jobs)
            await conn.execute(insert(RunRow), runs)


async def wait_done(db: Database, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with db.transaction() as conn:
            done = (
                await conn.execute(select(func.count()).select_from(RunRow).where(RunRow.status.in_(FINAL)))
            ).scalar_one()
        if done >= n:
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"only {done} of {n} runs finished")


async def run(n: int, workers: int, slots: int, schedulers: int, lead: float) -> dict[str, object]:
    flush_redis()
    with fresh_database() as url, processes() as procs:
        db = Database.from_url(url, 4)
        try:
            now = datetime.now(UTC)
            due = (now + timedelta(seconds=lead)).replace(microsecond=0)
            await seed(db, n, due, now)
            for _ in range(schedulers):
                procs.start("scheduler_svc.main", env_for(url, JOBMESH_SCHEDULER_PORT=str(free_port())))
            for _ in range(workers):
                procs.start(
                    "worker_svc.main", env_for(url, JOBMESH_WORKER_EXECUTOR="noop", JOBMESH_WORKER_SLOTS=str(slots))
                )
            assert datetime.now(UTC) < due, "set-up took longer than the lead time; raise --lead"
            await wait_done(db, n, timeout=max(600.0, n / 50))
            async with db.transaction() as conn:
                rows = (
                    await conn.execute(
                        select(RunRow.scheduled_at, RunRow.started_at, RunRow.finished_at, RunRow.status)
                    )
                ).all()
        finally:
            await db.close()
    finished = max(r.finished_at for r in rows)
    elapsed = (finished - due).total_seconds()
    lateness = [(r.started_at - r.scheduled_at).total_seconds() for r in rows if r.started_at is not None]
    return {
        "runs": n,
        "workers": workers,
        "slots_per_worker": slots,
        "schedulers": schedulers,
        "succeeded": sum(1 for r in rows if r.status == "SUCCEEDED"),
        "seconds_due_to_last_result": round(elapsed, 3),
        "runs_per_second": round(n / elapsed, 1),
        "lateness_p50_ms": round(percentile(lateness, 50) * 1000, 1),
        "lateness_p99_ms": round(percentile(lateness, 99) * 1000, 1),
        "lateness_max_ms": round(max(lateness) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--schedulers", type=int, default=1)
    parser.add_argument("--lead", type=float, default=30.0, help="seconds between set-up start and the due instant")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.runs, args.workers, args.slots, args.schedulers, args.lead))))


if __name__ == "__main__":
    main()
