"""The common base of the schedule expressions: :class:`Schedule`, its errors, the look-back.

:meth:`Schedule.latest_at_or_before` is exact with respect to :meth:`Schedule.next_after` (it is
the "expected start"); it looks back at most :data:`LOOKBACK` and returns ``None`` when nothing
started in that window. The subclasses are :class:`~exporter.schedule.cron.CronSchedule` and
:class:`~exporter.schedule.calendar_events.CalendarSchedule`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = ["LOOKBACK", "NoNextStartError", "Schedule", "ScheduleError"]

LOOKBACK = timedelta(days=400)
"""How far back :meth:`Schedule.latest_at_or_before` searches before answering ``None``."""


class ScheduleError(ValueError):
    """An invalid schedule expression or time zone; the message names the bad part."""


class NoNextStartError(ScheduleError):
    """The schedule has no start after the given instant (e.g. a one-shot date in the past)."""


def _to_utc(t: datetime) -> datetime:
    """Return ``t`` as a UTC datetime truncated to whole seconds (starts are whole seconds)."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"datetime must be timezone-aware, got {t.isoformat()}")
    return t.astimezone(UTC).replace(microsecond=0)


class Schedule(ABC):
    """When a job is supposed to start: an expression evaluated in a time zone."""

    expression: str
    """The original expression text."""
    tz: ZoneInfo
    """The zone whose wall clock the expression is evaluated on."""
    dst: str = "cron"
    """The DST rule: ``"cron"`` (Debian cron's) or ``"pve"`` (PVE's scheduler's)."""

    @abstractmethod
    def _next_utc(self, t: datetime) -> datetime | None:
        """Return the first start strictly after the UTC instant ``t`` (whole seconds), as UTC."""

    @abstractmethod
    def _latest_utc(self, t: datetime) -> datetime | None:
        """Return the latest start at or before the UTC instant ``t`` within LOOKBACK, as UTC."""

    def next_after(self, t: datetime) -> datetime:
        """Return the first start strictly after ``t`` (aware, any zone), in the schedule's zone.

        Raises :class:`NoNextStartError` when there is none (a one-shot date in the past).
        """
        t_utc = _to_utc(t)
        start = self._next_utc(t_utc)
        if start is None:
            raise NoNextStartError(
                f"schedule {self.expression!r} has no start after {t_utc.isoformat()}"
            )
        return start.astimezone(self.tz)

    def latest_at_or_before(self, t: datetime) -> datetime | None:
        """Return the latest start at or before ``t``, or ``None`` if none within LOOKBACK."""
        start = self._latest_utc(_to_utc(t))
        return None if start is None else start.astimezone(self.tz)

    def iter_after(self, t: datetime) -> Iterator[datetime]:
        """Yield the successive starts strictly after ``t``, strictly increasing."""
        current = _to_utc(t)
        while (start := self._next_utc(current)) is not None:
            yield start.astimezone(self.tz)
            current = start

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.expression!r}, tz={self.tz.key!r})"
