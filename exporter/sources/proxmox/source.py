"""Proxmox VE source: vzdump archives, backup jobs, vzdump tasks and retention, via proxmoxer.

A poll reads the cluster's API (:mod:`~exporter.sources.proxmox.api`), parses the answers
(:mod:`~exporter.sources.proxmox.responses`, :mod:`~exporter.sources.proxmox.tasks`) into one
frozen :class:`~exporter.sources.proxmox.model.ProxmoxSnapshot`; rendering
(:mod:`~exporter.sources.proxmox.render`), retention counts
(:mod:`~exporter.sources.proxmox.retention`) and the job evidence (:meth:`ProxmoxSource.jobs`,
from :mod:`~exporter.sources.proxmox.tasks`) are pure functions of that snapshot.

Sample exposition (see :mod:`exporter.sources.proxmox.render` for every family)::

    # HELP backup_pve_guest_info Guests of the Proxmox VE cluster.
    # TYPE backup_pve_guest_info gauge
    backup_pve_guest_info{guest_type="qemu",name="infra",node="pve1",source="pve1",vmid="100"} 1.0
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.policy.checks import pve_results
from exporter.policy.render import render_policy
from exporter.schedule.expressions import Schedule, ScheduleError
from exporter.schedule.jobs import Evidence, JobSpec
from exporter.sources.base import FetchContext, FetchError, Source
from exporter.sources.proxmox import KIND
from exporter.sources.proxmox.api import (
    ProxmoxApi,
    check_backup_visibility,
    find_hidden_backups,
)
from exporter.sources.proxmox.config import SPEC as SPEC  # noqa: PLC0414 - re-export
from exporter.sources.proxmox.config import ProxmoxConfig
from exporter.sources.proxmox.jobs import capped_graces, covered_guests, job_schedule
from exporter.sources.proxmox.model import (
    Archive,
    BackupStorage,
    HiddenBackups,
    ProxmoxSnapshot,
    TaskLog,
    VzdumpTask,
)
from exporter.sources.proxmox.orphans import DISABLED_KEY, disabled_since, render_orphans
from exporter.sources.proxmox.reader import as_int, object_list
from exporter.sources.proxmox.render import render_snapshot
from exporter.sources.proxmox.responses import (
    parse_content,
    parse_guests,
    parse_jobs,
    parse_node_storages,
    parse_nodes,
    parse_not_backed_up,
    parse_storage_config,
)
from exporter.sources.proxmox.tasks import (
    charges,
    guest_evidence,
    job_tasks,
    log_from_json,
    log_to_json,
    parse_task_log,
    parse_tasks,
)
from exporter.sources.targets import TargetStatus, render_targets, storage_target, within

log = logging.getLogger(__name__)

# Task logs read per poll (newest first; the rest wait for the next polls), and the lines of one
# log read at most (in pages). A finished task's log is read once: what it says is kept in
# ctx.memory under MEMORY_KEY, by UPID, while the task is in the task list.
LOG_READS_PER_POLL = 8
LOG_PAGE = 1000
LOG_MAX_LINES = 20_000
MEMORY_KEY = "task_logs"

# ctx.memory: each storage's last listed archives, so a storage that is down after a restart
# still shows its last-known archives ({sid: [Archive as a dict, ...]}).
_MEMORY_KEY = "storage_archives"


def _recall_archives(raw: Any) -> dict[str, list[Archive]]:
    """Decode the remembered archives; whatever does not decode is forgotten."""
    out: dict[str, list[Archive]] = {}
    if not isinstance(raw, dict):
        return out
    for sid, rows in raw.items():
        if not isinstance(sid, str) or not isinstance(rows, list):
            continue
        archives = [a for row in rows if (a := _archive(sid, row)) is not None]
        if len(archives) == len(rows):
            out[sid] = archives
    return out


def _archive(sid: str, row: Any) -> Archive | None:
    if not isinstance(row, dict) or row.get("storage") != sid:
        return None
    vmid, ctime, size = row.get("vmid"), row.get("ctime"), row.get("size")
    protected, verified = row.get("protected", False), row.get("verified")
    if not (isinstance(vmid, int) and isinstance(size, int) and isinstance(protected, bool)):
        return None
    if not isinstance(ctime, (int, float)) or not isinstance(verified, (bool, type(None))):
        return None
    return Archive(sid, vmid, float(ctime), size, protected=protected, verified=verified)


@dataclass
class _StorageSeen:
    type: str
    shared: bool
    per_node: list[tuple[str, bool, int, int]]  # node, active, total, used


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
        self._api = ProxmoxApi(config)
        self._warned: set[tuple[str, str]] = set()
        self._hidden_logged: dict[str, str] = {}

    async def fetch(self, ctx: FetchContext) -> ProxmoxSnapshot:
        """Read nodes, guests, jobs, storages, archives and vzdump tasks."""
        tz = self.config.zone
        api = self._api
        nodes = parse_nodes(await api.nodes(ctx))
        guests = parse_guests(await api.guests(ctx))
        storage_config = parse_storage_config(await api.storage_config(ctx))
        jobs = parse_jobs(await api.backup_jobs(ctx))
        not_backed_up = parse_not_backed_up(await api.not_backed_up(ctx))
        seen: dict[str, _StorageSeen] = {}
        tasks: list[VzdumpTask] = []
        online = [n for n, up in nodes if up]
        for node in online:
            for s in parse_node_storages(await api.node_storages(ctx, node), node):
                entry = seen.setdefault(s.storage, _StorageSeen(s.type, s.shared, []))
                entry.per_node.append((node, s.active, s.total, s.used))
            data = await api.vzdump_tasks(ctx, node, self.config.tasks_limit)
            tasks.extend(parse_tasks(data, node))
        storages: list[BackupStorage] = []
        archives: list[Archive] = []
        targets: list[TargetStatus] = []
        last = _recall_archives(ctx.memory.get(_MEMORY_KEY))
        keep: dict[str, list[Archive]] = {}
        for sid, entry in sorted(seen.items()):
            active_nodes = [n for n, active, _, _ in entry.per_node if active]
            # A shared storage is the same files from every node: list it once.
            list_from = active_nodes[:1] if entry.shared else active_nodes
            listed = bool(list_from)
            if list_from:
                found, status = await self._list_storage(ctx, sid, list_from, last.get(sid))
                targets.append(status)
                if found is None:
                    listed = False  # down and never listed: unknown, not "no archives"
                else:
                    archives.extend(found)
                    keep[sid] = found
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
                    listed=listed,
                    retention=storage_config.get(sid),
                )
            )
        tasks = await self._read_task_logs(ctx, tasks)
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
            targets=tuple(targets),
        )
        check_backup_visibility(snapshot)
        hidden = find_hidden_backups(snapshot, charges(snapshot, self._schedules(snapshot)))
        self._log_hidden(hidden)
        ctx.memory[_MEMORY_KEY] = {
            sid: [dataclasses.asdict(a) for a in found] for sid, found in keep.items()
        }
        since = disabled_since(jobs, ctx.memory.get(DISABLED_KEY), snapshot.time)
        ctx.memory[DISABLED_KEY] = since
        return replace(snapshot, hidden=hidden, disabled_since=tuple(sorted(since.items())))

    async def _read_task_logs(self, ctx: FetchContext, tasks: list[VzdumpTask]) -> list[VzdumpTask]:
        """Attach their logs to multi-guest tasks: remembered ones, then a few read anew."""
        raw = ctx.memory.get(MEMORY_KEY)
        known: dict[str, Any] = raw if isinstance(raw, dict) else {}
        kept: dict[str, Any] = {}
        out: list[VzdumpTask] = []
        reads = 0
        for task in sorted(tasks, key=lambda t: t.starttime, reverse=True):
            if task.vmid is not None or not task.upid:
                out.append(task)
                continue
            remembered = log_from_json(known.get(task.upid)) if task.endtime else None
            if remembered is not None:
                kept[task.upid] = known[task.upid]
                out.append(replace(task, log=remembered))
                continue
            if reads >= LOG_READS_PER_POLL:
                out.append(task)
                continue
            reads += 1
            read = await self._read_log(ctx, task)
            if read is None:  # refused: the others would be too; try again next poll
                reads = LOG_READS_PER_POLL
            if read is not None and task.status != "running":
                kept[task.upid] = log_to_json(read)
            out.append(task if read is None else replace(task, log=read))
        ctx.memory[MEMORY_KEY] = kept
        return out

    async def _read_log(self, ctx: FetchContext, task: VzdumpTask) -> TaskLog | None:
        """Read one task's log in pages; ``None`` (fall back) when PVE refuses it."""
        lines: list[str] = []
        complete = False
        what = f"GET /nodes/{task.node}/tasks/{{upid}}/log"
        try:
            while len(lines) < LOG_MAX_LINES:
                data = await self._api.task_log(ctx, task.node, task.upid, len(lines), LOG_PAGE)
                page = [str(item.get("t", "")) for item in object_list(data, what)]
                lines.extend(page)
                if len(page) < LOG_PAGE:
                    complete = True
                    break
        except FetchError as exc:
            if exc.reason in ("timeout", "connection", "auth"):
                raise
            if ("task log", exc.reason) not in self._warned:
                self._warned.add(("task log", exc.reason))
                log.warning(
                    "source=%s cannot read vzdump task logs (%s); multi-guest tasks are "
                    "charged to every guest of their node: %s",
                    self.name,
                    exc.reason,
                    exc,
                )
            return None
        return parse_task_log(lines, running=task.status == "running", complete=complete)

    async def _list_storage(
        self, ctx: FetchContext, sid: str, nodes: list[str], last: list[Archive] | None
    ) -> tuple[list[Archive] | None, TargetStatus]:
        """List one storage's backups under its own ``target_timeout``.

        A storage that fails (a PBS datastore that hangs, a NFS mount that errors) is the
        target ``storage/<id>`` down: it keeps its last-known archives (``None`` when it was
        never listed) and the rest of the poll goes on.

        Why a storage needs its own timeout: for a PBS storage PVE answers the content listing
        by asking the backup server itself, with a 120 s HTTP timeout, and a failure there is
        ``die "error listing snapshots - ..."`` (an HTTP 500 for this one storage) — pve-storage
        ``src/PVE/Storage/PBSPlugin.pm``, ``list_volumes`` (``pbs_api_connect(..., 120)``),
        commit 210b070d. One slow PBS would otherwise hold the poll for up to two minutes.
        """
        target = storage_target(sid)
        try:
            found = await within(
                ctx,
                self._read_storage(ctx, sid, nodes),
                self.config.storage_timeout,
                f"storage {sid!r}",
            )
        except FetchError as exc:
            log.debug("source=%s storage %s: %s", self.name, sid, exc)
            return last, TargetStatus.failed(target, exc)
        return found, TargetStatus(target, up=True)

    async def _read_storage(self, ctx: FetchContext, sid: str, nodes: list[str]) -> list[Archive]:
        found: list[Archive] = []
        for node in nodes:
            data = await self._api.backup_content(ctx, node, sid)
            found.extend(parse_content(data, node, sid, self.config.zone))
        return found

    def _log_hidden(self, hidden: tuple[HiddenBackups, ...]) -> None:
        now = {h.storage: h.message for h in hidden}
        for sid, message in now.items():
            if self._hidden_logged.get(sid) != message:
                log.warning("source=%s reason=permission %s", self.name, message)
        for sid in self._hidden_logged.keys() - now.keys():
            log.info("source=%s storage %s lists all the backups again", self.name, sid)
        self._hidden_logged = now

    def _schedules(self, snapshot: ProxmoxSnapshot) -> dict[str, Schedule]:
        """Parse the enabled jobs' schedules (an unreadable one is warned about once)."""
        schedules: dict[str, Schedule] = {}
        for job in snapshot.jobs:
            if not job.enabled:
                continue
            try:
                schedules[job.id] = job_schedule(job.schedule, snapshot.timezone)
            except ScheduleError as exc:
                self._warn_once(job.id, job.schedule, str(exc))
        return schedules

    # ---- render

    def render(self, snapshot: ProxmoxSnapshot) -> Iterator[Metric]:
        """Build the ``backup_pve_*`` families (one series per guest, storage, job or node)."""
        yield from render_snapshot(self.name, snapshot, grace=self.config.job_grace)
        yield from render_targets(self.name, self.kind, storage_targets(snapshot))
        yield from render_warnings(
            self.name, snapshot, job_tasks(snapshot, self._schedules(snapshot))
        )
        yield from render_orphans(
            self.name, snapshot, max_disabled=self.config.disabled_job_max_age
        )
        if self.policies:
            yield from render_policy(self.name, pve_results(self.policies, snapshot))

    # ---- jobs

    def jobs(self, snapshot: ProxmoxSnapshot) -> Iterator[tuple[JobSpec, Evidence]]:
        """Yield one job per enabled PVE backup job × covered guest."""
        cfg = self.config
        schedules = self._schedules(snapshot)
        attributed = job_tasks(snapshot, schedules)
        for job in snapshot.jobs:
            schedule = schedules.get(job.id)
            if schedule is None:
                continue
            grace, start_grace = capped_graces(
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
                    max_duration=cfg.job_max_duration or None,
                )
                tasks = attributed.get((job.id, guest.vmid), ())
                yield spec, guest_evidence(snapshot, guest, storage=job.storage, tasks=tasks)

    def evidence(self, snapshot: ProxmoxSnapshot, selector: Mapping[str, str]) -> Evidence | None:
        """Evidence for a ``jobs:`` entry: ``vmid`` (required) and ``storage`` (optional)."""
        vmid = as_int(selector.get("vmid"))
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
        self._api.close()


