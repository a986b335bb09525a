"""What a run's own processes do, from the fork to the exit: the isolation, then
the script as ``__main__``.

Standard library only: the fork server and the fresh-interpreter bootstrap import
this file as a top-level module (its directory on ``sys.path``), the worker as
``worker_svc.sandbox._runner`` (for the request codec).

A request (``encode``d with ``marshal``, one per run)::

    ("run", token, workdir, script, env, cgroup_procs, uid, gid, limits, sandbox)

``sandbox`` is None (development only: the run works in ``workdir`` on the host,
as the worker's user; ``run``) or ``(new_root, scratch_bytes, host_network,
read_only)``. A sandboxed run executes in the sandbox of its uid (a slot, below):

- the slot's **init**, made once (``start_slot``): a clone into new mount, pid, ipc,
  uts and (unless ``host_network``) network namespaces, pid 1 there and still root.
  It mounts a small tmpfs at ``new_root`` holding read-only binds of ``read_only``
  (the system and the interpreter), device nodes and the mount points of the
  run's writable places, pivots into it (the host's tree is detached), mounts the
  namespace's ``/proc`` (``hidepid``: a run sees only its own processes) and makes
  the tree read-only;
- for each run, the **script's process**, forked by the init: its own session, the
  run's cgroups, a private copy of the mount tree (and a cgroup namespace) with one
  fresh tmpfs of ``scratch_bytes`` bound at ``/job`` (the working directory, with a
  copy of the script), ``/home/job``, ``/tmp``, ``/var/tmp`` and ``/dev/shm``; the
  rlimits, no-new-privs, an empty capability bounding set, the run's ``uid``/``gid``
  (no groups, no capabilities) and a seccomp filter; then the script;
- when the script ends, the init kills every other process of the namespace and
  removes every SysV and POSIX IPC object, and reports the script's wait status.

Nothing of the host but the read-only binds is reachable: no other process, no
file of the checkout or of another run, no host network (its own loopback only),
no cgroup file.
"""

from __future__ import annotations

import ctypes
import gc
import marshal
import os
import platform
import resource
import signal
import socket
import struct
import sys

TYPE_CHECKING = False  # typing stays out of the runs' processes

if TYPE_CHECKING:
    from typing import Any

MAX_MESSAGE = 1 << 16
# The order in which a request carries its limits: (resource, field of Limits, or
# None for 0).
LIMITS = (
    (resource.RLIMIT_CPU, "cpu_seconds"),
    (resource.RLIMIT_AS, "memory_bytes"),
    (resource.RLIMIT_NOFILE, "open_files"),
    (resource.RLIMIT_FSIZE, "file_size_bytes"),
    (resource.RLIMIT_NPROC, "processes"),
    (resource.RLIMIT_CORE, None),
)
# Where the run finds its things, inside its root.
RUN_DIR = "/job"
RUN_HOME = "/home/job"
RUN_SCRIPT = RUN_DIR + "/job.py"
SCRATCH = "/.scratch"  # where a slot's run mounts its writable tmpfs before binding its parts
HOSTNAME = b"jobmesh-run"

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 1, 24, 38, 22, 2
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
SIOCSIFFLAGS, IFF_UP = 0x8914, 0x1
SYS_MOUNT_SETATTR = {"x86_64": 442, "aarch64": 442}
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 1, 2, 4
SYS_CLONE = {"x86_64": 56, "aarch64": 220, "ppc64le": 120, "s390x": 120}
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "armv7l": 218, "ppc64le": 203, "s390x": 217}
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9))

SLOT_FD = 3  # a slot's init talks to its maker on this descriptor
_libc = ctypes.CDLL(None, use_errno=True)
_pylibc = ctypes.PyDLL(None, use_errno=True)  # holds the interpreter's lock: for clone


def encode(*fields: Any) -> bytes:
    return marshal.dumps(fields)


def decode(data: bytes) -> tuple[Any, ...]:
    message = marshal.loads(data)
    if not isinstance(message, tuple) or not message:
        raise ValueError("malformed fork-server message")
    return message


