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
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import Metric

from exporter.schedule.expressions import Schedule, ScheduleError
from exporter.schedule.jobs import Evidence, JobSpec
from exporter.sources.base import FetchContext, FetchError, Source
from exporter.sources.proxmox import KIND
from exporter.sources.proxmox.api import ProxmoxApi, check_backup_visibility
from exporter.sources.proxmox.config import SPEC as SPEC  # noqa: PLC0414 - re-export
from exporter.sources.proxmox.config import ProxmoxConfig
from exporter.sources.proxmox.jobs import capped_graces, covered_guests, job_schedule
from exporter.sources.proxmox.model import Archive, BackupStorage, ProxmoxSnapshot, VzdumpTask
from exporter.sources.proxmox.reader import as_int
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
from exporter.sources.proxmox.tasks import guest_evidence, job_tasks, parse_tasks
from exporter.sources.targets import TargetStatus, render_targets, storage_target, within

log = logging.getLogger(__name__)

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
        ctx.memory[_MEMORY_KEY] = {
            sid: [dataclasses.asdict(a) for a in found] for sid, found in keep.items()
        }
        return snapshot

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

    # ---- render

    def render(self, snapshot: ProxmoxSnapshot) -> Iterator[Metric]:
        """Build the ``backup_pve_*`` families (one series per guest, storage, job or node)."""
        yield from render_snapshot(self.name, snapshot, grace=self.config.job_grace)
        yield from render_targets(self.name, self.kind, snapshot.targets)

    # ---- jobs

    def jobs(self, snapshot: ProxmoxSnapshot) -> Iterator[tuple[JobSpec, Evidence]]:
        """Yield one job per enabled PVE backup job × covered guest."""
        cfg = self.config
        schedules: dict[str, Schedule] = {}
        for job in snapshot.jobs:
            if not job.enabled:
                continue
            try:
                schedules[job.id] = job_schedule(job.schedule, snapshot.timezone)
            except ScheduleError as exc:
                self._warn_once(job.id, job.schedule, str(exc))
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


__all__ = ["KIND", "SPEC", "ProxmoxSource"]
