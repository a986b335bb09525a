"""RunService: decode (core.convert) → scheduler_svc.runs → encode (core.convert)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from core import convert
from core.auth import current_principal
from core.rpc import ServiceSpec
from gen.jobmesh.v1 import run_pb2, run_pb2_grpc
from scheduler_svc.run_history import RunHistory
from scheduler_svc.runs import Runs


class RunServicer(run_pb2_grpc.RunServiceServicer):
    def __init__(self, runs: Runs, history: RunHistory) -> None:
        self._runs = runs
        self._history = history

    def spec(self) -> ServiceSpec:
        """This servicer as create_server registers it."""
        return run_pb2_grpc.add_RunServiceServicer_to_server, self, "jobmesh.v1.RunService"

    async def ListRuns(
        self, request: run_pb2.ListRunsRequest, context: grpc.aio.ServicerContext
    ) -> run_pb2.ListRunsResponse:
        page = await self._runs.list_page(
            current_principal(),
            request.job_id,
            convert.RUN_STATUSES.from_proto(request.status, "status"),
            request.page_size,
            request.page_token,
            request.skip,
        )
        return convert.run_page_to_proto(page)

    async def GetRun(self, request: run_pb2.GetRunRequest, context: grpc.aio.ServicerContext) -> run_pb2.Run:
        return convert.run_to_proto(await self._runs.visible(current_principal(), request.run_id, request.job_id))

    async def GetRunLogs(
        self, request: run_pb2.GetRunLogsRequest, context: grpc.aio.ServicerContext
    ) -> run_pb2.GetRunLogsResponse:
        output = await self._runs.logs(current_principal(), request.run_id, request.job_id)
        return convert.run_output_to_proto(output)

    async def CancelRun(self, request: run_pb2.CancelRunRequest, context: grpc.aio.ServicerContext) -> run_pb2.Run:
        return convert.run_to_proto(await self._runs.cancel(current_principal(), request.run_id, request.job_id))

    async def WatchRun(
        self, request: run_pb2.WatchRunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[run_pb2.WatchRunResponse]:
        async for event in self._runs.watch(current_principal(), request.run_id, request.job_id):
            yield convert.watch_event_to_proto(event)

    async def BatchListRecentRuns(
        self, request: run_pb2.BatchListRecentRunsRequest, context: grpc.aio.ServicerContext
    ) -> run_pb2.BatchListRecentRunsResponse:
        found = await self._history.recent(current_principal(), list(request.job_ids), request.count)
        return run_pb2.BatchListRecentRunsResponse(
            jobs=[run_pb2.JobRecentRuns(job_id=j.job_id, runs=[convert.run_to_proto(r) for r in j.runs]) for j in found]
        )

    async def ListRunningRuns(
        self, request: run_pb2.ListRunningRunsRequest, context: grpc.aio.ServicerContext
    ) -> run_pb2.ListRunningRunsResponse:
        found = await self._history.running(current_principal(), request.page_size)
        return run_pb2.ListRunningRunsResponse(
            runs=[convert.run_to_proto(r) for r in found.runs], job_names=found.job_names, total_size=found.total_size
        )
