"""Migrations go up and down on MariaDB and SQLite, each in a fresh database."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import inspect, text

from db import migrate
from db.engine import Database
from tests.support.services import mysql, new_database

EXPECTED = {
    "users", "refresh_tokens", "job_definition", "job_schedule_state", "job_run", "run_output", "login_throttle"
}  # fmt: skip


async def tables(url: str) -> set[str]:
    db = Database.from_url(url, 1)
    try:
        async with db.engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names())) - {"alembic_version"}
    finally:
        await db.close()


async def test_mariadb_up_and_down() -> None:
    name, url = new_database()
    try:
        await migrate.upgrade_async(url)
        assert await tables(url) == EXPECTED
        await asyncio.to_thread(migrate.downgrade, url, "base")
        assert await tables(url) == set()
        await migrate.upgrade_async(url)
        assert await tables(url) == EXPECTED
    finally:
        mysql(f"DROP DATABASE IF EXISTS {name}")


async def test_sqlite_up_and_down(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'nested' / 'jobmesh.db'}"
    await migrate.upgrade_async(url)
    assert await tables(url) == EXPECTED
    await asyncio.to_thread(migrate.downgrade, url, "base")
    assert await tables(url) == set()


async def jobs_keep_their_rows_across_0002(url: str) -> None:
    """0002 adds job_definition.network: a job stored before it reads NONE, and going
    back down drops the column but keeps the job."""
    await migrate.upgrade_async(url, "0001")
    db = Database.from_url(url, 1)
    try:
        async with db.transaction() as conn:
            await conn.execute(
                text(
                    "INSERT INTO job_definition (id, owner_id, name, job_type, cron_expr, timezone, script_content,"
                    " timeout_seconds, retry_max_attempts, retry_strategy, retry_initial_delay_seconds,"
                    " retry_max_delay_seconds, retry_multiplier, misfire_policy, overlap_policy, queue, state,"
                    " version, created_at, updated_at) VALUES ('j1', 'u1', '', 'RECURRING', '@daily', 'UTC',"
                    " 'pass', 60, 1, 'FIXED_BACKOFF', 0, 0, 1.0, 'RUN_ONCE', 'ALLOW', 'default', 'ACTIVE', 1,"
                    " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                )
            )
        await migrate.upgrade_async(url)
        async with db.transaction() as conn:
            assert (await conn.execute(text("SELECT network FROM job_definition"))).scalar_one() == "NONE"
        await asyncio.to_thread(migrate.downgrade, url, "0001")
        async with db.engine.connect() as conn:
            columns = await conn.run_sync(lambda c: {col["name"] for col in inspect(c).get_columns("job_definition")})
            assert "network" not in columns and "overlap_policy" in columns
            assert (await conn.execute(text("SELECT id FROM job_definition"))).scalar_one() == "j1"
    finally:
        await db.close()


async def test_0002_job_network_on_mariadb() -> None:
    name, url = new_database()
    try:
        await jobs_keep_their_rows_across_0002(url)
    finally:
        mysql(f"DROP DATABASE IF EXISTS {name}")


async def test_0002_job_network_on_sqlite(tmp_path: Path) -> None:
    await jobs_keep_their_rows_across_0002(f"sqlite+aiosqlite:///{tmp_path / 'jobmesh.db'}")
