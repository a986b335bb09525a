"""Cron schedules evaluated in a job's IANA time zone: the Vixie/Debian dialect.

Fields are those of Debian cron as cronsim reads them (README "The cron dialect"):
5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first, or
one of the @-macros. ``a-a`` is ``a``; ranges never wrap (``FRI-MON`` is refused);
``L``, ``LW``, ``nL`` and ``n#k`` as in cronsim; ``?``, ``R``/``H`` (random or
hashed values) and anything but ASCII spaces and tabs between fields are refused.
Day-of-month and day-of-week combine by OR, unless either starts with ``*``: then
both must match (Debian's rule).

DST rule (DESIGN.md invariant 6, Debian cron's as cronsim implements it):

- A *fixed-time* expression (neither the minute nor the hour field starts with
  ``*``) is read on the wall clock: a local time that does not exist (spring
  forward) fires once, at the first valid minute after it; a local time that
  occurs twice (fall back) fires once, at its first occurrence.
- Any other expression is read on the real clock: it fires at every real instant
  whose local reading matches, so an hourly job fires in both passes of a
  repeated hour, and local times inside a gap, which never happen, do not fire.

Fire times are whole seconds and strictly increasing in UTC: two wall-clock slots
that land on one instant fire once. cronsim is the engine; a parse costs ~10 µs.
"""

from __future__ import annotations

import functools
import re
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELD_CHARS = frozenset(string.ascii_letters + string.digits + "*,-/#")
_SEPARATORS = " \t"
_EPOCH = datetime(2000, 1, 1)
_MAX_SCAN = 10_000  # wall-clock slots that map back before `after` (repeated hours)
_MEMO_SIZE = 4096  # answers kept per expression
_MINUTE = timedelta(minutes=1)


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
    ambiguous: bool  # the local time occurs twice
    wall_clock: bool  # fixed-time expression: a repeated time fires at its first occurrence only


def _fields(expression: str) -> list[str]:
    """The expression's fields, macros expanded; refuses what the dialect does not have."""
    text = expression.strip(_SEPARATORS)
    if text.startswith("@"):
        macro = _ALIASES.get(text.lower())
        if macro is None:
            raise CronError(f"unknown macro {text!r}; use one of {', '.join(sorted(_ALIASES))}")
        return macro.split(" ")
    if "?" in text:
        raise CronError("'?' is not supported; use '*'")
    odd = sorted({ch for ch in text if ch not in _FIELD_CHARS and ch not in _SEPARATORS})
    if odd:
        raise CronError(f"unexpected character {odd[0]!r}; fields are separated by spaces or tabs")
    fields = text.replace("\t", " ").split()
    if len(fields) not in (5, 6):
        raise CronError(f"expected 5 fields, or 6 with seconds first; got {len(fields)}")
    for value in fields:
        if any(term.upper() in ("R", "H") for term in re.split("[,/-]", value)):
            raise CronError(f"random or hashed values ({value!r}) are not supported")
    return fields


