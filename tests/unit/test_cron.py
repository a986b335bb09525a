"""The cron dialect and the DST rule (DESIGN.md invariant 6, README "The cron dialect").

cronsim implements Debian cron's reading of fields and its DST rule; the schedule's
own layer (strictly-after cursors, whole seconds, memo, macros, seconds field, what
is refused) is checked against it over random expressions and zones.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim, CronSimError

from core import cron
from scheduler_svc.jobs import Jobs

NEW_YORK = "America/New_York"


def local_fires(expression: str, zone_name: str, after: datetime, until: datetime, limit: int = 50) -> list[str]:
    tz = cron.zone(zone_name)
    fires = cron.parse(expression).slots_between(after, until, tz, limit)
    return [f.astimezone(tz).isoformat() for f in fires]


# -- differential: random expressions in five zones, against cronsim ------------------

ZONES = ["Europe/Berlin", NEW_YORK, "Australia/Lord_Howe", "America/Santiago", "Pacific/Chatham"]
NAMES_DOW = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
NAMES_MONTH = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]


def random_field(rng: random.Random, low: int, high: int, names: list[str] | None = None) -> str:
    def value() -> str:
        n = rng.randint(low, high)
        if names and rng.random() < 0.3:
            return names[(n - low) % len(names)]
        return str(n)

    def term() -> str:
        kind = rng.random()
        if kind < 0.25:
            return "*"
        if kind < 0.4:
            return f"*/{rng.randint(1, high - low + 1)}"
        if kind < 0.7:
            return value()
        a, b = sorted(rng.sample(range(low, high + 1), 2)) if rng.random() < 0.8 else [rng.randint(low, high)] * 2
        text = f"{a}-{b}"
        return f"{text}/{rng.randint(1, 5)}" if rng.random() < 0.3 else text

    first = term()
    if first.startswith("*") or rng.random() < 0.6:
        return first
    return ",".join([first] + [value() for _ in range(rng.randint(1, 2))])


def random_expression(rng: random.Random) -> str:
    dom = random_field(rng, 1, 28) if rng.random() < 0.9 else rng.choice(["L", "LW", "15", "31"])
    dow = random_field(rng, 0, 6, NAMES_DOW) if rng.random() < 0.85 else rng.choice(["5L", "1#2", "MON#1"])
    fields = [
        random_field(rng, 0, 59),
        random_field(rng, 0, 23),
        dom if rng.random() < 0.5 else "*",
        random_field(rng, 1, 12, NAMES_MONTH) if rng.random() < 0.3 else "*",
        dow if rng.random() < 0.4 else "*",
    ]
    return " ".join(fields)


def transitions(zone_name: str, year: int) -> list[datetime]:
    """The instants in `year` where the zone's UTC offset changes (to the hour)."""
    tz = cron.zone(zone_name)
    out = []
    t = datetime(year, 1, 1, tzinfo=UTC)
    offset = t.astimezone(tz).utcoffset()
    while t.year == year:
        t += timedelta(hours=1)
        current = t.astimezone(tz).utcoffset()
        if current != offset:
            out.append(t)
            offset = current
    return out


TRANSITIONS = {z: transitions(z, 2026) + transitions(z, 2027) for z in ZONES}
FIRES_PER_CASE = 12


def ours_from(expression: str, tz: ZoneInfo, start: datetime, count: int) -> list[datetime]:
    schedule = cron.parse(expression)
    out: list[datetime] = []
    cursor: datetime | None = start
    while len(out) < count and cursor is not None:
        cursor = schedule.next_after(cursor, tz)
        if cursor is not None:
            out.append(cursor)
    return out


def cronsim_from(expression: str, tz: ZoneInfo, start: datetime, count: int) -> list[datetime]:
    out: list[datetime] = []
    for fire in CronSim(expression, start.astimezone(tz)):
        instant = fire.astimezone(UTC)
        # The one explained difference: two wall-clock slots in one DST gap (say 02:15
        # and 02:45) both move to the gap's end; cronsim yields that instant twice,
        # a schedule fires once at an instant.
        if not out or instant != out[-1]:
            out.append(instant)
        if len(out) == count:
            break
    return out


