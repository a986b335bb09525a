"""A run is a script from someone we do not trust. Each test runs a hostile script
through both real executors (the fork server and a fresh interpreter per run, with
the sandbox the worker uses by default) and asserts what it must not see or do;
one ordinary script shows that what a script may do still works."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.sandbox import LIMITS, SANDBOX, processes_of_runs
from worker_svc.sandbox import (
    HOST_NETWORK_REFUSED,
    ExecResult,
    ForkServerExecutor,
    IsolatingExecutor,
    Outcome,
    Sandbox,
    SubprocessExecutor,
)

ROOT = Path(__file__).resolve().parents[2]
KINDS = {"forkserver": ForkServerExecutor, "subprocess": SubprocessExecutor}


@pytest.fixture(params=list(KINDS))
async def executor(request: pytest.FixtureRequest) -> AsyncIterator[IsolatingExecutor]:
    chosen = KINDS[request.param](LIMITS, SANDBOX)
    yield chosen
    await chosen.close()


async def run(
    executor: IsolatingExecutor, source: str, timeout: float = 20.0, host_network: bool = False
) -> ExecResult:
    return await executor.run(source, timeout, asyncio.Event(), host_network=host_network)


def report(result: ExecResult) -> Any:
    """The last stdout line of a script that prints json.dumps(...) at its end."""
    assert result.outcome is Outcome.SUCCEEDED, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


async def test_an_ordinary_script_still_does_what_scripts_do(executor: IsolatingExecutor) -> None:
    script = """
import json, os, sqlite3, ssl, subprocess, sys, tempfile, threading
import yaml  # a library installed in the worker's Python
out = {}
out["child"] = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True).stdout
db = sqlite3.connect("data.db"); db.execute("create table t (x)"); db.execute("insert into t values (1)"); db.commit()
out["sqlite"] = db.execute("select count(*) from t").fetchone()[0]
out["ssl"] = ssl.create_default_context().cert_store_stats()["x509_ca"] > 0
with tempfile.NamedTemporaryFile("w", delete=False) as fh:
    fh.write("kept")
out["tmp"] = open(fh.name).read()
for where in (os.getcwd(), os.environ["HOME"], "/tmp", "/var/tmp", "/dev/shm"):
    with open(os.path.join(where, "mine.txt"), "w") as fh:
        fh.write(where)
out["files"] = sorted(os.listdir("."))
out["yaml"] = yaml.safe_load("a: 1")
t = threading.Thread(target=lambda: out.setdefault("thread", True)); t.start(); t.join()
print(json.dumps(out))
"""
    got = report(await run(executor, script))
    assert got == {"child": "42\n", "sqlite": 1, "ssl": True, "tmp": "kept", "files": ["data.db", "job.py", "mine.txt"],
                   "yaml": {"a": 1}, "thread": True}  # fmt: skip


async def test_1_a_run_is_an_unprivileged_uid_no_other_run_uses(executor: IsolatingExecutor) -> None:
    script = """
import ctypes, json, os, time
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
try:
    os.setuid(0)
    regained = True
except PermissionError:
    regained = False
time.sleep(0.5)  # all three at once
libc = ctypes.CDLL(None, use_errno=True)
# A user namespace would give back every capability within it; keyrings are shared by uid.
userns = libc.unshare(0x10000000) == 0
key = libc.syscall(248, b"user", b"k", b"v", 1, ctypes.c_int(-4)) >= 0  # add_key to the user keyring
print(json.dumps({"ids": [os.getuid(), os.geteuid(), os.getgid()], "groups": os.getgroups(), "regained": regained,
                  "userns": userns, "key": key,
                  "caps": [status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")],
                  "nnp": status["NoNewPrivs"].strip()}))
"""
    reports = [report(r) for r in await asyncio.gather(*(run(executor, script) for _ in range(3)))]
    uids = {r["ids"][0] for r in reports}
    assert len(uids) == 3, "three concurrent runs, three uids"
    for r in reports:
        uid = r["ids"][0]
        assert r["ids"] == [uid, uid, uid] and uid not in (0, os.getuid()), r
        assert r["groups"] == [] and r["regained"] is False and r["nnp"] == "1"
        assert r["userns"] is False and r["key"] is False, "no user namespace, no kernel keyring"
        assert r["caps"] == ["0000000000000000"] * 5, "no capability, none to gain"


async def test_2_a_run_sees_and_signals_no_other_process(executor: IsolatingExecutor) -> None:
    worker = os.getpid()  # the worker's own process, as a hostile script would look for it
    script = f"""
import json, os, signal
out = {{"procs": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()), "me": os.getpid()}}
for what, act in (("environ", lambda: open("/proc/{worker}/environ").read()),
                  ("kill", lambda: os.kill({worker}, signal.SIGKILL)),
                  ("init_environ", lambda: open("/proc/1/environ").read()),
                  ("init_kill", lambda: os.kill(1, signal.SIGKILL)),
                  ("parent_kill", lambda: os.kill(os.getppid(), signal.SIGKILL))):
    try:
        act()
        out[what] = "done"
    except OSError as exc:
        out[what] = type(exc).__name__
