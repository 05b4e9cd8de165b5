"""Expected offline windows: when a source's backend is planned to be off (a NAS asleep at night).

A window is a schedule of its starts plus a duration: ``{schedule: "22:00", duration: 10h}`` is
22:00 to 08:00 every day, in the source's (or the configuration's) time zone. The starts come from
the schedule engine (DST-correct wall-clock times); the duration is real time, so across the
spring-forward night that window ends at 09:00 local time. Inside a window a failed poll is
reason ``offline``, not an error, and ``BackupSourceDown`` does not fire; jobs are judged as
before.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from exporter.schedule.base import NoNextStartError, Schedule


@dataclass(frozen=True)
class OfflineWindow:
    """One recurring window: it opens at each start of ``schedule`` and lasts ``duration``."""

    schedule: Schedule
    duration: float

    def contains(self, now: float) -> bool:
        """Tell whether ``now`` (Unix seconds) is inside a window."""
        start = self.schedule.latest_at_or_before(datetime.fromtimestamp(now, UTC))
        return start is not None and now < start.timestamp() + self.duration


def expected_offline(windows: Iterable[OfflineWindow], now: float) -> bool:
    """Tell whether any of ``windows`` is open at ``now``."""
    return any(w.contains(now) for w in windows)


def next_edge(windows: Iterable[OfflineWindow], now: float) -> float:
    """Return the earliest instant after ``now`` at which :func:`expected_offline` may change.

    A window's :meth:`~OfflineWindow.contains` moves at its latest start's end and at its
    next start; ``math.inf`` when no window has either.
    """
    at = datetime.fromtimestamp(now, UTC)
    edges: list[float] = []
    for window in windows:
        start = window.schedule.latest_at_or_before(at)
        if start is not None and now < start.timestamp() + window.duration:
            edges.append(start.timestamp() + window.duration)
        with contextlib.suppress(NoNextStartError):
            edges.append(window.schedule.next_after(at).timestamp())
    return min(edges, default=math.inf)
