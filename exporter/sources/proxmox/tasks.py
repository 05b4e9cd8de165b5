"""vzdump tasks: reading the node task lists and task logs, attributing tasks to jobs and guests.

The UPID (``UPID:node:pid:pstart:starttime:type:id:user:``, pve-common src/PVE/UPID.pm
``decode``) names the guest in ``id`` only when the task backed up exactly one guest on its
node: pve-manager PVE/API2/VZDump.pm ``vzdump`` passes ``$local_vmids->[0]`` as the task id
only when ``scalar(@$local_vmids) == 1``. Which guests a multi-guest task backed up, and how
each one ended, is only in its log (``GET /nodes/{node}/tasks/{upid}/log``), whose lines are
written by pve-manager PVE/VZDump.pm:

* ``exec_backup``: the first line ``INFO: starting new backup job: vzdump <cmdline>``, where
  the command line is pve-guest-common src/PVE/VZDump/Common.pm ``command_line``: the vmids
  as positional arguments, then ``--key value`` for every option except ``id``, ``vmid``,
  ``starttime``, ``dow``, ``stdout``, ``enabled`` and ``job-id`` (so the job's id is *not*
  in it, but its selection ``--all``/``--exclude``/``--pool``/``--node`` and ``--storage``
  are); the last lines ``INFO: Backup job finished successfully`` / ``... with errors`` /
  ``ERROR: Backup job failed - <err>``;
* ``exec_backup_task``, per guest: ``INFO: Starting Backup of VM <vmid> (<type>)``, then
  ``INFO: Finished Backup of VM <vmid> (<hh:mm:ss>)`` or ``ERROR: Backup of VM <vmid> failed
  - <err>`` (the latter also without a ``Starting`` line when the guest failed early);
* warnings are ``WARN: <text>`` lines (pve-guest-common src/PVE/VZDump/Plugin.pm ``debugmsg``
  sends level ``warn`` to ``PVE::RESTEnvironment::log_warn``, which counts them); the task
  then ends ``TASK WARNINGS: <n>`` (pve-common src/PVE/RESTEnvironment.pm ``fork_worker``),
  which the task list shows as status ``WARNINGS: <n>``: a success with warnings.

Attribution (:func:`charges`): a task naming one guest is that guest's; a multi-guest task
whose log was read is charged to the guests its log names, each with its own outcome. Tasks
do not name their job: a multi-guest task belongs to the job whose selection, node and storage
its command line repeats (preferring the one whose schedule it started at, within
:data:`TASK_SLACK`); a task matching no job is a manual run of the guests it names and counts
for every job covering them. A single-guest task that started at a scheduled start of a job
covering the guest is that job's run, any other counts for every job covering the guest. A
multi-guest task whose log could not be read falls back to every guest of its node (a failure
then marks a guest failed only when it has no archive newer than the task's start).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from exporter.schedule.expressions import Schedule
from exporter.schedule.jobs import Evidence
from exporter.sources.proxmox.jobs import covered_guests
from exporter.sources.proxmox.model import BackupJob, Guest, ProxmoxSnapshot, TaskLog, VzdumpTask
from exporter.sources.proxmox.reader import Reader, as_int, object_list

# pvescheduler starts due jobs once a minute; a task this close after a job's scheduled start
# is taken as that run.
TASK_SLACK = 300.0

_WARNINGS_RE = re.compile(r"^WARNINGS: (\d+)$")
_JOB_START_RE = re.compile(r"^INFO: starting new backup job: (vzdump\b.*)$")
_GUEST_START_RE = re.compile(r"^INFO: Starting Backup of VM (\d+) \(")
_GUEST_DONE_RE = re.compile(r"^INFO: Finished Backup of VM (\d+) \(")
_GUEST_FAILED_RE = re.compile(r"^ERROR: Backup of VM (\d+) failed - ")
_SPLIT_RE = re.compile(r"[,;\s]+")  # PVE::Tools::split_list separators


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


def parse_tasks(data: Any, node: str) -> list[VzdumpTask]:
    """Parse ``GET /nodes/{node}/tasks`` into its vzdump tasks."""
    what = f"GET /nodes/{node}/tasks"
    tasks = []
    for item in object_list(data, what):
        r = Reader(item, what)
        if r.text("type", "vzdump") != "vzdump":
            continue
        endtime = r.optional_integer("endtime")
        raw_status = r.text("status", "")
        task_id = r.text("id", "")
        vmid = as_int(task_id) if task_id.isdigit() else None
        warnings = _WARNINGS_RE.match(raw_status)
        tasks.append(
            VzdumpTask(
                node=node,
                starttime=float(r.integer("starttime")),
                endtime=None if endtime is None else float(endtime),
                status=normalize_status(raw_status, running=endtime is None),
                vmid=vmid,
                upid=r.text("upid", ""),
                warnings=int(warnings.group(1)) if warnings else 0,
            )
        )
    return tasks


def _vmid_set(text: str) -> frozenset[int]:
    return frozenset(int(v) for v in _SPLIT_RE.split(text) if v.isdigit())


def parse_command_line(cmdline: str) -> dict[str, Any]:
    """Parse a ``vzdump`` command line as ``command_line`` writes it (see the module doc).

    Returns ``all``, ``vmids``, ``exclude``, ``pool``, ``node`` and ``storage``; raises
    ``ValueError`` when it is not one.
    """
    words = shlex.split(cmdline)
    if not words or words[0] != "vzdump":
        raise ValueError("not a vzdump command line")
    out: dict[str, Any] = {"all": False, "vmids": set(), "exclude": frozenset()}
    i = 1
    while i < len(words):
        word = words[i]
        if word.startswith("--"):
            key = word[2:]
            value = words[i + 1] if i + 1 < len(words) else ""
            i += 2
            if key == "all":
                out["all"] = value not in ("0", "")
            elif key == "exclude":
                out["exclude"] = _vmid_set(value)
            elif key in ("pool", "node", "storage"):
                out[key] = value
            elif key == "vmid":  # not written by command_line, accepted all the same
                out["vmids"] |= _vmid_set(value)
        else:
            out["vmids"] |= _vmid_set(word)
            i += 1
    out["vmids"] = frozenset(out["vmids"])
    return out


def parse_task_log(lines: Iterable[str], *, running: bool, complete: bool = True) -> TaskLog:
    """Parse a vzdump task log's lines (the ``t`` of each ``{n, t}``) into a :class:`TaskLog`.

    Each guest is ``ok``, ``warning`` (finished with ``WARN:`` lines in its part), ``error``
    (``Backup of VM n failed``), ``running`` (started, not ended, task running) or
    ``unknown`` (started, never ended, task over). Unknown lines are ignored.
    """
    selection: dict[str, Any] = {}
    guests: dict[int, list[Any]] = {}  # vmid -> [status, warnings]
    current: int | None = None
    task_warnings = 0
    for line in lines:
        if not selection and (m := _JOB_START_RE.match(line)):
            try:
                selection = parse_command_line(m.group(1))
            except ValueError:
                selection = {}
        elif m := _GUEST_START_RE.match(line):
            current = int(m.group(1))
            guests[current] = ["running" if running else "unknown", 0]
        elif m := _GUEST_DONE_RE.match(line):
            vmid = int(m.group(1))
            entry = guests.setdefault(vmid, ["ok", 0])
            entry[0] = "warning" if entry[1] else "ok"
            current = None
        elif m := _GUEST_FAILED_RE.match(line):
            vmid = int(m.group(1))
            guests.setdefault(vmid, ["error", 0])[0] = "error"
            current = vmid  # cleanup warnings that follow are still this guest's
        elif line.startswith("WARN: "):
            if current is not None and current in guests:
                guests[current][1] += 1
            else:
                task_warnings += 1
        elif line.startswith("INFO: Backup job finished") or line.startswith("TASK "):
            current = None
    return TaskLog(
        all=bool(selection.get("all", False)),
        vmids=selection.get("vmids", frozenset()),
        exclude=selection.get("exclude", frozenset()),
        pool=str(selection.get("pool", "")),
        node=str(selection.get("node", "")),
        storage=str(selection.get("storage", "")),
        guests=tuple((vmid, st, n) for vmid, (st, n) in guests.items()),
        task_warnings=task_warnings,
        complete=complete,
    )


def log_to_json(log: TaskLog) -> dict[str, Any]:
    """Return ``log`` as JSON-serializable data (for ``ctx.memory``)."""
    return {
        "all": log.all,
        "vmids": sorted(log.vmids),
        "exclude": sorted(log.exclude),
        "pool": log.pool,
        "node": log.node,
        "storage": log.storage,
        "guests": [list(g) for g in log.guests],
        "task_warnings": log.task_warnings,
        "complete": log.complete,
    }


def log_from_json(data: Any) -> TaskLog | None:
    """Return the :class:`TaskLog` :func:`log_to_json` wrote, ``None`` if ``data`` is not one."""
    try:
        guests = tuple(
            (int(v), str(st), int(n))
            for v, st, n in data["guests"]
            if st in ("ok", "warning", "error", "unknown")
        )
        return TaskLog(
            all=bool(data["all"]),
            vmids=frozenset(int(v) for v in data["vmids"]),
            exclude=frozenset(int(v) for v in data["exclude"]),
            pool=str(data["pool"]),
            node=str(data["node"]),
            storage=str(data["storage"]),
            guests=guests,
            task_warnings=int(data["task_warnings"]),
            complete=bool(data["complete"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def started_by(schedule: Schedule, task: VzdumpTask) -> bool:
    """Tell whether ``task`` started at one of ``schedule``'s starts (within TASK_SLACK)."""
    latest = schedule.latest_at_or_before(datetime.fromtimestamp(task.starttime, UTC))
    return latest is not None and task.starttime - latest.timestamp() <= TASK_SLACK


