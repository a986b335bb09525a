"""Hourly job_run partitions on MariaDB: created ahead, expired ones dropped, rows routed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from core.attempts import new_run
from core.domain import Job as DomainJob
from core.domain import JobType, RunTrigger
from db import migrate
from db.engine import Database
from db.partitions import list_partitions, maintain_partitions
from db.repositories.runs import RunRepository
from tests.support.services import mysql, new_database


async def test_maintenance_creates_drops_and_routes() -> None:
    name, url = new_database()
    db = Database.from_url(url, 2)
    try:
        await migrate.upgrade_async(url)
        now = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
        result = await maintain_partitions(db, ahead_hours=6, retention_hours=24, now=now)
        parts = await list_partitions(db)
        bounds = [p.upper_bound for p in parts if p.upper_bound is not None]
        hour = now.replace(minute=0)
        for h in range(0, 7):
            assert hour + timedelta(hours=h + 1) in bounds, f"no partition for hour +{h}"
        assert parts[-1].name == "pmax" and parts[-1].upper_bound is None
        assert len(result.created) >= 6

        # Rows land in the partition of their scheduled hour.
        job = DomainJob(id="00000000-0000-7000-8000-000000000001", job_type=JobType.RECURRING, queue="default")
        slot = hour + timedelta(hours=2, minutes=5)
        await RunRepository(db).insert([new_run(job, slot, RunTrigger.SCHEDULE)], now)
        async with db.transaction() as conn:
            where = (await conn.execute(
                text("SELECT PARTITION_NAME FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = DATABASE() "
                     "AND TABLE_NAME = 'job_run' AND PARTITION_NAME = :p"),
                {"p": "p" + (hour + timedelta(hours=2)).strftime("%Y%m%d%H")},
            )).scalar()  # fmt: skip
            count = (await conn.execute(
                text(f"SELECT COUNT(*) FROM job_run PARTITION ({where})")
            )).scalar()  # fmt: skip
        assert count == 1

        # 30 hours later with 24 h retention: the hours before now-24h are dropped, later ones kept.
        later = now + timedelta(hours=30)
        result = await maintain_partitions(db, ahead_hours=6, retention_hours=24, now=later)
        remaining = {p.upper_bound for p in await list_partitions(db) if p.upper_bound is not None}
        cutoff = later - timedelta(hours=24)
        assert result.dropped
        assert all(b > cutoff for b in remaining)
        assert hour + timedelta(hours=7) in remaining  # newer than the cutoff: kept
        assert later.replace(minute=0) + timedelta(hours=7) in remaining  # created ahead
    finally:
        await db.close()
        mysql(f"DROP DATABASE IF EXISTS {name}")
