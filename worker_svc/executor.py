"""Isolated script execution in a child process.

Each run gets: a new session and process group, a clean environment (no
JOBMESH_* or other service secrets), a private temporary working directory removed
afterwards, resource limits, a wall-clock timeout that kills the whole group, and
stdout/stderr captured with a per-stream cap (tail kept). When the worker runs as
root, scripts run as an unprivileged user so RLIMIT_NPROC applies and they cannot
read the worker's files.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import pwd
import resource
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

OutputCallback = Callable[[str, bytes], Awaitable[None] | None]

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_READ_CHUNK = 65536


class Outcome(enum.StrEnum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int
    memory_bytes: int
    open_files: int
    processes: int
    file_size_bytes: int
    output_cap_bytes: int
    run_as_user: str = "nobody"


@dataclass(frozen=True)
class ExecResult:
    outcome: Outcome
    exit_code: int
    error: str
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool


class TailBuffer:
    """Keeps the last ``cap`` bytes written."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.truncated = False

    def write(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > self.cap:
            del self.data[: len(self.data) - self.cap]
            self.truncated = True

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def _identity(user: str) -> tuple[int, int] | None:
    if os.geteuid() != 0 or not user:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def clean_environment(workdir: str) -> dict[str, str]:
    return {
        "PATH": SAFE_PATH,
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _limit_child(limits: Limits, identity: tuple[int, int] | None) -> Callable[[], None]:
    def apply() -> None:  # runs in the child between fork and exec
        for res, value in (
            (resource.RLIMIT_CPU, limits.cpu_seconds),
            (resource.RLIMIT_AS, limits.memory_bytes),
            (resource.RLIMIT_NOFILE, limits.open_files),
            (resource.RLIMIT_FSIZE, limits.file_size_bytes),
            (resource.RLIMIT_NPROC, limits.processes),
            (resource.RLIMIT_CORE, 0),
        ):
            resource.setrlimit(res, (value, value))
        if identity is not None:
            uid, gid = identity
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)

    return apply


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class SubprocessExecutor:
    """Runs each script in a fresh interpreter of the worker's own Python."""

    name = "subprocess"

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._identity = _identity(limits.run_as_user)

    async def run(
        self,
        source: str,
        timeout: float,
        cancel: asyncio.Event,
        on_output: OutputCallback | None = None,
    ) -> ExecResult:
        workdir = tempfile.mkdtemp(prefix="jobmesh-run-")
        try:
            script = os.path.join(workdir, "job.py")
            with open(script, "w", encoding="utf-8") as fh:
                fh.write(source)
            if self._identity is not None:
                os.chown(workdir, *self._identity)
                os.chown(script, *self._identity)
            return await self._execute(script, workdir, timeout, cancel, on_output)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    async def _execute(
        self, script: str, workdir: str, timeout: float, cancel: asyncio.Event, on_output: OutputCallback | None
    ) -> ExecResult:
        # -I: isolated mode (ignores PYTHON* variables and user site, no script dir
        # tricks); -u: unbuffered so output streams live.
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-u",
            script,
            cwd=workdir,
            env=clean_environment(workdir),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_limit_child(self._limits, self._identity),
        )
        pgid = proc.pid
        out = TailBuffer(self._limits.output_cap_bytes)
        err = TailBuffer(self._limits.output_cap_bytes)
        assert proc.stdout is not None and proc.stderr is not None
        readers = [
            asyncio.create_task(_pump(proc.stdout, out, "stdout", on_output)),
            asyncio.create_task(_pump(proc.stderr, err, "stderr", on_output)),
        ]
        waiter = asyncio.create_task(proc.wait())
        cancelled = asyncio.create_task(cancel.wait())
        outcome: Outcome | None = None
        try:
            done, _ = await asyncio.wait({waiter, cancelled}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if waiter not in done:
                outcome = Outcome.CANCELLED if cancelled in done else Outcome.TIMED_OUT
                kill_group(pgid)
                await waiter
        finally:
            cancelled.cancel()
            # Whatever the script left behind in its group goes too.
            kill_group(pgid)
            if not waiter.done():
                waiter.cancel()
            # A grandchild outside the group could hold the pipes open: don't wait forever.
            _, pending = await asyncio.wait(readers, timeout=2.0)
            for task in pending:
                task.cancel()
        code = proc.returncode if proc.returncode is not None else -9
        if outcome is None:
            outcome = Outcome.SUCCEEDED if code == 0 else Outcome.FAILED
        error = ""
        if outcome is Outcome.TIMED_OUT:
            error = f"timed out after {timeout:g} s"
        elif outcome is Outcome.CANCELLED:
            error = "cancelled"
        elif outcome is Outcome.FAILED:
            error = _last_line(err.text()) or _describe_exit(code)
        return ExecResult(outcome, code, error, out.text(), err.text(), out.truncated, err.truncated)


def _last_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()[:1000]
    return ""


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


async def _pump(stream: asyncio.StreamReader, buffer: TailBuffer, name: str, on_output: OutputCallback | None) -> None:
    while True:
        chunk = await stream.read(_READ_CHUNK)
        if not chunk:
            return
        buffer.write(chunk)
        if on_output is not None:
            result = on_output(name, chunk)
            if result is not None:
                await result
