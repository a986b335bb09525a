"""The two real executors (a fork per run from a small helper process, or a fresh
interpreter per run) and what they share: the run's uid, cgroups, the copy of its
script, timeout and cancel, killing what is left, and output capture. What the
run's own process does (namespaces, mounts, privileges, the script) is in
``_runner``; the fork server in ``_forkserver``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from worker_svc.sandbox import _runner
from worker_svc.sandbox._cgroups import MAX_SPARES, RECYCLE_MEMORY_BYTES, CgroupLimits, RunCgroup, worker_cgroups
from worker_svc.sandbox._limits import Limits, Sandbox, clean_environment, read_only_paths
from worker_svc.sandbox._streams import OutputCallback, Streams, TailBuffer, output_pipe
from worker_svc.sandbox._uids import UidPool, UidPoolError
from worker_svc.sandbox._workdirs import Workdirs, remove_workdir

log = logging.getLogger(__name__)

SANDBOX_DIR = os.path.dirname(os.path.abspath(__file__))
# The fresh-interpreter executor's program: this directory's _runner, as a top-level module.
BOOTSTRAP = f"import sys; sys.path.insert(0, {SANDBOX_DIR!r}); import _runner; _runner.bootstrap()"
HELPER = f"import sys; sys.path.insert(0, {SANDBOX_DIR!r}); import _forkserver; _forkserver.main()"
HOST_NETWORK_REFUSED = (
    "the job asks for the host network (network=HOST) and this worker does not allow it "
    "(JOBMESH_WORKER_ALLOW_HOST_NETWORK=false)"
)


class Outcome(enum.StrEnum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class ExecResult:
    outcome: Outcome
    exit_code: int
    error: str
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class Executor(Protocol):
    async def run(
        self,
        source: str,
        timeout: float,
        cancel: asyncio.Event,
        on_output: OutputCallback | None = None,
        host_network: bool = False,
    ) -> ExecResult: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class ExecutorError(Exception):
    """The executor itself failed (not the script)."""


class NoopExecutor:
    """Records success without spawning anything: measures the control plane alone
    (bench/pipeline.py). Never for real jobs."""

    async def run(
        self,
        source: str,
        timeout: float,
        cancel: asyncio.Event,
        on_output: OutputCallback | None = None,
        host_network: bool = False,
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
    """What both real executors share: the run's uid and cgroups, the copy of its
    script, timeout/cancel, killing what is left, and output capture. Subclasses
    only start the child (``_spawn``) with the request ``_runner.run`` reads."""

    def __init__(self, limits: Limits, sandbox: Sandbox | None = None) -> None:
        self._limits = limits
        self._sandbox = sandbox if sandbox is not None else Sandbox()
        self._cgroups = worker_cgroups()
        self._cgroup_limits = CgroupLimits(limits.processes, limits.memory_bytes)
        # Emptied run cgroups (and run directories), reused by the next runs: making
        # and removing them per run costs more than a short run itself.
        self._spare_cgroups: list[RunCgroup] = []
        self._workdirs = Workdirs(limits.workdir_root)
        self._read_only = read_only_paths()
        self._uids: UidPool | None = None

    @property
    def cgroups(self) -> Mapping[str, str]:
        """controller -> this executor's cgroup directory, under which each run gets its
        own; empty where this process may not make cgroups."""
        return self._cgroups

    @property
    def runs_directory(self) -> str:
        """The directory holding the runs' private directories."""
        return self._workdirs.path

    async def start(self) -> None:
        """Check that runs can be isolated here: a sandboxed run of ``pass`` must
        succeed, else the worker must not start (ExecutorError says why)."""
        if not self._sandbox.enabled:
            return
        probe = await self.run("pass", 30.0, asyncio.Event())
        if probe.outcome is not Outcome.SUCCEEDED:
            raise ExecutorError(f"a sandboxed run fails here: {probe.error or probe.stderr.strip()[-500:]}")

    async def close(self) -> None:
        """Remove this executor's run directories, its cgroup directories and its
        (empty) run cgroups."""
        while self._spare_cgroups:
            await self._spare_cgroups.pop().remove()
        self._workdirs.close()
        for root in set(self._cgroups.values()):
            with contextlib.suppress(OSError):
                os.rmdir(root)
        if self._uids is not None:
            self._uids.close()

    async def _spawn(self, request: tuple[Any, ...]) -> Child:
        raise NotImplementedError

    def _uid_pool(self) -> UidPool:
        if self._uids is None:
            if os.geteuid() != 0:
                raise ExecutorError("the sandbox needs the worker to run as root (uids, namespaces, mounts)")
            s = self._sandbox
            try:
                self._uids = UidPool(s.uid_base, s.uid_count, s.concurrency)
            except (UidPoolError, OSError) as exc:
                raise ExecutorError(str(exc)) from exc
        return self._uids

    async def run(
        self,
        source: str,
        timeout: float,
        cancel: asyncio.Event,
        on_output: OutputCallback | None = None,
        host_network: bool = False,
    ) -> ExecResult:
        sandboxed = self._sandbox.enabled
        if sandboxed and host_network and not self._sandbox.allow_host_network:
            return ExecResult(Outcome.FAILED, -1, HOST_NETWORK_REFUSED, "", "", False, False)
        uid = await self._uid_pool().take() if sandboxed else -1
        emptied = True  # nothing of the run exists yet
        try:
            workdir, script, cgroup = self._prepare(source)
            emptied = False
            try:
                try:
                    limits = self._limits
                    request = (
                        "run", 0, workdir, script, clean_environment(sandboxed, workdir),
                        cgroup.procs if cgroup else [], uid, uid,
                        limits.rlimits(),
                        (self._workdirs.mount_point, self._sandbox.scratch_bytes, host_network, self._read_only)
                        if sandboxed else None,
                    )  # fmt: skip
                    child = await self._spawn(request)
                    try:
                        result, emptied = await self._supervise(child, timeout, cancel, on_output, cgroup)
                        return result
                    finally:
                        child.release()
                finally:
                    if cgroup is not None:
                        emptied = await self._recycle(cgroup, emptied)
            finally:
                # Unsandboxed and without a cgroup, a process the run left outside its
                # group could still write into the directory: reused only when the
                # cgroup shows none is left.
                self._workdirs.give_back(workdir, reusable=cgroup is not None and emptied)
        finally:
            if uid >= 0:
                # Its sandbox's init killed what the run left in its pid namespace; a
                # uid whose run still left something in its cgroup is never used again.
                if emptied or not self._cgroups:
                    self._uid_pool().give_back(uid)
                else:
                    log.error("retiring uid %d: processes of its run survived", uid)

    async def _recycle(self, cgroup: RunCgroup, emptied: bool) -> bool:
        """Keep a run's cgroup for the next run once nothing of this run is left in it
        (``emptied``: the supervisor already saw it empty); whether nothing is left."""
        emptied = emptied or await cgroup.kill_all()
        if emptied and len(self._spare_cgroups) < MAX_SPARES and cgroup.memory_bytes() <= RECYCLE_MEMORY_BYTES:
            self._spare_cgroups.append(cgroup)
        else:
            await cgroup.remove()
        return emptied

    def _prepare(self, source: str) -> tuple[str, str, RunCgroup | None]:
        """The run's private directory with its script, and its cgroups (limits
        written afresh: an unsandboxed run, as the worker's user, could change them)."""
        workdir, script = self._workdirs.take(source)
        try:
            cgroup = None
            if self._spare_cgroups:
                cgroup = self._spare_cgroups.pop()
            elif self._cgroups:
                cgroup = RunCgroup(self._cgroups, f"run-{secrets.token_hex(6)}")
            if cgroup is not None:
                cgroup.limit(self._cgroup_limits)
        except BaseException:
            remove_workdir(workdir)
            raise
        return workdir, script, cgroup

    async def _supervise(
        self,
        child: Child,
        timeout: float,
        cancel: asyncio.Event,
        on_output: OutputCallback | None,
        cgroup: RunCgroup | None,
    ) -> tuple[ExecResult, bool]:
        """The run's result, and whether its cgroup (if any) was left empty."""
        out = TailBuffer(self._limits.output_cap_bytes)
        err = TailBuffer(self._limits.output_cap_bytes)
        streams = Streams(child.stdout, child.stderr, out, err, on_output)
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

    async def _spawn(self, request: tuple[Any, ...]) -> Child:
        # -I: isolated mode (ignores PYTHON* variables and user site, no script dir
        # tricks); -u, then line buffering in _runner: output streams line by line.
        out_r, out_w = output_pipe()
        err_r, err_w = output_pipe()
        try:
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-I", "-u", "-c", BOOTSTRAP, _runner.encode(*request).hex(),
                    cwd="/",
                    env=request[4],
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out_w,
                    stderr=err_w,
                    start_new_session=True,
                )  # fmt: skip
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
    """Forks each run from a small helper process (worker_svc/_runner.py) that
    has only the interpreter, the isolation code and the ``preload`` modules in
    memory: a run costs a fork instead of an interpreter start. The worker starts
    the helper at start-up (``start``); if it dies it is started again for the next
    run, and the runs it was executing end FAILED (then retry per their policy)."""

    def __init__(self, limits: Limits, sandbox: Sandbox | None = None, preload: tuple[str, ...] = ()) -> None:
        super().__init__(limits, sandbox)
        self._preload = preload
        self._sock: socket.socket | None = None
        self._helper: asyncio.subprocess.Process | None = None
        self._starting = asyncio.Lock()
        self._tokens = itertools.count(1)
        self._ready: asyncio.Future[int] | None = None
        self._pids: dict[int, int] = {}  # token -> pid, once the helper said it forked
        self._exits: dict[int, asyncio.Future[int]] = {}

    @property
    def helper(self) -> asyncio.subprocess.Process | None:
        """The fork-server helper process, while one runs."""
        return self._helper

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
                    HELPER,
                    str(theirs.fileno()),
                    self._workdirs.path,
                    ":".join(sorted(set(self._cgroups.values()))) or "-",
                    *self._preload,
                    pass_fds=(theirs.fileno(),),
                    cwd="/",
                    env=clean_environment(False, "/"),
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
        import, a host that cannot build the sandbox) stops the worker at start-up
        instead of failing every run."""
        await self._connect()
        await super().start()

    def _on_readable(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(_runner.MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lost(sock)
                return
            kind, token, value = _runner.decode(data)
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

    async def _spawn(self, request: tuple[Any, ...]) -> Child:
        """Ask the helper for a run and return at once: the exit (or the helper's
        error) arrives on the exit future, the output on the pipes."""
        sock = await self._connect()
        token = next(self._tokens)
        message = _runner.encode(request[0], token, *request[2:])
        out_r, out_w = output_pipe()
        err_r, err_w = output_pipe()
        exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._exits[token] = exited
        try:
            await _send_with_fds(sock, message, [out_w, err_w])
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
                    sock.send(_runner.encode("kill", token))

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
