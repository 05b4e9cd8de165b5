"""The overview dashboard: did every backup happen on time? The SLA, then one row per job."""

from __future__ import annotations

from typing import Any

from gen.common import (
    GOOD_AT_ZERO,
    JOB_STATUS,
    SLA_DAY,
    UP_DOWN,
    YES_NO_BAD,
    Builder,
    Col,
    sel,
    threshold_steps,
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


def sla_ratio(level: str, window: str) -> str:
    """Runs met over runs expected in ``window`` (no ratio without an expected run)."""
    met = f"sum by ({level}) (increase({sel(f'backup_{level}_runs_met_total')}[{window}]))"
    expected = (
        f"sum by ({level}) (increase({sel(f'backup_{level}_runs_expected_total')}[{window}]))"
    )
    return f"{met} / ({expected} > 0)"


# One cell per job and day (the panel's step is 1d): 0 nothing was due, 1 every expected run
# met its deadline, 2 at least one missed. A day without an expected run is not "met".
_DUE = f"increase({sel('backup_job_runs_expected_total')}[1d])"
_MET = f"increase({sel('backup_job_runs_met_total')}[1d])"
SLA_DAY_EXPR = f"({_DUE} > bool 0.5) + ({_DUE} - {_MET} > bool 0.5)"
# Red below the default 95 % target, orange below 99 %, green above.
SLA_THRESHOLDS = threshold_steps((None, "red"), (0.95, "orange"), (0.99, "green"))


def build() -> dict[str, Any]:
    """Per job: status, last success, next deadline; overdue first."""
    b = Builder(
        uid="backup-overview",
        title="Backups / Overview",
        description="Did every backup happen on time? One row per job, overdue jobs first.",
    )
    b.row("Backup SLA")
    b.bars(
        "SLA per asset, 30 days",
        sla_ratio("asset", "30d"),
        "{{asset}}",
        description=(
            "Runs met by their finish deadline over runs the schedules expected, over 30 days, "
            "per asset (alerts/sla.rules.yml: asset:backup_sla_ratio:30d; the default target "
            "is 95 %). Assets carry no source label: the source filter does not narrow them."
        ),
        unit="percentunit",
        thresholds=SLA_THRESHOLDS,
        maximum=1,
    )
    b.bars(
        "SLA per asset, 7 days",
        sla_ratio("asset", "7d"),
        "{{asset}}",
        description="The same ratio over the last 7 days (asset:backup_sla_ratio:7d).",
        unit="percentunit",
        thresholds=SLA_THRESHOLDS,
        maximum=1,
    )
    b.states(
        "Runs met and missed per day",
        SLA_DAY_EXPR,
        "{{backup_job}} {{vmid}} ({{source}})",
        description=(
            "One cell per job and day: green when every run the schedule expected that day "
            "met its finish deadline, red when one was missed, grey when none was due "
            "(backup_job_runs_expected_total and backup_job_runs_met_total)."
        ),
        mapping=SLA_DAY,
        span=24,
        interval="1d",
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
