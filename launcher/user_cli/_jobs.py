"""``jobmesh jobs ...`` and ``jobmesh schedule preview``."""

from __future__ import annotations

import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from core import errors
from core.domain import Job, JobState, JobType, RetryPolicy, Run
from core.paging import Page

from . import _render
from ._follow import follow
from ._state import OutputOption, State

jobs_app = typer.Typer(help="Create, change and run jobs.", no_args_is_help=True)
schedule_app = typer.Typer(help="Check cron expressions.", no_args_is_help=True)

JobId = Annotated[str, typer.Argument(help="the job's id")]
ScriptOption = Annotated[
    Path | None, typer.Option("--script", "-s", help="the Python script the job runs ('-': standard input)")
]
CronOption = Annotated[str | None, typer.Option("--cron", help='cron expression, e.g. "0 2 * * *" (a recurring job)')]
TzOption = Annotated[str | None, typer.Option("--tz", help="IANA time zone of the cron expression")]
AtOption = Annotated[
    datetime | None, typer.Option("--at", help="when a one-time job runs (ISO 8601; without a zone: UTC)")
]
NameOption = Annotated[str | None, typer.Option("--name", help="the job's name")]
TimeoutOption = Annotated[int | None, typer.Option("--timeout", help="seconds a run may take")]
AttemptsOption = Annotated[int | None, typer.Option("--max-attempts", help="attempts per slot, retries included")]
QueueOption = Annotated[str | None, typer.Option("--queue", help="the queue its runs go to")]


def _script(path: Path) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.read_text()
    except OSError as exc:
        raise errors.InvalidArgument(errors.FieldViolation("--script", f"cannot read {path}: {exc.strerror}")) from None


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@jobs_app.command("list")
def list_jobs(
    ctx: typer.Context,
    state: Annotated[JobState | None, typer.Option("--state", help="only jobs in this state")] = None,
    job_type: Annotated[JobType | None, typer.Option("--type", help="only jobs of this type")] = None,
    name: Annotated[str, typer.Option("--name", help="only jobs whose name contains this")] = "",
    page_size: Annotated[int, typer.Option("--page-size", help="jobs per page")] = 50,
    page_token: Annotated[str, typer.Option("--page-token", help="the page after a previous one")] = "",
    all_pages: Annotated[bool, typer.Option("--all", help="every page")] = False,
    output: OutputOption = None,
) -> None:
    """List the jobs you can see."""
    s = State.of(ctx)

    async def fetch(client: Any) -> Page[Job]:
        page: Page[Job] = await client.jobs.list(
            state=state, job_type=job_type, name_contains=name, page_size=page_size, page_token=page_token
        )
        items = list(page.items)
        while all_pages and page.next_page_token:
            page = await client.jobs.list(
                state=state, job_type=job_type, name_contains=name, page_size=page_size, page_token=page.next_page_token
            )
            items += page.items
        return Page(items, page.next_page_token, page.total_size)

    page = s.call(fetch)
    _render.jobs(page, s.format(output))
    if page.next_page_token and s.format(output) is _render.Format.TABLE:
        print(f"more: --page-token {page.next_page_token}", file=sys.stderr)


@jobs_app.command("get")
def get_job(ctx: typer.Context, job_id: JobId, output: OutputOption = None) -> None:
    """Show a job."""
    s = State.of(ctx)
    _render.job(s.call(lambda c: c.jobs.get(job_id)), s.format(output))


@jobs_app.command("create")
def create_job(
    ctx: typer.Context,
    script: ScriptOption = None,
    cron: CronOption = None,
    tz: TzOption = None,
    at: AtOption = None,
    name: NameOption = None,
    timeout: TimeoutOption = None,
    max_attempts: AttemptsOption = None,
    queue: QueueOption = None,
    output: OutputOption = None,
) -> None:
    """Create a job from a script: recurring with --cron, else one-time (--at, or now)."""
    s = State.of(ctx)
    if script is None:
        raise errors.InvalidArgument(errors.FieldViolation("--script", "is required"))
    job = Job(
        name=name if name is not None else ("" if str(script) == "-" else script.stem),
        job_type=JobType.RECURRING if cron is not None else JobType.ONE_TIME,
        cron_expr=cron or "",
        timezone=tz or "UTC",
        # Given with --cron too, --at reaches the server, which names the conflict.
        scheduled_at=_utc(at) if at is not None else (None if cron is not None else datetime.now(UTC)),
        script_content=_script(script),
        queue=queue or "default",
    )
    if timeout is not None:
        job = replace(job, timeout_seconds=timeout)
    if max_attempts is not None:
        job = replace(job, retry_policy=RetryPolicy(max_attempts=max_attempts))
    _render.job(s.call(lambda c: c.jobs.create(job)), s.format(output))


