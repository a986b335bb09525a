"""Isolation of script runs, the same tests for both real executors: the fork
server (default) and a fresh interpreter per run."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.polling import wait_for
from tests.support.sandbox import LIMITS, SANDBOX, processes_of_runs
from worker_svc.sandbox import (
    OUTPUT_GATHER_SECONDS,
    ExecResult,
    ExecutorError,
    ForkServerExecutor,
    IsolatingExecutor,
    Outcome,
    Sandbox,
    SubprocessExecutor,
)

UNSANDBOXED = Sandbox(enabled=False)


@pytest.fixture(params=["forkserver", "subprocess"])
async def executor(request: pytest.FixtureRequest) -> AsyncIterator[IsolatingExecutor]:
    kind = ForkServerExecutor if request.param == "forkserver" else SubprocessExecutor
    chosen: IsolatingExecutor = kind(LIMITS, SANDBOX)
    yield chosen
    await chosen.close()


async def run(executor: IsolatingExecutor, source: str, timeout: float = 10.0) -> ExecResult:
    return await executor.run(source, timeout, asyncio.Event())


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_output_exit_codes_and_errors_like_an_interpreter(executor: IsolatingExecutor) -> None:
    ok = await run(executor, "import sys\nprint('out', __name__)\nprint('err', file=sys.stderr)")
    assert (ok.outcome, ok.exit_code, ok.stdout, ok.stderr) == (Outcome.SUCCEEDED, 0, "out __main__\n", "err\n")
    code = await run(executor, "import sys\nprint('before')\nsys.exit(3)")
    assert (code.outcome, code.exit_code, code.error, code.stdout) == (Outcome.FAILED, 3, "exit status 3", "before\n")
    message = await run(executor, "raise SystemExit('no config found')")
    assert (message.exit_code, message.error) == (1, "no config found")
    raised = await run(executor, "def f():\n    raise ValueError('bad input')\nf()")
    assert (raised.outcome, raised.exit_code, raised.error) == (Outcome.FAILED, 1, "ValueError: bad input")
    assert "Traceback" in raised.stderr and 'job.py", line 3' in raised.stderr
    syntax = await run(executor, "def broken(:\n")
    assert syntax.outcome is Outcome.FAILED and syntax.error.startswith("SyntaxError")
    assert syntax.stderr.startswith('  File "') and 'job.py", line 1' in syntax.stderr, "as an interpreter prints it"
    killed = await run(executor, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert (killed.exit_code, killed.error) == (-9, "killed by signal SIGKILL")


async def test_a_script_compiles_as_in_a_fresh_interpreter(executor: IsolatingExecutor) -> None:
    # No __future__ import of the executor's own code reaches the script.
    result = await run(executor, "def f(x: int) -> None: ...\nprint(f.__annotations__)")
    assert result.stdout == "{'x': <class 'int'>, 'return': None}\n", result.stderr


async def test_tracebacks_start_in_the_script_and_name_its_own_file(executor: IsolatingExecutor) -> None:
    script = "import os\ndef fail():\n    raise ValueError(__file__ == fail.__code__.co_filename)\nfail()\n"
    results = await asyncio.gather(*(run(executor, script) for _ in range(3)))
    for result in results:
        [path] = {line.split('"')[1] for line in result.stderr.splitlines() if line.strip().startswith("File")}
        assert path.endswith("/job.py") and not os.path.exists(path)  # noqa: ASYNC240
        assert f'File "{path}", line 4' in result.stderr and f'File "{path}", line 3, in fail' in result.stderr
        assert result.error == "ValueError: True" and "<string>" not in result.stderr, "no frame of the executor's"


async def test_a_script_that_runs_again_runs_as_the_first_time(executor: IsolatingExecutor) -> None:
    # Each run compiles its own source: it names its own file, and what the compiler
    # warns reaches every run's stderr.
    script = "def where():\n    return __file__ == where.__code__.co_filename\nprint(where(), __file__)\n"
    results = [await run(executor, script) for _ in range(2)]
    results += await asyncio.gather(*(run(executor, script) for _ in range(3)))
    assert [r.stdout for r in results] == ["True /job/job.py\n"] * 5, [r.stderr for r in results]
    for _ in range(2):
        warned = await run(executor, "x = 1\nprint(x is 1)\n")
        assert warned.stdout == "True\n" and 'job.py:2: SyntaxWarning: "is" with a literal' in warned.stderr


async def test_exit_runs_atexit_joins_threads_and_flushes_files(executor: IsolatingExecutor) -> None:
    script = (
        "import atexit, os, threading, time\n"
        "atexit.register(lambda: print('atexit', open('data.txt').read()))\n"
        "handle = open('data.txt', 'w')\n"
        "handle.write('unflushed')\n"
        "threading.Thread(target=lambda: (time.sleep(0.2), print('thread done'))).start()\n"
        "print('main done')\n"
    )
    result = await run(executor, script)
    assert result.outcome is Outcome.SUCCEEDED, result.stderr
    assert result.stdout.splitlines() == ["main done", "thread done", "atexit "]


async def test_a_clean_process_environment(executor: IsolatingExecutor) -> None:
    os.environ["JOBMESH_SECRET_FOR_TEST"] = "leak"
    try:
        script = (
            "import os, sys\n"
            "print(sorted(os.environ))\n"
            "print(os.getcwd())\n"
            "print(os.getsid(0) == os.getpid() == os.getpgid(0))\n"
            "print(repr(sys.stdin.read()))\n"
            "print(sorted(int(fd) for fd in os.listdir('/proc/self/fd')))\n"
            "import resource\n"
            "print(resource.getrlimit(resource.RLIMIT_NOFILE), resource.getrlimit(resource.RLIMIT_CORE))\n"
            "print(sys.argv[0] == __file__, os.path.dirname(__file__) == os.getcwd())\n"
        )
        result = await run(executor, script)
    finally:
        del os.environ["JOBMESH_SECRET_FOR_TEST"]
    assert result.outcome is Outcome.SUCCEEDED, result.stderr
    names, cwd, leader, stdin, fds, limits, argv = result.stdout.splitlines()
    assert names == str(sorted(["HOME", "LANG", "LC_ALL", "PATH", "PYTHONDONTWRITEBYTECODE", "TMPDIR"]))
    assert cwd == "/job", "its own directory, in its own root"
    assert leader == "True", "own session and process group"
    assert stdin == "''"
    assert fds == "[0, 1, 2, 3]", "nothing inherited but stdio (3 is the listing itself)"
    assert limits == "(128, 128) (0, 0)"
    assert argv == "True True"


async def test_timeout_kills_the_whole_group(executor: IsolatingExecutor) -> None:
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    result = await run(executor, script, timeout=1.5)
    assert (result.outcome, result.error) == (Outcome.TIMED_OUT, "timed out after 1.5 s")
    assert processes_of_runs() == [], "the run and everything it started are gone when run() returns"


async def test_cancel_stops_a_running_script_at_once(executor: IsolatingExecutor) -> None:
    cancel = asyncio.Event()
    seen: list[bytes] = []

    def on_output(stream: str, chunk: bytes) -> None:
        seen.append(chunk)
        if b"".join(seen).endswith(b"\n"):  # print() may write the text and the newline apart
            cancel.set()

    loop = asyncio.get_running_loop()
    began = loop.time()
    result = await executor.run("import time\nprint('started', flush=True)\ntime.sleep(60)", 60, cancel, on_output)
    assert (result.outcome, result.error, result.stdout) == (Outcome.CANCELLED, "cancelled", "started\n")
    assert b"".join(seen) == b"started\n" and loop.time() - began < 5


async def test_output_streams_live_and_the_tail_is_kept(executor: IsolatingExecutor) -> None:
    arrivals: list[tuple[str, bytes]] = []
    first_line_at: list[float] = []
    loop = asyncio.get_running_loop()

    def on_output(stream: str, chunk: bytes) -> None:
        arrivals.append((stream, chunk))
        if not first_line_at and b"".join(c for _, c in arrivals).startswith(b"one\n"):
            first_line_at.append(loop.time())

    began = loop.time()
    script = "import time\nprint('one')\ntime.sleep(1.0)\nprint('x' * 10000)\nprint('last')"
    result = await executor.run(script, 10, asyncio.Event(), on_output)
    ended = loop.time()
    assert result.outcome is Outcome.SUCCEEDED
    assert first_line_at[0] - began < ended - began - 0.8, "the first line arrives before the end"
    assert {stream for stream, _ in arrivals} == {"stdout"}
    assert b"".join(chunk for _, chunk in arrivals).endswith(b"last\n")
    assert result.stdout_truncated and len(result.stdout) == LIMITS.output_cap_bytes
    assert result.stdout.endswith("x\nlast\n")


async def test_limits_stop_memory_hogs_and_fork_bombs(executor: IsolatingExecutor) -> None:
    hog = await run(executor, "data = bytearray(4 * 1024 ** 3)\nprint('allocated')")
    assert hog.outcome is Outcome.FAILED and "MemoryError" in hog.error
    bomb = "import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)\n"
    result = await run(executor, bomb, timeout=2)
    assert result.outcome is Outcome.TIMED_OUT
    after = await run(executor, "print('still fine')")
    assert after.stdout == "still fine\n"


async def test_run_cgroups_are_emptied_reused_and_removed_on_close() -> None:
    executor = ForkServerExecutor(LIMITS, UNSANDBOXED)  # the sandbox hides the cgroup's path
    root = executor.cgroups.get("pids")
    if root is None:
        await executor.close()
        pytest.skip("no writable pids cgroup hierarchy here (not root)")
    try:
        where = "print([l for l in open('/proc/self/cgroup') if 'pids' in l.split(':')[1]])"
        first = await run(executor, where)
        leaker = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n" + where
        second = await run(executor, leaker)
        # One cgroup, used again.
        assert first.stdout == second.stdout and os.path.basename(root) in first.stdout
        # The orphan that left the process group was killed before its cgroup was reused.
        [cgroup] = [name for name in os.listdir(root) if name.startswith("run-")]
        assert _read(os.path.join(root, cgroup, "cgroup.procs")) == ""
    finally:
        await executor.close()
    assert os.path.basename(root) not in os.listdir(os.path.dirname(root))


async def test_concurrent_runs_keep_their_own_output(executor: IsolatingExecutor) -> None:
    script = (
        "import uuid, time\nme = uuid.uuid4()\nfor i in range(3):\n    print(me, i, flush=True)\n    time.sleep(0.05)\n"
    )
    results = await asyncio.gather(*(run(executor, script) for _ in range(12)))
    for result in results:
        lines = result.stdout.split()
        assert result.outcome is Outcome.SUCCEEDED and len(set(lines[0::2])) == 1 and lines[1::2] == ["0", "1", "2"]
    assert len({r.stdout.split()[0] for r in results}) == 12


async def test_fork_server_death_fails_its_runs_and_it_comes_back() -> None:
    executor = ForkServerExecutor(LIMITS, SANDBOX)
    try:
        started = asyncio.Event()
        running = asyncio.create_task(
            executor.run(
                "import time\nprint('up', flush=True)\ntime.sleep(60)",
                60,
                asyncio.Event(),
                lambda stream, chunk: started.set(),
            )
        )
        await asyncio.wait_for(started.wait(), 10)
        assert executor.helper is not None
        os.kill(executor.helper.pid, signal.SIGKILL)
        with pytest.raises(ExecutorError, match="fork server exited"):
            await asyncio.wait_for(running, 10)
        again = await run(executor, "print('new helper')")
        assert again.stdout == "new helper\n"
    finally:
        await executor.close()


async def test_closing_the_fork_server_kills_runs_in_flight() -> None:
    executor = ForkServerExecutor(LIMITS, SANDBOX)
    output = bytearray()
    running = asyncio.create_task(
        executor.run(
            "import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(60)",
            60,
            asyncio.Event(),
            lambda stream, chunk: output.extend(chunk),
        )
    )
    await wait_for(lambda: output.endswith(b"\n"), timeout=10)
    helper = executor.helper
    await executor.close()  # as when the worker exits: the helper sees EOF
    assert helper is not None and helper.returncode is not None
    await wait_for(lambda: not processes_of_runs(), timeout=5)
    with pytest.raises(ExecutorError):
        await running


@pytest.mark.parametrize("kind", [ForkServerExecutor, SubprocessExecutor])
async def test_unsandboxed_run_directories_are_reused_only_when_nothing_of_the_run_is_left(
    kind: type[IsolatingExecutor],
) -> None:
    executor = kind(LIMITS, UNSANDBOXED)
    where = "import os\nprint(os.getcwd(), sorted(os.listdir('.')))\n"
    left_a_file = (await run(executor, where + "open('leftover.txt', 'w').write('x')")).stdout.split()[0]
    assert not os.path.exists(left_a_file), "a directory with something left in it is removed"  # noqa: ASYNC240
    opened_up = (await run(executor, where + "os.chmod('.', 0o755)")).stdout.split()[0]
    assert not os.path.exists(opened_up), "so is one whose mode the script changed"  # noqa: ASYNC240
    clean = (await run(executor, where)).stdout.split()[0]
    again = await run(executor, where)
    if executor.cgroups is not None:
        # Nothing of the clean run is left (its cgroup is empty): its emptied directory
        # serves the next run, which finds only its own script there.
        assert again.stdout == f"{clean} ['job.py']\n"
    else:
        # Without a cgroup a process the run left could still write there: never reused.
        assert not os.path.exists(clean) and again.stdout.split()[0] != clean  # noqa: ASYNC240
    await executor.close()
    assert not os.path.exists(os.path.dirname(clean)), "close removes the runs' directory"  # noqa: ASYNC240


@pytest.mark.parametrize("kind", [ForkServerExecutor, SubprocessExecutor])
async def test_runs_use_the_configured_directory_root(kind: type[IsolatingExecutor], tmp_path: Path) -> None:
    dead_workers = tmp_path / "jobmesh-999999999-abcdefgh"  # no such pid: left by a worker that died
    (dead_workers / "run-abcdefgh").mkdir(parents=True)
    alive = tmp_path / f"jobmesh-{os.getpid()}-abcdefgh"
    alive.mkdir()
    executor = kind(dataclasses.replace(LIMITS, workdir_root=str(tmp_path)), UNSANDBOXED)
    try:
        result = await run(executor, "import os\nprint(os.getcwd())")
    finally:
        await executor.close()
    assert result.stdout.startswith(f"{tmp_path}/jobmesh-{os.getpid()}-")
    assert os.listdir(tmp_path) == [alive.name], "its own directory removed on close, a dead worker's at start"


async def test_a_fork_server_that_cannot_start_says_so() -> None:
    broken = ForkServerExecutor(LIMITS, SANDBOX, ("no_such_module_for_jobmesh",))
    with pytest.raises(ExecutorError, match="did not start"):
        await broken.start()
    await broken.close()
    preloaded = ForkServerExecutor(LIMITS, SANDBOX, ("json",))
    try:
        await preloaded.start()
        result = await run(preloaded, "import sys\nprint('json' in sys.modules)")
    finally:
        await preloaded.close()
    assert result.stdout == "True\n"


async def test_output_is_written_line_by_line(executor: IsolatingExecutor) -> None:
    chunks: list[bytes] = []
    script = (
        "import sys, time\n"
        "for i in range(3):\n"
        "    print('n', i, 'of', 3)\n"
        "    time.sleep(0.2)\n"
        "sys.stdout.write('partial')\n"
    )
    result = await executor.run(script, 10, asyncio.Event(), lambda stream, chunk: chunks.append(chunk))
    assert result.stdout == "n 0 of 3\nn 1 of 3\nn 2 of 3\npartial"
    assert chunks[:3] == [b"n 0 of 3\n", b"n 1 of 3\n", b"n 2 of 3\n"], "one chunk per line, not per argument"


async def test_a_slow_reader_makes_the_script_wait_never_loses_its_output(executor: IsolatingExecutor) -> None:
    # As on a terminal or a file, the script's writes block: a worker that reads
    # late (busy, or stalled here for 0.3 s) costs the script time, not output.
    received: list[bytes] = []

    def on_output(stream: str, chunk: bytes) -> None:
        if not received:
            time.sleep(0.3)  # the pipe (64 KiB) fills meanwhile
        received.append(chunk)

    script = (
        "import os, sys\n"
        "print(os.get_blocking(1), os.get_blocking(2), file=sys.stderr)\n"
        "line = 'x' * 1023 + '\\n'\n"
        "for _ in range(2048):\n"
        "    sys.stdout.write(line)\n"
    )
    result = await executor.run(script, 30, asyncio.Event(), on_output)
    assert (result.outcome, result.stderr) == (Outcome.SUCCEEDED, "True True\n")
    assert len(b"".join(received)) == 2 * 1024 * 1024 + len("True True\n")


async def test_lines_printed_close_together_arrive_together_and_live(executor: IsolatingExecutor) -> None:
    arrivals: list[tuple[float, bytes]] = []
    loop = asyncio.get_running_loop()
    script = (
        "import time\nfor i in range(20):\n    print('tick', i)\n    time.sleep(0.002)\ntime.sleep(0.5)\nprint('end')\n"
    )
    result = await executor.run(
        script, 10, asyncio.Event(), lambda stream, chunk: arrivals.append((loop.time(), chunk))
    )
    ended = loop.time()
    assert result.stdout == "".join(f"tick {i}\n" for i in range(20)) + "end\n"
    ticks = [at for at, chunk in arrivals if b"tick" in chunk]
    assert len(ticks) < 10, f"20 lines in ~40 ms came in {len(ticks)} reads"
    assert ended - ticks[-1] > 0.3, "the lines arrived while the script ran, not at its end"


async def test_a_fast_writer_is_read_as_it_writes(executor: IsolatingExecutor) -> None:
    # Reading at most once per gathering interval would cap a script's output at one
    # pipe's worth per interval; a stream that fills up is read without waiting.
    reads: list[float] = []
    loop = asyncio.get_running_loop()
    script = "import sys\nline = 'y' * 1023 + '\\n'\nfor _ in range(8192):\n    sys.stdout.write(line)\n"
    result = await executor.run(script, 30, asyncio.Event(), lambda stream, chunk: reads.append(loop.time()))
    assert result.outcome is Outcome.SUCCEEDED
    gaps = [b - a for a, b in itertools.pairwise(reads)]
    quick = sum(gap < OUTPUT_GATHER_SECONDS / 2 for gap in gaps)
    assert quick > len(gaps) / 2, f"{quick} of {len(gaps)} reads followed the previous one within half an interval"


async def test_a_sandbox_that_dies_fails_its_run_and_is_made_again() -> None:
    executor = ForkServerExecutor(LIMITS, SANDBOX)
    try:
        started = asyncio.Event()
        running = asyncio.create_task(
            executor.run("import time\nprint('up', flush=True)\ntime.sleep(60)", 60, asyncio.Event(),
                         lambda stream, chunk: started.set())
        )  # fmt: skip
        await asyncio.wait_for(started.wait(), 10)
        assert executor.helper is not None
        helper = executor.helper.pid
        children = Path(f"/proc/{helper}/task/{helper}/children").read_text().split()  # noqa: ASYNC240
        [init] = [int(pid) for pid in children]  # the run's sandbox (its script is that init's child)
        os.kill(init, signal.SIGKILL)
        with pytest.raises(ExecutorError, match="sandbox exited"):
            await asyncio.wait_for(running, 10)
        await wait_for(lambda: not processes_of_runs(), timeout=5)
        again = await run(executor, "print('new sandbox')")
        assert again.stdout == "new sandbox\n"
    finally:
        await executor.close()