print(json.dumps(out))
"""
    got = report(await run(executor, script))
    assert got["procs"] == [got["me"]], "only itself (its sandbox's init is root: hidden)"
    assert got["environ"] == "FileNotFoundError" and got["kill"] == "ProcessLookupError", got
    assert got["init_environ"] == "FileNotFoundError" and got["init_kill"] == "PermissionError", got
    assert got["parent_kill"] == "PermissionError", got


async def test_3_a_run_sees_only_the_system_and_its_own_files(executor: IsolatingExecutor, tmp_path: Path) -> None:
    (tmp_path / "host-secret.txt").write_text("host")
    checks = {
        "checkout": str(ROOT / "core" / "auth.py"),
        "state": str(ROOT / ".jobmesh"),
        "host_tmp": str(tmp_path / "host-secret.txt"),
        "workers_dirs": str(Path(executor.runs_directory)),
        "root_home": "/root/.bash_history",
        "run_dir_of_the_host": "/run/jobmesh",
    }
    script = f"""
import json, os
out = {{name: os.path.exists(path) for name, path in {checks!r}.items()}}
out["tmp"] = os.listdir("/tmp")
out["checkout_dir"] = sorted(os.listdir({str(ROOT)!r})) if os.path.isdir({str(ROOT)!r}) else None
for target in ("/etc/evil", "/usr/evil", "/evil", {str(ROOT / "evil")!r}, "/home/evil"):
    try:
        open(target, "w").write("x")
        out[target] = "written"
    except OSError as exc:
        out[target] = type(exc).__name__
open("/tmp/secret-of-this-run", "w").write("mine")
print(json.dumps(out))
"""
    results = [report(r) for r in await asyncio.gather(*(run(executor, script) for _ in range(2)))]
    for got in results:
        assert not any(got[name] for name in checks), got
        assert got["tmp"] == [], "a private /tmp: no host file, no other run's file (two ran at once)"
        assert got["checkout_dir"] in (None, [".venv"]), "at most the interpreter's virtualenv of the checkout"
        for target in ("/etc/evil", "/usr/evil", "/evil", str(ROOT / "evil"), "/home/evil"):
            assert got[target] in ("PermissionError", "OSError", "FileNotFoundError"), (target, got[target])
    left = [path for path in (ROOT / "evil", Path("/etc/evil"), Path("/tmp/secret-of-this-run")) if path.exists()]
    assert left == [], "nothing written on the host; its /tmp was its own"


async def test_4_a_run_reaches_no_host_service_unless_allowed(executor: IsolatingExecutor) -> None:
    with socket.socket() as listener:  # a host service: the mesh's Redis or database would be the same
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        script = f"""
import json, socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
    print(json.dumps("connected"))
except OSError as exc:
    print(json.dumps(type(exc).__name__))
"""
        assert report(await run(executor, script)) == "ConnectionRefusedError", "its own loopback only"
        refused = await run(executor, script, host_network=True)
        assert (refused.outcome, refused.error, refused.stdout) == (Outcome.FAILED, HOST_NETWORK_REFUSED, "")
        allowing = type(executor)(LIMITS, SANDBOX.__class__(**{**vars(SANDBOX), "allow_host_network": True}))
        try:
            assert report(await run(allowing, script, host_network=True)) == "connected"
            assert report(await run(allowing, script)) == "ConnectionRefusedError", "only the jobs that ask"
        finally:
            await allowing.close()


async def test_5_a_run_cannot_leave_its_cgroup_or_lift_its_limits(executor: IsolatingExecutor) -> None:
    escape = """