def _call(name: str, *args: Any) -> None:
    if getattr(_libc, name)(*args) != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{name}: {os.strerror(number)}")


def _mount(source: str | None, target: str, kind: str | None, flags: int, data: str | None = None) -> None:
    _call(
        "mount",
        source.encode() if source is not None else None,
        target.encode(),
        kind.encode() if kind is not None else None,
        ctypes.c_ulong(flags),
        data.encode() if data is not None else None,
    )


# Run process ------------------------------------------------------------------


def clone(flags: int) -> int:
    """fork() into new namespaces: ``os.fork`` around a raw clone(2), with the
    interpreter's own before/after-fork steps."""
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = _pylibc.syscall(SYS_CLONE[platform.machine()], ctypes.c_ulong(flags | signal.SIGCHLD), None, None, None, None)
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    number = ctypes.get_errno()
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(number, f"clone: {os.strerror(number)}")
    return int(pid)


def run(request: tuple[Any, ...], out_fd: int, err_fd: int) -> None:
    """An unsandboxed run's process (forked, or the fresh interpreter itself): its
    session, cgroups, environment and rlimits, then the script; exits as an
    interpreter would. Never returns."""
    _process(lambda: _run(request, out_fd, err_fd))


def _process(body: Any) -> None:
    """A run's process: ``body``'s status (127 if it fails before the script runs,
    with the traceback on the run's stderr), then exit. Never returns."""
    status = 127
    try:
        status = body()
    except BaseException:
        try:
            sys.excepthook(*sys.exc_info())
            sys.stderr.flush()
        except BaseException:
            pass
    finally:
        os._exit(status)


def _run(request: tuple[Any, ...], out_fd: int, err_fd: int) -> int:
    _, _, workdir, script, env, cgroup_procs, _, _, limits, _ = request
    _stdio(out_fd, err_fd)
    os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    if os.getsid(0) != os.getpid():
        os.setsid()
    _default_signals()
    for procs in cgroup_procs:
        _write(procs, b"%d" % os.getpid())
    os.chdir(workdir)
    return _the_script(env, limits, script, None)


def _stdio(out_fd: int, err_fd: int) -> list[int]:
    """/dev/null, ``out_fd`` and ``err_fd`` as 0, 1 and 2 (moved out of the way first:
    any may have one of those numbers)."""
    import fcntl

    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (os.open(os.devnull, os.O_RDONLY), out_fd, err_fd)]
    for number, fd in enumerate(moved):
        os.dup2(fd, number)
    return moved


def _the_script(env: dict[str, str], limits: list[int], script: str, ids: tuple[int, int] | None) -> int:
    """The last steps, the same on every path: the clean environment, the rlimits,
    the run's uid (sandboxed), then the script."""
    _set_environment(env)
    for (which, _), value in zip(LIMITS, limits, strict=True):
        resource.setrlimit(which, (value, value))
    if ids is not None:
        _drop_privileges(*ids)
    return run_script(script)


def _default_signals() -> None:
    # The C-level calls: signal.signal's enum conversions would touch (and copy)
    # pages of the fork server's heap in every child.
    import _signal  # type: ignore[import-not-found]

    signal.set_wakeup_fd(-1)
    _signal.signal(signal.SIGINT, signal.default_int_handler)
    for number in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP, signal.SIGPIPE):
        _signal.signal(number, _signal.SIG_DFL)


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _set_environment(env: dict[str, str]) -> None:
    for key in [key for key in os.environ if key not in env]:
        del os.environ[key]
    for key, text in env.items():
        if os.environ.get(key) != text:
            os.environ[key] = text
    cached = sys.modules.get("tempfile")
    if cached is not None:  # a preloaded module may have cached the helper's temp dir
        setattr(cached, "tempdir", None)  # noqa: B010


