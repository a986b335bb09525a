"""Per-run cgroups: a pids and a memory limit for the run as a whole, a fair share of
the CPU, and the list
of every process it started (to kill them all, wherever they moved in the process
tree). The worker (root) makes them; a run's processes run under another uid and
see no cgroup file at all (their mount namespace has no /sys), so they cannot
leave their cgroup or change its limits. The limits are written again each time a
cgroup is reused.

cgroup v1 (one hierarchy per controller) and v2 (one hierarchy) are both handled:
for each of ``pids`` and ``memory`` the worker makes a directory of its own under
its own cgroup (``jobmesh-<worker pid>-…``), and each run one ``run-…`` under each.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
from dataclasses import dataclass

from worker_svc.sandbox import _runner
from worker_svc.sandbox._streams import READ_CHUNK

CGROUP_FS = "/sys/fs/cgroup"
# pids and memory with the configured limits; cpu with none: each run a cgroup of its
# own, so runs share the CPU equally however many processes each starts.
CONTROLLERS = ("pids", "memory", "cpu")
# Emptied run cgroups (and run directories), kept for the next runs.
MAX_SPARES = 64
# An emptied run cgroup still charged more than this (a run's files kept alive by the
# kernel) is not given to another run.
RECYCLE_MEMORY_BYTES = 16 * 1024**2
_WORKER_DIR = re.compile(r"jobmesh-(\d+)-\w+")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_workers_dirs(base: str) -> list[str]:
    """The directories under ``base`` named as a worker's (``jobmesh-<pid>-…``) whose
    worker is no longer running."""
    try:
        names = os.listdir(base)
    except OSError:
        return []
    return [
        os.path.join(base, name)
        for name in names
        if (match := _WORKER_DIR.fullmatch(name)) is not None and not pid_alive(int(match.group(1)))
    ]


def _sweep_stale_roots(base: str) -> None:
    """Remove the (empty) cgroup directories of workers that died without cleaning up."""
    for root in dead_workers_dirs(base):
        _runner.remove_cgroup_tree(root)


def _own_cgroups() -> dict[str, str]:
    """controller -> the directory of this process's cgroup for it ("" for v2)."""
    own: dict[str, str] = {}
    try:
        with open("/proc/self/cgroup") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return own
    for line in lines:
        _, names, path = line.split(":", 2)
        for name in names.split(",") if names else [""]:
            own[name] = path
    return own


def _hierarchy(controller: str, own: dict[str, str]) -> str | None:
    """Where this process's cgroup for ``controller`` lives, if it can be written."""
    v1 = os.path.join(CGROUP_FS, controller)
    if controller in own and os.path.isdir(v1):
        base = os.path.join(v1, own[controller].lstrip("/"))
    else:
        unified = CGROUP_FS if os.path.exists(os.path.join(CGROUP_FS, "cgroup.controllers")) else ""
        if not unified or "" not in own:
            return None
        base = os.path.join(unified, own[""].lstrip("/"))
        try:
            with open(os.path.join(base, "cgroup.controllers")) as fh:
                if controller not in fh.read().split():
                    return None
        except OSError:
            return None
    return base if os.access(base, os.W_OK) else None


def worker_cgroups() -> dict[str, str]:
    """controller -> a fresh cgroup directory of this worker's, under which each run
    gets its own; empty when this process may not make cgroups (not root)."""
    if os.geteuid() != 0:
        return {}
    own = _own_cgroups()
    roots: dict[str, str] = {}
    made: dict[str, str] = {}  # hierarchy directory -> ours in it (v2: one serves both)
    for controller in CONTROLLERS:
        base = _hierarchy(controller, own)
        if base is None:
            continue
        if base in made:
            roots[controller] = made[base]
            continue
        _sweep_stale_roots(base)
        root = os.path.join(base, f"jobmesh-{os.getpid()}-{secrets.token_hex(3)}")
        try:
            os.makedirs(root, exist_ok=True)
            if os.path.exists(os.path.join(root, "cgroup.subtree_control")):
                with open(os.path.join(root, "cgroup.subtree_control"), "w") as fh:
                    fh.write(" ".join(f"+{c}" for c in CONTROLLERS if _available_v2(base, c)))
        except OSError:
            continue
        roots[controller] = made[base] = root
    return roots


def _available_v2(base: str, controller: str) -> bool:
    try:
        with open(os.path.join(base, "cgroup.controllers")) as fh:
            return controller in fh.read().split()
    except OSError:
        return False


def _read_small(path: str) -> bytes:
    # Once or more per run: plain descriptors, not Python file objects (a third of the cost).
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = b""
        while chunk := os.read(fd, READ_CHUNK):
            data += chunk
        return data
    finally:
        os.close(fd)


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


@dataclass(frozen=True)
class CgroupLimits:
    processes: int
    memory_bytes: int


class RunCgroup:
    """One run's cgroups (one per controller the host offers): cap its processes and
    memory, and find all its processes."""

    def __init__(self, roots: dict[str, str], name: str) -> None:
        self.paths = sorted({os.path.join(root, name) for root in roots.values()})
        self._limit_files: list[tuple[str, str]] = []
        for path in self.paths:
            os.mkdir(path)
        for controller, root in roots.items():
            path = os.path.join(root, name)
            if controller == "pids":
                self._limit_files.append((os.path.join(path, "pids.max"), "processes"))
            elif controller == "cpu":
                continue
            elif os.path.exists(os.path.join(path, "memory.max")):
                self._limit_files.append((os.path.join(path, "memory.max"), "memory_bytes"))
            else:
                self._limit_files.append((os.path.join(path, "memory.limit_in_bytes"), "memory_bytes"))
        self.procs = [os.path.join(path, "cgroup.procs") for path in self.paths]
        self._usage = [
            os.path.join(root, name, usage)
            for controller, root in roots.items()
            if controller == "memory"
            for usage in ("memory.current", "memory.usage_in_bytes")
            if os.path.exists(os.path.join(root, name, usage))
        ]

    def memory_bytes(self) -> int:
        """Memory still charged to the run (0 without a memory controller): what its
        processes left in the kernel, e.g. files in flight in a unix socket."""
        for path in self._usage:
            with contextlib.suppress(OSError, ValueError):
                return int(_read_small(path))
        return 0

    def limit(self, limits: CgroupLimits) -> None:
        """(Re)write the limits: a reused cgroup starts from the configured values."""
        for path, field in self._limit_files:
            _write(path, str(getattr(limits, field)))

    def pids(self) -> list[int]:
        found: set[int] = set()
        for procs in self.procs:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in _read_small(procs).split())
        return sorted(found)

    async def kill_all(self) -> bool:
        """SIGKILL every process of the run until none is left (never blocks the
        loop); False if some survived every attempt."""
        for _ in range(400):
            pids = self.pids()
            if not pids:
                return True
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.005)
        return False

    async def remove(self) -> None:
        for path in self.paths:
            for _ in range(200):
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:  # processes left, or the last ones are still being reaped
                    await self.kill_all()
                    await asyncio.sleep(0.005)
