"""Job name collisions: refused at load time when the name is in a discovery scheme, else
resolved at scrape time (first job wins, one log line per conflict, ``backup_job_conflicts``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from exporter.core.clock import FakeClock
from exporter.core.collector import SnapshotCollector
from exporter.core.config import ConfigError, JobConfig, SourceConfig, parse_config
from exporter.core.poller import Poller
from exporter.schedule.expressions import parse_schedule
from exporter.schedule.jobs import Evidence, JobSpec
from exporter.sources.base import FetchContext, Source

NOW = 1_772_625_600.0  # 2026-03-04 12:00 UTC
Snapshot = tuple[tuple[JobSpec, Evidence], ...]


@dataclass(frozen=True, kw_only=True)
class JobsConfig(SourceConfig):
    pass


class JobsSource(Source[JobsConfig, Snapshot]):
    """Discovers the jobs the test sets; renders nothing of its own.

    Sample exposition::

        # (no families: only its jobs, through the jobs engine)
    """

    kind = "jobs"

    def __init__(self, config: JobsConfig) -> None:
        super().__init__(config)
        self.jobs_now: list[tuple[JobSpec, Evidence]] = []

    async def fetch(self, ctx: FetchContext) -> Snapshot:
        return tuple(self.jobs_now)

    def render(self, snapshot: Snapshot) -> Iterator[Metric]:
        yield from ()

    def jobs(self, snapshot: Snapshot) -> Iterator[tuple[JobSpec, Evidence]]:
        yield from snapshot

    def evidence(self, snapshot: Snapshot, selector: object) -> Evidence | None:
        return Evidence(last_success=NOW - 3600)


def spec(name: str, vmid: str = "", schedule: str = "0 3 * * *") -> JobSpec:
    return JobSpec(
        name=name,
        source="nas",
        schedule=parse_schedule(schedule, "UTC"),
        grace=7200.0,
        labels={"vmid": vmid} if vmid else {},
    )


def scrape(collector: SnapshotCollector) -> list[tuple[str, dict[str, str], float]]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    return [
        (s.name, s.labels, s.value)
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    ]


def series(samples: list[tuple[str, dict[str, str], float]], name: str) -> list[dict[str, str]]:
    return [labels for n, labels, _ in samples if n == name]


def conflicts(samples: list[tuple[str, dict[str, str], float]], source: str) -> float:
    return next(
        v for n, labels, v in samples if n == "backup_job_conflicts" and labels["source"] == source
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=NOW)


async def polled(clock: FakeClock, jobs: list[tuple[JobSpec, Evidence]]) -> Poller:
    source = JobsSource(JobsConfig(name="nas", kind="jobs", interval=300.0, timeout=10.0))
    source.jobs_now = jobs
    poller = Poller(source, clock=clock)
    state = await poller.poll_once()
    assert state.error is None
    return poller


async def test_two_discovered_jobs_with_one_set_of_labels(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    ok = Evidence(last_success=NOW - 3600)
    failed = Evidence(failed=True, last_start=NOW - 3600)
    poller = await polled(clock, [(spec("cloudsync-b2"), ok), (spec("cloudsync-b2"), failed)])
    collector = SnapshotCollector([poller], clock=clock)
    with caplog.at_level(logging.WARNING, logger="exporter.core.collector"):
        samples = scrape(collector)
        scrape(collector)  # the same conflict is not logged again
    # One series per label set: the first job is kept (its evidence: ok, not failed).
    states = [
        labels
        for labels in series(samples, "backup_job_state")
        if labels["backup_job"] == "cloudsync-b2"
    ]
    assert len(states) == 6  # one per state, of one job
    failed_values = [v for n, labels, v in samples if n == "backup_job_failed"]
    assert failed_values == [0.0]
    assert conflicts(samples, "nas") == 1
    warnings = [r for r in caplog.records if "job conflict" in r.getMessage()]
    assert len(warnings) == 1
    assert "'cloudsync-b2'" in warnings[0].getMessage()


async def test_a_config_job_with_a_discovered_jobs_labels(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    # "nightly" is in no discovery scheme, so the load could not know; the discovered job wins.
    poller = await polled(clock, [(spec("nightly"), Evidence(last_success=NOW - 3600))])
    job = JobConfig(
        name="nightly", timezone="UTC", schedule="0 5 * * *", grace=3600.0,
        evidence={"source": "nas"},
    )  # fmt: skip
    collector = SnapshotCollector([poller], clock=clock, jobs={"nightly": job})
    with caplog.at_level(logging.WARNING, logger="exporter.core.collector"):
        samples = scrape(collector)
    info = series(samples, "backup_job_info")
    assert info == [
        {
            "backup_job": "nightly",
            "source": "nas",
            "vmid": "",
            "schedule": "0 3 * * *",
            "timezone": "UTC",
        }
    ]
    assert conflicts(samples, "nas") == 1
    assert any("config job 'nightly'" in r.getMessage() for r in caplog.records)


async def test_jobs_that_differ_in_vmid_do_not_conflict(clock: FakeClock) -> None:
    ev = Evidence(last_success=NOW - 3600)
    poller = await polled(clock, [(spec("daily", "100"), ev), (spec("daily", "101"), ev)])
    samples = scrape(SnapshotCollector([poller], clock=clock))
    assert len(series(samples, "backup_job_info")) == 2
    assert conflicts(samples, "nas") == 0


async def test_a_conflict_that_ends_and_returns_is_logged_again(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    ev = Evidence(last_success=NOW - 3600)
    poller = await polled(clock, [(spec("scrub-tank"), ev), (spec("scrub-tank"), ev)])
    collector = SnapshotCollector([poller], clock=clock)
    source = poller.source
    assert isinstance(source, JobsSource)
    with caplog.at_level(logging.WARNING, logger="exporter.core.collector"):
        assert conflicts(scrape(collector), "nas") == 1
        source.jobs_now = [(spec("scrub-tank"), ev)]
        await poller.poll_once()
        assert conflicts(scrape(collector), "nas") == 0
        source.jobs_now = [(spec("scrub-tank"), ev), (spec("scrub-tank"), ev)]
        await poller.poll_once()
        assert conflicts(scrape(collector), "nas") == 1
    assert len([r for r in caplog.records if "job conflict" in r.getMessage()]) == 2


# ---- at load time

HC = """
sources:
  hc:
    kind: healthchecks
    api_key: "{key}"
{extra}
jobs:
  {name}:
    schedule: "30 1 * * *"
    grace: 8h
    evidence: {{source: hc, check: b2-daily}}
