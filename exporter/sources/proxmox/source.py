"""Proxmox VE source: vzdump archives, backup jobs, vzdump tasks and retention, via proxmoxer.

One poll reads (api-shapes §1; 5 + 2 per online node + 1 per backup storage calls)::

    GET /nodes                                   node list and online status
    GET /cluster/resources?type=vm               guests: vmid, name, node, type, pool, template
    GET /storage                                 storage config: prune-backups (property string)
    GET /cluster/backup                          backup jobs (prune-backups as an object)
    GET /cluster/backup-info/not-backed-up       guests no job covers
    GET /nodes/{node}/storage                    per online node: backup storages, size, used
    GET /nodes/{node}/tasks?typefilter=vzdump&source=all&limit=N   recent vzdump tasks
    GET /nodes/{node}/storage/{sid}/content?content=backup         once per storage (shared: once)

The API token needs ``PVEAuditor`` on ``/`` and, to see backups at all, ``Datastore.Allocate`` on
``/storage/<sid>`` or ``Datastore.AllocateSpace`` there plus ``VM.Backup`` on ``/vms``: without
them PVE answers the backup listing with an empty list and HTTP 200. When the vzdump tasks show
successful backups but no storage lists a single archive, the poll fails with reason
``permission`` instead of reporting "no backups".

A vzdump task names its guest (``id``) only when it backed up exactly one guest; a task with an
empty ``id`` is counted for every guest on its node (its per-guest outcome is not in the task
list), so a failed multi-guest task marks a guest failed only when that guest has no archive
newer than the task's start.

Retention has two numbers per guest and storage: the target the prune settings keep in the
steady state (``backup_pve_retention_target_archives``, also behind the storage projection),
and what should exist by now (``backup_pve_retention_expected_archives``): the target capped
by the job's runs due since the guest's oldest archive (:func:`expected_archives`), so a guest
new to a keep-last 14 job is not "below retention" for two weeks.

Sample exposition::

    # HELP backup_pve_guest_info Guests of the Proxmox VE cluster.
    # TYPE backup_pve_guest_info gauge
    backup_pve_guest_info{guest_type="qemu",name="infra",node="pve1",source="pve1",vmid="100"} 1.0
    # HELP backup_pve_archive_last_timestamp_seconds Start time of the newest backup archive.
    # TYPE backup_pve_archive_last_timestamp_seconds gauge
    backup_pve_archive_last_timestamp_seconds{source="pve1",storage="nas",vmid="100"} 1.7697204e+09
    # HELP backup_pve_retention_projected_bytes Retention target times newest size, per storage.
    # TYPE backup_pve_retention_projected_bytes gauge
    backup_pve_retention_projected_bytes{source="pve1",storage="nas"} 1.68e+11
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from itertools import islice
from typing import Any

import requests
from prometheus_client.core import GaugeMetricFamily, Metric
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

from exporter.schedule.expressions import Schedule, ScheduleError, parse_schedule
from exporter.schedule.jobs import Evidence, JobSpec
from exporter.sources.base import FetchContext, FetchError, Source
from exporter.sources.proxmox import KIND
from exporter.sources.proxmox.config import DEFAULT_GRACE, ProxmoxConfig
from exporter.sources.proxmox.config import SPEC as SPEC  # noqa: PLC0414 - re-export
from exporter.vzdump import parse_volid

log = logging.getLogger(__name__)

# vzdump's own default target when a job names no storage.
DEFAULT_JOB_STORAGE = "local"
KEEP_KEYS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
# pvescheduler starts due jobs once a minute; a task this close after a job's scheduled start
# is taken as that run.
TASK_SLACK = 300.0

# Node names and storage ids go into URL paths; PVE's own formats are narrower than this.
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_VMID_LIST_SPLIT = re.compile(r"[,;\s]+")

# ------------------------------------------------------------------------------- snapshot


@dataclass(frozen=True)
class Guest:
    """A VM or container of the cluster."""

    vmid: int
    name: str
    node: str
    guest_type: str  # qemu | lxc
    pool: str = ""
    template: bool = False


@dataclass(frozen=True)
class Retention:
    """A ``prune-backups`` setting: the non-zero ``keep-*`` counts, or keep-all."""

    keep: tuple[tuple[str, int], ...] = ()
    keep_all: bool = False

    @property
    def expected(self) -> int | None:
        """How many archives it keeps at most; ``None`` when unbounded (keep-all).

        For a single ``keep-last=N`` that is exactly N once N runs happened. Several keep-*
        options select overlapping archives, so their sum is an upper bound.
        """
        if self.keep_all or not self.keep:
            return None
        return sum(n for _, n in self.keep)


@dataclass(frozen=True)
class BackupJob:
    """A backup job of ``/cluster/backup``."""

    id: str
    schedule: str
    enabled: bool
    storage: str
    mode: str
    all: bool = False
    vmids: frozenset[int] = frozenset()
    exclude: frozenset[int] = frozenset()
    pool: str = ""
    node: str = ""
    retention: Retention | None = None


@dataclass(frozen=True)
class BackupStorage:
    """A storage with ``backup`` content, once per id (a shared one counts once)."""

    storage: str
    type: str
    shared: bool
    active: bool
    total: int
    used: int
    nodes: tuple[str, ...]
    listed: bool  # its content was read (active somewhere)
    retention: Retention | None = None  # from the cluster storage config


@dataclass(frozen=True)
class Archive:
    """One backup on a storage (kept in the snapshot, never rendered one by one)."""

    storage: str
    vmid: int
    ctime: float
    size: int
    protected: bool = False
    verified: bool | None = None  # PBS verification: ok True, failed False, none None


@dataclass(frozen=True)
class VzdumpTask:
    """One vzdump task; ``vmid`` is ``None`` when the task covered several guests."""

    node: str
    starttime: float
    endtime: float | None
    status: str  # ok | warning | error | unknown | running
    vmid: int | None

    @property
    def succeeded(self) -> bool:
        """OK or with warnings (the archive was written)."""
        return self.status in ("ok", "warning")

    @property
    def failed(self) -> bool:
        """Ended in an error or an unknown state (no evidence of success)."""
        return self.status in ("error", "unknown")


@dataclass(frozen=True)
class ProxmoxSnapshot:
    """What one poll saw."""

    time: float
    timezone: str
    nodes: tuple[tuple[str, bool], ...]  # (name, online)
    guests: tuple[Guest, ...]
    storages: tuple[BackupStorage, ...]
    archives: tuple[Archive, ...]
    jobs: tuple[BackupJob, ...]
    not_backed_up: frozenset[int]
    tasks: tuple[VzdumpTask, ...]
    tasks_read_nodes: tuple[str, ...] = field(default=())


# ------------------------------------------------------------------------- pure functions


def normalize_status(raw: str, *, running: bool = False) -> str:
    """Map a task status as ``PVE::Tools::upid_normalize_status_type`` does (+ ``running``)."""
    if running or raw == "RUNNING":
        return "running"
    if raw == "OK":
        return "ok"
    if raw.startswith("WARNINGS:"):
        return "warning"
    if not raw or raw == "unexpected status":
        return "unknown"
    return "error"


def parse_retention(value: Any) -> Retention | None:
    """Parse ``prune-backups`` as an object (jobs) or a property string (storage config).

    ``None`` when absent. Values may be strings (api-shapes §1.0). No keep option set means
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
        number = _as_int(raw)
        if number is None or number < 0:
            raise ValueError(f"bad prune-backups value {key}={raw!r}")
        name = key.removeprefix("keep-")
        if name == "all":
            keep_all = bool(number)
        elif name in KEEP_KEYS and number > 0:
            keep[name] = number
    ordered = tuple((k, keep[k]) for k in KEEP_KEYS if k in keep)
    return Retention(keep=ordered, keep_all=keep_all or not ordered)


