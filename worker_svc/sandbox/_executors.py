"""Isolated script execution in a child process.

Each run gets: a new session and process group, a clean environment (no
JOBMESH_* or other service secrets), a private temporary working directory emptied
afterwards (see ``Workdirs``), resource limits, a wall-clock timeout that kills the
whole group, and stdout/stderr captured with a per-stream cap (tail kept).

The process limit: RLIMIT_NPROC does not bind root, so where the worker may manage
cgroups (root with a writable pids hierarchy) each run gets its own pids cgroup with
``pids.max``; it also lets the worker kill every process of the run, including
those that left the process group. Elsewhere RLIMIT_NPROC applies. With
``run_as_user`` set (and the worker root), scripts run as that user.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import itertools
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from worker_svc import forkserver

log = logging.getLogger(__name__)

# Called with each chunk as it is read; must not block (it runs in the reader callback).
OutputCallback = Callable[[str, bytes], None]

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_READ_CHUNK = 65536
# A script's stream is read at most once per this long while the script runs: what
# it printed meanwhile comes in one read (and one live-output entry), not one wake-up
# per line.
OUTPUT_GATHER_SECONDS = 0.01
_HURRY_BYTES = 16384  # this much gathered in OUTPUT_GATHER_SECONDS: the script writes fast


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
    run_as_user: str = ""
    workdir_root: str = ""  # where runs' private directories go ("" = the system temp dir)


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


PIDS_HIERARCHIES = ("/sys/fs/cgroup/pids", "/sys/fs/cgroup")
# Emptied run cgroups and run directories kept for the next runs (of each).
MAX_SPARES = 64


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_WORKER_DIR = re.compile(r"jobmesh-(\d+)-\w+")


def _dead_workers_dirs(base: str) -> list[str]:
    """The directories under ``base`` named as a worker's (``jobmesh-<pid>-…``) whose
    worker is no longer running."""
    try:
        names = os.listdir(base)
    except OSError:
        return []
    return [
        os.path.join(base, name)
        for name in names
        if (match := _WORKER_DIR.fullmatch(name)) is not None and not _pid_alive(int(match.group(1)))
    ]


def _sweep_stale_roots(base: str) -> None:
    """Remove the (empty) cgroup directories of workers that died without cleaning up."""
    for root in _dead_workers_dirs(base):
        with contextlib.suppress(OSError):
            for child in os.listdir(root):
                if child.startswith("run-"):
                    with contextlib.suppress(OSError):
                        os.rmdir(os.path.join(root, child))
            os.rmdir(root)


def _pids_root() -> str | None:
    """A cgroup directory where per-run pids cgroups can be made, or None."""
    if os.geteuid() != 0:
        return None
    for base in PIDS_HIERARCHIES:
        controllers = os.path.join(base, "cgroup.controllers")
        v1 = os.path.exists(os.path.join(base, "pids.current")) or base.endswith("/pids")
        v2 = os.path.exists(controllers) and "pids" in open(controllers).read().split()  # noqa: SIM115
        if (v1 or v2) and os.access(base, os.W_OK):
            _sweep_stale_roots(base)
            root = os.path.join(base, f"jobmesh-{os.getpid()}-{secrets.token_hex(3)}")
            try:
                os.makedirs(root, exist_ok=True)
                if v2:
                    with open(os.path.join(root, "cgroup.subtree_control"), "w") as fh:
                        fh.write("+pids")
            except OSError:
                continue
            return root
    return None


class Workdirs:
    """The runs' private working directories, all inside one directory of this
    executor's (``jobmesh-<worker pid>-…`` under the workdir root). It is removed on
    close, by the fork server when the worker dies, or by the next worker to start
    when both died.

    A directory whose run left nothing behind (its cgroup emptied) and that is again
    as it was made (empty, mode 0700, the same owner, no extended attributes such as
    an ACL) is reused by a later run: making and removing a directory per run costs
    more than a short run (on ext4 each waits on a journal commit)."""

    def __init__(self, root: str, identity: tuple[int, int] | None) -> None:
        base = root or tempfile.gettempdir()
        for stale in _dead_workers_dirs(base):  # a worker that died with its fork server
            shutil.rmtree(stale, ignore_errors=True)
        self.path = tempfile.mkdtemp(prefix=f"jobmesh-{os.getpid()}-", dir=base)
        os.chmod(self.path, 0o711)  # a run's user may enter its own directory, not list the others
        self._identity = identity
        self._owner = identity[0] if identity is not None else os.geteuid()
        self._spare: list[str] = []

    def take(self, source: str) -> tuple[str, str]:
        """A private directory holding the script: (directory, script path)."""
        if self._spare:
            workdir = self._spare.pop()
        else:
            workdir = tempfile.mkdtemp(prefix="run-", dir=self.path)
            if self._identity is not None:
                os.chown(workdir, *self._identity)
        script = os.path.join(workdir, "job.py")
        try:
            _write_new(script, source.encode("utf-8"))
            if self._identity is not None:
                os.chown(script, *self._identity)
        except BaseException:
            _remove_workdir(workdir)
            raise
        return workdir, script

    def give_back(self, workdir: str, reusable: bool) -> None:
        """After the run: kept for reuse if ``reusable`` (nothing of the run is left to
        write into it) and it is as it was made once its script is removed; else removed."""
        if reusable and len(self._spare) < MAX_SPARES and self._emptied(workdir):
            self._spare.append(workdir)
        else:
            _remove_workdir(workdir)

    def _emptied(self, workdir: str) -> bool:
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(workdir, "job.py"))
            info = os.lstat(workdir)
            if not stat.S_ISDIR(info.st_mode) or stat.S_IMODE(info.st_mode) != 0o700 or info.st_uid != self._owner:
                return False
            with os.scandir(workdir) as entries:
                if next(entries, None) is not None:
                    return False
            return not _xattrs(workdir)
        except OSError:
            return False

    def close(self) -> None:
        self._spare.clear()
        shutil.rmtree(self.path, ignore_errors=True)


# Once or more per run: plain descriptors, not Python file objects (a third of the cost).
def _read_small(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = b""
        while chunk := os.read(fd, _READ_CHUNK):
            data += chunk
        return data
    finally:
        os.close(fd)


def _write_new(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _xattrs(path: str) -> list[str]:
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return []
        raise


class PidsCgroup:
    """One run's pids cgroup: caps its process count and finds all its processes."""

    def __init__(self, root: str, name: str, max_pids: int) -> None:
        self.path = os.path.join(root, name)
        os.mkdir(self.path)
        with open(os.path.join(self.path, "pids.max"), "w") as fh:
            fh.write(str(max_pids))
        self.procs = os.path.join(self.path, "cgroup.procs")

    def _pids(self) -> list[int]:
        try:
            return [int(p) for p in _read_small(self.procs).split()]
        except OSError:
            return []

    async def kill_all(self) -> bool:
        """SIGKILL every process of the run until none is left (never blocks the
        loop); False if some survived every attempt."""
        for _ in range(400):
            pids = self._pids()
            if not pids:
                return True
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.005)
        return False

    async def remove(self) -> None:
        for _ in range(200):
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:  # processes left, or the last ones are still being reaped
                await self.kill_all()
                await asyncio.sleep(0.005)


