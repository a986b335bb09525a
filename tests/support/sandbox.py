"""Executor limits and a sandbox of the tests' own uids, and the processes running under them."""

from __future__ import annotations

import os

from worker_svc.sandbox import Limits, Sandbox

LIMITS = Limits(
    cpu_seconds=60,
    memory_bytes=1024**3,
    open_files=128,
    processes=64,
    file_size_bytes=16 * 1024**2,
    output_cap_bytes=4096,
)


# Runs of these tests use uids of their own (a mesh may be running on this host).
SANDBOX = Sandbox(uid_base=400000 + (os.getpid() % 1000) * 64, uid_count=64, concurrency=16)


def processes_of_runs(sandbox: Sandbox = SANDBOX) -> list[int]:
    """Host pids of every process running under one of ``sandbox``'s uids."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/status") as fh:
                    uid = int(next(line for line in fh if line.startswith("Uid:")).split()[1])
            except (OSError, StopIteration):
                continue
            if sandbox.uid_base <= uid < sandbox.uid_base + sandbox.uid_count:
                found.append(int(name))
    return found