def selection_matches(job: BackupJob, log: TaskLog, node: str) -> bool:
    """Tell whether a task on ``node`` with ``log``'s command line is a run of ``job``.

    The command line repeats the job's selection (``--all`` with ``--exclude``, ``--pool``,
    or the vmids), its ``--node`` and its ``--storage`` (command_line writes every option of
    the job but its id).
    """
    if job.node and job.node != node:
        return False
    if log.node != job.node or (log.storage and log.storage != job.storage):
        return False
    if job.all:
        return log.all and log.exclude == job.exclude
    if job.pool:
        return not log.all and log.pool == job.pool
    return not log.all and not log.pool and log.vmids == job.vmids


@dataclass(frozen=True)
class Charge:
    """One task's part for one guest, and the jobs it counts for.

    ``task`` is the task as seen by that guest: for a multi-guest task with a log, a copy with
    ``vmid`` set and the guest's own status and warnings. ``jobs`` are the ids of the jobs
    (with a schedule) it counts for; ``storage`` is where it wrote, when known (its command
    line, or the single job whose schedule it started at); ``scheduled`` whether it is a run
    of those jobs rather than a manual run of the guest.
    """

    vmid: int
    task: VzdumpTask
    jobs: tuple[str, ...]
    storage: str
    scheduled: bool