def _build_root(new_root: str, size: int, read_only: list[str], uid: int, gid: int) -> None:
    """In a new mount namespace: a tmpfs of ``size`` at ``new_root`` with the
    read-only binds, the run's directories and devices, made the root; with the
    ``/proc`` of the pid namespace it is in."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing of ours reaches the host
    inodes = max(1024, size // 4096)
    _mount("jobmesh-run", new_root, "tmpfs", MS_NOSUID, f"size={size},nr_inodes={inodes},mode=755")
    for path in read_only:
        _bind_read_only(path, new_root + path)
    _make_run_tree(new_root, uid, gid)
    os.chdir(new_root)
    if _libc.syscall(SYS_PIVOT_ROOT[platform.machine()], b".", b".") != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"pivot_root: {os.strerror(number)}")
    _call("umount2", b".", MNT_DETACH)  # the host's tree is gone from this namespace
    os.chdir("/")
    _mount_proc()


def _mount_proc() -> None:
    """The pid namespace's /proc, showing a run only its own processes (not the
    init's, which is root): hidepid=invisible, or 2 before Linux 5.8."""
    for hidepid in ("invisible", "2"):
        try:
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"hidepid={hidepid}")
            return
        except OSError:
            continue
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def _copy_script(source_fd: int, uid: int, gid: int) -> None:
    """The run's own copy of its script, read from the worker's."""
    fd = os.open(RUN_SCRIPT, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        while chunk := os.read(source_fd, 1 << 16):
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        os.fchown(fd, uid, gid)
    finally:
        os.close(fd)


def _bind_read_only(source: str, target: str) -> None:
    if os.path.islink(source):  # /bin -> usr/bin on a merged-/usr system
        os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
        os.symlink(os.readlink(source), target)
        return
    if os.path.isdir(source):
        os.makedirs(target, 0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o444))
    _mount(source, target, None, MS_BIND | MS_REC)
    _read_only_recursively(target)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]  # fmt: skip


def _read_only_recursively(target: str) -> None:
    """Read-only, nosuid, nodev: the bind and every mount under it (a remount would
    cover only the top one). mount_setattr(2), Linux 5.12; a remount before it."""
    number = SYS_MOUNT_SETATTR.get(platform.machine())
    if number is not None:
        attr = _MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, 0)
        if _libc.syscall(number, AT_FDCWD, target.encode(), AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr)) == 0:
            return
    _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


WRITABLE = ((RUN_DIR, 0o700, True), (RUN_HOME, 0o700, True), ("/tmp", 0o1777, False),
            ("/var/tmp", 0o1777, False), ("/dev/shm", 0o1777, False))  # fmt: skip


def _make_run_tree(root: str, uid: int, gid: int) -> None:
    for path, mode, owned in (*WRITABLE, ("/proc", 0o555, False), (SCRATCH, 0o700, False)):
        os.makedirs(root + path, 0o755, exist_ok=True)
        os.chmod(root + path, mode)
        if owned:
            os.chown(root + path, uid, gid)
    for name, major, minor in DEVICES:
        node = f"{root}/dev/{name}"
        os.mknod(node, 0o666 | 0o020000, os.makedev(major, minor))
        os.chmod(node, 0o666)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):  # fmt: skip
        os.symlink(target, f"{root}/dev/{name}")


# A slot's sandbox --------------------------------------------------------------------
#
# The fork server's fast path. Making namespaces and a root costs several times a
# run, so each uid (a slot: its runs never overlap) gets a sandbox made once: a
# process, the slot's init, that is pid 1 of the slot's pid, mount, ipc, network
# and uts namespaces, with the root built as above. For each run it forks the
# script's process, which takes a private copy of the mount namespace with a fresh
# tmpfs for every writable place, joins the run's cgroups, and drops to the uid;
# when the script ends, the init kills every other process of the namespace and
# removes every SysV and POSIX IPC object, so the next run finds the slot as made.
#
#   fork server → init  ("run", token, env, limits, scratch_bytes, uid, gid)
#                       + [out_fd, err_fd, script_fd, cgroup.procs fds...]
#                       ("kill", token)
#   init → fork server  ("exit", token, wait_status, reusable) or ("error", token, message);
#                       not reusable (a socket of the run is left, or the host's network):
#                       the init exits and the next run of the uid gets a new sandbox


