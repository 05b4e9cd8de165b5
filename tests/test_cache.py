"""The exposition cache: it serves what a fresh render would, at every instant and after each poll.

These are not timing tests: they walk an injected clock across job deadlines, offline window
edges and DST changes, poll at random (some polls fail), and compare the cached bytes with a
render made anew at the same instant.
"""

from __future__ import annotations

import gzip
import random
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp.test_utils import TestClient
from cachelab import OPENMETRICS, TEXT, Run, World, cached_bytes, fresh_bytes, lab_source
from conftest import memory_source
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from exporter.core.app import COLLECTOR, create_app
from exporter.core.clock import FakeClock
from exporter.core.collector import SnapshotCollector
from exporter.core.config import Config, JobConfig
from exporter.core.exposition import Exposition, Part, Rendered
from exporter.core.poller import Poller
from exporter.schedule.expressions import parse_schedule
from exporter.schedule.jobs import Evidence, JobSpec, evaluate
from exporter.schedule.windows import OfflineWindow, expected_offline, next_edge
from exporter.sources.base import FetchError

BERLIN = ZoneInfo("Europe/Berlin")
H = 3600.0


def at(*args: int) -> float:
    return datetime(*args, tzinfo=BERLIN).timestamp()  # type: ignore[misc]


def spec(name: str, expr: str, grace: float, start_grace: float | None = None) -> JobSpec:
    return JobSpec(name, "lab", parse_schedule(expr, BERLIN), grace, start_grace)


SPECS = [
    spec("nightly", "21:00", 6 * H, 1 * H),  # PVE calendar event, with a start deadline
    spec("early", "30 1 * * *", 2 * H, 0.5 * H),  # cron
    spec("weekly", "wed 05:00", 12 * H, 2 * H),
]


def script(world: World, specs: list[JobSpec], begin: float, end: float, seed: int) -> None:
    """Give each job's runs between ``begin`` and ``end``: on time, late, failed or missing."""
    rng = random.Random(seed)
    for job in specs:
        runs = world.runs.setdefault(job.name, [])
        t = job.schedule.next_after(datetime.fromtimestamp(begin, BERLIN))
        while t.timestamp() < end:
            s = t.timestamp()
            fate = rng.choice(["ok", "ok", "ok", "late", "failed", "missing", "slow start"])
            if fate == "ok":
                runs.append(Run(s, s + 5, s + rng.uniform(60, job.grace / 2), ok=True))
            elif fate == "late":
                runs.append(Run(s, s + 5, s + job.grace + rng.uniform(60, 2 * H), ok=True))
            elif fate == "failed":
                runs.append(Run(s, s + 5, s + rng.uniform(60, job.grace / 2), ok=False))
            elif fate == "slow start":
                began = s + (job.start_grace or 0) + rng.uniform(30, 600)
                runs.append(Run(s, began, began + 120, ok=True))
            t = job.schedule.next_after(t)


def instants(
    specs: list[JobSpec], windows: list[OfflineWindow], begin: float, end: float
) -> set[float]:
    """Every instant where something may change, and its neighbours."""
    points: set[float] = set()
    for job in specs:
        t = job.schedule.next_after(datetime.fromtimestamp(begin, BERLIN))
        while t.timestamp() < end:
            s = t.timestamp()
            for edge in (s, s + job.grace, s + (job.start_grace or 0)):
                points.update((edge - 1, edge, edge + 1e-3, edge + 1))
            t = job.schedule.next_after(t)
    for w in windows:
        t = w.schedule.next_after(datetime.fromtimestamp(begin, BERLIN))
        while t.timestamp() < end:
            for edge in (t.timestamp(), t.timestamp() + w.duration):
                points.update((edge - 1, edge, edge + 1))
            t = w.schedule.next_after(t)
    return {p for p in points if begin < p < end}


def lab(clock: FakeClock, world: World) -> tuple[SnapshotCollector, list[Poller]]:
    windows = [OfflineWindow(parse_schedule("23:00", BERLIN), 7 * H)]
    source = lab_source("lab", SPECS, world)
    source.extra = ("cfg",)
    other = memory_source("mem", value=3)
    pollers = [
        Poller(source, clock=clock, offline=windows),
        Poller(other, clock=clock),
    ]
    jobs = {
        "cfg": JobConfig(
            name="cfg",
            timezone="Europe/Berlin",
            schedule="0/6:00",
            grace=H,
            evidence={"source": "lab", "job": "cfg"},
        ),
        # A job whose source does not exist: unknown forever.
        "lost": JobConfig(
            name="lost", timezone="UTC", schedule="03:00", grace=H, evidence={"source": "x"}
        ),
    }
    return SnapshotCollector(pollers, clock=clock, jobs=jobs), pollers