# Runs first in the fresh interpreter, single-threaded: joins the run's cgroup,
# applies the limits, drops privileges, then runs the script as __main__. Doing
# this in a preexec_fn instead would run Python between fork and exec in the
# (multi-threaded, gRPC-using) worker, which is unsafe.
BOOTSTRAP = """
import os, resource, sys
_cg, _uid, _gid, _cpu, _as, _nofile, _fsize, _nproc, _script = sys.argv[1:10]
if _cg != "-":
    with open(_cg, "w") as _fh:
        _fh.write(str(os.getpid()))
for _res, _value in ((resource.RLIMIT_CPU, _cpu), (resource.RLIMIT_AS, _as), (resource.RLIMIT_NOFILE, _nofile),
                     (resource.RLIMIT_FSIZE, _fsize), (resource.RLIMIT_NPROC, _nproc), (resource.RLIMIT_CORE, "0")):
    resource.setrlimit(_res, (int(_value), int(_value)))
if _uid != "-":
    os.setgroups([])
    os.setgid(int(_gid))
    os.setuid(int(_uid))
sys.argv = [_script]
for _stream in (sys.stdout, sys.stderr):  # line-buffered, as in the fork server
    _stream.reconfigure(line_buffering=True, write_through=False)
with open(_script, "rb") as _fh:
    _source = _fh.read()
_globals = {"__name__": "__main__", "__file__": _script, "__builtins__": __builtins__}
del _cg, _uid, _gid, _cpu, _as, _nofile, _fsize, _nproc, _res, _value, _fh, _stream
try:
    exec(compile(_source, _script, "exec"), _globals)
except SystemExit:
    raise
except BaseException as _exc:  # the traceback starts in the script, not in this bootstrap
    _exc.__traceback__ = _exc.__traceback__.tb_next
    sys.excepthook(type(_exc), _exc, _exc.__traceback__)
    sys.exit(1)
"""


