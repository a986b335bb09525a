"""Cron schedules evaluated in a job's IANA time zone.

Expressions: 5 fields (minute hour day month weekday), 6 fields with seconds
first, or @hourly/@daily/@weekly/@monthly/@yearly (also @annually, @midnight).

DST rule (DESIGN.md invariant 6): slots are computed on the local wall clock and
then mapped to UTC. A local time that does not exist (spring forward) fires once
at the first valid instant after it; a local time that occurs twice (fall back)
fires once, at its first occurrence. Fire times are strictly increasing in UTC,
so two wall-clock slots that land on the same instant fire once.

croniter's constructor costs ~100-340 µs, so each expression is parsed once and
its iterator reused (``set_current`` + ``get_next`` ~50 µs).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_EPOCH = datetime(2000, 1, 1)
_MAX_SCAN = 10_000
_MEMO_SIZE = 4096  # answers kept per expression


class CronError(ValueError):
    """The expression or time zone is not valid; str() says why."""


@functools.lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    if not name or name != name.strip() or ".." in name or name.startswith("/"):
        raise CronError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise CronError(f"unknown time zone {name!r}") from exc


@dataclass(frozen=True)
class LocalSlot:
    """A fire time with what the DST rule did to it."""

    at: datetime  # UTC
    local: datetime  # aware, in the schedule's zone
    nonexistent: bool  # the wall-clock slot fell in a gap and was moved forward
    ambiguous: bool  # the wall-clock slot occurs twice; this is its first occurrence


class CronSchedule:
    """A parsed expression; evaluate with ``next_after``."""

    def __init__(self, expression: str) -> None:
        text = " ".join(expression.split())
        normalized = _ALIASES.get(text.lower(), text)
        fields = normalized.split(" ")
        if text.startswith("@") and text.lower() not in _ALIASES:
            raise CronError(f"unknown alias {text!r}; use one of {', '.join(sorted(_ALIASES))}")
        if len(fields) not in (5, 6):
            raise CronError(f"expected 5 fields, or 6 with seconds first; got {len(fields)}")
        self.expression = text
        self.has_seconds = len(fields) == 6
        # Answers already worked out: jobs sharing an expression (every minute, hourly,
        # ...) ask for the same slots, and croniter takes ~0.1 ms per step.
        self._memo: dict[tuple[datetime, ZoneInfo], LocalSlot] = {}
        try:
            self._iter = croniter(normalized, _EPOCH, second_at_beginning=self.has_seconds)
            self._iter.get_next(datetime)  # surfaces impossible dates (e.g. 30 Feb) early
        except (ValueError, KeyError, TypeError, OverflowError) as exc:
            raise CronError(f"invalid cron expression: {exc}") from exc
        except Exception as exc:  # croniter raises its own error classes
            raise CronError(f"invalid cron expression: {exc}") from exc

    def _next_naive(self, after: datetime) -> datetime:
        self._iter.set_current(after, force=True)
        result: datetime = self._iter.get_next(datetime)
        return result

    def next_slot(self, after: datetime, tz: ZoneInfo) -> LocalSlot:
        """The first fire time strictly after ``after`` (aware), per the DST rule."""
        key = (after, tz)  # aware datetimes hash and compare as instants
        slot = self._memo.get(key)
        if slot is None:
            slot = self._next_slot(after, tz)
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = slot
        return slot

    def _next_slot(self, after: datetime, tz: ZoneInfo) -> LocalSlot:
        after_utc = after.astimezone(UTC)
        # Start at the wall-clock reading of `after` (always a valid local time): a
        # wall-clock slot at or before it maps to an instant at or before `after`,
        # including gap slots (moved to the transition, which `after` has passed).
        # Later ones that map back in time (the repeated hour) are skipped below.
        cursor = after_utc.astimezone(tz).replace(tzinfo=None)
        for _ in range(_MAX_SCAN):
            cursor = self._next_naive(cursor)
            slot = _resolve(cursor, tz)
            if slot.at > after_utc:
                return slot
        raise CronError("expression never fires")

    def next_after(self, after: datetime, tz: ZoneInfo) -> datetime:
        return self.next_slot(after, tz).at

    def slots_between(self, after: datetime, until: datetime, tz: ZoneInfo, limit: int) -> list[datetime]:
        """Fire times in (after, until], at most ``limit``."""
        out: list[datetime] = []
        cursor = after
        while len(out) < limit:
            nxt = self.next_after(cursor, tz)
            if nxt > until:
                break
            out.append(nxt)
            cursor = nxt
        return out


def _resolve(naive: datetime, tz: ZoneInfo) -> LocalSlot:
    first = naive.replace(tzinfo=tz, fold=0)
    second = naive.replace(tzinfo=tz, fold=1)
    first_utc = first.astimezone(UTC)
    second_utc = second.astimezone(UTC)
    if first.utcoffset() == second.utcoffset():
        return LocalSlot(first_utc, first, nonexistent=False, ambiguous=False)
    if first_utc < second_utc:
        # Repeated wall-clock time: fold=0 is the earlier instant.
        return LocalSlot(first_utc, first, nonexistent=False, ambiguous=True)
    # Nonexistent wall-clock time: the gap starts at second_utc (fold=1 maps with
    # the post-transition offset... to an instant before the gap end). The first
    # valid instant after it is the transition itself.
    transition = _transition_in(second_utc, first_utc, tz)
    return LocalSlot(transition, transition.astimezone(tz), nonexistent=True, ambiguous=False)


def _transition_in(lo: datetime, hi: datetime, tz: ZoneInfo) -> datetime:
    """The instant in (lo, hi] where tz's offset changes, to the second."""
    before = lo.astimezone(tz).utcoffset()
    while (hi - lo) > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return hi.replace(microsecond=0) if hi.microsecond == 0 else hi


@functools.lru_cache(maxsize=4096)
def parse(expression: str) -> CronSchedule:
    """Parse once, reuse everywhere (the cache key is the raw expression)."""
    return CronSchedule(expression)
