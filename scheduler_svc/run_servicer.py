"""RunService: decode → scheduler_svc.runs → encode."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from core.auth import current_principal
from core.domain import RunStatus, enum_from_proto
from gen.jobmesh.v1 import run_pb2, run_pb2_grpc
from scheduler_svc.runs import OutputChunk, Runs


class RunServicer(run_pb2_grpc.RunServiceServicer):
    def __init__(self, runs: Runs) -> None:
        self._runs = runs

    async def ListRuns(
        self, request: run_pb2.ListRunsRequest, context: grpc.aio.ServicerContext
    ) -> run_pb2.ListRunsResponse:
        page = await self._runs.list_page(
            current_principal(),
            request.job_id,
            enum_from_proto(RunStatus, request.status),
            request.page_size,
            request.page_token,
            request.skip,
        )
        return run_pb2.ListRunsResponse(runs=[r.to_proto() for r in page.runs], next_page_token=page.next_page_token)

    async def GetRun(self, request: run_pb2.GetRunRequest, context: grpc.aio.ServicerContext) -> run_pb2.Run:
        return (await self._runs.visible(current_principal(), request.run_id, request.job_id)).to_proto()

    async def GetRunLogs(
        self, request: run_pb2.GetRunLogsRequest, context: grpc.aio.ServicerContext
    ) -> run_pb2.GetRunLogsResponse:
        out = await self._runs.logs(current_principal(), request.run_id, request.job_id)
        return run_pb2.GetRunLogsResponse(
            run_id=out.run_id,
            stdout=out.stdout,
            stderr=out.stderr,
            stdout_truncated=out.stdout_truncated,
            stderr_truncated=out.stderr_truncated,
        )

    async def CancelRun(self, request: run_pb2.CancelRunRequest, context: grpc.aio.ServicerContext) -> run_pb2.Run:
        return (await self._runs.cancel(current_principal(), request.run_id, request.job_id)).to_proto()

    async def WatchRun(
        self, request: run_pb2.WatchRunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[run_pb2.WatchRunResponse]:
        async for event in self._runs.watch(current_principal(), request.run_id, request.job_id):
            if isinstance(event, OutputChunk):
                stream = run_pb2.LOG_STREAM_STDOUT if event.stream == "stdout" else run_pb2.LOG_STREAM_STDERR
                yield run_pb2.WatchRunResponse(chunk=run_pb2.LogChunk(stream=stream, data=event.data))
            else:
                yield run_pb2.WatchRunResponse(run=event.to_proto())
