"""Hourly RANGE COLUMNS partitions of job_run on MySQL/MariaDB.

Layout: ``p<YYYYMMDDHH>`` holds runs scheduled in that hour (upper bound the
next hour); ``pmax`` (MAXVALUE) catches anything beyond the prepared hours so an
insert never fails. ``maintain_partitions`` splits hours out of ``pmax`` ahead of
time and drops hours older than the retention; a named lock keeps concurrent
schedulers from doing it twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, text

from db.engine import Database
from db.models import RunOutputRow

log = logging.getLogger(__name__)
_LOCK = "jobmesh_partition_maintenance"


def _hour(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def partition_name(upper_bound: datetime) -> str:
    return "p" + (upper_bound - timedelta(hours=1)).strftime("%Y%m%d%H")


def _bound(value: datetime) -> str:
    return value.strftime("'%Y-%m-%d %H:%M:%S'")


def initial_partition_clause(now: datetime | None = None) -> str:
    """Used by the first migration: one partition below the current hour, and pmax."""
    upper = _hour(now or datetime.now(UTC))
    return (
        "PARTITION BY RANGE COLUMNS(scheduled_at) ("
        f"PARTITION {partition_name(upper)} VALUES LESS THAN ({_bound(upper)}), "
        "PARTITION pmax VALUES LESS THAN (MAXVALUE))"
    )


@dataclass(frozen=True)
class Partition:
    name: str
    upper_bound: datetime | None  # None for MAXVALUE
    rows: int


async def list_partitions(db: Database) -> list[Partition]:
    async with db.transaction() as conn:
        result = await conn.execute(
            text(
                "SELECT PARTITION_NAME, PARTITION_DESCRIPTION, TABLE_ROWS FROM information_schema.PARTITIONS "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'job_run' AND PARTITION_NAME IS NOT NULL "
                "ORDER BY PARTITION_ORDINAL_POSITION"
            )
        )
        rows = result.all()
    out = []
    for name, description, count in rows:
        desc = str(description).strip("'")
        bound = None if desc.upper() == "MAXVALUE" else datetime.fromisoformat(desc).replace(tzinfo=UTC)
        out.append(Partition(str(name), bound, int(count or 0)))
    return out


@dataclass(frozen=True)
class MaintenanceResult:
    created: list[str]
    dropped: list[str]


async def maintain_partitions(
    db: Database, ahead_hours: int, retention_hours: int, now: datetime | None = None
) -> MaintenanceResult:
    if db.dialect != "mysql":
        return MaintenanceResult([], [])
    now = now or datetime.now(UTC)
    async with db.engine.connect() as conn:
        got = (await conn.execute(text("SELECT GET_LOCK(:n, 0)"), {"n": _LOCK})).scalar()
        if got != 1:
            return MaintenanceResult([], [])
        try:
            result = await _maintain(db, ahead_hours, retention_hours, now)
        finally:
            await conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": _LOCK})
    return result


async def _maintain(db: Database, ahead_hours: int, retention_hours: int, now: datetime) -> MaintenanceResult:
    parts = await list_partitions(db)
    bounded = [p for p in parts if p.upper_bound is not None]
    highest = max((p.upper_bound for p in bounded if p.upper_bound), default=_hour(now))
    target = _hour(now) + timedelta(hours=ahead_hours + 1)
    new_bounds = []
    bound = highest + timedelta(hours=1)
    while bound <= target:
        new_bounds.append(bound)
        bound += timedelta(hours=1)
    created: list[str] = []
    if new_bounds:
        defs = ", ".join(f"PARTITION {partition_name(b)} VALUES LESS THAN ({_bound(b)})" for b in new_bounds)
        async with db.transaction() as conn:
            await conn.execute(
                text(
                    "ALTER TABLE job_run REORGANIZE PARTITION pmax INTO "
                    f"({defs}, PARTITION pmax VALUES LESS THAN (MAXVALUE))"
                )
            )
        created = [partition_name(b) for b in new_bounds]
    cutoff = now - timedelta(hours=retention_hours)
    expired = [p.name for p in bounded if p.upper_bound is not None and p.upper_bound <= cutoff]
    # A RANGE table needs at least one partition besides pmax to stay meaningful;
    # pmax always remains, so dropping every expired hour is safe.
    if expired:
        async with db.transaction() as conn:
            await conn.execute(text(f"ALTER TABLE job_run DROP PARTITION {', '.join(expired)}"))
            await conn.execute(delete(RunOutputRow).where(RunOutputRow.scheduled_at < cutoff))
        log.info("dropped job_run partitions %s", expired)
    return MaintenanceResult(created, expired)
