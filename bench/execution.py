"""Real script runs through the whole mesh against Celery 5, in the same invocation.

jobmesh: N one-time jobs due at one instant, each a Python script run in isolation
by the subprocess executor (a fresh interpreter per run), for a `pass` script and a
10-line script that prints; runs/s from the due instant to the last result.
Celery: N trivial tasks (Redis broker, prefork concurrency = CPU count), sent at
once; tasks/s from the first send to the last result.

    .venv/bin/python -m bench.execution [--runs 300] [--slots 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select

from bench.common import ROOT, env_for, flush_redis, fresh_database, processes
from bench.pipeline import FINAL
from bench.scale import job_values
from core.ids import new_id
from db.engine import Database
from db.models import JobRow, RunRow

PRINTING = "\n".join(
    [
        "import sys",
        "total = 0",
        "for i in range(10):",
        "    total += i",
        "    print('line', i, total)",
        "print('stderr line', file=sys.stderr)",
        "data = {'total': total}",
        "assert data['total'] == 45",
        "print('done')",
        "sys.stdout.flush()",
    ]
)


async def mesh_rate(script: str, n: int, slots: int) -> float:
    flush_redis()
    with fresh_database() as url, processes() as procs:
        db = Database.from_url(url, 2)
        try:
            procs.start("scheduler_svc.main", env_for(url, JOBMESH_SCHEDULER_PORT="0"))
            procs.start("worker_svc.main", env_for(url, JOBMESH_WORKER_SLOTS=str(slots)))
            now = datetime.now(UTC)
            due = (now + timedelta(seconds=3)).replace(microsecond=0)
            ids = [new_id() for _ in range(n)]
            jobs = []
            for i in ids:
                values = job_values(i, now)
                values.update(job_type="ONE_TIME", cron_expr="", scheduled_at=due, script_content=script)
                jobs.append(values)
            runs = [
                {"id": new_id(), "scheduled_at": due, "job_id": i, "attempt": 1, "status": "PENDING",
                 "trigger": "SCHEDULE", "queue": "default", "due_at": due, "worker_id": "", "fencing_token": "",
                 "error": "", "skip_reason": "", "cancel_requested": False, "created_at": now}
                for i in ids
            ]  # fmt: skip
            async with db.transaction() as conn:
                await conn.execute(insert(JobRow), jobs)
                await conn.execute(insert(RunRow), runs)
            while True:
                async with db.transaction() as conn:
                    done = (
                        await conn.execute(select(func.count()).select_from(RunRow).where(RunRow.status.in_(FINAL)))
                    ).scalar_one()
                if done >= n:
                    break
                await asyncio.sleep(0.2)
            async with db.transaction() as conn:
                last = (await conn.execute(select(func.max(RunRow.finished_at)))).scalar_one()
                ok = (
                    await conn.execute(select(func.count()).select_from(RunRow).where(RunRow.status == "SUCCEEDED"))
                ).scalar_one()
            assert ok == n, f"{n - ok} runs did not succeed"
        finally:
            await db.close()
    assert last is not None
    return float(n / (last - due).total_seconds())


def celery_rate(n: int, concurrency: int) -> float:
    from bench.celery_app import app, noop

    app.control.purge()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "celery"), "-A", "bench.celery_app", "worker", "--pool=prefork",
         f"--concurrency={concurrency}", "--loglevel=WARNING", "--without-gossip", "--without-mingle",
         "--without-heartbeat"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # Warm up: the pool is ready when a task comes back.
        noop.delay().get(timeout=60)
        started = time.perf_counter()
        results = [noop.delay() for _ in range(n)]
        for result in results:
            result.get(timeout=120)
        return n / (time.perf_counter() - started)
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--slots", type=int, default=4)
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    result: dict[str, object] = {"runs": args.runs, "worker_slots": args.slots, "cpus": cpus}
    passing = asyncio.run(mesh_rate("pass", args.runs, args.slots))
    printing = asyncio.run(mesh_rate(PRINTING, args.runs, args.slots))
    celery = celery_rate(args.runs * 3, cpus)
    result["subprocess_pass_runs_per_second"] = round(passing, 1)
    result["subprocess_printing_runs_per_second"] = round(printing, 1)
    result["fork_server_runs_per_second"] = None  # the fork-server executor is not built yet
    result["celery_trivial_tasks_per_second"] = round(celery, 1)
    result["ratio_subprocess_vs_celery"] = round(passing / celery, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
