"""Proxmox VE calendar events, evaluated day by day on sets of field values.

Calendar events, as Proxmox parses them:

* weekdays ``mon``..``sun`` or full names, any case, comma lists and ``..`` ranges (``mon..fri``,
  ``Mon,Wed..Sun``, wrapping ``fri..mon``); omitted = every day;
* date ``[YEARS-]MONTHS-DAYS``; omitted = every day; all fields must match (weekday AND date);
* time ``HOURS:MINUTES[:SECONDS]``; a single value without ``:`` is the *minutes* with every hour
  (``30/10`` = minutes 30, 40, 50 of every hour; ``*`` = every minute); seconds default to 0;
  omitted = ``00:00:00``;
* every field value is ``*``, ``*/STEP`` or a comma list of ``N``, ``A..B``, ``N/STEP``
  (N, N+STEP, ... up to the field maximum) and ``A..B/STEP``;
* special words ``minutely hourly daily weekly monthly yearly annually quarterly semiannually
  semi-annually``; a trailing ``UTC`` evaluates the event in UTC instead of the given zone.
"""

from __future__ import annotations

import calendar
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from exporter.schedule.base import LOOKBACK, Schedule, ScheduleError

__all__ = ["MAX_YEAR", "CalendarSchedule"]

MAX_YEAR = 2200
"""Like systemd and proxmox-time, calendar events have no starts from this year on."""

_MINUTE = timedelta(minutes=1)
_DAY = timedelta(days=1)

_WEEKDAYS = {
    name: index
    for index, names in enumerate(
        (
            ("mon", "monday"),
            ("tue", "tuesday"),
            ("wed", "wednesday"),
            ("thu", "thursday"),
            ("fri", "friday"),
            ("sat", "saturday"),
            ("sun", "sunday"),
        )
    )
    for name in names
}

_SPECIAL = {
    "minutely": "*-*-* *:*:00",
    "hourly": "*-*-* *:00:00",
    "daily": "*-*-* 00:00:00",
    "weekly": "mon *-*-* 00:00:00",
    "monthly": "*-*-01 00:00:00",
    "yearly": "*-01-01 00:00:00",
    "annually": "*-01-01 00:00:00",
    "quarterly": "*-01,04,07,10-01 00:00:00",
    "semiannually": "*-01,07-01 00:00:00",
    "semi-annually": "*-01,07-01 00:00:00",
}


class _InvalidError(Exception):
    """A problem in one part of a calendar event (wrapped into ScheduleError with the text)."""


@dataclass(frozen=True)
class _CalendarSpec:
    """A parsed calendar event: the allowed values of each field."""

    weekdays: frozenset[int]  # 0 = Monday
    years: tuple[int, ...] | None  # sorted; None = any year
    months: frozenset[int]
    days: frozenset[int]
    hours: tuple[int, ...]  # sorted
    minutes: tuple[int, ...]  # sorted
    seconds: tuple[int, ...]  # sorted
    wall_clock: bool  # explicit hour and minute: the fixed-time DST rules apply
    utc: bool  # trailing "UTC"


def _number(text: str, name: str, low: int, high: int) -> int:
    if not (text.isascii() and text.isdigit()):
        raise _InvalidError(f"bad {name} value {text!r}")
    value = int(text)
    if not low <= value <= high:
        raise _InvalidError(f"{name} {value} out of range {low}..{high}")
    return value


def _step(text: str, name: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) == 0:
        raise _InvalidError(f"bad {name} repetition '/{text}' (must be a positive number)")
    return int(text)


def _parse_values(text: str, name: str, low: int, high: int, star_start: int) -> set[int]:
    """Parse ``*``, ``*/S`` or a comma list of ``N``, ``A..B``, ``N/S``, ``A..B/S``."""
    if not text:
        raise _InvalidError(f"missing {name}")
    if text == "*":
        return set(range(low, high + 1))
    if text.startswith("*/"):
        return set(range(star_start, high + 1, _step(text[2:], name)))
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise _InvalidError(f"empty {name} value in {text!r}")
        body, slash, step_text = item.partition("/")
        first, dots, last = body.partition("..")
        start = _number(first, name, low, high)
        if dots:
            end = _number(last, name, low, high)
        elif slash:
            end = high  # N/S: N, N+S, ... up to the field maximum
        else:
            end = start
        if end < start:
            raise _InvalidError(f"{name} range {body!r} runs backwards")
        values.update(range(start, end + 1, _step(step_text, name) if slash else 1))
    return values


