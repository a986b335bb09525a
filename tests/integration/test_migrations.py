"""Migrations go up and down on MariaDB and SQLite, each in a fresh database."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import inspect

from db import migrate
from db.engine import Database
from tests.conftest import mysql, new_database

EXPECTED = {"users", "refresh_tokens", "job_definition", "job_schedule_state", "job_run", "run_output"}


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
