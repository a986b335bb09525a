"""jobmesh on a Redis Cluster of three masters (private redis-servers on free ports,
asking for a password): every script and MULTI touches one slot (a queue's keys share
its hash tag), a batch whose runs are of queues on different nodes works, cancels
published reach a worker subscribed on any node, and the engine's invariant tests and
the REST flow pass unchanged against the cluster (re-run with
JOBMESH_TEST_REDIS_CLUSTER=true)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from core import keys
from core.dispatch_queue import DispatchQueue
from core.domain import LogStream, Run, RunStatus, RunTrigger
from core.redis_client import create_redis
from core.settings import RedisSettings
from tests.support.redis_servers import redis_cluster

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[2]
SLOT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PASSWORD = "cluster-secret"  # the nodes ask for it: credentials reach every node the client learns


@pytest.fixture(scope="session")
def cluster_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    with redis_cluster(tmp_path_factory.mktemp("redis-cluster"), password=PASSWORD) as ports:
        yield ports


def cluster_url(ports: list[int], node: int = 0) -> str:
    return f"redis://:{PASSWORD}@127.0.0.1:{ports[node]}/0"


@pytest.fixture
async def cluster(cluster_ports: list[int]) -> AsyncIterator[RedisCluster]:
    client = create_redis(RedisSettings(redis_url=cluster_url(cluster_ports), redis_cluster=True))
    assert isinstance(client, RedisCluster)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


def queue_keys(queue: str, worker: str, run: str) -> list[str]:
    return [
        keys.queue(queue),
        keys.processing(queue, worker),
        keys.inflight(queue),
        keys.cancel_flag(queue, run),
        keys.run_log_channel(queue, run),
    ]


def two_queues_on_two_nodes(cluster: RedisCluster) -> tuple[str, str]:
    """Two queue names whose slots are served by different masters."""
    owner: dict[str, str] = {}
    for i in range(100):
        name = f"q{i}"
        node = cluster.get_node_from_key(keys.queue(name))
        assert node is not None
        owner.setdefault(node.name, name)
        if len(owner) == 2:
            first, second = owner.values()
            return first, second
    raise AssertionError("no two queues on two nodes")


def run_of(run_id: str, queue: str) -> Run:
    return Run(run_id, "job", 1, RunStatus.QUEUED, RunTrigger.SCHEDULE, SLOT, SLOT, queue=queue)


def test_the_keys_of_a_queue_share_one_slot_and_the_mesh_keys_another() -> None:
    for queue in ("default", "emails", "q-1_x"):
        assert len({key_slot(k.encode()) for k in queue_keys(queue, "w-1", "run-1")}) == 1
    mesh = [keys.WORKERS, keys.SCHEDULERS, keys.QUEUES, keys.worker_info("w-1")]
    assert len({key_slot(k.encode()) for k in mesh}) == 1


async def test_a_worker_batch_over_queues_on_two_nodes_goes_through_without_crossslot(
    cluster: RedisCluster,
) -> None:
    dispatch = DispatchQueue(cluster)
    first, second = two_queues_on_two_nodes(cluster)
    runs = [run_of(f"r{i}", (first, second)[i % 2]) for i in range(6)]
    await dispatch.push(runs, SLOT)
    assert await dispatch.in_flight(runs) == [True] * 6
    assert await dispatch.queue_depths() == {first: 3, second: 3}
    raws = await dispatch.pop_many("w", first, 10) + await dispatch.pop_many("w", second, 10)
    assert len(raws) == 6
    # A stopping worker gives two back (one per queue), then takes them again.
    back = [(raws[0], first), (raws[-1], second)]
    assert await dispatch.requeue("w", back) == 2
    assert await dispatch.queue_depths() == {first: 1, second: 1}
    assert await dispatch.pop_blocking("w", first, 1.0) == raws[0]
    assert await dispatch.pop_blocking("w", second, 1.0) == raws[-1]
    await dispatch.request_cancel([runs[1]])
    assert await dispatch.started(runs) == [False, True, False, False, False, False]
    await dispatch.append_output([(r.id, r.queue, 0, [(LogStream.STDOUT, f"out {r.id}\n".encode())]) for r in runs])
    by_id = {keys.QueueMessage.decode(raw).run_id: raw for raw in raws}
    await dispatch.finished("w", [(r.id, RunStatus.SUCCEEDED, by_id[r.id]) for r in runs])
    assert await dispatch.in_flight(runs) == [False] * 6
    for run in runs:
        log = await dispatch.read_run_log(run.queue, run.id, "0", None)
        assert [(e.kind, e.data) for e in log] == [
            ("status", "RUNNING"),
            (LogStream.STDOUT, f"out {run.id}\n"),
            ("end", "SUCCEEDED"),
        ]
    for queue in (first, second):
        assert await cluster.llen(keys.processing(queue, "w")) == 0


async def test_a_dead_workers_lists_on_two_nodes_go_back_to_their_queues(cluster: RedisCluster) -> None:
    dispatch = DispatchQueue(cluster)
    first, second = two_queues_on_two_nodes(cluster)
    runs = [run_of(f"d{i}", (first, second)[i % 2]) for i in range(5)]
    await dispatch.push(runs, SLOT)
    await dispatch.pop_many("dead", first, 10)
    await dispatch.pop_many("dead", second, 10)
    await dispatch.worker_heartbeat("dead", True, 1.0)
    assert await dispatch.requeue_processing("dead") == 5
    assert await dispatch.queue_depths() == {first: 3, second: 2}
    assert await dispatch.workers_alive(60) == ["dead"]
    assert await dispatch.unsandboxed(["dead"]) == []


async def test_a_cancel_published_reaches_a_subscriber_whatever_node_it_listens_on(
    cluster: RedisCluster, cluster_ports: list[int]
) -> None:
    publishers = [
        create_redis(RedisSettings(redis_url=cluster_url(cluster_ports, node), redis_cluster=True))
        for node in range(len(cluster_ports))
    ]
    received: list[str] = []

    async def listen() -> None:
        async for run_id in DispatchQueue(cluster).cancel_requests():
            received.append(run_id)

    listener = asyncio.create_task(listen())
    try:
        for n, publisher in enumerate(publishers):
            run = run_of(f"c{n}", "default")
            for _ in range(100):  # until the subscription is in place
                await DispatchQueue(publisher).request_cancel([run])
                if run.id in received:
                    break
                await asyncio.sleep(0.05)
            assert run.id in received
            assert await publisher.exists(keys.cancel_flag("default", run.id)) == 1
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        for publisher in publishers:
            await publisher.aclose()


def rerun(cluster_ports: list[int], *tests: str) -> None:
    """``tests`` in a pytest of their own, against the cluster."""
    env = dict(os.environ, JOBMESH_TEST_REDIS=cluster_url(cluster_ports, 1), JOBMESH_TEST_REDIS_CLUSTER="true")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *tests],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def test_the_engine_invariants_hold_on_the_cluster(cluster_ports: list[int]) -> None:
    rerun(cluster_ports, "tests/integration/test_engine.py", "tests/integration/test_dispatch_queue.py")


def test_the_rest_flow_runs_on_the_cluster(cluster_ports: list[int]) -> None:
    rerun(cluster_ports, "tests/e2e/test_rest.py::test_original_http_flow")
