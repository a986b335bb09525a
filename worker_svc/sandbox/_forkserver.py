"""The fork server: a small helper process that forks one child per run.

The worker starts it once (``python -I -u -c ...`` with this directory on
``sys.path``; arguments: the socket's descriptor, the worker's directory of run
directories, its cgroup directories joined by ``:`` or ``-``, the modules to
preload) with a clean environment; it imports only what it needs to fork and
isolate (``_runner``), plus the preloaded modules, and never touches the network,
the database, any secret, or any script: it holds nothing of any user. Requests
arrive on a SOCK_SEQPACKET Unix socket, one ``marshal``-encoded message each, with
the run's stdout/stderr pipe ends attached as SCM_RIGHTS:

    worker → helper  ("run", token, workdir, script, env, cgroup_procs, uid, gid, limits, sandbox)
                     + [out_fd, err_fd] (see ``_runner``)
                     ("kill", token)
    helper → worker  ("ready", 0, pid) once, then per run
                     ("started", token, pid) (unsandboxed runs) and ("exit", token, wait_status),
                     or ("error", token, message)

An unsandboxed run is a fork of the helper (``_runner.run``). A sandboxed run goes to
the sandbox of its uid, made by the helper on that uid's first run and kept (see
"A slot's sandbox" in ``_runner``): the helper passes it the run's pipes, the
worker's copy of the script and the run's cgroups as open descriptors, and passes
its report back. Scripts are compiled in their own run: a cache of compiled scripts
in the helper would put every user's source into every other user's run's memory.

The helper is single-threaded, so forking is safe. Children are reaped in the main
loop (SIGCHLD only wakes it through the wakeup fd), so no message is ever written
from a signal handler; what a run left in its process group is killed before its
exit is reported. On EOF from the worker (the worker exited or was killed) the
helper kills every running child's group and exits; a run's processes also die
with the helper (parent-death signals).
"""

from __future__ import annotations

import gc
import os
import select
import signal
import socket
import sys

if __package__:  # imported by the worker (or its tests)
    from worker_svc.sandbox import _runner
else:  # the helper process: this directory is on sys.path
    import _runner  # type: ignore[import-not-found,no-redef]

TYPE_CHECKING = False  # typing stays out of the helper (and so out of every script)

if TYPE_CHECKING:
    from typing import Any

encode, decode, MAX_MESSAGE = _runner.encode, _runner.decode, _runner.MAX_MESSAGE


