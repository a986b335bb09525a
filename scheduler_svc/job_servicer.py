"""JobService: decode (core.convert) → scheduler_svc.jobs → encode (core.convert)."""

from __future__ import annotations

import grpc

from core import convert, cron
from core.auth import current_principal
from core.rpc import ServiceSpec
from gen.jobmesh.v1 import job_pb2, job_pb2_grpc, run_pb2
from scheduler_svc.jobs import Jobs


class JobServicer(job_pb2_grpc.JobServiceServicer):
    def __init__(self, jobs: Jobs) -> None:
        self._jobs = jobs

    def spec(self) -> ServiceSpec:
        """This servicer as create_server registers it."""
        return job_pb2_grpc.add_JobServiceServicer_to_server, self, "jobmesh.v1.JobService"

    async def CreateJob(self, request: job_pb2.CreateJobRequest, context: grpc.aio.ServicerContext) -> job_pb2.Job:
        job = convert.job_from_proto(request.job)
        return convert.job_to_proto(await self._jobs.create(current_principal(), job, request.request_id))

    async def GetJob(self, request: job_pb2.GetJobRequest, context: grpc.aio.ServicerContext) -> job_pb2.Job:
        return convert.job_to_proto(await self._jobs.get(current_principal(), request.id))

    async def ListJobs(
        self, request: job_pb2.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> job_pb2.ListJobsResponse:
        page = await self._jobs.list_page(
            current_principal(),
            state=convert.JOB_STATES.from_proto(request.state, "state"),
            job_type=convert.JOB_TYPES.from_proto(request.job_type, "job_type"),
            owner_id=request.owner_id,
            queue=request.queue,
            name_contains=request.name_contains,
            page_size=request.page_size,
            page_token=request.page_token,
            skip=request.skip,
        )
        return convert.job_page_to_proto(page)

    async def UpdateJob(self, request: job_pb2.UpdateJobRequest, context: grpc.aio.ServicerContext) -> job_pb2.Job:
        principal = current_principal()
        current = await self._jobs.writable(principal, request.job.id, "job.id")
        changes = convert.job_changes_from_proto(request.job, list(request.update_mask.paths), current)
        return convert.job_to_proto(await self._jobs.update(principal, request.job.id, request.job.version, changes))

    async def DeleteJob(self, request: job_pb2.DeleteJobRequest, context: grpc.aio.ServicerContext) -> job_pb2.Job:
        return convert.job_to_proto(await self._jobs.delete(current_principal(), request.id))

    async def PauseJob(self, request: job_pb2.PauseJobRequest, context: grpc.aio.ServicerContext) -> job_pb2.Job:
        return convert.job_to_proto(await self._jobs.pause(current_principal(), request.id))

    async def ResumeJob(self, request: job_pb2.ResumeJobRequest, context: grpc.aio.ServicerContext) -> job_pb2.Job:
        return convert.job_to_proto(await self._jobs.resume(current_principal(), request.id))

    async def RunJobNow(self, request: job_pb2.RunJobNowRequest, context: grpc.aio.ServicerContext) -> run_pb2.Run:
        return convert.run_to_proto(await self._jobs.run_now(current_principal(), request.id))

    async def PreviewSchedule(
        self, request: job_pb2.PreviewScheduleRequest, context: grpc.aio.ServicerContext
    ) -> job_pb2.PreviewScheduleResponse:
        current_principal()
        after = convert.optional_timestamp(request, "after")
        slots = Jobs.preview(request.cron_expr, request.timezone, request.count, after)
        return convert.preview_to_proto(slots, cron.describe(request.cron_expr))
