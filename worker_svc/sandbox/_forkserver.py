"""The fork server: a small helper process that forks one child per run.

The worker starts it once (``python -I -u -m worker_svc.forkserver FD WORKDIRS CGROUPS
[MODULE...]``: the socket, the worker's directory of run directories, its cgroup
directory or ``-``, the modules to preload) with a clean environment; it imports only
what it needs to fork and isolate, plus the preloaded modules, and never touches the
network, the database or any secret. Requests arrive on a SOCK_SEQPACKET Unix socket
(FD), one ``marshal``-encoded message each, with the run's stdout/stderr pipe ends
attached as SCM_RIGHTS:

    worker → helper  ("run", token, workdir, script, env, cgroup_procs, uid, gid, limits) + [out_fd, err_fd]
                     ("kill", token)
    helper → worker  ("ready", 0, pid) once, then per run
                     ("started", token, pid) then ("exit", token, wait_status), or ("error", token, message)

The child applies the isolation of a fresh-interpreter run — new session and
process group, stdin from /dev/null, stdout/stderr on the pipes, every other
descriptor closed, the run's cgroup, a clean environment, the private working
directory, rlimits, dropped privileges — then runs the script as ``__main__`` and
exits the way an interpreter would (SystemExit codes, traceback and status 1 on an
uncaught exception, atexit handlers, non-daemon threads joined, files flushed).

A script is compiled once per source text in the helper, before forking, so a job
that runs again (a recurring job) skips the compiler: in the child, compiling costs
more than the fork, and its allocations copy pages. A script that is large, does not
compile or warns while compiling is left to the child, which compiles it and reports
as an interpreter would.

The helper is single-threaded, so forking is safe. Children are reaped in the main
loop (SIGCHLD only wakes it through the wakeup fd), so no message is ever written
from a signal handler; what a run left in its process group is killed before its
exit is reported. On EOF from the worker (the worker exited or was killed) the
helper kills every running child's group and exits.
"""

from __future__ import annotations

import _imp
import _signal  # type: ignore[import-not-found]  # signal.signal without its enum wrapper
import gc
import marshal
import os
import resource
import select
import signal
import socket
import sys

TYPE_CHECKING = False  # typing stays out of the helper (and so out of every script)

if TYPE_CHECKING:
    from typing import Any

MAX_MESSAGE = 1 << 16
# Compiled scripts kept by the helper, the most recently run first. Code takes about
# ten times its source in memory, and the helper's memory is mapped into every fork
# (copying the page tables is most of a fork's cost), so the cache stays small: at
# most 32 sources of up to 32 KiB, 128 KiB in all (about 1.3 MB of code).
CACHED_SCRIPTS = 32
MAX_CACHED_SOURCE = 32 << 10
CACHED_SOURCE_BYTES = 128 << 10
LIMITS = (
    resource.RLIMIT_CPU,
    resource.RLIMIT_AS,
    resource.RLIMIT_NOFILE,
    resource.RLIMIT_FSIZE,
    resource.RLIMIT_NPROC,
    resource.RLIMIT_CORE,
)


def encode(*fields: Any) -> bytes:
    return marshal.dumps(fields)


def decode(data: bytes) -> tuple[Any, ...]:
    message = marshal.loads(data)
    if not isinstance(message, tuple) or not message:
        raise ValueError("malformed fork-server message")
    return message


def line_buffered() -> None:
    """stdout/stderr as on a terminal: each line goes out when it is complete (one
    write per line, not one per print() argument as unbuffered ``-u`` streams do)."""
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True, write_through=False)  # type: ignore[union-attr]


