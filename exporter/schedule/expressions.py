"""Schedule engine: cron and Proxmox calendar-event expressions evaluated in an IANA time zone.

Pure computation, no I/O. :func:`parse_schedule` picks the syntax:

* exactly five whitespace-separated fields: a cron expression
  (``minute hour day-of-month month day-of-week``), evaluated by ``cronsim`` (Healthchecks'
  engine, Debian cron semantics: day-of-month and day-of-week are OR-ed unless one of them starts
  with ``*``);
* anything else: a Proxmox VE calendar event
  ``[WEEKDAY] [[YEARS-]MONTHS-DAYS] [HOURS:MINUTES[:SECONDS]]`` (the subset of systemd's
  ``OnCalendar`` that ``proxmox-time`` accepts), evaluated by the small field-set matcher in
  :mod:`exporter.schedule.calendar_events` (which describes the syntax, as Proxmox parses it).

The engine: :mod:`~exporter.schedule.base` (:class:`Schedule`, the errors, :data:`LOOKBACK`),
:mod:`~exporter.schedule.cron` and :mod:`~exporter.schedule.calendar_events`; this module is the
public facade (import from here).

Time zones and daylight saving time. Starts are computed on the local wall clock of the schedule's
IANA zone (``zoneinfo``), returned as aware datetimes in that zone and compared as UTC instants (a
start is "after t" when its instant is later, whatever zone ``t`` is in). A schedule is a
*wall-clock* schedule when its hour and its minute are both explicit, i.e. neither field starts
with ``*`` and the hour is not omitted (``21:00``, ``mon..fri 8..17,22:0/15``, ``daily``,
``30 2 * * *``); otherwise it is an *interval* schedule (``*/5``, ``30/10``, ``hourly``,
``*/15 * * * *``, ``0 */2 * * *``). This is Debian cron's rule; cronsim implements it and the
calendar engine here follows it, so equivalent cron and calendar expressions give the same starts:

1. Wall-clock time that does not exist (spring forward, Europe/Berlin 2026-03-29 02:00-03:00): a
   wall-clock schedule runs at the first minute after the gap, ``02:30`` -> 03:00 CEST (01:00 UTC);
   several starts inside one gap collapse into that single run. An interval schedule skips them
   (``*/30`` runs at 01:30 CET and then 03:00 CEST).
2. Wall-clock time that occurs twice (fall back, Europe/Berlin 2026-10-25 02:00-03:00): a wall-clock
   schedule runs once, at the first occurrence (fold=0): ``02:30`` -> 02:30 CEST (00:30 UTC). An
   interval schedule runs at both occurrences (``*/30`` keeps running every 30 minutes of real
   time).
3. Times outside the changed hour (``01:30``, ``21:00``) are unaffected.

Compare results as instants (``.timestamp()`` or ``.astimezone(UTC)``): by PEP 495 an aware
datetime inside a repeated hour never ``==`` one in another zone, and two datetimes in the same
zone compare by wall clock, ignoring ``fold``.

That is the rule for the ``jobs:`` of the config and for everything but PVE (``dst="cron"``, the
default). PVE's own jobs are evaluated as PVE's scheduler evaluates them (``dst="pve"``,
:class:`~exporter.schedule.calendar_events.PveCalendarSchedule`: proxmox-time's
``compute_next_event`` over glibc ``mktime``), which differs only inside the changed hour:

1. spring forward: a wall-clock start inside the gap does not run that day (``02:30`` is skipped
   on 2026-03-29; the cron rule runs it at 03:00); an interval schedule skips the gap, as in cron;
2. fall back: ``02:30`` runs once, at the first occurrence, as in cron; an interval schedule runs
   through the first occurrence only and skips the repeated hour (``*/30``: 02:00 CEST,
   02:30 CEST, 03:00 CET), where cron runs it twice.

:meth:`Schedule.latest_at_or_before` is exact with respect to :meth:`Schedule.next_after` (it is
the "expected start"); it looks back at most :data:`LOOKBACK` and returns ``None`` when nothing
started in that window (e.g. a one-shot date in the past). :meth:`Schedule.next_after` raises
:class:`NoNextStartError` when there is no later start.
"""

from __future__ import annotations

from datetime import datetime
from itertools import islice
from typing import Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from exporter.schedule.base import LOOKBACK, NoNextStartError, Schedule, ScheduleError
from exporter.schedule.calendar_events import MAX_YEAR, CalendarSchedule, PveCalendarSchedule
from exporter.schedule.cron import CronSchedule

__all__ = [
    "LOOKBACK",
    "MAX_YEAR",
    "CalendarSchedule",
    "CronSchedule",
    "DstRule",
    "NoNextStartError",
    "PveCalendarSchedule",
    "Schedule",
    "ScheduleError",
    "parse_schedule",
    "upcoming",
]


def _zone(tz: str | ZoneInfo) -> ZoneInfo:
    if isinstance(tz, ZoneInfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(f"unknown time zone {tz!r}") from None


DstRule = Literal["cron", "pve"]
DST_RULES: tuple[DstRule, ...] = get_args(DstRule)


def parse_schedule(expression: str, tz: str | ZoneInfo, *, dst: DstRule = "cron") -> Schedule:
    """Parse a cron expression (exactly 5 fields) or a Proxmox calendar event, evaluated in ``tz``.

    ``dst="pve"`` evaluates a calendar event (only: PVE has no cron syntax) exactly as PVE's
    scheduler does, DST rule included. Raises :class:`ScheduleError` for an invalid
    expression, an unknown time zone or an unknown rule.
    """
    zone = _zone(tz)
    fields = expression.split()
    if not fields:
        raise ScheduleError("empty schedule expression")
    if dst == "pve":
        return PveCalendarSchedule(expression, zone)
    if dst != "cron":
        raise ScheduleError(f"unknown DST rule {dst!r} (expected one of {', '.join(DST_RULES)})")
    if len(fields) == 5:
        return CronSchedule(expression, zone)
    if len(fields) > 5:
        raise ScheduleError(
            f"invalid schedule {expression!r}: {len(fields)} fields; a cron expression has "
            "exactly 5 (minute hour day-of-month month day-of-week, no seconds or year field)"
        )
    return CalendarSchedule(expression, zone)


def upcoming(expression: str, *, tz: str, after: datetime, count: int) -> list[str]:
    """Return the next ``count`` starts after ``after`` as ISO 8601 strings with UTC offset.

    A naive ``after`` is read as wall-clock time in ``tz``. Fewer than ``count`` strings are
    returned when the schedule ends (a one-shot date).
    """
    if count < 0:
        raise ValueError(f"count must not be negative, got {count}")
    schedule = parse_schedule(expression, tz)
    if after.tzinfo is None:
        after = after.replace(tzinfo=schedule.tz)
    return [start.isoformat() for start in islice(schedule.iter_after(after), count)]
