"""JobService: decode → scheduler_svc.jobs → encode."""

from __future__ import annotations

import grpc

from core.auth import current_principal
from core.domain import Job, JobState, JobType, enum_from_proto, job_changes_from_proto, ts_from_proto
from gen.jobmesh.v1 import job_pb2, job_pb2_grpc, run_pb2
from scheduler_svc.jobs import Jobs


class JobServicer(job_pb2_grpc.JobServiceServicer):
    def __init__(self, jobs: Jobs) -> None:
        self._jobs = jobs

    async def CreateJob(self, request: job_pb2.CreateJobRequest, context: grpc.aio.ServicerContext) -> job_pb2.Job:
        job = await self._jobs.create(current_principal(), Job.from_proto(request.job), request.request_id)
        return job.to_proto()

    async def GetJob(self, request: job_pb2.GetJobRequest, context: grpc.aio.ServicerContext) -> job_pb2.Job:
        return (await self._jobs.get(current_principal(), request.id)).to_proto()

    async def ListJobs(
        self, request: job_pb2.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> job_pb2.ListJobsResponse:
        page = await self._jobs.list_page(
            current_principal(),
            state=enum_from_proto(JobState, request.state),
            job_type=enum_from_proto(JobType, request.job_type),
            owner_id=request.owner_id,
            page_size=request.page_size,
            page_token=request.page_token,
            skip=request.skip,
        )
        return job_pb2.ListJobsResponse(
            jobs=[j.to_proto() for j in page.jobs], next_page_token=page.next_page_token, total_size=page.total_size
        )

    async def UpdateJob(self, request: job_pb2.UpdateJobRequest, context: grpc.aio.ServicerContext) -> job_pb2.Job:
        principal = current_principal()
        current = await self._jobs.writable(principal, request.job.id, "job.id")
        changes = job_changes_from_proto(request.job, list(request.update_mask.paths), current)
        job = await self._jobs.update(principal, request.job.id, request.job.version, changes)
        return job.to_proto()

    async def DeleteJob(self, request: job_pb2.DeleteJobRequest, context: grpc.aio.ServicerContext) -> job_pb2.Job:
        return (await self._jobs.delete(current_principal(), request.id)).to_proto()

    async def PauseJob(self, request: job_pb2.PauseJobRequest, context: grpc.aio.ServicerContext) -> job_pb2.Job:
        return (await self._jobs.pause(current_principal(), request.id)).to_proto()

    async def ResumeJob(self, request: job_pb2.ResumeJobRequest, context: grpc.aio.ServicerContext) -> job_pb2.Job:
        return (await self._jobs.resume(current_principal(), request.id)).to_proto()

    async def RunJobNow(self, request: job_pb2.RunJobNowRequest, context: grpc.aio.ServicerContext) -> run_pb2.Run:
        return (await self._jobs.run_now(current_principal(), request.id)).to_proto()

    async def PreviewSchedule(
        self, request: job_pb2.PreviewScheduleRequest, context: grpc.aio.ServicerContext
    ) -> job_pb2.PreviewScheduleResponse:
        current_principal()
        after = ts_from_proto(request.after) if request.HasField("after") else None
        slots = Jobs.preview(request.cron_expr, request.timezone, request.count, after)
        response = job_pb2.PreviewScheduleResponse()
        for slot in slots:
            fire = response.fire_times.add(
                local_time=slot.local.isoformat(),
                utc_offset=slot.utc_offset,
                dst_transition=slot.dst_transition,
                note=slot.note,
            )
            fire.time.FromDatetime(slot.at)
        return response