import glob, json, os
out = {"cgroup": sorted(set(line.split(":")[2] for line in open("/proc/self/cgroup").read().split())), "written": []}
found = glob.glob("/sys/fs/cgroup/**/pids.max", recursive=True)
for path in found + glob.glob("/sys/fs/cgroup/**/cgroup.procs", recursive=True):
    try:
        open(path, "w").write("max" if path.endswith("pids.max") else str(os.getpid()))
        out["written"].append(path)
    except OSError:
        pass
out["sys"] = os.path.exists("/sys/fs/cgroup")
print(json.dumps(out))
"""
    got = report(await run(executor, escape))
    assert got == {"cgroup": ["/"], "written": [], "sys": False}, got
    if "pids" not in executor.cgroups:
        return
    # The next run (in the reused cgroup) still cannot fork past the limit.
    bomb = """
import json, os, time
children = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        children += 1
except OSError:
    pass
print(json.dumps(children))
"""
    children = report(await run(executor, bomb))
    assert isinstance(children, int) and 0 < children < LIMITS.processes


async def test_6_a_run_finds_nothing_of_another_run_in_its_memory(executor: IsolatingExecutor) -> None:
    first, second = "jobmesh-key-" + secrets.token_hex(8), secrets.token_hex(8)  # one secret, in two halves
    await run(executor, f"API_KEY = {first + second!r}\nprint('used', len(API_KEY))\n")
    await run(executor, "print('another job in between')\n")  # whatever a cache keeps, it keeps more than one
    # Reads every readable page of its own memory (the fork server's, if forked from
    # it) for the other run's secret; the halves are never joined in this script.
    scanner = f"""
import ctypes, json
first, second = {first.encode()!r}, {second.encode()!r}
found = 0
ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: its own /proc/self/mem, readable
with open("/proc/self/mem", "rb", buffering=0) as mem:
    for line in open("/proc/self/maps").read().splitlines():
        fields = line.split()
        if "r" not in fields[1] or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]", "[vvar_vclock]")):
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        try:
            mem.seek(start)
            data = mem.read(end - start)
        except (OSError, OverflowError, ValueError):
            continue
        at = data.find(first)
        while at >= 0:
            found += data[at + len(first):at + len(first) + len(second)] == second
            at = data.find(first, at + 1)
print(json.dumps(found))
"""
    assert report(await run(executor, scanner)) == 0


async def test_7_nothing_of_a_run_outlives_it(executor: IsolatingExecutor) -> None:
    marker = f"3600.{secrets.randbelow(10**9):09d}"
    script = f"""
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        for path in ("/sys/fs/cgroup/pids/cgroup.procs", "/sys/fs/cgroup/cgroup.procs"):
            try:
                open(path, "w").write(str(os.getpid()))  # leave the run's cgroup, as root could
            except OSError:
                pass
        os.execv("/bin/sleep", ["sleep", "{marker}"])
    os._exit(0)
time.sleep(0.5)
print("parent done")
"""
    result = await run(executor, script)
    assert result.outcome is Outcome.SUCCEEDED, result.stderr
    survivors = []
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():  # noqa: ASYNC240
                survivors.append(pid)
        except OSError:
            continue
    assert survivors == [], "the daemon died with its run"
    assert processes_of_runs() == []


@pytest.mark.parametrize("kind", list(KINDS))
async def test_the_next_run_of_a_uid_finds_nothing_of_the_last(kind: str) -> None:
    # One uid: every run of this executor uses it, one after another (the fork server
    # keeps that uid's sandbox, its namespaces and root, between them).
    executor = KINDS[kind](LIMITS, Sandbox(**{**vars(SANDBOX), "concurrency": 1}))
    leave = """
import ctypes, os, socket, subprocess, sys, time
libc = ctypes.CDLL(None, use_errno=True)
assert libc.shmget(0x4A4D, 4096, 0o1000 | 0o600) >= 0          # SysV shared memory (IPC_CREAT)
assert libc.msgget(0x4A4D, 0o1000 | 0o600) >= 0                # SysV message queue
assert libc.semget(0x4A4D, 1, 0o1000 | 0o600) >= 0             # SysV semaphore
assert libc.mq_open(b"/jobmesh-left", os.O_CREAT | os.O_RDWR, 0o600, None) >= 0  # POSIX message queue
for where in ("/tmp", "/var/tmp", "/dev/shm", os.environ["HOME"], "."):
    open(os.path.join(where, "left-behind"), "w").write("x")
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
listener = socket.socket(); listener.bind(("127.0.0.1", 4242)); listener.listen()
# Sockets in flight in a unix socket that holds itself: no process holds them any more.
abstract = socket.socket(socket.AF_UNIX); abstract.bind("\\0jobmesh-left"); abstract.listen()
parked = socket.socket(); parked.bind(("127.0.0.1", 4343)); parked.listen()
first, second = socket.socketpair()
socket.send_fds(first, [b"x"], [first.fileno(), second.fileno(), abstract.fileno(), parked.fileno()])
if os.fork() == 0:
    time.sleep(60)