class Server:
    """Everything a request touches between two forks is copied on write (in the
    helper, and in every child still running): the loop keeps that small."""

    def __init__(self, sock: socket.socket, workdirs: str, cgroups: list[str]) -> None:
        self.sock = sock
        self.running: dict[int, int] = {}  # pid -> token
        self.pids: dict[int, int] = {}  # token -> pid
        # The worker's directory of run directories and its cgroup directory ("" if
        # none), removed when the worker is gone; a directory not named as the
        # worker's own is never removed.
        self.workdirs = workdirs if os.path.basename(workdirs).startswith(f"jobmesh-{os.getppid()}-") else ""
        self.cgroups = cgroups
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # Each (uid, host network)'s sandbox: its init's pid and socket; the token it runs.
        self.slots: dict[tuple[int, bool], tuple[int, socket.socket]] = {}
        self.slot_of: dict[int, tuple[int, bool]] = {}  # token -> slot
        self.slot_runs: dict[int, int] = {}  # slot socket fd -> token running there
        self.poller: Any = None

    def send(self, *fields: Any) -> None:
        self.sock.sendall(encode(*fields))

    def serve(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when runs stop
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        self.poller = poller = select.epoll()
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
                elif fd != requests:
                    self.from_slot(fd)
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
        if request[9] is not None:
            self.start_in_slot(request, fds)
            return
        try:
            pid = os.fork()
        except OSError as exc:
            self.send("error", token, f"fork failed: {exc}")
            return
        if pid == 0:
            # Nothing of the helper's state goes on into the run.
            self.running.clear()
            self.pids.clear()
            _runner.run(request, fds[0], fds[1])
        self.running[pid] = token
        self.pids[token] = pid
        self.send("started", token, pid)

    def start_in_slot(self, request: tuple[Any, ...], fds: list[int]) -> None:
        """A sandboxed run goes to its uid's sandbox (made on its first run), with the
        worker's copy of the script and the run's cgroups as open descriptors: the
        helper reads neither."""
        _, token, _, script, env, cgroup_procs, uid, gid, limits, sandbox = request
        new_root, scratch_bytes, host_network, read_only = sandbox
        key = (uid, bool(host_network))
        opened: list[int] = []
        try:
            slot = self.slots.get(key)
            if slot is None:
                slot = self.slots[key] = _runner.start_slot(uid, gid, new_root, host_network, read_only)
                self.poller.register(slot[1].fileno(), select.EPOLLIN)
            opened.append(os.open(script, os.O_RDONLY | os.O_CLOEXEC))
            opened += [os.open(procs, os.O_WRONLY | os.O_CLOEXEC) for procs in cgroup_procs]
            message = encode("run", token, env, limits, scratch_bytes, uid, gid)
            socket.send_fds(slot[1], [message], [*fds, *opened])
        except OSError as exc:
            self.send("error", token, f"the run's sandbox could not start it: {exc}")
            return
        finally:
            for fd in opened:
                os.close(fd)
        self.slot_of[token] = key
        self.slot_runs[slot[1].fileno()] = token

    def from_slot(self, fd: int) -> None:
        """A slot's report (the exit of its run), passed on; or its end."""
        key = next((k for k, (_, sock) in self.slots.items() if sock.fileno() == fd), None)
        if key is None:
            return
        sock = self.slots[key][1]
        try:
            data = sock.recv(MAX_MESSAGE)
        except OSError:
            data = b""
        if data:
            message = decode(data)
            self.slot_of.pop(message[1], None)
            self.slot_runs.pop(fd, None)
            if message[0] == "exit" and not message[3]:
                self.retire_slot(key)  # before the next run of the uid can be sent there
            self.send(*message[:3])
            return
        # The slot's init is gone (killed from outside): fail its run; the next run
        # of its uid makes a new one.
        self.retire_slot(key)
        token = self.slot_runs.pop(fd, None)
        if token is not None:
            self.slot_of.pop(token, None)
            self.send("error", token, "the run's sandbox exited")

    def retire_slot(self, key: tuple[int, bool]) -> None:
        """Forget a slot's sandbox (its init exits, or has): the next run of its uid
        gets a new one."""
        _, sock = self.slots.pop(key)
        self.poller.unregister(sock.fileno())
        sock.close()

    def kill(self, token: int) -> None:
        key = self.slot_of.get(token)
        if key is not None and key in self.slots:
            try:
                self.slots[key][1].send(encode("kill", token))
            except OSError:
                pass
            return
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
        while True:
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
            token = self.running.pop(pid, None)  # None: a slot's init (its socket tells)
            if token is not None and tell:
                del self.pids[token]
                self.send("exit", token, status)

    def shutdown(self) -> None:
        """The worker is gone (it would have cleaned up after each run): kill what
        still runs and remove the runs' directories (in use or kept for reuse) and
        cgroups."""
        for token in list(self.pids):
            self.kill(token)
        for pid, sock in self.slots.values():  # each kills its runs and exits
            sock.close()
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        import shutil
        import time

        deadline = time.monotonic() + 2.0
        while self.running and time.monotonic() < deadline:
            self.reap(tell=False)
            time.sleep(0.01)
        for pid, _ in self.slots.values():
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        if self.workdirs:
            shutil.rmtree(self.workdirs, ignore_errors=True)
        for root in self.cgroups:  # the runs' cgroups (in use or kept for reuse), then the worker's own
            _runner.remove_cgroup_tree(root)


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
    server = Server(sock, workdirs, [] if cgroups == "-" else cgroups.split(":"))
    try:
        server.serve()
    except OSError:  # the worker is gone while we were answering it
        server.shutdown()


if __name__ == "__main__":
    main()
