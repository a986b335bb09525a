"""scheduler_svc entry point: gRPC AuthService/JobService/RunService plus the
materializer, dispatcher, reaper/reconciler and partition-maintenance loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from datetime import timedelta

from redis.exceptions import RedisError

from core import keys
from core.auth import Authenticator, TokenCodec, check_secret
from core.ids import new_id
from core.logs import configure_logging
from core.loops import run_loop
from core.process import wait_for_shutdown_signal
from core.redis_client import create_redis
from core.rpc import ServiceInterceptor, create_server, stop_server
from core.settings import Settings
from db.engine import Database
from db.partitions import maintain_partitions
from db.repositories.jobs import JobRepository
from db.repositories.runs import RunRepository
from db.repositories.schedules import ScheduleRepository
from db.repositories.users import UserRepository
from gen.jobmesh.v1 import auth_pb2_grpc, job_pb2_grpc, run_pb2_grpc
from scheduler_svc.accounts import Accounts
from scheduler_svc.auth_servicer import PUBLIC_METHODS, AuthServicer
from scheduler_svc.dispatcher import Dispatcher
from scheduler_svc.job_servicer import JobServicer
from scheduler_svc.jobs import Jobs
from scheduler_svc.materializer import Materializer, MaterializerConfig
from scheduler_svc.reaper import Reaper
from scheduler_svc.run_servicer import RunServicer
from scheduler_svc.runs import Runs

log = logging.getLogger("scheduler_svc")
PARTITION_MAINTENANCE_SECONDS = 600.0


async def serve(settings: Settings) -> None:
    check_secret(settings.auth)
    db = Database.from_url(settings.database.database_url, settings.database.db_pool_size)
    redis = create_redis(settings.redis.redis_url)
    codec = TokenCodec(settings.auth)
    accounts = Accounts(UserRepository(db), codec, settings.auth)
    run_repo = RunRepository(db)
    jobs = Jobs(JobRepository(db), run_repo)
    runs = Runs(run_repo, jobs, redis)
    await accounts.ensure_admin(settings.auth.admin_email, settings.auth.admin_password)

    interceptor = ServiceInterceptor(Authenticator(codec), public=PUBLIC_METHODS)
    rpc = await create_server(
        f"{settings.server.host}:{settings.server.scheduler_port}",
        [
            (auth_pb2_grpc.add_AuthServiceServicer_to_server, AuthServicer(accounts), "jobmesh.v1.AuthService"),
            (job_pb2_grpc.add_JobServiceServicer_to_server, JobServicer(jobs), "jobmesh.v1.JobService"),
            (run_pb2_grpc.add_RunServiceServicer_to_server, RunServicer(runs), "jobmesh.v1.RunService"),
        ],
        [interceptor],
    )
    sched = settings.scheduler
    scheduler_id = f"{socket.gethostname()}-{os.getpid()}-{new_id()[-6:]}"
    materializer = Materializer(
        ScheduleRepository(db),
        MaterializerConfig(
            lookahead=timedelta(seconds=sched.lookahead_seconds),
            misfire_grace=timedelta(seconds=sched.misfire_grace_seconds),
            run_all_cap=sched.misfire_run_all_cap,
            batch_size=sched.batch_size,
        ),
    )
    dispatcher = Dispatcher(run_repo, redis, timedelta(seconds=sched.dispatch_ahead_seconds), sched.batch_size)
    reaper = Reaper(
        run_repo,
        redis,
        timedelta(seconds=settings.worker.heartbeat_ttl_seconds),
        timedelta(seconds=sched.requeue_after_seconds),
        sched.batch_size,
    )

    async def heartbeat() -> None:
        await redis.zadd(keys.SCHEDULERS, {scheduler_id: time.time()})

    async def partitions() -> int:
        await maintain_partitions(db, settings.database.partition_ahead_hours, settings.database.run_retention_hours)
        return 0

    stop = asyncio.Event()
    loops = [
        asyncio.create_task(
            run_loop(
                "materializer",
                materializer.tick,
                sched.materializer_interval_seconds,
                stop,
                sched.batch_size,
                heartbeat,
            )
        ),
        asyncio.create_task(
            run_loop("dispatcher", dispatcher.tick, sched.dispatcher_interval_seconds, stop, sched.batch_size)
        ),
        asyncio.create_task(run_loop("reaper", reaper.tick, sched.reaper_interval_seconds, stop)),
        asyncio.create_task(run_loop("partitions", partitions, PARTITION_MAINTENANCE_SECONDS, stop)),
    ]
    log.info("scheduler %s serving gRPC on %s:%d", scheduler_id, settings.server.host, rpc.port)
    print(f"scheduler_svc ready grpc={settings.server.host}:{rpc.port}", flush=True)
    await wait_for_shutdown_signal()
    log.info("shutting down")
    stop.set()
    await stop_server(rpc, settings.server.shutdown_grace_seconds)
    await asyncio.gather(*loops, return_exceptions=True)
    with contextlib.suppress(RedisError, OSError):  # Redis may be gone; nothing depends on this cleanup
        await redis.zrem(keys.SCHEDULERS, scheduler_id)
    await redis.aclose()
    await db.close()


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings.server.log_level, settings.server.log_json, "scheduler")
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
