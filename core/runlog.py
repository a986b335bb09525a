"""Live run output through Redis Streams: the worker appends, WatchRun reads.

Stream ``jobmesh:runlog:{run}`` holds entries ``{k: out|err|status|end, d: data}``
(the worker appends them in Lua scripts, a batch of runs per round trip); it is capped
and expires, since the database keeps the captured tails for good.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from core import keys

MAX_ENTRIES = 5000
TTL_SECONDS = 3600
OUT, ERR, STATUS, END = "out", "err", "status", "end"


@dataclass(frozen=True)
class LogEntry:
    id: str
    kind: str
    data: str


async def read(redis: Redis, run_id: str, after: str, block_ms: int | None) -> list[LogEntry]:
    key = keys.run_log_channel(run_id)
    result: Any = await redis.xread({key: after}, count=500, block=block_ms)
    out: list[LogEntry] = []
    for _, entries in result or []:
        for entry_id, fields in entries:
            kind = fields.get(b"k", b"").decode()
            data = fields.get(b"d", b"").decode(errors="replace")
            out.append(LogEntry(entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id), kind, data))
    return out