def _covering(jobs: Sequence[BackupJob], guests: Sequence[Guest]) -> dict[int, list[BackupJob]]:
    covering: dict[int, list[BackupJob]] = {}
    for job in jobs:
        for g in covered_guests(job, guests):
            covering.setdefault(g.vmid, []).append(job)
    return covering


def charges(snapshot: ProxmoxSnapshot, schedules: Mapping[str, Schedule]) -> Iterator[Charge]:
    """Attribute every vzdump task of ``snapshot`` to guests and jobs (see the module doc).

    ``schedules`` holds the parsed schedule of every job considered (enabled, readable).
    """
    jobs = [j for j in snapshot.jobs if j.id in schedules]
    covering = _covering(jobs, snapshot.guests)
    guest_node = {g.vmid: g.node for g in snapshot.guests}
    for task in snapshot.tasks:
        if task.vmid is not None:
            yield from _single_charges(task, task.vmid, covering, schedules)
        elif task.log is not None:
            yield from _log_charges(task, task.log, jobs, covering, schedules, snapshot.guests)
        else:
            for vmid, node in guest_node.items():
                if node == task.node:
                    yield from _single_charges(task, vmid, covering, schedules)


def _single_charges(
    task: VzdumpTask,
    vmid: int,
    covering: Mapping[int, list[BackupJob]],
    schedules: Mapping[str, Schedule],
) -> Iterator[Charge]:
    owners = covering.get(vmid, [])
    matched = [j for j in owners if started_by(schedules[j.id], task)]
    chosen = matched or owners
    # Where it wrote is known for a task of one guest started by the schedule of jobs sharing
    # one storage; a multi-guest task without its log may have been another job's.
    storages = {j.storage for j in matched}
    storage = next(iter(storages)) if len(storages) == 1 and task.vmid is not None else ""
    yield Charge(
        vmid, replace(task, vmid=vmid), tuple(j.id for j in chosen), storage, bool(matched)
    )