def covered_guests(job: BackupJob, guests: Iterable[Guest]) -> tuple[Guest, ...]:
    """Return the guests ``job`` backs up: all (minus exclude), a pool or a vmid list.

    ``node`` restricts any selection to that node's guests; templates are never counted.
    """
    out = []
    for g in guests:
        if g.template or (job.node and g.node != job.node):
            continue
        if job.all:
            selected = g.vmid not in job.exclude
        elif job.pool:
            selected = g.pool == job.pool
        else:
            selected = g.vmid in job.vmids
        if selected:
            out.append(g)
    return tuple(sorted(out, key=lambda g: g.vmid))


def guest_tasks(snapshot: ProxmoxSnapshot, guest: Guest) -> tuple[VzdumpTask, ...]:
    """Return the vzdump tasks that may have backed up ``guest``.

    Those naming it, and those with an empty ``id`` (several guests) on its node.
    """
    return tuple(
        t
        for t in snapshot.tasks
        if t.node == guest.node and (t.vmid is None or t.vmid == guest.vmid)
    )


def started_by(schedule: Schedule, task: VzdumpTask) -> bool:
    """Tell whether ``task`` started at one of ``schedule``'s starts (within TASK_SLACK)."""
    latest = schedule.latest_at_or_before(datetime.fromtimestamp(task.starttime, UTC))
    return latest is not None and task.starttime - latest.timestamp() <= TASK_SLACK


