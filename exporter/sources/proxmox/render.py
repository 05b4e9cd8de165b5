"""The ``backup_pve_*`` metric families of a Proxmox VE snapshot (pure: snapshot in, families out).

One series per guest, storage (× guest), job or node.

Sample exposition::

    # HELP backup_pve_guest_info Guests of the Proxmox VE cluster.
    # TYPE backup_pve_guest_info gauge
    backup_pve_guest_info{guest_type="qemu",name="infra",node="pve1",source="pve1",vmid="100"} 1.0
    # HELP backup_pve_archive_last_timestamp_seconds Start time of the newest backup archive.
    # TYPE backup_pve_archive_last_timestamp_seconds gauge
    backup_pve_archive_last_timestamp_seconds{source="pve1",storage="nas",vmid="100"} 1.7697204e+09
    # HELP backup_pve_archives Number of backup archives of the guest on the storage.
    # TYPE backup_pve_archives gauge
    backup_pve_archives{source="pve1",storage="nas",vmid="100"} 14.0
    # HELP backup_pve_retention_target_archives Unprotected archives PVE's pruning keeps (...).
    # TYPE backup_pve_retention_target_archives gauge
    backup_pve_retention_target_archives{source="pve1",storage="nas",vmid="100"} 14.0
    # HELP backup_pve_retention_expected_archives Unprotected archives PVE's pruning leaves (...).
    # TYPE backup_pve_retention_expected_archives gauge
    backup_pve_retention_expected_archives{source="pve1",storage="nas",vmid="100"} 14.0
    # HELP backup_pve_retention_projected_bytes Retention target times newest size, per storage.
    # TYPE backup_pve_retention_projected_bytes gauge
    backup_pve_retention_projected_bytes{source="pve1",storage="nas"} 1.68e+11
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.sources.proxmox.jobs import covered_guests
from exporter.sources.proxmox.model import Archive, ProxmoxSnapshot
from exporter.sources.proxmox.retention import (
    effective_retention,
    expected_archives,
    projected_bytes,
    retention_targets,
)


def render_snapshot(src: str, snap: ProxmoxSnapshot, *, grace: float) -> Iterator[Metric]:
    """Build the ``backup_pve_*`` families; ``grace`` is the source's ``job_grace``."""
    yield from _render_guests(src, snap)
    yield from _render_archives(src, snap, grace=grace)
    yield from _render_storages(src, snap)
    yield from _render_jobs(src, snap)
    yield from _render_tasks(src, snap)


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
        "1 when no backup job covers the guest (PVE's not-backed-up list; templates only "
        "when a job covers them).",
        ["source", "vmid"],
    )
    # PVE's list includes templates no job selects (pve-manager:
    # PVE/API2/Cluster/BackupInfo.pm, get_guests_not_in_backup, skips none); a template
    # left out of every job is on purpose, so it is not reported. One a job covers (PVE's
    # get_included_guests selects templates too) is reported like any guest.
    templates = {g.vmid for g in snap.guests if g.template}
    covered_templates = {
        g.vmid for job in snap.jobs for g in covered_guests(job, snap.guests, templates=True)
    } & templates
    vmids = set()
    for g in snap.guests:
        info.add_metric([src, str(g.vmid), g.name, g.node, g.guest_type], 1)
        if not g.template or g.vmid in covered_templates:
            vmids.add(g.vmid)
    listed = snap.not_backed_up - (templates - covered_templates)
    for vmid in sorted(vmids | listed):
        not_backed.add_metric([src, str(vmid)], float(vmid in listed))
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
        "Unprotected archives PVE's pruning keeps once the job ran often enough "
        "(its prune selection over the schedule's runs).",
        labels,
    )
    for (storage, vmid), n in sorted(retention_targets(snap).items()):
        target.add_metric([src, storage, str(vmid)], n)
    expected = _gauge(
        "backup_pve_retention_expected_archives",
        "Unprotected archives PVE's pruning leaves by now: the job's runs due since the "
        "oldest archive, each pruned as PVE does (0 without any archive).",
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
