"""Backup jobs: the guests a job covers, its parsed schedule and the graces capped by it."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import UTC, datetime
from itertools import islice

from exporter.schedule.expressions import Schedule, parse_schedule
from exporter.sources.proxmox.model import BackupJob, Guest


def covered_guests(
    job: BackupJob, guests: Iterable[Guest], *, templates: bool = False
) -> tuple[Guest, ...]:
    """Return the guests ``job`` backs up: a pool, a vmid list or all (minus exclude).

    PVE's own rule (pve-manager ``PVE/VZDump.pm``, ``get_included_guests``): ``pool`` wins,
    then a ``vmid`` list, then ``all`` (``exclude`` applies to ``all`` only); ``node``
    restricts any selection to that node's guests. Templates are only counted with
    ``templates=True`` (PVE selects them like any guest).
    """
    out = []
    for g in guests:
        if (g.template and not templates) or (job.node and g.node != job.node):
            continue
        if job.pool:
            selected = g.pool == job.pool
        elif job.vmids:
            selected = g.vmid in job.vmids
        elif job.all:
            selected = g.vmid not in job.exclude
        else:
            selected = False
        if selected:
            out.append(g)
    return tuple(sorted(out, key=lambda g: g.vmid))


@functools.lru_cache(maxsize=256)
def job_schedule(expression: str, tz: str) -> Schedule:
    """Parse a job's ``schedule`` in the nodes' time zone ``tz`` (cached); raise ScheduleError.

    Evaluated as PVE's scheduler evaluates it (``dst="pve"``: proxmox-time's
    ``compute_next_event`` over glibc ``mktime``, see
    :class:`~exporter.schedule.calendar_events.PveCalendarSchedule`), so a ``02:30`` job is
    not expected on the spring-forward day, when PVE does not run it.
    """
    return parse_schedule(expression, tz, dst="pve")


def capped_graces(
    schedule: Schedule, at: float, grace: float, start_grace: float
) -> tuple[float, float]:
    """Cap the graces at the schedule's period, so an hourly job is not given 6 hours."""
    starts = list(islice(schedule.iter_after(datetime.fromtimestamp(at, UTC)), 2))
    if len(starts) == 2:
        period = (starts[1] - starts[0]).total_seconds()
        grace = min(grace, period)
    return grace, min(start_grace, grace)