print(os.getuid())
"""
    find = """
import ctypes, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
out = {"uid": os.getuid(), "procs": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()), "me": os.getpid(),
       "sysv": [libc.shmget(0x4A4D, 0, 0), libc.msgget(0x4A4D, 0), libc.semget(0x4A4D, 0, 0)],
       "mqueue": libc.mq_open(b"/jobmesh-left", os.O_RDWR, 0, None),
       "files": [w for w in ("/tmp", "/var/tmp", "/dev/shm", os.environ["HOME"], ".")
                 if os.path.exists(os.path.join(w, "left-behind"))]}
out["listeners"] = []
for family, address in ((socket.AF_INET, ("127.0.0.1", 4242)), (socket.AF_INET, ("127.0.0.1", 4343)),
                        (socket.AF_UNIX, "\\0jobmesh-left")):
    try:
        with socket.socket(family) as probe:
            probe.settimeout(1)
            probe.connect(address)
        out["listeners"].append(str(address))
    except OSError:
        pass
out["sockets"] = [t for t in ("unix", "tcp", "udp") if len(open(f"/proc/net/{t}").read().splitlines()) > 1]
print(json.dumps(out))
"""
    try:
        left = await run(executor, leave)
        assert left.outcome is Outcome.SUCCEEDED, left.stderr
        got = report(await run(executor, find))
    finally:
        await executor.close()
    assert got["uid"] == int(left.stdout), "the same uid, so the same sandbox"
    assert got["procs"] == [got["me"]], "no process of the last run"
    assert got["sysv"] == [-1, -1, -1] and got["mqueue"] == -1, "no IPC object of the last run"
    assert got["files"] == [] and got["listeners"] == [] and got["sockets"] == [], got


async def test_5_each_run_has_its_own_cgroups_with_a_fair_share_of_the_cpu(executor: IsolatingExecutor) -> None:
    if not executor.cgroups:
        pytest.skip("no writable cgroup hierarchy here (not root)")
    started = asyncio.Event()
    running = asyncio.create_task(
        executor.run("import time\nprint('up', flush=True)\ntime.sleep(30)", 60, asyncio.Event(),
                     lambda stream, chunk: started.set())
    )  # fmt: skip
    try:
        await asyncio.wait_for(started.wait(), 10)
        [pid] = processes_of_runs()
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()  # noqa: ASYNC240
        where = {line.split(":")[1]: line.split(":")[2] for line in lines}
        for controller in executor.cgroups:
            path = next(path for names, path in where.items() if controller in names.split(",") or names == "")
            assert "/jobmesh-" in path and "/run-" in path, (controller, path)
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    offered = {name for name in ("pids", "memory", "cpu") if Path("/sys/fs/cgroup", name).is_dir()}  # noqa: ASYNC240
    assert offered <= set(executor.cgroups), "each controller a cgroup v1 host offers"


async def test_5_a_run_cannot_use_more_memory_than_its_limit_in_many_processes() -> None:
    limits = dataclasses.replace(LIMITS, memory_bytes=512 * 1024**2)  # each process may have 512 MiB
    executor = ForkServerExecutor(limits, SANDBOX)
    try:
        if "memory" not in executor.cgroups:
            pytest.skip("no memory cgroup here")
        script = """
import json, os
children = []
for _ in range(4):  # 4 x 300 MiB: each under its RLIMIT_AS, together over the run's 512 MiB
    pid = os.fork()
    if pid == 0:
        block = bytearray(300 * 1024 * 1024)
        for i in range(0, len(block), 4096):
            block[i] = 1
        os._exit(0)
    children.append(pid)
print(json.dumps([os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]))
"""
        codes = report(await run(executor, script, timeout=60))
    finally:
        await executor.close()
    assert -9 in codes, f"the run's memory cgroup killed one of them: {codes}"
