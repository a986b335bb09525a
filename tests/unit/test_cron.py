"""Cron evaluation, DST rule (DESIGN.md invariant 6) checked against cronsim as an
independent implementation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice

import pytest
from cronsim import CronSim

from core import cron

ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]
# Two days before each 2026 transition of each zone.
STARTS = {
    "Europe/Berlin": [datetime(2026, 3, 27), datetime(2026, 10, 23)],
    "America/New_York": [datetime(2026, 3, 6), datetime(2026, 10, 30)],
    "Australia/Lord_Howe": [datetime(2026, 4, 3), datetime(2026, 10, 2)],
}
# Fixed-time expressions (no wildcard in minute or hour), including times inside each
# zone's gap and overlap. For wildcard expressions cronsim follows Debian cron's
# "wildcard jobs run on real time" rule instead of invariant 6; those are checked below.
EXPRESSIONS = ["30 2 * * *", "0 2 * * *", "15 2 * * *", "45 1 * * *", "30 1 * * *", "0 3 * * *",
               "0,30 1-3 * * *", "0 0 * * *", "59 23 * * *", "0 2 * * 0"]  # fmt: skip


@pytest.mark.parametrize("zone_name", ZONES)
@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_matches_cronsim_across_dst(zone_name: str, expression: str) -> None:
    tz = cron.zone(zone_name)
    schedule = cron.parse(expression)
    for start in STARTS[zone_name]:
        aware = start.replace(tzinfo=tz)
        expected = [d.astimezone(UTC) for d in islice(CronSim(expression, aware), 40)]
        ours = []
        cursor = aware.astimezone(UTC)
        for _ in range(40):
            cursor = schedule.next_after(cursor, tz)
            ours.append(cursor)
        assert ours == expected, f"{expression} in {zone_name} from {start}"


def test_nonexistent_local_time_fires_once_at_the_first_valid_instant() -> None:
    tz = cron.zone("America/New_York")
    slot = cron.parse("30 2 * * *").next_slot(datetime(2026, 3, 7, 12, tzinfo=UTC), tz)
    # 2026-03-08 02:30 does not exist in New York; clocks jump from 02:00 EST to 03:00 EDT.
    assert slot.nonexistent
    assert slot.local.isoformat() == "2026-03-08T03:00:00-04:00"
    following = cron.parse("30 2 * * *").next_after(slot.at, tz)
    assert following.astimezone(tz).isoformat() == "2026-03-09T02:30:00-04:00"


def test_repeated_local_time_fires_once() -> None:
    tz = cron.zone("America/New_York")
    # 2026-11-01 01:30 happens twice (EDT, then EST): it fires once, at the first.
    fires = cron.parse("30 1 * * *").slots_between(
        datetime(2026, 10, 31, 12, tzinfo=UTC), datetime(2026, 11, 2, 12, tzinfo=UTC), tz, 10
    )
    assert [f.astimezone(tz).isoformat() for f in fires] == ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
    # Every 30 minutes through the repeated hour: each wall-clock time once.
    fires = cron.parse("*/30 * * * *").slots_between(
        datetime(2026, 11, 1, 4, 45, tzinfo=UTC), datetime(2026, 11, 1, 7, 45, tzinfo=UTC), tz, 10
    )
    local = [f.astimezone(tz).strftime("%H:%M%z") for f in fires]
    assert local == ["01:00-0400", "01:30-0400", "02:00-0500", "02:30-0500"]


def test_wildcard_slots_in_a_gap_collapse_into_one_fire() -> None:
    tz = cron.zone("Europe/Berlin")
    # 02:00, 02:15, 02:30 and 02:45 do not exist on 2026-03-29: one fire at 03:00 CEST.
    fires = cron.parse("*/15 2 * * *").slots_between(
        datetime(2026, 3, 28, 12, tzinfo=UTC), datetime(2026, 3, 30, 1, tzinfo=UTC), tz, 20
    )
    assert [f.astimezone(tz).strftime("%d %H:%M%z") for f in fires] == [
        "29 03:00+0200",
        "30 02:00+0200",
        "30 02:15+0200",
        "30 02:30+0200",
        "30 02:45+0200",
    ]


def test_lord_howe_half_hour_shift() -> None:
    tz = cron.zone("Australia/Lord_Howe")
    # 2026-10-04: 02:00 → 02:30 (+10:30 → +11:00): 02:15 does not exist.
    slot = cron.parse("15 2 * * *").next_slot(datetime(2026, 10, 3, 12, tzinfo=UTC), tz)
    assert slot.nonexistent and slot.local.isoformat() == "2026-10-04T02:30:00+11:00"


def test_six_fields_seconds_first_and_aliases() -> None:
    every5 = cron.parse("*/5 * * * * *")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    fires = every5.slots_between(start, start + timedelta(seconds=20), cron.zone("UTC"), 10)
    assert [f.second for f in fires] == [5, 10, 15, 20]
    assert cron.parse("@hourly").next_after(start, cron.zone("UTC")) == start + timedelta(hours=1)
    assert cron.parse("@daily").next_after(start, cron.zone("UTC")) == start + timedelta(days=1)
    assert cron.parse("@weekly").next_after(start, cron.zone("UTC")).weekday() == 6
    assert cron.parse("@monthly").next_after(start, cron.zone("UTC")) == datetime(2026, 2, 1, tzinfo=UTC)
    assert cron.parse("@yearly").next_after(start, cron.zone("UTC")) == datetime(2027, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "expression", ["", "* * *", "* * * * * * *", "61 * * * *", "* 25 * * *", "* * 32 * *", "* * * 13 *", "@fortnightly",
                   "0 0 30 2 *", "a b c d e"],
)  # fmt: skip
def test_invalid_expressions(expression: str) -> None:
    with pytest.raises(cron.CronError):
        cron.CronSchedule(expression)


@pytest.mark.parametrize("name", ["", "Mars/Olympus", "../etc/passwd", "/etc/localtime", " UTC"])
def test_invalid_zones(name: str) -> None:
    with pytest.raises(cron.CronError):
        cron.zone(name)


def test_parsed_expressions_are_cached() -> None:
    assert cron.parse("*/7 * * * *") is cron.parse("*/7 * * * *")
