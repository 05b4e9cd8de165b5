"""Threshold schedules: "every 35 days, on Tuesdays at 02:10" as TrueNAS scrub tasks mean it.

A TrueNAS scrub task has a cron schedule *and* a threshold in days. The cron entry fires on
every allowed instant (each Tuesday 02:10) and runs ``pool.scrub.run(pool, threshold)``, which
starts a scrub only when the last one started long enough ago
(``truenas/middleware:src/middlewared/middlewared/plugins/pool_/scrub.py``, ``__run``)::

    if (datetime.now() - last_scrub).total_seconds() < (threshold - 1) * 86400:
        return False  # too early: skip this firing

So the scrub is due at the **first allowed instant at or after ``last scrub + (threshold - 1)
days``** (the one-day slack lets a 35-day threshold with a weekly check scrub exactly every
five weeks even though each scrub starts a few seconds after the cron instant). If that firing
is missed (the NAS was off), the task tries again at each following allowed instant.

:class:`ThresholdSchedule` is that series of starts as a :class:`~exporter.schedule.Schedule`:
every start of the underlying cron schedule at or after the eligibility instant. With it,
:func:`exporter.schedule.jobs.evaluate` computes the real deadline: the expected start is the first
allowed instant after the threshold, and the job is overdue once that start plus the grace has
passed without a completed scrub; a weekly cron alone would wrongly expect a scrub every week.
Without any known scrub every allowed instant is due (TrueNAS treats "never scrubbed" as
``datetime.min``), so the job is overdue once the latest allowed instant plus the grace passed.

From TrueNAS 26.0 the check moved to ``zpool.scrub.run``
(``src/middlewared/middlewared/plugins/zpool/scrub_impl.py``, ``validate_pool``) and measures
from the **end** of the last finished scrub: the start is skipped silently (no alert, no
failure) while ``scan.end_time >= now - (threshold - 1) days``. The caller passes that anchor
as ``last_run`` (the TrueNAS kind's ``PoolScrub.threshold_anchor``); the deadline is then the
last completed scrub plus the threshold, aligned to the next allowed instant. A skipped firing
is never an expected run, so it cannot make the job late.

The schedule is rebuilt from each poll's last completed scrub; its :attr:`expression` does not
contain that instant, so the ``schedule`` label of ``backup_job_info`` stays stable.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from exporter.schedule.expressions import NoNextStartError, Schedule

__all__ = ["ThresholdSchedule"]

_SECOND = timedelta(seconds=1)


class ThresholdSchedule(Schedule):
    """The starts of ``cron`` at or after ``last_run + (threshold_days - slack_days)`` days.

    ``last_run`` is the start of the last completed run (``None``: never ran, every start of
    ``cron`` counts). ``slack_days`` is 1 for TrueNAS scrub tasks (see the module docstring).
    """

    def __init__(
        self,
        cron: Schedule,
        *,
        threshold_days: int,
        last_run: datetime | float | None,
        slack_days: int = 1,
    ) -> None:
        if threshold_days < 0:
            raise ValueError(f"threshold_days must not be negative, got {threshold_days}")
        self.cron = cron
        self.threshold_days = threshold_days
        self.tz = cron.tz
        self.expression = f"{cron.expression} (threshold {threshold_days}d)"
        self.eligible_from: datetime | None = None
        if last_run is not None:
            ts = last_run.timestamp() if isinstance(last_run, datetime) else float(last_run)
            gap = max(threshold_days - slack_days, 0) * 86400
            # Starts are whole seconds: round the eligibility instant up to the next second.
            self.eligible_from = datetime.fromtimestamp(math.ceil(ts + gap), UTC)

    def _next_utc(self, t: datetime) -> datetime | None:
        if self.eligible_from is not None and t < self.eligible_from:
            t = self.eligible_from - _SECOND  # the first start at or after eligibility
        try:
            return self.cron.next_after(t).astimezone(UTC)
        except NoNextStartError:
            return None

    def _latest_utc(self, t: datetime) -> datetime | None:
        start = self.cron.latest_at_or_before(t)
        if start is None:
            return None
        start = start.astimezone(UTC)
        if self.eligible_from is not None and start < self.eligible_from:
            return None
        return start

    def __repr__(self) -> str:
        since = "never" if self.eligible_from is None else self.eligible_from.isoformat()
        return f"ThresholdSchedule({self.expression!r}, tz={self.tz.key!r}, eligible={since})"
