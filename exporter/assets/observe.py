"""Read each asset location's evidence from the pollers' snapshots (scrape time, no I/O).

This is the only part of the asset engine that knows pollers: it turns a poller's state and
its source's ``evidence(snapshot, selector)`` (or a job's :class:`JobStatus`) into an
:class:`~exporter.assets.engine.Observation`, and a bucket's automated restore check into a
``restore-test`` :class:`~exporter.assets.model.VerificationStatus` at depth ``sample`` for
each asset with an offsite location in that bucket.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from exporter.assets.config import AssetConfig, LocationConfig
from exporter.assets.engine import (
    DEFAULT_RESTORE_TEST_INTERVAL,
    RESTORE_TEST,
    Observation,
    judge,
    next_change,
)
from exporter.assets.model import AssetStatus, VerificationStatus
from exporter.buckets.model import BucketsSnapshot
from exporter.schedule.jobs import Evidence, JobStatus
from exporter.sources.targets import bucket_target, dataset_target, storage_target

log = logging.getLogger(__name__)


class _PollState(Protocol):
    @property
    def snapshot(self) -> Any: ...

    @property
    def up(self) -> bool: ...


class _Source(Protocol):
    def evidence(self, snapshot: Any, selector: Mapping[str, str]) -> Any: ...


class PollerView(Protocol):
    """What is read of a poller (:class:`exporter.core.poller.Poller` has it)."""

    @property
    def name(self) -> str: ...  # noqa: D102

    @property
    def state(self) -> _PollState: ...  # noqa: D102

    @property
    def source(self) -> _Source: ...  # noqa: D102


def _selector_text(evidence: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in evidence.items() if k != "source") or "its evidence"


def _job_status(
    loc: LocationConfig, statuses: Iterable[JobStatus], job_sources: Mapping[str, str]
) -> JobStatus | None:
    source = loc.source or job_sources.get(loc.job, "")
    vmid = loc.evidence.get("vmid", "")
    for status in statuses:
        spec = status.spec
        if (spec.name, spec.source, spec.labels.get("vmid", "")) == (loc.job, source, vmid):
            return status
    return None


def observe_job(
    loc: LocationConfig, statuses: Iterable[JobStatus], job_sources: Mapping[str, str]
) -> Observation:
    """Observe a ``{job: NAME}`` location: the job's last success and state."""
    status = _job_status(loc, statuses, job_sources)
    if status is None:
        return Observation(known=False, why=f"no job {loc.job}")
    if status.state == "unknown":
        return Observation(known=False, why=f"job {loc.job} unknown")
    failed = status.state in ("failed", "overdue")
    why = f"job {status.state}" if failed else ""
    return Observation(known=True, newest=status.evidence.last_success, failed=failed, why=why)


def location_targets(loc: LocationConfig) -> dict[str, str]:
    """Return the targets (``exporter.sources.targets``) a selector reads, with their names.

    A bucket location reads ``bucket/<name>``, a dataset's snapshots the dataset listing of
    its pool (``dataset/<pool>``), a PVE guest's archives on a storage ``storage/<id>``.
    """
    out = {}
    if bucket := loc.evidence.get("bucket"):
        out[bucket_target(bucket)] = f"bucket {bucket}"
    if dataset := loc.evidence.get("dataset"):
        pool = dataset.split("/", 1)[0]
        out[dataset_target(pool)] = f"dataset listing {pool}"
    if storage := loc.evidence.get("storage"):
        out[storage_target(storage)] = f"storage {storage}"
    return out


def stored_key(asset: str, location: str) -> str:
    """Return the key a location's evidence is stored under, beside the ``jobs:`` evidence."""
    return f"asset\x1f{asset}\x1f{location}"


def stored_locations(assets: Mapping[str, AssetConfig], poller: PollerView) -> dict[str, Evidence]:
    """Return the evidence of every asset location ``poller``'s source proves (to store)."""
    out: dict[str, Evidence] = {}
    snapshot = poller.state.snapshot
    if snapshot is None:
        return out
    for name, asset in assets.items():
        for loc in asset.locations:
            if loc.job or loc.source != poller.name:
                continue
            try:
                evidence = poller.source.evidence(snapshot, loc.evidence)
            except Exception:
                log.exception("source=%s evidence lookup failed (asset location)", loc.source)
                continue
            if evidence is not None:
                out[stored_key(name, loc.name)] = evidence
    return out


def _from_evidence(evidence: Evidence) -> Observation:
    return Observation(
        known=True,
        newest=evidence.last_success,
        failed=bool(evidence.failed),
        why="last run failed" if evidence.failed else "",
    )


def observe_source(
    loc: LocationConfig, poller: PollerView | None, stored: Evidence | None = None
) -> Observation:
    """Observe a source location: unknown unless the source's last poll succeeded.

    Before the first poll after a restart, the location's evidence from the last good poll
    (the state database) is served, as the jobs' evidence is: the source was last read fine.
    """
    if poller is None:
        return Observation(known=False, why=f"no source {loc.source}")
    state = poller.state
    if state.snapshot is None:
        if stored is not None:
            return _from_evidence(stored)
        return Observation(known=False, why=f"source {loc.source} not read yet")
    if not state.up:
        return Observation(known=False, why=f"source {loc.source} down")
    # A target that failed alone keeps its last listing: its evidence is not current.
    wanted = location_targets(loc)
    for target in getattr(state.snapshot, "targets", ()):
        if target.target in wanted and not target.up:
            return Observation(known=False, why=f"{loc.source} {wanted[target.target]} down")
    try:
        evidence = poller.source.evidence(state.snapshot, loc.evidence)
    except Exception:
        log.exception("source=%s evidence lookup failed (asset location)", loc.source)
        evidence = None
    if evidence is None:
        return Observation(known=False, why=f"{loc.source} has no {_selector_text(loc.evidence)}")
    return _from_evidence(evidence)


