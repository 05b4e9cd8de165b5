"""The overview dashboard: did every backup happen on time? One row per job."""

from __future__ import annotations

from typing import Any

from gen.common import (
    GOOD_AT_ZERO,
    JOB_STATUS,
    UP_DOWN,
    YES_NO_BAD,
    Builder,
    Col,
    sel,
)

# The job status as one number: 3 overdue, 2 failed, 1 running, 0 ok (first match wins).
JOB_STATUS_EXPR = (
    f"(3 * {sel('backup_job_overdue')} > 0)"
    f" or (2 * {sel('backup_job_failed')} > 0)"
    f" or ({sel('backup_job_running')} > 0)"
    f" or (0 * {sel('backup_job_overdue')})"
)

# The deadline that matters next: the current run's finish deadline while it is ahead and
# the run has not succeeded yet, else the next run's (next start + the job's grace).
NEXT_DEADLINE_EXPR = (
    "1000 * ("
    f"({sel('backup_job_finish_deadline_timestamp_seconds')} > time()"
    " unless on(source, backup_job, vmid)"
    f" ({sel('backup_job_last_success_timestamp_seconds')}"
    f" >= on(source, backup_job, vmid) {sel('backup_job_expected_start_timestamp_seconds')}))"
    " or on(source, backup_job, vmid)"
    f" ({sel('backup_job_next_start_timestamp_seconds')}"
    f" + on(source, backup_job, vmid) ({sel('backup_job_finish_deadline_timestamp_seconds')}"
    f" - on(source, backup_job, vmid) {sel('backup_job_expected_start_timestamp_seconds')}))"
    ")"
)


def build() -> dict[str, Any]:
    """Per job: status, last success, next deadline; overdue first."""
    b = Builder(
        uid="backup-overview",
        title="Backups / Overview",
        description="Did every backup happen on time? One row per job, overdue jobs first.",
    )
    b.row("Status")
    b.stat(
        "Jobs overdue",
        f"sum({sel('backup_job_overdue')})",
        description="Jobs past their start or finish deadline without a success.",
        thresholds=GOOD_AT_ZERO,
    )
    b.stat(
        "Jobs failed",
        f"sum({sel('backup_job_failed')})",
        description="Jobs whose last run failed.",
        thresholds=GOOD_AT_ZERO,
    )
    b.stat(
        "Jobs running",
        f"sum({sel('backup_job_running')})",
        description="Jobs with a run in progress.",
    )
    b.stat(
        "Sources down",
        f"sum(1 - {sel('backup_source_up')})",
        description="Sources whose last poll failed (their data is getting old).",
        thresholds=GOOD_AT_ZERO,
    )
    b.stat(
        "Oldest last success",
        f"max(time() - {sel('backup_job_last_success_timestamp_seconds')})",
        description="The longest time any job has gone without a success.",
        unit="s",
    )
    b.stat(
        "Guests without backup",
        f"sum({sel('backup_pve_guest_not_backed_up')})",
        description="Proxmox guests that no enabled backup job covers.",
        thresholds=GOOD_AT_ZERO,
    )
    b.row("Jobs")
    b.table(
        "Jobs (overdue first)",
        [
            Col("Status", JOB_STATUS_EXPR, mapping=JOB_STATUS, colored=True),
            Col(
                "Last success",
                f"time() - {sel('backup_job_last_success_timestamp_seconds')}",
                unit="s",
            ),
            Col("Next deadline", NEXT_DEADLINE_EXPR, unit="dateTimeFromNow"),
            Col(
                "Last duration",
                sel("backup_job_last_duration_seconds"),
                unit="s",
            ),
        ],
        description=(
            "Status: overdue (past a deadline without success), failed (last run failed), "
            "running, ok. Last success is the time since it. Next deadline is the current "
            "run's finish deadline until it succeeds, then the next run's."
        ),
        key=["source", "backup_job", "vmid"],
        sort_by="Status",
        height=12,
    )
    b.states(
        "Overdue history",
        sel("backup_job_overdue"),
        "{{backup_job}} {{vmid}} ({{source}})",
        description="When each job was overdue.",
        mapping=YES_NO_BAD,
        span=12,
    )
    b.series(
        "Time since last success",
        [
            (
                f"time() - {sel('backup_job_last_success_timestamp_seconds')}",
                "{{backup_job}} {{vmid}} ({{source}})",
            )
        ],
        description="Saw-tooth per job: it drops at each success.",
        unit="s",
    )
    b.row("Sources")
    b.states(
        "Source up",
        sel("backup_source_up"),
        "{{source}} ({{kind}})",
        description="Whether each source's polls succeed (TrueNAS may be off overnight).",
        mapping=UP_DOWN,
        span=24,
        height=6,
    )
    return b.build()
