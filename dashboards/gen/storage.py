"""The storage dashboard: backup space vs retention, ZFS snapshots and pools, disks."""

from __future__ import annotations

from typing import Any

from gen.common import (
    OK_BAD,
    Builder,
    Col,
    age,
    sel,
    threshold_steps,
)


def build() -> dict[str, Any]:
    """Backup storage space vs the retention footprint, snapshots, scrubs, SMART."""
    b = Builder(
        uid="backup-storage",
        title="Backups / Storage",
        description="Space for backups (used, quota, projected), ZFS snapshots and pools, disks.",
    )
    store = "{{storage}} ({{source}})"
    b.row("Space")
    b.bars(
        "Proxmox backup storage used",
        f"{sel('backup_pve_storage_used_bytes')}"
        f" / on(source, storage) ({sel('backup_pve_storage_size_bytes')} > 0)",
        store,
        description="Share of each PVE backup storage in use (an NFS storage shows its quota).",
        unit="percentunit",
        thresholds=threshold_steps((None, "green"), (0.8, "orange"), (0.9, "red")),
        maximum=1,
    )
    b.bars(
        "Dataset quota used",
        f"{sel('backup_zfs_dataset_used_bytes')}"
        f" / on(source, dataset) ({sel('backup_zfs_dataset_quota_bytes')} > 0)",
        "{{dataset}} ({{source}})",
        description="Datasets with a quota: share of it in use (snapshots count).",
        unit="percentunit",
        thresholds=threshold_steps((None, "green"), (0.8, "orange"), (0.9, "red")),
        maximum=1,
    )
    b.series(
        "Proxmox storage: used, size and retention footprint",
        [
            (sel("backup_pve_storage_used_bytes"), "used {{storage}}"),
            (sel("backup_pve_storage_size_bytes"), "size {{storage}}"),
            (sel("backup_pve_retention_projected_bytes"), "projected {{storage}}"),
            (
                f"predict_linear({sel('backup_pve_storage_used_bytes')}[1d], 7 * 86400)",
                "in 7 days {{storage}}",
            ),
        ],
        description=(
            "Projected: the space the retention settings need at current archive sizes. "
            "In 7 days: the last day's growth extrapolated. Either above size means trouble."
        ),
        unit="bytes",
        span=24,
    )
    b.series(
        "Datasets: used and quota",
        [
            (sel("backup_zfs_dataset_used_bytes"), "used {{dataset}}"),
            (f"{sel('backup_zfs_dataset_quota_bytes')} > 0", "quota {{dataset}}"),
            (sel("backup_zfs_dataset_available_bytes"), "available {{dataset}}"),
        ],
        description="Used includes snapshots and children; a quota of 0 (none) is not drawn.",
        unit="bytes",
        span=24,
    )
    b.row("Snapshots")
    b.bars(
        "Newest snapshot age",
        age("backup_zfs_snapshot_newest_timestamp_seconds"),
        "{{dataset}} ({{source}})",
        description="Time since each dataset's newest snapshot (alert at 2 days).",
        unit="s",
        thresholds=threshold_steps((None, "green"), (86400, "orange"), (172800, "red")),
    )
    b.series(
        "Snapshots per dataset",
        [(sel("backup_zfs_snapshots"), "{{dataset}} ({{source}})")],
        description="Snapshot counts: flat when retention and creation balance.",
        unit="none",
    )
    b.row("Pools and scrubs")
    b.table(
        "Pools",
        [
            Col(
                "State",
                f"{sel('backup_zfs_pool_state')} == 1",
                by=("source", "pool", "state"),
                hidden=True,
            ),
            Col("Healthy", sel("backup_zfs_pool_healthy"), mapping=OK_BAD, colored=True),
            Col("Last scrub", age("backup_zfs_scrub_last_end_timestamp_seconds"), unit="s"),
            Col("Scrub errors", sel("backup_zfs_scrub_errors")),
            Col("Scrubbing", sel("backup_zfs_scrub_running")),
        ],
        description="Last scrub is the time since the last finished scrub (alert at 45 days).",
        key=["source", "pool"],
        labels=["state"],
        sort_by="Last scrub",
        height=6,
    )
    b.row("Disks")
    b.table(
        "Disks (SMART)",
        [
            Col(
                "Info",
                sel("backup_smart_device_info"),
                by=("source", "device", "type", "disk", "model", "serial"),
                hidden=True,
            ),
            Col("Healthy", sel("backup_smart_healthy"), mapping=OK_BAD, colored=True),
            Col("Temperature", sel("backup_smart_temperature_celsius"), unit="celsius"),
            Col("Power-on", sel("backup_smart_power_on_seconds"), unit="s"),
            Col("Reallocated", sel("backup_smart_reallocated_sectors")),
            Col("Pending", sel("backup_smart_pending_sectors")),
            Col(
                "Last short test",
                age("backup_smart_selftest_last_timestamp_seconds", 'test="short"'),
                unit="s",
            ),
            Col(
                "Last long test",
                age("backup_smart_selftest_last_timestamp_seconds", 'test="long"'),
                unit="s",
            ),
            Col(
                "Last tests passed",
                f"min by (source, device, type, disk) ({sel('backup_smart_selftest_last_passed')})",
                mapping=OK_BAD,
                colored=True,
            ),
        ],
        description="Self-test ages: alert at 2 days (short) and 63 days (long). Disks behind "
        "one controller node share the device and differ in type (megaraid,N) and disk.",
        key=["source", "device", "type", "disk"],
        labels=["model", "serial"],
        height=8,
    )
    b.series(
        "Disk temperature",
        [(sel("backup_smart_temperature_celsius"), "{{device}} {{type}} {{disk}} ({{source}})")],
        description="Drive temperatures.",
        unit="celsius",
    )
    b.series(
        "Reallocated and pending sectors",
        [
            (sel("backup_smart_reallocated_sectors"), "reallocated {{device}}"),
            (sel("backup_smart_pending_sectors"), "pending {{device}}"),
        ],
        description="Growing counts predict a failing disk before SMART health flips.",
        unit="none",
    )
    b.row("Backup directories")
    b.table(
        "Watched directories",
        [
            Col("Newest file", age("backup_files_newest_timestamp_seconds"), unit="s"),
            Col("Files", sel("backup_files")),
            Col("Size", sel("backup_files_size_bytes"), unit="bytes"),
        ],
        description="Directories of backup files (e.g. Home Assistant backups on a share).",
        key=["source"],
        sort_by="Newest file",
        height=6,
    )
    return b.build()