def _exit_status(code: object) -> int:
    """What the interpreter makes of ``SystemExit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except Exception:
        pass
    return 1


def environment_changes(base: dict[str, str], env: dict[str, str]) -> tuple[list[str], list[tuple[str, str]]]:
    """What turns the helper's own (already clean) environment ``base`` into ``env``:
    the keys to drop and the keys to set. Worked out in the helper before forking, so
    the child touches (and copies on write) only the entries that change."""
    drop = [key for key in base if key not in env]
    return drop, [(key, text) for key, text in env.items() if base.get(key) != text]


def _isolate(
    workdir: str, env: tuple[list[str], list[tuple[str, str]]], cgroup_procs: str, uid: int, gid: int, limits: list[int]
) -> None:
    os.setsid()
    # The C-level calls: signal.signal's enum conversions would touch (and copy)
    # pages of the helper's heap in every child.
    _signal.signal(signal.SIGINT, signal.default_int_handler)
    for number in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
        _signal.signal(number, _signal.SIG_DFL)
    if cgroup_procs:
        fd = os.open(cgroup_procs, os.O_WRONLY)
        try:
            os.write(fd, b"%d" % os.getpid())
        finally:
            os.close(fd)
    os.chdir(workdir)
    drop, changes = env
    for key in drop:
        del os.environ[key]
    for key, text in changes:
        os.environ[key] = text
    cached = sys.modules.get("tempfile")
    if cached is not None:  # a preloaded module may have cached the helper's temp dir
        setattr(cached, "tempdir", None)  # noqa: B010
    for which, value in zip(LIMITS, limits, strict=True):
        resource.setrlimit(which, (value, value))
    if uid >= 0:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)


def _run_script(script: str, code: Any) -> int:
    """Runs ``script`` as ``__main__``: ``code`` if the helper compiled it (from
    another path: the file names in it become this one), else compiled here."""
    main = type(sys)("__main__")
    main.__file__ = script
    main.__builtins__ = __builtins__  # type: ignore[attr-defined]
    sys.modules["__main__"] = main
    sys.argv = [script]
    line_buffered()
    status = 0
    try:
        if code is None:
            with open(script, "rb") as fh:
                # dont_inherit: this module's own __future__ imports are not the script's.
                code = compile(fh.read(), script, "exec", dont_inherit=True)
        else:
            _imp._fix_co_filename(code, script)  # type: ignore[attr-defined]  # as importlib does for a .pyc
        exec(code, main.__dict__)
    except SystemExit as exc:
        status = _exit_status(exc.code)
    except BaseException as exc:
        # The traceback starts in the script, as an interpreter prints it (not here).
        tb = exc.__traceback__
        exc.__traceback__ = tb.tb_next if tb is not None else None
        sys.excepthook(type(exc), exc, exc.__traceback__)
        status = 1
    return _finalize(main, status)


def _finalize(main: Any, status: int) -> int:
    """The interpreter's shutdown, in order: join non-daemon threads, atexit
    handlers, then drop the script's globals so its open files flush."""
    try:
        threading = sys.modules.get("threading")
        if threading is not None:
            threading._shutdown()
        import atexit

        atexit._run_exitfuncs()
        main.__dict__.clear()
        gc.collect()
    except SystemExit as exc:
        status = _exit_status(exc.code)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        status = status or 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    return status


def _child(
    request: tuple[Any, ...], env: tuple[list[str], list[tuple[str, str]]], code: Any, out_fd: int, err_fd: int
) -> None:
    """Runs in the forked child; never returns."""
    status = 127
    try:
        signal.set_wakeup_fd(-1)
        _, _, workdir, script, _, cgroup_procs, uid, gid, limits = request
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        _isolate(workdir, env, cgroup_procs, uid, gid, limits)
        status = _run_script(script, code)
    except BaseException:
        try:
            sys.excepthook(*sys.exc_info())
            sys.stderr.flush()
        except BaseException:
            pass
    finally:
        os._exit(status)


