"""Retention: ``prune-backups`` settings and the archive counts they imply.

Retention has two numbers per guest and storage: the target the prune settings keep in the
steady state (``backup_pve_retention_target_archives``, also behind the storage projection),
and what should exist by now (``backup_pve_retention_expected_archives``): the target capped
by the job's runs due since the guest's oldest archive (:func:`expected_archives`), so a guest
new to a keep-last 14 job is not "below retention" for two weeks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from exporter.schedule.expressions import Schedule, ScheduleError
from exporter.sources.proxmox.config import DEFAULT_GRACE
from exporter.sources.proxmox.jobs import capped_graces, covered_guests, job_schedule
from exporter.sources.proxmox.model import Archive, BackupJob, ProxmoxSnapshot, Retention
from exporter.sources.proxmox.reader import as_int

KEEP_KEYS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


def parse_retention(value: Any) -> Retention | None:
    """Parse ``prune-backups`` as an object (jobs) or a property string (storage config).

    ``None`` when absent. Values may be strings (docs/backends.md §1.0). No keep option set means
    keep-all, as in PVE. Raises ValueError on malformed input.
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
    """Return the job's prune-backups, else the target storage's, else ``None``."""
    if job.retention is not None:
        return job.retention
    for s in snapshot.storages:
        if s.storage == job.storage:
            return s.retention
    return None


def retention_targets(snapshot: ProxmoxSnapshot) -> dict[tuple[str, int], int]:
    """Return the archive count retention keeps, per (storage, vmid) of enabled jobs.

    This is the steady state, reached once the job has run often enough. When several jobs
    write one guest to one storage, the largest count is used (each run prunes with its own
    job's setting). Unbounded (keep-all) pairs are left out.
    """
    targets: dict[tuple[str, int], int] = {}
    for job in snapshot.jobs:
        if not job.enabled:
            continue
        retention = effective_retention(snapshot, job)
        count = retention.expected if retention is not None else None
        if count is None:
            continue
        for g in covered_guests(job, snapshot.guests):
            key = (job.storage, g.vmid)
            targets[key] = max(targets.get(key, 0), count)
    return targets


def expected_archives(
    snapshot: ProxmoxSnapshot, *, grace: float = DEFAULT_GRACE
) -> dict[tuple[str, int], int]:
    """Return how many archives should exist by now, per (storage, vmid) of enabled jobs.

    ``min(target, runs)``: the retention target of :func:`retention_targets` (from the jobs
    whose schedule can be read), capped by the scheduled runs of those jobs that are due since
    the guest's oldest archive on that storage (see :func:`_due_runs`), summed over the jobs.
    So a guest added to a keep-last 14 job a few days ago expects as many archives as runs
    happened, a failed run among them shows as one archive short, and a guest without any
    archive expects 0 (the not-backed-up and job-overdue alerts cover that case). ``grace`` is
    the source's ``job_grace``: a run is due once its finish deadline has passed (or earlier,
    when an archive at or after its start already exists). All of it is computed from
    ``snapshot.time``, never from the wall clock.
    """
    now = snapshot.time
    spans: dict[tuple[str, int], tuple[float, float]] = {}
    for a in snapshot.archives:
        span = spans.get((a.storage, a.vmid))
        if span is None:
            spans[(a.storage, a.vmid)] = (a.ctime, a.ctime)
        else:
            spans[(a.storage, a.vmid)] = (min(span[0], a.ctime), max(span[1], a.ctime))
    # Only jobs whose schedule can be read count; jobs() logs the others.
    readable: list[tuple[BackupJob, int, Schedule, float]] = []
    for job in snapshot.jobs:
        retention = effective_retention(snapshot, job) if job.enabled else None
        target = retention.expected if retention is not None else None
        if target is None:
            continue
        try:
            schedule = job_schedule(job.schedule, snapshot.timezone)
        except ScheduleError:
            continue
        allowance, _ = capped_graces(schedule, now, grace, grace)
        readable.append((job, target, schedule, allowance))
    targets: dict[tuple[str, int], int] = {}
    coverage: list[tuple[tuple[str, int], BackupJob, Schedule, float]] = []
    for job, target, schedule, allowance in readable:
        for g in covered_guests(job, snapshot.guests):
            key = (job.storage, g.vmid)
            targets[key] = max(targets.get(key, 0), target)
            coverage.append((key, job, schedule, allowance))
    runs = dict.fromkeys(targets, 0)
    memo: dict[tuple[str, float, int, float, int], int] = {}
    for key, job, schedule, allowance in coverage:
        span = spans.get(key)
        if span is None or runs[key] >= targets[key]:
            continue
        oldest, newest = span
        runs[key] += _due_runs(
            schedule,
            oldest=oldest,
            newest=newest,
            now=now,
            allowance=allowance,
            cap=targets[key] - runs[key],
            memo=memo,
            memo_key=job.id,
        )
    return {key: min(target, runs[key]) for key, target in targets.items()}


def _due_runs(
    schedule: Schedule,
    *,
    oldest: float,
    newest: float,
    now: float,
    allowance: float,
    cap: int,
    memo: dict[tuple[str, float, int, float, int], int],
    memo_key: str,
) -> int:
    """Count ``schedule``'s starts from the run that wrote the oldest archive up to now.

    The first start counted is the latest one at or before ``oldest`` if ``oldest`` is within
    ``allowance`` of it (that run wrote it: a guest's dump may begin well after the job's start
    when the job backs up several guests); otherwise the first start after ``oldest`` (the
    oldest archive came from a manual run). The last one is the latest start at or before
    ``now - allowance`` (its finish deadline passed) or, if later, at or before ``newest`` (a run
    still inside its grace that has already written its archive). Stops at ``cap``.
    """
    upper = min(now, max(now - allowance, newest))
    producing = schedule.latest_at_or_before(datetime.fromtimestamp(oldest, UTC))
    if producing is not None and oldest - producing.timestamp() <= allowance:
        anchor, count = producing.timestamp(), 1
    else:
        anchor, count = oldest, 0
    # Guests of one job usually share the run that wrote their oldest archive.
    key = (memo_key, anchor, count, upper, cap)
    if key in memo:
        return memo[key]
    if anchor > upper:
        count = 0
    else:
        for start in schedule.iter_after(datetime.fromtimestamp(anchor, UTC)):
            if count >= cap or start.timestamp() > upper:
                break
            count += 1
    memo[key] = min(count, cap)
    return memo[key]


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
    steady state the storage has to hold.
    """
    newest = _newest_per_pair(snapshot.archives)
    projected: dict[str, float] = {}
    for (storage, vmid), count in retention_targets(snapshot).items():
        projected.setdefault(storage, 0.0)
        archive = newest.get((storage, vmid))
        if archive is not None:
            projected[storage] += count * archive.size
    return projected
