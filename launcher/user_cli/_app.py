"""The ``jobmesh`` command for users: signing in, jobs, runs, schedules, accounts."""

from __future__ import annotations

from typing import Annotated

import typer

from core import errors
from jobmesh_client import DEFAULT_SERVER, Client

from . import _render
from ._credentials import Credentials
from ._exit import FAILED, report
from ._jobs import jobs_app, schedule_app
from ._runs import runs_app
from ._state import OutputOption, State, new_state, run
from ._users import users_app

EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 the run failed (runs logs --follow and jobs run --follow end with the "
    "run's own exit code); 2 invalid argument: the command line is wrong or the server refused the "
    "request (invalid field, version conflict, wrong state); 3 not found; 4 not signed in or not "
    "allowed; 5 the server is unavailable or failed."
)

app = typer.Typer(
    name="jobmesh",
    help=f"jobmesh: a distributed job scheduler.\n\n{EXIT_CODES_HELP}",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(jobs_app, name="jobs")
app.add_typer(runs_app, name="runs")
app.add_typer(schedule_app, name="schedule")
app.add_typer(users_app, name="users")


@app.callback()
def main_options(
    ctx: typer.Context,
    server: Annotated[
        str, typer.Option("--server", envvar="JOBMESH_SERVER", help="the scheduler's gRPC address (host:port)")
    ] = DEFAULT_SERVER,
    output: Annotated[
        _render.Format, typer.Option("--output", "-o", envvar="JOBMESH_OUTPUT", help="table or json")
    ] = _render.Format.TABLE,
) -> None:
    ctx.obj = new_state(server, output)


@app.command()
def login(
    ctx: typer.Context,
    email: Annotated[str, typer.Option("--email", prompt=True, help="your account's email")],
    password: Annotated[
        str, typer.Option("--password", envvar="JOBMESH_PASSWORD", prompt=True, hide_input=True, help="your password")
    ],
    output: OutputOption = None,
) -> None:
    """Sign in; the tokens are kept in your config directory (mode 0600) and renewed as needed."""
    s = State.of(ctx)
    session = run(Client.login(s.server, email, password))
    s.store.save(s.server, Credentials.of(session))
    user = session.user
    _render.plain(
        {"userId": user.id, "email": user.email, "role": user.role.value, "server": s.server},
        s.format(output),
        f"signed in to {s.server} as {user.email} ({user.role.value})",
    )


@app.command()
def logout(ctx: typer.Context) -> None:
    """Forget the tokens kept for this server."""
    s = State.of(ctx)
    print("signed out" if s.store.forget(s.server) else "not signed in")


@app.command()
def whoami(ctx: typer.Context, output: OutputOption = None) -> None:
    """The account you are signed in as."""
    s = State.of(ctx)
    _render.user(s.call(lambda c: c.auth.me()), s.format(output))


def _mesh_command(name: str, help_text: str) -> None:
    """The operator's commands (parsed by launcher.cli), listed here for help and completion."""

    def command() -> None:
        from launcher.cli import main

        main([name])

    command.__doc__ = help_text
    app.command(name)(command)


_mesh_command("up", "Run the whole mesh in the foreground.")
_mesh_command("migrate", "Apply database migrations (JOBMESH_DATABASE_URL).")
_mesh_command("partitions", "Create job_run partitions ahead and drop expired ones (MySQL).")


def run_cli(argv: list[str]) -> int:
    """Runs the user command line ``argv``; returns its exit code (Typer's own for a wrong
    command line: 2, like the server refusing an argument)."""
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="jobmesh", standalone_mode=True)
    except errors.JobmeshError as exc:
        return report(exc)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else FAILED)
    return 0
