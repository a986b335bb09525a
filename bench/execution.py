"""Real script runs through the whole mesh against Celery 5, in the same invocation.

jobmesh: N one-time jobs due at one instant, each a Python script run in isolation,
for a `pass` script and a 10-line script that prints; runs/s from the due instant to
the last result, with the fork-server executor (default) and with the subprocess
executor (a fresh interpreter per run).
Celery: 3N trivial tasks (Redis broker, prefork concurrency = CPU count), sent at
once; tasks/s from the first send to the last result.
Memory: the worker's (and its fork server's) resident set while every slot runs a
sleeping script.

    .venv/bin/python -m bench.execution [--runs 2000] [--slots 8] [--workdir-root /dev/shm]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, insert, select

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


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except FileNotFoundError:
        return []


async def mesh_rate(
    script: str, n: int, slots: int, executor: str, workdir_root: str = "", memory: dict[str, float] | None = None
) -> float:
    """Runs/s through the mesh; with ``memory``, first fills every slot with a sleeping
    script and records the worker's and the fork server's RSS in MB."""
    flush_redis()
    with fresh_database() as url, processes() as procs:
        db = Database.from_url(url, 2)
        try:
            procs.start("scheduler_svc.main", env_for(url, JOBMESH_SCHEDULER_PORT="0"))
            procs.start(
                "worker_svc.main",
                env_for(
                    url,
                    JOBMESH_WORKER_SLOTS=str(slots),
                    JOBMESH_WORKER_EXECUTOR=executor,
                    JOBMESH_WORKER_WORKDIR_ROOT=workdir_root,
                ),
            )
            if memory is not None:
                await measure_memory(db, procs.procs[-1].pid, slots, memory)
            due = await insert_one_time_jobs(db, script, n, 3.0)
            await wait_final(db, n)
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


async def insert_one_time_jobs(db: Database, script: str, n: int, in_seconds: float) -> datetime:
    now = datetime.now(UTC)
    due = (now + timedelta(seconds=in_seconds)).replace(microsecond=0)
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
    return due


async def count_final(db: Database) -> int:
    async with db.transaction() as conn:
        query = select(func.count()).select_from(RunRow).where(RunRow.status.in_(FINAL))
        return int((await conn.execute(query)).scalar_one())


async def wait_final(db: Database, n: int) -> None:
    while await count_final(db) < n:
        await asyncio.sleep(0.2)


async def measure_memory(db: Database, worker_pid: int, slots: int, memory: dict[str, float]) -> None:
    """Every slot busy with a script that sleeps 4 s; RSS sampled in the middle."""
    await insert_one_time_jobs(db, "import time\ntime.sleep(4)", slots, 1.0)
    await asyncio.sleep(3.5)
    helpers = [p for p in children(worker_pid) if len(children(p)) >= slots]
    memory["worker_rss_mb"] = round(rss_mb(worker_pid), 1)
    memory["fork_server_rss_mb"] = round(rss_mb(helpers[0]), 1) if helpers else 0.0
    memory["busy_scripts"] = float(sum(len(children(p)) for p in children(worker_pid)))
    await wait_final(db, slots)
    async with db.transaction() as conn:
        await conn.execute(delete(RunRow))
        await conn.execute(delete(JobRow))


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
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--workdir-root", default="", help="JOBMESH_WORKER_WORKDIR_ROOT (default: system temp dir)")
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    result: dict[str, object] = {
        "runs": args.runs, "worker_slots": args.slots, "cpus": cpus, "workdir_root": args.workdir_root or "(temp dir)"
    }  # fmt: skip
    memory: dict[str, float] = {}
    n, slots, root = args.runs, args.slots, args.workdir_root
    rates = {
        "fork_server_pass": asyncio.run(mesh_rate("pass", n, slots, "forkserver", root, memory)),
        "fork_server_printing": asyncio.run(mesh_rate(PRINTING, n, slots, "forkserver", root)),
        "subprocess_pass": asyncio.run(mesh_rate("pass", n, slots, "subprocess", root)),
        "subprocess_printing": asyncio.run(mesh_rate(PRINTING, n, slots, "subprocess", root)),
    }
    celery = celery_rate(args.runs * 3, cpus)
    for name, rate in rates.items():
        result[f"{name}_runs_per_second"] = round(rate, 1)
    result["celery_trivial_tasks_per_second"] = round(celery, 1)
    result["ratio_fork_server_vs_subprocess"] = round(rates["fork_server_pass"] / rates["subprocess_pass"], 2)
    result["ratio_fork_server_printing_vs_subprocess"] = round(
        rates["fork_server_printing"] / rates["subprocess_printing"], 2
    )
    result["ratio_fork_server_vs_celery"] = round(rates["fork_server_pass"] / celery, 3)
    result.update(memory)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
