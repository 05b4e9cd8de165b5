"""B2 Class C calls per day, counted by the exporter itself, for a 200k-object bucket.

b2sdk's ``RawSimulator`` with a ``list_file_names`` that generates its pages (the simulated
bucket holds no objects, so 200k names cost nothing to seed), an injected clock walked poll
by poll at the source interval, and the count read from the exporter's own exposition:
``backup_source_api_requests_total{class="C"}``, sampled at every 00:00 UTC (B2 counts its
free 2,500 Class C calls a day from 00:00 UTC, docs/backends.md §5).

``bench/bucket_cost.py`` runs the same walk for the README's table of options.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from b2sdk.v3 import B2Api, B2HttpApiConfig, InMemoryAccountInfo, RawSimulator
from b2sdk.v3.exception import interpret_b2_error
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_b2 import CountingSim

from exporter.core.clock import FakeClock
from exporter.core.collector import SnapshotCollector
from exporter.core.config import parse_config
from exporter.core.poller import Poller
from exporter.sources.b2.source import B2Source

DAY = 86400
# 2026-03-02 00:00:00 UTC: the walk starts at the beginning of a B2 billing day.
MIDNIGHT = 1_772_409_600
BASE_MS = 1_769_720_403_000


class SyntheticB2(CountingSim):
    """Generates ``total`` names (``obj-000000042``) page by page; stores none of them.

    ``fail_at``: the page that starts at this object index answers 503 (persistently).
    """

    total = 0
    fail_at: int | None = None

    def list_file_names(
        self,
        api_url: str,
        account_auth_token: str,
        bucket_id: str,
        start_file_name: str | None = None,
        max_file_count: int | None = None,
        prefix: str | None = None,
    ) -> dict[str, Any]:
        self.calls["list_file_names"] += 1
        prefix = prefix or ""
        count = min(max_file_count or 100, 10_000)
        start = 0
        if start_file_name and start_file_name.startswith(prefix + "obj-"):
            start = int(start_file_name[len(prefix) + 4 :])
        if self.fail_at is not None and start <= self.fail_at < start + count:
            raise interpret_b2_error(503, "service_unavailable", "injected 503", {})
        end = min(start + count, self.total)
        files = [
            # The keys the exporter reads (b2_list_file_names answers more of them).
            {
                "fileId": f"4_z{i:024d}",
                "fileName": f"{prefix}obj-{i:09d}",
                "contentLength": 1000 + i % 4096,
                "action": "upload",
                "uploadTimestamp": BASE_MS + i * 1000,
            }
            for i in range(start, end)
        ]
        nxt = f"{prefix}obj-{end:09d}" if end < self.total else None
        return {"files": files, "nextFileName": nxt}


@dataclass
class Walk:
    """The per-day Class C counts of a walk and what the last snapshot showed."""

    per_day: list[int]  # Class C calls on each UTC day
    class_b: list[int]  # Class B calls (downloads) on each UTC day
    objects: int | None
    target_up: bool
    list_calls: int


def b2_world(total: int, fail_at: int | None) -> tuple[SyntheticB2, str, str]:
    seed = B2Api(InMemoryAccountInfo(), api_config=B2HttpApiConfig(_raw_api_class=SyntheticB2))
    sim = seed.session.raw_api
    sim.total, sim.fail_at = total, fail_at
    key_id, key = sim.create_account()
    seed.authorize_account(key_id, key)
    seed.create_bucket("homelab", "allPrivate")
    sim.calls.clear()
    return sim, key_id, key


def class_totals(collector: SnapshotCollector) -> Counter[str]:
    """``backup_source_api_requests_total`` by class, read from the exposition."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    totals: Counter[str] = Counter()
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            if s.name == "backup_source_api_requests_total":
                totals[s.labels["class"]] += int(s.value)
    return totals


async def walk(
    *, total: int, days: int, extra: str = "", fail_at: int | None = None
) -> tuple[Walk, SyntheticB2]:
    """Poll a default ``kind: b2`` source at its interval for ``days`` days from 00:00 UTC."""
    sim, key_id, key = b2_world(total, fail_at)

    def factory() -> B2Api:
        api = B2Api(InMemoryAccountInfo(), api_config=B2HttpApiConfig(_raw_api_class=RawSimulator))
        api.session.raw_api = sim
        return api

    config = parse_config(
        f"""
timezone: UTC
sources:
  b2:
    kind: b2
    key_id: {key_id}
    application_key: {key}
    {extra}
    buckets:
      homelab:
"""
    )
    clock = FakeClock(MIDNIGHT)
    source = B2Source(config.sources["b2"], api_factory=factory, sleep=lambda _s: None)
    poller = Poller(source, clock=clock)
    collector = SnapshotCollector([poller], clock=clock, jobs=config.jobs)
    interval = config.sources["b2"].interval
    per_day: list[int] = []
    class_b: list[int] = []
    counted: Counter[str] = Counter()
    state = None
    while clock.time() < MIDNIGHT + days * DAY:
        state = await poller.poll_once()
        assert state.up, state.error
        clock.advance(interval)
        if (clock.time() - MIDNIGHT) % DAY == 0:
            now = class_totals(collector)
            per_day.append(now["C"] - counted["C"])
            class_b.append(now["B"] - counted["B"])
            counted = now
    assert state is not None
    snap = state.snapshot
    buckets = snap.buckets
    mem = poller.memory["buckets"]["homelab"]
    return (
        Walk(
            per_day=per_day,
            class_b=class_b,
            objects=buckets[0].prefixes[0].objects if buckets else None,
            target_up=snap.targets[0].up,
            list_calls=mem["list_calls"],
        ),
        sim,
    )