def storage_targets(snapshot: ProxmoxSnapshot) -> list[TargetStatus]:
    """Return the status of each backup storage: listed, or a job writes to it.

    ``storage/<id>`` is down when its own listing failed (timeout, HTTP error: the poll went on,
    see :meth:`ProxmoxSource._list_storage`), when its listing hides backups vzdump tasks wrote
    there (reason ``permission``, :func:`~exporter.sources.proxmox.api.find_hidden_backups`), or
    when a job writes to it and no node has it active (reason ``inactive``).
    """
    listed = {t.target: t for t in snapshot.targets}
    hidden = {h.storage: h for h in snapshot.hidden}
    storages = {s.storage: s for s in snapshot.storages}
    wanted = {j.storage for j in snapshot.jobs if j.storage} | {
        t.target.removeprefix("storage/") for t in snapshot.targets
    }
    out: list[TargetStatus] = []
    for sid in sorted(wanted):
        target = storage_target(sid)
        status = listed.get(target)
        if status is not None and not status.up:
            out.append(status)
        elif sid in hidden:
            out.append(
                TargetStatus(target, up=False, reason="permission", message=hidden[sid].message)
            )
        elif status is None and (sid not in storages or not storages[sid].listed):
            out.append(
                TargetStatus(target, up=False, reason="inactive", message="not active on any node")
            )
        else:
            out.append(TargetStatus(target, up=True))
    return out


