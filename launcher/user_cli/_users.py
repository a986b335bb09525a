"""``jobmesh users ...`` (admins)."""

from __future__ import annotations

from typing import Annotated

import typer

from core.auth import Role
from core.domain import User
from jobmesh_client import Client

from . import _render
from ._state import OutputOption, State

users_app = typer.Typer(help="Accounts: roles, disabling (admins only).", no_args_is_help=True)

UserRef = Annotated[str, typer.Argument(help="the account's id or email")]


async def _user_id(client: Client, ref: str) -> str:
    """The id of the account ``ref`` names (an id, or an email looked up)."""
    if "@" not in ref:
        return ref
    token = ""
    while True:
        page = await client.users.list(page_size=500, page_token=token)
        for user in page.items:
            if user.email.lower() == ref.lower():
                return user.id
        token = page.next_page_token
        if not token:
            return ref  # the server answers NOT_FOUND for it


@users_app.command("list")
def list_users(
    ctx: typer.Context,
    page_size: Annotated[int, typer.Option("--page-size", help="accounts per page")] = 100,
    page_token: Annotated[str, typer.Option("--page-token", help="the page after a previous one")] = "",
    output: OutputOption = None,
) -> None:
    """Every account."""
    s = State.of(ctx)
    _render.users(s.call(lambda c: c.users.list(page_size=page_size, page_token=page_token)), s.format(output))


@users_app.command("set-role")
def set_role(
    ctx: typer.Context,
    user: UserRef,
    role: Annotated[Role, typer.Argument(help="the new role", case_sensitive=False)],
    output: OutputOption = None,
) -> None:
    """Give an account another role."""
    s = State.of(ctx)

    async def change(client: Client) -> User:
        return await client.users.set_role(await _user_id(client, user), role)

    _render.user(s.call(change), s.format(output))


def _set_disabled(ctx: typer.Context, user: str, disabled: bool, output: _render.Format | None) -> None:
    s = State.of(ctx)

    async def change(client: Client) -> User:
        return await client.users.set_disabled(await _user_id(client, user), disabled)

    _render.user(s.call(change), s.format(output))


@users_app.command("disable")
def disable_user(ctx: typer.Context, user: UserRef, output: OutputOption = None) -> None:
    """Disable an account: it can no longer sign in, its tokens stop working."""
    _set_disabled(ctx, user, True, output)


@users_app.command("enable")
def enable_user(ctx: typer.Context, user: UserRef, output: OutputOption = None) -> None:
    """Enable a disabled account again."""
    _set_disabled(ctx, user, False, output)
