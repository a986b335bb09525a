"""The ``jobmesh`` command: ``migrate``, ``partitions`` and ``up`` (the whole mesh
in the foreground, stopped cleanly by Ctrl-C / SIGTERM with no orphan left)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import Mapping
from urllib.parse import urlparse

from pydantic_settings import BaseSettings

from core.settings import (
    AuthSettings,
    DatabaseSettings,
    RedisSettings,
    SchedulerSettings,
    ServerSettings,
    Settings,
    WorkerSettings,
)

# Each process with the settings classes its main reads: it is handed only their
# JOBMESH_* variables. The worker runs untrusted scripts, so it never holds the JWT
# secret or the admin password; the gateway only forwards tokens to the scheduler.
PROCESSES: list[tuple[str, str, tuple[type[BaseSettings], ...]]] = [
    ("scheduler", "scheduler_svc.main",
     (DatabaseSettings, RedisSettings, AuthSettings, ServerSettings, SchedulerSettings, WorkerSettings)),
    ("worker", "worker_svc.main", (DatabaseSettings, RedisSettings, ServerSettings, WorkerSettings)),
    ("monitor", "monitor_svc.main", (DatabaseSettings, RedisSettings, ServerSettings, WorkerSettings)),
    ("gateway", "api_gateway.main", (ServerSettings,)),
]  # fmt: skip
STOP_TIMEOUT_SECONDS = 10.0
READY_TIMEOUT_SECONDS = 60.0


def setting_variables(classes: tuple[type[BaseSettings], ...]) -> set[str]:
    """The environment variables ``classes`` read (upper case: pydantic matches any case)."""
    return {f"{cls.model_config.get('env_prefix', '')}{name}".upper() for cls in classes for name in cls.model_fields}


def child_environment(
    environ: Mapping[str, str], classes: tuple[type[BaseSettings], ...], defaults: Mapping[str, str]
) -> dict[str, str]:
    """``environ`` without the JOBMESH_* variables that ``classes`` do not read (whatever
    else runs Python — PATH, HOME, LANG, PYTHON*, VIRTUAL_ENV — passes), plus ``defaults``
    for the allowed variables ``environ`` does not set."""
    allowed = setting_variables(classes)
    env = {k: v for k, v in environ.items() if not k.upper().startswith("JOBMESH_") or k.upper() in allowed}
    set_names = {k.upper() for k in env}
    env.update({k: v for k, v in defaults.items() if k.upper() in allowed and k.upper() not in set_names})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _migrate(settings: Settings) -> None:
    from db import migrate

    migrate.upgrade(settings.database.database_url)


async def _redis_answers(url: str) -> bool:
    from redis.asyncio import Redis

    client = Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        return bool(await client.ping())
    except Exception:
        return False
    finally:
        await client.aclose()


async def _ensure_redis(url: str) -> asyncio.subprocess.Process | None:
    """Start a private redis-server when none answers at ``url`` (a local one only)."""
    if await _redis_answers(url):
        return None
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    binary = shutil.which("redis-server")
    if host not in ("127.0.0.1", "localhost") or binary is None:
        raise SystemExit(f"Redis does not answer at {url} and no local redis-server can be started")
    print(f"jobmesh: starting a private redis-server on {host}:{port}", flush=True)
    proc = await asyncio.create_subprocess_exec(
        binary, "--bind", host, "--port", str(port), "--save", "", "--appendonly", "no",
        stdout=asyncio.subprocess.DEVNULL, env=child_environment(os.environ, (), {}),  # no JOBMESH_* at all
    )  # fmt: skip
    for _ in range(100):
        if await _redis_answers(url):
            return proc
        await asyncio.sleep(0.1)
    proc.kill()
    raise SystemExit("the private redis-server did not start")


async def _forward(name: str, stream: asyncio.StreamReader, ready: asyncio.Event) -> None:
    while True:
        line = await stream.readline()
        if not line:
            return
        text = line.decode(errors="replace").rstrip()
        if " ready " in f" {text} ":
            ready.set()
        print(f"[{name}] {text}", flush=True)


async def _terminate(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), STOP_TIMEOUT_SECONDS)
    except TimeoutError:
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        await asyncio.gather(*(p.wait() for p in procs))


async def up(settings: Settings) -> int:
    from core.process import wait_for_shutdown_signal

    redis_proc = await _ensure_redis(settings.redis.redis_url)
    children: list[asyncio.subprocess.Process] = []
    try:
        await asyncio.to_thread(_migrate, settings)
        print(f"jobmesh: database migrated ({_redacted(settings.database.database_url)})", flush=True)
        forwarders = []
        s = settings.server
        # Unless told otherwise, clients in the mesh find the servers on the ports in use.
        defaults = {
            "JOBMESH_SCHEDULER_ADDR": f"{s.host}:{s.scheduler_port}",
            "JOBMESH_MONITOR_ADDR": f"{s.host}:{s.monitor_grpc_port}",
        }
        for name, module, classes in PROCESSES:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", module,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                env=child_environment(os.environ, classes, defaults),
            )  # fmt: skip
            children.append(proc)
            ready = asyncio.Event()
            assert proc.stdout is not None
            forwarders.append(asyncio.create_task(_forward(name, proc.stdout, ready)))
            waited = asyncio.create_task(ready.wait())
            exited = asyncio.create_task(proc.wait())
            await asyncio.wait({waited, exited}, timeout=READY_TIMEOUT_SECONDS, return_when=asyncio.FIRST_COMPLETED)
            if not ready.is_set():
                print(f"jobmesh: {name} did not become ready", flush=True)
                return 1
            exited.cancel()
        print(
            "jobmesh: ready\n"
            f"  gRPC   scheduler  {s.host}:{s.scheduler_port}  (grpcurl -plaintext {s.host}:{s.scheduler_port} list)\n"
            f"  HTTP   scheduler  http://{s.host}:{s.scheduler_metrics_port}/metrics\n"
            f"  gRPC   monitor    {s.host}:{s.monitor_grpc_port}\n"
            f"  HTTP   console    http://{s.host}:{s.gateway_port}/\n"
            f"  HTTP   gateway    http://{s.host}:{s.gateway_port}/api  (Swagger UI: /swagger)\n"
            f"  HTTP   monitor    http://{s.host}:{s.monitor_http_port}/metrics  /api/health\n"
            "  Ctrl-C stops everything.",
            flush=True,
        )
        stop = asyncio.create_task(wait_for_shutdown_signal())
        died = [asyncio.create_task(p.wait()) for p in children]
        await asyncio.wait({stop, *died}, return_when=asyncio.FIRST_COMPLETED)
        code = 0 if stop.done() else 1
        if not stop.done():
            print("jobmesh: a process exited; stopping the mesh", flush=True)
        stop.cancel()
        return code
    finally:
        print("jobmesh: stopping", flush=True)
        await _terminate(children)
        if redis_proc is not None:
            await _terminate([redis_proc])
        print("jobmesh: stopped", flush=True)


def _redacted(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="jobmesh", description="jobmesh distributed job scheduler")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply database migrations (JOBMESH_DATABASE_URL)")
    sub.add_parser("partitions", help="create job_run partitions ahead and drop expired ones (MySQL)")
    sub.add_parser("up", help="run the whole mesh in the foreground")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if args.command == "migrate":
        _migrate(settings)
        print("migrated")
    elif args.command == "partitions":
        asyncio.run(_partitions(settings))
    else:
        raise SystemExit(asyncio.run(up(settings)))


async def _partitions(settings: Settings) -> None:
    from db.engine import Database
    from db.partitions import maintain_partitions

    db = Database.from_url(settings.database.database_url, 1)
    try:
        result = await maintain_partitions(
            db, settings.database.partition_ahead_hours, settings.database.run_retention_hours
        )
        print(f"created {len(result.created)} partitions, dropped {len(result.dropped)}")
    finally:
        await db.close()
