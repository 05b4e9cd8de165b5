"""A year of backups replayed through the cached exposition: every incident, no false alarm.

The world (``cachelab.World``) runs three jobs for all of 2026 in Europe/Berlin (both DST
changes), with injected failures: runs that fail, finish late, start late or never run, and
polls that fail. The exporter polls it every two hours and is scraped every 15 minutes; each
scrape reads what ``/metrics`` would serve (the cached exposition). The expected overdue flag
at each scrape is computed here, independently of the schedule engine: the scheduled starts
come from ``zoneinfo`` wall-clock times, the evidence from what the last good poll saw.
"""

from __future__ import annotations

import bisect
import random
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from cachelab import Run, World, lab_source

from exporter.core.clock import FakeClock
from exporter.core.collector import SnapshotCollector
from exporter.core.poller import Poller
from exporter.schedule.expressions import parse_schedule
from exporter.schedule.jobs import JobSpec
from exporter.sources.base import FetchError

BERLIN = ZoneInfo("Europe/Berlin")
H = 3600.0
POLL = 2 * H
SCRAPE = 900.0

# name, expression, (weekday or None, hour, minute), grace, start grace
JOBS = [
    ("nightly", "21:00", (None, 21, 0), 8 * H, 4.5 * H),  # PVE calendar event
    ("early", "30 1 * * *", (None, 1, 30), 8 * H, None),  # cron, 01:30: the DST nights
    ("weekly", "sun 03:30", (6, 3, 30), 12 * H, 5 * H),  # the fall-back Sunday
]


def starts(weekday: int | None, hour: int, minute: int, year: int) -> list[float]:
    """The year's scheduled starts from the wall clock (none of them in a DST gap or fold)."""
    out = []
    day = date(year - 1, 12, 24)
    while day <= date(year + 1, 1, 2):
        if weekday is None or day.weekday() == weekday:
            out.append(datetime(day.year, day.month, day.day, hour, minute, tzinfo=BERLIN))
        day += timedelta(days=1)
    return [t.timestamp() for t in out]


def latest_before(times: list[float], t: float) -> float | None:
    """The latest of ``times`` strictly before ``t``."""
    i = bisect.bisect_left(times, t)
    return times[i - 1] if i else None


async def test_a_year_of_deadlines_every_incident_within_one_scrape_no_false_alarm() -> None:
    rng = random.Random(2026)
    world = World()
    specs, schedule, deadlines = [], {}, {}
    incidents: list[tuple[str, float]] = []  # (job, the deadline it missed)
    for name, expr, (weekday, hour, minute), grace, start_grace in JOBS:
        specs.append(JobSpec(name, "lab", parse_schedule(expr, BERLIN), grace, start_grace))
        schedule[name] = starts(weekday, hour, minute, 2026)
        deadlines[name] = (grace, start_grace)
        runs = world.runs[name] = []
        for s in schedule[name]:
            fate = rng.choices(["ok", "late", "failed", "missing", "slow"], [16, 1, 1, 1, 1])[0]
            # On time: started at once and finished two polls before the deadline, so seen
            # before either deadline even if one poll fails (start graces exceed two polls).
            if fate == "ok":
                runs.append(Run(s, s + 10, s + rng.uniform(300, grace - 2 * POLL), ok=True))
                continue
            if fate == "slow" and start_grace is not None:
                began = s + start_grace + rng.uniform(0.5 * H, 2 * H)
                runs.append(Run(s, began, began + 600, ok=True))
                incidents.append((name, s + start_grace))
                continue
            if fate == "late":
                runs.append(Run(s, s + 10, s + grace + rng.uniform(H, 3 * H), ok=True))
            elif fate == "failed":
                runs.append(Run(s, s + 10, s + rng.uniform(300, grace / 2), ok=False))
            else:  # never ran: the start deadline is missed first, where there is one
                incidents.append((name, s + (grace if start_grace is None else start_grace)))
                continue
            incidents.append((name, s + grace))
    begin = datetime(2026, 1, 1, tzinfo=BERLIN).timestamp()
    end = datetime(2027, 1, 1, tzinfo=BERLIN).timestamp()
    clock = FakeClock(begin)
    source = lab_source("lab", specs, world)
    poller = Poller(source, clock=clock)
    collector = SnapshotCollector([poller], clock=clock)

    evidence = {}  # what the last good poll saw
    next_poll = begin
    failed_last = False
    detected: dict[tuple[str, float], float] = {}
    scrapes = mismatches = 0
    families = None
    overdue: dict[str, float] = {}
    t = begin + rng.uniform(0, SCRAPE)
    while t < end:
        while next_poll <= t:
            clock.now = next_poll
            # Injected poll failures, never two in a row (a success is seen within 2 polls).
            failing = not failed_last and rng.random() < 0.1
            source.error = FetchError("timeout", "no answer") if failing else None
            await poller.poll_once()
            failed_last = failing
            if not failing:
                seen_at = next_poll
                evidence = {name: world.evidence(name, seen_at) for name in deadlines}
            next_poll += POLL
        clock.now = t
        collector.exposition.body()  # the scrape: cached bytes
        current = collector.exposition.families()
        if current is not families:  # rebuilt: read the flags again
            families = current
            fam = next(f for f in current if f.name == "backup_job_overdue")
            overdue = {s.labels["backup_job"]: s.value for s in fam.samples}
        scrapes += 1
        for name, (grace, start_grace) in deadlines.items():
            ev = evidence[name]
            due = latest_before(schedule[name], t - grace)
            want = due is not None and (ev.last_success is None or ev.last_success < due)
            if start_grace is not None:
                due_start = latest_before(schedule[name], t - start_grace)
                if due_start is not None:
                    started = ev.last_start is not None and ev.last_start >= due_start
                    done = ev.last_success is not None and ev.last_success >= due_start
                    want = want or not (started or done)
            mismatches += overdue[name] != float(want)
            if overdue[name] == 1:
                # Which incident is this? The latest missed deadline before now.
                missed = [d for job, d in incidents if job == name and d < t]
                assert missed, f"false alarm: {name} overdue at {t} with no missed deadline"
                detected.setdefault((name, max(missed)), t)
        t += SCRAPE
    assert mismatches == 0
    assert scrapes > 34_000
    incidents = [i for i in incidents if begin < i[1] < end - SCRAPE]
    assert len(incidents) > 40
    for incident in incidents:
        assert incident in detected, f"missed incident {incident}"
        assert detected[incident] - incident[1] <= SCRAPE, f"late detection {incident}"
