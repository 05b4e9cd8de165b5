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

__all__ = ["MAX_YEAR", "CalendarSchedule", "PveCalendarSchedule"]

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
    # The same fields as written (None = "*"), for the PVE engine, which walks them as
    # proxmox-time does rather than as sets bounded by the field maximum.
    items: tuple[_Items, _Items, _Items, _Items, _Items, _Items] = (None,) * 6


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


@dataclass(frozen=True)
class _Item:
    """One comma-separated value of a field: ``N``, ``A..B``, ``N/S`` or ``A..B/S``.

    The shape of proxmox-time's ``DateTimeValue`` (Single, Range, Repeated): ``end`` is
    ``None`` for ``N/S``, which repeats without bound (past the field maximum), as there.
    """

    start: int
    end: int | None
    step: int = 1

    def contains(self, value: int) -> bool:
        if value < self.start or (self.end is not None and value > self.end):
            return False
        return (value - self.start) % self.step == 0

    def next_above(self, value: int) -> int | None:
        """Return the smallest member greater than ``value``, or ``None``."""
        if value < self.start:
            return self.start
        found = self.start + ((value - self.start) // self.step + 1) * self.step
        return found if self.end is None or found <= self.end else None


_Items = tuple[_Item, ...] | None
"""A field's values; ``None`` is ``*`` (every value)."""


def _parse_items(text: str, name: str, low: int, high: int, star_start: int) -> _Items:
    """Parse ``*``, ``*/S`` or a comma list of ``N``, ``A..B``, ``N/S``, ``A..B/S``."""
    if not text:
        raise _InvalidError(f"missing {name}")
    if text == "*":
        return None
    if text.startswith("*/"):
        return (_Item(star_start, None, _step(text[2:], name)),)
    items: list[_Item] = []
    for item in text.split(","):
        if not item:
            raise _InvalidError(f"empty {name} value in {text!r}")
        body, slash, step_text = item.partition("/")
        first, dots, last = body.partition("..")
        start = _number(first, name, low, high)
        end: int | None = _number(last, name, low, high) if dots else None
        if end is not None and end < start:
            raise _InvalidError(f"{name} range {body!r} runs backwards")
        if slash:
            items.append(_Item(start, end, _step(step_text, name)))
        else:
            items.append(_Item(start, start if end is None else end))
    return tuple(items)


def _expand(items: _Items, low: int, high: int) -> set[int]:
    """Return the values of ``items`` in ``low..high`` (``N/S``: N, N+S, ... up to ``high``)."""
    if items is None:
        return set(range(low, high + 1))
    return {v for v in range(low, high + 1) if any(item.contains(v) for item in items)}


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
    year_items: _Items = None
    month_items: _Items = None
    day_items: _Items = None
    if tokens and "-" in tokens[0]:
        date_token = tokens.pop(0)
        if "~" in date_token:
            raise _InvalidError(
                f"'~' (days counted from the month end) is not supported in {date_token!r}"
            )
        parts = date_token.split("-")
        if len(parts) == 3:
            year_items = _parse_items(parts[0], "year", 0, MAX_YEAR - 1, 0)
            if year_items is not None:
                years = tuple(sorted(_expand(year_items, 0, MAX_YEAR - 1)))
            parts = parts[1:]
        if len(parts) != 2:
            raise _InvalidError(f"bad date {date_token!r} (expected [YEARS-]MONTHS-DAYS)")
        month_items = _parse_items(parts[0], "month", 1, 12, 1)
        day_items = _parse_items(parts[1], "day", 1, 31, 1)
        months = _expand(month_items, 1, 12)
        days = _expand(day_items, 1, 31)

    midnight = (_Item(0, 0),)
    hour_items: _Items = midnight
    minute_items: _Items = midnight
    second_items: _Items = midnight
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
        hour_items = _parse_items(parts[0], "hour", 0, 23, 0)
        minute_items = _parse_items(parts[1], "minute", 0, 59, 0)
        if len(parts) == 3:
            second_items = _parse_items(parts[2], "second", 0, 59, 0)
        hours = _expand(hour_items, 0, 23)
        minutes = _expand(minute_items, 0, 59)
        seconds = _expand(second_items, 0, 59)
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
        items=(year_items, month_items, day_items, hour_items, minute_items, second_items),
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


# ---- PVE's own evaluation

_EPOCH = datetime(1970, 1, 1)
_PVE_ROUNDS = 1001
"""proxmox-time gives up (no next event) after this many rounds of its search."""
_MKTIME_PROBES = 6
"""glibc's mktime gives up after this many conversions."""


class _TmClock:
    """A broken-down local time that every edit renormalises, as PVE's ``TmEditor`` does.

    proxmox-time (github.com/proxmox/proxmox-rs, ``proxmox-time/src/tm_editor.rs``,
    ``TmEditor``) keeps a ``libc::tm`` and, after every edit, renormalises it through
    ``timelocal`` (``proxmox-time/src/posix.rs``: ``tm_isdst = -1``, then ``libc::mktime``).
    glibc's ``mktime`` (``time/mktime.c``, ``__mktime_internal``) is what gives PVE its DST
    rule; this class reproduces it on ``zoneinfo`` (our code, the rule learned from there):

    * the wall clock is first made linear (out-of-range months, days, hours, minutes roll over);
    * the instant is found by probing: guess an offset, convert, correct by the error, at
      most 6 conversions. The first guess is the offset *the previous conversion* ended with
      (glibc keeps it in a static variable), so inside a repeated hour the occurrence chosen
      is the one whose offset was last in use;
    * a wall time inside a gap makes the probes oscillate between the two offsets; glibc then
      keeps the probe whose local time is DST when only one is (else the one it is on), so
      ``02:30`` on Europe/Berlin's spring day is read with the winter offset and becomes
      03:30 CEST, "the gap size later";
    * the edited struct becomes the local time of the instant found (03:30 in that case).

    glibc's remembered offset depends on the scheduler process's previous conversion, which
    no exporter can see; a search here starts with the offset in force at its starting
    instant (what the search's own first conversion would leave). That only matters for a
    search that starts inside a repeated hour.
    """

    def __init__(self, tz: ZoneInfo, instant: int) -> None:
        self._tz = tz
        self.guess = self._offset(instant)[0]
        self.instant = instant
        self.wall = self._local(instant)

    def _offset(self, instant: int) -> tuple[int, bool]:
        at = datetime.fromtimestamp(instant, self._tz)
        offset, dst = at.utcoffset(), at.dst()
        return int(offset.total_seconds()) if offset else 0, bool(dst)

    def _local(self, instant: int) -> datetime:
        return datetime.fromtimestamp(instant, self._tz).replace(tzinfo=None)

    def mktime(self, wall: datetime) -> int:
        """Return the instant glibc's ``mktime`` (``tm_isdst = -1``) gives ``wall``."""
        w = int((wall - _EPOCH).total_seconds())
        t = t1 = t2 = w - self.guess
        dst2 = False
        for _ in range(_MKTIME_PROBES):
            offset, dst = self._offset(t)
            error = w - (t + offset)
            if error == 0:
                break
            if t == t1 and t != t2 and dst2 <= dst:
                break  # oscillating around a gap: keep this probe
            t1, t2, t, dst2 = t2, t, t + error, dst
        else:
            raise _InvalidError(f"no local time {wall.isoformat()} in {self._tz.key}")
        self.guess = w - t
        return t

    def _set(self, y: int, mon0: int, d: int, h: int, mi: int, s: int) -> None:  # noqa: PLR0917
        """Set the fields (month 0-based, any may be out of range) and renormalise."""
        first = date(y + mon0 // 12, mon0 % 12 + 1, 1)
        wall = datetime.combine(first, time()) + timedelta(
            days=d - 1, hours=h, minutes=mi, seconds=s
        )
        self.instant = self.mktime(wall)
        self.wall = self._local(self.instant)

    # The edits of TmEditor: an add resets every smaller field to its minimum.
    def add_years(self, n: int) -> None:
        self._set(self.wall.year + n, 0, 1, 0, 0, 0)

    def add_months(self, n: int) -> None:
        self._set(self.wall.year, self.wall.month - 1 + n, 1, 0, 0, 0)

    def add_days(self, n: int) -> None:
        w = self.wall
        self._set(w.year, w.month - 1, w.day + n, 0, 0, 0)

    def set_time(self, h: int, mi: int, s: int) -> None:
        w = self.wall
        self._set(w.year, w.month - 1, w.day, h, mi, s)

    def set_min_sec(self, mi: int, s: int) -> None:
        w = self.wall
        self._set(w.year, w.month - 1, w.day, w.hour, mi, s)

    def set_sec(self, s: int) -> None:
        w = self.wall
        self._set(w.year, w.month - 1, w.day, w.hour, w.minute, s)


def _contains(items: _Items, value: int) -> bool:
    return items is None or any(item.contains(value) for item in items)


def _next_above(items: tuple[_Item, ...], value: int) -> int | None:
    found = [n for item in items if (n := item.next_above(value)) is not None]
    return min(found) if found else None


class PveCalendarSchedule(CalendarSchedule):
    """A calendar event evaluated exactly as PVE's scheduler evaluates it (``dst="pve"``).

    ``pvescheduler`` runs a job when ``compute_next_event(last run's start)`` has passed
    (github.com/proxmox/pve-manager, ``PVE/Jobs.pm``, ``run_jobs``; via pve-common
    ``PVE/CalendarEvent.pm`` -> ``Proxmox::RS::CalendarEvent``). That function
    (github.com/proxmox/proxmox-rs, ``proxmox-time/src/calendar_event.rs``,
    ``CalendarEvent::compute_next_event``) starts one second after ``last`` and repeatedly
    checks year, month, day, weekday, hour, minute and second in that order; the first field
    that does not match is moved to its next allowed value (smaller fields reset) or, when
    there is none, the next larger unit is advanced; every move renormalises through glibc's
    ``mktime`` (:class:`_TmClock`); after 1000 rounds it gives up. Its DST rule follows:

    1. Spring forward (Europe/Berlin 2026-03-29, 02:00-03:00 missing): moving to hour 2
       lands on 03:00 CEST, which no longer matches hour 2, so ``02:30`` does not run that
       day at all (the cron rule runs it at 03:00); ``*/30`` runs 01:30 CET then 03:00 CEST.
    2. Fall back (2026-10-25, 02:00-03:00 twice): ``02:30`` runs once, at 02:30 CEST (the
       first occurrence: the search reaches hour 2 from 00:00 or 01:00, summer time);
       ``*/30`` runs 02:00 and 02:30 CEST and then 03:00 CET: the second 02:00-03:00 is
       skipped (moving from 02:59 to hour 3 lands after it), where the cron rule runs it.
    3. Outside the changed hour both rules agree, except for proxmox-time's own reading of
       ``N/S``, which repeats past the field maximum: ``0,10/20`` (minutes) after :50 goes to
       "minute 70", i.e. :10 of the next hour, skipping :00.

    :meth:`latest_at_or_before` is the latest instant ``s <= t`` that this search returns;
    the set engine's answer is tried first and kept when the search agrees with it.
    """

    dst = "pve"

    def __init__(self, expression: str, tz: ZoneInfo) -> None:
        super().__init__(expression, tz)
        self._cache: dict[int, int | None] = {}

    def _compute_next(self, last: int) -> int | None:
        """proxmox-time's ``compute_next_event(last)``: Unix seconds or ``None``."""
        spec = self._spec
        years, months, days, hours, minutes, seconds = spec.items
        every_day = len(spec.weekdays) == 7
        clock = _TmClock(self.tz, last + 1)
        for _ in range(_PVE_ROUNDS):
            w = clock.wall
            if years is not None and not _contains(years, w.year):
                n = _next_above(years, w.year)
                if n is None:
                    return None
                clock.add_years(n - w.year)
            elif months is not None and not _contains(months, w.month):
                n = _next_above(months, w.month)
                if n is None:
                    clock.add_years(1)
                else:
                    clock.add_months(n - w.month)
            elif days is not None and not _contains(days, w.day):
                n = _next_above(days, w.day)
                if n is None:
                    clock.add_months(1)
                else:
                    clock.add_days(n - w.day)
            elif not every_day and w.weekday() not in spec.weekdays:
                later = [d for d in range(w.weekday() + 1, 7) if d in spec.weekdays]
                clock.add_days((later[0] if later else 7) - w.weekday())
            elif hours is not None and not _contains(hours, w.hour):
                n = _next_above(hours, w.hour)
                if n is None:
                    clock.add_days(1)
                else:
                    clock.set_time(n, 0, 0)
            elif minutes is not None and not _contains(minutes, w.minute):
                n = _next_above(minutes, w.minute)
                if n is None:
                    clock.set_time(w.hour + 1, 0, 0)
                else:
                    clock.set_min_sec(n, 0)
            elif seconds is not None and not _contains(seconds, w.second):
                n = _next_above(seconds, w.second)
                if n is None:
                    clock.set_min_sec(w.minute + 1, 0)
                else:
                    clock.set_sec(n)
            else:
                return clock.mktime(w)  # TmEditor::into_epoch
        return None

    def _pve_next(self, last: int) -> int | None:
        if last not in self._cache:
            if len(self._cache) > 256:
                self._cache.clear()
            try:
                self._cache[last] = self._compute_next(last)
            except (_InvalidError, OverflowError, ValueError):
                self._cache[last] = None  # libc::mktime failed: PVE finds no event either
        return self._cache[last]

    def _origin(self, instant: int) -> int:
        """Where to start a search that must answer the first start after ``instant``.

        Inside a repeated hour, the same wall time at its first occurrence: the scheduler
        reaches that hour from the first occurrence (its last run is before it), so a search
        from the second occurrence would find starts its chain of runs never visits.
        """
        wall = datetime.fromtimestamp(instant, self.tz).replace(tzinfo=None)
        first = int(wall.replace(tzinfo=self.tz, fold=0).timestamp())
        return min(first, instant)

    def _first_after(self, instant: int) -> int | None:
        """Return the first start strictly after ``instant`` on the scheduler's chain of runs."""
        found = self._pve_next(self._origin(instant))
        for _ in range(4000):  # at most an hour of per-second starts
            if found is None or found > instant:
                return found
            found = self._pve_next(found)
        return None

    def _next_utc(self, t: datetime) -> datetime | None:
        if not self._possible:  # 02-30: proxmox-time too gives up (after 1000 rounds)
            return None
        found = self._first_after(int(t.timestamp()))
        return None if found is None else datetime.fromtimestamp(found, UTC)

    def _latest_utc(self, t: datetime) -> datetime | None:
        if not self._possible:
            return None
        end = int(t.timestamp())
        hint = super()._latest_utc(t)
        if hint is not None:
            h = int(hint.timestamp())
            if self._first_after(h - 1) == h and not self._starts_by(h, end):
                return hint
        # The smallest look-back d with a start in (end - d, end]: gallop, then bisect.
        horizon = int(LOOKBACK.total_seconds())
        d = 1
        while not self._starts_by(end - d, end):
            if d >= horizon:
                return None
            d = min(d * 2, horizon)
        low, high = d // 2, d  # no start in (end - low, end]; one in (end - high, end]
        while high - low > 1:
            mid = (low + high) // 2
            if self._starts_by(end - mid, end):
                high = mid
            else:
                low = mid
        latest = self._first_after(end - high)
        assert latest is not None
        while (following := self._first_after(latest)) is not None and following <= end:
            latest = following
        return datetime.fromtimestamp(latest, UTC)

    def _starts_by(self, after: int, end: int) -> bool:
        """Whether the first start after ``after`` is at or before ``end``."""
        found = self._first_after(after)
        return found is not None and found <= end
