"""The uids runs execute as: one per concurrent run, never shared.

A worker claims as many uids as it runs scripts at once, from a configured range,
by locking a file per uid (``flock``, held for the worker's life and released by
the kernel when it dies), so workers on one host never hand out the same uid. A
uid that belongs to a user or group of the host, or is the worker's own, is skipped. A
run gets a uid from the pool and gives it back when nothing of it is left; a uid
whose run could not be emptied is retired for the worker's life.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import grp
import os
import pwd

LOCK_DIR = "/run/jobmesh/uids"


class UidPoolError(Exception):
    """Not enough free uids in the configured range."""


class UidPool:
    def __init__(self, base: int, count: int, size: int, lock_dir: str = LOCK_DIR) -> None:
        os.makedirs(lock_dir, 0o700, exist_ok=True)
        self._locks: list[int] = []
        self._free: asyncio.Queue[int] = asyncio.Queue()
        own = {os.getuid(), os.geteuid(), 0}
        for uid in range(base, base + count):
            if len(self._locks) == size:
                break
            if uid in own or _is_account(uid):
                continue
            fd = os.open(os.path.join(lock_dir, str(uid)), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._locks.append(fd)
            self._free.put_nowait(uid)
        if len(self._locks) < size:
            self.close()
            raise UidPoolError(
                f"only {len(self._locks)} of the {size} uids needed are free in {base}-{base + count - 1} "
                "(JOBMESH_WORKER_UID_BASE, JOBMESH_WORKER_UID_COUNT)"
            )

    async def take(self) -> int:
        return await self._free.get()

    def give_back(self, uid: int) -> None:
        self._free.put_nowait(uid)

    def close(self) -> None:
        for fd in self._locks:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._locks.clear()


def _is_account(uid: int) -> bool:
    """A user of the host, or a group (a run's gid is its uid)."""
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
        except KeyError:
            continue
        return True
    return False
