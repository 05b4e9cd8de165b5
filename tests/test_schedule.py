"""Tests of the schedule expressions: cron and Proxmox calendar events, DST rules and properties."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise, takewhile
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.schedule.expressions import (
    LOOKBACK,
    CalendarSchedule,
    CronSchedule,
    NoNextStartError,
    Schedule,
    ScheduleError,
    parse_schedule,
    upcoming,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
MINUTE = timedelta(minutes=1)
SECOND = timedelta(seconds=1)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def berlin(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN)


def take(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    return list(islice(schedule.iter_after(after), count))


def as_utc(t: datetime | None) -> datetime | None:
    # Aware datetimes sharing a tzinfo compare by wall clock, ignoring fold: compare instants.
    return None if t is None else t.astimezone(UTC)


def next_utc(schedule: Schedule, t: datetime) -> datetime:
    return schedule.next_after(t).astimezone(UTC)


def latest_utc(schedule: Schedule, t: datetime) -> datetime | None:
    return as_utc(schedule.latest_at_or_before(t))


def take_utc(expression: str, after: datetime, count: int, tz: str = "UTC") -> list[datetime]:
    return [s.astimezone(UTC) for s in take(parse_schedule(expression, tz), after, count)]


# ------------------------------------------------------------------ dispatch and the public API


def test_five_fields_are_cron_everything_else_is_a_calendar_event() -> None:
    assert isinstance(parse_schedule("30 1 * * *", "Europe/Berlin"), CronSchedule)
    assert isinstance(parse_schedule("  30  1 * *\t* ", "Europe/Berlin"), CronSchedule)
    for expression in ("21:00", "mon..fri 21:00", "Mon,Wed..Sun *-*-01 02:30", "daily", "*"):
        assert isinstance(parse_schedule(expression, "Europe/Berlin"), CalendarSchedule)


def test_schedule_keeps_expression_and_zone() -> None:
    schedule = parse_schedule("21:00", "Europe/Berlin")
    assert schedule.expression == "21:00"
    assert schedule.tz == BERLIN
    assert parse_schedule("30 1 * * *", BERLIN).tz is BERLIN
    assert repr(schedule) == "CalendarSchedule('21:00', tz='Europe/Berlin')"


def test_results_are_aware_in_the_schedule_zone_whatever_the_input_zone() -> None:
    for expression in ("21:00", "0 21 * * *"):
        schedule = parse_schedule(expression, "Europe/Berlin")
        new_york = utc(2026, 7, 1, 12).astimezone(NEW_YORK)
        for t in (utc(2026, 7, 1, 12), berlin(2026, 7, 1, 14), new_york):
            start = schedule.next_after(t)
            assert start.tzinfo is BERLIN
            assert start.isoformat() == "2026-07-01T21:00:00+02:00"
            latest = schedule.latest_at_or_before(t)
            assert latest is not None
            assert latest.isoformat() == "2026-06-30T21:00:00+02:00"


def test_naive_datetimes_are_refused() -> None:
    schedule = parse_schedule("21:00", "UTC")
    with pytest.raises(ValueError, match="timezone-aware"):
        schedule.next_after(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        schedule.latest_at_or_before(datetime(2026, 1, 1))


def test_next_after_is_strict_and_latest_at_or_before_is_inclusive() -> None:
    for expression in ("21:00", "0 21 * * *"):
        schedule = parse_schedule(expression, "UTC")
        start = utc(2026, 2, 2, 21)
        assert next_utc(schedule, start) == utc(2026, 2, 3, 21)
        assert next_utc(schedule, start - SECOND) == start
        assert next_utc(schedule, start - timedelta(microseconds=1)) == start
        assert latest_utc(schedule, start) == start
        assert latest_utc(schedule, start + timedelta(microseconds=999_999)) == start
        assert latest_utc(schedule, start - timedelta(microseconds=1)) == start - timedelta(days=1)


# ------------------------------------------------------------- the reference user's schedules


def test_pve_daily_backup_21_00() -> None:
    schedule = parse_schedule("21:00", "Europe/Berlin")
    assert next_utc(schedule, berlin(2026, 1, 15, 20, 59)) == berlin(2026, 1, 15, 21, 0)
    assert next_utc(schedule, berlin(2026, 1, 15, 20, 59)) == utc(2026, 1, 15, 20, 0)
    assert latest_utc(schedule, berlin(2026, 1, 15, 20, 59)) == berlin(2026, 1, 14, 21)
    assert latest_utc(schedule, berlin(2026, 7, 15, 21, 0)) == utc(2026, 7, 15, 19, 0)


def test_b2_sync_cron_01_30() -> None:
    schedule = parse_schedule("30 1 * * *", "Europe/Berlin")
    assert next_utc(schedule, berlin(2026, 6, 1, 1, 29)) == berlin(2026, 6, 1, 1, 30)
    assert next_utc(schedule, berlin(2026, 6, 1, 1, 30)) == berlin(2026, 6, 2, 1, 30)
    assert latest_utc(schedule, berlin(2026, 6, 1, 1, 29)) == utc(2026, 5, 30, 23, 30)


def test_storj_weekly_on_wednesday_05_00() -> None:
    schedule = parse_schedule("0 5 * * 3", "Europe/Berlin")
    assert berlin(2026, 1, 7).strftime("%a") == "Wed"
    assert next_utc(schedule, berlin(2026, 1, 7, 5, 0)) == berlin(2026, 1, 14, 5, 0)
    assert next_utc(schedule, berlin(2026, 1, 8)) == berlin(2026, 1, 14, 5, 0)
    assert latest_utc(schedule, berlin(2026, 1, 13, 12)) == berlin(2026, 1, 7, 5, 0)


def test_smart_long_test_first_of_month_except_tuesdays() -> None:
    schedule = parse_schedule("Mon,Wed..Sun *-*-01 02:30", "Europe/Berlin")
    assert berlin(2026, 9, 1).strftime("%a") == "Tue"
    assert berlin(2026, 12, 1).strftime("%a") == "Tue"
    assert [s.isoformat() for s in take(schedule, berlin(2026, 8, 15), 4)] == [
        "2026-10-01T02:30:00+02:00",  # Thursday; 2026-09-01 is a Tuesday and is skipped
        "2026-11-01T02:30:00+01:00",  # Sunday
        "2027-01-01T02:30:00+01:00",  # Friday; 2026-12-01 is a Tuesday
        "2027-02-01T02:30:00+01:00",
    ]
    assert latest_utc(schedule, berlin(2026, 9, 20)) == berlin(2026, 8, 1, 2, 30)
    assert latest_utc(schedule, berlin(2026, 12, 31)) == berlin(2026, 11, 1, 2, 30)


def test_cron_cannot_express_the_smart_long_schedule() -> None:
    # Debian cron ORs a restricted day-of-month with a restricted day-of-week: this runs on every
    # 1st *and* on every Monday, Wednesday..Saturday. That is why the calendar form is used.
    schedule = parse_schedule("30 2 1 * 1,3-6", "Europe/Berlin")
    assert next_utc(schedule, berlin(2026, 9, 1, 3)) == berlin(2026, 9, 2, 2, 30)


def test_smart_short_test_daily_00_15() -> None:
    schedule = parse_schedule("15 0 * * *", "Europe/Berlin")
    assert next_utc(schedule, berlin(2026, 3, 28, 23)) == utc(2026, 3, 28, 23, 15)
    assert next_utc(schedule, berlin(2026, 3, 29, 12)) == utc(2026, 3, 29, 22, 15)


def test_zfs_scrub_tuesday_02_10() -> None:
    schedule = parse_schedule("10 2 * * 2", "Europe/Berlin")
    assert next_utc(schedule, berlin(2026, 3, 29, 12)) == berlin(2026, 3, 31, 2, 10)
    assert latest_utc(schedule, berlin(2026, 3, 29, 12)) == berlin(2026, 3, 24, 2, 10)


# ----------------------------------------------------------------------------- DST, 2026, Berlin

SPRING_FROM = utc(2026, 3, 27, 12)
FALL_FROM = utc(2026, 10, 23, 12)

DST_TABLE = [
    pytest.param(
        "30 1 * * *",
        "01:30",
        [utc(2026, 3, 28, 0, 30), utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 23, 30)],
        [utc(2026, 10, 23, 23, 30), utc(2026, 10, 24, 23, 30), utc(2026, 10, 26, 0, 30)],
        id="01:30",
    ),
    pytest.param(
        "30 2 * * *",
        "02:30",
        # 2026-03-29 02:30 does not exist: the run moves to the end of the gap, 03:00 CEST.
        [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)],
        # 2026-10-25 02:30 happens twice: one run, at the first (CEST) occurrence.
        [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)],
        id="02:30",
    ),
    pytest.param(
        "0 21 * * *",
        "21:00",
        [utc(2026, 3, 27, 20), utc(2026, 3, 28, 20), utc(2026, 3, 29, 19)],
        [utc(2026, 10, 23, 19), utc(2026, 10, 24, 19), utc(2026, 10, 25, 20)],
        id="21:00",
    ),
]


@pytest.mark.parametrize(("cron", "calendar_event", "spring", "fall"), DST_TABLE)
def test_dst_changes_no_duplicate_no_missed_run(
    cron: str, calendar_event: str, spring: list[datetime], fall: list[datetime]
) -> None:
    for expression in (cron, calendar_event):
        schedule = parse_schedule(expression, "Europe/Berlin")
        for start_from, expected in ((SPRING_FROM, spring), (FALL_FROM, fall)):
            got = take(schedule, start_from, 3)
            assert [s.astimezone(UTC) for s in got] == expected, expression
            previous = latest_utc(schedule, start_from)
            assert previous is not None
            assert previous < expected[0]
            for start in expected:
                assert next_utc(schedule, start - SECOND) == start
                assert latest_utc(schedule, start) == start
                assert latest_utc(schedule, start - SECOND) == previous
                previous = start


def test_dst_results_carry_the_right_offsets() -> None:
    for expression in ("30 2 * * *", "02:30"):
        schedule = parse_schedule(expression, "Europe/Berlin")
        assert [s.isoformat() for s in take(schedule, SPRING_FROM, 3)] == [
            "2026-03-28T02:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-30T02:30:00+02:00",
        ]
        assert [s.isoformat() for s in take(schedule, FALL_FROM, 3)] == [
            "2026-10-24T02:30:00+02:00",
            "2026-10-25T02:30:00+02:00",
            "2026-10-26T02:30:00+01:00",
        ]


@pytest.mark.parametrize("expression", ["30 2 * * *", "02:30"])
def test_queries_from_inside_the_repeated_hour(expression: str) -> None:
    schedule = parse_schedule(expression, "Europe/Berlin")
    second_pass = utc(2026, 10, 25, 1, 10)  # 02:10 CET, after the 02:30 CEST run
    assert second_pass.astimezone(BERLIN).fold == 1
    assert next_utc(schedule, second_pass) == utc(2026, 10, 26, 1, 30)
    assert next_utc(schedule, second_pass.astimezone(BERLIN)) == utc(2026, 10, 26, 1, 30)
    assert latest_utc(schedule, second_pass) == utc(2026, 10, 25, 0, 30)
    assert latest_utc(schedule, utc(2026, 10, 25, 1, 40)) == utc(2026, 10, 25, 0, 30)
    assert latest_utc(schedule, utc(2026, 10, 25, 0, 29)) == utc(2026, 10, 24, 0, 30)


@pytest.mark.parametrize("expression", ["30 2 * * *", "02:30"])
def test_queries_around_the_gap(expression: str) -> None:
    schedule = parse_schedule(expression, "Europe/Berlin")
    before_gap = utc(2026, 3, 29, 0, 59, 59)  # 01:59:59 CET
    assert next_utc(schedule, before_gap) == utc(2026, 3, 29, 1, 0)
    assert latest_utc(schedule, before_gap) == utc(2026, 3, 28, 1, 30)
    assert latest_utc(schedule, utc(2026, 3, 29, 1, 0)) == utc(2026, 3, 29, 1, 0)
    assert latest_utc(schedule, utc(2026, 3, 29, 1, 45)) == utc(2026, 3, 29, 1, 0)


@pytest.mark.parametrize("expression", ["*/30 * * * *", "*/30"])
def test_interval_schedules_follow_real_time_through_both_changes(expression: str) -> None:
    schedule = parse_schedule(expression, "Europe/Berlin")
    for start_from in (utc(2026, 3, 28, 23, 0), utc(2026, 10, 24, 23, 0)):
        got = [s.astimezone(UTC) for s in take(schedule, start_from, 10)]
        assert got == [start_from + k * timedelta(minutes=30) for k in range(1, 11)]
    local = [s.strftime("%H:%M%z") for s in take(schedule, utc(2026, 10, 24, 23, 45), 5)]
    assert local == ["02:00+0200", "02:30+0200", "02:00+0100", "02:30+0100", "03:00+0100"]
    local = [s.strftime("%H:%M%z") for s in take(schedule, utc(2026, 3, 28, 23, 45), 3)]
    assert local == ["01:00+0100", "01:30+0100", "03:00+0200"]


@pytest.mark.parametrize("expression", ["0,30 2 * * *", "2:0/30", "0-59 2 * * *", "2:0..59"])
def test_several_wall_clock_starts_in_the_gap_collapse_into_one_run(expression: str) -> None:
    schedule = parse_schedule(expression, "Europe/Berlin")
    spring = take(schedule, utc(2026, 3, 28, 12), 2)
    assert [as_utc(s) for s in spring] == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 0)]
    fall = [s.astimezone(UTC) for s in take(schedule, utc(2026, 10, 24, 12), 200)]
    on_the_day = [s for s in fall if s.date() == datetime(2026, 10, 25).date()]
    assert on_the_day  # only the first (CEST) pass of 02:xx, 00:xx UTC
    assert all(s.hour == 0 for s in on_the_day)


# --------------------------------------------------------------- the PVE documentation examples


def test_docs_workdays() -> None:
    expected = [utc(2026, 1, d) for d in (2, 5, 6, 7, 8, 9, 12)]
    assert take_utc("mon,tue,wed,thu,fri", utc(2026, 1, 1), 7) == expected
    assert take_utc("mon..fri", utc(2026, 1, 1), 7) == expected


def test_docs_weekend() -> None:
    expected = [utc(2026, 1, d) for d in (3, 4, 10, 11)]
    assert take_utc("sat,sun", utc(2026, 1, 1), 4) == expected


def test_docs_12_05() -> None:
    assert take_utc("12:05", utc(2026, 1, 1), 2) == [utc(2026, 1, 1, 12, 5), utc(2026, 1, 2, 12, 5)]


def test_docs_every_five_minutes() -> None:
    assert take_utc("*/5", utc(2026, 1, 1, 23, 51), 3) == [
        utc(2026, 1, 1, 23, 55),
        utc(2026, 1, 2, 0, 0),
        utc(2026, 1, 2, 0, 5),
    ]


def test_docs_minutes_30_40_50_of_each_hour_monday_to_wednesday() -> None:
    got = take_utc("mon..wed 30/10", utc(2026, 1, 1), 8)  # a Thursday
    assert got == [
        utc(2026, 1, 5, 0, 30),
        utc(2026, 1, 5, 0, 40),
        utc(2026, 1, 5, 0, 50),
        utc(2026, 1, 5, 1, 30),
        utc(2026, 1, 5, 1, 40),
        utc(2026, 1, 5, 1, 50),
        utc(2026, 1, 5, 2, 30),
        utc(2026, 1, 5, 2, 40),
    ]
    assert take_utc("mon..wed 30/10", utc(2026, 1, 7, 23, 45), 2) == [
        utc(2026, 1, 7, 23, 50),
        utc(2026, 1, 12, 0, 30),
    ]


def test_docs_office_hours_and_22_every_quarter() -> None:
    got = take_utc("mon..fri 8..17,22:0/15", utc(2026, 1, 2, 17, 40), 7)  # a Friday
    assert got == [
        utc(2026, 1, 2, 17, 45),
        utc(2026, 1, 2, 22, 0),
        utc(2026, 1, 2, 22, 15),
        utc(2026, 1, 2, 22, 30),
        utc(2026, 1, 2, 22, 45),
        utc(2026, 1, 5, 8, 0),
        utc(2026, 1, 5, 8, 15),
    ]


def test_docs_friday_12_and_13_every_20_minutes_from_5() -> None:
    got = take_utc("fri 12..13:5/20", utc(2026, 1, 1), 7)
    minutes = [(12, 5), (12, 25), (12, 45), (13, 5), (13, 25), (13, 45)]
    assert got == [utc(2026, 1, 2, h, m) for h, m in minutes] + [utc(2026, 1, 9, 12, 5)]


def test_docs_hour_list_equals_hour_repetition() -> None:
    expected = [utc(2026, 1, 1, h, 5) for h in (12, 14, 16, 18, 20, 22)] + [utc(2026, 1, 2, 12, 5)]
    assert take_utc("12,14,16,18,20,22:5", utc(2026, 1, 1), 7) == expected
    assert take_utc("12/2:5", utc(2026, 1, 1), 7) == expected


def test_docs_every_minute() -> None:
    expected = [utc(2026, 1, 1, 0, m) for m in (1, 2, 3)]
    for expression in ("*", "*/1", "minutely", "*:*"):
        assert take_utc(expression, utc(2026, 1, 1, 0, 0, 30), 3) == expected


def test_docs_fifth_of_each_month() -> None:
    assert take_utc("*-05", utc(2026, 1, 1), 3) == [
        utc(2026, 1, 5),
        utc(2026, 2, 5),
        utc(2026, 3, 5),
    ]


def test_docs_first_saturday_of_each_month() -> None:
    got = take_utc("Sat *-1..7 15:00", utc(2026, 1, 1), 5)
    assert got == [utc(2026, 1, 3, 15), utc(2026, 2, 7, 15), utc(2026, 3, 7, 15),
                   utc(2026, 4, 4, 15), utc(2026, 5, 2, 15)]  # fmt: skip
    assert all(s.strftime("%a") == "Sat" and s.day <= 7 for s in got)
    assert take_utc("sat *-1..7 15:00", utc(2026, 1, 1), 5) == got


def test_docs_one_shot_date() -> None:
    schedule = parse_schedule("2015-10-21", "UTC")
    assert next_utc(schedule, utc(2015, 1, 1)) == utc(2015, 10, 21)
    assert latest_utc(schedule, utc(2015, 12, 1)) == utc(2015, 10, 21)
    assert take(schedule, utc(2015, 10, 21), 3) == []
    with pytest.raises(NoNextStartError, match="no start after"):
        schedule.next_after(utc(2026, 1, 1))
    # Further back than LOOKBACK: nothing is expected any more.
    one_shot = utc(2015, 10, 21)
    assert latest_utc(schedule, one_shot + LOOKBACK - SECOND) == one_shot
    assert schedule.latest_at_or_before(utc(2026, 1, 1)) is None


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("minutely", [utc(2026, 1, 1, 0, 1), utc(2026, 1, 1, 0, 2)]),
        ("hourly", [utc(2026, 1, 1, 1), utc(2026, 1, 1, 2)]),
        ("daily", [utc(2026, 1, 2), utc(2026, 1, 3)]),
        ("weekly", [utc(2026, 1, 5), utc(2026, 1, 12)]),
        ("monthly", [utc(2026, 2, 1), utc(2026, 3, 1)]),
        ("yearly", [utc(2027, 1, 1), utc(2028, 1, 1)]),
        ("annually", [utc(2027, 1, 1), utc(2028, 1, 1)]),
        ("quarterly", [utc(2026, 4, 1), utc(2026, 7, 1)]),
        ("semiannually", [utc(2026, 7, 1), utc(2027, 1, 1)]),
        ("semi-annually", [utc(2026, 7, 1), utc(2027, 1, 1)]),
    ],
)
def test_special_words(word: str, expected: list[datetime]) -> None:
    assert take_utc(word, utc(2026, 1, 1), 2) == expected


# ----------------------------------------------- more of the grammar that proxmox-time accepts

THU = utc(2026, 1, 1)  # a Thursday


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0", THU, [utc(2026, 1, 1, 1), utc(2026, 1, 1, 2)]),  # minute only: every hour
        ("*:0", THU, [utc(2026, 1, 1, 1), utc(2026, 1, 1, 2)]),
        ("*:*:*", THU, [utc(2026, 1, 1, 0, 0, 1), utc(2026, 1, 1, 0, 0, 2)]),
        ("*:3:5", THU, [utc(2026, 1, 1, 0, 3, 5), utc(2026, 1, 1, 1, 3, 5)]),
        ("12:05:30", THU, [utc(2026, 1, 1, 12, 5, 30), utc(2026, 1, 2, 12, 5, 30)]),
        ("mon *:*", THU, [utc(2026, 1, 5, 0, 0), utc(2026, 1, 5, 0, 1)]),
        ("mon 2:*", THU, [utc(2026, 1, 5, 2, 0), utc(2026, 1, 5, 2, 1)]),
        ("MON 2:50", THU, [utc(2026, 1, 5, 2, 50), utc(2026, 1, 12, 2, 50)]),
        ("monDay", THU, [utc(2026, 1, 5), utc(2026, 1, 12)]),
        ("Tuesday,thursday", THU, [utc(2026, 1, 6), utc(2026, 1, 8)]),
        ("fri..mon", THU, [utc(2026, 1, d) for d in (2, 3, 4, 5)]),
        ("mon,tue..wednesday,fri..sat", THU, [utc(2026, 1, d) for d in (2, 3, 5, 6, 7)]),
        ("4..10/2:0", THU, [utc(2026, 1, 1, h) for h in (4, 6, 8, 10)] + [utc(2026, 1, 2, 4)]),
        (
            "5/2:0",
            utc(2026, 1, 1, 20),
            [utc(2026, 1, 1, h) for h in (21, 23)] + [utc(2026, 1, 2, 5)],
        ),
        ("5,10:4,8", THU, [utc(2026, 1, 1, 5, 4), utc(2026, 1, 1, 5, 8), utc(2026, 1, 1, 10, 4)]),
        ("10,5:8,4", THU, [utc(2026, 1, 1, 5, 4), utc(2026, 1, 1, 5, 8), utc(2026, 1, 1, 10, 4)]),
        ("6,4..10:23,5/5", THU, [utc(2026, 1, 1, 4, 5), utc(2026, 1, 1, 4, 10)]),
        ("*/4:0", THU, [utc(2026, 1, 1, 4), utc(2026, 1, 1, 8)]),
        ("*-*/2-1", THU, [utc(2026, 3, 1), utc(2026, 5, 1)]),  # months 1, 3, 5, ...
        ("2020-7..9-2/2", utc(2020, 7, 31), [utc(2020, 8, 2), utc(2020, 8, 4)]),
        ("2020,2021-12-31", utc(2020, 7, 31), [utc(2020, 12, 31), utc(2021, 12, 31)]),
        ("1965/5-01-01", utc(2026, 1, 1), [utc(2030, 1, 1), utc(2035, 1, 1)]),
        ("02-29", utc(2026, 1, 1), [utc(2028, 2, 29), utc(2032, 2, 29)]),
        ("*-1..7 0:0", utc(2026, 1, 6, 12), [utc(2026, 1, 7), utc(2026, 2, 1)]),
        ("sat *-*-1..7,15..21", THU, [utc(2026, 1, 3), utc(2026, 1, 17)]),
    ],
)
def test_grammar(expression: str, after: datetime, expected: list[datetime]) -> None:
    assert take_utc(expression, after, len(expected)) == expected


@pytest.mark.parametrize("expression", ["02-30", "2021-02-29", "*-04-31 12:00"])
def test_events_that_never_happen_are_accepted_but_never_start(expression: str) -> None:
    schedule = parse_schedule(expression, "UTC")
    assert take(schedule, utc(2020, 1, 1), 1) == []
    assert schedule.latest_at_or_before(utc(2026, 1, 1)) is None


def test_trailing_utc_evaluates_the_event_in_utc() -> None:
    schedule = parse_schedule("21:00 UTC", "Europe/Berlin")
    assert schedule.tz == ZoneInfo("UTC")
    assert next_utc(schedule, utc(2026, 7, 1)) == utc(2026, 7, 1, 21)


def test_calendar_matches_oncalendar_where_it_covers_the_grammar() -> None:
    """An independent implementation of the shared systemd subset agrees (in UTC, no DST)."""
    oncalendar = pytest.importorskip("oncalendar")
    expressions = [
        "mon..fri", "sat,sun", "12:05", "mon..fri 21:00", "mon..fri 8..17,22:0/15",
        "fri 12..13:5/20", "12/2:5", "*-05", "Sat *-1..7 15:00", "Mon,Wed..Sun *-*-01 02:30",
        "*:3:5", "4..10/2:0", "hourly", "daily", "weekly", "monthly", "quarterly",
        "semiannually", "yearly",
    ]  # fmt: skip
    for expression in expressions:
        for after in (utc(2025, 12, 30, 22, 17), utc(2026, 6, 30, 12, 5)):
            theirs = list(islice(oncalendar.OnCalendar(expression, after), 25))
            assert take_utc(expression, after, 25) == theirs, expression


# -------------------------------------------------------------------------- invalid expressions


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "empty schedule expression"),
        ("   ", "empty schedule expression"),
        ("foo", "unknown weekday 'foo'"),
        ("mon..foo 21:00", "unknown weekday 'foo'"),
        ("mon,,tue", "unknown weekday ''"),
        ("24:00", "hour 24 out of range 0..23"),
        ("12:60", "minute 60 out of range 0..59"),
        ("12:00:60", "second 60 out of range 0..59"),
        ("60", "minute 60 out of range 0..59"),
        ("*-13-01", "month 13 out of range 1..12"),
        ("*-*-32", "day 32 out of range 1..31"),
        ("*-*-0", "day 0 out of range 1..31"),
        ("1:2:3:4", "bad time '1:2:3:4'"),
        ("1-2-3-4", "bad date '1-2-3-4'"),
        ("17..8:00", "hour range '17..8' runs backwards"),
        ("*/0", "bad minute repetition '/0'"),
        ("5/x", "bad minute repetition '/x'"),
        ("12:a", "bad minute value 'a'"),
        ("12:*,5", "bad minute value '*'"),
        ("12:-5", "bad month value '12:'"),
        ("-5", "missing month"),
        ("5-", "missing day"),
        ("mon-fri", "unknown weekday 'mon-fri' (ranges are written mon..fri)"),
        ("*-*~01", "'~'"),
        ("21:00 mon", "unexpected 'mon'"),
        ("mon tue", "unexpected 'tue'"),
        ("Daily 12:00", "unknown weekday 'Daily'"),
        ("mon *-*-* 00:00 00:00", "a cron expression has exactly 5 fields"),
        ("0 0 * * * *", "6 fields"),
        ("61 * * * *", "bad minute field '61'"),
        ("* 24 * * *", "bad hour field '24'"),
        ("* * 32 * *", "bad day-of-month field '32'"),
        ("* * * 13 *", "bad month field '13'"),
        ("* * * * 8", "bad day-of-week field '8'"),
        ("0 0 31 2 *", "bad day-of-month field '31'"),
        ("*/0 * * * *", "bad minute field '*/0'"),
    ],
)
def test_invalid_expressions_name_the_bad_part(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=re.escape(message)) as caught:
        parse_schedule(expression, "Europe/Berlin")
    if expression.strip():
        assert repr(expression) in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "Europe", "../etc/passwd", "CET "])
def test_unknown_time_zone(zone: str) -> None:
    with pytest.raises(ScheduleError, match="unknown time zone") as caught:
        parse_schedule("21:00", zone)
    assert str(caught.value) == f"unknown time zone {zone!r}"


# ------------------------------------------------------------------------------------- upcoming


def test_upcoming_format() -> None:
    got = upcoming("21:00", tz="Europe/Berlin", after=utc(2026, 3, 28, 12), count=3)
    assert got == [
        "2026-03-28T21:00:00+01:00",
        "2026-03-29T21:00:00+02:00",
        "2026-03-30T21:00:00+02:00",
    ]
    got = upcoming("30 2 * * *", tz="Europe/Berlin", after=utc(2026, 3, 28, 12), count=2)
    assert got == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
    assert upcoming("*/5", tz="UTC", after=utc(2026, 1, 1), count=1) == [
        "2026-01-01T00:05:00+00:00"
    ]


def test_upcoming_edge_cases() -> None:
    assert upcoming("21:00", tz="UTC", after=utc(2026, 1, 1), count=0) == []
    assert upcoming("2015-10-21", tz="UTC", after=utc(2015, 1, 1), count=3) == [
        "2015-10-21T00:00:00+00:00"
    ]
    # A naive `after` is wall-clock time in the schedule's zone.
    naive = datetime(2026, 7, 1, 20, 59)
    assert upcoming("21:00", tz="Europe/Berlin", after=naive, count=1) == [
        "2026-07-01T21:00:00+02:00"
    ]
    with pytest.raises(ValueError, match="count must not be negative"):
        upcoming("21:00", tz="UTC", after=utc(2026, 1, 1), count=-1)
    with pytest.raises(ScheduleError, match="unknown time zone 'Nowhere'"):
        upcoming("21:00", tz="Nowhere", after=utc(2026, 1, 1), count=1)


# ------------------------------------------------------------------------------------ properties

Wall = datetime  # naive local wall-clock time
Predicate = Callable[[Wall], bool]


def _hms(w: Wall) -> tuple[int, int, int]:
    return (w.hour, w.minute, w.second)


# (expression, wall-clock schedule?, independent matcher on the local wall-clock fields)
CASES: list[tuple[str, bool, Predicate]] = [
    ("21:00", True, lambda w: _hms(w) == (21, 0, 0)),
    ("0 21 * * *", True, lambda w: _hms(w) == (21, 0, 0)),
    ("01:30", True, lambda w: _hms(w) == (1, 30, 0)),
    ("30 1 * * *", True, lambda w: _hms(w) == (1, 30, 0)),
    ("02:30", True, lambda w: _hms(w) == (2, 30, 0)),
    ("30 2 * * *", True, lambda w: _hms(w) == (2, 30, 0)),
    ("0 5 * * 3", True, lambda w: w.weekday() == 2 and _hms(w) == (5, 0, 0)),
    ("15 0 * * *", True, lambda w: _hms(w) == (0, 15, 0)),
    ("10 2 * * 2", True, lambda w: w.weekday() == 1 and _hms(w) == (2, 10, 0)),
    (
        "Mon,Wed..Sun *-*-01 02:30",
        True,
        lambda w: w.weekday() != 1 and w.day == 1 and _hms(w) == (2, 30, 0),
    ),
    ("2:0/20", True, lambda w: w.hour == 2 and w.minute in (0, 20, 40) and w.second == 0),
    ("0,20,40 2 * * *", True, lambda w: w.hour == 2 and w.minute in (0, 20, 40) and w.second == 0),
    (
        "mon..fri 8..17,22:0/15",
        True,
        lambda w: (
            w.weekday() < 5
            and (8 <= w.hour <= 17 or w.hour == 22)
            and w.minute % 15 == 0
            and w.second == 0
        ),
    ),
    (
        "fri 12..13:5/20",
        True,
        lambda w: (
            w.weekday() == 4 and w.hour in (12, 13) and w.minute in (5, 25, 45) and w.second == 0
        ),
    ),
    (
        "12/2:5",
        True,
        lambda w: w.hour in (12, 14, 16, 18, 20, 22) and (w.minute, w.second) == (5, 0),
    ),
    ("Sat *-1..7 15:00", True, lambda w: w.weekday() == 5 and w.day <= 7 and _hms(w) == (15, 0, 0)),
    ("*-05", True, lambda w: w.day == 5 and _hms(w) == (0, 0, 0)),
    ("0/2:0", True, lambda w: w.hour % 2 == 0 and (w.minute, w.second) == (0, 0)),
    (
        "mon..wed 30/10",
        False,
        lambda w: w.weekday() <= 2 and w.minute in (30, 40, 50) and w.second == 0,
    ),
    ("*/20", False, lambda w: w.minute % 20 == 0 and w.second == 0),
    ("*/20 * * * *", False, lambda w: w.minute % 20 == 0 and w.second == 0),
    ("hourly", False, lambda w: (w.minute, w.second) == (0, 0)),
    ("0 */2 * * *", False, lambda w: w.hour % 2 == 0 and (w.minute, w.second) == (0, 0)),
    ("2:*", False, lambda w: w.hour == 2 and w.second == 0),
]
SCHEDULES = {expression: parse_schedule(expression, BERLIN) for expression, _, _ in CASES}

TRANSITIONS = [
    utc(2025, 3, 30, 1),
    utc(2025, 10, 26, 1),
    utc(2026, 3, 29, 1),
    utc(2026, 10, 25, 1),
    utc(2027, 3, 28, 1),
    utc(2027, 10, 31, 1),
]
instants = st.one_of(
    st.integers(int(utc(2025, 1, 1).timestamp()), int(utc(2027, 12, 31).timestamp())).map(
        lambda s: datetime.fromtimestamp(s, UTC)
    ),
    # Around a DST change, where the interesting things happen.
    st.tuples(st.sampled_from(TRANSITIONS), st.integers(-2 * 86400, 86400)).map(
        lambda p: p[0] + timedelta(seconds=p[1])
    ),
).flatmap(lambda t: st.sampled_from([UTC, BERLIN, NEW_YORK]).map(t.astimezone))


def reference_starts(
    pred: Predicate, wall_clock: bool, low: datetime, high: datetime
) -> list[datetime]:
    """Brute force: every UTC minute in (low, high] at which the documented rules start the job."""
    out = []
    u = low.astimezone(UTC).replace(second=0, microsecond=0) + MINUTE
    while u <= high:
        local = u.astimezone(BERLIN)
        wall = local.replace(tzinfo=None)
        before = (u - MINUTE).astimezone(BERLIN).replace(tzinfo=None)
        if pred(wall) and not (wall_clock and local.fold == 1):
            out.append(u)
        elif wall_clock and wall - before > MINUTE:  # u is the first minute after a gap
            gap = int((wall - before) / MINUTE)
            if any(pred(before + k * MINUTE) for k in range(1, gap)):
                out.append(u)
        u += MINUTE
    return out


def _matches_documented_rules(pred: Predicate, wall_clock: bool, start: datetime) -> bool:
    local = start.astimezone(BERLIN)
    wall = local.replace(tzinfo=None)
    if pred(wall):
        return not (wall_clock and local.fold == 1)
    before = (start.astimezone(UTC) - MINUTE).astimezone(BERLIN).replace(tzinfo=None)
    gap = int((wall - before) / MINUTE)
    return wall_clock and gap > 1 and any(pred(before + k * MINUTE) for k in range(1, gap))


@settings(max_examples=120, deadline=None, database=None)
@given(case=st.sampled_from(CASES), t=instants)
def test_properties(case: tuple[str, bool, Predicate], t: datetime) -> None:
    expression, wall_clock, pred = case
    schedule = SCHEDULES[expression]

    t_utc = t.astimezone(UTC)

    starts = take(schedule, t, 12)
    assert len(starts) == 12
    assert all(s.tzinfo is BERLIN for s in starts)
    starts_utc = [s.astimezone(UTC) for s in starts]
    assert starts_utc[0] > t_utc
    assert all(a < b for a, b in pairwise(starts_utc))
    for start in starts:
        assert _matches_documented_rules(pred, wall_clock, start), (expression, start)

    # Nothing missed, nothing extra: compare with brute force over the next two days.
    horizon = t_utc + timedelta(days=2)
    window = takewhile(lambda s: s <= horizon, (s.astimezone(UTC) for s in schedule.iter_after(t)))
    assert list(window) == reference_starts(pred, wall_clock, t_utc, horizon)

    first = next_utc(schedule, t)
    assert first == starts_utc[0]
    assert latest_utc(schedule, first) == first

    latest = latest_utc(schedule, t)
    assert latest is not None  # every case starts at least once a quarter
    assert latest <= t_utc < next_utc(schedule, latest)
    assert next_utc(schedule, latest) == first
    earlier = reference_starts(pred, wall_clock, t_utc - timedelta(days=2), t_utc)
    if earlier:
        assert latest == earlier[-1]


EQUIVALENT = [
    ("21:00", "0 21 * * *"),
    ("01:30", "30 1 * * *"),
    ("02:30", "30 2 * * *"),
    ("2:0/20", "0,20,40 2 * * *"),
    ("2:0..59", "0-59 2 * * *"),
    ("0/2:0", "0 0-23/2 * * *"),
    ("*/2:0", "0 */2 * * *"),
    ("*/20", "*/20 * * * *"),
    ("2:*", "* 2 * * *"),
    ("hourly", "0 * * * *"),
    ("mon..wed 30/10", "30/10 * * * 1-3"),
    ("mon..fri 8..17,22:0/15", "0/15 8-17,22 * * 1-5"),
    ("*-05", "0 0 5 * *"),
    ("weekly", "0 0 * * 1"),
    ("quarterly", "0 0 1 1,4,7,10 *"),
]
EQUIVALENT_SCHEDULES = {e: parse_schedule(e, BERLIN) for pair in EQUIVALENT for e in pair}


@settings(max_examples=80, deadline=None, database=None)
@given(pair=st.sampled_from(EQUIVALENT), t=instants)
def test_cron_and_calendar_syntax_agree(pair: tuple[str, str], t: datetime) -> None:
    calendar_event, cron = (EQUIVALENT_SCHEDULES[e] for e in pair)
    assert isinstance(calendar_event, CalendarSchedule)
    assert isinstance(cron, CronSchedule)
    assert list(map(as_utc, take(calendar_event, t, 8))) == list(map(as_utc, take(cron, t, 8)))
    assert as_utc(calendar_event.latest_at_or_before(t)) == as_utc(cron.latest_at_or_before(t))
