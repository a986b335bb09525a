"""WatchRun: live output in order, status changes, late joiners, the database fallback."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from core import keys, runlog
from core.dispatch_queue import DispatchQueue
from core.domain import LogStream
from gen.jobmesh.v1 import job_pb2, run_pb2
from tests.support.jobs import one_time
from tests.support.polling import wait_for
from tests.support.rpc import Client
from tests.support.scheduler import InProcessScheduler
from tests.support.workers import running_worker
from worker_svc.live_output import LiveOutput

SCRIPT = (
    "import sys, time\n"
    "for i in range(1, 6):\n"
    "    print(f'line {i}', flush=True)\n"
    "    time.sleep(0.3)\n"
    "print('done', file=sys.stderr)\n"
)
EXPECTED = "".join(f"line {i}\n" for i in range(1, 6))


async def first_run(user: Client, job_id: str, status: int | None = None) -> run_pb2.Run | None:
    page = await user.runs.ListRuns(run_pb2.ListRunsRequest(job_id=job_id), metadata=user.md)
    runs = [r for r in page.runs if status is None or r.status == status]
    return runs[0] if runs else None


async def collect(user: Client, run_id: str) -> list[tuple[float, run_pb2.WatchRunResponse]]:
    loop = asyncio.get_running_loop()
    events = []
    async for event in user.runs.WatchRun(run_pb2.WatchRunRequest(run_id=run_id), metadata=user.md):
        events.append((loop.time(), event))
    return events


async def watch_new_run(
    scheduler: InProcessScheduler, user: Client, worker_id: str, script: str
) -> list[tuple[float, Any]]:
    """Create a one-time job due now and watch its run from the start to the end."""
    async with running_worker(scheduler.app.settings, worker_id):
        job = await user.jobs.CreateJob(
            job_pb2.CreateJobRequest(job=one_time(datetime.now(UTC), script=script)), metadata=user.md
        )
        run = await wait_for(lambda: first_run(user, job.id))
        return await collect(user, run.id)


def text(events: list[tuple[float, run_pb2.WatchRunResponse]], stream: int) -> str:
    return "".join(e.chunk.data for _, e in events if e.WhichOneof("event") == "chunk" and e.chunk.stream == stream)


async def test_watch_streams_output_live_and_ends_with_the_final_status(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    scheduler.app.start_loops()
    events = await watch_new_run(scheduler, user, "w-watch", SCRIPT)
    kinds = [e.WhichOneof("event") for _, e in events]
    assert kinds[0] == "run" and kinds[-1] == "run"
    assert events[-1][1].run.status == run_pb2.RUN_STATUS_SUCCEEDED
    assert text(events, run_pb2.LOG_STREAM_STDOUT) == EXPECTED
    assert text(events, run_pb2.LOG_STREAM_STDERR) == "done\n"
    statuses = [e.run.status for _, e in events if e.WhichOneof("event") == "run"]
    assert run_pb2.RUN_STATUS_RUNNING in statuses
    chunk_times = [t for t, e in events if e.WhichOneof("event") == "chunk" and "line 1" in e.chunk.data]
    end_time = events[-1][0]
    assert chunk_times and end_time - chunk_times[0] > 1.0, "line 1 arrived while the run was still running"


async def test_late_joiners_get_everything(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    scheduler.app.start_loops()
    async with running_worker(scheduler.app.settings, "w-late"):
        job = await user.jobs.CreateJob(
            job_pb2.CreateJobRequest(job=one_time(datetime.now(UTC), script=SCRIPT)), metadata=user.md
        )
        # Joins mid-run: the lines already written come first.
        running = await wait_for(lambda: first_run(user, job.id, run_pb2.RUN_STATUS_RUNNING), timeout=15)
        await asyncio.sleep(0.8)
        mid = await collect(user, running.id)
        assert text(mid, run_pb2.LOG_STREAM_STDOUT) == EXPECTED
    # Joins after the end: output and final status, from the stream...
    after = await collect(user, running.id)
    assert text(after, run_pb2.LOG_STREAM_STDOUT) == EXPECTED
    assert [e.run.status for _, e in after if e.WhichOneof("event") == "run"][-1] == run_pb2.RUN_STATUS_SUCCEEDED
    # ...and from the database once Redis has forgotten it.
    await scheduler.app.redis.flushdb()
    stored = await collect(user, running.id)
    assert text(stored, run_pb2.LOG_STREAM_STDOUT) == EXPECTED
    assert text(stored, run_pb2.LOG_STREAM_STDERR) == "done\n"
    assert stored[-1][1].run.status == run_pb2.RUN_STATUS_SUCCEEDED


async def test_a_character_split_across_writes_arrives_whole(scheduler: InProcessScheduler) -> None:
    user = await scheduler.user()
    scheduler.app.start_loops()
    script = (
        "import sys, time\n"
        "sys.stdout.buffer.write('caf'.encode() + 'é'.encode()[:1]); sys.stdout.flush()\n"
        "time.sleep(0.3)\n"
        "sys.stdout.buffer.write('é'.encode()[1:] + b' ok\\n'); sys.stdout.flush()\n"
    )
    events = await watch_new_run(scheduler, user, "w-utf8", script)
    assert text(events, run_pb2.LOG_STREAM_STDOUT) == "café ok\n"


async def test_live_output_of_many_runs_is_appended_in_one_batch_in_order(redis: Redis) -> None:
    dispatch = DispatchQueue(redis)
    live = LiveOutput(dispatch)
    for run_id, kind, data in [
        ("r1", LogStream.STDOUT, "a1\n"),
        ("r2", LogStream.STDERR, "b1\n"),
        ("r1", LogStream.STDOUT, "a2\n"),
        ("r1", LogStream.STDERR, "a3\n"),
        ("r2", LogStream.STDERR, "b2\n"),
        ("r1", LogStream.STDOUT, "a4 é\n"),
    ]:
        live.put(run_id, "default", kind, data)
    await live.flush()
    await live.close()
    first = [(e.kind, e.data, e.offset) for e in await dispatch.read_run_log("default", "r1", "0", None)]
    second = [(e.kind, e.data, e.offset) for e in await dispatch.read_run_log("default", "r2", "0", None)]
    assert first == [(LogStream.STDOUT, "a1\na2\n", 0), (LogStream.STDERR, "a3\n", 6), (LogStream.STDOUT, "a4 é\n", 9)]
    assert second == [(LogStream.STDERR, "b1\nb2\n", 0)]
    for run_id in ("r1", "r2"):
        assert 0 < await redis.ttl(keys.run_log_channel("default", run_id)) <= runlog.TTL_SECONDS