def test_random_expressions_match_cronsim_outside_and_across_dst() -> None:
    rng = random.Random(20261130)
    cases = refused = 0
    for _ in range(2500):
        expression = random_expression(rng)
        zone_name = rng.choice(ZONES)
        tz = cron.zone(zone_name)
        if rng.random() < 0.7:  # a few days before a transition, so the fires cross it
            start = rng.choice(TRANSITIONS[zone_name]) - timedelta(seconds=rng.randint(0, 4 * 86400))
        else:
            start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 700 * 86400))
        start += timedelta(microseconds=rng.choice([0, 0, 250_000]))
        try:
            cron.parse(expression)
        except cron.CronError:  # a day no chosen month has, or LW on Sundays only: never fires
            with pytest.raises((CronSimError, StopIteration)):
                next(CronSim(expression, datetime(2000, 1, 1)))
            refused += 1
            continue
        ours = ours_from(expression, tz, start, FIRES_PER_CASE)
        expected = cronsim_from(expression, tz, start, FIRES_PER_CASE)
        assert ours == expected, f"{expression!r} in {zone_name} from {start.isoformat()}"
        assert all(f.microsecond == 0 for f in ours)
        assert all(a < b for a, b in pairwise(ours))
        cases += 1
    assert cases + refused == 2500 and refused < 100


@pytest.mark.parametrize("zone_name", ZONES)
@pytest.mark.parametrize(
    "expression",
    ["30 2 * * *", "0 2 * * *", "15,45 2 * * *", "45 1 * * *", "0,30 1-3 * * *", "0 0 * * *", "0 * * * *",
     "*/30 * * * *", "*/15 2 * * *", "30 */2 * * *", "0 2 * * 0", "0 0,12 * * *"],
)  # fmt: skip
def test_dst_sensitive_expressions_match_cronsim_at_every_transition(zone_name: str, expression: str) -> None:
    tz = cron.zone(zone_name)
    for transition in TRANSITIONS[zone_name]:
        start = transition - timedelta(days=2)
        count = 150 if expression.startswith("*") or " * * * *" in expression else 8
        assert ours_from(expression, tz, start, count) == cronsim_from(expression, tz, start, count), (
            f"{expression!r} in {zone_name} around {transition.isoformat()}"
        )


# -- the rules, one vector each ---------------------------------------------------------


def test_a_range_from_a_value_to_itself_is_that_value() -> None:
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 22, tzinfo=UTC)
    assert local_fires("0 9 * * MON-MON", "UTC", start, end) == [
        "2026-01-05T09:00:00+00:00",
        "2026-01-12T09:00:00+00:00",
        "2026-01-19T09:00:00+00:00",
    ]
    yearly = local_fires("0 0 1 6-6 *", "UTC", start, datetime(2028, 1, 1, tzinfo=UTC))
    assert yearly == ["2026-06-01T00:00:00+00:00", "2027-06-01T00:00:00+00:00"]


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("5-1 * * * *", "minute field '5-1'"),
        ("0 0 * DEC-JAN *", "month field 'DEC-JAN'"),
        ("0 0 * * FRI-MON", "day-of-week field 'FRI-MON'"),
        ("0 22-2 * * *", "no wrap-around"),
        ("R * * * *", "random or hashed"),
        ("0 R * * *", "random or hashed"),
        ("H H * * *", "random or hashed"),
        ("0 0 ? * MON", "'?' is not supported"),
        ("0 0 * * ?", "'?' is not supported"),
        ("0\u00a00 * * *", "unexpected character '\\xa0'"),
        ("0 0\u3000* * *", "unexpected character"),
        ("0 0 * * *\u2003", "unexpected character"),
        ("0 0 * * 1\n", "unexpected character '\\n'"),
        ("0 0 15W * *", "day-of-month field '15W'"),
        ("0 0 30 2 *", "day-of-month field '30'"),
        ("*/0 * * * *", "minute field '*/0'"),
        ("", "expected 5 fields"),
        ("* * *", "expected 5 fields"),
        ("* * * * * * *", "expected 5 fields"),
        ("61 * * * *", "minute field '61'"),
        ("* 25 * * *", "hour field '25'"),
        ("* * 32 * *", "day-of-month field '32'"),
        ("* * * 13 *", "month field '13'"),
        ("0 0 * * 8", "day-of-week field '8'"),
        ("@fortnightly", "unknown macro"),
        ("a b c d e", "minute field 'a'"),
        ("0 0 29 2 * 2027", "hour field '29'"),
    ],
)
def test_what_the_dialect_refuses_and_why(expression: str, says: str) -> None:
    with pytest.raises(cron.CronError) as refused:
        cron.CronSchedule(expression)
    assert says in str(refused.value)


