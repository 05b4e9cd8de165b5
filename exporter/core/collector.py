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
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from exporter import __version__
from exporter.assets.config import AssetConfig
from exporter.assets.model import AssetStatus, VerificationStatus
from exporter.assets.observe import judge_now, stored_locations
from exporter.assets.records import (
    VerificationConfig,
    render_verification,
)
from exporter.assets.records import (
    verification_statuses as judge_verifications,
)
from exporter.assets.render import render_assets
from exporter.core.clock import Clock
from exporter.core.config import JobConfig
from exporter.core.exposition import Exposition, Part, Rendered, merge
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
from exporter.schedule.windows import next_edge

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
            max_duration=job.max_duration,
        )
        for job in jobs.values()
    ]


CACHED_NOTE = " (Cached: sources are polled in the background, see backup_source_*.)"


#: First-seen keys that are not jobs' (verification due dates, SLA anchors): a database holding
#: only those is still new for the jobs.
NOT_JOB_KEYS = ("verification\x1f", "sla\x1f")


def _is_job_key(key: str) -> bool:
    return not key.startswith(NOT_JOB_KEYS)


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
        assets: Mapping[str, AssetConfig] | None = None,
        verification: VerificationConfig | None = None,
    ) -> None:
        self.pollers = pollers
        self.assets = dict(assets or {})
        self.asset_names = tuple(self.assets)
        self.verification = verification or VerificationConfig()
        # Asset name -> the last instant it was judged other than unknown (see asset_statuses).
        self._asset_known: dict[str, float] = {}
        # When the last asset judgment changes without new evidence (None: never).
        self.asset_next_change: float | None = None
        self._assets_kept: list[AssetStatus] = []  # the asset part's last judgment
        self.clock = clock
        self.job_configs = dict(jobs or {})
        self._job_specs = config_job_specs(self.job_configs)
        self._by_name = {p.name: p for p in pollers}
        self.keeper = keeper or StateKeeper(None)
        # Sources whose jobs were first seen while the state database was new: they are judged
        # on all their history, as an exporter without a memory would (first start ever).
        self._bootstrap = (
            {p.name for p in pollers}
            if self.keeper.enabled and not any(map(_is_job_key, self.keeper.first_seen))
            else set()
        )
        for poller in pollers:
            poller.on_success = self._on_success
        # Job conflicts of the last evaluation (source -> count) and the ones already logged.
        self.conflicts: dict[str, int] = {}
        self._logged_conflicts: set[tuple[JobLabels, str]] = set()
        # Per source: the snapshot last rendered / asked for its jobs, and what came out.
        self._renders: dict[str, tuple[Any, list[Metric] | None]] = {}
        self._jobs_of: dict[str, tuple[Any, list[tuple[JobSpec, Evidence]]]] = {}
        self._statuses: list[JobStatus] = []
        self._job_memo: dict[JobLabels, tuple[tuple[object, ...], JobStatus, float]] = {}
        self._jobs_rendered: tuple[dict[str, int], list[Metric]] | None = None
        # The exposition, in parts rebuilt only when they can change (exporter/core/exposition).
        self.exposition = Exposition(clock)
        self.exposition.add(Part("health", self._health_part, key=self._states))
        self.exposition.add(Part("state", lambda _now: self.keeper.render(), key=self._keeper_key))
        for poller in pollers:
            self.exposition.add(
                Part(f"source:{poller.name}", self._source_part(poller), key=self._key_of(poller))
            )
        self.exposition.add(Part("jobs", self._jobs_part, key=self._evidence_key))
        self.exposition.add(
            Part("verification", self._verification_part, key=self._verification_key)
        )
        if self.assets:
            # After "jobs": assets are judged on the job statuses that part just kept.
            self.exposition.add(Part("assets", self._assets_part, key=self._assets_key))

    def describe(self) -> Iterable[Metric]:
        """Describe nothing, so registering never triggers a collect."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Yield every family, merging same-named families from sources of one kind (cached)."""
        yield from self.exposition.families()

    def fresh(self, now: float | None = None) -> list[Metric]:
        """Render every part anew at ``now``, bypassing the cache (what the cache must equal)."""
        at = self.clock.time() if now is None else now
        rendered = []
        for part in self.exposition.parts:
            out = self._jobs_part(at, cached=False) if part.name == "jobs" else part.build(at)
            rendered.append(out.families if isinstance(out, Rendered) else list(out))
        return merge(rendered)

    # ------------------------------------------------------------ the parts and their keys

    def _states(self) -> tuple[object, ...]:
        return tuple(p.state for p in self.pollers)

    def _keeper_key(self) -> tuple[object, ...]:
        return (self.keeper.path, self.keeper.error)

    def _key_of(self, poller: Poller) -> Any:
        def key() -> tuple[object, ...]:
            snapshot = poller.state.snapshot
            if snapshot is not None:
                return (snapshot,)
            return (None, self.keeper.results.get(poller.name))

        return key

    def _evidence_key(self) -> tuple[object, ...]:
        return tuple(k for p in self.pollers for k in self._key_of(p)())

    def _health_part(self, now: float) -> Rendered:
        edges = (next_edge(p.offline, now) for p in self.pollers if p.offline)
        return Rendered(list(self._health()), min(edges, default=math.inf))

    def _source_part(self, poller: Poller) -> Any:
        def build(_now: float) -> list[Metric]:
            snapshot = poller.state.snapshot
            if snapshot is None:
                # Not polled since the restart: serve what the last good poll rendered.
                stored = self.keeper.results.get(poller.name)
                if stored is None:
                    return []
                return list(_noted(_copy(f) for f in stored.families))
            # A bug in one renderer must not take the whole scrape down, nor leave half of
            # that source's families in it.
            families = self._rendered(poller, snapshot)
            return [] if families is None else list(_noted(_copy(f) for f in families))

        return build

    def _jobs_part(self, now: float, *, cached: bool = True) -> Rendered:
        statuses = self._statuses_at(now, cached=cached)
        valid = min((m[2] for m in self._job_memo.values()), default=math.inf)
        if cached:
            same = len(statuses) == len(self._statuses) and all(
                a is b for a, b in zip(statuses, self._statuses, strict=True)
            )
            self._statuses = statuses
            if same and self._jobs_rendered and self._jobs_rendered[0] == self.conflicts:
                # No job changed (a poll brought the same evidence): the same families, so
                # the exposition keeps their bytes.
                return Rendered(self._jobs_rendered[1], valid)
        families = list(_noted(render_jobs(statuses)))
        conflicts = GaugeMetricFamily(
            "backup_job_conflicts",
            "Jobs dropped now because another job has the same labels "
            "(backup_job, source, vmid); see the log.",
            labels=["source"],
        )
        for source in sorted({p.name for p in self.pollers} | set(self.conflicts)):
            conflicts.add_metric([source], float(self.conflicts.get(source, 0)))
        families += _noted([conflicts])
        if not cached:
            return Rendered(families)
        self._jobs_rendered = (dict(self.conflicts), families)
        return Rendered(families, valid)

    def _assets_key(self) -> tuple[object, ...]:
        return (
            *self._states(), *self._statuses, *self._evidence_key(), self.keeper.verifications
        )  # fmt: skip

    def _verification_key(self) -> tuple[object, ...]:
        return (self.keeper.verifications,)

    def _verification_part(self, _now: float) -> list[Metric]:
        # The records change only when the keeper reads new ones (after a poll).
        return list(_noted(render_verification(self.verification_statuses(), self.verification)))

    def _assets_part(self, now: float) -> Rendered:
        statuses = self._assets_kept = self.asset_statuses(self._statuses, now)
        valid = self.asset_next_change if self.asset_next_change is not None else math.inf
        return Rendered(list(_noted(render_assets(statuses))), valid)

    def _rendered(self, poller: Poller, snapshot: Any) -> list[Metric] | None:
        """``poller.source.render(snapshot)``, once per snapshot (None: the renderer failed)."""
        memo = self._renders.get(poller.name)
        if memo is not None and memo[0] is snapshot:
            return memo[1]
        families: list[Metric] | None
        try:
            families = list(poller.source.render(snapshot))
        except Exception:
            log.exception("source=%s render failed", poller.name)
            families = None
        self._renders[poller.name] = (snapshot, families)
        return families

    def _on_success(self, poller: Poller) -> None:
        """After a good poll: persist it, and serialize again what scrapes asked for."""
        self.persist(poller)
        self.exposition.warm()

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
        memo = self._jobs_of.get(poller.name)
        if memo is not None and memo[0] is snapshot:
            return memo[1]
        try:
            found = list(poller.source.jobs(snapshot))
        except Exception:
            log.exception("source=%s job discovery failed", poller.name)
            found = []
        self._jobs_of[poller.name] = (snapshot, found)
        return found

    def _first_seen(self, spec: JobSpec, now: float) -> float | None:
        if not self.keeper.enabled:
            return None
        key = first_seen_key(spec)
        if spec.source in self._bootstrap and key not in self.keeper.first_seen:
            first_seen = self.keeper.first_seen_at(key, 0.0)
        else:
            first_seen = self.keeper.first_seen_at(key, now)
        return first_seen or None  # 0: judged on all history

    def _evaluate(self, spec: JobSpec, evidence: Evidence, now: float, *, known: bool) -> JobStatus:
        first_seen = self._first_seen(spec, now)
        return evaluate(spec, evidence, now, first_seen=first_seen, known=known)

    def job_statuses(self) -> list[JobStatus]:
        """Every job's status now (config and discovered, without duplicates; cached)."""
        self.exposition.refresh()
        return list(self._statuses)

    def _statuses_at(self, now: float, *, cached: bool = True) -> list[JobStatus]:
        """Evaluate every job (config and discovered) at ``now``, without duplicates."""
        candidates: list[tuple[JobSpec, Evidence, bool, str]] = []
        for poller in self.pollers:
            for spec, evidence in self._discovered(poller) or ():
                candidates.append((spec, evidence, True, "discovered"))
        for spec in self._job_specs:
            evidence, known = self._config_evidence(spec)
            candidates.append((spec, evidence, known, "config"))
        kept, dropped = _without_duplicates(candidates)
        self._note_conflicts(dropped)
        if not cached:
            return [
                self._with_sla(self._evaluate(s, ev, now, known=k), now) for s, ev, k, _ in kept
            ]
        # A job is evaluated again only when what it is judged on changed, or once its own
        # next change (JobStatus.next_change) is reached: a deadline costs one evaluation.
        memo: dict[JobLabels, tuple[tuple[object, ...], JobStatus, float]] = {}
        statuses = []
        for spec, ev, known, _ in kept:
            labels = job_labels(spec)
            first_seen = self._first_seen(spec, now)
            # The SLA counters also move when a poll lands (runs are counted up to it).
            polled = (
                self._by_name[spec.source].state.last_success
                if spec.source in self._by_name
                else None
            )
            key = (
                first_seen_key(spec), tuple(sorted(spec.labels.items())), ev, known, first_seen,
                polled,
            )  # fmt: skip
            seen = self._job_memo.get(labels)
            if seen is not None and seen[0] == key and now < seen[2]:
                status, until = seen[1], seen[2]
            else:
                status = evaluate(spec, ev, now, first_seen=first_seen, known=known)
                status = self._with_sla(status, now)
                until = status.next_change(now)
            memo[labels] = (key, status, until)
            statuses.append(status)
        self._job_memo = memo
        return statuses

    def _with_sla(self, status: JobStatus, now: float) -> JobStatus:
        expected, met = self.keeper.sla(status.spec, status.first_seen, now)
        return dataclasses.replace(status, runs_expected=expected, runs_met=met)

    def verifications_by_asset(self) -> dict[str, list[VerificationStatus]]:
        """Group :meth:`verification_statuses` by asset (what the asset engine takes)."""
        out: dict[str, list[VerificationStatus]] = {}
        for status in self.verification_statuses():
            out.setdefault(status.asset, []).append(status)
        return out

    def asset_statuses(
        self, job_statuses: Sequence[JobStatus] | None = None, now: float | None = None
    ) -> list[AssetStatus]:
        """Judge every asset at ``now`` (default the clock's; ``exporter.assets.engine``).

        Without arguments it returns what the exposition's asset part judged (refreshed when
        it can have changed), so the status page does not judge the assets a second time.
        """
        if not self.assets:
            return []
        if job_statuses is None and now is None:
            self.exposition.refresh()
            return list(self._assets_kept)
        now = self.clock.time() if now is None else now
        jobs = self.job_statuses() if job_statuses is None else job_statuses
        statuses, self.asset_next_change = judge_now(
            self.assets,
            pollers=self.pollers,
            job_statuses=jobs,
            job_evidence={name: job.evidence for name, job in self.job_configs.items()},
            verifications=self.verifications_by_asset(),
            stored={name: r.config_evidence for name, r in self.keeper.results.items()},
            now=now,
        )
        out = []
        for status in statuses:
            if status.state != "unknown" or status.name not in self._asset_known:
                self._asset_known[status.name] = now
            out.append(replace(status, last_known=self._asset_known[status.name]))
        return out

    def job_history(self) -> dict[str, list[tuple[float, bool]]]:
        """Per job id (``source/name/vmid``): ``(finish deadline, met)`` of its recent runs.

        The runs the SLA counters counted (``exporter/schedule/sla.py``), from the run history.
        """
        out: dict[str, list[tuple[float, bool]]] = {}
        for status in self.job_statuses():
            name, source, vmid = job_labels(status.spec)
            out[f"{source}/{name}/{vmid}"] = self.keeper.recent_runs(status.spec)
        return out

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
        families = self._rendered(poller, snapshot)
        if families is None:
            return
        discovered = self._discovered(poller) or []
        config = {
            spec.name: self._config_evidence(spec)[0]
            for spec in self._job_specs
            if spec.source == poller.name
        }
        # The asset locations this source proves: served from the store after a restart.
        config.update(stored_locations(self.assets, poller))
        specs = {spec.name: spec for spec in self._job_specs}
        candidates = [(s, e, True, "discovered") for s, e in discovered]
        candidates += [
            (specs[name], ev, True, "config") for name, ev in config.items() if name in specs
        ]
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
