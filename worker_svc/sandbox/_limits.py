"""What a run is allowed: its resource limits, its sandbox, its environment, and the
read-only view of the host it gets (the system and the worker's interpreter)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from worker_svc.sandbox import _runner

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
# The system a run sees, read-only (where they exist; a symlink such as /bin -> usr/bin
# is made again as a symlink), besides the interpreter's own directories.
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int
    memory_bytes: int  # RLIMIT_AS of each process, and the run's memory cgroup limit
    open_files: int
    processes: int  # RLIMIT_NPROC of the run's uid, and its pids cgroup limit
    file_size_bytes: int
    output_cap_bytes: int
    workdir_root: str = ""  # where the worker's directory of scripts goes ("" = the system temp dir)

    def rlimits(self) -> list[int]:
        """In the order of ``_runner.LIMITS``."""
        return [getattr(self, field) if field else 0 for _, field in _runner.LIMITS]


@dataclass(frozen=True)
class Sandbox:
    """How runs are isolated (``enabled=False``: development only, no isolation
    beyond rlimits and the run's cgroup)."""

    enabled: bool = True
    allow_host_network: bool = False
    uid_base: int = 200000
    uid_count: int = 65536
    scratch_bytes: int = 256 * 1024**2
    concurrency: int = 8  # runs at once: the uids a worker claims


def clean_environment(sandboxed: bool, workdir: str) -> dict[str, str]:
    home, tmp = (_runner.RUN_HOME, "/tmp") if sandboxed else (workdir, workdir)
    return {
        "PATH": SAFE_PATH,
        "HOME": home,
        "TMPDIR": tmp,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def read_only_paths() -> list[str]:
    """The host paths a sandboxed run sees read-only: the system and this
    interpreter (its installation and the virtualenv with its libraries), each once,
    parents before children, none inside another."""
    wanted = [path for path in SYSTEM_PATHS if os.path.lexists(path)]
    for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, sys.executable):
        for path in (os.path.abspath(prefix), os.path.realpath(prefix)):
            if path == sys.executable or path == os.path.realpath(sys.executable):
                path = os.path.dirname(path)
            wanted.append(path)
    directories = [path for path in wanted if not os.path.islink(path)]
    chosen: list[str] = []
    for path in sorted(set(wanted)):
        if path == "/" or (os.path.islink(path) and path not in SYSTEM_PATHS):
            continue  # reached through its target, which is in the list
        if any(path != other and path.startswith(other.rstrip("/") + "/") for other in directories):
            continue
        chosen.append(path)
    return chosen
