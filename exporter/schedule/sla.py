"""SLA counters: runs the schedule expected and runs met by their finish deadline, incrementally.

Veeam's SLA compliance is "restore points actually created over restore points the schedule
expected". Ours, per job:

* **expected**: every scheduled start ``s`` at or after the job's first seen whose finish
  deadline ``s + grace`` has passed *and has been looked at*: a poll of the job's source taken
  after the deadline (``upto``). Counting only up to the last poll means a run that finished in
  time but was seen by the next poll is never first counted as missed (the counters never go
  back), and a source that is down stalls the counters instead of counting unknown as missed;
* **met**: those starts with a successful run finished in ``[s, s + grace]`` and before the next
  start: the rule :func:`exporter.schedule.backtest.backtest` replays (``met_runs``), which the
  tests use as the oracle.

The counters are computed from the durable run history, so they are the same after a restart.
:class:`Tally` keeps where the count stopped, so each evaluation only looks at the starts whose
deadline passed since the last one (a bisect each in the job's sorted success times): a scrape
costs O(new deadlines × log history), never a replay of the history.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from exporter.schedule.expressions import NoNextStartError, Schedule
from exporter.schedule.jobs import JobSpec

_TICK = timedelta(microseconds=1)
RECENT = 1500  # runs kept for the status page's 30 days (an hourly job has 720)


def _start_at_or_after(schedule: Schedule, at: float) -> float | None:
    try:
        return schedule.next_after(datetime.fromtimestamp(at, UTC) - _TICK).timestamp()
    except NoNextStartError:
        return None


def _start_after(schedule: Schedule, at: float) -> float | None:
    try:
        return schedule.next_after(datetime.fromtimestamp(at, UTC)).timestamp()
    except NoNextStartError:
        return None


@dataclass
class Tally:
    """Where one job's count stands: the next start not counted yet and the two counters."""

    identity: str  # the job's first-seen key: a new schedule or grace starts a new tally
    anchor: float  # first seen: starts before it are not expected
    pending: float | None  # the first scheduled start not counted yet (None: no more starts)
    expected: int = 0
    met: int = 0
    # The last runs counted, ``(finish deadline, met)``: the status page's 30-day strip.
    recent: deque[tuple[float, bool]] = field(default_factory=lambda: deque(maxlen=RECENT))

    @classmethod
    def start(cls, spec: JobSpec, identity: str, anchor: float) -> Tally:
        """Return a tally at zero, counting from ``anchor`` on."""
        return cls(identity, anchor, _start_at_or_after(spec.schedule, anchor))

    def advance(self, spec: JobSpec, successes: Sequence[float], upto: float) -> None:
        """Count the starts whose finish deadline is before ``upto`` (``successes`` sorted)."""
        while self.pending is not None and self.pending + spec.grace < upto:
            start = self.pending
            nxt = _start_after(spec.schedule, start)
            self.expected += 1
            i = bisect.bisect_left(successes, start)
            met = False
            if i < len(successes):
                done = successes[i]
                met = done <= start + spec.grace and (nxt is None or done < nxt)
            self.met += met
            self.recent.append((start + spec.grace, met))
            self.pending = nxt
