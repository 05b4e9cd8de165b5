"""Render asset judgments as ``backup_asset_*`` families (pure).

Unknown never reads as success: while an asset is ``unknown`` it has no
``backup_asset_compliant`` series (absent, not 0 or 1: neither is proven), and a location
whose evidence is unknown has no ``backup_asset_newest_copy_timestamp_seconds`` series
(0 means "known: no copy"). ``backup_asset_copies`` and ``backup_asset_offsite_copies``
always count only copies *proven* fresh, so they are lower bounds, never optimistic; rules
that alert on them exclude unknown assets (``unless on(asset) backup_asset_state{state=
"unknown"} == 1``). ``backup_asset_state`` is a state set: exactly one state is 1.

Sample exposition::

    # HELP backup_asset_info The asset's criticality (routes its alerts).
    # TYPE backup_asset_info gauge
    backup_asset_info{asset="immich",criticality="high"} 1.0
    # HELP backup_asset_rpo_seconds The asset's recovery point objective.
    # TYPE backup_asset_rpo_seconds gauge
    backup_asset_rpo_seconds{asset="immich"} 172800.0
    # HELP backup_asset_copies Locations holding a copy newer than now - rpo.
    # TYPE backup_asset_copies gauge
    backup_asset_copies{asset="immich"} 2.0
    # HELP backup_asset_offsite_copies Offsite locations holding a copy newer than now - rpo.
    # TYPE backup_asset_offsite_copies gauge
    backup_asset_offsite_copies{asset="immich"} 1.0
    # HELP backup_asset_newest_copy_timestamp_seconds Newest copy per location (0 = none).
    # TYPE backup_asset_newest_copy_timestamp_seconds gauge
    backup_asset_newest_copy_timestamp_seconds{asset="immich",location="snapshot-truenas"} 1.8e+09
    backup_asset_newest_copy_timestamp_seconds{asset="immich",location="offsite-b2"} 1.79998e+09
    backup_asset_newest_copy_timestamp_seconds{asset="immich",location="offsite-storj"} 1.7993e+09
    # HELP backup_asset_compliant 1 if 3-2-1 holds within the RPO (absent while unknown).
    # TYPE backup_asset_compliant gauge
    backup_asset_compliant{asset="immich"} 0.0
    # HELP backup_asset_state The asset's protection state (exactly one state is 1).
    # TYPE backup_asset_state gauge
    backup_asset_state{asset="immich",state="protected"} 0.0
    backup_asset_state{asset="immich",state="attention"} 1.0
    backup_asset_state{asset="immich",state="unprotected"} 0.0
    backup_asset_state{asset="immich",state="unknown"} 0.0
    # HELP backup_asset_reason_info Why the asset is in its state (absent when protected).
    # TYPE backup_asset_reason_info gauge
    backup_asset_reason_info{asset="immich",reason="storj copy 8d old (rpo 2d)"} 1.0
    # HELP backup_asset_last_known_timestamp_seconds Last time the asset's state was known.
    # TYPE backup_asset_last_known_timestamp_seconds gauge
    backup_asset_last_known_timestamp_seconds{asset="immich"} 1.8e+09
    # HELP backup_asset_runs_expected_total Runs the schedules of the jobs feeding it expected.
    # TYPE backup_asset_runs_expected_total counter
    backup_asset_runs_expected_total{asset="immich"} 30.0
    # HELP backup_asset_runs_met_total Of those, runs that finished by their deadline.
    # TYPE backup_asset_runs_met_total counter
    backup_asset_runs_met_total{asset="immich"} 29.0
    # HELP backup_asset_sla_target_ratio The SLA target: runs met / runs expected.
    # TYPE backup_asset_sla_target_ratio gauge
    backup_asset_sla_target_ratio{asset="immich"} 0.95
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.assets.model import ASSET_STATES, AssetStatus


def render_assets(statuses: Iterable[AssetStatus]) -> Iterator[Metric]:
    """Render the asset judgments (see the module docstring for the rules and a sample)."""
    asset = ["asset"]
    info = GaugeMetricFamily(
        "backup_asset_info",
        "The asset's criticality (routes its alerts).",
        labels=[*asset, "criticality"],
    )
    rpo = GaugeMetricFamily(
        "backup_asset_rpo_seconds", "The asset's recovery point objective.", labels=asset
    )
    copies = GaugeMetricFamily(
        "backup_asset_copies",
        "Locations holding a copy newer than now - rpo (proven fresh only).",
        labels=asset,
    )
    offsite = GaugeMetricFamily(
        "backup_asset_offsite_copies",
        "Offsite locations holding a copy newer than now - rpo (proven fresh only).",
        labels=asset,
    )
    newest = GaugeMetricFamily(
        "backup_asset_newest_copy_timestamp_seconds",
        "Newest copy per location (0 = none; absent while its evidence is unknown).",
        labels=[*asset, "location"],
    )
    compliant = GaugeMetricFamily(
        "backup_asset_compliant",
        "1 if 3-2-1 holds within the RPO: >= 3 fresh copies, >= 2 media, >= 1 offsite "
        "(absent while the asset is unknown).",
        labels=asset,
    )
    state = GaugeMetricFamily(
        "backup_asset_state",
        "The asset's protection state (exactly one state is 1).",
        labels=[*asset, "state"],
    )
    reason = GaugeMetricFamily(
        "backup_asset_reason_info",
        "Why the asset is in its state (absent when protected).",
        labels=[*asset, "reason"],
    )
    known = GaugeMetricFamily(
        "backup_asset_last_known_timestamp_seconds",
        "Last time the asset's state was known (not unknown); while never known since the "
        "exporter started, when it was first judged.",
        labels=asset,
    )
    expected = CounterMetricFamily(
        "backup_asset_runs_expected",
        "Runs the schedules of the jobs feeding the asset's locations expected (summed).",
        labels=asset,
    )
    met = CounterMetricFamily(
        "backup_asset_runs_met",
        "Of those, runs that finished by their deadline (summed over the same jobs).",
        labels=asset,
    )
    target = GaugeMetricFamily(
        "backup_asset_sla_target_ratio",
        "The asset's SLA target: runs met / runs expected below it alerts.",
        labels=asset,
    )
    for st in statuses:
        values = [st.name]
        info.add_metric([*values, st.criticality], 1.0)
        rpo.add_metric(values, st.rpo)
        copies.add_metric(values, float(st.copies))
        offsite.add_metric(values, float(st.offsite_copies))
        for loc in st.locations:
            if loc.known:
                newest.add_metric([*values, loc.name], loc.newest or 0.0)
        if st.state != "unknown":
            compliant.add_metric(values, float(st.compliant))
        for name in ASSET_STATES:
            state.add_metric([*values, name], float(st.state == name))
        if st.reason:
            reason.add_metric([*values, st.reason], 1.0)
        if st.last_known is not None:
            known.add_metric(values, st.last_known)
        expected.add_metric(values, float(st.runs_expected))
        met.add_metric(values, float(st.runs_met))
        target.add_metric(values, st.sla_target)
    yield from (info, rpo, copies, offsite, newest, compliant, state, reason, known)
    yield from (expected, met, target)
