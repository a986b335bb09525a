"""What every user command shares: the server, the output format, the stored credentials,
and a client that keeps those credentials current."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import typer

from core.domain import Session
from jobmesh_client import Client

from ._credentials import Credentials, CredentialStore, config_dir
from ._render import Format

T = TypeVar("T")


@dataclass
class State:
    server: str
    output: Format
    store: CredentialStore

    @classmethod
    def of(cls, ctx: typer.Context) -> State:
        state = ctx.find_root().obj
        assert isinstance(state, State)
        return state

    def client(self) -> Client:
        """A client signed in with the stored tokens; a refreshed session is stored again."""
        credentials = self.store.load(self.server)

        def keep(session: Session) -> None:
            self.store.save(self.server, Credentials.of(session))

        return Client.connect(
            self.server,
            token=credentials.access_token if credentials else "",
            refresh_token=credentials.refresh_token if credentials else "",
            on_refresh=keep,
        )

    def call(self, action: Callable[[Client], Awaitable[T]]) -> T:
        """``action`` with a fresh client, on an event loop of its own."""

        async def main() -> T:
            async with self.client() as client:
                return await action(client)

        return run(main())

    def format(self, output: Format | None) -> Format:
        return output or self.output


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def new_state(server: str, output: Format) -> State:
    return State(server, output, CredentialStore(config_dir(os.environ)))


OutputOption = Annotated[
    Format | None, typer.Option("--output", "-o", help="table (for people) or json (for scripts)", show_default=False)
]