class Server:
    """Everything a request touches between two forks is copied on write (in the
    helper, and in every child still running): the loop keeps that small."""

    def __init__(self, sock: socket.socket, workdirs: str, cgroups: str) -> None:
        self.sock = sock
        self.running: dict[int, int] = {}  # pid -> token
        self.pids: dict[int, int] = {}  # token -> pid
        # The worker's directory of run directories and its cgroup directory ("" if
        # none), removed when the worker is gone; a directory not named as the
        # worker's own is never removed.
        self.workdirs = workdirs if os.path.basename(workdirs).startswith(f"jobmesh-{os.getppid()}-") else ""
        self.cgroups = cgroups
        self.environ = dict(os.environ)
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.compiled: dict[bytes, Any] = {}  # source -> code, least recently run first
        self.compiled_bytes = 0  # their sources' total size

    def send(self, *fields: Any) -> None:
        self.sock.sendall(encode(*fields))

    def serve(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when runs stop
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        poller = select.epoll()
        requests, wake = self.sock.fileno(), self.wake_r
        poller.register(requests, select.EPOLLIN)
        poller.register(wake, select.EPOLLIN)
        self.send("ready", 0, os.getpid())
        while True:
            for fd, _ in poller.poll():
                if fd == wake:
                    while True:
                        try:
                            if not os.read(self.wake_r, 512):
                                break
                        except BlockingIOError:
                            break
                    self.reap()
                elif not self.receive():
                    self.shutdown()
                    return

    def receive(self) -> bool:
        try:
            data, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, 2)
        except InterruptedError:
            return True
        except OSError:  # reset by a worker that went away: as good as EOF
            return False
        if not data:
            return False
        try:
            request = decode(data)
            if request[0] == "kill":
                self.kill(request[1])
            elif request[0] == "run":
                self.start(request, fds)
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def start(self, request: tuple[Any, ...], fds: list[int]) -> None:
        token = request[1]
        if len(fds) != 2:
            self.send("error", token, "expected two output descriptors")
            return
        env = environment_changes(self.environ, request[4])
        code = self.compiled_script(request[3])
        try:
            pid = os.fork()
        except OSError as exc:
            self.send("error", token, f"fork failed: {exc}")
            return
        if pid == 0:
            _child(request, env, code, fds[0], fds[1])
        self.running[pid] = token
        self.pids[token] = pid
        self.send("started", token, pid)

    def compiled_script(self, script: str) -> Any:
        """The script's code, compiled here once per source text; None for the child
        to compile: a large script, or one that does not compile or warns (the child
        reports either on the run's stderr)."""
        try:
            fd = os.open(script, os.O_RDONLY | os.O_CLOEXEC)
            try:
                source = os.read(fd, MAX_CACHED_SOURCE + 1)
                if len(source) > MAX_CACHED_SOURCE or os.read(fd, 1):
                    return None
            finally:
                os.close(fd)
        except OSError:
            return None
        code = self.compiled.pop(source, None)
        if code is None:
            import warnings

            with warnings.catch_warnings(record=True) as warned:
                warnings.simplefilter("always")
                try:
                    code = compile(source, script, "exec", dont_inherit=True)  # as _run_script does
                except Exception:  # SyntaxError, ValueError (a null byte), RecursionError, ...
                    return None
            if warned:
                return None
            while self.compiled and (
                len(self.compiled) >= CACHED_SCRIPTS or self.compiled_bytes + len(source) > CACHED_SOURCE_BYTES
            ):
                oldest = next(iter(self.compiled))
                del self.compiled[oldest]
                self.compiled_bytes -= len(oldest)
            self.compiled_bytes += len(source)
            gc.freeze()  # as in warm_up: the children's collections leave it alone
        self.compiled[source] = code
        return code

    def kill(self, token: int) -> None:
        pid = self.pids.get(token)
        if pid is None:
            return
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # not yet (or no longer) a group leader
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def reap(self, tell: bool = True) -> None:
        """Collect exited children and tell the worker (or, shutting down, only
        collect them: their directories and cgroups are still to be removed)."""
        while self.running:
            try:
                # Peek first: while the exited child is a zombie its pid, and so its
                # process group id, cannot be reused; kill what the run left in its
                # group, then collect it.
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                if info is None:
                    return
                try:
                    os.killpg(info.si_pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                pid, status = os.waitpid(info.si_pid, 0)
            except ChildProcessError:
                self.running.clear()
                return
            token = self.running.pop(pid, None)
            if token is not None and tell:
                del self.pids[token]
                self.send("exit", token, status)

    def shutdown(self) -> None:
        """The worker is gone (it would have cleaned up after each run): kill what
        still runs and remove the runs' directories (in use or kept for reuse) and
        cgroups."""
        for token in list(self.pids):
            self.kill(token)
        import shutil
        import time

        deadline = time.monotonic() + 2.0
        while self.running and time.monotonic() < deadline:
            self.reap(tell=False)
            time.sleep(0.01)
        if self.workdirs:
            shutil.rmtree(self.workdirs, ignore_errors=True)
        if self.cgroups:
            # The runs' cgroups (in use or kept for reuse), then the worker's own.
            try:
                names = os.listdir(self.cgroups)
            except OSError:
                names = []
            for name in names:
                if name.startswith("run-"):
                    try:
                        os.rmdir(os.path.join(self.cgroups, name))
                    except OSError:
                        pass
            try:
                os.rmdir(self.cgroups)
            except OSError:
                pass


def warm_up() -> None:
    """Do once here what every child would otherwise repeat on its own copy-on-write
    pages: the compiler's first use initialises its tables, and freezing the heap
    keeps the children's collections from touching (and so copying) it."""
    import atexit  # noqa: F401 - imported by every child at exit

    compile("pass", "<warm-up>", "exec")
    gc.collect()
    gc.freeze()


def main() -> None:
    fd, workdirs, cgroups = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    for module in sys.argv[4:]:
        __import__(module)
    warm_up()
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    server = Server(sock, workdirs, "" if cgroups == "-" else cgroups)
    try:
        server.serve()
    except OSError:  # the worker is gone while we were answering it
        server.shutdown()


if __name__ == "__main__":
    main()
