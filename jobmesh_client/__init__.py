"""The Python client of jobmesh's gRPC services, typed with the domain's own types.

    async with Client.connect("127.0.0.1:50051", token=token) as c:
        job = await c.jobs.create(Job(name="nightly", job_type=JobType.RECURRING, cron_expr="0 2 * * *",
                                      timezone="Europe/Berlin", script_content=source))

``SyncClient`` is the same API for code without an event loop. Calls raise the exceptions
of ``core.errors`` (mapped back from the gRPC status, field violations included) and
retry UNAVAILABLE with exponential backoff (``Backoff``).
"""

from __future__ import annotations

from ._client import DEFAULT_SERVER, AuthApi, Client, JobsApi, RunsApi, SchedulePreview, UsersApi
from ._errors import error_from_rpc, error_from_status
from ._retry import NO_RETRY, Backoff, with_retries
from ._sync import SyncClient

__all__ = [
    "DEFAULT_SERVER",
    "NO_RETRY",
    "AuthApi",
    "Backoff",
    "Client",
    "JobsApi",
    "RunsApi",
    "SchedulePreview",
    "SyncClient",
    "UsersApi",
    "error_from_rpc",
    "error_from_status",
    "with_retries",
]
