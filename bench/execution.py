"""Real script runs through the whole mesh against Celery 5, in the same invocation.

jobmesh: N one-time jobs due at one instant, each a Python script run in isolation,
for a `pass` script and a 10-line script that prints; runs/s from the due instant to
the last result, with the fork-server executor (default) and with the subprocess
executor (a fresh interpreter per run).
CPU: the worker's and its descendants' user+sys time (/proc/<pid>/stat, reaped
children included) from the due instant to the last result, per run.
Celery: 3N trivial tasks in Celery's fast set-up for short tasks (CELERY_SETUP: Redis
broker, prefork concurrency = CPU count, no result backend), sent at once; each task
INCRs a counter in Redis, as a jobmesh run's completion is its result row; tasks/s
from the first send to the counter reaching 3N.
Memory: the worker's (and its fork server's) resident set while every slot runs a
sleeping script.

    .venv/bin/python -m bench.execution [--runs 2000] [--slots 8] [--workdir-root /dev/shm] [--sandbox on|off]
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta

import redis
from celery import Celery
from celery import __version__ as celery_version
from sqlalchemy import delete, func, insert, select

from bench.common import REDIS_URL, ROOT, env_for, flush_redis, fresh_database, processes
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


# The Celery baseline. Its worker runs `celery -A bench.execution:celery_app worker`.
CELERY_BROKER = os.environ.get("JOBMESH_BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/15")
CELERY_COUNTERS = "jobmesh_bench_celery:"  # key prefix, in REDIS_URL's database (14)
CELERY_CONFIG: dict[str, object] = {
    "task_ignore_result": True,  # and no result backend configured at all
    "task_acks_late": False,  # the default: acked when received, before it runs
    "worker_prefetch_multiplier": 4,  # the default; 16 and 64 measured no faster here
    "worker_disable_rate_limits": True,
    "broker_connection_retry_on_startup": True,
    # Kept: the Redis transport's ack emulation (kombu's default), which puts a task that a
    # worker fetched but never ran back in the queue. broker_transport_options=
    # {"ack_emulation": False} roughly doubles the rate here, at the cost of losing the
    # tasks a dying worker held: not a like-for-like baseline for jobmesh's durable runs.
}
# -O fair is not listed: in Celery 5 it is the default scheduling strategy.
CELERY_WORKER_ARGS = ["--pool=prefork", "--without-gossip", "--without-mingle", "--without-heartbeat",
                      "--loglevel=WARNING"]  # fmt: skip
CELERY_SETUP = {
    "version": celery_version,
    "broker": "redis",
    "result_backend": None,
    **CELERY_CONFIG,
    "worker_args": CELERY_WORKER_ARGS,  # plus --concurrency=<cpus>
    "send": "apply_async in a loop on one producer",
    "completion": f"each task INCRs a {CELERY_COUNTERS}* key in {REDIS_URL}; polled every 5 ms",
}
celery_app = Celery("jobmesh_bench", broker=CELERY_BROKER)
celery_app.conf.update(CELERY_CONFIG)
_counter: redis.Redis | None = None  # one connection per pool process


@celery_app.task(name="bench.execution.incr")  # type: ignore[untyped-decorator]
def incr(key: str) -> None:
    global _counter
    if _counter is None:
        _counter = redis.Redis.from_url(REDIS_URL)
    _counter.incr(key)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pss_mb(pid: int) -> float:
    """Proportional set size: shared pages counted once in all (the fork server's
    sandboxes share most of its pages, which adding their RSS would count again)."""
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    found: list[int] = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):  # every thread's
        try:
            with open(path) as fh:
                found += [int(p) for p in fh.read().split()]
        except FileNotFoundError:
            pass
    return found


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(the process's own user+sys, its reaped children's) from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()  # fields 3.. (comm may hold spaces)
    except FileNotFoundError:
        return 0.0, 0.0
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])  # fields 14-17
    return (utime + stime) / TICK, (cutime + cstime) / TICK


def tree_cpu_seconds(pid: int) -> float:
    """User+sys of a process and all its descendants, live or reaped."""
    return sum(cpu_seconds(pid)) + sum(tree_cpu_seconds(child) for child in children(pid))


def is_fork_server(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"forkserver" in fh.read()
    except FileNotFoundError:
        return False


def worker_cpu(worker_pid: int) -> dict[str, float]:
    """Seconds: the worker process itself; its children other than the fork server,
    live or reaped (the subprocess executor's scripts); the fork server and its
    children, live or reaped (the fork-server executor's scripts)."""
    own, reaped = cpu_seconds(worker_pid)
    split = {"worker": own, "worker_children": reaped, "fork_server": 0.0}
    for child in children(worker_pid):
        split["fork_server" if is_fork_server(child) else "worker_children"] += tree_cpu_seconds(child)
    return split


async def mesh_rate(
    script: str,
    n: int,
    slots: int,
    executor: str,
    workdir_root: str = "",
    memory: dict[str, float] | None = None,
    sandbox: str = "on",
    cpu: dict[str, float] | None = None,
) -> float:
    """Runs/s through the mesh; with ``memory``, first fills every slot with a sleeping
    script and records the worker's and the fork server's RSS in MB; with ``cpu``,
    records the worker's and its descendants' CPU per run in µs (worker_cpu's split)."""
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
                    JOBMESH_WORKER_SANDBOX=sandbox,
                ),
            )
            worker_pid = procs.procs[-1].pid
            if memory is not None:
                await measure_memory(db, worker_pid, slots, memory)
            due = await insert_one_time_jobs(db, script, n, 3.0)
            await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
            before = worker_cpu(worker_pid)
            await wait_final(db, n)
            after = worker_cpu(worker_pid)
            if cpu is not None:
                split = {k: round((after[k] - before[k]) / n * 1e6) for k in after}
                cpu.update(total=sum(split.values()), **split)
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
    # The fork server and its per-uid sandboxes' inits (not the scripts they run).
    memory["fork_server_and_sandboxes_pss_mb"] = (
        round(pss_mb(helpers[0]) + sum(pss_mb(init) for init in children(helpers[0])), 1) if helpers else 0.0
    )
    memory["worker_pss_mb"] = round(pss_mb(worker_pid), 1)
    memory["busy_scripts"] = float(sum(len(children(p)) for p in children(worker_pid)))
    await wait_final(db, slots)
    async with db.transaction() as conn:
        await conn.execute(delete(RunRow))
        await conn.execute(delete(JobRow))


