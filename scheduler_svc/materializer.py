"""Materializer: turns due schedule cursors into run rows.

Cost is O(due cursors): the claim reads ``next_fire_at <= now + lookahead`` through
its index. Missed slots (older than the misfire grace) follow the job's misfire
policy and are all recorded: SKIP records each as SKIPPED; RUN_ONCE runs the latest
as CATCH_UP and records the rest; RUN_ALL runs up to a cap of the latest as
CATCH_UP and records the excess as SKIPPED.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from core import cron
from core.attempts import new_run
from core.domain import JobState, MisfirePolicy, Run, RunStatus, RunTrigger, SkipReason, utcnow
from db.repositories.schedules import ScheduleRepository

log = logging.getLogger(__name__)

# Slots enumerated per job per tick; a longer backlog continues next tick.
MAX_SLOTS_PER_JOB = 1000


@dataclass(frozen=True)
class MaterializerConfig:
    lookahead: timedelta
    misfire_grace: timedelta
    run_all_cap: int
    batch_size: int


def plan_slots(
    slots: list[datetime], policy: MisfirePolicy, now: datetime, grace: timedelta, cap: int, more_follow: bool
) -> list[tuple[datetime, RunTrigger | None]]:
    """For each slot: the trigger to run it with, or None to record it SKIPPED (misfire).

    ``more_follow`` means the enumeration stopped at its limit while still in missed
    territory: the policy's runs belong to the final chunk, so this chunk is skipped.
    """
    missed = [s for s in slots if s < now - grace]
    timely = [s for s in slots if s >= now - grace]
    plan: list[tuple[datetime, RunTrigger | None]] = []
    if missed:
        if more_follow and not timely:
            run_set: set[datetime] = set()
        elif policy is MisfirePolicy.SKIP:
            run_set = set()
        elif policy is MisfirePolicy.RUN_ALL:
            run_set = set(missed[-cap:]) if cap > 0 else set()
        else:
            run_set = {missed[-1]}
        plan.extend((s, RunTrigger.CATCH_UP if s in run_set else None) for s in missed)
    plan.extend((s, RunTrigger.SCHEDULE) for s in timely)
    return plan


class Materializer:
    def __init__(self, schedules: ScheduleRepository, config: MaterializerConfig) -> None:
        self._schedules = schedules
        self.config = config

    async def tick(self, now: datetime | None = None) -> int:
        """One pass; returns the number of run rows written (including SKIPPED)."""
        now = now or utcnow()
        cfg = self.config
        until = now + cfg.lookahead
        written = 0
        async with self._schedules.claim_due(until, cfg.batch_size) as batch:
            runs: list[Run] = []
            cursors: dict[str, datetime] = {}
            fired: dict[str, datetime] = {}
            drop: list[str] = []
            for item in batch.items:
                job = item.job
                if job is None or job.state is not JobState.ACTIVE or not job.cron_expr:
                    drop.append(item.job_id)
                    continue
                try:
                    schedule = cron.parse(job.cron_expr)
                    tz = cron.zone(job.timezone)
                except cron.CronError:
                    log.error("job %s has an invalid schedule; removing it from the hot set", job.id)
                    drop.append(item.job_id)
                    continue
                slots = [item.next_fire_at]
                slots.extend(schedule.slots_between(item.next_fire_at, until, tz, MAX_SLOTS_PER_JOB - 1))
                more_follow = len(slots) >= MAX_SLOTS_PER_JOB
                for slot, trigger in plan_slots(
                    slots, job.misfire_policy, now, cfg.misfire_grace, cfg.run_all_cap, more_follow
                ):
                    if trigger is None:
                        runs.append(
                            new_run(
                                job,
                                slot,
                                RunTrigger.SCHEDULE,
                                status=RunStatus.SKIPPED,
                                skip_reason=SkipReason.MISFIRE.value,
                                now=now,
                            )
                        )
                    else:
                        due = now if trigger is RunTrigger.CATCH_UP else slot
                        runs.append(new_run(job, slot, trigger, due_at=due))
                fired[job.id] = slots[-1]
                following = schedule.next_after(slots[-1], tz)
                if following is None:  # the calendar ends (year 9999)
                    drop.append(job.id)
                else:
                    cursors[job.id] = following
            await batch.commit(runs, cursors, fired, drop, now)
            written = len(runs)
        return written
