"""A hostile script floods its output through the real worker (fork server, Redis,
MariaDB): the run's live log in Redis keeps only its newest LIVE_CAP_BYTES, readers
(late, or falling behind) are told what was dropped, the stored tail is intact, and
the worker's memory stays bounded, even while Redis takes nothing. And the append
itself holds the cap exactly, in bytes and in entries."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from core import keys, runlog
from core.dispatch_queue import DispatchQueue
from core.domain import LogStream
from core.settings import Settings
from gen.jobmesh.v1 import job_pb2, run_pb2
from tests.support.jobs import one_time
from tests.support.polling import wait_for
from tests.support.rpc import Client
from tests.support.scheduler import InProcessScheduler
from tests.support.services import REDIS_TEST_URL, make_settings
from tests.support.workers import running_worker
from worker_svc.live_output import LiveOutput

pytestmark = pytest.mark.timeout(60)

MIB = 1024 * 1024
LAST = "last line of the flood\n"
# Says it is ready, gives a watcher a moment to see it (or the test a moment to stall
# the worker's Redis), then floods 256 MiB in 1 MiB writes.
BIG_WRITES = (
    "import sys, time\n"
    "print('ready', flush=True)\n"
    "time.sleep(1.0)\n"
    "block = (b'x' * 1023 + b'\\n') * 1024\n"
    "for _ in range(256):\n"
    "    sys.stdout.buffer.write(block)\n"
    f"print({LAST[:-1]!r}, flush=True)\n"
)
BIG_WRITES_BYTES = len("ready\n") + 256 * MIB + len(LAST)
# 200 MiB in lines of 100 bytes (each its own write: the streams are line-buffered),
# stdout and stderr interleaved, so the live log gets many small entries.
SMALL_LINES = (
    "import sys\n"
    "line = 'y' * 99 + '\\n'\n"
    "out, err = sys.stdout.write, sys.stderr.write\n"
    "for i in range(2_097_152):\n"
    "    (err if i % 2 else out)(line)\n"
    f"print({LAST[:-1]!r}, flush=True)\n"
)
SMALL_LINES_BYTES = 2_097_152 * 100 + len(LAST)
# Room for the stream's own structures above the output it keeps.
STREAM_OVERHEAD_BYTES = 256 * 1024
# Growth of the worker's (this process's) peak RSS allowed during a flood: the pending
# output (at most LIVE_CAP_BYTES per run), one append in flight, the reads themselves.
WORKER_GROWTH_BYTES = 48 * MIB
MARKER = re.compile(r"\[output truncated: (\d+) bytes dropped\]\n")


@pytest.fixture
def settings(mysql_url: str) -> Settings:
    # A worker's Redis is stalled for seconds on purpose: it must not be taken for dead.
    return make_settings(mysql_url, worker__heartbeat_ttl_seconds=60.0)


def peak_rss_reset() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # resets VmHWM to the current RSS


def peak_rss() -> int:
    return _status_bytes("VmHWM")


def rss() -> int:
    return _status_bytes("VmRSS")


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


async def run_of(user: Client, job_id: str, status: int | None = None) -> run_pb2.Run | None:
    page = await user.runs.ListRuns(run_pb2.ListRunsRequest(job_id=job_id), metadata=user.md)
    runs = [r for r in page.runs if status is None or r.status == status]
    return runs[0] if runs else None


async def start(user: Client, script: str) -> str:
    job: job_pb2.Job = await user.jobs.CreateJob(
        job_pb2.CreateJobRequest(job=one_time(datetime.now(UTC), script=script, timeout_seconds=60)), metadata=user.md
    )
    return job.id


async def ended(user: Client, job_id: str) -> run_pb2.Run:
    run: run_pb2.Run = await wait_for(
        lambda: run_of(user, job_id, run_pb2.RUN_STATUS_SUCCEEDED), timeout=40, interval=0.2
    )
    return run


async def watch(user: Client, run_id: str) -> AsyncIterator[run_pb2.WatchRunResponse]:
    async for event in user.runs.WatchRun(run_pb2.WatchRunRequest(run_id=run_id), metadata=user.md):
        yield event


def output_of(events: list[run_pb2.WatchRunResponse]) -> tuple[str, str, list[int]]:
    """The output a watcher got: both streams in order, and stdout alone (markers
    removed), and the bytes each marker said were dropped."""
    chunks = [e.chunk for e in events if e.WhichOneof("event") == "chunk"]
    text = "".join(c.data for c in chunks)
    stdout = "".join(c.data for c in chunks if c.stream == run_pb2.LOG_STREAM_STDOUT)
    return MARKER.sub("", text), stdout, [int(n) for n in MARKER.findall(text)]


async def log_entries(redis: Redis, run_id: str) -> list[dict[bytes, bytes]]:
    """The fields of every entry of a run's live log, oldest first."""
    entries: Any = await redis.xrange(keys.run_log_channel("default", run_id))
    return [fields for _, fields in entries]


