"""Generate the provisionable Grafana dashboards of backup-exporter with grafana-foundation-sdk.

Run ``python dashboards/generate.py`` after editing this file; it rewrites ``dashboards/*.json``
(``tests/test_dashboards.py`` fails when the committed JSON differs from what this produces).
Pin the SDK with its full epoch version (``grafana-foundation-sdk==1769699379!11.6.0``, Grafana
11.6 schema): an unpinned install resolves to a 10.1 build.

Conventions (monitoring-mixin style): every dashboard has a ``datasource`` variable and every
panel uses it (``${datasource}``, never a fixed uid, no ``__inputs``); a ``source`` variable
filters every query (``source=~"$source"``); uids are fixed (``backup-overview``, …); tags
``["backups"]``; panel ids are set explicitly so provisioning keeps them stable.

:func:`all_queries` lists every PromQL expression with its dashboard and panel, for tests that
run them against a real Prometheus (:func:`resolve_variables` fills in the template variables).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import (
    bargauge,
    prometheus,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.builders.common import ReduceDataOptions, TableSortByFieldState
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DatasourceVariable,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    BarGaugeDisplayMode,
    BigValueColorMode,
    BigValueGraphMode,
    TimeZoneBrowser,
    VisibilityMode,
    VizOrientation,
)
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUT_DIR = Path(__file__).resolve().parent
TAGS = ["backups"]
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
SOURCE = 'source=~"$source"'

# Prometheus adds these target labels to every series; tables hide them.
_TARGET_LABELS = ("Time", "__name__", "job", "instance")
_LABEL_HEADERS = {
    "source": "Source",
    "kind": "Kind",
    "backup_job": "Job",
    "vmid": "VMID",
    "name": "Name",
    "node": "Node",
    "guest_type": "Type",
    "storage": "Storage",
    "dataset": "Dataset",
    "pool": "Pool",
    "state": "State",
    "device": "Device",
    "model": "Model",
    "serial": "Serial",
    "bucket": "Bucket",
    "prefix": "Prefix",
    "task": "Task",
    "reason": "Last error",
    "schedule": "Schedule",
    "timezone": "Time zone",
    "mode": "Mode",
    "enabled": "Enabled",
    "keep": "Keep",
}


def sel(metric: str, matchers: str = "") -> str:
    """A selector for ``metric`` filtered by the ``source`` variable (plus more matchers)."""
    extra = f", {matchers}" if matchers else ""
    return f"{metric}{{{SOURCE}{extra}}}"


def age(metric: str, matchers: str = "") -> str:
    """Seconds since a ``*_timestamp_seconds`` metric (0 = never is left out)."""
    return f"time() - ({sel(metric, matchers)} > 0)"


def _mapping(values: dict[int, tuple[str, str]]) -> ValueMap:
    return ValueMap(
        options={
            str(k): ValueMappingResult(text=t, color=c, index=i)
            for i, (k, (t, c)) in enumerate(sorted(values.items()))
        }
    )


UP_DOWN = _mapping({0: ("down", "red"), 1: ("up", "green")})
YES_NO_BAD = _mapping({0: ("no", "green"), 1: ("yes", "red")})
OK_BAD = _mapping({0: ("failing", "red"), 1: ("ok", "green")})
JOB_STATUS = _mapping(
    {0: ("ok", "green"), 1: ("running", "blue"), 2: ("failed", "orange"), 3: ("overdue", "red")}
)


def _thresholds(*steps: tuple[float | None, str]) -> ThresholdsConfig:
    return (
        ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=v, color=c) for v, c in steps])
    )


GOOD_AT_ZERO = _thresholds((None, "green"), (1, "red"))
# Stat and bar gauge panels show each series' current value, not a summary over time.
LAST = ReduceDataOptions().calcs(["lastNotNull"]).values(False)


@dataclass(frozen=True)
class Col:
    """One value column of a table: an instant query and how to show it.

    The query is aggregated ``max by`` the table's key labels (or ``by``, for a column that
    contributes descriptive labels such as a guest's name), which drops the metric name and
    the target labels so the merge transformation joins the columns into one row per key.
    A ``hidden`` column only contributes its labels (an ``_info`` metric's value is 1).
    """

    header: str
    expr: str
    unit: str = ""
    mapping: ValueMap | None = None
    colored: bool = False
    by: tuple[str, ...] = ()
    hidden: bool = False


class Builder:
    """Builds one dashboard, numbering panels (ids must be stable for provisioning)."""

    def __init__(self, *, uid: str, title: str, description: str) -> None:
        self._next_id = 0
        self.dashboard = (
            Dashboard(title)
            .uid(uid)
            .description(description)
            .tags(TAGS)
            .editable()
            .refresh("1m")
            .time("now-24h", "now")
            .timezone(TimeZoneBrowser)
            .with_variable(DatasourceVariable("datasource").label("Data source").type("prometheus"))
            .with_variable(
                QueryVariable("source")
                .label("Source")
                .datasource(DS)
                .query("label_values(backup_source_up, source)")
                .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
                .sort(VariableSort.ALPHABETICAL_ASC)
                .multi(True)
                .include_all(True)
                .all_value(".*")
            )
        )

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def row(self, title: str) -> None:
        """Start a row."""
        self.dashboard.with_row(Row(title).id(self._id()))

    def stat(
        self,
        title: str,
        expr: str,
        *,
        description: str,
        unit: str = "none",
        legend: str = "",
        mapping: ValueMap | None = None,
        thresholds: ThresholdsConfig | None = None,
        span: int = 4,
    ) -> None:
        """A single-value (or one value per series) panel."""
        panel = (
            stat.Panel()
            .id(self._id())
            .title(title)
            .description(description)
            .datasource(DS)
            .unit(unit)
            .span(span)
            .height(4)
            .graph_mode(BigValueGraphMode.NONE)
            .reduce_options(LAST)
            .color_mode(BigValueColorMode.BACKGROUND)
            .with_target(_query(expr, legend, "A").instant())
        )
        if mapping is not None:
            panel.mappings([mapping])
        panel.thresholds(thresholds or _thresholds((None, "blue")))
        self.dashboard.with_panel(panel)

    def series(
        self,
        title: str,
        targets: Sequence[tuple[str, str]],
        *,
        description: str,
        unit: str,
        span: int = 12,
        height: int = 8,
    ) -> None:
        """A time series panel; ``targets`` are ``(expr, legend)`` pairs."""
        panel = (
            timeseries.Panel()
            .id(self._id())
            .title(title)
            .description(description)
            .datasource(DS)
            .unit(unit)
            .span(span)
            .height(height)
        )
        for i, (expr, legend) in enumerate(targets):
            panel.with_target(_query(expr, legend, chr(ord("A") + i)))
        self.dashboard.with_panel(panel)

    def states(
        self,
        title: str,
        expr: str,
        legend: str,
        *,
        description: str,
        mapping: ValueMap,
        span: int = 12,
        height: int = 8,
    ) -> None:
        """A state timeline of a 0/1 metric."""
        self.dashboard.with_panel(
            statetimeline.Panel()
            .id(self._id())
            .title(title)
            .description(description)
            .datasource(DS)
            .span(span)
            .height(height)
            .mappings([mapping])
            .show_value(VisibilityMode.NEVER)
            .with_target(_query(expr, legend, "A"))
        )

    def bars(
        self,
        title: str,
        expr: str,
        legend: str,
        *,
        description: str,
        unit: str,
        thresholds: ThresholdsConfig,
        maximum: float | None = None,
        span: int = 12,
        height: int = 8,
    ) -> None:
        """A horizontal bar gauge, one bar per series (current value)."""
        panel = (
            bargauge.Panel()
            .id(self._id())
            .title(title)
            .description(description)
            .datasource(DS)
            .unit(unit)
            .span(span)
            .height(height)
            .min(0)
            .orientation(VizOrientation.HORIZONTAL)
            .display_mode(BarGaugeDisplayMode.GRADIENT)
            .reduce_options(LAST)
            .thresholds(thresholds)
            .with_target(_query(expr, legend, "A").instant())
        )
        if maximum is not None:
            panel.max(maximum)
        self.dashboard.with_panel(panel)

    def table(
        self,
        title: str,
        columns: Sequence[Col],
        *,
        description: str,
        key: Sequence[str],
        labels: Sequence[str] = (),
        sort_by: str | None = None,
        span: int = 24,
        height: int = 9,
    ) -> None:
        """A table joining instant queries into one row per ``key`` (label values).

        The key labels, then ``labels`` (descriptive ones some column adds with ``by``), are
        the first columns; the value columns follow. Rows are sorted by ``sort_by``,
        descending, so the worst comes first.
        """
        panel = (
            table.Panel()
            .id(self._id())
            .title(title)
            .description(description)
            .datasource(DS)
            .span(span)
            .height(height)
        )
        shown = [*key, *labels]
        renames = {label: _LABEL_HEADERS[label] for label in shown}
        order = {label: i for i, label in enumerate(shown)}
        hidden = dict.fromkeys(_TARGET_LABELS, True)
        for i, col in enumerate(columns):
            ref = chr(ord("A") + i)
            by = ", ".join(col.by or key)
            panel.with_target(
                _query(f"max by ({by}) ({col.expr})", "", ref)
                .instant()
                .format(PromQueryFormat.TABLE)
            )
            value = f"Value #{ref}" if len(columns) > 1 else "Value"
            if col.hidden:
                hidden[value] = True
                continue
            renames[value] = col.header
            order[value] = len(shown) + i
            props = []
            if col.unit:
                props.append(DynamicConfigValue(id_val="unit", value=col.unit))
            if col.mapping is not None:
                props.append(DynamicConfigValue(id_val="mappings", value=[col.mapping]))
            if col.colored:
                props.append(
                    DynamicConfigValue(
                        id_val="custom.cellOptions", value={"type": "color-background"}
                    )
                )
            if props:
                panel.override_by_name(col.header, props)
        panel.with_transformation(DataTransformerConfig(id_val="merge", options={}))
        panel.with_transformation(
            DataTransformerConfig(
                id_val="organize",
                options={"excludeByName": hidden, "indexByName": order, "renameByName": renames},
            )
        )
        if sort_by is not None:
            panel.sort_by([TableSortByFieldState().display_name(sort_by).desc(True)])
        self.dashboard.with_panel(panel)

    def build(self) -> dict[str, Any]:
        """The dashboard as JSON-ready data."""
        data: dict[str, Any] = json.loads(json.dumps(self.dashboard.build(), cls=JSONEncoder))
        return data


def _query(expr: str, legend: str, ref: str) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).ref_id(ref)
    if legend:
        query.legend_format(legend)
    return query


# --------------------------------------------------------------------------------------
# Dashboards
# --------------------------------------------------------------------------------------

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


def overview() -> dict[str, Any]:
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


def proxmox() -> dict[str, Any]:
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
        thresholds=_thresholds((None, "orange"), (1, "green"), (1.5, "red")),
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


def storage() -> dict[str, Any]:
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
        thresholds=_thresholds((None, "green"), (0.8, "orange"), (0.9, "red")),
        maximum=1,
    )
    b.bars(
        "Dataset quota used",
        f"{sel('backup_zfs_dataset_used_bytes')}"
        f" / on(source, dataset) ({sel('backup_zfs_dataset_quota_bytes')} > 0)",
        "{{dataset}} ({{source}})",
        description="Datasets with a quota: share of it in use (snapshots count).",
        unit="percentunit",
        thresholds=_thresholds((None, "green"), (0.8, "orange"), (0.9, "red")),
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
        thresholds=_thresholds((None, "green"), (86400, "orange"), (172800, "red")),
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
                by=("source", "device", "model", "serial"),
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
                f"min by (source, device) ({sel('backup_smart_selftest_last_passed')})",
                mapping=OK_BAD,
                colored=True,
            ),
        ],
        description="Self-test ages: alert at 2 days (short) and 63 days (long).",
        key=["source", "device"],
        labels=["model", "serial"],
        height=8,
    )
    b.series(
        "Disk temperature",
        [(sel("backup_smart_temperature_celsius"), "{{device}} ({{source}})")],
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


def offsite() -> dict[str, Any]:
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
                mapping=_mapping({0: ("no", "red"), 1: ("yes", "green")}),
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


def exporter() -> dict[str, Any]:
    """The exporter's own health: sources up, poll durations, API calls, errors."""
    b = Builder(
        uid="backup-exporter",
        title="Backups / Exporter",
        description="Is the exporter polling every source? Poll durations, API calls and errors.",
    )
    b.row("Source status")
    b.table(
        "Sources",
        [
            Col(
                "Up", sel("backup_source_up"), mapping=UP_DOWN, colored=True, by=("source", "kind")
            ),
            Col("Data age", age("backup_source_last_success_timestamp_seconds"), unit="s"),
            Col("Poll duration", sel("backup_source_poll_duration_seconds"), unit="s"),
            # The reason while down, "none" while up: the column is never empty.
            Col(
                "Error",
                f"{sel('backup_source_error_info')}"
                f" or on(source) label_replace({sel('backup_source_up')} == 1,"
                ' "reason", "none", "", "")',
                by=("source", "reason"),
                hidden=True,
            ),
        ],
        description="Data age is the time since the last successful poll.",
        key=["source"],
        labels=["kind", "reason"],
        sort_by="Data age",
        height=8,
    )
    b.states(
        "Source up",
        sel("backup_source_up"),
        "{{source}} ({{kind}})",
        description="Polls succeeding per source; TrueNAS may be powered off overnight.",
        mapping=UP_DOWN,
        span=24,
        height=6,
    )
    b.row("Polling")
    b.series(
        "Data age",
        [(age("backup_source_last_success_timestamp_seconds"), "{{source}}")],
        description="Time since each source's last successful poll (saw-tooth at its interval).",
        unit="s",
    )
    b.series(
        "Poll duration",
        [(sel("backup_source_poll_duration_seconds"), "{{source}}")],
        description="How long each source's last poll took; compare with its timeout.",
        unit="s",
    )
    b.series(
        "API requests",
        [
            (
                f"sum by (source, class) (rate({sel('backup_source_api_requests_total')}"
                "[$__rate_interval]))",
                "{{source}} {{class}}",
            )
        ],
        description="API calls per second by source and billing class (B2 class A/B/C).",
        unit="reqps",
    )
    b.series(
        "Sources down by reason",
        # "none" = 0 while every source is up, so the panel shows a flat line, not "no data".
        [
            (
                f"count by (reason) ({sel('backup_source_error_info')}) or on()"
                f' label_replace(0 * count({sel("backup_source_up")}), "reason", "none", "", "")',
                "{{reason}}",
            )
        ],
        description="Why sources fail: timeout, connection, auth, permission, tls, http, parse.",
        unit="none",
    )
    return b.build()


DASHBOARDS: dict[str, Callable[[], dict[str, Any]]] = {
    "overview.json": overview,
    "proxmox.json": proxmox,
    "storage.json": storage,
    "offsite.json": offsite,
    "exporter.json": exporter,
}


def render(data: dict[str, Any]) -> str:
    """Stable JSON text of a dashboard (sorted keys, two-space indent, final newline)."""
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def build_all() -> dict[str, dict[str, Any]]:
    """Every dashboard by file name."""
    return {name: make() for name, make in DASHBOARDS.items()}


def write(out_dir: Path = OUT_DIR) -> list[Path]:
    """Write every dashboard into ``out_dir``; return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in build_all().items():
        path = out_dir / name
        path.write_text(render(data), encoding="utf-8")
        paths.append(path)
    return paths


def _panels(data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in data.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


def all_queries() -> list[tuple[str, str, str]]:
    """Every panel query as ``(dashboard uid, panel title, expr)``, in dashboard order."""
    out = []
    for data in build_all().values():
        for panel in _panels(data):
            for target in panel.get("targets", []):
                out.append((data["uid"], panel["title"], target["expr"]))
    return out


def resolve_variables(expr: str, *, source: str = ".*", rate_interval: str = "2m") -> str:
    """Substitute the dashboard variables Grafana would (for running a query directly)."""
    expr = expr.replace("$__rate_interval", rate_interval)
    return re.sub(r"\$source\b|\$\{source\}", source, expr)


def main(argv: Sequence[str] | None = None) -> int:
    """Write the dashboards (default: next to this file)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output directory")
    args = parser.parse_args(argv)
    for path in write(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
