"""Shared panel helpers of the dashboards: data source, selectors, value maps, thresholds, units.

Conventions (monitoring-mixin style): every dashboard has a ``datasource`` variable and every
panel uses it (``${datasource}``, never a fixed uid, no ``__inputs``); a ``source`` variable
filters every query (``source=~"$source"``); uids are fixed (``backup-overview``, …); tags
``["backups"]``; panel ids are set explicitly so provisioning keeps them stable.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
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
    "type": "-d type",
    "disk": "Disk",
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
    "asset": "Asset",
}


def sel(metric: str, matchers: str = "") -> str:
    """A selector for ``metric`` filtered by the ``source`` variable (plus more matchers)."""
    extra = f", {matchers}" if matchers else ""
    return f"{metric}{{{SOURCE}{extra}}}"


def age(metric: str, matchers: str = "") -> str:
    """Seconds since a ``*_timestamp_seconds`` metric (0 = never is left out)."""
    return f"time() - ({sel(metric, matchers)} > 0)"


def value_map(values: dict[int, tuple[str, str]]) -> ValueMap:
    """A value mapping: number -> (text, color), in ascending order."""
    return ValueMap(
        options={
            str(k): ValueMappingResult(text=t, color=c, index=i)
            for i, (k, (t, c)) in enumerate(sorted(values.items()))
        }
    )


UP_DOWN = value_map({0: ("down", "red"), 1: ("up", "green")})
YES_NO_BAD = value_map({0: ("no", "green"), 1: ("yes", "red")})
OK_BAD = value_map({0: ("failing", "red"), 1: ("ok", "green")})
SLA_DAY = value_map({0: ("nothing due", "gray"), 1: ("met", "green"), 2: ("missed", "red")})
JOB_STATUS = value_map(
    {0: ("ok", "green"), 1: ("running", "blue"), 2: ("failed", "orange"), 3: ("overdue", "red")}
)


def threshold_steps(*steps: tuple[float | None, str]) -> ThresholdsConfig:
    """Absolute thresholds: ``(from value, color)`` steps, the first from ``None``."""
    return (
        ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=v, color=c) for v, c in steps])
    )


GOOD_AT_ZERO = threshold_steps((None, "green"), (1, "red"))
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
        panel.thresholds(thresholds or threshold_steps((None, "blue")))
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
        interval: str = "",
    ) -> None:
        """A state timeline of a 0/1 metric (``interval``: the step, e.g. ``1d`` per cell)."""
        query = _query(expr, legend, "A")
        if interval:
            query.interval(interval)
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
            .with_target(query)
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
