"""Login attempts per (account, client address): the counting half of core/throttle.py."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import mysql, sqlite

from core.throttle import LoginCharge
from db.engine import Database
from db.models import LoginThrottleRow

# (failures charged before this attempt, when the last checked attempt came, now) → seconds to wait
WaitRule = Callable[[int, datetime | None, datetime], float]


def _pair(account: str, client: str) -> Any:
    return (LoginThrottleRow.account == account) & (LoginThrottleRow.client == client)


class LoginThrottleRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def charge(self, account: str, client: str, clock: Callable[[], datetime], wait: WaitRule) -> LoginCharge:
        """Count one attempt and decide it, atomically per pair.

        The upsert increments the count and holds the pair's row lock (MySQL) or the
        database's write lock (SQLite) until commit, so parallel attempts are charged
        and decided one after another: N attempts count N, and each sees the ones
        before it. The clock is read under that lock, so the order of the attempts'
        times is the order of their decisions. ``wait`` is the domain's rule; an
        attempt it lets through is stamped as the last checked one.
        """
        now = clock()
        row = {"account": account, "client": client, "failures": 1, "checked_at": None, "seen_at": now}
        bump = {"failures": LoginThrottleRow.failures + 1, "seen_at": now}
        async with self._db.transaction() as conn:
            if conn.dialect.name == "mysql":
                await conn.execute(mysql.insert(LoginThrottleRow).values(**row).on_duplicate_key_update(**bump))
            else:
                await conn.execute(
                    sqlite.insert(LoginThrottleRow)
                    .values(**row)
                    .on_conflict_do_update(index_elements=["account", "client"], set_=bump)
                )
            state = (
                await conn.execute(
                    select(LoginThrottleRow.failures, LoginThrottleRow.checked_at).where(_pair(account, client))
                )
            ).one()
            now = clock()
            if wait(state.failures - 1, state.checked_at, now) > 0:
                return LoginCharge(state.failures, admitted=False)
            await conn.execute(update(LoginThrottleRow).where(_pair(account, client)).values(checked_at=now))
        return LoginCharge(state.failures, admitted=True)

    async def refund(self, account: str, client: str) -> None:
        """Take back one charged attempt that was never checked (the server was busy)."""
        async with self._db.transaction() as conn:
            await conn.execute(
                update(LoginThrottleRow)
                .where(_pair(account, client), LoginThrottleRow.failures > 0)
                .values(failures=LoginThrottleRow.failures - 1)
            )

    async def clear(self, account: str, client: str) -> None:
        """The right password: the pair starts afresh."""
        async with self._db.transaction() as conn:
            await conn.execute(delete(LoginThrottleRow).where(_pair(account, client)))

    async def failures(self, account: str, client: str) -> int:
        async with self._db.transaction() as conn:
            count = (
                await conn.execute(select(LoginThrottleRow.failures).where(_pair(account, client)))
            ).scalar_one_or_none()
        return int(count or 0)

    async def forget_before(self, before: datetime) -> int:
        """Drop pairs with no attempt since ``before``; returns how many."""
        async with self._db.transaction() as conn:
            result = await conn.execute(delete(LoginThrottleRow).where(LoginThrottleRow.seen_at < before))
        return int(result.rowcount or 0)
