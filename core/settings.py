"""Typed settings, one class per concern, read once at process start.

Every value comes from a ``JOBMESH_*`` environment variable; library code receives
these objects and never reads ``os.environ`` itself. ``Settings.from_env()`` is
called by entry points only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_JWT_SECRET = "jobmesh-development-secret-change-me"


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, extra="ignore", frozen=True)


def check_networks(value: str) -> None:
    """A comma-separated list of addresses or CIDR networks; ValueError names a bad one."""
    for part in value.split(","):
        if part.strip():
            try:
                ipaddress.ip_network(part.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{part.strip()!r} is not an IP address or network") from None


class DatabaseSettings(BaseSettings):
    model_config = _config("JOBMESH_")
    database_url: str = Field(
        default=f"sqlite+aiosqlite:///{Path('.jobmesh/jobmesh.db')}",
        description="SQLAlchemy URL: mysql+asyncmy://user:pass@host/db or sqlite+aiosqlite:///path",
    )
    db_pool_size: int = Field(default=10, description="Connections kept per process (MySQL)")
    partition_ahead_hours: int = Field(
        default=24, description="Hourly job_run partitions kept ready ahead of now (MySQL)"
    )
    run_retention_hours: int = Field(
        default=24 * 7, description="job_run partitions older than this are dropped (MySQL)"
    )


class RedisSettings(BaseSettings):
    model_config = _config("JOBMESH_")
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis URL: redis://[[user]:password@]host:port/db, rediss:// for TLS "
        "(query ssl_cert_reqs=none, optional or required); on a cluster, the address of any node",
    )
    redis_cluster: bool = Field(
        default=False, description="Redis is a Redis Cluster (JOBMESH_REDIS_URL names any of its nodes)"
    )
    redis_ssl_ca_certs: str = Field(
        default="", description="rediss://: CA bundle that signs the server's certificate (empty: the system's)"
    )
    redis_ssl_certfile: str = Field(
        default="", description="rediss://: client certificate, for servers that ask for one"
    )
    redis_ssl_keyfile: str = Field(default="", description="rediss://: the client certificate's private key")


class AuthSettings(BaseSettings):
    model_config = _config("JOBMESH_")
    jwt_secret: str = Field(default=DEV_JWT_SECRET, description="HS256 signing secret (>= 32 bytes in production)")
    jwt_issuer: str = Field(default="jobmesh", description="JWT iss claim")
    jwt_audience: str = Field(default="jobmesh-api", description="JWT aud claim")
    access_token_ttl_seconds: int = Field(default=3600, description="Lifetime of access tokens")
    refresh_token_ttl_seconds: int = Field(default=30 * 86400, description="Lifetime of refresh tokens")
    admin_email: str = Field(default="", description="First admin account, created at start-up if missing")
    admin_password: str = Field(default="", description="Password of that admin account")
    production: bool = Field(default=False, description="Refuse unsafe defaults (JWT secret)")
    login_free_failures: int = Field(
        default=5, description="Login attempts per (email, client address) checked at once, before delays start"
    )
    login_delay_seconds: float = Field(
        default=1.0, description="Delay after those free attempts; it doubles with every further attempt"
    )
    login_max_delay_seconds: float = Field(default=900.0, description="Cap of that delay")
    trusted_proxies: str = Field(
        default="127.0.0.0/8,::1",
        description="Comma-separated addresses or networks of peers (the gateway) whose x-forwarded-for metadata "
        "the scheduler takes as the client's address",
    )
    password_hash_threads: int = Field(
        default=2, description="Threads that hash and verify passwords (argon2id), at low priority, off the event loop"
    )
    password_hash_queue: int = Field(
        default=32, description="Password checks waiting for those threads; beyond it RESOURCE_EXHAUSTED is answered"
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        check_networks(value)
        return value


class ServerSettings(BaseSettings):
    model_config = _config("JOBMESH_")
    host: str = Field(default="127.0.0.1", description="Address every server binds")
    scheduler_port: int = Field(default=50051, description="scheduler_svc gRPC port")
    monitor_grpc_port: int = Field(default=50052, description="monitor_svc gRPC port")
    monitor_http_port: int = Field(default=5137, description="monitor_svc HTTP port (/metrics, /api/health)")
    gateway_port: int = Field(default=5136, description="api_gateway HTTP port")
    scheduler_metrics_port: int = Field(default=9464, description="scheduler_svc HTTP /metrics port (its gRPC metrics)")
    worker_port: int = Field(default=0, description="worker_svc gRPC health port (0: ephemeral)")
    scheduler_addr: str = Field(default="127.0.0.1:50051", description="Where clients reach a scheduler")
    monitor_addr: str = Field(default="127.0.0.1:50052", description="Where clients reach the monitor")
    cors_origins: str = Field(default="", description="Comma-separated origins the gateway allows (CORS); * for any")
    gateway_trusted_proxies: str = Field(
        default="",
        description="Comma-separated addresses or networks of proxies in front of the gateway whose X-Forwarded-For "
        "it believes (empty: none, the client is the TCP peer)",
    )
    shutdown_grace_seconds: float = Field(default=5.0, description="In-flight work allowed after SIGTERM")
    log_level: str = Field(default="INFO", description="Python logging level")
    log_json: bool = Field(default=False, description="Log one JSON object per line")

    @field_validator("gateway_trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        check_networks(value)
        return value


class SchedulerSettings(BaseSettings):
    model_config = _config("JOBMESH_")
    materializer_interval_seconds: float = Field(default=0.2, description="Materializer poll period")
    lookahead_seconds: float = Field(default=2.0, description="Runs are recorded this far ahead of their slot")
    dispatcher_interval_seconds: float = Field(default=0.05, description="Dispatcher poll period")
    dispatch_ahead_seconds: float = Field(
        default=0.5, description="Runs are queued this early; workers wait for the slot"
    )
    batch_size: int = Field(default=500, description="Rows claimed per loop iteration")
    misfire_grace_seconds: float = Field(default=30.0, description="A slot later than this counts as missed")
    misfire_run_all_cap: int = Field(default=100, description="RUN_ALL catches up at most this many slots")
    reaper_interval_seconds: float = Field(default=1.0, description="Reaper/reconciler poll period")
    requeue_after_seconds: float = Field(
        default=15.0, description="QUEUED this long and absent from Redis: pushed again"
    )


class WorkerSettings(BaseSettings):
    model_config = _config("JOBMESH_WORKER_")
    slots: int = Field(default=4, description="Runs executed concurrently per worker")
    queues: str = Field(default="default", description="Comma-separated queues this worker pulls")
    prefetch: int = Field(
        default=32,
        description="Runs taken ahead of a free slot: short runs are taken and reported in batches (a taken run "
        "that finds no slot within 1 s of its due time goes back to the queue)",
    )
    executor: str = Field(
        default="forkserver",
        description="forkserver (fork each run from a small helper process), subprocess (a fresh interpreter "
        "per run) or noop (benchmarks only)",
    )
    preload: str = Field(
        default="", description="Comma-separated modules the fork server imports once, before forking runs"
    )
    heartbeat_seconds: float = Field(default=1.0, description="Heartbeat period")
    heartbeat_ttl_seconds: float = Field(default=10.0, description="A worker silent this long is dead")
    output_cap_bytes: int = Field(default=64 * 1024, description="Captured tail per stream")
    cpu_seconds: int = Field(default=3600, description="RLIMIT_CPU of a script")
    memory_bytes: int = Field(
        default=2 * 1024**3, description="RLIMIT_AS of a script's processes, and the memory limit of its run's cgroup"
    )
    open_files: int = Field(default=256, description="RLIMIT_NOFILE of a script")
    processes: int = Field(default=64, description="Processes of a run (RLIMIT_NPROC of its uid, and its pids cgroup)")
    file_size_bytes: int = Field(default=64 * 1024**2, description="RLIMIT_FSIZE of a script")
    id: str = Field(default="", description="Stable worker id (default: host-pid-random)")
    sandbox: str = Field(
        default="on",
        description="on: every run in its own namespaces, uid and cgroup (the worker refuses to start where the host "
        "cannot build them); off: no isolation beyond rlimits, for development only (logged, shown in health)",
    )
    allow_host_network: bool = Field(
        default=False, description="Honour jobs that ask for the host's network (network=HOST); else they fail"
    )
    uid_base: int = Field(
        default=200000,
        description="First uid of the range runs use: each worker claims one uid per slot (lock files under "
        "/run/jobmesh), no two concurrent runs share one",
    )
    uid_count: int = Field(default=65536, description="Size of that uid range")
    scratch_bytes: int = Field(
        default=256 * 1024**2,
        description="Size of a run's private writable space (its directory, home, /tmp, /var/tmp, /dev/shm: one tmpfs)",
    )
    workdir_root: str = Field(
        default="",
        description="Directory for the worker's copies of scripts and, unsandboxed, runs' working directories "
        "(empty: the system temp dir)",
    )


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings
    redis: RedisSettings
    auth: AuthSettings
    server: ServerSettings
    scheduler: SchedulerSettings
    worker: WorkerSettings

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            database=DatabaseSettings(),
            redis=RedisSettings(),
            auth=AuthSettings(),
            server=ServerSettings(),
            scheduler=SchedulerSettings(),
            worker=WorkerSettings(),
        )


def settings_classes() -> list[type[BaseSettings]]:
    """Every settings class, for the README's configuration table."""
    return [DatabaseSettings, RedisSettings, AuthSettings, ServerSettings, SchedulerSettings, WorkerSettings]
