"""The test MariaDB and Redis, and settings that point at them."""

from __future__ import annotations

import os
import subprocess
import uuid
from typing import Any

from core.settings import (
    AuthSettings,
    DatabaseSettings,
    RedisSettings,
    SchedulerSettings,
    ServerSettings,
    Settings,
    WorkerSettings,
)

MYSQL_ROOT = os.environ.get("JOBMESH_TEST_MYSQL", "mysql+asyncmy://root@127.0.0.1:3306")
REDIS_TEST_URL = os.environ.get("JOBMESH_TEST_REDIS", "redis://127.0.0.1:6379/13")
# Set (true) when JOBMESH_TEST_REDIS names a node of a Redis Cluster (tests/integration/test_redis_cluster.py).
REDIS_TEST_CLUSTER = os.environ.get("JOBMESH_TEST_REDIS_CLUSTER", "").lower() in ("1", "true")
TABLES = ["run_output", "job_run", "job_schedule_state", "job_definition", "refresh_tokens", "users",
          "login_throttle"]  # fmt: skip


def mysql(statement: str) -> None:
    subprocess.run(["mysql", "-uroot", "-h127.0.0.1", "-e", statement], check=True)


def new_database() -> tuple[str, str]:
    name = f"jobmesh_test_{uuid.uuid4().hex[:10]}"
    mysql(f"CREATE DATABASE {name}")
    return name, f"{MYSQL_ROOT}/{name}"


def make_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for tests: explicit values, never the developer's environment."""
    groups: dict[str, dict[str, Any]] = {
        "database": {"database_url": database_url, "db_pool_size": 5},
        "redis": {"redis_url": REDIS_TEST_URL, "redis_cluster": REDIS_TEST_CLUSTER},
        "auth": {"jwt_secret": "test-secret-" + "x" * 32, "admin_email": "", "admin_password": ""},
        "server": {"scheduler_port": 0, "scheduler_metrics_port": 0, "monitor_grpc_port": 0, "monitor_http_port": 0,
                   "gateway_port": 0, "shutdown_grace_seconds": 1.0},
        "scheduler": {"requeue_after_seconds": 2.0, "misfire_grace_seconds": 5.0},
        "worker": {"heartbeat_seconds": 0.2, "heartbeat_ttl_seconds": 2.0, "slots": 2},
    }  # fmt: skip
    for key, value in overrides.items():
        group, _, name = key.partition("__")
        groups[group][name] = value
    return Settings(
        database=DatabaseSettings(**groups["database"]),
        redis=RedisSettings(**groups["redis"]),
        auth=AuthSettings(**groups["auth"]),
        server=ServerSettings(**groups["server"]),
        scheduler=SchedulerSettings(**groups["scheduler"]),
        worker=WorkerSettings(**groups["worker"]),
    )