# Class C calls on each day of a healthy 200k-object bucket at the defaults.
HEALTHY = [202, 200]


async def test_healthy_200k_bucket_costs_at_most_250_class_c_a_day() -> None:
    result, sim = await walk(total=200_000, days=2)
    assert result.objects == 200_000 and result.target_up
    # The exporter's counter is every call that reached the service.
    assert sum(result.per_day) == sum(sim.calls.values())
    # One listing a day: 200 pages of 1000 names (+ the login and the bucket lookup once).
    assert result.list_calls == 200
    assert result.per_day == HEALTHY
    assert max(result.per_day) <= 250
    assert result.class_b == [0, 0], "no restore check configured: no download"


async def test_without_the_budget_the_bucket_interval_decides() -> None:
    # The 6h bucket default with the budget switched off (20k objects: 20 pages a listing),
    # the 802 calls a day of a 200k-object bucket scaled by ten.
    result, _ = await walk(total=20_000, days=1, extra="list_calls_per_day: 0")
    assert result.per_day == [4 * 20 + 2]


async def test_small_buckets_keep_their_interval_under_the_budget() -> None:
    result, sim = await walk(total=5_000, days=2)
    assert result.objects == 5_000
    # 5 pages a listing: the budget would allow 50 listings a day, the 6h interval holds.
    assert result.per_day == [4 * 5 + 2, 4 * 5]
    assert sim.calls["list_file_names"] == 8 * 5


async def test_a_persistent_503_at_75_percent_costs_no_more_than_a_healthy_bucket() -> None:
    faulty, sim = await walk(total=200_000, days=2, fail_at=150_000)
    assert faulty.objects is None, "never listed completely: nothing is rendered"
    assert not faulty.target_up
    for day, (bad, good) in enumerate(zip(faulty.per_day, HEALTHY, strict=True)):
        assert bad <= good, f"day {day}: {bad} Class C calls vs {good} healthy"
    # Day 0: 150 pages up to the broken one + 3 attempts at it, then retries of that page
    # alone after 1h, 2h, 4h and 8h (3 attempts each). An interrupted listing older than
    # the bucket's interval (one day here, set by the budget) starts over: day 1 has one.
    assert sim.calls["list_file_names"] == (150 + 3) + 4 * 3 + (150 + 3)


async def test_a_fault_that_clears_resumes_where_the_listing_stopped() -> None:
    sim, key_id, key = b2_world(200_000, fail_at=150_000)

    def factory() -> B2Api:
        api = B2Api(InMemoryAccountInfo(), api_config=B2HttpApiConfig(_raw_api_class=RawSimulator))
        api.session.raw_api = sim
        return api

    text = f"""
sources:
  b2:
    kind: b2
    key_id: {key_id}
    application_key: {key}
    retries: 2
    buckets:
      homelab:
"""
    config = parse_config(text)
    clock = FakeClock(MIDNIGHT)
    memory: dict[str, Any] = {}
    source = B2Source(config.sources["b2"], api_factory=factory, sleep=lambda _s: None)
    first = await Poller(source, clock=clock, memory=memory).poll_once()
    assert first.up and not first.snapshot.targets[0].up
    assert first.snapshot.targets[0].reason == "http"
    assert sim.calls["list_file_names"] == 150 + 3
    # A restart (a new source and poller on the same durable memory) after the fault
    # cleared: the retry waits for its back-off, then lists only the last 50 pages.
    sim.fail_at = None
    sim.calls.clear()
    source = B2Source(config.sources["b2"], api_factory=factory, sleep=lambda _s: None)
    poller = Poller(source, clock=clock, memory=memory)
    clock.advance(1800)
    state = await poller.poll_once()
    assert sim.calls["list_file_names"] == 0, "backing off"
    assert not state.snapshot.targets[0].up and not state.snapshot.buckets
    clock.advance(1800)
    state = await poller.poll_once()
    assert state.snapshot.targets[0].up
    assert sim.calls["list_file_names"] == 50
    (stats,) = state.snapshot.buckets[0].prefixes
    assert stats.objects == 200_000
    assert stats.size_bytes == sum(1000 + i % 4096 for i in range(200_000))
    assert stats.oldest == BASE_MS / 1000
    assert stats.newest == BASE_MS / 1000 + 199_999
    # The bucket lookup (b2_list_buckets) once per process, the broken page's 3 attempts.
    assert memory["buckets"]["homelab"]["list_calls"] == 1 + 150 + 3 + 1 + 50


@pytest.mark.parametrize("junk", [{"partial": {"done": "x"}}, {"partial": {"started": "x"}}])
async def test_junk_progress_in_the_memory_counts_as_never_listed(junk: dict[str, Any]) -> None:
    from exporter.buckets.memory import decode

    assert decode({"listed_from": 1.0, "prefixes": [], **junk}) is None


async def test_an_unreachable_api_fails_the_source_without_a_bucket_back_off() -> None:
    from test_buckets import good, scripted

    from exporter.sources.base import FetchError

    clock = FakeClock(1_800_000_000)
    src = scripted(canary="a/1")
    src.outcomes = [good(b"x")]
    poller = Poller(src, clock=clock)
    assert (await poller.poll_once()).up
    clock.advance(6 * 3600)
    src.list_error = FetchError("connection", "connection refused")
    state = await poller.poll_once()
    assert (state.up, state.reason) == (False, "connection")
    # The endpoint is back: the poller's next try lists at once (no bucket back-off).
    src.list_error = None
    state = await poller.poll_once()
    assert state.up and state.snapshot.targets[0].up
    assert src.lists == 3