def celery_rate(n: int, concurrency: int, cpu: dict[str, float] | None = None) -> float:
    """Tasks/s of CELERY_SETUP; with ``cpu``, records its worker's (and pool
    processes') CPU per task in µs."""
    counter = redis.Redis.from_url(REDIS_URL)
    # Keys of this invocation's own: the key travels in the task, so a task left in the
    # queue by an earlier, interrupted run only counts for that run (no purge needed).
    done, warm = (f"{CELERY_COUNTERS}{uuid.uuid4().hex[:8]}:{name}" for name in ("done", "warm-up"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "celery"), "-A", "bench.execution:celery_app", "worker",
         f"--concurrency={concurrency}", *CELERY_WORKER_ARGS],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # Warm up until every pool process has run tasks (and holds its Redis connection).
        for _ in range(concurrency * 10):
            incr.apply_async((warm,))
        wait_counter(counter, warm, concurrency * 10, time.monotonic() + 60)
        before = tree_cpu_seconds(worker.pid)
        started = time.perf_counter()
        with celery_app.producer_or_acquire() as producer:
            for _ in range(n):
                incr.apply_async((done,), producer=producer)
        wait_counter(counter, done, n, time.monotonic() + 300)
        elapsed = time.perf_counter() - started
        if cpu is not None:
            cpu["celery_worker_cpu_us_per_task"] = round((tree_cpu_seconds(worker.pid) - before) / n * 1e6)
        return n / elapsed
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        counter.delete(done, warm)
        counter.close()


def wait_counter(counter: redis.Redis, key: str, n: int, deadline: float) -> None:
    while int(counter.get(key) or 0) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"Celery ran {int(counter.get(key) or 0)} of {n} tasks")
        time.sleep(0.005)


PHASES = {  # name: (script, executor)
    "fork_server_pass": ("pass", "forkserver"),
    "fork_server_printing": (PRINTING, "forkserver"),
    "subprocess_pass": ("pass", "subprocess"),
    "subprocess_printing": (PRINTING, "subprocess"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--workdir-root", default="", help="JOBMESH_WORKER_WORKDIR_ROOT (default: system temp dir)")
    parser.add_argument("--sandbox", choices=["on", "off"], default="on", help="JOBMESH_WORKER_SANDBOX (default: on)")
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    result: dict[str, object] = {
        "runs": args.runs, "worker_slots": args.slots, "cpus": cpus, "workdir_root": args.workdir_root or "(temp dir)",
        "worker_sandbox": args.sandbox,
    }  # fmt: skip
    memory: dict[str, float] = {}
    memory_of = {"fork_server_pass": memory}  # measured once, before the first phase
    cpu: dict[str, dict[str, float]] = {name: {} for name in PHASES}
    n, slots, root, sandbox = args.runs, args.slots, args.workdir_root, args.sandbox
    rates = {
        name: asyncio.run(mesh_rate(script, n, slots, executor, root, memory_of.get(name), sandbox, cpu[name]))
        for name, (script, executor) in PHASES.items()
    }
    celery_cpu: dict[str, float] = {}
    celery = celery_rate(args.runs * 3, cpus, celery_cpu)
    for name, rate in rates.items():
        result[f"{name}_runs_per_second"] = round(rate, 1)
    result["cpu_us_per_run"] = cpu
    result["celery_trivial_tasks_per_second"] = round(celery, 1)
    result.update(celery_cpu)
    result["celery_setup"] = {**CELERY_SETUP, "concurrency": cpus, "tasks": args.runs * 3}
    result["ratio_fork_server_vs_subprocess"] = round(rates["fork_server_pass"] / rates["subprocess_pass"], 2)
    result["ratio_fork_server_printing_vs_subprocess"] = round(
        rates["fork_server_printing"] / rates["subprocess_printing"], 2
    )
    result["ratio_fork_server_vs_celery"] = round(rates["fork_server_pass"] / celery, 3)
    result.update(memory)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
