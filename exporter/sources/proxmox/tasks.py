"""vzdump tasks: reading the node task lists and attributing tasks to jobs and guests.

A vzdump task names its guest (``id``) only when it backed up exactly one guest; a task with an
empty ``id`` is counted for every guest on its node (its per-guest outcome is not in the task
list), so a failed multi-guest task marks a guest failed only when that guest has no archive
newer than the task's start.

Tasks do not name their job either: a task that started at a scheduled start of a job covering
the guest (within :data:`TASK_SLACK`) is that job's run; any other one belongs to every job
covering the guest (:func:`job_tasks`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from exporter.schedule.expressions import Schedule
from exporter.schedule.jobs import Evidence
from exporter.sources.proxmox.jobs import covered_guests
from exporter.sources.proxmox.model import BackupJob, Guest, ProxmoxSnapshot, VzdumpTask
from exporter.sources.proxmox.reader import Reader, as_int, object_list

# pvescheduler starts due jobs once a minute; a task this close after a job's scheduled start
# is taken as that run.
TASK_SLACK = 300.0


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
