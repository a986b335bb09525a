"""The blocking client: the asyncio client driven by a private event loop, method for
method (each keeps its signature, returning what its coroutine returns)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from core.domain import OutputChunk, Run, Session

from ._client import DEFAULT_SERVER, DEFAULT_TIMEOUT_SECONDS, Client, OnRefresh
from ._retry import DEFAULT_BACKOFF, Backoff

P = ParamSpec("P")
T = TypeVar("T")


class _Loop:
    def __init__(self) -> None:
        self.runner = asyncio.Runner()

    def blocking(self, method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
        def call(*args: P.args, **kwargs: P.kwargs) -> T:
            return self.runner.run(method(*args, **kwargs))

        call.__doc__ = method.__doc__
        return call


class SyncJobs:
    def __init__(self, loop: _Loop, client: Client) -> None:
        jobs = client.jobs
        self.create = loop.blocking(jobs.create)
        self.get = loop.blocking(jobs.get)
        self.list = loop.blocking(jobs.list)
        self.update = loop.blocking(jobs.update)
        self.delete = loop.blocking(jobs.delete)
        self.pause = loop.blocking(jobs.pause)
        self.resume = loop.blocking(jobs.resume)
        self.run_now = loop.blocking(jobs.run_now)
        self.preview_schedule = loop.blocking(jobs.preview_schedule)


class SyncRuns:
    def __init__(self, loop: _Loop, client: Client) -> None:
        runs = client.runs
        self._loop = loop
        self._client = client
        self.list = loop.blocking(runs.list)
        self.get = loop.blocking(runs.get)
        self.logs = loop.blocking(runs.logs)
        self.cancel = loop.blocking(runs.cancel)

    def watch(self, run_id: str) -> Iterator[OutputChunk | Run]:
        events = self._client.runs.watch(run_id)

        async def step() -> OutputChunk | Run | None:
            return await anext(events, None)

        while (event := self._loop.runner.run(step())) is not None:
            yield event


class SyncUsers:
    def __init__(self, loop: _Loop, client: Client) -> None:
        self.list = loop.blocking(client.users.list)
        self.set_role = loop.blocking(client.users.set_role)
        self.set_disabled = loop.blocking(client.users.set_disabled)


class SyncAuth:
    def __init__(self, loop: _Loop, client: Client) -> None:
        self.sign_up = loop.blocking(client.auth.sign_up)
        self.login = loop.blocking(client.auth.login)
        self.refresh = loop.blocking(client.auth.refresh)
        self.me = loop.blocking(client.auth.me)


class SyncClient:
    """``Client`` for code without an event loop: ``with SyncClient.connect(...) as c:
    c.jobs.list()``. Not for use from inside a running event loop."""

    def __init__(self, loop: _Loop, client: Client) -> None:
        self._loop = loop
        self._client = client
        self.auth = SyncAuth(loop, client)
        self.jobs = SyncJobs(loop, client)
        self.runs = SyncRuns(loop, client)
        self.users = SyncUsers(loop, client)

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
    ) -> SyncClient:
        loop = _Loop()

        async def connect() -> Client:  # the channel belongs to the loop it is made in
            return Client.connect(
                server,
                token=token,
                refresh_token=refresh_token,
                on_refresh=on_refresh,
                backoff=backoff,
                timeout=timeout,
            )

        return cls(loop, loop.runner.run(connect()))

    @staticmethod
    def login(server: str, email: str, password: str, *, backoff: Backoff = DEFAULT_BACKOFF) -> Session:
        return asyncio.run(Client.login(server, email, password, backoff=backoff))

    @property
    def token(self) -> str:
        return self._client.token

    @property
    def refresh_token(self) -> str:
        return self._client.refresh_token

    def watch_run(self, run_id: str) -> Iterator[OutputChunk | Run]:
        return self.runs.watch(run_id)

    def close(self) -> None:
        try:
            self._loop.runner.run(self._client.close())
        finally:
            self._loop.runner.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
