"""HealthService: monitor_svc.health → encode (core.convert); to_json gives the HTTP
endpoints the same body, the message's JSON mapping."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from core import convert
from core.rpc import ServiceSpec
from gen.jobmesh.v1 import health_pb2, health_pb2_grpc
from monitor_svc.health import MeshHealth
from monitor_svc.metrics import MetricsCollector

SERVICE = "jobmesh.v1.HealthService"


def to_json(message: Message) -> dict[str, Any]:
    result: dict[str, Any] = MessageToDict(message, always_print_fields_with_no_presence=True)
    return result


class HealthServicer(health_pb2_grpc.HealthServiceServicer):
    def __init__(self, health: MeshHealth, collector: MetricsCollector) -> None:
        self._health = health
        self._collector = collector

    def spec(self) -> ServiceSpec:
        """This servicer as create_server registers it."""
        return health_pb2_grpc.add_HealthServiceServicer_to_server, self, SERVICE

    async def GetHealth(
        self, request: health_pb2.GetHealthRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.GetHealthResponse:
        return convert.health_report_to_proto(await self._health.check())

    async def GetMetrics(
        self, request: health_pb2.GetMetricsRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.GetMetricsResponse:
        return convert.figures_to_proto(await self._collector.refresh())
