"""The REST gateway and the monitor's HealthService in process, next to the in-process
scheduler (the ``stack`` fixture, in conftest.py), for the input tests; and a
fingerprint of everything stored."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
from sqlalchemy import text

from db.engine import Database
from tests.support.scheduler import InProcessScheduler


@dataclass
class Stack:
    """The in-process scheduler, the monitor's gRPC service and the gateway in front of both."""

    scheduler: InProcessScheduler
    monitor: grpc.aio.Channel
    base: str  # the gateway, http://127.0.0.1:<port>
    http: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, body: Any = None, token: str = "", raw: bytes | None = None
    ) -> tuple[int, Any]:
        """One REST call; the answer's status and JSON body (every answer is JSON)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(method, self.base + path, data=data, headers=headers) as resp:
            return resp.status, json.loads(await resp.read())

    async def raw_http(self, request: bytes) -> tuple[int, str, Any]:
        """Bytes straight onto the gateway's socket (headers no HTTP client would send):
        the status, the Content-Type and the JSON body."""
        host, _, port = self.base.removeprefix("http://").partition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(request)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 20)
        finally:
            writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        content_type = headers.get("Content-Type", "")
        return int(lines[0].split()[1]), content_type, json.loads(body) if "json" in content_type else body


async def stored(db: Database) -> dict[str, Any]:
    """Every table's row count and checksum: equal before and after a call that
    changed nothing (a refused update included)."""
    async with db.transaction() as conn:
        tables = [row[0] for row in (await conn.execute(text("SHOW TABLES"))).all() if row[0] != "alembic_version"]
        sums = (await conn.execute(text("CHECKSUM TABLE " + ", ".join(f"`{t}`" for t in tables)))).all()
        counts = {t: (await conn.execute(text(f"SELECT COUNT(*) FROM `{t}`"))).scalar_one() for t in tables}
    return {"checksums": {row[0]: row[1] for row in sums}, "counts": counts}