def bootstrap_args(
    limits: Limits, identity: tuple[int, int] | None, cgroup_procs: str | None, script: str
) -> list[str]:
    """The bootstrap's argv: plain strings, so it needs no import beyond os/resource/sys."""
    return [
        cgroup_procs or "-",
        str(identity[0]) if identity else "-",
        str(identity[1]) if identity else "-",
        str(limits.cpu_seconds),
        str(limits.memory_bytes),
        str(limits.open_files),
        str(limits.file_size_bytes),
        str(limits.processes),
        script,
    ]


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class Executor(Protocol):
    async def run(
        self, source: str, timeout: float, cancel: asyncio.Event, on_output: OutputCallback | None = None
    ) -> ExecResult: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class ExecutorError(Exception):
    """The executor itself failed (not the script)."""


class NoopExecutor:
    """Records success without spawning anything: measures the control plane alone
    (bench/pipeline.py). Never for real jobs."""

    async def run(
        self, source: str, timeout: float, cancel: asyncio.Event, on_output: OutputCallback | None = None
    ) -> ExecResult:
        # Like a real run, let the worker go on with other runs while this one "runs".
        await asyncio.sleep(0)
        return ExecResult(Outcome.SUCCEEDED, 0, "", "", "", False, False)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


@dataclass
class Child:
    """A started run: the read ends of its stdout/stderr pipes (non-blocking, owned
    by the supervisor), its exit code, and how to kill it (its whole group).
    ``ended`` runs once it exited: it kills what it left in its process group."""

    stdout: int
    stderr: int
    exited: Awaitable[int]
    kill: Callable[[], None]
    ended: Callable[[], None] = lambda: None
    release: Callable[[], None] = lambda: None


