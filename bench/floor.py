"""What this machine's MariaDB allows for the database work of a run, with none of
jobmesh's processes: the ceiling that bench.pipeline's figure is measured against.

A run changes state three times — PENDING → QUEUED (the dispatcher's claim), QUEUED →
RUNNING (the worker's fenced take, which also reads the script) and RUNNING →
SUCCEEDED (the fenced result) — and its one-time job becomes COMPLETED. This makes
exactly those changes for N runs due at one instant, in batches of 500, over one
connection, two ways:

- ``minimal``: plain SQL on a table with only the columns and the one index the three
  changes need (no partitions, no other index, no ORM);
- ``jobmesh``: the same changes through jobmesh's repositories on its migrated schema.

For each: runs/s; the CPU time per run of MariaDB (from /proc, so MariaDB must run on
this machine) and of this client; and the runs/s that MariaDB's CPU alone, and MariaDB's
and the client's together, would allow with every core to themselves.

    .venv/bin/python -m bench.floor [--runs 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from bench.common import fresh_database
from bench.pipeline import seed
from core.attempts import RunResult
from core.domain import RunStatus
from core.ids import new_id
from db.engine import Database
from db.repositories.run_lifecycle import RunLifecycleRepository

BATCH = 500
MINIMAL_SCHEMA = (
    "CREATE TABLE job (id CHAR(36) PRIMARY KEY, state VARCHAR(16) NOT NULL, script TEXT NOT NULL)",
    "CREATE TABLE run (id CHAR(36) PRIMARY KEY, job_id CHAR(36) NOT NULL, status VARCHAR(16) NOT NULL,"
    " due_at DATETIME(6) NOT NULL, worker_id VARCHAR(128) NOT NULL DEFAULT '',"
    " fencing_token VARCHAR(32) NOT NULL DEFAULT '', queued_at DATETIME(6), started_at DATETIME(6),"
    " finished_at DATETIME(6), exit_code INT, INDEX (status, due_at))",
)


def mariadb_pid() -> int | None:
    for name in ("mariadbd", "mysqld"):
        found = subprocess.run(["pidof", name], capture_output=True, text=True).stdout.split()
        if found:
            return int(found[0])
    return None


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measured(n: int, work: Callable[[], Awaitable[None]]) -> dict[str, object]:
    pid = mariadb_pid()
    cpu, client, began = cpu_seconds(pid), time.process_time(), time.perf_counter()
    await work()
    wall = time.perf_counter() - began
    client = (time.process_time() - client) / n
    cores = os.cpu_count() or 1
    out: dict[str, object] = {"runs_per_second": round(n / wall, 1), "client_cpu_us_per_run": round(client * 1e6, 1)}
    if pid is not None:
        mariadb = (cpu_seconds(pid) - cpu) / n
        out["mariadb_cpu_us_per_run"] = round(mariadb * 1e6, 1)
        out["mariadb_cpu_bound_runs_per_second"] = round(cores / mariadb)
        out["mariadb_and_client_cpu_bound_runs_per_second"] = round(cores / (mariadb + client))
    return out


def marks(count: int) -> str:
    return ",".join(["%s"] * count)


async def minimal(url: str, n: int) -> dict[str, object]:
    db = Database.from_url(url, 1)
    try:
        async with db.transaction() as conn:
            for statement in MINIMAL_SCHEMA:
                await conn.execute(text(statement))
        due = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=1)
        for start in range(0, n, 5000):
            jobs = [new_id() for _ in range(min(5000, n - start))]
            async with db.transaction() as conn:
                await conn.execute(text("INSERT INTO job VALUES (:id, 'ACTIVE', 'pass')"), [{"id": j} for j in jobs])
                await conn.execute(
                    text("INSERT INTO run (id, job_id, status, due_at) VALUES (:id, :job, 'PENDING', :due)"),
                    [{"id": new_id(), "job": j, "due": due} for j in jobs],
                )
        async with db.engine.connect() as conn:
            raw: Any = (await conn.get_raw_connection()).driver_connection
            cursor = raw.cursor()

            async def sql(statement: str, *params: Any) -> list[Any]:
                await cursor.execute(statement, params)
                return list(await cursor.fetchall())

            async def work() -> None:
                while claimed := await sql(
                    "SELECT id, job_id FROM run WHERE status = 'PENDING' AND due_at <= NOW(6)"
                    f" ORDER BY due_at LIMIT {BATCH} FOR UPDATE SKIP LOCKED"
                ):
                    ids, jobs = [r[0] for r in claimed], [r[1] for r in claimed]
                    in_ids, in_jobs = marks(len(ids)), marks(len(jobs))
                    # The dispatcher's claim.
                    await sql(f"UPDATE run SET status = 'QUEUED', queued_at = NOW(6) WHERE id IN ({in_ids})", *ids)
                    await raw.commit()
                    # The worker's fenced take, and the scripts.
                    await sql(
                        "UPDATE run SET status = 'RUNNING', worker_id = 'w', fencing_token = 't', started_at = NOW(6)"
                        f" WHERE id IN ({in_ids}) AND status = 'QUEUED'",
                        *ids,
                    )
                    await sql(f"SELECT id, job_id FROM run WHERE id IN ({in_ids}) AND fencing_token = 't'", *ids)
                    await sql(f"SELECT id, script FROM job WHERE id IN ({in_jobs})", *jobs)
                    await raw.commit()
                    # The fenced result, and the one-time job's completion.
                    await sql(f"SELECT id, fencing_token FROM run WHERE id IN ({in_ids}) FOR UPDATE", *ids)
                    await sql(
                        "UPDATE run SET status = 'SUCCEEDED', finished_at = NOW(6), exit_code = 0"
                        f" WHERE id IN ({in_ids})",
                        *ids,
                    )
                    await sql(f"UPDATE job SET state = 'COMPLETED' WHERE id IN ({in_jobs}) AND state = 'ACTIVE'", *jobs)
                    await raw.commit()
                await raw.commit()

            return await measured(n, work)
    finally:
        await db.close()


async def through_repositories(url: str, n: int) -> dict[str, object]:
    db = Database.from_url(url, 1)
    try:
        now = datetime.now(UTC)
        await seed(db, n, now - timedelta(seconds=1), now)
        runs = RunLifecycleRepository(db)

        async def work() -> None:
            while True:
                async with runs.claim_due(datetime.now(UTC), BATCH) as batch:
                    await batch.mark_queued(batch.runs, datetime.now(UTC))
                if not batch.runs:
                    return
                taken = await runs.start([(r.id, r.scheduled_at) for r in batch.runs], "w", "t", datetime.now(UTC))
                results = [RunResult(r.id, r.scheduled_at, "t", RunStatus.SUCCEEDED) for r, _, _ in taken]
                await runs.finish(results, datetime.now(UTC))

        return await measured(n, work)
    finally:
        await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20_000)
    args = parser.parse_args()
    result: dict[str, object] = {"runs": args.runs, "batch": BATCH, "cpus": os.cpu_count()}
    with fresh_database() as url:
        result["minimal"] = asyncio.run(minimal(url, args.runs))
    with fresh_database() as url:
        result["jobmesh"] = asyncio.run(through_repositories(url, args.runs))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