@pytest.mark.parametrize(
    "expression",
    ["0 0 L * *", "0 0 LW * *", "0 0 * * 5L", "0 0 * * MON#2", "0 0 * * 1#5", "0 0 1 JAN-MAR,OCT *",
     "0 0 * * mon-fri", "0 0 * * 7", "0\t0 *  * *", " 0 0 * * * ", "*/5 * * * * *", "@hourly", "@DAILY"],
)  # fmt: skip
def test_what_the_dialect_accepts(expression: str) -> None:
    cron.CronSchedule(expression)


def test_a_slot_in_a_spring_forward_gap_fires_at_a_whole_second() -> None:
    tz = cron.zone("Europe/Paris")
    # 2020-03-29 02:01 does not exist in Paris: it fires at 03:00:00 CEST, not 03:00:00.234375.
    slot = cron.parse("1 2 * * *").next_slot(datetime(2020, 3, 28, 12, tzinfo=UTC), tz)
    assert slot is not None and slot.nonexistent
    assert slot.local.isoformat() == "2020-03-29T03:00:00+02:00"
    assert slot.at == datetime(2020, 3, 29, 1, tzinfo=UTC) and slot.at.microsecond == 0
    preview = Jobs.preview("1 2 * * *", "Europe/Paris", 2, datetime(2020, 3, 28, 12, tzinfo=UTC))
    assert [p.local.isoformat() for p in preview] == ["2020-03-29T03:00:00+02:00", "2020-03-30T02:01:00+02:00"]
    assert preview[0].dst_transition and "does not exist" in preview[0].note


def test_fire_times_are_whole_seconds_strictly_after_the_cursor() -> None:
    tz = cron.zone("Australia/Lord_Howe")
    after = datetime(2026, 10, 3, 12, 0, 0, 987_654, tzinfo=UTC)
    # 2026-10-04: 02:00 → 02:30 (+10:30 → +11:00): 02:15 does not exist.
    slot = cron.parse("15 2 * * *").next_slot(after, tz)
    assert slot is not None and slot.nonexistent and slot.local.isoformat() == "2026-10-04T02:30:00+11:00"
    every_second = cron.parse("* * * * * *")
    fires = every_second.slots_between(after, after + timedelta(seconds=3), cron.zone("UTC"), 10)
    assert [f.isoformat() for f in fires] == [
        "2026-10-03T12:00:01+00:00",
        "2026-10-03T12:00:02+00:00",
        "2026-10-03T12:00:03+00:00",
    ]


def test_day_of_month_and_day_of_week_combine_by_and_when_either_starts_with_a_star() -> None:
    june = datetime(2026, 5, 31, 12, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC)
    # Every other day AND Monday: the Mondays on odd days of June 2026 (1, 15, 29).
    assert [f[:10] for f in local_fires("0 0 */2 * MON", "UTC", *june)] == ["2026-06-01", "2026-06-15", "2026-06-29"]
    assert [f[:10] for f in local_fires("0 0 * * */3", "UTC", *june, limit=3)] == [
        "2026-06-03",  # Wednesday (3)
        "2026-06-06",  # Saturday (6)
        "2026-06-07",  # Sunday (0)
    ]
    # Neither starts with '*': the 10th OR any Monday.
    assert [f[:10] for f in local_fires("0 0 10 * MON", "UTC", *june)] == [
        "2026-06-01",
        "2026-06-08",
        "2026-06-10",
        "2026-06-15",
        "2026-06-22",
        "2026-06-29",
    ]