class IsolatingExecutor:
    """What both real executors share: the private working directory with the
    script, the run's pids cgroup, timeout/cancel, killing what is left, and output
    capture. Subclasses only start the child (``_spawn``)."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._identity = _identity(limits.run_as_user)
        self._cgroups = _pids_root()
        # Emptied run cgroups (and run directories), reused by the next runs: making
        # and removing them per run costs more than a short run itself.
        self._spare_cgroups: list[PidsCgroup] = []
        self._workdirs = Workdirs(limits.workdir_root, self._identity)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        """Remove this executor's run directories, its cgroup directory and its (empty)
        run cgroups."""
        while self._spare_cgroups:
            await self._spare_cgroups.pop().remove()
        self._workdirs.close()
        if self._cgroups is not None:
            with contextlib.suppress(OSError):
                os.rmdir(self._cgroups)

    async def _spawn(self, script: str, workdir: str, cgroup: PidsCgroup | None) -> Child:
        raise NotImplementedError

    async def run(
        self,
        source: str,
        timeout: float,
        cancel: asyncio.Event,
        on_output: OutputCallback | None = None,
    ) -> ExecResult:
        workdir, script, cgroup = self._prepare(source)
        emptied = False
        try:
            try:
                child = await self._spawn(script, workdir, cgroup)
                try:
                    result, emptied = await self._supervise(child, timeout, cancel, on_output, cgroup)
                    return result
                finally:
                    child.release()
            finally:
                if cgroup is not None:
                    emptied = await self._recycle(cgroup, emptied)
        finally:
            # Without a cgroup, a process the run left outside its group could still
            # write into the directory: reused only when the cgroup shows none is left.
            self._workdirs.give_back(workdir, reusable=cgroup is not None and emptied)

    async def _recycle(self, cgroup: PidsCgroup, emptied: bool) -> bool:
        """Keep a run's cgroup for the next run once nothing of this run is left in it
        (``emptied``: the supervisor already saw it empty); whether nothing is left."""
        emptied = emptied or await cgroup.kill_all()
        if emptied and len(self._spare_cgroups) < MAX_SPARES:
            self._spare_cgroups.append(cgroup)
        else:
            await cgroup.remove()
        return emptied

    def _prepare(self, source: str) -> tuple[str, str, PidsCgroup | None]:
        """The run's private directory with its script, and its pids cgroup."""
        workdir, script = self._workdirs.take(source)
        try:
            cgroup = None
            if self._spare_cgroups:
                cgroup = self._spare_cgroups.pop()
            elif self._cgroups is not None:
                cgroup = PidsCgroup(self._cgroups, f"run-{secrets.token_hex(6)}", self._limits.processes)
        except BaseException:
            _remove_workdir(workdir)
            raise
        return workdir, script, cgroup

    async def _supervise(
        self,
        child: Child,
        timeout: float,
        cancel: asyncio.Event,
        on_output: OutputCallback | None,
        cgroup: PidsCgroup | None,
    ) -> tuple[ExecResult, bool]:
        """The run's result, and whether its cgroup (if any) was left empty."""
        out = TailBuffer(self._limits.output_cap_bytes)
        err = TailBuffer(self._limits.output_cap_bytes)
        streams = _Streams(child, out, err, on_output)
        waiter = asyncio.ensure_future(child.exited)
        cancelled = asyncio.ensure_future(cancel.wait())
        outcome: Outcome | None = None
        emptied = cgroup is None
        try:
            done, _ = await asyncio.wait({waiter, cancelled}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if waiter not in done:
                outcome = Outcome.CANCELLED if cancelled in done else Outcome.TIMED_OUT
                child.kill()
                if cgroup is not None:
                    await cgroup.kill_all()
                await waiter
        finally:
            cancelled.cancel()
            # Whatever the script left behind in its group (or cgroup) goes too.
            child.ended()
            if cgroup is not None:
                emptied = await cgroup.kill_all()
            if not waiter.done():
                waiter.cancel()
            # A grandchild outside the group could hold the pipes open: don't wait forever.
            await streams.drained(2.0)
        code = waiter.result()
        if outcome is None:
            outcome = Outcome.SUCCEEDED if code == 0 else Outcome.FAILED
        error = ""
        if outcome is Outcome.TIMED_OUT:
            error = f"timed out after {timeout:g} s"
        elif outcome is Outcome.CANCELLED:
            error = "cancelled"
        elif outcome is Outcome.FAILED:
            error = _last_line(err.text()) or _describe_exit(code)
        return ExecResult(outcome, code, error, out.text(), err.text(), out.truncated, err.truncated), emptied


class SubprocessExecutor(IsolatingExecutor):
    """Runs each script in a fresh interpreter of the worker's own Python."""

    async def _spawn(self, script: str, workdir: str, cgroup: PidsCgroup | None) -> Child:
        # -I: isolated mode (ignores PYTHON* variables and user site, no script dir
        # tricks); -u, then line buffering in the bootstrap: output streams line by line.
        out_r, out_w = _output_pipe()
        err_r, err_w = _output_pipe()
        try:
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-I",
                    "-u",
                    "-c",
                    BOOTSTRAP,
                    *bootstrap_args(self._limits, self._identity, cgroup.procs if cgroup else None, script),
                    cwd=workdir,
                    env=clean_environment(workdir),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out_w,
                    stderr=err_w,
                    start_new_session=True,
                )
            finally:
                os.close(out_w)
                os.close(err_w)
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise

        def kill() -> None:
            kill_group(proc.pid)

        return Child(out_r, err_r, proc.wait(), kill, ended=kill)


READY_TOKEN = 0  # the helper's first message; runs' tokens start at 1
HELPER_START_SECONDS = 30.0


