"""The offsite dashboard: bucket prefixes, cloud sync tasks, restore checks."""

from __future__ import annotations

from typing import Any

from gen.common import (
    OK_BAD,
    YES_NO_BAD,
    Builder,
    Col,
    age,
    sel,
    value_map,
)


def build() -> dict[str, Any]:
    """Per bucket prefix: freshness, size, cost; cloud sync tasks; restore checks."""
    b = Builder(
        uid="backup-offsite",
        title="Backups / Offsite",
        description="Offsite copies: bucket prefixes, cloud sync tasks, restore checks.",
    )
    prefix = "{{bucket}}/{{prefix}}"
    success = sel("backup_cloudsync_last_success_timestamp_seconds")
    failure = sel("backup_cloudsync_last_failure_timestamp_seconds")
    b.row("Buckets")
    b.stat(
        "Estimated monthly cost",
        f"sum({sel('backup_bucket_estimated_monthly_cost_dollars')})",
        description="Storage cost of the watched buckets at the configured price per TB.",
        unit="currencyUSD",
    )
    b.stat(
        "Stored offsite",
        f"sum({sel('backup_bucket_size_bytes')})",
        description="Total size of the watched prefixes.",
        unit="bytes",
    )
    b.stat(
        "Oldest newest object",
        f"max({age('backup_bucket_newest_object_timestamp_seconds')})",
        description="The stalest prefix: time since its newest object (fallback alert at 8 days).",
        unit="s",
    )
    b.table(
        "Bucket prefixes",
        [
            Col("Newest object", age("backup_bucket_newest_object_timestamp_seconds"), unit="s"),
            Col("Oldest object", age("backup_bucket_oldest_object_timestamp_seconds"), unit="s"),
            Col("Objects", sel("backup_bucket_objects")),
            Col("Size", sel("backup_bucket_size_bytes"), unit="bytes"),
            Col("Listed", age("backup_bucket_last_listing_timestamp_seconds"), unit="s"),
        ],
        description="Ages are times since; Listed is when the exporter last listed the prefix.",
        key=["source", "bucket", "prefix"],
        sort_by="Newest object",
        height=8,
    )
    b.series(
        "Time since newest object",
        [(age("backup_bucket_newest_object_timestamp_seconds"), prefix)],
        description="Drops at each upload: daily for B2, weekly for Storj.",
        unit="s",
    )
    b.series(
        "Size per prefix",
        [(sel("backup_bucket_size_bytes"), prefix)],
        description="Stored bytes per prefix.",
        unit="bytes",
    )
    b.series(
        "Estimated monthly cost per bucket",
        [(sel("backup_bucket_estimated_monthly_cost_dollars"), "{{bucket}} ({{source}})")],
        description="Storage cost estimate per bucket.",
        unit="currencyUSD",
        span=24,
    )
    b.row("Cloud sync")
    b.table(
        "Cloud sync tasks",
        [
            # 1 when the last failure is newer than the last success (or there is no success).
            Col(
                "Failed",
                f"({failure} > bool on(source, task) {success})"
                f" or on(source, task) (0 * {success})"
                f" or on(source, task) (0 * {failure} + 1)",
                mapping=YES_NO_BAD,
                colored=True,
            ),
            Col(
                "Last success",
                age("backup_cloudsync_last_success_timestamp_seconds"),
                unit="s",
            ),
            Col("Running", sel("backup_cloudsync_running")),
            Col(
                "Encrypted",
                sel("backup_cloudsync_encrypted"),
                mapping=value_map({0: ("no", "red"), 1: ("yes", "green")}),
                colored=True,
            ),
        ],
        description="TrueNAS cloud sync tasks (B2 daily, Storj weekly).",
        key=["source", "task"],
        sort_by="Failed",
        height=6,
    )
    b.row("Verification")
    b.table(
        "Restore checks",
        [
            Col("Result", sel("backup_restore_check_success"), mapping=OK_BAD, colored=True),
            Col(
                "Last success",
                age("backup_restore_check_last_success_timestamp_seconds"),
                unit="s",
            ),
            Col("Duration", sel("backup_restore_check_duration_seconds"), unit="s"),
            Col("Restored", sel("backup_restore_check_bytes"), unit="bytes"),
        ],
        description="The exporter restores a sample from each checked bucket (alert at 8 days).",
        key=["source", "bucket"],
        height=6,
    )
    return b.build()
