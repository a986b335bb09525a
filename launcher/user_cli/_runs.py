"""``jobmesh runs ...``."""

from __future__ import annotations

from typing import Annotated

import typer

from core.domain import RunStatus

from . import _render
from ._follow import follow
from ._state import OutputOption, State

runs_app = typer.Typer(help="Runs: history, output, cancelling.", no_args_is_help=True)

RunId = Annotated[str, typer.Argument(help="the run's id")]


@runs_app.command("list")
def list_runs(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(help="the job whose runs to list")],
    status: Annotated[RunStatus | None, typer.Option("--status", help="only runs in this status")] = None,
    page_size: Annotated[int, typer.Option("--page-size", help="runs per page")] = 20,
    page_token: Annotated[str, typer.Option("--page-token", help="the page after a previous one")] = "",
    output: OutputOption = None,
) -> None:
    """A job's runs, newest first."""
    s = State.of(ctx)
    page = s.call(lambda c: c.runs.list(job_id, status=status, page_size=page_size, page_token=page_token))
    _render.runs(page, s.format(output))


@runs_app.command("get")
def get_run(ctx: typer.Context, run_id: RunId, output: OutputOption = None) -> None:
    """Show a run."""
    s = State.of(ctx)
    _render.run(s.call(lambda c: c.runs.get(run_id)), s.format(output))


@runs_app.command("cancel")
def cancel_run(ctx: typer.Context, run_id: RunId, output: OutputOption = None) -> None:
    """Cancel a run that has not ended."""
    s = State.of(ctx)
    _render.run(s.call(lambda c: c.runs.cancel(run_id)), s.format(output))


@runs_app.command("logs")
def run_logs(
    ctx: typer.Context,
    run_id: RunId,
    follow_output: Annotated[
        bool,
        typer.Option("--follow", "-f", help="print the output as it comes, until the run ends; exit with its code"),
    ] = False,
    output: OutputOption = None,
) -> None:
    """A run's output (stdout to stdout, stderr to stderr)."""
    s = State.of(ctx)
    if follow_output:
        raise typer.Exit(follow(s, run_id))
    _render.output(s.call(lambda c: c.runs.logs(run_id)), s.format(output))