class ForkServerExecutor(IsolatingExecutor):
    """Forks each run from a small helper process (worker_svc/forkserver.py) that
    has only the interpreter, the isolation code and the ``preload`` modules in
    memory: a run costs a fork instead of an interpreter start. The worker starts
    the helper at start-up (``start``); if it dies it is started again for the next
    run, and the runs it was executing end FAILED (then retry per their policy)."""

    def __init__(self, limits: Limits, preload: tuple[str, ...] = ()) -> None:
        super().__init__(limits)
        self._preload = preload
        self._sock: socket.socket | None = None
        self._helper: asyncio.subprocess.Process | None = None
        self._starting = asyncio.Lock()
        self._tokens = itertools.count(1)
        self._ready: asyncio.Future[int] | None = None
        self._pids: dict[int, int] = {}  # token -> pid, once the helper said it forked
        self._exits: dict[int, asyncio.Future[int]] = {}

    async def _connect(self) -> socket.socket:
        async with self._starting:
            if self._sock is not None:
                return self._sock
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                self._helper = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-I",
                    "-u",
                    "-c",
                    _helper_source(),
                    str(theirs.fileno()),
                    self._workdirs.path,
                    self._cgroups or "-",
                    *self._preload,
                    pass_fds=(theirs.fileno(),),
                    cwd="/",
                    env=clean_environment("/"),  # a child only changes HOME and TMPDIR
                    stdin=asyncio.subprocess.DEVNULL,
                )
            finally:
                theirs.close()
            ours.setblocking(False)
            loop = asyncio.get_running_loop()
            ready: asyncio.Future[int] = loop.create_future()
            self._ready = ready
            loop.add_reader(ours.fileno(), self._on_readable, ours)
            self._sock = ours
            try:
                await asyncio.wait_for(ready, HELPER_START_SECONDS)
            except (ExecutorError, TimeoutError) as exc:
                if self._sock is ours:
                    self._lost(ours)
                if self._helper.returncode is None:
                    self._helper.kill()
                await self._helper.wait()
                raise ExecutorError(f"the fork server did not start (preload {list(self._preload)})") from exc
            return ours

    async def start(self) -> None:
        """Start the helper now, so a broken set-up (a preload module that does not
        import) stops the worker at start-up instead of failing every run."""
        await self._connect()

    def _on_readable(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(forkserver.MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lost(sock)
                return
            kind, token, value = forkserver.decode(data)
            if kind == "started":
                if token in self._exits:
                    self._pids[token] = value
            elif kind == "exit":
                self._pids.pop(token, None)
                _resolve(self._exits.pop(token, None), os.waitstatus_to_exitcode(value))
            elif kind == "ready":
                _resolve(self._ready, value)
            else:
                error = ExecutorError(str(value))
                _fail(self._ready if token == READY_TOKEN else self._exits.pop(token, None), error)

    def _lost(self, sock: socket.socket) -> None:
        """The helper went away: fail what it was running; the next run restarts it."""
        asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()
        if self._sock is sock:
            self._sock = None
        if self._exits:
            log.error("fork server exited with %d run(s) in flight", len(self._exits))
        _fail(self._ready, ExecutorError("the fork server exited"))
        for future in self._exits.values():
            _fail(future, ExecutorError("the fork server exited"))
        self._exits.clear()

    async def _spawn(self, script: str, workdir: str, cgroup: PidsCgroup | None) -> Child:
        """Ask the helper for a run and return at once: the exit (or the helper's
        error) arrives on the exit future, the output on the pipes."""
        sock = await self._connect()
        token = next(self._tokens)
        uid, gid = self._identity if self._identity is not None else (-1, -1)
        limits = self._limits
        request = forkserver.encode(
            "run", token, workdir, script, clean_environment(workdir), cgroup.procs if cgroup else "", uid, gid,
            [limits.cpu_seconds, limits.memory_bytes, limits.open_files, limits.file_size_bytes, limits.processes, 0],
        )  # fmt: skip
        out_r, out_w = _output_pipe()
        err_r, err_w = _output_pipe()
        exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._exits[token] = exited
        try:
            await _send_with_fds(sock, request, [out_w, err_w])
        except BaseException:
            self._exits.pop(token, None)
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)

        def kill() -> None:
            pid = self._pids.get(token)
            if pid is not None:
                kill_group(pid)
            if self._sock is sock:  # the helper kills the child even before it made its group
                with contextlib.suppress(OSError):
                    sock.send(forkserver.encode("kill", token))

        def release() -> None:
            self._exits.pop(token, None)
            self._pids.pop(token, None)

        # The helper kills what a run left in its group before it reports the exit.
        return Child(out_r, err_r, exited, kill, release=release)

    async def close(self) -> None:
        if self._sock is not None:
            self._lost(self._sock)  # EOF: the helper kills what is left and exits
        if self._helper is not None:
            try:
                await asyncio.wait_for(self._helper.wait(), 5.0)
            except TimeoutError:
                self._helper.kill()
                await self._helper.wait()
            self._helper = None
        await super().close()


def _helper_source() -> str:
    with open(forkserver.__file__, encoding="utf-8") as fh:
        return fh.read()


def _resolve(future: asyncio.Future[int] | None, value: int) -> None:
    if future is not None and not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[int] | None, exc: BaseException) -> None:
    if future is not None and not future.done():
        future.set_exception(exc)


