"""Logging setup with job/run/request/worker ids carried in context variables.

Only entry points call ``configure_logging``; modules use ``logging.getLogger(__name__)``.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from typing import Any

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
job_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("job_id", default="")
run_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("run_id", default="")
worker_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("worker_id", default="")

_CONTEXT = {
    "request_id": request_id_var,
    "job_id": job_id_var,
    "run_id": run_id_var,
    "worker_id": worker_id_var,
}


class ContextFilter(logging.Filter):
    """Copies the context variables onto every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _CONTEXT.items():
            if not hasattr(record, name):
                setattr(record, name, var.get())
        return True


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        ctx = " ".join(f"{k}={getattr(record, k)}" for k in _CONTEXT if getattr(record, k, ""))
        return f"{base} {ctx}" if ctx else base


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _CONTEXT:
            value = getattr(record, name, "")
            if value:
                data[name] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data)


def configure_logging(level: str = "INFO", as_json: bool = False, process: str = "") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    fmt = f"%(asctime)s %(levelname)s {process + ' ' if process else ''}%(name)s: %(message)s"
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
