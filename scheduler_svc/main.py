"""scheduler_svc entry point: gRPC AuthService/JobService/RunService plus the
materializer, dispatcher, reaper/reconciler and partition-maintenance loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from datetime import timedelta

from aiohttp import web
from redis.exceptions import RedisError

from core.auth import AccountStates, Authenticator, TokenCodec, check_secret
from core.dispatch_queue import DispatchQueue
from core.http import metrics_app, start_http
from core.ids import new_id
from core.logs import configure_logging
from core.loops import run_loop
from core.peers import parse_networks
from core.process import run_service, settle_heap, wait_for_shutdown_signal
from core.redis_client import create_redis
from core.rpc import RpcServer, ServiceInterceptor, create_server, stop_server
from core.settings import Settings
from db.engine import Database
from db.partitions import maintain_partitions
from db.repositories.jobs import JobRepository
from db.repositories.login_throttle import LoginThrottleRepository
from db.repositories.run_history import RunHistoryRepository
from db.repositories.run_lifecycle import RunLifecycleRepository
from db.repositories.runs import RunRepository
from db.repositories.schedules import ScheduleRepository
from db.repositories.users import UserRepository
from scheduler_svc.accounts import Accounts
from scheduler_svc.auth_servicer import PUBLIC_METHODS, AuthServicer
from scheduler_svc.dispatcher import Dispatcher
from scheduler_svc.job_servicer import JobServicer
from scheduler_svc.jobs import Jobs
from scheduler_svc.materializer import Materializer, MaterializerConfig
from scheduler_svc.reaper import Reaper
from scheduler_svc.run_history import RunHistory
from scheduler_svc.run_servicer import RunServicer
from scheduler_svc.runs import Runs

log = logging.getLogger("scheduler_svc")
PARTITION_MAINTENANCE_SECONDS = 600.0
LOGIN_THROTTLE_CLEANUP_SECONDS = 600.0


class SchedulerApp:
    """Everything scheduler_svc runs, built from settings; tests start it in-process."""

    def __init__(self, settings: Settings) -> None:
        check_secret(settings.auth)
        self.settings = settings
        self.db = Database.from_url(settings.database.database_url, settings.database.db_pool_size)
        self.redis = create_redis(settings.redis)
        self.dispatch = DispatchQueue(self.redis)
        codec = TokenCodec(settings.auth)
        self.codec = codec
        self.users = UserRepository(self.db)
        # Authentication reads each account's current role, token version and
        # disabled flag; Accounts tells it at once when it changes one.
        self.account_states = AccountStates(self.users.account_state)
        self.login_attempts = LoginThrottleRepository(self.db)
        self.accounts = Accounts(self.users, self.login_attempts, codec, self.account_states, settings.auth)
        self.run_repo = RunRepository(self.db)
        self.run_lifecycle = RunLifecycleRepository(self.db)
        self.job_repo = JobRepository(self.db)
        sched = settings.scheduler
        self.jobs = Jobs(self.job_repo, self.run_repo, timedelta(seconds=sched.misfire_grace_seconds))
        self.runs = Runs(self.run_repo, self.jobs, self.dispatch)
        self.run_history = RunHistory(RunHistoryRepository(self.db))
        self.scheduler_id = f"{socket.gethostname()}-{os.getpid()}-{new_id()[-6:]}"
        self.materializer = Materializer(
            ScheduleRepository(self.db),
            MaterializerConfig(
                lookahead=timedelta(seconds=sched.lookahead_seconds),
                misfire_grace=timedelta(seconds=sched.misfire_grace_seconds),
                run_all_cap=sched.misfire_run_all_cap,
                batch_size=sched.batch_size,
            ),
        )
        self.dispatcher = Dispatcher(
            self.run_lifecycle, self.dispatch, timedelta(seconds=sched.dispatch_ahead_seconds), sched.batch_size
        )
        self.reaper = Reaper(
            self.run_lifecycle,
            self.dispatch,
            timedelta(seconds=settings.worker.heartbeat_ttl_seconds),
            timedelta(seconds=sched.requeue_after_seconds),
            sched.batch_size,
        )
        self.rpc: RpcServer | None = None
        self._http: web.AppRunner | None = None
        self.metrics_port = 0
        self._stop = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []

    async def start(self, loops: bool = True) -> int:
        """Serve gRPC (and, with ``loops``, run the scheduling loops); returns the port."""
        await self.accounts.ensure_admin(self.settings.auth.admin_email, self.settings.auth.admin_password)
        interceptor = ServiceInterceptor(Authenticator(self.codec, self.account_states), public=PUBLIC_METHODS)
        self.rpc = await create_server(
            f"{self.settings.server.host}:{self.settings.server.scheduler_port}",
            [
                AuthServicer(self.accounts, parse_networks(self.settings.auth.trusted_proxies)).spec(),
                JobServicer(self.jobs).spec(),
                RunServicer(self.runs, self.run_history).spec(),
            ],
            [interceptor],
        )
        self._http, self.metrics_port = await start_http(
            metrics_app(), self.settings.server.host, self.settings.server.scheduler_metrics_port
        )
        if loops:
            self.start_loops()
        return self.rpc.port

    def start_loops(self) -> None:
        sched = self.settings.scheduler
        stop = self._stop
        self._loops = [
            asyncio.create_task(
                run_loop(
                    "materializer",
                    self.materializer.tick,
                    sched.materializer_interval_seconds,
                    stop,
                    sched.batch_size,
                    self._heartbeat,
                )
            ),
            asyncio.create_task(
                run_loop("dispatcher", self.dispatcher.tick, sched.dispatcher_interval_seconds, stop, sched.batch_size)
            ),
            asyncio.create_task(run_loop("reaper", self.reaper.tick, sched.reaper_interval_seconds, stop)),
            asyncio.create_task(run_loop("partitions", self._partitions, PARTITION_MAINTENANCE_SECONDS, stop)),
            asyncio.create_task(
                run_loop("login-throttle", self.accounts.forget_idle_attempts, LOGIN_THROTTLE_CLEANUP_SECONDS, stop)
            ),
        ]

    async def _heartbeat(self) -> None:
        await self.dispatch.scheduler_heartbeat(self.scheduler_id)

    async def _partitions(self) -> int:
        db_settings = self.settings.database
        await maintain_partitions(self.db, db_settings.partition_ahead_hours, db_settings.run_retention_hours)
        return 0

    async def stop(self) -> None:
        self._stop.set()
        if self.rpc is not None:
            await stop_server(self.rpc, self.settings.server.shutdown_grace_seconds)
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._http is not None:
            await self._http.cleanup()
        with contextlib.suppress(RedisError, OSError):  # Redis may be gone; nothing depends on this cleanup
            await self.dispatch.scheduler_gone(self.scheduler_id)
        await self.job_repo.close()
        self.accounts.close()
        await self.redis.aclose()
        await self.db.close()


async def serve(settings: Settings) -> None:
    app = SchedulerApp(settings)
    port = await app.start()
    log.info("scheduler %s serving gRPC on %s:%d", app.scheduler_id, settings.server.host, port)
    settle_heap()
    print(
        f"scheduler_svc ready grpc={settings.server.host}:{port} metrics=http://{settings.server.host}:{app.metrics_port}/metrics",
        flush=True,
    )
    await wait_for_shutdown_signal()
    log.info("shutting down")
    await app.stop()


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings.server.log_level, settings.server.log_json, "scheduler")
    run_service(serve(settings))


if __name__ == "__main__":
    main()