def job_tasks(
    snapshot: ProxmoxSnapshot, schedules: Mapping[str, Schedule]
) -> dict[tuple[str, int], tuple[VzdumpTask, ...]]:
    """Attribute vzdump tasks to (job id, vmid) for the jobs in ``schedules``.

    Tasks do not name their job. A task that started at a scheduled start of some job covering
    the guest belongs to those jobs; any other task (a manual "Run now", a missed-run catch-up)
    belongs to every job covering the guest.
    """
    jobs = [j for j in snapshot.jobs if j.id in schedules]
    covering: dict[int, list[BackupJob]] = {}
    for job in jobs:
        for g in covered_guests(job, snapshot.guests):
            covering.setdefault(g.vmid, []).append(job)
    out: dict[tuple[str, int], tuple[VzdumpTask, ...]] = {}
    matches: dict[tuple[str, int], bool] = {}  # (job id, task index) -> started by its schedule
    index = {id(t): i for i, t in enumerate(snapshot.tasks)}
    for guest in snapshot.guests:
        owners = covering.get(guest.vmid, [])
        if not owners:
            continue
        tasks = guest_tasks(snapshot, guest)
        by_job: dict[str, list[VzdumpTask]] = {j.id: [] for j in owners}
        for task in tasks:
            matched = []
            for job in owners:
                key = (job.id, index[id(task)])
                if key not in matches:
                    matches[key] = started_by(schedules[job.id], task)
                if matches[key]:
                    matched.append(job.id)
            for job_id in matched or by_job:
                by_job[job_id].append(task)
        for job_id, found in by_job.items():
            out[(job_id, guest.vmid)] = tuple(found)
    return out


def guest_evidence(
    snapshot: ProxmoxSnapshot,
    guest: Guest,
    *,
    storage: str | None = None,
    tasks: Sequence[VzdumpTask] | None = None,
) -> Evidence:
    """Return the evidence of ``guest``'s backups (on ``storage``, if given).

    last_success is the newest archive's start; starts, durations, running and failure come
    from ``tasks`` (default: :func:`guest_tasks`).
    """
    newest = max(
        (
            a.ctime
            for a in snapshot.archives
            if a.vmid == guest.vmid and (storage is None or a.storage == storage)
        ),
        default=None,
    )
    if tasks is None:
        tasks = guest_tasks(snapshot, guest)
    last_start = max((t.starttime for t in tasks), default=None)
    running = any(t.status == "running" for t in tasks)
    finished = [t for t in tasks if t.endtime is not None and t.status != "running"]
    latest = max(finished, key=lambda t: t.starttime, default=None)
    duration = None
    failed = False
    if latest is not None and latest.endtime is not None:
        duration = max(0.0, latest.endtime - latest.starttime)
        # A multi-guest task may have failed for another guest: an archive written after the
        # task started proves this guest's part worked.
        failed = latest.failed and (newest is None or newest < latest.starttime)
    return Evidence(
        last_success=newest,
        last_start=last_start,
        last_duration=duration,
        failed=failed,
        running=running,
        tracks_start=True,
    )


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
            schedule = _schedule(job.schedule, snapshot.timezone)
        except ScheduleError:
            continue
        allowance, _ = _graces(schedule, now, grace, grace)
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


@functools.lru_cache(maxsize=256)
def _schedule(expression: str, tz: str) -> Schedule:
    return parse_schedule(expression, tz)


def _graces(schedule: Schedule, at: float, grace: float, start_grace: float) -> tuple[float, float]:
    """Cap the graces at the schedule's period, so an hourly job is not given 6 hours."""
    starts = list(islice(schedule.iter_after(datetime.fromtimestamp(at, UTC)), 2))
    if len(starts) == 2:
        period = (starts[1] - starts[0]).total_seconds()
        grace = min(grace, period)
    return grace, min(start_grace, grace)


# ------------------------------------------------------------------------ response parsing


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit() and text.isascii():
            return int(text)
    return None