def observe(
    assets: Mapping[str, AssetConfig],
    pollers: Sequence[PollerView],
    job_statuses: Sequence[JobStatus],
    job_sources: Mapping[str, str],
    stored: Mapping[str, Mapping[str, Evidence]] | None = None,
) -> dict[str, tuple[Observation, ...]]:
    """Observe every location of every asset (``stored``: per source, the state database's)."""
    by_name = {p.name: p for p in pollers}
    stored = stored or {}
    out: dict[str, tuple[Observation, ...]] = {}
    for name, asset in assets.items():
        out[name] = tuple(
            observe_job(loc, job_statuses, job_sources)
            if loc.job
            else observe_source(
                loc,
                by_name.get(loc.source),
                stored.get(loc.source, {}).get(stored_key(name, loc.name)),
            )
            for loc in asset.locations
        )
    return out


def bucket_verifications(
    assets: Mapping[str, AssetConfig], pollers: Sequence[PollerView]
) -> dict[str, list[VerificationStatus]]:
    """Turn each bucket's restore check into a restore test of the assets it covers.

    A check covers an asset when one of the asset's ``offsite`` locations names that source
    and bucket (any prefix: the check samples the bucket). Depth ``sample``; interval: the
    quarterly default (records of the asset's own restore tests may have theirs).
    """
    by_name = {p.name: p for p in pollers}
    out: dict[str, list[VerificationStatus]] = {}
    for name, asset in assets.items():
        seen: set[tuple[str, str]] = set()
        for loc in asset.locations:
            poller = by_name.get(loc.source)
            if loc.layer != "offsite" or loc.job or poller is None:
                continue
            snapshot = poller.state.snapshot
            if not isinstance(snapshot, BucketsSnapshot):
                continue
            bucket_name = loc.evidence.get("bucket")
            if not bucket_name and len(snapshot.buckets) == 1:
                bucket_name = snapshot.buckets[0].name
            bucket = snapshot.bucket(bucket_name) if bucket_name else None
            if bucket is None or (loc.source, bucket.name) in seen:
                continue
            seen.add((loc.source, bucket.name))
            last_fail = None
            if bucket.restore is not None and not bucket.restore.success:
                last_fail = bucket.restore.checked_at
            if bucket.restore_last_success is None and last_fail is None:
                continue
            out.setdefault(name, []).append(
                VerificationStatus(
                    asset=name,
                    activity=RESTORE_TEST,
                    interval=DEFAULT_RESTORE_TEST_INTERVAL,
                    last_pass=bucket.restore_last_success,
                    last_fail=last_fail,
                    overdue=bucket.restore_last_success is None,
                    depth="sample",
                )
            )
    return out


def merge_verifications(
    *parts: Mapping[str, Sequence[VerificationStatus]],
) -> dict[str, list[VerificationStatus]]:
    """Concatenate verification statuses by asset."""
    out: dict[str, list[VerificationStatus]] = {}
    for part in parts:
        for asset, statuses in part.items():
            out.setdefault(asset, []).extend(statuses)
    return out


def feeding_jobs(
    asset: AssetConfig,
    statuses: Sequence[JobStatus],
    job_evidence: Mapping[str, Mapping[str, str]],
    job_sources: Mapping[str, str],
) -> list[JobStatus]:
    """Return the jobs that write the asset's copies, each once.

    Per location: the ``{job:}`` it names, the jobs in its ``jobs:`` list (by name, on its
    source if it has one), the ``jobs:`` entries whose evidence is the location's selector,
    and the jobs its source discovers for the selector's ``vmid`` (a PVE guest's jobs).
    """
    chosen: dict[tuple[str, str, str], JobStatus] = {}
    for loc in asset.locations:
        source = loc.source or job_sources.get(loc.job, "")
        vmid = loc.evidence.get("vmid", "")
        for status in statuses:
            spec = status.spec
            key = (spec.name, spec.source, spec.labels.get("vmid", ""))
            if loc.job:
                feeds = key == (loc.job, source, vmid)
            else:
                feeds = (
                    spec.name in loc.jobs
                    or (
                        spec.name in job_evidence
                        and dict(job_evidence[spec.name]) == dict(loc.evidence)
                    )
                    or (bool(vmid) and spec.source == source and key[2] == vmid)
                )
            if feeds:
                chosen.setdefault(key, status)
    return list(chosen.values())


def judge_now(
    assets: Mapping[str, AssetConfig],
    *,
    pollers: Sequence[PollerView],
    job_statuses: Sequence[JobStatus],
    job_evidence: Mapping[str, Mapping[str, str]],
    verifications: Mapping[str, Sequence[VerificationStatus]],
    now: float,
    stored: Mapping[str, Mapping[str, Evidence]] | None = None,
) -> tuple[list[AssetStatus], float | None]:
    """Observe, judge and roll up the SLA of every asset; also return :func:`next_change`.

    ``verifications`` are the records' statuses; the buckets' restore checks are added here.
    """
    job_sources = {name: ev.get("source", "") for name, ev in job_evidence.items()}
    observations = observe(assets, pollers, job_statuses, job_sources, stored)
    checks = merge_verifications(verifications, bucket_verifications(assets, pollers))
    statuses = []
    for status in judge(assets, observations, checks, now):
        asset = assets[status.name]
        feeding = feeding_jobs(asset, job_statuses, job_evidence, job_sources)
        statuses.append(
            replace(
                status,
                sla_target=asset.sla_target,
                runs_expected=sum(j.runs_expected for j in feeding),
                runs_met=sum(j.runs_met for j in feeding),
            )
        )
    return statuses, next_change(assets, observations, checks, now)
