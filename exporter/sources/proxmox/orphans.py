"""Orphans and drift of a Proxmox VE cluster: what Veeam calls orphan alarms.

Pure functions of a :class:`~exporter.sources.proxmox.model.ProxmoxSnapshot`:

* archives of a guest that still exists while no *enabled* backup job covers it any more
  (it was removed from its job, or its job was disabled): ``backup_pve_orphan_guest_archives``;
  which guests a job covers is PVE's rule (:func:`~exporter.sources.proxmox.jobs.covered_guests`,
  after pve-manager ``PVE/VZDump.pm`` ``get_included_guests``), templates included;
* archives whose guest no longer exists (its vmid is not in ``/cluster/resources``, which
  lists the guests of every node, offline ones too): ``backup_pve_orphan_archives``;
* a job disabled for longer than the source's ``disabled_job_max_age``. PVE does not record
  when a job was disabled, so the exporter remembers when it first saw it disabled
  (:func:`disabled_since`, kept in the kind's durable ``ctx.memory``, so a restart does not
  reset it): ``backup_pve_job_disabled_since_timestamp_seconds`` and
  ``backup_pve_job_disabled_too_long``.

A storage shared with another cluster (one PBS datastore for two clusters) holds that
cluster's guests too: they count as archives whose guest is gone.

Sample exposition::

    # HELP backup_pve_orphan_guest_archives Archives of an existing guest no enabled job covers.
    # TYPE backup_pve_orphan_guest_archives gauge
    backup_pve_orphan_guest_archives{source="pve1",storage="nas",vmid="101"} 3.0
    # HELP backup_pve_orphan_archives Archives on the storage whose guest no longer exists.
    # TYPE backup_pve_orphan_archives gauge
    backup_pve_orphan_archives{source="pve1",storage="nas"} 0.0
    # HELP backup_pve_job_disabled_since_timestamp_seconds When the job was first seen disabled.
    # TYPE backup_pve_job_disabled_since_timestamp_seconds gauge
    backup_pve_job_disabled_since_timestamp_seconds{backup_job="old",source="pve1"} 1.7e+09
    backup_pve_job_disabled_since_timestamp_seconds{backup_job="daily",source="pve1"} 0.0
    # HELP backup_pve_job_disabled_too_long 1 when the job is disabled longer than allowed.
    # TYPE backup_pve_job_disabled_too_long gauge
    backup_pve_job_disabled_too_long{backup_job="old",source="pve1"} 1.0
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.sources.proxmox.jobs import covered_guests
from exporter.sources.proxmox.model import BackupJob, ProxmoxSnapshot

# ctx.memory key: {job id: when it was first seen disabled (Unix seconds)}.
DISABLED_KEY = "jobs_disabled_since"


def disabled_since(jobs: tuple[BackupJob, ...], remembered: Any, now: float) -> dict[str, float]:
    """Return when each disabled job was first seen disabled (``now`` for a newly disabled one).

    ``remembered`` is the last poll's answer (from ``ctx.memory``); a job enabled again, or
    gone, is forgotten, so disabling it later starts a new period.
    """
    known: Mapping[str, Any] = remembered if isinstance(remembered, dict) else {}
    out: dict[str, float] = {}
    for job in jobs:
        if job.enabled:
            continue
        seen = known.get(job.id)
        valid = isinstance(seen, (int, float)) and not isinstance(seen, bool) and 0 < seen <= now
        out[job.id] = float(seen) if valid and seen is not None else now
    return out


def uncovered_archives(snap: ProxmoxSnapshot) -> dict[tuple[str, int], int]:
    """Count the archives of each existing guest per storage; 0 where an enabled job covers it."""
    existing = {g.vmid for g in snap.guests}
    covered = {
        g.vmid
        for job in snap.jobs
        if job.enabled
        for g in covered_guests(job, snap.guests, templates=True)
    }
    out: dict[tuple[str, int], int] = {}
    for a in snap.archives:
        if a.vmid in existing:
            key = (a.storage, a.vmid)
            out[key] = out.get(key, 0) + (a.vmid not in covered)
    return out


def gone_guest_archives(snap: ProxmoxSnapshot) -> dict[str, int]:
    """Count the archives of guests that no longer exist, per listed backup storage."""
    existing = {g.vmid for g in snap.guests}
    out = {s.storage: 0 for s in snap.storages if s.listed}
    for a in snap.archives:
        if a.vmid not in existing:
            out[a.storage] = out.get(a.storage, 0) + 1
    return out


def render_orphans(source: str, snap: ProxmoxSnapshot, *, max_disabled: float) -> Iterator[Metric]:
    """Build the orphan and disabled-job families (``max_disabled``: seconds allowed)."""
    guests = GaugeMetricFamily(
        "backup_pve_orphan_guest_archives",
        "Archives of an existing guest on the storage while no enabled backup job covers "
        "the guest (0 when one does).",
        labels=["source", "storage", "vmid"],
    )
    for (storage, vmid), n in sorted(uncovered_archives(snap).items()):
        guests.add_metric([source, storage, str(vmid)], float(n))
    gone = GaugeMetricFamily(
        "backup_pve_orphan_archives",
        "Archives on the backup storage whose guest no longer exists in the cluster.",
        labels=["source", "storage"],
    )
    for storage, n in sorted(gone_guest_archives(snap).items()):
        gone.add_metric([source, storage], float(n))
    since = GaugeMetricFamily(
        "backup_pve_job_disabled_since_timestamp_seconds",
        "When the exporter first saw the backup job disabled (0 while it is enabled).",
        labels=["backup_job", "source"],
    )
    too_long = GaugeMetricFamily(
        "backup_pve_job_disabled_too_long",
        "1 when the backup job has been disabled longer than the source's disabled_job_max_age.",
        labels=["backup_job", "source"],
    )
    disabled = dict(snap.disabled_since)
    for job in snap.jobs:
        at = disabled.get(job.id)
        since.add_metric([job.id, source], 0.0 if at is None else at)
        over = at is not None and snap.time - at > max_disabled
        too_long.add_metric([job.id, source], float(over))
    yield from (guests, gone, since, too_long)
