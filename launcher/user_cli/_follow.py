"""Following a run: its output as the script writes it, its exit code at the end."""

from __future__ import annotations

import sys

from core.domain import LogStream, OutputChunk, Run
from jobmesh_client import Client

from ._exit import exit_code_of_run
from ._state import State


def follow(state: State, run_id: str) -> int:
    """Prints the run's stdout and stderr as they come (its status changes on stderr)
    until it ends; returns the exit code the command should end with."""

    async def watch(client: Client) -> Run | None:
        last: Run | None = None
        status = None
        async for event in client.watch_run(run_id):
            if isinstance(event, OutputChunk):
                stream = sys.stdout if event.stream is LogStream.STDOUT else sys.stderr
                stream.write(event.data)
                stream.flush()
                continue
            last = event
            if event.status != status:
                status = event.status
                print(f"jobmesh: run {event.id} {status.value}", file=sys.stderr, flush=True)
        return last

    final = state.call(watch)
    if final is None:
        return 1
    if final.error:
        print(f"jobmesh: {final.error}", file=sys.stderr)
    return exit_code_of_run(final)