class CronSchedule:
    """A parsed expression; evaluate with ``next_slot`` / ``next_after``."""

    def __init__(self, expression: str) -> None:
        fields = _fields(expression)
        self.expression = " ".join(expression.split())
        self.has_seconds = len(fields) == 6
        minute, hour = fields[-5], fields[-4]
        self.wall_clock = not minute.startswith("*") and not hour.startswith("*")
        self._text = " ".join(fields)
        # Answers already worked out: jobs sharing an expression (every minute,
        # hourly, ...) ask for the same slots.
        self._memo: dict[tuple[datetime, ZoneInfo], LocalSlot | None] = {}
        try:
            next(CronSim(self._text, _EPOCH))  # also refuses dates that never come (30 Feb)
        except CronSimError as exc:
            raise CronError(_explain(str(exc), fields)) from exc
        except StopIteration as exc:
            raise CronError("the expression never fires") from exc

    @functools.cached_property
    def description(self) -> str:
        """The expression in English words (cronsim's explanation), e.g. "At 02:30 on
        Monday through Friday"; "" where cronsim has none."""
        try:
            return str(CronSim(self._text, _EPOCH).explain())
        except Exception:  # the words are a courtesy: never fail a read over them
            return ""

    def next_slot(self, after: datetime, tz: ZoneInfo) -> LocalSlot | None:
        """The first fire time strictly after ``after`` (aware), per the DST rule;
        None when there is none before the calendar ends (year 9999)."""
        key = (after, tz)  # aware datetimes hash and compare as instants
        if key in self._memo:
            return self._memo[key]
        try:
            slot = self._wall_clock_slot(after, tz) if self.wall_clock else self._real_clock_slot(after, tz)
        except (OverflowError, StopIteration):
            slot = None
        if len(self._memo) >= _MEMO_SIZE:
            self._memo.clear()
        self._memo[key] = slot
        return slot

    def _wall_clock_slot(self, after: datetime, tz: ZoneInfo) -> LocalSlot:
        after_utc = after.astimezone(UTC)
        # Start at the wall-clock reading of `after` (always a valid local time): a
        # wall-clock slot at or before it maps to an instant at or before `after`.
        # Later ones that map back in time (the repeated hour) are skipped below.
        local_times = CronSim(self._text, after_utc.astimezone(tz).replace(tzinfo=None))
        for _ in range(_MAX_SCAN):
            slot = _resolve_wall_clock(next(local_times), tz)
            if slot.at > after_utc:
                return slot
        raise CronError("the expression never fires")

    def _real_clock_slot(self, after: datetime, tz: ZoneInfo) -> LocalSlot:
        local = next(CronSim(self._text, after.astimezone(tz)))
        return LocalSlot(local.astimezone(UTC), local, False, _is_repeated(local), wall_clock=False)

    def next_after(self, after: datetime, tz: ZoneInfo) -> datetime | None:
        slot = self.next_slot(after, tz)
        return None if slot is None else slot.at

    def slots_between(self, after: datetime, until: datetime, tz: ZoneInfo, limit: int) -> list[datetime]:
        """Fire times in (after, until], at most ``limit``."""
        out: list[datetime] = []
        cursor = after
        while len(out) < limit:
            nxt = self.next_after(cursor, tz)
            if nxt is None or nxt > until:
                break
            out.append(nxt)
            cursor = nxt
        return out


_FIELD_NAMES = ["second", "minute", "hour", "day-of-month", "month", "day-of-week"]
_FIELD_RANGES = [
    "0-59",
    "0-59",
    "0-23",
    "1-31 (or L, LW) on a day some chosen month has",
    "1-12 or JAN-DEC",
    "0-7 or SUN-SAT (nL, n#k)",
]


def _explain(message: str, fields: list[str]) -> str:
    """cronsim's "Bad minute" as which value broke which rule."""
    names = _FIELD_NAMES[-len(fields) :]
    for index, name in enumerate(names):
        if message.lower() == f"bad {name}":
            allowed = _FIELD_RANGES[_FIELD_NAMES.index(name)]
            return (
                f"invalid {name} field {fields[index]!r}: values {allowed}; "
                "ranges a-b need a <= b (no wrap-around), steps */n or a-b/n with n >= 1"
            )
    return f"invalid cron expression: {message}"


def _is_repeated(local: datetime) -> bool:
    return local.replace(fold=0).utcoffset() != local.replace(fold=1).utcoffset()


def _resolve_wall_clock(naive: datetime, tz: ZoneInfo) -> LocalSlot:
    local = naive.replace(tzinfo=tz)
    if _exists(local):
        return LocalSlot(local.astimezone(UTC), local, False, _is_repeated(local), wall_clock=True)
    # In a gap: the first valid minute after it (cronsim's and Debian's rule).
    while not _exists(local):
        naive += _MINUTE
        local = naive.replace(tzinfo=tz)
    return LocalSlot(local.astimezone(UTC), local, True, False, wall_clock=True)


def _exists(local: datetime) -> bool:
    return local.astimezone(UTC).astimezone(local.tzinfo).replace(tzinfo=None) == local.replace(tzinfo=None)


@functools.lru_cache(maxsize=4096)
def parse(expression: str) -> CronSchedule:
    """Parse once, reuse everywhere (the cache key is the raw expression)."""
    return CronSchedule(expression)


def describe(expression: str) -> str:
    """``expression`` in English words; "" when it is empty or not valid."""
    if not expression.strip():
        return ""
    try:
        return parse(expression).description
    except CronError:
        return ""
