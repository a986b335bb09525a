"""The asyncio client: one channel, one sub-API per service area, domain types in and out."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from core import convert, errors
from core.auth import Role
from core.domain import Job, JobState, JobType, OutputChunk, PreviewSlot, Run, RunOutput, RunStatus, Session, User
from core.paging import Page
from core.rpc import create_channel
from gen.jobmesh.v1 import auth_pb2, auth_pb2_grpc, job_pb2, job_pb2_grpc, run_pb2, run_pb2_grpc

from ._errors import error_from_rpc
from ._retry import DEFAULT_BACKOFF, Backoff, with_retries

T = TypeVar("T")

DEFAULT_SERVER = "127.0.0.1:50051"
DEFAULT_TIMEOUT_SECONDS = 30.0

OnRefresh = Callable[[Session], None]


@dataclass(frozen=True)
class SchedulePreview:
    """The next fire times of a cron expression in a zone, and the schedule in words."""

    description: str
    fire_times: list[PreviewSlot]


class Client:
    """A connection to a scheduler (``AuthService``, ``JobService``, ``RunService``).

    Every call raises the project's exceptions (``core.errors``); UNAVAILABLE is retried
    with ``backoff``. Given a ``refresh_token``, an expired access token is renewed once,
    transparently, and ``on_refresh`` is told the new session (to store it)."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        token: str = "",
        refresh_token: str = "",
        on_refresh: OnRefresh | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self._channel = channel
        self.token = token
        self.refresh_token = refresh_token
        self._on_refresh = on_refresh
        self._backoff = backoff
        self._timeout = timeout
        self._refreshing = asyncio.Lock()
        self._auth = auth_pb2_grpc.AuthServiceStub(channel)
        self._jobs = job_pb2_grpc.JobServiceStub(channel)
        self._runs = run_pb2_grpc.RunServiceStub(channel)
        self.auth = AuthApi(self)
        self.jobs = JobsApi(self)
        self.runs = RunsApi(self)
        self.users = UsersApi(self)

    @classmethod
    def connect(
        cls,
        server: str = DEFAULT_SERVER,
        *,
        token: str = "",
        refresh_token: str = "",
        on_refresh: OnRefresh | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> Client:
        """A client of the scheduler at ``server`` (host:port); use it as ``async with``."""
        return cls(
            create_channel(server),
            token=token,
            refresh_token=refresh_token,
            on_refresh=on_refresh,
            backoff=backoff,
            timeout=timeout,
        )

    @staticmethod
    async def login(server: str, email: str, password: str, *, backoff: Backoff = DEFAULT_BACKOFF) -> Session:
        """A new session for ``email`` (access and refresh token, and the account)."""
        async with Client.connect(server, backoff=backoff) as client:
            return await client.auth.login(email, password)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    def watch_run(self, run_id: str) -> AsyncGenerator[OutputChunk | Run, None]:
        """``runs.watch``: the run's output chunks as they are written, its status
        changes, and last the run as it ended."""
        return self.runs.watch(run_id)

    # The calling convention every sub-API goes through --------------------------------

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    async def _call(self, method: Any, request: Any, *, authenticated: bool = True) -> Any:
        async def once() -> Any:
            try:
                return await method(request, metadata=self._metadata(), timeout=self._timeout)
            except grpc.RpcError as exc:
                raise error_from_rpc(exc) from None

        used = self.token
        try:
            return await with_retries(once, self._backoff)
        except errors.Unauthenticated:
            if not (authenticated and self.refresh_token):
                raise
            await self._refresh(used)
            return await with_retries(once, self._backoff)

    async def _refresh(self, rejected: str) -> None:
        """A new session in place of the one whose access token was ``rejected``; calls
        that failed together renew once (a refresh token is good for one refresh)."""
        async with self._refreshing:
            if self.token != rejected:
                return
            session = await self.auth.refresh(self.refresh_token)
            if self._on_refresh is not None:
                self._on_refresh(session)

    async def _stream(self, method: Any, request: Any) -> AsyncIterator[Any]:
        """A server stream; opening it is retried (and re-authenticated) until a first
        message arrives, a break after that is raised."""
        refreshed = False
        delays = self._backoff.delays()
        while True:
            received = False
            used = self.token
            try:
                async for message in method(request, metadata=self._metadata()):
                    received = True
                    yield message
                return
            except grpc.RpcError as exc:
                error = error_from_rpc(exc)
                if received:
                    raise error from None
                if isinstance(error, errors.Unauthenticated) and self.refresh_token and not refreshed:
                    refreshed = True
                    await self._refresh(used)
                    continue
                delay = next(delays, None) if isinstance(error, errors.Unavailable) else None
                if delay is None:
                    raise error from None
                await asyncio.sleep(delay)


class _Api:
    def __init__(self, client: Client) -> None:
        self._client = client

    def _call(self, method: Any, request: Any, *, authenticated: bool = True) -> Awaitable[Any]:
        return self._client._call(method, request, authenticated=authenticated)


class AuthApi(_Api):
    """Signing up and in, renewing tokens, the current account."""

    async def _session(self, response: Any) -> Session:
        self._client.token = response.access_token or response.token
        self._client.refresh_token = response.refresh_token
        return convert.session_from_proto(response, await self.me())

    async def sign_up(self, username: str, email: str, password: str) -> Session:
        request = auth_pb2.SignUpRequest(username=username, email=email, password=password)
        return await self._session(await self._call(self._client._auth.SignUp, request, authenticated=False))

    async def login(self, email: str, password: str) -> Session:
        """Signs in: the client uses the new tokens from now on."""
        request = auth_pb2.LoginRequest(email=email, password=password)
        return await self._session(await self._call(self._client._auth.Login, request, authenticated=False))

    async def refresh(self, refresh_token: str) -> Session:
        """Trades a refresh token for a new session (the old refresh token is spent)."""
        request = auth_pb2.RefreshRequest(refresh_token=refresh_token)
        return await self._session(await self._call(self._client._auth.Refresh, request, authenticated=False))

    async def me(self) -> User:
        pb = await self._call(self._client._auth.GetCurrentUser, auth_pb2.GetCurrentUserRequest())
        return convert.user_from_proto(pb)


class JobsApi(_Api):
    """``JobService``."""

    async def create(self, job: Job, *, request_id: str = "") -> Job:
        """Creates ``job`` (its output-only fields are ignored). One ``request_id`` per
        intended job makes retries safe: the server answers the job it already made."""
        request = job_pb2.CreateJobRequest(job=convert.job_to_proto(job), request_id=request_id or str(uuid.uuid4()))
        return convert.job_answer_from_proto(await self._call(self._client._jobs.CreateJob, request))

    async def get(self, job_id: str) -> Job:
        pb = await self._call(self._client._jobs.GetJob, job_pb2.GetJobRequest(id=job_id))
        return convert.job_answer_from_proto(pb)

    async def list(
        self,
        *,
        state: JobState | None = None,
        job_type: JobType | None = None,
        queue: str = "",
        name_contains: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> Page[Job]:
        request = job_pb2.ListJobsRequest(
            state=convert.JOB_STATES.to_proto(state),
            job_type=convert.JOB_TYPES.to_proto(job_type),
            queue=queue,
            name_contains=name_contains,
            page_size=page_size,
            page_token=page_token,
        )
        pb = await self._call(self._client._jobs.ListJobs, request)
        return Page([convert.job_answer_from_proto(j) for j in pb.jobs], pb.next_page_token, pb.total_size)

    async def update(self, job: Job, fields: Sequence[str]) -> Job:
        """Writes ``fields`` (update-mask paths such as ``cron_expr`` or
        ``retry_policy.max_attempts``) of ``job``, if it is still at ``job.version``
        (else ``Conflict``)."""
        request = job_pb2.UpdateJobRequest(job=convert.job_to_proto(job), update_mask=FieldMask(paths=list(fields)))
        return convert.job_answer_from_proto(await self._call(self._client._jobs.UpdateJob, request))

    async def delete(self, job_id: str) -> Job:
        pb = await self._call(self._client._jobs.DeleteJob, job_pb2.DeleteJobRequest(id=job_id))
        return convert.job_answer_from_proto(pb)

    async def pause(self, job_id: str) -> Job:
        pb = await self._call(self._client._jobs.PauseJob, job_pb2.PauseJobRequest(id=job_id))
        return convert.job_answer_from_proto(pb)

    async def resume(self, job_id: str) -> Job:
        pb = await self._call(self._client._jobs.ResumeJob, job_pb2.ResumeJobRequest(id=job_id))
        return convert.job_answer_from_proto(pb)

    async def run_now(self, job_id: str) -> Run:
        pb = await self._call(self._client._jobs.RunJobNow, job_pb2.RunJobNowRequest(id=job_id))
        return convert.run_from_proto(pb)

    async def preview_schedule(
        self, cron_expr: str, timezone: str = "UTC", *, count: int = 10, after: datetime | None = None
    ) -> SchedulePreview:
        request = job_pb2.PreviewScheduleRequest(
            cron_expr=cron_expr, timezone=timezone, count=count, after=convert.timestamp_to_proto(after)
        )
        pb = await self._call(self._client._jobs.PreviewSchedule, request)
        return SchedulePreview(pb.description, [convert.fire_time_from_proto(f) for f in pb.fire_times])


class RunsApi(_Api):
    """``RunService``."""

    async def list(
        self, job_id: str, *, status: RunStatus | None = None, page_size: int = 0, page_token: str = ""
    ) -> Page[Run]:
        request = run_pb2.ListRunsRequest(
            job_id=job_id, status=convert.RUN_STATUSES.to_proto(status), page_size=page_size, page_token=page_token
        )
        pb = await self._call(self._client._runs.ListRuns, request)
        return Page([convert.run_from_proto(r) for r in pb.runs], pb.next_page_token)

    async def get(self, run_id: str) -> Run:
        return convert.run_from_proto(await self._call(self._client._runs.GetRun, run_pb2.GetRunRequest(run_id=run_id)))

    async def logs(self, run_id: str) -> RunOutput:
        pb = await self._call(self._client._runs.GetRunLogs, run_pb2.GetRunLogsRequest(run_id=run_id))
        return convert.run_output_from_proto(pb)

    async def cancel(self, run_id: str) -> Run:
        pb = await self._call(self._client._runs.CancelRun, run_pb2.CancelRunRequest(run_id=run_id))
        return convert.run_from_proto(pb)

    async def watch(self, run_id: str) -> AsyncGenerator[OutputChunk | Run, None]:
        """Output chunks as the script writes them and the run at each change of
        status, until it ends; the last item is the run as it ended."""
        last: Run | None = None
        async for pb in self._client._stream(self._client._runs.WatchRun, run_pb2.WatchRunRequest(run_id=run_id)):
            event = convert.watch_event_from_proto(pb)
            if isinstance(event, Run):
                last = event
            yield event
        if last is None or not last.status.is_final:
            final = await self.get(run_id)
            if final != last:
                yield final


class UsersApi(_Api):
    """Accounts (an admin's)."""

    async def list(self, *, page_size: int = 0, page_token: str = "") -> Page[User]:
        request = auth_pb2.ListUsersRequest(page_size=page_size, page_token=page_token)
        pb = await self._call(self._client._auth.ListUsers, request)
        return Page([convert.user_from_proto(u) for u in pb.users], pb.next_page_token)

    async def set_role(self, user_id: str, role: Role) -> User:
        request = auth_pb2.SetUserRoleRequest(user_id=user_id, role=convert.ROLES.to_proto(role))
        return convert.user_from_proto(await self._call(self._client._auth.SetUserRole, request))

    async def set_disabled(self, user_id: str, disabled: bool) -> User:
        request = auth_pb2.SetUserDisabledRequest(user_id=user_id, disabled=disabled)
        return convert.user_from_proto(await self._call(self._client._auth.SetUserDisabled, request))
