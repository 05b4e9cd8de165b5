"""The Proxmox dashboard: guests, their vzdump archives vs retention, the backup jobs."""

from __future__ import annotations

from typing import Any

from gen.common import (
    GOOD_AT_ZERO,
    YES_NO_BAD,
    Builder,
    Col,
    age,
    sel,
    threshold_steps,
)


def build() -> dict[str, Any]:
    """Per guest: backup age, archive count vs retention, sizes."""
    b = Builder(
        uid="backup-proxmox",
        title="Backups / Proxmox",
        description="Proxmox VE guests, their vzdump archives and the backup jobs.",
    )
    guest = "source, vmid"
    b.row("Coverage")
    b.stat(
        "Guests",
        f"count({sel('backup_pve_guest_info')})",
        description="Guests (VMs and containers) the PVE API lists.",
    )
    b.stat(
        "Guests without backup",
        f"sum({sel('backup_pve_guest_not_backed_up')})",
        description="Guests no enabled backup job covers.",
        thresholds=GOOD_AT_ZERO,
    )
    b.stat(
        "Oldest newest archive",
        f"max(time() - max by ({guest}) ({sel('backup_pve_archive_last_timestamp_seconds')}))",
        description="Age of the newest archive of the guest whose newest archive is oldest.",
        unit="s",
    )
    b.table(
        "Guests and their archives",
        [
            Col(
                "Guest",
                sel("backup_pve_guest_info"),
                by=("source", "vmid", "name", "node", "guest_type"),
                hidden=True,
            ),
            Col(
                "Not backed up",
                sel("backup_pve_guest_not_backed_up"),
                mapping=YES_NO_BAD,
                colored=True,
            ),
            Col(
                "Backup age",
                f"time() - max by ({guest}) ({sel('backup_pve_archive_last_timestamp_seconds')})",
                unit="s",
            ),
            Col("Archives", f"sum by ({guest}) ({sel('backup_pve_archives')})"),
            Col(
                "Expected by now",
                f"sum by ({guest}) ({sel('backup_pve_retention_expected_archives')})",
            ),
            Col(
                "Retention target",
                f"sum by ({guest}) ({sel('backup_pve_retention_target_archives')})",
            ),
            Col(
                "Protected",
                f"sum by ({guest}) ({sel('backup_pve_archives_protected')})",
            ),
            Col(
                "Last size",
                f"max by ({guest}) ({sel('backup_pve_archive_last_size_bytes')})",
                unit="bytes",
            ),
            Col(
                "All archives",
                f"sum by ({guest}) ({sel('backup_pve_archive_size_bytes')})",
                unit="bytes",
            ),
        ],
        description=(
            "One row per guest (archives summed over storages). Archives below what the job "
            "could have produced by now mean failed runs or pruning that is too aggressive; far "
            "above the retention target, broken pruning."
        ),
        key=["source", "vmid"],
        labels=["name", "node", "guest_type"],
        sort_by="Backup age",
        height=10,
    )
    b.row("Archives")
    b.series(
        "Backup age per guest",
        [
            (
                f"time() - max by ({guest}) ({sel('backup_pve_archive_last_timestamp_seconds')})",
                "{{vmid}} ({{source}})",
            )
        ],
        description="Time since each guest's newest archive; it drops after each backup.",
        unit="s",
    )
    b.bars(
        "Archives vs retention target",
        f"{sel('backup_pve_archives')}"
        f" / on(source, storage, vmid) ({sel('backup_pve_retention_target_archives')} > 0)",
        "{{vmid}} on {{storage}}",
        description=(
            "Archives kept as a share of what the retention keeps (100% = on target; a guest "
            "added recently grows toward it one run at a time)."
        ),
        unit="percentunit",
        thresholds=threshold_steps((None, "orange"), (1, "green"), (1.5, "red")),
        maximum=2,
    )
    b.series(
        "Newest archive size",
        [(sel("backup_pve_archive_last_size_bytes"), "{{vmid}} on {{storage}}")],
        description="Size of each guest's newest archive: jumps show guests that grew.",
        unit="bytes",
    )
    b.series(
        "All archives per guest",
        [(sel("backup_pve_archive_size_bytes"), "{{vmid}} on {{storage}}")],
        description="Total size of each guest's archives on each storage.",
        unit="bytes",
    )
    b.row("Jobs and retention")
    b.table(
        "Backup jobs",
        [
            Col(
                "Info",
                sel("backup_pve_job_info"),
                by=("source", "backup_job", "schedule", "storage", "mode", "enabled"),
                hidden=True,
            ),
        ],
        description="The cluster's backup jobs (Datacenter → Backup).",
        key=["source", "backup_job"],
        labels=["schedule", "storage", "mode", "enabled"],
        span=12,
        height=8,
    )
    b.table(
        "Job retention",
        [Col("Count", sel("backup_pve_job_retention"), by=("source", "backup_job", "keep"))],
        description="Retention per job (keep-last, keep-daily, …).",
        key=["source", "backup_job"],
        labels=["keep"],
        span=12,
        height=8,
    )
    b.series(
        "vzdump per node: time since last success",
        [(age("backup_pve_vzdump_last_success_timestamp_seconds"), "{{node}} ({{source}})")],
        description="From the nodes' task lists: the last successful vzdump task.",
        unit="s",
        span=24,
    )
    return b.build()