def _log_charges(  # noqa: PLR0917 - one private helper of charges()
    task: VzdumpTask,
    log: TaskLog,
    jobs: Sequence[BackupJob],
    covering: Mapping[int, list[BackupJob]],
    schedules: Mapping[str, Schedule],
    guests: Sequence[Guest],
) -> Iterator[Charge]:
    candidates = [j for j in jobs if selection_matches(j, log, task.node)]
    scheduled = [j for j in candidates if started_by(schedules[j.id], task)]
    owners = scheduled or candidates
    parts: dict[int, tuple[str, int]] = {v: (st, n + log.task_warnings) for v, st, n in log.guests}
    if owners:
        # The job's guests on this node that the log does not name: still to come while the
        # task runs; not backed up when the job failed before any guest (lock, hook script).
        for job in owners:
            for g in covered_guests(job, guests):
                if g.node != task.node or g.vmid in parts:
                    continue
                if task.status == "running":
                    parts[g.vmid] = ("running", 0)
                elif task.failed and not log.guests:
                    parts[g.vmid] = (task.status, 0)
        owner_ids = {j.id for j in owners}
        storage = log.storage or (
            owners[0].storage if len({j.storage for j in owners}) == 1 else ""
        )
        for vmid, (status, warnings) in parts.items():
            ids = tuple(j.id for j in covering.get(vmid, []) if j.id in owner_ids)
            part = replace(task, vmid=vmid, status=status, warnings=warnings, log=None)
            yield Charge(vmid, part, ids, storage, True)
        return
    # A manual run: of the guests it names, for every job covering them.
    if task.failed and not log.guests:
        parts = dict.fromkeys(log.vmids, (task.status, 0))
    for vmid, (status, warnings) in parts.items():
        ids = tuple(j.id for j in covering.get(vmid, []))
        part = replace(task, vmid=vmid, status=status, warnings=warnings, log=None)
        yield Charge(vmid, part, ids, log.storage, False)


def job_tasks(
    snapshot: ProxmoxSnapshot, schedules: Mapping[str, Schedule]
) -> dict[tuple[str, int], tuple[VzdumpTask, ...]]:
    """Attribute vzdump tasks to (job id, vmid) for the jobs in ``schedules`` (:func:`charges`)."""
    out: dict[tuple[str, int], list[VzdumpTask]] = {}
    for charge in charges(snapshot, schedules):
        for job_id in charge.jobs:
            out.setdefault((job_id, charge.vmid), []).append(charge.task)
    return {key: tuple(found) for key, found in out.items()}


def guest_tasks(snapshot: ProxmoxSnapshot, guest: Guest) -> tuple[VzdumpTask, ...]:
    """Return the vzdump tasks that may have backed up ``guest``, as seen by that guest.

    Those naming it, the guest's part of multi-guest tasks whose log names it, and multi-guest
    tasks of its node whose log was not read.
    """
    out = []
    for t in snapshot.tasks:
        if t.vmid is not None:
            if t.vmid == guest.vmid:
                out.append(t)
        elif t.log is None:
            if t.node == guest.node:
                out.append(t)
        else:
            for vmid, status, warnings in t.log.guests:
                if vmid == guest.vmid:
                    n = warnings + t.log.task_warnings
                    out.append(replace(t, vmid=vmid, status=status, warnings=n, log=None))
    return tuple(out)


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
