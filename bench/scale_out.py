"""Where adding processes stops helping: bench.pipeline (one-time jobs due at one
instant, ``noop`` executor) for each number of schedulers and workers against one
MariaDB, and the database's own commit rate beside it.

    .venv/bin/python -m bench.scale_out [--runs 10000] [--schedulers 1,2,4] [--workers 1,2,3,4]

Prints one JSON object: ``commits_per_second`` (single-row transactions on one
connection, what the server's log flush allows), and a row per combination with
runs/s and lateness p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from sqlalchemy import text

from bench.common import fresh_database
from bench.pipeline import run as pipeline_run
from db.engine import Database

COMMIT_SECONDS = 5.0


async def commit_rate(seconds: float = COMMIT_SECONDS) -> float:
    """Single-row INSERT transactions per second on one connection: the log flush
    every commit waits for bounds how many separate transactions a database takes."""
    with fresh_database() as url:
        db = Database.from_url(url, 1)
        try:
            async with db.transaction() as conn:
                await conn.execute(text("CREATE TABLE commit_probe (id INT PRIMARY KEY AUTO_INCREMENT, v INT)"))
            done = 0
            deadline = time.monotonic() + seconds
            started = time.monotonic()
            while time.monotonic() < deadline:
                async with db.transaction() as conn:
                    await conn.execute(text("INSERT INTO commit_probe (v) VALUES (1)"))
                done += 1
            return done / (time.monotonic() - started)
        finally:
            await db.close()


def ints(text_value: str) -> list[int]:
    return [int(part) for part in text_value.split(",") if part.strip()]


async def main_async(
    runs: int, schedulers: list[int], workers: list[int], slots: int, lead: float
) -> dict[str, object]:
    rows = []
    for s in schedulers:
        for w in workers:
            result = await pipeline_run(runs, w, slots, s, lead)
            rows.append(
                {
                    "schedulers": s,
                    "workers": w,
                    "runs_per_second": result["runs_per_second"],
                    "lateness_p50_ms": result["lateness_p50_ms"],
                    "lateness_p99_ms": result["lateness_p99_ms"],
                }
            )
    return {"runs_per_combination": runs, "commits_per_second": round(await commit_rate(), 1), "grid": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--schedulers", default="1,2,4")
    parser.add_argument("--workers", default="1,2,3,4")
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--lead", type=float, default=15.0, help="seconds between set-up start and the due instant")
    args = parser.parse_args()
    result = asyncio.run(main_async(args.runs, ints(args.schedulers), ints(args.workers), args.slots, args.lead))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