@jobs_app.command("update")
def update_job(
    ctx: typer.Context,
    job_id: JobId,
    script: ScriptOption = None,
    cron: CronOption = None,
    tz: TzOption = None,
    at: AtOption = None,
    name: NameOption = None,
    timeout: TimeoutOption = None,
    max_attempts: AttemptsOption = None,
    queue: QueueOption = None,
    output: OutputOption = None,
) -> None:
    """Change the given fields of a job (refused if someone changed it meanwhile)."""
    s = State.of(ctx)
    changes: dict[str, Any] = {}
    for field, value in (
        ("cron_expr", cron),
        ("timezone", tz),
        ("scheduled_at", _utc(at) if at is not None else None),
        ("name", name),
        ("timeout_seconds", timeout),
        ("queue", queue),
        ("script_content", _script(script) if script is not None else None),
    ):
        if value is not None:
            changes[field] = value
    if not changes and max_attempts is None:
        raise errors.InvalidArgument(errors.FieldViolation("job", "nothing to change: give at least one option"))

    async def update(client: Any) -> Job:
        current: Job = await client.jobs.get(job_id)
        paths = list(changes)
        updated = replace(current, **changes)
        if max_attempts is not None:
            updated = replace(updated, retry_policy=replace(current.retry_policy, max_attempts=max_attempts))
            paths.append("retry_policy.max_attempts")
        result: Job = await client.jobs.update(updated, paths)
        return result

    _render.job(s.call(update), s.format(output))


@jobs_app.command("pause")
def pause_job(ctx: typer.Context, job_id: JobId, output: OutputOption = None) -> None:
    """Pause a job: its slots are not run until it is resumed."""
    s = State.of(ctx)
    _render.job(s.call(lambda c: c.jobs.pause(job_id)), s.format(output))


@jobs_app.command("resume")
def resume_job(ctx: typer.Context, job_id: JobId, output: OutputOption = None) -> None:
    """Resume a paused job."""
    s = State.of(ctx)
    _render.job(s.call(lambda c: c.jobs.resume(job_id)), s.format(output))


@jobs_app.command("delete")
def delete_job(ctx: typer.Context, job_id: JobId, output: OutputOption = None) -> None:
    """Delete a job (its run history stays)."""
    s = State.of(ctx)
    _render.job(s.call(lambda c: c.jobs.delete(job_id)), s.format(output))


@jobs_app.command("run")
def run_job(
    ctx: typer.Context,
    job_id: JobId,
    follow_output: Annotated[
        bool, typer.Option("--follow", "-f", help="print its output as it comes; exit with the run's code")
    ] = False,
    output: OutputOption = None,
) -> None:
    """Run a job now, outside its schedule."""
    s = State.of(ctx)
    started: Run = s.call(lambda c: c.jobs.run_now(job_id))
    if not follow_output:
        _render.run(started, s.format(output))
        return
    print(f"jobmesh: run {started.id}", file=sys.stderr)
    raise typer.Exit(follow(s, started.id))


@schedule_app.command("preview")
def preview_schedule(
    ctx: typer.Context,
    cron: Annotated[str, typer.Argument(help='cron expression, e.g. "30 2 * * *"')],
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone")] = "UTC",
    count: Annotated[int, typer.Option("--count", "-n", help="how many fire times")] = 10,
    output: OutputOption = None,
) -> None:
    """The next fire times of a cron expression in a zone (* marks a DST transition)."""
    s = State.of(ctx)
    _render.preview(s.call(lambda c: c.jobs.preview_schedule(cron, tz, count=count)), s.format(output))
