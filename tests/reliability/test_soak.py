"""Soak: the simulated homelab polled every few seconds, scraped continuously, faults flapping.

The exporter app runs its real pollers (real clock, intervals of 2-4 s, timeouts of 1.5 s)
against every fake; a scraper hammers ``/metrics`` and the status page; a chaos task stops
and restarts the PVE fake, hangs and releases TrueNAS and makes Healthchecks answer 503;
every few seconds the app is shut down and a new one starts on the same state database.
Asserted at the end: no 5xx ever; after warm-up the live Python heap (tracemalloc) grew less
than 1 MiB, asyncio tasks, threads and file descriptors did not grow, and in the long soak
(``SOAK_SECONDS`` >= 300) RSS grew less than 5 %; ``PRAGMA integrity_check`` is ``ok``.

``SOAK_SECONDS`` sets the length (``make soak``: 600 s); ``make test`` runs 40 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import random
import sqlite3
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp.test_utils import TestClient, TestServer

from exporter.core.app import create_app
from exporter.core.clock import SystemClock
from exporter.core.config import parse_config
from exporter.core.state import StateKeeper
from exporter.sim.homelab import Homelab, start_homelab

SECONDS = float(os.environ.get("SOAK_SECONDS", "40"))
RESTART_EVERY = max(8.0, SECONDS / 8)
INTERVALS = {"pve1": "2s", "truenas": "3s", "smart": "4s", "healthchecks": "2s",
             "ha-backups": "2s", "b2": "3s", "storj": "3s"}  # fmt: skip


@dataclass
class Usage:
    rss: int
    tasks: int
    threads: int
    fds: int


def _trim() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``), so RSS is live memory."""
    # Not glibc: RSS then includes the allocator's cache.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def usage() -> Usage:
    gc.collect()
    _trim()
    rss = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return Usage(
        rss=rss,
        tasks=len(asyncio.all_tasks()),
        threads=threading.active_count(),
        fds=len(os.listdir("/proc/self/fd")),
    )


async def settle(check: Callable[[], bool], limit: float = 10.0) -> bool:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


def soak_config(lab: Homelab, state: Path) -> Any:
    doc = yaml.safe_load(lab.config_path.read_text())
    doc["state_path"] = str(state)
    for name, src in doc["sources"].items():
        src["interval"] = INTERVALS[name]
        src["timeout"] = "1500ms"
        src["jitter"] = "100ms"
        for bucket in src.get("buckets", {}).values():
            bucket["interval"] = "1s"
            bucket.pop("restore_check", None)
    return parse_config(yaml.safe_dump(doc), base_dir=lab.workdir)


async def chaos(lab: Homelab, stop: asyncio.Event, rng: random.Random) -> int:
    """Flap a fault every ~0.7 s; return how many were injected."""
    flips = 0
    pve_down = nas_hung = False
    while not stop.is_set():
        pick = rng.choice(["pve", "nas", "hc", "none"])
        if pick == "pve":
            if pve_down:
                await lab.pve.restart()
            else:
                await lab.pve.stop()
            pve_down = not pve_down
        elif pick == "nas":
            if nas_hung:
                lab.truenas_scenario.release()
            else:
                lab.truenas_scenario.hang()
            nas_hung = not nas_hung
        elif pick == "hc":
            lab.healthchecks.scenario.errors.extend([503, 503])
        flips += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.7)
    if pve_down:
        await lab.pve.restart()
    lab.truenas_scenario.release()
    return flips


async def scrape_loop(
    client: TestClient[Any, Any], stop: asyncio.Event, statuses: list[int]
) -> None:
    pages = ["/metrics", "/metrics", "/metrics", "/", "/-/ready"]
    i = 0
    while not stop.is_set():
        resp = await client.get(pages[i % len(pages)])
        await resp.read()
        statuses.append(resp.status if resp.url.path != "/-/ready" else min(resp.status, 299))
        i += 1


