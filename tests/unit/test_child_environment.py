"""What `jobmesh up` hands each process: its own settings' variables and what runs Python."""

from __future__ import annotations

from core.settings import AuthSettings, DatabaseSettings, RedisSettings, ServerSettings, WorkerSettings
from launcher.cli import PROCESSES, child_environment

SECRET = "a-jwt-secret-" + "s" * 32
ADMIN_PASSWORD = "an-admin-password"


def test_child_environment_keeps_only_what_a_process_reads() -> None:
    environ = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "VIRTUAL_ENV": "/venv",
        "JOBMESH_DATABASE_URL": "sqlite+aiosqlite:///x.db",
        "JOBMESH_REDIS_URL": "redis://:pw@127.0.0.1/0",
        "JOBMESH_JWT_SECRET": SECRET,
        "jobmesh_admin_password": ADMIN_PASSWORD,  # pydantic reads any case: so does the filter
        "JOBMESH_WORKER_SLOTS": "3",
        "JOBMESH_SCHEDULER_ADDR": "elsewhere:1",
        "JOBMESH_SOMETHING_UNKNOWN": "x",
    }
    worker = (DatabaseSettings, RedisSettings, ServerSettings, WorkerSettings)
    env = child_environment(environ, worker, {"JOBMESH_SCHEDULER_ADDR": "here:2", "JOBMESH_MONITOR_ADDR": "here:3"})
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "VIRTUAL_ENV": "/venv",
        "JOBMESH_DATABASE_URL": "sqlite+aiosqlite:///x.db",
        "JOBMESH_REDIS_URL": "redis://:pw@127.0.0.1/0",
        "JOBMESH_WORKER_SLOTS": "3",
        "JOBMESH_SCHEDULER_ADDR": "elsewhere:1",
        "JOBMESH_MONITOR_ADDR": "here:3",
        "PYTHONUNBUFFERED": "1",
    }
    assert set(child_environment(environ, (ServerSettings,), {})) == {
        "PATH", "HOME", "VIRTUAL_ENV", "JOBMESH_SCHEDULER_ADDR", "PYTHONUNBUFFERED",
    }  # fmt: skip


def test_only_the_scheduler_reads_auth_settings() -> None:
    readers = {name for name, _, classes in PROCESSES if AuthSettings in classes}
    assert readers == {"scheduler"}