def render_warnings(
    source: str,
    snapshot: ProxmoxSnapshot,
    attributed: Mapping[tuple[str, int], tuple[VzdumpTask, ...]],
) -> Iterator[Metric]:
    """Render ``backup_job_warnings``: the warnings of each job × guest's last finished run.

    A run that ended ``WARNINGS: n`` succeeded; this says how many ``WARN:`` lines it had (for a
    multi-guest task, those of the guest's own part plus the job-level ones)::

        # HELP backup_job_warnings Warnings of the job's last finished run (...).
        # TYPE backup_job_warnings gauge
        backup_job_warnings{backup_job="backup-infra-daily",source="pve1",vmid="100"} 1.0
    """
    family = GaugeMetricFamily(
        "backup_job_warnings",
        "Warnings of the job's last finished run for the guest, 0 if none "
        "(cached from the last poll).",
        labels=["backup_job", "source", "vmid"],
    )
    for (job_id, vmid), tasks in sorted(attributed.items()):
        finished = [t for t in tasks if t.endtime is not None and t.status != "running"]
        latest = max(finished, key=lambda t: t.starttime, default=None)
        if latest is not None:
            family.add_metric([job_id, source, str(vmid)], float(latest.warnings))
    yield family


__all__ = ["KIND", "SPEC", "ProxmoxSource"]
