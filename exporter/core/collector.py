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
    # HELP backup_job_conflicts Jobs dropped now because another job has the same labels.
    # TYPE backup_job_conflicts gauge
    backup_job_conflicts{source="hc"} 0.0

Job name collisions. A job's series are identified by ``(backup_job, source, vmid)``; two jobs
with the same labels would make duplicate series. Config jobs named in a discovering source's
scheme are refused at load time (``exporter.core.config._job_name_clashes``); whatever can
still collide at run time (two tasks a system names alike, a discovered name no scheme
predicted) is resolved here: the first job keeps the labels (discovered jobs come before the
``jobs:`` entries), each later one is dropped, logged once per conflict (again only if it
ends and comes back) and counted in ``backup_job_conflicts{source}``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from exporter import __version__
from exporter.assets.model import VerificationStatus
from exporter.assets.records import (
    VerificationConfig,
    render_verification,
)
from exporter.assets.records import (
    verification_statuses as judge_verifications,
)
from exporter.core.clock import Clock
from exporter.core.config import JobConfig
from exporter.core.poller import Poller
from exporter.core.state import StateKeeper
from exporter.schedule.expressions import parse_schedule
from exporter.schedule.jobs import (
    Evidence,
    JobSpec,
    JobStatus,
    evaluate,
    first_seen_key,
    render_jobs,
)

log = logging.getLogger(__name__)

JobLabels = tuple[str, str, str]
"""``(backup_job, source, vmid)``: what identifies a job's series."""


def job_labels(spec: JobSpec) -> JobLabels:
    """Return the labels that identify ``spec``'s series."""
    return spec.name, spec.source, spec.labels.get("vmid", "")


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


def _copy(family: Metric) -> Metric:
    """Copy a family shallowly, so merging may extend its samples without touching the original."""
    fresh = Metric(family.name, family.documentation, family.type, family.unit)
    fresh.samples = list(family.samples)
    return fresh


def _noted(families: Iterable[Metric]) -> Iterator[Metric]:
    """Say in HELP that values come from the last poll, as the exporter guide asks."""
    for family in families:
        if not family.documentation.endswith(CACHED_NOTE):
            family.documentation += CACHED_NOTE
        yield family


def _without_duplicates(
    candidates: Iterable[tuple[JobSpec, Evidence, bool, str]],
) -> tuple[list[tuple[JobSpec, Evidence, bool, str]], list[tuple[JobSpec, str]]]:
    """Keep the first job with each set of labels; return the kept and the dropped ones."""
    seen: set[JobLabels] = set()
    kept: list[tuple[JobSpec, Evidence, bool, str]] = []
    dropped: list[tuple[JobSpec, str]] = []
    for candidate in candidates:
        labels = job_labels(candidate[0])
        if labels in seen:
            dropped.append((candidate[0], candidate[3]))
        else:
            seen.add(labels)
            kept.append(candidate)
    return kept, dropped


