"""The ``jobmesh`` command: ``migrate``, ``partitions`` and ``up`` (the whole mesh
in the foreground, stopped cleanly by Ctrl-C / SIGTERM with no orphan left)."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlparse

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
from launcher import supervisor
from launcher.restarts import RestartPolicy
from launcher.supervisor import Child, supervise

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


async def _redis_answers(settings: RedisSettings) -> bool:
    """Whether Redis answers, with the URL's credentials and TLS, as the processes reach it.
    SystemExit when it answers but refuses those credentials (no server is to be started)."""
    from redis.exceptions import AuthenticationError, AuthorizationError, ResponseError

    from core.redis_client import create_redis

    client = create_redis(settings)
    try:
        return bool(await client.ping())
    except (AuthenticationError, AuthorizationError) as exc:
        raise SystemExit(f"Redis at {_redacted(settings.redis_url)} refuses the credentials: {exc}") from None
    except ResponseError as exc:
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            raise SystemExit(f"Redis at {_redacted(settings.redis_url)} refuses the credentials: {exc}") from None
        return False
    except Exception:
        return False
    finally:
        await client.aclose()


def _redis_config(url: str) -> str:
    """A private redis-server's configuration: bound to the URL's host and port, and
    asking for the URL's credentials (the password as ``requirepass``, or an ACL user)."""
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    lines = [f"bind {host}", f"port {port}", 'save ""', "appendonly no", "loglevel warning"]
    password = unquote(parsed.password or "")
    user = unquote(parsed.username or "")
    if password and user and user != "default":
        lines += ["user default off", f"user {user} on >{password} ~* &* +@all"]
    elif password:
        lines.append(f"requirepass {password}")
    return "\n".join(lines) + "\n"


def _write_redis_config(url: str) -> str:
    """The configuration (perhaps a password) in a file only we read, not on a command line."""
    os.makedirs(".jobmesh", exist_ok=True)
    # One file per port: a restarted redis-server reads it again, and another `up` in this
    # directory (on another port) must not have rewritten it meanwhile.
    config = os.path.abspath(os.path.join(".jobmesh", f"redis-{urlparse(url).port or 6379}.conf"))
    descriptor = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(_redis_config(url))
    return config


async def _private_redis(settings: RedisSettings) -> Child | None:
    """A private redis-server to start when none answers at the URL (a local single
    Redis only: never a cluster nor TLS), with the URL's credentials."""
    url = settings.redis_url
    if await _redis_answers(settings):
        return None
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    binary = shutil.which("redis-server")
    local = host in ("127.0.0.1", "localhost") and parsed.scheme == "redis" and not settings.redis_cluster
    if not local or binary is None:
        raise SystemExit(
            f"Redis does not answer at {_redacted(url)} and no local redis-server can be started"
            " (only for a redis:// URL on this host, not a cluster)"
        )
    print(f"jobmesh: starting a private redis-server on {host}:{port}", flush=True)
    argv = [binary, _write_redis_config(url)]
    env = child_environment(os.environ, (), {})  # no JOBMESH_* at all
    return Child("redis", argv, env, probe=lambda: _redis_answers(settings))


async def _until_ready(child: Child, stop: asyncio.Task[int], failed: asyncio.Future[tuple[str, str]]) -> int | None:
    """None once ``child`` is ready; else the exit code of ``up``."""
    ready = asyncio.create_task(child.ready.wait())
    try:
        waiters: list[asyncio.Future[Any]] = [ready, stop, failed]
        await asyncio.wait(waiters, timeout=READY_TIMEOUT_SECONDS, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ready.cancel()
    if child.ready.is_set():
        return None
    if stop.done():
        return 0
    if not failed.done():
        failed.set_result((child.name, f"{child.name} did not become ready within {READY_TIMEOUT_SECONDS:g} s"))
    return 1


async def up(settings: Settings) -> int:
    """Start the mesh and keep it running: a process that exits is started again after a
    backoff (``launcher.restarts``); only SIGINT/SIGTERM, or a process that keeps failing
    at start-up, stops everything."""
    from core.process import wait_for_shutdown_signal

    stop = asyncio.create_task(wait_for_shutdown_signal())
    await asyncio.sleep(0)  # the handlers are in place before the first child starts
    failed: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()
    policy = RestartPolicy()
    children: list[Child] = []
    supervisors: list[asyncio.Task[None]] = []

    def launch(child: Child) -> None:
        children.append(child)
        supervisors.append(asyncio.create_task(supervise(child, policy, failed, stop.done)))

    try:
        redis = await _private_redis(settings.redis)
        if redis is not None:
            launch(redis)
            if (code := await _until_ready(redis, stop, failed)) is not None:
                return code
        await asyncio.to_thread(_migrate, settings)
        print(f"jobmesh: database migrated ({_redacted(settings.database.database_url)})", flush=True)
        s = settings.server
        # Unless told otherwise, clients in the mesh find the servers on the ports in use.
        defaults = {
            "JOBMESH_SCHEDULER_ADDR": f"{s.host}:{s.scheduler_port}",
            "JOBMESH_MONITOR_ADDR": f"{s.host}:{s.monitor_grpc_port}",
        }
        for name, module, classes in PROCESSES:
            launch(Child(name, [sys.executable, "-m", module], child_environment(os.environ, classes, defaults)))
            if (code := await _until_ready(children[-1], stop, failed)) is not None:
                return code
        print(
            "jobmesh: ready\n"
            f"  gRPC   scheduler  {s.host}:{s.scheduler_port}  (grpcurl -plaintext {s.host}:{s.scheduler_port} list)\n"
            f"  HTTP   scheduler  http://{s.host}:{s.scheduler_metrics_port}/metrics\n"
            f"  gRPC   monitor    {s.host}:{s.monitor_grpc_port}\n"
            f"  HTTP   console    http://{s.host}:{s.gateway_port}/\n"
            f"  HTTP   gateway    http://{s.host}:{s.gateway_port}/api  (Swagger UI: /swagger)\n"
            f"  HTTP   monitor    http://{s.host}:{s.monitor_http_port}/metrics  /api/health\n"
            "  A process that exits is restarted. Ctrl-C stops everything.",
            flush=True,
        )
        waiters: list[asyncio.Future[Any]] = [stop, failed]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        return 0 if stop.done() else 1
    finally:
        if failed.done():
            culprit, reason = failed.result()
            print(f"jobmesh: giving up: {reason}", flush=True)
            tail = next((c.tail for c in children if c.name == culprit), None)
            if tail:
                print("jobmesh: its last output:\n  " + "\n  ".join(tail), flush=True)
        print("jobmesh: stopping", flush=True)
        stop.cancel()
        for task in supervisors:
            task.cancel()
        await asyncio.gather(*supervisors, return_exceptions=True)
        mesh = [c.proc for c in children if c.proc is not None and c.name != "redis"]
        await supervisor.terminate(mesh, STOP_TIMEOUT_SECONDS)
        # Redis last: the others may still flush to it while they stop.
        await supervisor.terminate(
            [c.proc for c in children if c.proc is not None and c.name == "redis"], STOP_TIMEOUT_SECONDS
        )
        print("jobmesh: stopped", flush=True)


def _redacted(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


# The operator's commands, parsed here; every other command line is the user CLI's.
MESH_COMMANDS = ("migrate", "partitions", "up")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in MESH_COMMANDS:
        from launcher.user_cli import run_cli

        raise SystemExit(run_cli(argv))
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