def _weekday(name: str) -> int:
    try:
        return _WEEKDAYS[name.lower()]
    except KeyError:
        hint = "ranges are written mon..fri" if "-" in name else "expected mon, tue, ..., sun"
        raise _InvalidError(f"unknown weekday {name!r} ({hint})") from None


def _parse_weekdays(token: str) -> frozenset[int]:
    result: set[int] = set()
    for item in token.split(","):
        first, dots, last = item.partition("..")
        day = _weekday(first)
        end = _weekday(last) if dots else day
        result.add(day)
        while day != end:  # ranges may wrap around the week end: fri..mon
            day = (day + 1) % 7
            result.add(day)
    return frozenset(result)


def _parse_calendar(expression: str) -> _CalendarSpec:
    tokens = expression.split()
    if not tokens:
        raise _InvalidError("empty expression")
    utc = len(tokens) > 1 and tokens[-1] == "UTC"
    if utc:
        tokens.pop()
    if len(tokens) == 1 and tokens[0].lower() in _SPECIAL:
        tokens = _SPECIAL[tokens[0].lower()].split()
    if len(tokens) > 3:
        raise _InvalidError(
            f"{len(tokens)} parts; a calendar event is [WEEKDAY] [[YEARS-]MONTHS-DAYS] "
            "[HOURS:MINUTES[:SECONDS]] and a cron expression has exactly 5 fields"
        )

    weekdays = frozenset(range(7))
    if tokens and tokens[0][:1].isalpha():
        weekdays = _parse_weekdays(tokens.pop(0))

    years: tuple[int, ...] | None = None
    months = set(range(1, 13))
    days = set(range(1, 32))
    if tokens and "-" in tokens[0]:
        date_token = tokens.pop(0)
        if "~" in date_token:
            raise _InvalidError(
                f"'~' (days counted from the month end) is not supported in {date_token!r}"
            )
        parts = date_token.split("-")
        if len(parts) == 3:
            if parts[0] != "*":
                years = tuple(sorted(_parse_values(parts[0], "year", 0, MAX_YEAR - 1, 0)))
            parts = parts[1:]
        if len(parts) != 2:
            raise _InvalidError(f"bad date {date_token!r} (expected [YEARS-]MONTHS-DAYS)")
        months = _parse_values(parts[0], "month", 1, 12, 1)
        days = _parse_values(parts[1], "day", 1, 31, 1)

    hours, minutes, seconds = {0}, {0}, {0}
    wall_clock = True
    if tokens and not tokens[0][:1].isalpha():
        time_token = tokens.pop(0)
        parts = time_token.split(":")
        if len(parts) > 3:
            raise _InvalidError(f"bad time {time_token!r} (expected HOURS:MINUTES[:SECONDS])")
        if len(parts) == 1:  # minutes only, every hour
            parts = ["*", parts[0]]
            wall_clock = False
        hours = _parse_values(parts[0], "hour", 0, 23, 0)
        minutes = _parse_values(parts[1], "minute", 0, 59, 0)
        seconds = _parse_values(parts[2], "second", 0, 59, 0) if len(parts) == 3 else {0}
        wall_clock = wall_clock and not parts[0].startswith("*") and not parts[1].startswith("*")
    if tokens:
        raise _InvalidError(
            f"unexpected {tokens[0]!r} (the order is [WEEKDAY] [[YEARS-]MONTHS-DAYS] "
            "[HOURS:MINUTES[:SECONDS]])"
        )
    return _CalendarSpec(
        weekdays=weekdays,
        years=years,
        months=frozenset(months),
        days=frozenset(days),
        hours=tuple(sorted(hours)),
        minutes=tuple(sorted(minutes)),
        seconds=tuple(sorted(seconds)),
        wall_clock=wall_clock,
        utc=utc,
    )


def _first_of_next_month(d: date) -> date:
    return date(d.year + 1, 1, 1) if d.month == 12 else date(d.year, d.month + 1, 1)