async def test_cached_exposition_equals_a_fresh_render_at_every_instant() -> None:
    """A week across the spring DST change: random instants, every deadline, random polls."""
    begin, end = at(2026, 3, 25, 12, 0), at(2026, 4, 2, 12, 0)
    clock = FakeClock(begin)
    world = World(no_starts={"weekly", "nightly"})
    cfg_spec = spec("cfg", "0/6:00", H)
    script(world, [*SPECS, cfg_spec], begin - 2 * 86400, end, seed=7)
    collector, pollers = lab(clock, world)
    lab_poller = pollers[0]
    windows = list(lab_poller.offline)
    rng = random.Random(11)
    walk = sorted(
        instants([*SPECS, cfg_spec], windows, begin, end)
        | {begin + rng.uniform(0, end - begin) for _ in range(400)}
    )
    compared = polls = changes = 0
    last = b""
    seen: set[tuple[str, str]] = set()
    for t in walk:
        clock.now = t
        if rng.random() < 0.1:
            lab_poller.source.error = (  # type: ignore[attr-defined]
                FetchError("timeout", "no answer") if rng.random() < 0.2 else None
            )
            await rng.choice(pollers).poll_once()
            polls += 1
        accept = rng.choice([TEXT, TEXT, OPENMETRICS])
        cached = cached_bytes(collector, accept, gz=rng.random() < 0.3)
        assert cached == fresh_bytes(collector, accept), f"stale exposition at {t}"
        compared += 1
        if accept == TEXT and cached != last:
            changes += 1
            last = cached
            for fam in text_string_to_metric_families(cached.decode()):
                for s in fam.samples:
                    if s.name == "backup_job_state" and s.value == 1:
                        seen.add((s.labels["backup_job"], s.labels["state"]))
                    elif s.name == "backup_source_expected_offline":
                        seen.add(("offline", str(s.value)))
    assert polls > 50
    assert compared == len(walk)
    # The walk did see the exposition change (not a walk over a constant one), every state of
    # a job and both sides of the offline window.
    assert changes > 100
    states = {state for _, state in seen}
    assert {"ok", "running", "late", "overdue", "failed", "unknown"} <= states
    assert {("offline", "0.0"), ("offline", "1.0")} <= seen


async def test_equal_after_every_poll_and_renders_once_per_poll() -> None:
    clock = FakeClock(at(2026, 10, 24, 12, 0))
    world = World()
    script(world, SPECS, clock.now - 86400, clock.now + 3 * 86400, seed=3)
    collector, pollers = lab(clock, world)
    source = pollers[0].source
    assert isinstance(source.renders, int)  # type: ignore[attr-defined]
    for step in range(120):  # 2.5 days across the autumn DST change, a poll every 30 min
        clock.advance(1800)
        await pollers[step % 2].poll_once()
        assert cached_bytes(collector) == fresh_bytes(collector)
        assert cached_bytes(collector, OPENMETRICS, gz=True) == fresh_bytes(collector, OPENMETRICS)
        for _ in range(3):  # more scrapes: the same bytes, no new render
            assert cached_bytes(collector) == fresh_bytes(collector)
    # One render per good poll of the lab, not one per scrape (the lab is polled 60 times).
    assert source.renders == 60  # type: ignore[attr-defined]


async def test_a_deadline_between_two_scrapes_shows_at_the_first_scrape_after_it(
    aiohttp_client: Any,
) -> None:
    clock = FakeClock(at(2026, 3, 28, 23, 0))
    world = World()
    job = spec("nightly", "21:00", 6 * H, 1 * H)
    # Last night's run succeeded; tonight's (21:00) started and is still running.
    world.runs["nightly"] = [
        Run(at(2026, 3, 27, 21, 0), at(2026, 3, 27, 21, 0), at(2026, 3, 27, 22, 0), ok=True),
        Run(at(2026, 3, 28, 21, 0), at(2026, 3, 28, 21, 1), at(2026, 3, 29, 9, 0), ok=True),
    ]
    source = lab_source("lab", [job], world)
    poller = Poller(source, clock=clock)
    await poller.poll_once()
    client: TestClient[Any, Any] = await aiohttp_client(
        create_app(Config(), clock=clock, pollers=[poller], run_pollers=False)
    )
    collector = client.app[COLLECTOR]

    async def overdue() -> float:
        text = await (await client.get("/metrics")).text()
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == "backup_job_overdue":
                    return s.value
        raise AssertionError("no backup_job_overdue")

    deadline = at(2026, 3, 28, 21, 0) + 6 * H  # 04:00 CEST, the night the clocks go forward
    collector.exposition.refresh()
    assert collector.exposition.part("jobs").valid_until == deadline
    clock.now = deadline - 1
    assert await overdue() == 0
    first = collector.exposition.body()
    assert await overdue() == 0
    assert collector.exposition.body() is first, "nothing changed: the same bytes are served"
    clock.now = deadline + 1  # no poll in between: the deadline alone changes the state
    assert await overdue() == 1
    assert collector.exposition.body() is not first
    assert source.renders == 1


