"""Output for people (Rich tables) and for scripts (``--output json``: the proto JSON
mapping, the same bodies the REST API answers)."""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table

from core import convert
from core.domain import Job, JobType, PreviewSlot, Run, RunOutput, User
from core.paging import Page
from jobmesh_client import SchedulePreview


class Format(enum.StrEnum):
    TABLE = "table"
    JSON = "json"


def console() -> Console:
    # Piped, a table keeps whole ids on one line rather than folding them to 80 columns.
    return Console(width=None if sys.stdout.isatty() else 240, highlight=False)


def print_json(message: Message) -> None:
    print(json.dumps(MessageToDict(message), indent=2))


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value is not None else "-"


def schedule_of(job: Job) -> str:
    if job.job_type is JobType.RECURRING:
        return f"{job.cron_expr} ({job.timezone})"
    return f"once at {when(job.scheduled_at)}"


def _table(*columns: str) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def jobs(page: Page[Job] | Sequence[Job], fmt: Format) -> None:
    items = page.items if isinstance(page, Page) else list(page)
    if fmt is Format.JSON:
        token = page.next_page_token if isinstance(page, Page) else ""
        print_json(convert.job_page_to_proto(Page(items, token, len(items) if not token else None)))
        return
    table = _table("ID", "NAME", "TYPE", "SCHEDULE", "STATE", "NEXT FIRE", "VERSION")
    for j in items:
        kind = j.job_type.value if j.job_type else "-"
        table.add_row(j.id, j.name, kind, schedule_of(j), j.state.value, when(j.next_fire_time), str(j.version))
    console().print(table)


def job(j: Job, fmt: Format) -> None:
    if fmt is Format.JSON:
        print_json(convert.job_to_proto(j))
        return
    rows = {
        "id": j.id,
        "name": j.name,
        "type": j.job_type.value if j.job_type else "-",
        "schedule": schedule_of(j),
        "state": j.state.value,
        "next fire": when(j.next_fire_time),
        "timeout": f"{j.timeout_seconds} s",
        "retries": f"{j.retry_policy.max_attempts} attempts, {j.retry_policy.strategy.value}",
        "queue": j.queue,
        "version": str(j.version),
        "created": when(j.create_time),
        "updated": when(j.update_time),
    }
    _fields(rows)


def _fields(rows: dict[str, str]) -> None:
    table = _table("", "")
    table.show_header = False
    for key, value in rows.items():
        table.add_row(key, value)
    console().print(table)


def runs(page: Page[Run], fmt: Format) -> None:
    if fmt is Format.JSON:
        print_json(convert.run_page_to_proto(page))
        return
    table = _table("ID", "JOB", "ATTEMPT", "STATUS", "TRIGGER", "SCHEDULED", "STARTED", "FINISHED", "EXIT")
    for r in page.items:
        table.add_row(
            r.id,
            r.job_id,
            str(r.attempt),
            r.status.value,
            r.trigger.value,
            when(r.scheduled_at),
            when(r.started_at),
            when(r.finished_at),
            str(r.exit_code) if r.status.is_final else "-",
        )
    console().print(table)


def run(r: Run, fmt: Format) -> None:
    if fmt is Format.JSON:
        print_json(convert.run_to_proto(r))
        return
    rows = {
        "id": r.id,
        "job": r.job_id,
        "attempt": str(r.attempt),
        "status": r.status.value,
        "trigger": r.trigger.value,
        "scheduled": when(r.scheduled_at),
        "queued": when(r.queued_at),
        "started": when(r.started_at),
        "finished": when(r.finished_at),
        "worker": r.worker_id or "-",
        "exit code": str(r.exit_code) if r.status.is_final else "-",
    }
    if r.error:
        rows["error"] = r.error
    if r.skip_reason:
        rows["skip reason"] = r.skip_reason
    _fields(rows)


def output(out: RunOutput, fmt: Format) -> None:
    if fmt is Format.JSON:
        print_json(convert.run_output_to_proto(out))
        return
    sys.stdout.write(out.stdout)
    sys.stderr.write(out.stderr)
    for name, cut in (("stdout", out.stdout_truncated), ("stderr", out.stderr_truncated)):
        if cut:
            print(f"jobmesh: {name} was truncated: only its tail is kept", file=sys.stderr)


def users(page: Page[User], fmt: Format) -> None:
    if fmt is Format.JSON:
        print_json(convert.user_page_to_proto(page))
        return
    table = _table("ID", "USERNAME", "EMAIL", "ROLE", "DISABLED", "CREATED")
    for u in page.items:
        table.add_row(u.id, u.username, u.email, u.role.value, "yes" if u.disabled else "no", when(u.create_time))
    console().print(table)


def user(u: User, fmt: Format) -> None:
    users(Page([u], ""), fmt) if fmt is Format.TABLE else print_json(convert.user_to_proto(u))


def preview(p: SchedulePreview, fmt: Format) -> None:
    if fmt is Format.JSON:
        print_json(convert.preview_to_proto(p.fire_times, p.description))
        return
    console().print(p.description)
    table = _table("LOCAL TIME", "UTC", "OFFSET", "NOTE")
    for slot in p.fire_times:
        table.add_row(_local(slot), when(slot.at), slot.utc_offset, slot.note)
    console().print(table)


def _local(slot: PreviewSlot) -> str:
    return slot.local.strftime("%Y-%m-%d %H:%M:%S") + (" *" if slot.dst_transition else "")


def plain(data: dict[str, Any], fmt: Format, text: str) -> None:
    print(json.dumps(data, indent=2) if fmt is Format.JSON else text)