class CalendarSchedule(Schedule):
    """A Proxmox (systemd-style) calendar event, evaluated day by day on sets of field values."""

    def __init__(self, expression: str, tz: ZoneInfo) -> None:
        try:
            spec = _parse_calendar(expression)
        except _InvalidError as exc:
            raise ScheduleError(f"invalid calendar event {expression!r}: {exc}") from None
        self.expression = expression
        self.tz = ZoneInfo("UTC") if spec.utc else tz
        self._spec = spec
        # Like Proxmox, accept events that can never match (02-30) and simply never start.
        self._possible = any(
            day <= calendar.monthrange(2000, month)[1] for month in spec.months for day in spec.days
        )
        self._transition_days: dict[date, list[datetime]] = {}

    # ---- days

    def _day_matches(self, d: date) -> bool:
        spec = self._spec
        return (
            (spec.years is None or d.year in spec.years)
            and d.month in spec.months
            and d.day in spec.days
            and d.weekday() in spec.weekdays
        )

    def _next_matching_day(self, d: date) -> date | None:
        """Return the first day ``>= d`` whose date fields match (skips whole years, months)."""
        spec = self._spec
        while d.year < MAX_YEAR:
            if spec.years is not None and d.year not in spec.years:
                index = bisect_right(spec.years, d.year)
                if index == len(spec.years):
                    return None
                d = date(spec.years[index], 1, 1)
            elif d.month not in spec.months:
                d = _first_of_next_month(d)
            elif d.day in spec.days and d.weekday() in spec.weekdays:
                return d
            else:
                d += _DAY
        return None

    def _prev_matching_day(self, d: date, floor: date) -> date | None:
        """Return the last day in ``[floor, d]`` whose date fields match."""
        spec = self._spec
        while d >= floor:
            if spec.years is not None and d.year not in spec.years:
                index = bisect_left(spec.years, d.year)
                if index == 0 or spec.years[index - 1] < floor.year:
                    return None
                d = date(spec.years[index - 1], 12, 31)
            elif d.month not in spec.months:
                d = d.replace(day=1) - _DAY
            elif d.day in spec.days and d.weekday() in spec.weekdays:
                return d
            else:
                d -= _DAY
        return None

    # ---- times of day

    def _first_time_after(self, hour: int, minute: int, second: int) -> time | None:
        """Return the earliest allowed time of day strictly after ``hour:minute:second``."""
        hours, minutes, seconds = self._spec.hours, self._spec.minutes, self._spec.seconds
        h = bisect_left(hours, hour)
        if h < len(hours) and hours[h] == hour:
            m = bisect_left(minutes, minute)
            if m < len(minutes) and minutes[m] == minute:
                s = bisect_right(seconds, second)
                if s < len(seconds):
                    return time(hour, minute, seconds[s])
                m += 1
            if m < len(minutes):
                return time(hour, minutes[m], seconds[0])
            h += 1
        if h < len(hours):
            return time(hours[h], minutes[0], seconds[0])
        return None

    def _last_time_at_or_before(self, hour: int, minute: int, second: int) -> time | None:
        """Return the latest allowed time of day at or before ``hour:minute:second``."""
        hours, minutes, seconds = self._spec.hours, self._spec.minutes, self._spec.seconds
        h = bisect_right(hours, hour) - 1
        if h >= 0 and hours[h] == hour:
            m = bisect_right(minutes, minute) - 1
            if m >= 0 and minutes[m] == minute:
                s = bisect_right(seconds, second) - 1
                if s >= 0:
                    return time(hour, minute, seconds[s])
                m -= 1
            if m >= 0:
                return time(hour, minutes[m], seconds[-1])
            h -= 1
        if h >= 0:
            return time(hours[h], minutes[-1], seconds[-1])
        return None

    # ---- wall clock to instants

    def _day_offset(self, d: date) -> timedelta | None:
        """Return the UTC offset of day ``d`` if it has no DST transition, else ``None``."""
        start = datetime.combine(d, time(), tzinfo=self.tz)
        end = datetime.combine(d + _DAY, time(), tzinfo=self.tz)
        offsets = {
            start.utcoffset(),
            start.replace(fold=1).utcoffset(),
            end.utcoffset(),
            end.replace(fold=1).utcoffset(),
        }
        return offsets.pop() if len(offsets) == 1 else None

    def _resolve(self, wall: datetime) -> list[datetime]:
        """Return the UTC instants at which a start at the naive local time ``wall`` happens."""
        first = wall.replace(tzinfo=self.tz).astimezone(UTC)  # fold=0
        second = wall.replace(tzinfo=self.tz, fold=1).astimezone(UTC)
        if first == second:
            return [first]
        if first.astimezone(self.tz).replace(tzinfo=None) == wall:  # repeated (fall back)
            return [first] if self._spec.wall_clock else [first, second]
        if not self._spec.wall_clock:  # in the gap (spring forward)
            return []
        shifted = wall.replace(second=0)
        while True:  # the first minute after the gap, like cronsim
            shifted += _MINUTE
            instant = shifted.replace(tzinfo=self.tz).astimezone(UTC)
            if instant.astimezone(self.tz).replace(tzinfo=None) == shifted:
                return [instant]

    def _transition_day_starts(self, d: date) -> list[datetime]:
        """Return all starts of wall-clock day ``d`` (which has a DST transition), sorted, UTC."""
        starts = self._transition_days.get(d)
        if starts is None:
            spec = self._spec
            found: set[datetime] = set()
            for hour in spec.hours:
                for minute in spec.minutes:
                    for second in spec.seconds:
                        wall = datetime(d.year, d.month, d.day, hour, minute, second)
                        found.update(self._resolve(wall))
            starts = sorted(found)
            if len(self._transition_days) > 16:
                self._transition_days.clear()
            self._transition_days[d] = starts
        return starts

    def _first_on(self, d: date, t: datetime) -> datetime | None:
        """Return the first start of wall-clock day ``d`` strictly after the UTC instant ``t``."""
        offset = self._day_offset(d)
        if offset is None:
            starts = self._transition_day_starts(d)
            index = bisect_right(starts, t)
            return starts[index] if index < len(starts) else None
        local = (t + offset).replace(tzinfo=None)
        spec = self._spec
        if local.date() < d:
            found: time | None = time(spec.hours[0], spec.minutes[0], spec.seconds[0])
        elif local.date() > d:
            return None
        else:
            found = self._first_time_after(local.hour, local.minute, local.second)
        return None if found is None else datetime.combine(d, found, tzinfo=UTC) - offset

    def _last_on(self, d: date, t: datetime) -> datetime | None:
        """Return the last start of wall-clock day ``d`` at or before the UTC instant ``t``."""
        offset = self._day_offset(d)
        if offset is None:
            starts = self._transition_day_starts(d)
            index = bisect_right(starts, t)
            return starts[index - 1] if index else None
        local = (t + offset).replace(tzinfo=None)
        spec = self._spec
        if local.date() > d:
            found: time | None = time(spec.hours[-1], spec.minutes[-1], spec.seconds[-1])
        elif local.date() < d:
            return None
        else:
            found = self._last_time_at_or_before(local.hour, local.minute, local.second)
        return None if found is None else datetime.combine(d, found, tzinfo=UTC) - offset

    # ---- the two searches

    def _next_utc(self, t: datetime) -> datetime | None:
        if not self._possible:
            return None
        # Start a day early: a start moved out of a DST gap can land on the next day.
        day = self._next_matching_day(t.astimezone(self.tz).date() - _DAY)
        while day is not None:
            start = self._first_on(day, t)
            if start is not None:
                # Around a transition at midnight the next day's first start could come first.
                following = day + _DAY
                if self._day_matches(following):
                    other = self._first_on(following, t)
                    if other is not None and other < start:
                        start = other
                return start
            day = self._next_matching_day(day + _DAY)
        return None

    def _latest_utc(self, t: datetime) -> datetime | None:
        if not self._possible:
            return None
        floor = (t - LOOKBACK).astimezone(self.tz).date()
        # Starts are never moved backwards, so no start of a later wall-clock day is <= t.
        day = self._prev_matching_day(t.astimezone(self.tz).date(), floor)
        while day is not None:
            start = self._last_on(day, t)
            if start is not None:
                previous = day - _DAY
                if self._day_matches(previous):
                    other = self._last_on(previous, t)
                    if other is not None and other > start:
                        start = other
                return start
            day = self._prev_matching_day(day - _DAY, floor)
        return None
