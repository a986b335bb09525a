"""Prometheus metrics of the whole mesh, served by the monitor's /metrics.

Gauges are read from the database and Redis at scrape time. Counters and
histograms about runs are derived from the run table itself: the monitor follows
``finished_at`` with a cursor and observes every run that ended since the last
scrape, so workers and schedulers on any host need no metrics endpoint of their
own. (Per-process gRPC instruments are served by each gRPC process's own port:
the monitor's here, the scheduler's on JOBMESH_SCHEDULER_METRICS_PORT.)
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from prometheus_client import Counter, Gauge, Histogram

from core.domain import Figures, RunStatus, utcnow
from db.repositories.stats import FinishedRun, StatsRepository
from monitor_svc.health import MeshHealth

# Runs committed with a finished_at slightly in the past must not slip behind the cursor.
CURSOR_LAG = timedelta(seconds=5)

JOBS = Gauge("jobmesh_jobs", "Jobs by state.", ["state"])
RUNS = Gauge("jobmesh_runs", "Runs scheduled within 24 hours of now, by status.", ["status"])
QUEUE_DEPTH = Gauge("jobmesh_queue_depth", "Messages waiting in a Redis queue.", ["queue"])
WORKERS_ALIVE = Gauge("jobmesh_workers_alive", "Workers that heartbeated within the liveness window.")
SCHEDULERS_ALIVE = Gauge("jobmesh_schedulers_alive", "Schedulers that heartbeated within the liveness window.")
OLDEST_PENDING = Gauge("jobmesh_oldest_pending_age_seconds", "Age of the oldest due PENDING or QUEUED run.")
RUN_DURATION = Histogram(
    "jobmesh_run_duration_seconds",
    "Wall-clock time from start to end of a run.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
LATENESS = Histogram(
    "jobmesh_schedule_lateness_seconds",
    "Start time minus due time (the slot, or the retry's due time) of a run.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
FINISHED = Counter("jobmesh_runs_finished_total", "Runs that ended, by final status.", ["status"])
SKIPPED = Counter("jobmesh_runs_skipped_total", "Slots recorded as SKIPPED, by reason.", ["reason"])

for _status in RunStatus:
    if _status.is_final and _status is not RunStatus.SKIPPED:
        FINISHED.labels(_status.value)
for _reason in ("paused", "overlap", "misfire", "late", "job_deleted"):
    SKIPPED.labels(_reason)


class MetricsCollector:
    def __init__(self, health: MeshHealth, stats: StatsRepository) -> None:
        self._health = health
        self._stats = stats
        self._cursor = utcnow()
        self._lock = asyncio.Lock()
        self.last: Figures = Figures()

    async def refresh(self) -> Figures:
        """Read the current figures and observe the runs that ended since the last call."""
        async with self._lock:
            figures = await self._health.figures()
            for state, n in figures.jobs_by_state.items():
                JOBS.labels(state).set(n)
            for status, n in figures.runs_by_status.items():
                RUNS.labels(status).set(n)
            for queue, n in figures.queue_depths.items():
                QUEUE_DEPTH.labels(queue).set(n)
            WORKERS_ALIVE.set(figures.workers_alive)
            SCHEDULERS_ALIVE.set(figures.schedulers_alive)
            OLDEST_PENDING.set(figures.oldest_pending_age_seconds)
            until = utcnow() - CURSOR_LAG
            if until > self._cursor:
                for run in await self._stats.finished_between(self._cursor, until):
                    self._observe(run)
                    self._cursor = max(self._cursor, run.finished_at)
                self._cursor = max(self._cursor, until)
            self.last = figures
            return figures

    @staticmethod
    def _observe(run: FinishedRun) -> None:
        if run.status == RunStatus.SKIPPED.value:
            SKIPPED.labels(run.skip_reason or "unknown").inc()
            return
        FINISHED.labels(run.status).inc()
        if run.started_at is not None:
            RUN_DURATION.observe(max(0.0, (run.finished_at - run.started_at).total_seconds()))
            LATENESS.observe(max(0.0, (run.started_at - run.due_at).total_seconds()))