class _Reader:
    """Checks one item of a response and raises a ``parse`` FetchError naming the field."""

    def __init__(self, item: Mapping[str, Any], what: str) -> None:
        self.item = item
        self.what = what

    def _bad(self, key: str, expected: str) -> FetchError:
        value = self.item.get(key)
        shown = repr(value)[:60]
        return FetchError("parse", f"{self.what}: field {key!r} must be {expected}, got {shown}")

    def integer(self, key: str, default: int | None = None) -> int:
        value = self.item.get(key)
        if value is None and default is not None:
            return default
        number = _as_int(value)
        if number is None:
            raise self._bad(key, "an integer")
        return number

    def optional_integer(self, key: str) -> int | None:
        if self.item.get(key) is None:
            return None
        return self.integer(key)

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.item.get(key)
        if value is None:
            return default
        number = _as_int(value)
        if number not in (0, 1):
            raise self._bad(key, "0 or 1")
        return number == 1

    def text(self, key: str, default: str | None = None) -> str:
        value = self.item.get(key)
        if value is None and default is not None:
            return default
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise self._bad(key, "a string")
        return str(value)

    def ident(self, key: str) -> str:
        value = self.text(key)
        if not _ID_RE.fullmatch(value):
            raise self._bad(key, "a Proxmox identifier")
        return value


def _items(data: Any, what: str) -> list[Mapping[str, Any]]:
    if not isinstance(data, list):
        raise FetchError("parse", f"{what}: expected a list, got {type(data).__name__}")
    for item in data:
        if not isinstance(item, Mapping):
            raise FetchError("parse", f"{what}: expected objects, got {type(item).__name__}")
    return data


def _vmid_set(text: str, what: str) -> frozenset[int]:
    out = set()
    for part in _VMID_LIST_SPLIT.split(text.strip()):
        if not part:
            continue
        number = _as_int(part)
        if number is None or number <= 0:
            raise FetchError("parse", f"{what}: bad vmid {part!r} in list")
        out.add(number)
    return frozenset(out)


def _retention(value: Any, what: str) -> Retention | None:
    try:
        return parse_retention(value)
    except ValueError as exc:
        raise FetchError("parse", f"{what}: {exc}") from None


def _parse_nodes(data: Any) -> tuple[tuple[str, bool], ...]:
    nodes = []
    for item in _items(data, "GET /nodes"):
        r = _Reader(item, "GET /nodes")
        nodes.append((r.ident("node"), r.text("status", "unknown") == "online"))
    return tuple(sorted(nodes))


def _parse_guests(data: Any) -> tuple[Guest, ...]:
    what = "GET /cluster/resources"
    guests = []
    for item in _items(data, what):
        r = _Reader(item, what)
        guest_type = r.text("type", "")
        if guest_type not in ("qemu", "lxc"):
            continue  # the API may add other resource types; they are not guests
        guests.append(
            Guest(
                vmid=r.integer("vmid"),
                name=r.text("name", ""),
                node=r.ident("node"),
                guest_type=guest_type,
                pool=r.text("pool", ""),
                template=r.flag("template"),
            )
        )
    return tuple(sorted(guests, key=lambda g: g.vmid))


def _parse_jobs(data: Any) -> tuple[BackupJob, ...]:
    jobs = []
    for item in _items(data, "GET /cluster/backup"):
        r = _Reader(item, "GET /cluster/backup")
        job_id = r.text("id")
        what = f"backup job {job_id!r}"
        r.what = what
        jobs.append(
            BackupJob(
                id=job_id,
                schedule=r.text("schedule", ""),
                enabled=r.flag("enabled", default=True),
                storage=r.text("storage", DEFAULT_JOB_STORAGE),
                mode=r.text("mode", "snapshot"),
                all=r.flag("all"),
                vmids=_vmid_set(r.text("vmid", ""), what),
                exclude=_vmid_set(r.text("exclude", ""), what),
                pool=r.text("pool", ""),
                node=r.text("node", ""),
                retention=_retention(item.get("prune-backups"), what),
            )
        )
    return tuple(sorted(jobs, key=lambda j: j.id))


def _parse_storage_config(data: Any) -> dict[str, Retention | None]:
    what = "GET /storage"
    out = {}
    for item in _items(data, what):
        r = _Reader(item, what)
        sid = r.text("storage")
        out[sid] = _retention(item.get("prune-backups"), f"storage {sid!r}")
    return out


def _parse_not_backed_up(data: Any) -> frozenset[int]:
    what = "GET /cluster/backup-info/not-backed-up"
    return frozenset(_Reader(item, what).integer("vmid") for item in _items(data, what))


def _parse_tasks(data: Any, node: str) -> list[VzdumpTask]:
    what = f"GET /nodes/{node}/tasks"
    tasks = []
    for item in _items(data, what):
        r = _Reader(item, what)
        if r.text("type", "vzdump") != "vzdump":
            continue
        endtime = r.optional_integer("endtime")
        raw_status = r.text("status", "")
        task_id = r.text("id", "")
        vmid = _as_int(task_id) if task_id.isdigit() else None
        tasks.append(
            VzdumpTask(
                node=node,
                starttime=float(r.integer("starttime")),
                endtime=None if endtime is None else float(endtime),
                status=normalize_status(raw_status, running=endtime is None),
                vmid=vmid,
            )
        )
    return tasks


