"""Engine and transactions, with driver errors translated at this one boundary."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from core import errors

log = logging.getLogger(__name__)

# Driver error → domain error. IntegrityError is left to repositories, which
# know which unique key means what.
_DISCONNECT = (exc.OperationalError, exc.InterfaceError, exc.TimeoutError, ConnectionError, OSError)


def create_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        # READ COMMITTED keeps SKIP LOCKED claims from taking gap locks.
        isolation_level="READ COMMITTED",
    )


async def upsert(
    conn: AsyncConnection,
    table: Any,  # a mapped class or its Table
    rows: Sequence[dict[str, Any]],
    key: Sequence[str],
    replace: Sequence[str],
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Insert ``rows`` in one multi-row statement; a row whose ``key`` exists instead
    gets the new values of its ``replace`` columns, and ``extra``'s expressions.
    One round trip for a whole batch, where an executemany UPDATE costs one per row.
    ``extra`` must hold no bound parameters: the driver repeats the statement's
    VALUES clause per row, not its suffix."""
    if not rows:
        return
    if conn.dialect.name == "mysql":
        on_mysql = mysql.insert(table)
        stmt: Any = on_mysql.on_duplicate_key_update({**{c: on_mysql.inserted[c] for c in replace}, **(extra or {})})
    else:
        on_sqlite = sqlite.insert(table)
        stmt = on_sqlite.on_conflict_do_update(
            index_elements=list(key), set_={**{c: on_sqlite.excluded[c] for c in replace}, **(extra or {})}
        )
    await conn.execute(stmt, list(rows))


class Database:
    """The engine plus ``transaction()``; the repositories' only way in."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    @classmethod
    def from_url(cls, url: str, pool_size: int = 10) -> Database:
        return cls(create_engine(url, pool_size))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.begin() as conn:
                yield conn
        except errors.JobmeshError:
            raise
        except exc.IntegrityError:
            raise
        except _DISCONNECT as err:
            log.warning("database unavailable: %s", err)
            raise errors.Unavailable("database unavailable") from err
        except exc.SQLAlchemyError as err:
            log.exception("database error")
            raise errors.Internal("database error") from err

    async def ping(self) -> None:
        from sqlalchemy import text

        async with self.transaction() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()