async def stdout_in_log(redis: Redis, run_id: str) -> bytes:
    return b"".join(f[b"d"] for f in await log_entries(redis, run_id) if f[b"k"] == b"out")


async def assert_log_capped(redis: Redis, run_id: str) -> None:
    entries = await log_entries(redis, run_id)
    kept = sum(len(f[b"d"]) for f in entries if f[b"k"] in (b"out", b"err"))
    assert 0 < kept <= runlog.LIVE_CAP_BYTES, f"the live log keeps {kept} bytes of output"
    assert len(entries) <= runlog.MAX_ENTRIES + 2  # + the status and end entries
    usage = await redis.memory_usage(keys.run_log_channel("default", run_id), samples=0)
    assert usage is not None and usage <= runlog.LIVE_CAP_BYTES + STREAM_OVERHEAD_BYTES, f"the live log uses {usage}"


async def assert_reader_told(user: Client, run_id: str, total: int) -> None:
    """A watcher joining after the end gets a marker for what was dropped, then the
    newest output, ending with the script's last line; nothing is unaccounted for."""
    events = [e async for e in watch(user, run_id)]
    text, stdout, dropped = output_of(events)
    assert events[-1].run.status == run_pb2.RUN_STATUS_SUCCEEDED
    assert len(dropped) == 1 and dropped[0] > 0
    first = next(e.chunk for e in events if e.WhichOneof("event") == "chunk")
    assert first.stream == run_pb2.LOG_STREAM_STDERR and MARKER.fullmatch(first.data)
    assert stdout.endswith(LAST)
    assert len(text.encode()) <= runlog.LIVE_CAP_BYTES
    assert dropped[0] + len(text.encode()) == total


async def assert_tail_stored(user: Client, run_id: str, cap: int) -> None:
    """The database has the run's captured tail: its last ``cap`` bytes of stdout."""
    logs = await user.runs.GetRunLogs(run_pb2.GetRunLogsRequest(run_id=run_id), metadata=user.md)
    assert logs.stdout.endswith(LAST) and logs.stdout_truncated
    assert len(logs.stdout.encode()) == cap


async def test_the_log_is_capped_exactly_in_bytes_and_entries_and_offsets_carry_on(redis: Redis) -> None:
    async def kept() -> tuple[int, int, int]:
        """Output bytes and entries in the log, and where its output ends."""
        entries = await log_entries(redis, "r-cap")
        last = entries[-1]
        return sum(len(f[b"d"]) for f in entries), len(entries), int(last[b"o"]) + len(last[b"d"])

    first = LiveOutput(DispatchQueue(redis))
    for _ in range(40):  # 4 MB, one append after another
        first.put("r-cap", "default", LogStream.STDOUT, "z" * 99_999 + "\n")
        await first.flush()
        size, _, _ = await kept()
        assert size <= runlog.LIVE_CAP_BYTES
    await first.finish("r-cap")
    await first.close()
    assert size > runlog.LIVE_CAP_BYTES - runlog.MAX_ENTRY_BYTES
    # The run handed back and run again by another worker: its output carries on.
    second = LiveOutput(DispatchQueue(redis))
    for i in range(6000):  # tiny entries, the two streams in turn
        second.put("r-cap", "default", LogStream.STDOUT if i % 2 else LogStream.STDERR, "a")
        if i % 100 == 99:
            await second.flush()
    await second.close()
    size, count, end = await kept()
    assert count == runlog.MAX_ENTRIES and size == runlog.MAX_ENTRIES
    assert end == 4_000_000 + 6000
    reader, missed = runlog.Continuity(), []
    for entry in await DispatchQueue(redis).read_run_log("default", "r-cap", "0", None):
        missed.append(reader.marker(entry))
    assert missed[0] == runlog.truncation_marker(4_000_000 + 1000) and not any(missed[1:])