def _parse_content(data: Any, node: str, storage: str, tz: str) -> list[Archive]:
    what = f"GET /nodes/{node}/storage/{storage}/content"
    archives = []
    for item in _items(data, what):
        r = _Reader(item, what)
        if r.text("content", "backup") != "backup":
            continue
        volid = r.text("volid")
        name = parse_volid(volid, tz)
        vmid = r.optional_integer("vmid")
        ctime = r.optional_integer("ctime")
        if vmid is None and name is not None:
            vmid = name.vmid
        if ctime is None and name is not None:
            ctime = int(name.ctime)
        if vmid is None or ctime is None:
            continue  # a file that belongs to no guest
        verification = item.get("verification")
        verified = None
        if isinstance(verification, Mapping):
            state = verification.get("state")
            verified = True if state == "ok" else False if state == "failed" else None
        archives.append(
            Archive(
                storage=storage,
                vmid=vmid,
                ctime=float(ctime),
                size=r.integer("size", 0),
                protected=r.flag("protected"),
                verified=verified,
            )
        )
    return archives


@dataclass
class _StorageSeen:
    type: str
    shared: bool
    per_node: list[tuple[str, bool, int, int]]  # node, active, total, used


# ----------------------------------------------------------------------------- the source


class ProxmoxSource(Source[ProxmoxConfig, ProxmoxSnapshot]):
    """Polls one Proxmox VE cluster through its API.

    Sample exposition::

        # HELP backup_pve_archives Number of backup archives of the guest on the storage.
        # TYPE backup_pve_archives gauge
        backup_pve_archives{source="pve1",storage="nas",vmid="100"} 14.0
        # HELP backup_pve_retention_target_archives Archives the retention keeps (...).
        # TYPE backup_pve_retention_target_archives gauge
        backup_pve_retention_target_archives{source="pve1",storage="nas",vmid="100"} 14.0
        # HELP backup_pve_retention_expected_archives Archives there should be by now (...).
        # TYPE backup_pve_retention_expected_archives gauge
        backup_pve_retention_expected_archives{source="pve1",storage="nas",vmid="100"} 14.0
    """

    kind = KIND

    def __init__(self, config: ProxmoxConfig) -> None:
        super().__init__(config)
        self._api: ProxmoxAPI | None = None
        self._warned: set[tuple[str, str]] = set()

    def _client(self) -> ProxmoxAPI:
        # Token auth does no I/O here; the client (and its keep-alive session) is reused.
        if self._api is None:
            cfg = self.config
            user, _, token_name = cfg.token_id.partition("!")
            self._api = ProxmoxAPI(
                cfg.host,
                port=cfg.port,
                user=user,
                token_name=token_name,
                token_value=cfg.token_secret.reveal(),
                verify_ssl=cfg.verify,
                timeout=cfg.timeout,
            )
        return self._api

    def _request(self, path: str, params: dict[str, Any]) -> Any:
        return self._client()(path).get(**params)

    async def _get(self, ctx: FetchContext, path: str, **params: Any) -> Any:
        """GET ``path`` (relative to /api2/json) and map every failure to a FetchError."""
        where = f"GET /{path}"
        ctx.count_request()
        try:
            return await ctx.run_blocking(self._request, path, params)
        except ResourceException as exc:
            raise _http_error(where, exc.status_code) from None
        except requests.exceptions.SSLError:
            raise FetchError(
                "tls", f"{where}: TLS verification failed (set ca_file or verify_tls)"
            ) from None
        except requests.exceptions.Timeout:
            raise FetchError(
                "timeout", f"{where}: no answer within {self.config.timeout:g}s"
            ) from None
        except requests.exceptions.ConnectionError:
            raise FetchError(
                "connection", f"{where}: cannot connect to {self.config.host}:{self.config.port}"
            ) from None
        except requests.exceptions.RequestException as exc:
            raise FetchError("connection", f"{where}: {type(exc).__name__}") from None
        except OSError as exc:  # e.g. an unreadable CA bundle
            raise FetchError("tls", f"{where}: {exc.strerror or type(exc).__name__}") from None
        except (KeyError, TypeError, ValueError) as exc:
            # proxmoxer indexes ["data"] into whatever JSON came back.
            raise FetchError(
                "parse", f"{where}: malformed response ({type(exc).__name__})"
            ) from None

    async def fetch(self, ctx: FetchContext) -> ProxmoxSnapshot:
        """Read nodes, guests, jobs, storages, archives and vzdump tasks."""
        tz = self.config.zone
        nodes = _parse_nodes(await self._get(ctx, "nodes"))
        guests = _parse_guests(await self._get(ctx, "cluster/resources", type="vm"))
        storage_config = _parse_storage_config(await self._get(ctx, "storage"))
        jobs = _parse_jobs(await self._get(ctx, "cluster/backup"))
        not_backed_up = _parse_not_backed_up(
            await self._get(ctx, "cluster/backup-info/not-backed-up")
        )
        seen: dict[str, _StorageSeen] = {}
        tasks: list[VzdumpTask] = []
        online = [n for n, up in nodes if up]
        for node in online:
            what = f"GET /nodes/{node}/storage"
            for item in _items(await self._get(ctx, f"nodes/{node}/storage"), what):
                r = _Reader(item, what)
                if "backup" not in r.text("content", "").split(","):
                    continue
                sid = r.ident("storage")
                entry = seen.setdefault(sid, _StorageSeen(r.text("type", ""), r.flag("shared"), []))
                entry.per_node.append(
                    (node, r.flag("active"), r.integer("total", 0), r.integer("used", 0))
                )
            data = await self._get(
                ctx,
                f"nodes/{node}/tasks",
                typefilter="vzdump",
                source="all",
                limit=self.config.tasks_limit,
            )
            tasks.extend(_parse_tasks(data, node))
        storages: list[BackupStorage] = []
        archives: list[Archive] = []
        for sid, entry in sorted(seen.items()):
            active_nodes = [n for n, active, _, _ in entry.per_node if active]
            # A shared storage is the same files from every node: list it once.
            list_from = active_nodes[:1] if entry.shared else active_nodes
            for node in list_from:
                data = await self._get(ctx, f"nodes/{node}/storage/{sid}/content", content="backup")
                archives.extend(_parse_content(data, node, sid, tz))
            if entry.shared:
                first = next((p for p in entry.per_node if p[1]), entry.per_node[0])
                total, used = first[2], first[3]
            else:
                total = sum(p[2] for p in entry.per_node)
                used = sum(p[3] for p in entry.per_node)
            storages.append(
                BackupStorage(
                    storage=sid,
                    type=entry.type,
                    shared=entry.shared,
                    active=bool(active_nodes) and len(active_nodes) == len(entry.per_node),
                    total=total,
                    used=used,
                    nodes=tuple(p[0] for p in entry.per_node),
                    listed=bool(list_from),
                    retention=storage_config.get(sid),
                )
            )
        snapshot = ProxmoxSnapshot(
            time=ctx.clock.time(),
            timezone=tz,
            nodes=nodes,
            guests=guests,
            storages=tuple(storages),
            archives=tuple(sorted(archives, key=lambda a: (a.storage, a.vmid, a.ctime))),
            jobs=jobs,
            not_backed_up=not_backed_up,
            tasks=tuple(sorted(tasks, key=lambda t: (t.node, t.starttime))),
            tasks_read_nodes=tuple(online),
        )
        _check_backup_visibility(snapshot)
        return snapshot

    # ---- render

    def render(self, snapshot: ProxmoxSnapshot) -> Iterator[Metric]:
        """Build the ``backup_pve_*`` families (one series per guest, storage, job or node)."""
        src = self.name
        yield from _render_guests(src, snapshot)
        yield from _render_archives(src, snapshot, grace=self.config.job_grace)
        yield from _render_storages(src, snapshot)
        yield from _render_jobs(src, snapshot)
        yield from _render_tasks(src, snapshot)

    # ---- jobs

    def jobs(self, snapshot: ProxmoxSnapshot) -> Iterator[tuple[JobSpec, Evidence]]:
        """Yield one job per enabled PVE backup job × covered guest."""
        cfg = self.config
        schedules: dict[str, Schedule] = {}
        for job in snapshot.jobs:
            if not job.enabled:
                continue
            try:
                schedules[job.id] = _schedule(job.schedule, snapshot.timezone)
            except ScheduleError as exc:
                self._warn_once(job.id, job.schedule, str(exc))
        attributed = job_tasks(snapshot, schedules)
        for job in snapshot.jobs:
            schedule = schedules.get(job.id)
            if schedule is None:
                continue
            grace, start_grace = _graces(
                schedule, snapshot.time, cfg.job_grace, cfg.job_start_grace
            )
            for guest in covered_guests(job, snapshot.guests):
                spec = JobSpec(
                    name=job.id,
                    source=self.name,
                    schedule=schedule,
                    grace=grace,
                    start_grace=start_grace,
                    labels={"vmid": str(guest.vmid)},
                )
                tasks = attributed.get((job.id, guest.vmid), ())
                yield spec, guest_evidence(snapshot, guest, storage=job.storage, tasks=tasks)

    def evidence(self, snapshot: ProxmoxSnapshot, selector: Mapping[str, str]) -> Evidence | None:
        """Evidence for a ``jobs:`` entry: ``vmid`` (required) and ``storage`` (optional)."""
        vmid = _as_int(selector.get("vmid"))
        guest = next((g for g in snapshot.guests if g.vmid == vmid), None)
        if guest is None:
            return None
        return guest_evidence(snapshot, guest, storage=selector.get("storage") or None)

    def _warn_once(self, job_id: str, schedule: str, message: str) -> None:
        if (job_id, schedule) not in self._warned:
            self._warned.add((job_id, schedule))
            log.warning(
                "source=%s backup job %s has a schedule the exporter cannot read: %s",
                self.name,
                job_id,
                message,
            )

    async def close(self) -> None:
        """Close the HTTP session's idle keep-alive connections."""
        if self._api is not None:
            session = self._api._store.get("session")
            if session is not None:
                session.close()
            self._api = None