async def test_negotiation_gzip_and_name_filter(aiohttp_client: Any) -> None:
    poller = Poller(memory_source(value=4), clock=FakeClock())
    await poller.poll_once()
    client: TestClient[Any, Any] = await aiohttp_client(
        create_app(Config(), pollers=[poller], run_pollers=False)
    )
    plain = await client.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert plain.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "Content-Encoding" not in plain.headers
    body = await plain.read()
    zipped = await client.get(
        "/metrics", headers={"Accept-Encoding": "gzip, deflate"}, auto_decompress=False
    )
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(await zipped.read()) == body
    om = await client.get(
        "/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0", "Accept-Encoding": ""},
    )
    assert om.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert (await om.text()).endswith("# EOF\n")
    only = await client.get("/metrics?name[]=backup_test_value&name[]=backup_source_up")
    names = {f.name for f in text_string_to_metric_families(await only.text())}
    assert names == {"backup_test_value", "backup_source_up"}


def test_next_change_is_never_late() -> None:
    """Between ``now`` and ``next_change(now)`` the status does not change, for any evidence."""
    rng = random.Random(5)
    base = at(2026, 3, 28, 0, 0)
    tight = cases = 0
    for job in SPECS:
        for _ in range(200):
            now = base + rng.uniform(0, 3 * 86400)
            ev = rng.choice(
                [
                    Evidence(),
                    Evidence(last_success=now - rng.uniform(0, 86400)),
                    Evidence(last_start=now - 600, tracks_start=True),
                ]
            )
            before = evaluate(job, ev, now)
            change = before.next_change(now)
            assert change > now - 1e-6
            for t in (now + (change - now) * f for f in (0.25, 0.5, 0.999)):
                assert evaluate(job, ev, t) == before
            assert change <= (before.next_start or float("inf"))
            cases += 1
            tight += evaluate(job, ev, change + 1) != before
    # Mostly the status does change right after (the bound is not merely safe but close).
    assert tight > cases / 2


def test_offline_window_edges() -> None:
    windows = [OfflineWindow(parse_schedule("22:00", BERLIN), 10 * H)]
    now = at(2026, 3, 28, 12, 0)
    edge = next_edge(windows, now)
    assert edge == at(2026, 3, 28, 22, 0)
    assert not expected_offline(windows, edge - 1e-3) and expected_offline(windows, edge)
    # Across the spring-forward night the duration is real time: 22:00 + 10 h is 09:00.
    end = next_edge(windows, edge)
    assert end == at(2026, 3, 29, 9, 0)
    assert expected_offline(windows, end - 1e-3) and not expected_offline(windows, end)


def test_a_part_plugs_in_with_one_line() -> None:
    clock = FakeClock(100.0)
    exposition = Exposition(clock)
    version = [object()]
    builds: list[float] = []

    def build(now: float) -> Rendered:
        builds.append(now)
        fam = GaugeMetricFamily("backup_test_part", "A part.", labels=["n"])
        fam.add_metric([str(len(builds))], now)
        return Rendered([fam], valid_until=now + 10)

    part = exposition.add(Part("test", build, key=lambda: tuple(version)))
    first = exposition.body()
    assert exposition.body() is first and builds == [100.0]
    clock.now = 109.9
    assert exposition.body() is first
    clock.now = 110.0  # valid_until reached
    assert exposition.body() is not first and builds == [100.0, 110.0]
    version[0] = object()  # the key changed
    exposition.body()
    part.invalidate()
    exposition.body()
    assert len(builds) == 4
    second = exposition.body()
    assert b'backup_test_part{n="4"} 110.0' in second.data

    def broken(_now: float) -> Rendered:
        raise RuntimeError("bug")

    exposition.add(Part("broken", broken))
    assert b"backup_test_part" in exposition.body().data  # the others still served


def test_a_stale_key_object_is_not_mistaken_for_a_new_one() -> None:
    """Keys are compared by identity and kept alive: a freed id can't be reused unseen."""
    exposition = Exposition(FakeClock())
    holder: list[Any] = [[1]]
    calls = []
    exposition.add(Part("p", lambda now: calls.append(now) or [], key=lambda: (holder[0],)))
    exposition.refresh()
    for _ in range(50):
        holder[0] = [1]  # equal value, new object: rebuilt every time
        exposition.refresh()
    assert len(calls) == 51
