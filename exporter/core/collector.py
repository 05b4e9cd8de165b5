"""The scrape-time bridge: renders the pollers' snapshots, never doing I/O.

Sample exposition::

    # HELP backup_exporter_build_info Version of backup_exporter.
    # TYPE backup_exporter_build_info gauge
    backup_exporter_build_info{version="0.1.0"} 1.0
    # HELP backup_source_up 1 if the last poll of the source succeeded (polled in background).
    # TYPE backup_source_up gauge
    backup_source_up{kind="proxmox",source="pve1"} 1.0
    # HELP backup_source_error_info Why the source is down (present only while it is).
    # TYPE backup_source_error_info gauge
    backup_source_error_info{kind="truenas",reason="timeout",source="nas"} 1.0
    # HELP backup_source_api_requests_total API calls made to the source.
    # TYPE backup_source_api_requests_total counter
    backup_source_api_requests_total{class="",kind="proxmox",source="pve1"} 42.0
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from exporter import __version__
from exporter.core.clock import Clock
from exporter.core.config import JobConfig
from exporter.core.poller import Poller
from exporter.schedule.expressions import parse_schedule
from exporter.schedule.jobs import Evidence, JobSpec, JobStatus, evaluate, render_jobs

log = logging.getLogger(__name__)


def config_job_specs(jobs: Mapping[str, JobConfig]) -> list[JobSpec]:
    """Build the job specs of the ``jobs:`` map (schedules were validated at load)."""
    return [
        JobSpec(
            name=job.name,
            source=job.evidence.get("source", ""),
            schedule=parse_schedule(job.schedule, job.timezone),
            grace=job.grace,
            start_grace=job.start_grace,
        )
        for job in jobs.values()
    ]


CACHED_NOTE = " (Cached: sources are polled in the background, see backup_source_*.)"


def _noted(families: Iterable[Metric]) -> Iterator[Metric]:
    """Say in HELP that values come from the last poll, as the exporter guide asks."""
    for family in families:
        if not family.documentation.endswith(CACHED_NOTE):
            family.documentation += CACHED_NOTE
        yield family


class SnapshotCollector:
    """A prometheus_client collector over the pollers' latest snapshots."""

    def __init__(
        self,
        pollers: Sequence[Poller],
        *,
        clock: Clock,
        jobs: Mapping[str, JobConfig] | None = None,
    ) -> None:
        self.pollers = pollers
        self.clock = clock
        self.job_configs = dict(jobs or {})
        self._job_specs = config_job_specs(self.job_configs)
        self._by_name = {p.name: p for p in pollers}

    def describe(self) -> Iterable[Metric]:
        """Describe nothing, so registering never triggers a collect."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Yield every family, merging same-named families from sources of one kind."""
        merged: dict[str, Metric] = {}
        for family in self._families():
            seen = merged.get(family.name)
            if seen is None:
                merged[family.name] = family
            else:
                seen.samples.extend(family.samples)
        yield from merged.values()

    def _families(self) -> Iterator[Metric]:
        yield from self._health()
        for poller in self.pollers:
            snapshot = poller.state.snapshot
            if snapshot is None:
                continue
            try:
                families = list(poller.source.render(snapshot))
            except Exception:
                # A bug in one renderer must not take the whole scrape down, nor leave half
                # of that source's families in it.
                log.exception("source=%s render failed", poller.name)
                continue
            yield from _noted(families)
        yield from _noted(render_jobs(self.job_statuses()))

    def job_statuses(self) -> list[JobStatus]:
        """Evaluate every job (config and discovered) at the clock's now."""
        now = self.clock.time()
        statuses: list[JobStatus] = []
        for poller in self.pollers:
            snapshot = poller.state.snapshot
            if snapshot is None:
                continue
            try:
                statuses.extend(evaluate(s, e, now) for s, e in poller.source.jobs(snapshot))
            except Exception:
                log.exception("source=%s job discovery failed", poller.name)
        for spec in self._job_specs:
            evidence = self._config_evidence(spec)
            statuses.append(evaluate(spec, evidence, now))
        return statuses

    def _config_evidence(self, spec: JobSpec) -> Evidence:
        poller = self._by_name.get(spec.source)
        if poller is None or poller.state.snapshot is None:
            return Evidence()
        selector = self.job_configs[spec.name].evidence
        try:
            found = poller.source.evidence(poller.state.snapshot, selector)
        except Exception:
            log.exception("source=%s evidence lookup failed", poller.name)
            found = None
        return found or Evidence()

    def _health(self) -> Iterator[Metric]:
        build = GaugeMetricFamily(
            "backup_exporter_build_info", "Version of backup_exporter.", labels=["version"]
        )
        build.add_metric([__version__], 1)
        yield build
        labels = ["source", "kind"]
        up = GaugeMetricFamily(
            "backup_source_up",
            "1 if the last poll of the source succeeded (polled in background).",
            labels=labels,
        )
        last = GaugeMetricFamily(
            "backup_source_last_success_timestamp_seconds",
            "When the source was last polled successfully (0 = never).",
            labels=labels,
        )
        duration = GaugeMetricFamily(
            "backup_source_poll_duration_seconds",
            "How long the last poll of the source took.",
            labels=labels,
        )
        error = GaugeMetricFamily(
            "backup_source_error_info",
            "Why the source is down (present only while it is).",
            labels=[*labels, "reason"],
        )
        requests = CounterMetricFamily(
            "backup_source_api_requests",
            "API calls made to the source (class: the provider's billing class, if any).",
            labels=[*labels, "class"],
        )
        for poller in self.pollers:
            st = poller.state
            values = [poller.name, poller.source.kind]
            up.add_metric(values, float(st.up))
            last.add_metric(values, st.last_success or 0.0)
            duration.add_metric(values, st.last_duration)
            if st.reason is not None:
                error.add_metric([*values, st.reason], 1)
            counts = poller.requests or {"": 0}
            for api_class, count in sorted(counts.items()):
                requests.add_metric([*values, api_class], count)
        yield from (up, last, duration, error, requests)