def _http_error(where: str, status: int) -> FetchError:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    if status == 401:
        return FetchError(
            "auth", f"{where}: HTTP 401 {phrase}: check token_id and the token secret"
        )
    if status == 403:
        return FetchError(
            "permission", f"{where}: HTTP 403 {phrase}: the token needs PVEAuditor on /"
        )
    return FetchError("http", f"{where}: HTTP {status} {phrase}")


def _check_backup_visibility(snapshot: ProxmoxSnapshot) -> None:
    """Fail with ``permission`` when tasks report backups that no storage listing shows.

    PVE silently drops backup volumes the token may not access (api-shapes §1.1), so an
    empty listing next to successful vzdump tasks means missing privileges, not "no backups".
    """
    if snapshot.archives or not any(t.succeeded for t in snapshot.tasks):
        return
    listed = [s.storage for s in snapshot.storages if s.listed]
    targets = {j.storage for j in snapshot.jobs}
    # Judge the storages the jobs write to (all listed ones if there are no jobs); when those
    # could not be listed (offline), an empty local storage proves nothing.
    names = [s for s in listed if s in targets] if targets else listed
    if not names:
        return
    sids = ", ".join(names)
    first = names[0]
    raise FetchError(
        "permission",
        f"vzdump tasks report successful backups but the backup listing of {sids} is empty: "
        f"the API token lacks Datastore.Allocate on /storage/{first}, or "
        f"Datastore.AllocateSpace on /storage/{first} plus VM.Backup on /vms "
        f"(PVE hides backups it may not access)",
    )


