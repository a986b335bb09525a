"""HealthService: decode → monitor_svc.health → encode (also the JSON of the HTTP endpoints)."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from core.domain import ts_to_proto
from gen.jobmesh.v1 import health_pb2, health_pb2_grpc
from monitor_svc.health import Figures, HealthReport, MeshHealth
from monitor_svc.metrics import MetricsCollector

_STATUS = {
    "SERVING": health_pb2.HEALTH_STATUS_SERVING,
    "DEGRADED": health_pb2.HEALTH_STATUS_DEGRADED,
    "NOT_SERVING": health_pb2.HEALTH_STATUS_NOT_SERVING,
}


def report_to_proto(report: HealthReport) -> health_pb2.GetHealthResponse:
    return health_pb2.GetHealthResponse(
        status=_STATUS[report.status],
        components=[
            health_pb2.ComponentHealth(name=c.name, status=_STATUS[c.status], detail=c.detail)
            for c in report.components
        ],
        check_time=ts_to_proto(report.checked_at),
    )


def figures_to_proto(figures: Figures) -> health_pb2.GetMetricsResponse:
    return health_pb2.GetMetricsResponse(
        jobs_by_state=figures.jobs_by_state,
        runs_by_status=figures.runs_by_status,
        queue_depths=figures.queue_depths,
        workers_alive=figures.workers_alive,
        oldest_pending_age_seconds=figures.oldest_pending_age_seconds,
        runs_last_minute=figures.runs_last_minute,
        runs_last_hour=figures.runs_last_hour,
    )


def to_json(message: Any) -> dict[str, Any]:
    result: dict[str, Any] = MessageToDict(message, always_print_fields_with_no_presence=True)
    return result


class HealthServicer(health_pb2_grpc.HealthServiceServicer):
    def __init__(self, health: MeshHealth, collector: MetricsCollector) -> None:
        self._health = health
        self._collector = collector

    async def GetHealth(
        self, request: health_pb2.GetHealthRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.GetHealthResponse:
        return report_to_proto(await self._health.check())

    async def GetMetrics(
        self, request: health_pb2.GetMetricsRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.GetMetricsResponse:
        return figures_to_proto(await self._collector.refresh())
