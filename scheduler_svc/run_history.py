"""Run history across jobs, with the visibility rules of jobs: the newest runs of many
jobs at once (a job list's strips) and the runs executing now."""

from __future__ import annotations

from dataclasses import dataclass

from core import validation
from core.auth import Principal
from core.domain import Run
from core.errors import Violations
from core.ids import is_uuid
from db.repositories.run_history import RunHistoryRepository

MAX_JOBS = 100
MAX_RUNS_PER_JOB = 50
DEFAULT_RUNS_PER_JOB = 20


@dataclass(frozen=True)
class JobRecentRuns:
    job_id: str
    runs: list[Run]


@dataclass(frozen=True)
class RunningRuns:
    runs: list[Run]
    job_names: dict[str, str]
    total_size: int


class RunHistory:
    def __init__(self, history: RunHistoryRepository) -> None:
        self._history = history

    async def recent(self, principal: Principal, job_ids: list[str], count: int) -> list[JobRecentRuns]:
        """The newest ``count`` runs of each job in ``job_ids``, in the order asked. A job
        the caller may not see answers as one without runs (ids cannot be probed)."""
        v = Violations()
        if len(job_ids) > MAX_JOBS:
            v.add("job_ids", f"must have at most {MAX_JOBS} entries (got {len(job_ids)})")
        for index, job_id in enumerate(job_ids):
            if not is_uuid(job_id):
                v.add(f"job_ids[{index}]", "must be a job id (UUID)")
        if not 0 <= count <= MAX_RUNS_PER_JOB:
            v.add("count", f"must be between 1 and {MAX_RUNS_PER_JOB} (0 means {DEFAULT_RUNS_PER_JOB})")
        v.raise_if_any()
        unique = list(dict.fromkeys(job_ids))
        owner = None if principal.reads_everything else principal.user_id
        visible = await self._history.visible_job_ids(unique, owner)
        runs = await self._history.recent_for_jobs([j for j in unique if j in visible], count or DEFAULT_RUNS_PER_JOB)
        return [JobRecentRuns(job_id, runs.get(job_id, [])) for job_id in job_ids]

    async def running(self, principal: Principal, page_size: int) -> RunningRuns:
        v = Violations()
        size = validation.check_page_size(v, page_size)
        v.raise_if_any()
        owner = None if principal.reads_everything else principal.user_id
        runs, names, total = await self._history.running(owner, size)
        return RunningRuns(runs, names, total)