async def run_app(
    lab: Homelab, state: Path, seconds: float, statuses: list[int], polls: list[str]
) -> None:
    """One exporter lifetime: start on the state db, serve and poll ``seconds``, shut down."""
    config = soak_config(lab, state)
    keeper = StateKeeper(state)
    lab.config = config
    pollers = lab.pollers(keeper)
    for poller in pollers:
        poll = poller._poll

        async def counted(
            poll: Callable[[], Awaitable[None]] = poll, name: str = poller.name
        ) -> None:
            polls.append(name)
            await poll()

        poller._poll = counted  # type: ignore[method-assign]
    app = create_app(config, clock=SystemClock(), pollers=pollers, keeper=keeper)
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    stop = asyncio.Event()
    scrapers = [asyncio.create_task(scrape_loop(client, stop, statuses)) for _ in range(3)]
    try:
        await asyncio.sleep(seconds)
    finally:
        stop.set()
        await asyncio.gather(*scrapers)
        await client.close()
        # The fakes log every request they serve (for other tests): not the exporter's memory.
        lab.pve.scenario.requests.clear()
        lab.healthchecks.scenario.requests.clear()


async def test_soak(tmp_path: Path) -> None:
    lab = await start_homelab(tmp_path / "lab", clock=SystemClock(), healthy=True)
    state = tmp_path / "state.db"
    statuses: list[int] = []
    polls: list[str] = []
    rng = random.Random(16)
    stop = asyncio.Event()
    flapping = asyncio.create_task(chaos(lab, stop, rng))
    started = time.monotonic()
    try:
        # Warm-up: a third of the run, at least three lifetimes (caches, first listings, SDK
        # models loaded), then the baseline.
        warm = 0
        while warm < 3 or time.monotonic() - started < SECONDS / 3:
            await run_app(lab, state, RESTART_EVERY / 2, statuses, polls)
            warm += 1
        base = usage()
        tracemalloc.start()
        heap = tracemalloc.get_traced_memory()[0]
        lifetimes = 0
        trend = [base.rss]
        while time.monotonic() - started < SECONDS:
            await run_app(lab, state, RESTART_EVERY, statuses, polls)
            lifetimes += 1
            trend.append(usage().rss)
        stop.set()
        flips = await flapping
        # Abandoned worker threads (a poll cut at its timeout) end with their call.
        settled = await settle(lambda: threading.active_count() <= base.threads)
        end = usage()
        heap = tracemalloc.get_traced_memory()[0] - heap
        tracemalloc.stop()
    finally:
        stop.set()
        if not flapping.done():
            await flapping
        await lab.stop()

    print(
        f"\nsoak: {SECONDS:.0f}s, {len(statuses)} requests, {len(polls)} polls, "
        f"{lifetimes + warm} app lifetimes, "
        f"{flips} faults; RSS {base.rss / 2**20:.1f} -> {end.rss / 2**20:.1f} MiB, tasks "
        f"{base.tasks} -> {end.tasks}, threads {base.threads} -> {end.threads}, fds "
        f"{base.fds} -> {end.fds}; Python heap +{heap / 2**10:.0f} KiB; RSS per lifetime (MiB): "
        f"{[round(r / 2**20, 1) for r in trend]}"
    )
    # (/-/ready answers 503 by design until every first poll: counted as an answer.)
    assert len(statuses) >= 12 * SECONDS, f"only {len(statuses)} requests in {SECONDS:.0f}s"
    assert flips >= 10
    assert len(polls) >= 100, f"only {len(polls)} polls"
    assert all(s < 500 for s in statuses), sorted(set(statuses))
    # Live Python objects must not grow; RSS (this process also runs the fakes, moto and the
    # b2sdk simulator, and each lifetime builds new SDK clients) is held to 5 % in the long
    # soak, once allocator high-water marks have settled.
    assert heap < 2**20, f"the Python heap grew {heap / 2**10:.0f} KiB after warm-up"
    if SECONDS >= 300:
        assert end.rss < base.rss * 1.05, f"RSS grew {end.rss / base.rss - 1:.1%}"
    assert end.tasks <= base.tasks, (base.tasks, end.tasks)
    assert settled, f"threads grew: {base.threads} -> {end.threads}"
    # A leak grows with each lifetime; one lazily opened file (tzdata, urandom) is not one.
    assert end.fds <= base.fds + 1, (base.fds, end.fds)
    with sqlite3.connect(state) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