def test_a_repeated_hour_fires_once_for_a_fixed_time_and_at_every_occurrence_otherwise() -> None:
    # New York, 2026-11-01: 01:00-01:59 happens twice (EDT, then EST).
    window = datetime(2026, 11, 1, 4, tzinfo=UTC), datetime(2026, 11, 1, 7, 59, tzinfo=UTC)
    assert local_fires("30 1 * * *", NEW_YORK, *window) == ["2026-11-01T01:30:00-04:00"]
    assert local_fires("0 * * * *", NEW_YORK, *window) == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:00:00-05:00",  # the hour an hourly job used to skip every autumn
        "2026-11-01T02:00:00-05:00",
    ]
    assert local_fires("*/30 1 * * *", NEW_YORK, *window) == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T01:30:00-05:00",
    ]
    assert local_fires("15 */1 * * *", NEW_YORK, *window) == [
        "2026-11-01T00:15:00-04:00",
        "2026-11-01T01:15:00-04:00",
        "2026-11-01T01:15:00-05:00",
        "2026-11-01T02:15:00-05:00",
    ]
    preview = Jobs.preview("0 * * * *", NEW_YORK, 2, datetime(2026, 11, 1, 5, 30, tzinfo=UTC))
    assert "fires at each occurrence" in preview[0].note


def test_a_gap_moves_a_fixed_time_and_has_no_wildcard_times() -> None:
    # Berlin, 2026-03-29: 02:00-02:59 does not exist.
    window = datetime(2026, 3, 28, 23, tzinfo=UTC), datetime(2026, 3, 29, 2, 30, tzinfo=UTC)
    assert local_fires("30 2 * * *", "Europe/Berlin", *window) == ["2026-03-29T03:00:00+02:00"]
    assert local_fires("15,45 2 * * *", "Europe/Berlin", *window) == ["2026-03-29T03:00:00+02:00"]
    assert local_fires("*/15 2 * * *", "Europe/Berlin", *window) == []
    assert local_fires("0 * * * *", "Europe/Berlin", *window) == [
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T04:00:00+02:00",
    ]
    # Seconds first, fixed minute and hour: read on the wall clock like 5 fields.
    assert local_fires("0 30 2 * * *", "Europe/Berlin", *window) == ["2026-03-29T03:00:00+02:00"]


def test_macros_and_the_seconds_field() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    utc = cron.zone("UTC")
    fires = cron.parse("*/5 * * * * *").slots_between(start, start + timedelta(seconds=20), utc, 10)
    assert [f.second for f in fires] == [5, 10, 15, 20]
    assert cron.parse("@hourly").next_after(start, utc) == start + timedelta(hours=1)
    assert cron.parse("@daily").next_after(start, utc) == start + timedelta(days=1)
    weekly = cron.parse("@weekly").next_after(start, utc)
    assert weekly is not None and weekly.weekday() == 6
    assert cron.parse("@monthly").next_after(start, utc) == datetime(2026, 2, 1, tzinfo=UTC)
    assert cron.parse("@yearly").next_after(start, utc) == datetime(2027, 1, 1, tzinfo=UTC)


def test_the_calendar_ends_in_year_9999() -> None:
    leap_day = cron.parse("0 0 29 2 *")
    assert leap_day.next_after(datetime(9996, 3, 1, tzinfo=UTC), cron.zone("UTC")) is None
    assert leap_day.next_after(datetime(9999, 12, 31, 23, tzinfo=UTC), cron.zone("Pacific/Kiritimati")) is None
    preview = Jobs.preview("0 0 29 2 *", "UTC", 10, datetime(9980, 1, 1, tzinfo=UTC))
    assert [p.at.year for p in preview] == [9980, 9984, 9988, 9992, 9996]


@pytest.mark.parametrize("name", ["", "Mars/Olympus", "../etc/passwd", "/etc/localtime", " UTC"])
def test_invalid_zones(name: str) -> None:
    with pytest.raises(cron.CronError):
        cron.zone(name)


def test_parsed_expressions_are_cached() -> None:
    assert cron.parse("*/7 * * * *") is cron.parse("*/7 * * * *")
