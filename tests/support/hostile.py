"""Scripts that act as an attacker would, for the tests that check the sandbox holds."""

from __future__ import annotations

from pathlib import Path


def hostile_script(root: Path, ports: tuple[int, ...] = (6379, 3306)) -> str:
    """A job that looks for the mesh's secrets, processes, stores and files, and
    prints what it found (all lists empty when the sandbox holds)."""
    return f"""
import glob, json, os, signal, socket
out = {{"secrets": [], "killed": [], "reached": [], "seen": []}}
for path in glob.glob("/proc/*/environ") + glob.glob("/proc/*/cmdline"):
    try:
        if b"JOBMESH" in open(path, "rb").read():
            out["secrets"].append(path)
    except OSError:
        pass
for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()] + [os.getppid()]:
    if pid not in (0, os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
            out["killed"].append(pid)
        except OSError:
            pass
for port in {ports!r}:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        out["reached"].append(port)
    except OSError:
        pass
for pattern in ("{root}/core/*.py", "{root}/.jobmesh/*", "/tmp/jobmesh-*/run-*/job.py", "/tmp/*"):
    out["seen"] += glob.glob(pattern)
print(json.dumps(out))
"""