# --------------------------------------------------------------------------------- render


def _gauge(name: str, doc: str, labels: Sequence[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _render_guests(src: str, snap: ProxmoxSnapshot) -> Iterator[Metric]:
    info = _gauge(
        "backup_pve_guest_info",
        "Guests of the Proxmox VE cluster.",
        ["source", "vmid", "name", "node", "guest_type"],
    )
    not_backed = _gauge(
        "backup_pve_guest_not_backed_up",
        "1 when no backup job covers the guest (PVE's not-backed-up list).",
        ["source", "vmid"],
    )
    vmids = set()
    for g in snap.guests:
        info.add_metric([src, str(g.vmid), g.name, g.node, g.guest_type], 1)
        if not g.template:
            vmids.add(g.vmid)
    for vmid in sorted(vmids | snap.not_backed_up):
        not_backed.add_metric([src, str(vmid)], float(vmid in snap.not_backed_up))
    yield info
    yield not_backed


def _render_archives(src: str, snap: ProxmoxSnapshot, *, grace: float) -> Iterator[Metric]:
    labels = ["source", "storage", "vmid"]
    last_ts = _gauge(
        "backup_pve_archive_last_timestamp_seconds",
        "Start time of the newest backup archive.",
        labels,
    )
    last_size = _gauge(
        "backup_pve_archive_last_size_bytes", "Size of the newest backup archive.", labels
    )
    count = _gauge(
        "backup_pve_archives", "Number of backup archives of the guest on the storage.", labels
    )
    total = _gauge(
        "backup_pve_archive_size_bytes",
        "Total size of all backup archives of the guest on the storage.",
        labels,
    )
    protected = _gauge(
        "backup_pve_archives_protected",
        "Number of protected backup archives of the guest on the storage.",
        labels,
    )
    verified = _gauge(
        "backup_pve_archive_last_verified",
        "PBS verification of the newest archive: 1 ok, 0 failed (absent if never verified).",
        labels,
    )
    groups: dict[tuple[str, int], list[Archive]] = {}
    for a in snap.archives:
        groups.setdefault((a.storage, a.vmid), []).append(a)
    for (storage, vmid), items in sorted(groups.items()):
        values = [src, storage, str(vmid)]
        newest = max(items, key=lambda a: a.ctime)
        last_ts.add_metric(values, newest.ctime)
        last_size.add_metric(values, newest.size)
        count.add_metric(values, len(items))
        total.add_metric(values, sum(a.size for a in items))
        protected.add_metric(values, sum(1 for a in items if a.protected))
        if newest.verified is not None:
            verified.add_metric(values, float(newest.verified))
    target = _gauge(
        "backup_pve_retention_target_archives",
        "Archives the retention keeps once the job ran often enough "
        "(keep-last N; several keep-* summed: an upper bound).",
        labels,
    )
    for (storage, vmid), n in sorted(retention_targets(snap).items()):
        target.add_metric([src, storage, str(vmid)], n)
    expected = _gauge(
        "backup_pve_retention_expected_archives",
        "Archives there should be by now: the retention target, capped by the job's runs "
        "due since the oldest archive (0 without any archive).",
        labels,
    )
    for (storage, vmid), n in sorted(expected_archives(snap, grace=grace).items()):
        expected.add_metric([src, storage, str(vmid)], n)
    yield from (last_ts, last_size, count, total, protected, verified, target, expected)


def _render_storages(src: str, snap: ProxmoxSnapshot) -> Iterator[Metric]:
    labels = ["source", "storage"]
    size = _gauge("backup_pve_storage_size_bytes", "Size of the backup storage.", labels)
    used = _gauge("backup_pve_storage_used_bytes", "Bytes used on the backup storage.", labels)
    active = _gauge(
        "backup_pve_storage_active", "1 when the backup storage is online on its nodes.", labels
    )
    projected = _gauge(
        "backup_pve_retention_projected_bytes",
        "Retention target times newest size, per storage.",
        labels,
    )
    for s in snap.storages:
        values = [src, s.storage]
        size.add_metric(values, s.total)
        used.add_metric(values, s.used)
        active.add_metric(values, float(s.active))
    for storage, value in sorted(projected_bytes(snap).items()):
        projected.add_metric([src, storage], value)
    yield from (size, used, active, projected)


def _render_jobs(src: str, snap: ProxmoxSnapshot) -> Iterator[Metric]:
    info = _gauge(
        "backup_pve_job_info",
        "Backup jobs of the cluster (enabled: 1 or 0).",
        ["source", "backup_job", "schedule", "storage", "mode", "enabled"],
    )
    retention = _gauge(
        "backup_pve_job_retention",
        "prune-backups of the job, else of its storage (keep=all: keep everything).",
        ["source", "backup_job", "keep"],
    )
    for job in snap.jobs:
        info.add_metric(
            [src, job.id, job.schedule, job.storage, job.mode, "1" if job.enabled else "0"], 1
        )
        rule = effective_retention(snap, job)
        if rule is None:
            continue
        if rule.keep_all:
            retention.add_metric([src, job.id, "all"], 1)
        for keep, n in rule.keep:
            retention.add_metric([src, job.id, keep], n)
    yield info
    yield retention


def _render_tasks(src: str, snap: ProxmoxSnapshot) -> Iterator[Metric]:
    labels = ["source", "node"]
    ok = _gauge(
        "backup_pve_vzdump_last_success_timestamp_seconds",
        "End of the last vzdump task that ended OK or with warnings (0: none listed).",
        labels,
    )
    bad = _gauge(
        "backup_pve_vzdump_last_failure_timestamp_seconds",
        "End of the last vzdump task that failed (0: none listed).",
        labels,
    )
    for node in snap.tasks_read_nodes:
        ended = [t for t in snap.tasks if t.node == node and t.endtime is not None]
        ok.add_metric(
            [src, node], max((t.endtime or 0.0 for t in ended if t.succeeded), default=0.0)
        )
        bad.add_metric([src, node], max((t.endtime or 0.0 for t in ended if t.failed), default=0.0))
    yield ok
    yield bad


__all__ = [
    "KIND",
    "SPEC",
    "Archive",
    "BackupJob",
    "BackupStorage",
    "Guest",
    "ProxmoxConfig",
    "ProxmoxSnapshot",
    "ProxmoxSource",
    "Retention",
    "VzdumpTask",
    "covered_guests",
    "expected_archives",
    "guest_evidence",
    "guest_tasks",
    "job_tasks",
    "normalize_status",
    "parse_retention",
    "projected_bytes",
    "retention_targets",
    "started_by",
]