async def _send_with_fds(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            socket.send_fds(sock, [data], fds)
            return
        except BlockingIOError:
            writable = loop.create_future()
            loop.add_writer(sock.fileno(), writable.set_result, None)
            try:
                await writable
            finally:
                loop.remove_writer(sock.fileno())


def _output_pipe() -> tuple[int, int]:
    """A pipe for a script's stdout or stderr: the worker's read end does not block;
    the script's write end does, as a terminal's or a file's would (a full pipe makes
    the script wait for the reader, it never fails its write or drops the output)."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(read_end, False)
    return read_end, write_end


def _remove_workdir(path: str) -> None:
    try:  # the usual case: only the script is there
        os.unlink(os.path.join(path, "job.py"))
        os.rmdir(path)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)


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


class _Streams:
    """Reads a child's stdout and stderr into their tail buffers and ``on_output``:
    reader callbacks on the loop, no task per stream.

    A stream is read at once when it becomes readable, but at most once per
    ``OUTPUT_GATHER_SECONDS``: what a script prints line by line arrives in a few
    reads, not one wake-up per line. A stream that gave a big read after such a wait
    (the script writes fast and may be waiting on a full pipe) is read at once from
    then on; once the child has exited, everything left is read at once.
    """

    def __init__(self, child: Child, out: TailBuffer, err: TailBuffer, on_output: OutputCallback | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._open: dict[int, tuple[TailBuffer, str]] = {child.stdout: (out, "stdout"), child.stderr: (err, "stderr")}
        self._on_output = on_output
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._later: dict[int, asyncio.TimerHandle] = {}
        self._hurry: set[int] = set()  # streams read as soon as they are readable
        self._last_read: dict[int, float] = {}
        for fd in self._open:
            self._loop.add_reader(fd, self._readable, fd)

    def _readable(self, fd: int) -> None:
        since = self._loop.time() - self._last_read.get(fd, -OUTPUT_GATHER_SECONDS)
        if fd in self._hurry or since >= OUTPUT_GATHER_SECONDS:
            self._read(fd)
            return
        self._loop.remove_reader(fd)
        self._later[fd] = self._loop.call_later(OUTPUT_GATHER_SECONDS - since, self._gathered, fd)

    def _gathered(self, fd: int) -> None:
        del self._later[fd]
        self._loop.add_reader(fd, self._readable, fd)
        if self._read(fd) >= _HURRY_BYTES:
            self._hurry.add(fd)  # a fast writer: from now on, read as soon as it writes

    def _read(self, fd: int) -> int:
        """Reads what is there; returns how many bytes."""
        try:
            chunk = os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            return 0
        except OSError:
            chunk = b""
        if not chunk:
            self._close(fd)
            return 0
        self._last_read[fd] = self._loop.time()
        buffer, name = self._open[fd]
        buffer.write(chunk)
        if self._on_output is not None:
            self._on_output(name, chunk)
        return len(chunk)

    def _close(self, fd: int) -> None:
        later = self._later.pop(fd, None)
        if later is not None:
            later.cancel()
        self._loop.remove_reader(fd)
        os.close(fd)
        del self._open[fd]
        if not self._open and not self._done.done():
            self._done.set_result(None)

    async def drained(self, timeout: float) -> None:
        """After the child ended: until both streams reached EOF, at most ``timeout``;
        then stop reading."""
        self._hurry.update(self._open)
        for fd, later in list(self._later.items()):
            later.cancel()
            self._gathered(fd)
        if self._open:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._done), timeout)
        for fd in list(self._open):
            self._close(fd)
