"""Builders for job protos used across tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from gen.jobmesh.v1 import job_pb2


def ts(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def recurring(cron: str = "*/5 * * * *", script: str = "print('hi')", **fields: Any) -> job_pb2.Job:
    return job_pb2.Job(
        name=fields.pop("name", "recurring"),
        job_type=job_pb2.JOB_TYPE_RECURRING,
        cron_expr=cron,
        script_content=script,
        **fields,
    )


def one_time(at: datetime | None = None, script: str = "print('once')", **fields: Any) -> job_pb2.Job:
    return job_pb2.Job(
        name=fields.pop("name", "one-time"),
        job_type=job_pb2.JOB_TYPE_ONE_TIME,
        scheduled_at=ts(at or datetime.now(UTC) + timedelta(hours=1)),
        script_content=script,
        **fields,
    )