class SnapshotCollector:
    """A prometheus_client collector over the pollers' latest snapshots."""

    def __init__(
        self,
        pollers: Sequence[Poller],
        *,
        clock: Clock,
        jobs: Mapping[str, JobConfig] | None = None,
        keeper: StateKeeper | None = None,
        asset_names: Iterable[str] = (),
        verification: VerificationConfig | None = None,
    ) -> None:
        self.pollers = pollers
        self.asset_names = tuple(asset_names)
        self.verification = verification or VerificationConfig()
        self.clock = clock
        self.job_configs = dict(jobs or {})
        self._job_specs = config_job_specs(self.job_configs)
        self._by_name = {p.name: p for p in pollers}
        self.keeper = keeper or StateKeeper(None)
        # Sources whose jobs were first seen while the state database was new: they are judged
        # on all their history, as an exporter without a memory would (first start ever).
        self._bootstrap = (
            {p.name for p in pollers}
            if self.keeper.enabled and not self.keeper.first_seen
            else set()
        )
        for poller in pollers:
            poller.on_success = self.persist
        # Job conflicts of the last evaluation (source -> count) and the ones already logged.
        self.conflicts: dict[str, int] = {}
        self._logged_conflicts: set[tuple[JobLabels, str]] = set()

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
        yield from self.keeper.render()
        for poller in self.pollers:
            snapshot = poller.state.snapshot
            if snapshot is None:
                # Not polled since the restart: serve what the last good poll rendered.
                stored = self.keeper.results.get(poller.name)
                if stored is not None:
                    yield from _noted(_copy(f) for f in stored.families)
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
        yield from _noted(render_verification(self.verification_statuses(), self.verification))
        conflicts = GaugeMetricFamily(
            "backup_job_conflicts",
            "Jobs dropped now because another job has the same labels "
            "(backup_job, source, vmid); see the log.",
            labels=["source"],
        )
        for source in sorted({p.name for p in self.pollers} | set(self.conflicts)):
            conflicts.add_metric([source], float(self.conflicts.get(source, 0)))
        yield from _noted([conflicts])

    def verification_statuses(self) -> list[VerificationStatus]:
        """Judge each asset's restore tests, DR drills and docs reviews at the clock's now.

        From the records the keeper last read (after a poll): no I/O. A never-verified
        activity is due one interval after the asset was first seen.
        """
        now = self.clock.time()
        return judge_verifications(
            self.asset_names,
            self.keeper.verifications,
            self.verification,
            lambda asset: self.keeper.first_seen_at(f"verification\x1f{asset}", now),
            now,
        )

    def _discovered(self, poller: Poller) -> list[tuple[JobSpec, Evidence]] | None:
        snapshot = poller.state.snapshot
        if snapshot is None:
            stored = self.keeper.results.get(poller.name)
            return None if stored is None else list(stored.jobs)
        try:
            return list(poller.source.jobs(snapshot))
        except Exception:
            log.exception("source=%s job discovery failed", poller.name)
            return []

    def _evaluate(self, spec: JobSpec, evidence: Evidence, now: float, *, known: bool) -> JobStatus:
        first_seen = None
        if self.keeper.enabled:
            key = first_seen_key(spec)
            if spec.source in self._bootstrap and key not in self.keeper.first_seen:
                first_seen = self.keeper.first_seen_at(key, 0.0)
            else:
                first_seen = self.keeper.first_seen_at(key, now)
            first_seen = first_seen or None  # 0: judged on all history
        return evaluate(spec, evidence, now, first_seen=first_seen, known=known)

    def job_statuses(self) -> list[JobStatus]:
        """Evaluate every job (config and discovered) at the clock's now, without duplicates."""
        now = self.clock.time()
        candidates: list[tuple[JobSpec, Evidence, bool, str]] = []
        for poller in self.pollers:
            for spec, evidence in self._discovered(poller) or ():
                candidates.append((spec, evidence, True, "discovered"))
        for spec in self._job_specs:
            evidence, known = self._config_evidence(spec)
            candidates.append((spec, evidence, known, "config"))
        kept, dropped = _without_duplicates(candidates)
        self._note_conflicts(dropped)
        return [self._with_sla(self._evaluate(s, ev, now, known=k), now) for s, ev, k, _ in kept]

    def _with_sla(self, status: JobStatus, now: float) -> JobStatus:
        expected, met = self.keeper.sla(status.spec, status.first_seen, now)
        return dataclasses.replace(status, runs_expected=expected, runs_met=met)

    def _note_conflicts(self, dropped: list[tuple[JobSpec, str]]) -> None:
        counts: dict[str, int] = {}
        current: set[tuple[JobLabels, str]] = set()
        for spec, origin in dropped:
            labels = job_labels(spec)
            counts[spec.source] = counts.get(spec.source, 0) + 1
            current.add((labels, origin))
            if (labels, origin) not in self._logged_conflicts:
                log.warning(
                    "job conflict: %s job %r of source %r (vmid %r) has the labels of another "
                    "job; it is dropped (rename it in jobs:, or tell the two apart upstream)",
                    origin,
                    spec.name,
                    spec.source,
                    labels[2],
                )
        self._logged_conflicts = current
        self.conflicts = counts

    def _config_evidence(self, spec: JobSpec) -> tuple[Evidence, bool]:
        """Return the evidence of a ``jobs:`` entry and whether its source was ever read."""
        poller = self._by_name.get(spec.source)
        if poller is None:
            return Evidence(), False
        if poller.state.snapshot is None:
            stored = self.keeper.results.get(poller.name)
            if stored is None:
                return Evidence(), False
            return stored.config_evidence.get(spec.name, Evidence()), True
        selector = self.job_configs[spec.name].evidence
        try:
            found = poller.source.evidence(poller.state.snapshot, selector)
        except Exception:
            log.exception("source=%s evidence lookup failed", poller.name)
            found = None
        return found or Evidence(), True

    def persist(self, poller: Poller) -> None:
        """Hand a successful poll's result to the state keeper (called by the poller)."""
        if not self.keeper.enabled or poller.state.snapshot is None:
            return
        snapshot = poller.state.snapshot
        now = self.clock.time()
        try:
            families = list(poller.source.render(snapshot))
        except Exception:
            log.exception("source=%s render failed", poller.name)
            return
        discovered = self._discovered(poller) or []
        config = {
            spec.name: self._config_evidence(spec)[0]
            for spec in self._job_specs
            if spec.source == poller.name
        }
        specs = {spec.name: spec for spec in self._job_specs}
        candidates = [(s, e, True, "discovered") for s, e in discovered]
        candidates += [(specs[name], ev, True, "config") for name, ev in config.items()]
        # Runs are kept per job labels: a dropped duplicate must not add to the other's history.
        kept, _ = _without_duplicates(candidates)
        statuses = [self._evaluate(s, e, now, known=True) for s, e, _, _ in kept]
        for status in statuses:
            self.keeper.sla(status.spec, status.first_seen, now)  # its first seen, if new
        self._bootstrap.discard(poller.name)
        self.keeper.record(
            poller.name,
            taken_at=poller.state.last_success or now,
            families=families,
            discovered=discovered,
            config_evidence=config,
            statuses=statuses,
            memory=poller.memory,
        )

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
        offline = GaugeMetricFamily(
            "backup_source_expected_offline",
            "1 inside the source's declared offline window, 0 outside (only with windows).",
            labels=labels,
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
            if not st.polled:
                error.add_metric([*values, "starting"], 1)
            elif st.reason is not None:
                error.add_metric([*values, st.reason], 1)
            if poller.offline:
                offline.add_metric(values, float(poller.expected_offline()))
            counts = poller.requests or {"": 0}
            for api_class, count in sorted(counts.items()):
                requests.add_metric([*values, api_class], count)
        yield from (up, last, duration, error, offline, requests)