def start_slot(uid: int, gid: int, new_root: str, host_network: bool, read_only: list[str]) -> tuple[int, Any]:
    """Make a slot's sandbox: (its init's pid, the socket to it)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | (0 if host_network else CLONE_NEWNET)
    try:
        pid = clone(flags)
    except BaseException:
        ours.close()
        theirs.close()
        raise
    if pid == 0:
        status = 1
        try:
            ours.close()
            _slot(theirs, uid, gid, new_root, flags, read_only)
            status = 0
        except BaseException:
            try:
                sys.excepthook(*sys.exc_info())
            except BaseException:
                pass
        finally:
            os._exit(status)
    theirs.close()
    return pid, ours


def _slot(sock: Any, uid: int, gid: int, new_root: str, flags: int, read_only: list[str]) -> None:
    """The slot's init: never returns but by an exception."""
    _call("prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # dies with the fork server
    os.dup2(sock.fileno(), SLOT_FD)
    sock.close()
    os.closerange(SLOT_FD + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    sock = socket.socket(fileno=SLOT_FD)
    _set_hostname_and_loopback(flags)
    _build_root(new_root, 1 << 20, read_only, uid, gid)
    os.makedirs("/dev/mqueue", 0o755, exist_ok=True)
    # The slot's tree is the same for every run: nothing writes into it (a run's
    # writable places are its own tmpfs, bound over their mount points).
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
    _mount("mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    import select

    poller = select.epoll()
    poller.register(sock.fileno(), select.EPOLLIN)
    poller.register(wake_r, select.EPOLLIN)
    running: tuple[int, int] | None = None  # (pid, token) of the run's script
    while True:
        for fd, _ in poller.poll():
            if fd == wake_r:
                while True:
                    try:
                        if not os.read(wake_r, 512):
                            break
                    except BlockingIOError:
                        break
                if running is not None:
                    status = _reap(running[0])
                    if status is not None:
                        # A sandbox on the host's network is never reused: its sockets
                        # cannot be told from the host's.
                        reusable = _empty_slot() and bool(flags & CLONE_NEWNET)
                        sock.sendall(encode("exit", running[1], status, reusable))
                        if not reusable:
                            return  # the fork server makes a new sandbox for the next run
                        running = None
                else:
                    _reap(-1)
                continue
            try:
                data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 3 + MAX_CGROUP_FDS)
            except InterruptedError:
                continue
            if not data:
                _kill_all()
                return
            message = decode(data)
            if message[0] == "kill":
                if running is not None and running[1] == message[1]:
                    _kill_all(reap=False)  # the script's status comes with SIGCHLD
                for fd in fds:
                    os.close(fd)
                continue
            try:
                pid = os.fork()
            except OSError as exc:
                for fd in fds:
                    os.close(fd)
                sock.sendall(encode("error", message[1], f"fork failed: {exc}"))
                continue
            if pid == 0:
                poller.close()
                os.close(wake_r)
                os.close(wake_w)
                _run_in_slot(message, fds)
            for fd in fds:
                os.close(fd)
            running = (pid, message[1])


MAX_CGROUP_FDS = 8  # a run carries one cgroup.procs descriptor per cgroup hierarchy it joins


def _reap(pid: int) -> int | None:
    """Collect every exited process; the wait status of ``pid`` if it was one."""
    found = None
    while True:
        try:
            child, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found
        if child == 0:
            return found
        if child == pid:
            found = status


def _kill_all(reap: bool = True) -> None:
    """Everything in the slot's pid namespace but its init (the caller), gone."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while reap:
        try:
            os.wait()
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def _empty_slot() -> bool:
    """After a run: no process of it left, no SysV or POSIX IPC object of it; True if
    no socket of it is left either (the sandbox can serve the next run)."""
    _kill_all()
    for kind in ("shm", "sem", "msg"):
        try:
            with open(f"/proc/sysvipc/{kind}") as fh:
                ids = [int(line.split()[1]) for line in fh.read().splitlines()[1:] if line.strip()]
        except OSError:
            continue
        for number in ids:
            if kind == "shm":
                _libc.shmctl(number, 0, None)  # IPC_RMID
            elif kind == "sem":
                _libc.semctl(number, 0, 0)
            else:
                _libc.msgctl(number, 0, None)
    for name in os.listdir("/dev/mqueue"):
        try:
            os.unlink("/dev/mqueue/" + name)
        except OSError:
            pass
    return _no_sockets_left()


def _no_sockets_left() -> bool:
    """Whether the namespace's network holds no socket (of any family, in any state,
    TIME_WAIT included), by its own counters (``/proc/net/sockstat``: cheap, where
    the socket tables would walk the host's). A run's sockets can outlive its
    processes, in flight in a unix socket that only the kernel's collector frees:
    closing a unix socket starts it, so this closes one and looks again a few times.
    TIME_WAIT lasts a minute: a sandbox with one is not reused."""
    import time

    for _ in range(20):
        try:
            with open("/proc/net/sockstat", "rb") as fh:
                fields = fh.read().split()
            used = int(fields[fields.index(b"used") + 1])
            time_wait = int(fields[fields.index(b"tw") + 1])
        except (OSError, ValueError):
            return False
        if used == 0 and time_wait == 0:
            return True
        if time_wait:
            return False
        first, second = socket.socketpair()
        first.close()
        second.close()
        time.sleep(0.005)
    return False


def _run_in_slot(message: tuple[Any, ...], fds: list[int]) -> None:
    """The script's process, forked by the slot's init (still root). Never returns."""
    _process(lambda: _enter_slot_run(message, fds))


def _enter_slot_run(message: tuple[Any, ...], fds: list[int]) -> int:
    _, _, env, limits, scratch_bytes, uid, gid = message
    import fcntl

    out, err, *rest = fds
    source, *cgroup_procs = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in rest]
    _stdio(out, err)
    os.setsid()
    _default_signals()
    for procs in cgroup_procs:
        os.write(procs, b"0")  # this process
        os.close(procs)
    _call("unshare", CLONE_NEWNS | CLONE_NEWCGROUP)  # its own copy of the slot's tree
    inodes = max(1024, scratch_bytes // 4096)
    _mount("jobmesh-run", SCRATCH, "tmpfs", MS_NOSUID | MS_NODEV, f"size={scratch_bytes},nr_inodes={inodes}")
    for path, mode, owned in WRITABLE:
        part = SCRATCH + "/" + path.strip("/").replace("/", "_")
        os.mkdir(part, mode)
        os.chmod(part, mode)
        if owned:
            os.chown(part, uid, gid)
        _mount(part, path, None, MS_BIND)
    _call("umount2", SCRATCH.encode(), MNT_DETACH)
    _copy_script(source, uid, gid)
    os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    os.chdir(RUN_DIR)
    return _the_script(env, limits, RUN_SCRIPT, (uid, gid))


def _set_hostname_and_loopback(made: int) -> None:
    """A new uts namespace gets the runs' host name, a new network namespace its
    loopback up (and nothing else)."""
    if made & CLONE_NEWUTS:
        _call("sethostname", HOSTNAME, len(HOSTNAME))
    if made & CLONE_NEWNET:
        _loopback_up()


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        import fcntl

        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", IFF_UP))


def _drop_privileges(uid: int, gid: int) -> None:
    """No way back to root: no-new-privs, an empty bounding set, then the run's ids
    (which clears the permitted, effective and ambient capabilities)."""
    _call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    _call("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    last = 40
    try:
        with open("/proc/sys/kernel/cap_last_cap", "rb") as fh:
            last = int(fh.read())
    except (OSError, ValueError):
        pass
    for capability in range(last + 1):
        _call("prctl", PR_CAPBSET_DROP, capability, 0, 0, 0)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    _seccomp()


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


# seccomp filter (x86_64): the few calls that would undo the sandbox from inside.
# A user namespace gives its creator every capability within it (and the kernel's
# widest attack surface); kernel keyrings are not namespaced (a channel between runs);
# io_uring bypasses the rest. clone3 answers ENOSYS, so the C library falls back to
# clone, whose flags a filter can read; x32 calls are refused.
_LD, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _EPERM, _ENOSYS = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
_X86_64_FILTER = (
    (_LD, 0, 0, 4), (_JEQ, 1, 0, 0xC000003E), (_RET, 0, 0, _EPERM),  # another architecture: refused
    (_LD, 0, 0, 0),
    (_JGE, 0, 1, 0x40000000), (_RET, 0, 0, _EPERM),  # x32
    (_JEQ, 0, 1, 250), (_RET, 0, 0, _EPERM),  # keyctl
    (_JEQ, 0, 1, 248), (_RET, 0, 0, _EPERM),  # add_key
    (_JEQ, 0, 1, 249), (_RET, 0, 0, _EPERM),  # request_key
    (_JEQ, 0, 1, 425), (_RET, 0, 0, _EPERM),  # io_uring_setup
    (_JEQ, 0, 1, 435), (_RET, 0, 0, _ENOSYS),  # clone3
    (_JEQ, 1, 0, 272), (_JEQ, 0, 3, 56),  # unshare or clone: their flags
    (_LD, 0, 0, 16), (_JSET, 0, 1, CLONE_NEWUSER), (_RET, 0, 0, _EPERM),
    (_RET, 0, 0, _ALLOW),
)  # fmt: skip


def _seccomp() -> None:
    if platform.machine() != "x86_64":
        return  # the namespaces and ids above still hold; this filter is x86_64's
    program = (_SockFilter * len(_X86_64_FILTER))(*(_SockFilter(*op) for op in _X86_64_FILTER))
    _call("prctl", PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(_SockFprog(len(program), program)), 0, 0)


# The script ---------------------------------------------------------------------


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


def run_script(script: str) -> int:
    """Runs ``script`` as ``__main__``, compiled here as an interpreter would."""
    main = type(sys)("__main__")
    main.__file__ = script
    main.__builtins__ = __builtins__  # type: ignore[attr-defined]
    sys.modules["__main__"] = main
    sys.argv = [script]
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [entry for entry in sys.path if entry != here]
    line_buffered()
    status = 0
    try:
        with open(script, "rb") as fh:
            # dont_inherit: this module's own __future__ imports are not the script's.
            code = compile(fh.read(), script, "exec", dont_inherit=True)
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


def remove_cgroup_tree(root: str) -> None:
    """Remove a worker's (emptied) cgroup directory and its runs' under it."""
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        if name.startswith("run-"):
            try:
                os.rmdir(os.path.join(root, name))
            except OSError:
                pass
    try:
        os.rmdir(root)
    except OSError:
        pass


def bootstrap() -> None:
    """The fresh-interpreter executor's entry: ``python -I -u -c ... REQUEST_HEX``,
    its stdout/stderr already the run's pipes. Unsandboxed, the interpreter is the
    run's process; sandboxed, it makes a slot's sandbox for this one run (as the fork
    server does once per uid), has it run the script, and exits as the script did."""
    request = decode(bytes.fromhex(sys.argv[1]))
    _, _, _, script, env, cgroup_procs, uid, gid, limits, sandbox = request
    if sandbox is None:
        run(request, 1, 2)
    new_root, scratch_bytes, host_network, read_only = sandbox
    _call("prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # dies with the worker
    out, err = os.dup(1), os.dup(2)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # the run's streams go to the script's process only
        os.dup2(null, fd)
    pid, sock = start_slot(uid, gid, new_root, host_network, read_only)
    opened = [os.open(script, os.O_RDONLY | os.O_CLOEXEC)]
    opened += [os.open(procs, os.O_WRONLY | os.O_CLOEXEC) for procs in cgroup_procs]
    socket.send_fds(sock, [encode("run", 1, env, limits, scratch_bytes, uid, gid)], [out, err, *opened])
    for fd in (out, err, *opened):
        os.close(fd)
    reply = sock.recv(MAX_MESSAGE)
    sock.close()  # the sandbox's init kills what is left and exits
    os.waitpid(pid, 0)
    kind, _, status, *_ = decode(reply) if reply else ("error", 1, 0)
    if kind != "exit":
        os._exit(127)
    if os.WIFSIGNALED(status):
        if os.WTERMSIG(status) not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
