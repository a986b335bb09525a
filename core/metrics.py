"""Prometheus instruments shared by the processes (names in base units)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

GRPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
GRPC_HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Time to handle an RPC on the server.",
    ["grpc_service", "grpc_method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


Observe = Callable[[grpc.StatusCode, float], None]


def rpc_observer(service: str, method: str) -> Observe:
    """``observe(code, seconds)`` for one method, its labelled series looked up once."""
    handling = GRPC_HANDLING.labels(service, method)
    handled: dict[grpc.StatusCode, Any] = {}

    def observe(code: grpc.StatusCode, seconds: float) -> None:
        counter = handled.get(code)
        if counter is None:
            counter = handled[code] = GRPC_HANDLED.labels(service, method, code.name)
        counter.inc()
        handling.observe(seconds)

    return observe
