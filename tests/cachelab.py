"""A small lab for the exposition cache tests: a source whose jobs and runs a test scripts.

``LabSource`` reads a :class:`World` at poll time: which runs of which jobs have finished by
then (success or failure). The world is the test's ground truth; the exporter sees it only
through polls, as it sees a real system.
"""

from __future__ import annotations

import bisect
import gzip
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from pydantic.dataclasses import dataclass as config_dataclass

from exporter.core.collector import SnapshotCollector
from exporter.core.config import SourceConfig
from exporter.core.fields import STRICT, Duration
from exporter.schedule.jobs import Evidence, JobSpec
from exporter.sources.base import FetchContext, FetchError, Source

TEXT = ""
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


@config_dataclass(frozen=True, kw_only=True, config=STRICT)
class LabConfig(SourceConfig):
    kind: Literal["lab"] = "lab"
    interval: Duration = 3600.0
    timeout: Duration = 5.0


@dataclass
class Run:
    """One run of a job: scheduled at ``start``, begun at ``began``, ended at ``end``."""

    start: float
    began: float
    end: float
    ok: bool


@dataclass
class World:
    """Every run of every job (by job name), appended by the test as it scripts them."""

    runs: dict[str, list[Run]] = field(default_factory=dict)
    # Jobs whose evidence does not record starts (a newest-file time): late, not start-missed.
    no_starts: set[str] = field(default_factory=set)

    def evidence(self, job: str, now: float) -> Evidence:
        """What a system's task log shows at ``now``: last start, last success, failed."""
        tracks = job not in self.no_starts
        runs = self.runs.get(job, [])
        # Runs are appended in order and never overlap: look at the last few begun.
        begun = bisect.bisect_right([r.began for r in runs[-400:]], now) + max(0, len(runs) - 400)
        if not begun:
            return Evidence(tracks_start=tracks)
        seen = runs[:begun]
        done = [r for r in seen[-3:] if r.end <= now]
        last_ok = next((r.end for r in reversed(seen) if r.ok and r.end <= now), None)
        latest = done[-1] if done else None
        return Evidence(
            last_success=last_ok,
            last_start=seen[-1].began,
            last_duration=None if latest is None else latest.end - latest.began,
            failed=latest is not None and not latest.ok,
            running=seen[-1].end > now,
            tracks_start=tracks,
        )


@dataclass(frozen=True)
class LabSnapshot:
    taken_at: float
    evidence: tuple[tuple[str, Evidence], ...]


class LabSource(Source[LabConfig, LabSnapshot]):
    """Discovers ``specs`` and reports the world's evidence for them (and for config jobs).

    Sample exposition::

        # HELP backup_test_polled_timestamp_seconds When the lab was read.
        # TYPE backup_test_polled_timestamp_seconds gauge
        backup_test_polled_timestamp_seconds{source="lab"} 1.8e9
    """

    kind = "lab"

    def __init__(self, config: LabConfig, specs: Iterable[JobSpec], world: World) -> None:
        super().__init__(config)
        self.specs = list(specs)
        self.world = world
        self.error: FetchError | None = None
        self.renders = 0
        self.extra: tuple[str, ...] = ()

    async def fetch(self, ctx: FetchContext) -> LabSnapshot:
        ctx.count_request()
        if self.error is not None:
            raise self.error
        now = ctx.clock.time()
        names = [s.name for s in self.specs] + list(self.extra)
        return LabSnapshot(now, tuple((n, self.world.evidence(n, now)) for n in names))

    def render(self, snapshot: LabSnapshot) -> Iterator[Metric]:
        self.renders += 1
        fam = GaugeMetricFamily(
            "backup_test_polled_timestamp_seconds", "When the lab was read.", labels=["source"]
        )
        fam.add_metric([self.name], snapshot.taken_at)
        yield fam

    def jobs(self, snapshot: LabSnapshot) -> Iterator[tuple[JobSpec, Evidence]]:
        found = dict(snapshot.evidence)
        for spec in self.specs:
            yield spec, found[spec.name]

    def evidence(self, snapshot: LabSnapshot, selector: Mapping[str, str]) -> Evidence | None:
        return dict(snapshot.evidence).get(selector.get("job", ""))


def lab_source(name: str, specs: Iterable[JobSpec], world: World) -> LabSource:
    return LabSource(LabConfig(name=name, kind="lab", interval=3600.0, timeout=5.0), specs, world)


class _View:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def fresh_bytes(collector: SnapshotCollector, accept: str = TEXT) -> bytes:
    """Serialize a render of everything anew at the clock's now (no cache involved)."""
    encoder, _ = choose_encoder(accept)
    return encoder(_View(collector.fresh()))


def cached_bytes(collector: SnapshotCollector, accept: str = TEXT, *, gz: bool = False) -> bytes:
    """What ``/metrics`` serves now for these headers (decompressed)."""
    body = collector.exposition.body(accept, "gzip" if gz else "")
    assert body.gzipped == gz
    return gzip.decompress(body.data) if gz else body.data
