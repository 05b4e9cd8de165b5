"""Retention as Proxmox VE computes it: ``prune-backups`` and the archive counts it leaves.

PVE prunes a guest's archives on a storage after every backup (vzdump with ``remove=1``, the
default) with the job's ``prune-backups``, else the storage's (``pve-manager:PVE/VZDump.pm``,
``exec_backup_task``, ``prune_backups``), using the selection of
``pve-storage:src/PVE/Storage.pm`` ``prune_mark_backup_group``, re-implemented in
:func:`prune_marks`. Two numbers per guest and storage come out of it:

* ``backup_pve_retention_expected_archives`` (:func:`expected_archives`): the unprotected
  archives PVE leaves by now. It replays the job's scheduled runs since the run that wrote the
  guest's oldest archive, each followed by PVE's pruning, so keep-daily=7,keep-weekly=4,
  keep-monthly=3 expects 9, 12 and 13 archives after 21, 61 and 91 daily runs, not 14;
* ``backup_pve_retention_target_archives`` (:func:`retention_targets`): the same replay over
  as long a history as the settings can reach (the steady state), behind the storage
  projection.

On a Proxmox Backup Server storage PVE hands the same keep options to PBS, whose selection
(``proxmox/proxmox-backup``, ``pbs-datastore/src/prune.rs``, ``mark_selections``) is the same
rule; PBS applies it in its own local time, taken here to be the nodes' time zone.

Protected archives are never pruned and never count toward a keep option (``Plugin.pm``
``prune_backups`` marks them ``protected`` before the selection), so both numbers count
unprotected archives; a run that wrote a protected archive adds nothing to prune.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any
from zoneinfo import ZoneInfo

from exporter.schedule.expressions import Schedule, ScheduleError
from exporter.sources.proxmox.config import DEFAULT_GRACE
from exporter.sources.proxmox.jobs import capped_graces, covered_guests, job_schedule
from exporter.sources.proxmox.model import Archive, BackupJob, ProxmoxSnapshot, Retention
from exporter.sources.proxmox.reader import as_int

KEEP_KEYS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
"""The keep options in the order PVE applies them (shortest period first)."""

# The longest history the steady-state replay looks at, and the most runs it replays.
_MAX_HISTORY = timedelta(days=366 * 12)
_MAX_RUNS = 20_000


def parse_retention(value: Any) -> Retention | None:
    """Parse ``prune-backups``: an object (``/cluster/backup``) or a property string (``/storage``).

    ``None`` when absent. Values may be strings (docs/backends.md §1.0). No positive keep
    option means keep-all, as PVE's ``validate_prune_backups`` (``pve-storage:
    src/PVE/Storage/Plugin.pm``) and ``prune_mark_backup_group`` read it; ``keep-all=1`` wins
    over the other options, as in ``prune_mark_backup_group``. Raises ValueError on malformed
    input.
    """
    if value is None or value == "":
        return None
    items: list[tuple[str, Any]]
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, str):
        items = []
        for part in value.split(","):
            key, sep, raw = part.partition("=")
            if not sep:
                raise ValueError(f"bad prune-backups entry {part!r}")
            items.append((key.strip(), raw.strip()))
    else:
        raise ValueError(f"prune-backups must be an object or a string, got {type(value).__name__}")
    keep: dict[str, int] = {}
    keep_all = False
    for key, raw in items:
        if not key.startswith("keep-"):
            continue  # e.g. max-protected-backups: not about how many are kept by pruning
        number = as_int(raw)
        if number is None or number < 0:
            raise ValueError(f"bad prune-backups value {key}={raw!r}")
        name = key.removeprefix("keep-")
        if name == "all":
            keep_all = bool(number)
        elif name in KEEP_KEYS and number > 0:
            keep[name] = number
    ordered = tuple((k, keep[k]) for k in KEEP_KEYS if k in keep)
    return Retention(keep=ordered, keep_all=keep_all or not ordered)


def effective_retention(snapshot: ProxmoxSnapshot, job: BackupJob) -> Retention | None:
    """Return the job's prune-backups, else the target storage's, else ``None`` (keep-all).

    The order vzdump uses (``pve-manager:PVE/VZDump.pm``: the job's option, ``//=`` the
    storage's, ``//=`` the vzdump default ``keep-all=1``).
    """
    if job.retention is not None:
        return job.retention
    for s in snapshot.storages:
        if s.storage == job.storage:
            return s.retention
    return None


# ---------------------------------------------------------------------------- the selection

_PeriodIds = tuple[object, ...]  # (ctime, hour, day, ISO week, month, year) in local time


def _period_ids(ctime: float, zone: ZoneInfo) -> _PeriodIds:
    """Return the period each keep option groups ``ctime`` into, in the node's local time.

    As the ``$id_func`` closures of ``prune_mark_backup_group``: ``localtime`` hour, day,
    ISO week (``%V/%G``), month and year, and the time itself for keep-last.
    """
    local = datetime.fromtimestamp(ctime, zone)
    iso = local.isocalendar()
    day = (local.year, local.month, local.day)
    return (ctime, (*day, local.hour), day, (iso.year, iso.week), day[:2], local.year)


def _select(
    ctimes: Sequence[float],
    ids: Sequence[_PeriodIds],
    marks: list[str | None],
    retention: Retention,
) -> None:
    """Mark one backup group in place, as ``prune_mark_backup_group`` (pve-storage, Storage.pm).

    Entries already marked (``protected``) are neither kept nor removed by an option and do
    not cover a period. The options run from keep-last to keep-yearly over the entries newest
    first; each skips the entries already marked and the periods an earlier option covers,
    keeps the newest entry of each new period and marks the rest of that period for removal,
    and stops at the first entry of a new period once it has its count (``$prune_mark``).
    Unmarked entries are removed at the end. Keep-all, or no positive option, keeps all.
    """
    if retention.keep_all or not retention.keep:
        for i, mark in enumerate(marks):
            if mark is None or mark == "remove":
                marks[i] = "keep"
        return
    # Perl's sort is stable, as Python's is with reverse=True: equal times keep list order.
    order = sorted(range(len(ids)), key=ctimes.__getitem__, reverse=True)
    kept = [i for i in order if marks[i] == "keep"]
    counts = dict(retention.keep)
    for level, name in enumerate(KEEP_KEYS):
        count = counts.get(name, 0)
        if count <= 0:
            continue
        covered = {ids[i][level] for i in kept}
        newly: set[object] = set()
        for i in order:
            period = ids[i][level]
            if marks[i] is not None or period in covered:
                continue
            if period not in newly:
                if len(newly) >= count:
                    break
                newly.add(period)
                marks[i] = "keep"
                kept.append(i)
            else:
                marks[i] = "remove"
    for i, mark in enumerate(marks):
        if mark is None:
            marks[i] = "remove"


def prune_marks(
    ctimes: Sequence[float],
    retention: Retention,
    tz: str = "UTC",
    *,
    protected: Sequence[bool] = (),
) -> list[str]:
    """Return ``keep``, ``remove`` or ``protected`` for each backup of one group, in order.

    One group is one guest type and vmid on one storage; ``ctimes`` are the times in the
    archive names and ``tz`` the node's time zone. ``protected[i]`` marks entry ``i``
    protected (``pve-storage:src/PVE/Storage/Plugin.pm``, ``prune_backups``).
    """
    zone = ZoneInfo(tz)
    ids = [_period_ids(t, zone) for t in ctimes]
    marks: list[str | None] = [
        "protected" if i < len(protected) and protected[i] else None for i in range(len(ids))
    ]
    _select(ctimes, ids, marks, retention)
    return [m or "remove" for m in marks]


# ------------------------------------------------------------------------------ the replay


@dataclass(frozen=True)
class _Pruning:
    """What a run of one job does after its backup (``PVE/VZDump.pm``, ``exec_backup_task``)."""

    retention: Retention
    remove: bool  # the job's ``remove`` (default 1): prune after the backup

    @property
    def prunes(self) -> bool:
        """``remove`` and a bounded retention (vzdump sets remove=0 for keep-all)."""
        return self.remove and not self.retention.keep_all and bool(self.retention.keep)

    @property
    def limit(self) -> int:
        """With ``remove=0``: vzdump refuses a backup once this many unprotected exist (0: none)."""
        if self.remove or self.retention.keep_all:
            return 0
        return sum(n for _, n in self.retention.keep)


_Entry = tuple[float, _PeriodIds]


def _run(state: list[_Entry], new: Iterable[_Entry], pruning: _Pruning) -> list[_Entry]:
    """Return the unprotected archives after one run that wrote ``new`` and then pruned."""
    if pruning.limit and len(state) >= pruning.limit:
        return state  # "There is a max backup limit of N enforced ...": the run fails
    state = [*state, *new]
    if not pruning.prunes:
        return state
    marks: list[str | None] = [None] * len(state)
    _select([t for t, _ in state], [ids for _, ids in state], marks, pruning.retention)
    return [e for e, m in zip(state, marks, strict=True) if m == "keep"]


@dataclass(frozen=True)
class _JobPlan:
    """A job covering a guest on a storage: its schedule, run allowance and pruning."""

    job: BackupJob
    schedule: Schedule
    allowance: float
    pruning: _Pruning


def _plans(snapshot: ProxmoxSnapshot, grace: float) -> dict[tuple[str, int], list[_JobPlan] | None]:
    """Return the enabled jobs per (storage, vmid); ``None`` where one's schedule is unreadable."""
    out: dict[tuple[str, int], list[_JobPlan] | None] = {}
    for job in snapshot.jobs:
        if not job.enabled:
            continue
        retention = effective_retention(snapshot, job) or Retention(keep_all=True)
        plan: _JobPlan | None
        try:
            schedule = job_schedule(job.schedule, snapshot.timezone)
        except ScheduleError:
            plan = None  # jobs() logs it
        else:
            allowance, _ = capped_graces(schedule, snapshot.time, grace, grace)
            plan = _JobPlan(job, schedule, allowance, _Pruning(retention, job.remove))
        for g in covered_guests(job, snapshot.guests):
            key = (job.storage, g.vmid)
            plans = out.setdefault(key, [])
            if plans is None or plan is None:
                out[key] = None
            else:
                plans.append(plan)
    return out


def _bounded(plans: Sequence[_JobPlan]) -> bool:
    return any(p.pruning.prunes or p.pruning.limit for p in plans)


def _period(schedule: Schedule, at: float) -> float | None:
    """Return the gap between the schedule's next two starts after ``at`` (``None``: none)."""
    starts = [
        s.timestamp() for s in islice(schedule.iter_after(datetime.fromtimestamp(at, UTC)), 2)
    ]
    return starts[1] - starts[0] if len(starts) == 2 else None


def _starts(schedule: Schedule, after: float, until: float) -> list[float]:
    """Return the schedule's starts in ``(after, until]``: the newest ``_MAX_RUNS`` of them."""
    gap = _period(schedule, until)
    if gap is not None:
        after = max(after, until - _MAX_RUNS * gap)
    out: deque[float] = deque(maxlen=_MAX_RUNS)
    for start in schedule.iter_after(datetime.fromtimestamp(after, UTC)):
        t = start.timestamp()
        if t > until:
            break
        out.append(t)
    return list(out)


def _producing_start(plan: _JobPlan, ctime: float) -> float | None:
    """Return the start of ``plan``'s run that wrote an archive of ``ctime``, if one did."""
    start = plan.schedule.latest_at_or_before(datetime.fromtimestamp(ctime, UTC))
    if start is None or ctime - start.timestamp() > plan.allowance:
        return None
    return start.timestamp()


def expected_archives(
    snapshot: ProxmoxSnapshot, *, grace: float = DEFAULT_GRACE
) -> dict[tuple[str, int], int]:
    """Return the unprotected archives PVE leaves by now, per (storage, vmid) of enabled jobs.

    The replay: every scheduled run of the guest's jobs from the one that wrote its oldest
    archive (protected or not: the job ran then; a first archive no scheduled run wrote
    counts from the next start) up to now adds its archive and prunes with its job's
    retention, as vzdump does. A run adds the archive it wrote (at that archive's time);
    a run with no archive left adds one at its start (plus the delay this guest's dump
    usually has in the run), so a failed run shows as one archive short while pruning would
    have kept it; a run whose archive is protected adds none (``Plugin.pm``
    ``prune_backups``: protected archives are not candidates). Archives no scheduled run wrote
    (manual backups) join the candidates at their time.

    A run is due once its finish deadline (``grace``, the source's ``job_grace``, capped at
    the schedule's period) has passed, or earlier when an archive at or after its start
    exists. A guest without any archive expects 0 (the not-backed-up and job-overdue alerts
    cover it). Pairs whose jobs all keep everything, or one of whose jobs has a schedule the
    exporter cannot read, are left out. Replaying from the oldest surviving archive gives the
    count a replay from the job's very first run gives (the archives pruned before it no
    longer take part; ``tests/test_retention.py`` checks this over long histories).
    All of it is computed from ``snapshot.time``, never from the wall clock.
    """
    now = snapshot.time
    groups: dict[tuple[str, int], list[Archive]] = {}
    for a in snapshot.archives:
        if a.standard_name:  # other names are never pruned nor counted (Plugin.pm "renamed")
            groups.setdefault((a.storage, a.vmid), []).append(a)
    out: dict[tuple[str, int], int] = {}
    for key, plans in _plans(snapshot, grace).items():
        if plans is None or not _bounded(plans):
            continue
        archives = tuple(sorted(groups.get(key, ()), key=lambda a: a.ctime))
        out[key] = (
            _replay_archives(archives, tuple(plans), now, snapshot.timezone) if archives else 0
        )
    return out


@functools.lru_cache(maxsize=512)  # a scrape renders the same snapshot again
def _replay_archives(
    archives: tuple[Archive, ...], plans: tuple[_JobPlan, ...], now: float, tz: str
) -> int:
    zone = ZoneInfo(tz)
    oldest, newest = archives[0].ctime, archives[-1].ctime
    runs: list[tuple[float, int]] = []
    for index, plan in enumerate(plans):
        upper = min(now, max(now - plan.allowance, newest))
        first = _producing_start(plan, oldest)
        starts = [first] if first is not None and first <= upper else []
        starts += _starts(plan.schedule, first if first is not None else oldest, upper)
        runs.extend((t, index) for t in starts)
    due = set(runs)
    written: dict[tuple[float, int], list[Archive]] = {}
    manual: list[Archive] = []
    for a in archives:
        best: tuple[float, int] | None = None
        for index, plan in enumerate(plans):
            start = _producing_start(plan, a.ctime)
            if start is not None and (start, index) in due and (best is None or start > best[0]):
                best = (start, index)
        if best is None:
            manual.append(a)
        else:
            written.setdefault(best, []).append(a)
    delay = dict.fromkeys(range(len(plans)), 0.0)
    for (start, index), items in sorted(written.items()):
        delay[index] = max(a.ctime for a in items) - start
    events: list[tuple[float, int, int]] = [(t, 1, index) for t, index in runs]
    events += [(a.ctime, 0, -1) for a in manual if not a.protected]
    state: list[_Entry] = []
    for t, is_run, index in sorted(events):
        if not is_run:  # a manual backup: a candidate from now on
            state.append((t, _period_ids(t, zone)))
            continue
        wrote = written.get((t, index))
        if wrote is None:
            when = t + delay[index]
            new = [(when, _period_ids(when, zone))]
        else:
            new = [(a.ctime, _period_ids(a.ctime, zone)) for a in wrote if not a.protected]
        state = _run(state, new, plans[index].pruning)
    return len(state)


def retention_targets(
    snapshot: ProxmoxSnapshot, *, grace: float = DEFAULT_GRACE
) -> dict[tuple[str, int], int]:
    """Return the unprotected archives retention keeps in the steady state, per (storage, vmid).

    The replay of :func:`expected_archives` over the jobs' schedules alone (every run
    succeeded), over a history long enough that the oldest run is pruned: what PVE keeps
    once the job ran often enough, for this calendar position. With keep-last N alone that
    is N. Where one of the jobs has a schedule the exporter cannot read, the sum of the
    largest job's keep options (an upper bound) stands in, so the storage projection still
    has a number. Pairs whose jobs all keep everything are left out.
    """
    out: dict[tuple[str, int], int] = {}
    memo: dict[tuple[tuple[_JobPlan, ...], float], int] = {}
    for key, plans in _plans(snapshot, grace).items():
        if plans is None:
            bounds = [
                r.expected
                for job in snapshot.jobs
                if job.enabled and job.storage == key[0]
                for r in (effective_retention(snapshot, job),)
                if r is not None
                and r.expected is not None
                and any(g.vmid == key[1] for g in covered_guests(job, snapshot.guests))
            ]
            if bounds:
                out[key] = max(bounds)
            continue
        if not _bounded(plans):
            continue
        memo_key = (tuple(plans), snapshot.time)
        if memo_key not in memo:
            memo[memo_key] = _steady_state(
                tuple((p.schedule, p.pruning) for p in plans), snapshot.time, snapshot.timezone
            )
        out[key] = memo[memo_key]
    return out


_SPAN = {
    "hourly": 3600.0,
    "daily": 86400.0,
    "weekly": 7 * 86400.0,
    "monthly": 31 * 86400.0,
    "yearly": 366 * 86400.0,
}


def _history_estimate(schedule: Schedule, retention: Retention, at: float) -> float:
    period = _period(schedule, at) or 86400.0
    span = sum(n * _SPAN.get(name, period) for name, n in retention.keep)
    return span + 2 * period


@functools.lru_cache(maxsize=128)
def _steady_state(jobs: tuple[tuple[Schedule, _Pruning], ...], now: float, tz: str) -> int:
    zone = ZoneInfo(tz)
    history = max(_history_estimate(s, p.retention, now) for s, p in jobs)
    while True:
        runs = sorted(
            (t, index)
            for index, (schedule, _) in enumerate(jobs)
            for t in _starts(schedule, now - history, now)
        )
        state: list[_Entry] = []
        for t, index in runs:
            state = _run(state, [(t, _period_ids(t, zone))], jobs[index][1])
        first_pruned = not runs or not state or state[0][0] > runs[0][0]
        if first_pruned or history >= _MAX_HISTORY.total_seconds() or len(runs) >= _MAX_RUNS:
            return len(state)
        history = min(2 * history, _MAX_HISTORY.total_seconds())


def _newest_per_pair(archives: Iterable[Archive]) -> dict[tuple[str, int], Archive]:
    newest: dict[tuple[str, int], Archive] = {}
    for a in archives:
        key = (a.storage, a.vmid)
        if key not in newest or a.ctime > newest[key].ctime:
            newest[key] = a
    return newest


def projected_bytes(snapshot: ProxmoxSnapshot) -> dict[str, float]:
    """Return, per storage, Σ over guests of the retention target × newest archive size.

    The full target (:func:`retention_targets`), not what is due so far: this projects the
    steady state the storage has to hold (protected archives come on top).
    """
    newest = _newest_per_pair(snapshot.archives)
    projected: dict[str, float] = {}
    for (storage, vmid), count in retention_targets(snapshot).items():
        projected.setdefault(storage, 0.0)
        archive = newest.get((storage, vmid))
        if archive is not None:
            projected[storage] += count * archive.size
    return projected
