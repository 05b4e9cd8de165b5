"""Cron expressions (five fields), evaluated by cronsim with Debian cron semantics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from exporter.schedule.base import LOOKBACK, Schedule, ScheduleError

__all__ = ["CronSchedule"]

_SECOND = timedelta(seconds=1)

_CRON_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31, L, LW"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT, with optional #N or L"),
)


class CronSchedule(Schedule):
    """A five-field cron expression, evaluated by cronsim."""

    def __init__(self, expression: str, tz: ZoneInfo) -> None:
        fields = expression.split()
        if len(fields) != 5:
            raise ScheduleError(
                f"invalid cron expression {expression!r}: expected 5 fields "
                f"(minute hour day-of-month month day-of-week), got {len(fields)}"
            )
        self.expression = expression
        self.tz = tz
        self._expr = " ".join(fields)
        try:
            CronSim(self._expr, datetime(2000, 1, 1, tzinfo=tz))
        except (CronSimError, ValueError, AssertionError, IndexError) as exc:
            raise ScheduleError(_cron_message(expression, fields, str(exc))) from None

    def _next_utc(self, t: datetime) -> datetime | None:
        # cronsim evaluates fixed-time expressions on the naive wall clock, so from inside a
        # repeated hour (fold=1) it can answer the earlier fold=0 occurrence: skip such answers.
        for start in CronSim(self._expr, t.astimezone(self.tz)):
            start_utc = start.astimezone(UTC)
            if start_utc > t:
                return start_utc
        return None

    def _latest_utc(self, t: datetime) -> datetime | None:
        horizon = t - LOOKBACK
        # Reverse iteration yields starts strictly before its argument.
        backwards = CronSim(self._expr, (t + _SECOND).astimezone(self.tz), reverse=True)
        for candidate in islice(backwards, 10_000):
            candidate_utc = candidate.astimezone(UTC)
            if candidate_utc < horizon:
                return None
            if candidate_utc > t:
                continue
            # Anchor on the forward iteration so that both directions agree exactly, even where
            # cronsim's reverse DST handling differs from its forward one.
            first = self._next_utc(candidate_utc - _SECOND)
            if first is None or first > t:
                continue  # not a real start: look further back
            latest = first
            while (following := self._next_utc(latest)) is not None and following <= t:
                latest = following
            return latest
        return None


def _cron_message(expression: str, fields: list[str], error: str) -> str:
    for index, (name, allowed) in enumerate(_CRON_FIELDS):
        if error.lower() == f"bad {name}":
            return (
                f"invalid cron expression {expression!r}: bad {name} field {fields[index]!r} "
                f"(allowed: {allowed})"
            )
    return f"invalid cron expression {expression!r}: {error}"