"""
KEY = "x" * 32


def test_a_config_job_in_the_healthchecks_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(HC.format(key=KEY, extra="", name="hc-b2-daily"))
    message = str(caught.value)
    assert "jobs.hc-b2-daily" in message
    assert "scheme of the jobs source 'hc' discovers (hc-...)" in message


def test_the_scheme_is_free_when_the_source_discovers_no_jobs() -> None:
    config = parse_config(HC.format(key=KEY, extra="    jobs: false", name="hc-b2-daily"))
    assert "hc-b2-daily" in config.jobs


def test_a_name_outside_the_scheme_is_fine() -> None:
    config = parse_config(HC.format(key=KEY, extra="", name="offsite-b2"))
    assert "offsite-b2" in config.jobs


@pytest.mark.parametrize("name", ["cloudsync-b2-daily", "scrub-tank"])
def test_a_config_job_in_the_truenas_scheme_is_a_config_error(name: str) -> None:
    text = f"""
sources:
  nas:
    kind: truenas
    url: https://nas.example
    api_key: "1-{"k" * 64}"
jobs:
  {name}:
    schedule: "0 3 * * *"
    grace: 2h
    evidence: {{source: nas, pool: tank}}
"""
    with pytest.raises(ConfigError, match=rf"jobs\.{name}: the name is in the scheme"):
        parse_config(text)