async def test_a_flood_in_big_writes_keeps_only_the_newest_output(scheduler: InProcessScheduler, redis: Redis) -> None:
    user = await scheduler.user()
    scheduler.app.start_loops()
    async with running_worker(scheduler.app.settings, "w-flood-big", slots=1):
        base = rss()
        peak_rss_reset()
        job_id = await start(user, BIG_WRITES)
        queued = await wait_for(lambda: run_of(user, job_id))
        # A follower that reads the first line, then falls behind for the whole flood.
        follower = watch(user, queued.id)
        before = [event async for event in _until_first_chunk(follower)]
        run = await ended(user, job_id)
        growth = peak_rss() - base
        after = [event async for event in follower]
    assert growth <= WORKER_GROWTH_BYTES, f"the worker grew by {growth // MIB} MiB"
    await assert_log_capped(redis, run.id)
    assert before[-1].chunk.data == "ready\n"
    text, stdout, dropped = output_of(before + after)
    assert dropped and text.startswith("ready\n") and stdout.endswith(LAST)
    assert sum(dropped) + len(text.encode()) == BIG_WRITES_BYTES
    assert after[-1].run.status == run_pb2.RUN_STATUS_SUCCEEDED
    await assert_reader_told(user, run.id, BIG_WRITES_BYTES)
    await assert_tail_stored(user, run.id, scheduler.app.settings.worker.output_cap_bytes)


async def _until_first_chunk(
    events: AsyncIterator[run_pb2.WatchRunResponse],
) -> AsyncIterator[run_pb2.WatchRunResponse]:
    async for event in events:
        yield event
        if event.WhichOneof("event") == "chunk":
            return


async def test_a_flood_of_small_lines_keeps_only_the_newest_output(scheduler: InProcessScheduler, redis: Redis) -> None:
    user = await scheduler.user()
    scheduler.app.start_loops()
    async with running_worker(scheduler.app.settings, "w-flood-small", slots=1):
        base = rss()
        peak_rss_reset()
        run = await ended(user, await start(user, SMALL_LINES))
        growth = peak_rss() - base
    assert growth <= WORKER_GROWTH_BYTES, f"the worker grew by {growth // MIB} MiB"
    await assert_log_capped(redis, run.id)
    await assert_reader_told(user, run.id, SMALL_LINES_BYTES)


class StalledRedis:
    """A TCP proxy in front of the test Redis whose ``stall()`` stops passing on what
    its clients send (Redis answers nothing, for them alone) until ``resume()``."""

    def __init__(self) -> None:
        url = urlsplit(REDIS_TEST_URL)
        self._upstream = (url.hostname or "127.0.0.1", url.port or 6379)
        self._path = url.path
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._pipes: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> StalledRedis:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}{self._path}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.resume()
        assert self._server is not None
        self._server.close()
        for task in self._pipes:
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        for task in (self._pipe(reader, up_writer, gated=True), self._pipe(up_reader, writer, gated=False)):
            pipe = asyncio.create_task(task)
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, gated: bool) -> None:
        with contextlib.suppress(ConnectionError):
            try:
                while data := await src.read(65536):
                    if gated:
                        await self._flowing.wait()
                    dst.write(data)
                    await dst.drain()
            finally:
                dst.close()


async def test_the_worker_stays_bounded_while_redis_takes_nothing(scheduler: InProcessScheduler, redis: Redis) -> None:
    user = await scheduler.user()
    scheduler.app.start_loops()
    async with (
        StalledRedis() as stalled,
        running_worker(
            make_settings(scheduler.app.settings.database.database_url, redis__redis_url=stalled.url),
            "w-stalled",
            slots=1,
        ),
    ):
        job_id = await start(user, BIG_WRITES)
        run = await wait_for(lambda: run_of(user, job_id, run_pb2.RUN_STATUS_RUNNING), timeout=15)
        await wait_for(lambda: stdout_in_log(redis, run.id))  # "ready": the script floods in a second
        base = rss()
        peak_rss_reset()
        # The worker's Redis takes nothing (its appends wait) until the run has ended.
        stalled.stall()
        await ended(user, job_id)
        growth = peak_rss() - base
        stalled.resume()
        # The newest output still reaches the log once Redis takes it again.
        await wait_for(lambda: _ends_with_last(redis, run.id))
    assert growth <= WORKER_GROWTH_BYTES, f"the worker grew by {growth // MIB} MiB"
    await assert_log_capped(redis, run.id)
    await assert_reader_told(user, run.id, BIG_WRITES_BYTES)


async def _ends_with_last(redis: Redis, run_id: str) -> bool:
    return (await stdout_in_log(redis, run_id)).endswith(LAST.encode())
