"""worker_svc entry point: WorkerApp, a gRPC health endpoint and the worker loop."""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal
import socket
from collections.abc import Callable

from core.dispatch_queue import DispatchQueue
from core.ids import new_id
from core.logs import configure_logging, worker_id_var
from core.process import settle_heap, wait_for_shutdown_signal
from core.redis_client import create_redis
from core.rpc import RpcServer, create_server, stop_server
from core.settings import Settings
from db.engine import Database
from db.repositories.run_lifecycle import RunLifecycleRepository
from worker_svc.sandbox import (
    Executor,
    ExecutorError,
    ForkServerExecutor,
    Limits,
    NoopExecutor,
    Sandbox,
    SubprocessExecutor,
)
from worker_svc.worker import Worker, WorkerConfig

log = logging.getLogger("worker_svc")


def build_executor(settings: Settings) -> Executor:
    w = settings.worker
    if w.executor == "noop":
        return NoopExecutor()
    if w.executor not in ("forkserver", "subprocess"):
        raise SystemExit(f"JOBMESH_WORKER_EXECUTOR must be forkserver, subprocess or noop, not {w.executor!r}")
    limits = Limits(
        cpu_seconds=w.cpu_seconds,
        memory_bytes=w.memory_bytes,
        open_files=w.open_files,
        processes=w.processes,
        file_size_bytes=w.file_size_bytes,
        output_cap_bytes=w.output_cap_bytes,
        workdir_root=w.workdir_root,
    )
    if w.sandbox not in ("on", "off"):
        raise SystemExit(f"JOBMESH_WORKER_SANDBOX must be on or off, not {w.sandbox!r}")
    sandbox = Sandbox(
        enabled=w.sandbox == "on",
        allow_host_network=w.allow_host_network,
        uid_base=w.uid_base,
        uid_count=w.uid_count,
        scratch_bytes=w.scratch_bytes,
        concurrency=w.slots,
    )
    if not sandbox.enabled:
        log.warning(
            "JOBMESH_WORKER_SANDBOX=off: scripts run WITHOUT isolation, as this worker's user, with its files and "
            "network. Development only; never with scripts you do not trust."
        )
    if w.executor == "subprocess":
        return SubprocessExecutor(limits, sandbox)
    return ForkServerExecutor(limits, sandbox, tuple(m.strip() for m in w.preload.split(",") if m.strip()))


class WorkerApp:
    """Everything worker_svc runs, built from settings: the executor, the dispatch queue,
    the run repository, the worker loop and its gRPC health endpoint; tests start it in-process."""

    def __init__(
        self,
        settings: Settings,
        lifecycle: Callable[[Database], RunLifecycleRepository] = RunLifecycleRepository,
    ) -> None:
        w = settings.worker
        self.settings = settings
        self.worker_id = w.id or f"{socket.gethostname()}-{os.getpid()}-{new_id()[-6:]}"
        self.executor = build_executor(settings)
        self.db = Database.from_url(settings.database.database_url, max(2, w.slots))
        self.redis = create_redis(settings.redis)
        self.worker = Worker(
            WorkerConfig(
                worker_id=self.worker_id,
                queues=[q.strip() for q in w.queues.split(",") if q.strip()] or ["default"],
                slots=w.slots,
                heartbeat_seconds=w.heartbeat_seconds,
                shutdown_grace_seconds=settings.server.shutdown_grace_seconds,
                prefetch=w.prefetch,
                sandboxed=w.sandbox != "off",
            ),
            lifecycle(self.db),
            DispatchQueue(self.redis),
            self.executor,
        )
        self.rpc: RpcServer | None = None
        self._running: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Start the executor (ExecutorError when it cannot run scripts here), serve
        gRPC health and run the worker loop; returns the health port."""
        try:
            await self.executor.start()
        except ExecutorError:
            await self.executor.close()
            await self._close_stores()
            raise
        self.rpc = await create_server(f"{self.settings.server.host}:{self.settings.server.worker_port}")
        self._running = asyncio.create_task(self.worker.run())
        return self.rpc.port

    async def stop(self, grace: float | None = None) -> None:
        """Take no new runs, give the running ones ``grace`` seconds (default: the
        shutdown grace) before handing them back, then close everything."""
        log.info("stopping: no new runs; %d running", self.worker.busy)
        if self.rpc is not None:
            await self.rpc.health.enter_graceful_shutdown()
        self.worker.stop()
        await self.worker.hand_back_after(self.settings.server.shutdown_grace_seconds if grace is None else grace)
        if self._running is not None:
            await self._running
            log.info("worker loop stopped")
        if self.rpc is not None:
            await stop_server(self.rpc, 1.0)
        await self._close_stores()

    async def _close_stores(self) -> None:
        await self.redis.aclose()
        await self.db.close()


async def serve(settings: Settings) -> None:
    app = WorkerApp(settings)
    worker_id_var.set(app.worker_id)
    try:
        port = await app.start()
    except ExecutorError as exc:
        hint = (
            " The sandbox needs root with the capabilities to create namespaces (SYS_ADMIN), mount, switch uids "
            "and write cgroups. JOBMESH_WORKER_SANDBOX=off turns it off (development only: scripts then run "
            "unisolated)."
            if settings.worker.sandbox == "on"
            else ""
        )
        raise SystemExit(f"worker_svc: {exc}.{hint}") from exc
    settle_heap()
    w = settings.worker
    print(f"worker_svc ready id={app.worker_id} slots={w.slots} grpc={settings.server.host}:{port}", flush=True)
    await wait_for_shutdown_signal()
    await app.stop()
    log.info("stopped")


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings.server.log_level, settings.server.log_json, "worker")
    faulthandler.register(signal.SIGQUIT)  # dump stacks on SIGQUIT (diagnosing a stuck stop)
    # The worker keeps the standard loop: it starts processes (the fork server, or an
    # interpreter per run), which the standard loop does with vfork, while libuv forks
    # the whole (multi-threaded) worker.
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
