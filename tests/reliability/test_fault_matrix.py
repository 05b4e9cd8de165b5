"""The fault matrix: every kind x every fault a homelab produces, through the real clients.

Each cell, for one kind and one fault:

1. a good poll, and the kind's last-known backup timestamps noted;
2. the fault injected; a poll runs while ``/metrics`` is scraped (each answer within 100 ms)
   and another source polls beside it (it stays up);
3. the source is down with the fault's reason, the timestamps are still exported;
4. a second failing poll (for a ``Retry-After`` fault: before it ends, and no request reaches
   the backend) logs nothing new: one log line per failure;
5. the fault cleared, the next poll recovers by itself and logs it once.

The table (kind x fault) prints in the test summary (conftest ``pytest_terminal_summary``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from exporter.core.app import create_app
from exporter.core.clock import FakeClock
from exporter.core.config import parse_config
from exporter.core.poller import Poller
from reliability.faults import RETRY_AFTER, StubResolver
from reliability.matrix_table import CELLS
from reliability.rigs import (
    ALL_FAULTS,
    RETRY_FAULTS,
    B2Rig,
    FilesRig,
    HealthchecksRig,
    ProxiedRig,
    ProxmoxRig,
    Rig,
    S3Rig,
    SmartctlRig,
    TrueNASRig,
    ZfsRig,
)
from tests.conftest import memory_source

ClientFactory = Callable[[Any], Awaitable[TestClient[Any, Any]]]
STEP = 600.0  # seconds of fake time between polls (past every bucket interval)
SCRAPE_LIMIT = 0.1
OWN = ("backup_source_", "backup_exporter_", "backup_job_", "backup_target_", "backup_state_")

RIGS: dict[str, type[Rig]] = {
    "proxmox": ProxmoxRig,
    "truenas": TrueNASRig,
    "healthchecks": HealthchecksRig,
    "s3": S3Rig,
    "b2": B2Rig,
    "zfs": ZfsRig,
    "smartctl": SmartctlRig,
    "files": FilesRig,
}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def backup_timestamps(
    scraped: dict[tuple[str, frozenset[tuple[str, str]]], float],
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The kind's own ``*_timestamp_seconds`` series (not the health or job families)."""
    return {
        k: v
        for k, v in scraped.items()
        if k[0].endswith("_timestamp_seconds") and not k[0].startswith(OWN)
    }


def down_reason(
    scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str
) -> str | None:
    """The reason the source (or, when the source is up, every one of its targets) is down."""
    for (metric, labels), value in scraped.items():
        lab = dict(labels)
        if metric == "backup_source_error_info" and lab.get("source") == name and value == 1:
            return lab["reason"]
    targets = {
        dict(labels).get("target"): value
        for (metric, labels), value in scraped.items()
        if metric == "backup_target_up" and dict(labels).get("source") == name
    }
    if targets and not any(targets.values()):
        for (metric, labels), _ in scraped.items():
            lab = dict(labels)
            if metric == "backup_target_error_info" and lab.get("source") == name:
                return lab["reason"]
    return None


def why(poller: Poller) -> str:
    """The source's error, else its failed targets' messages."""
    if poller.state.error is not None:
        return str(poller.state.error)
    targets = getattr(poller.state.snapshot, "targets", ()) or ()
    return "; ".join(f"{t.target}: {t.reason}: {t.message}" for t in targets if not t.up)


class Cell(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Cell(message)


async def scrape(client: TestClient[Any, Any]) -> tuple[float, str]:
    started = time.perf_counter()
    resp = await client.get("/metrics")
    text = await resp.text()
    elapsed = time.perf_counter() - started
    check(resp.status == 200, f"/metrics answered {resp.status}")
    return elapsed, text


def poller_lines(caplog: pytest.LogCaptureFixture, name: str, needle: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "exporter.core.poller" and f"source={name} " in r.getMessage()
        and needle in r.getMessage() and r.levelno >= logging.INFO
    ]  # fmt: skip


async def run_cell(
    rig: Rig,
    fault: str,
    *,
    client: TestClient[Any, Any],
    poller: Poller,
    other: Poller,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> str:
    name = poller.name
    expected = rig.reasons[fault]
    clock.advance(STEP)
    state = await poller.poll_once()
    check(state.up, f"the healthy poll failed first: {state.error}")
    _, text = await scrape(client)
    known = backup_timestamps(samples(text))
    check(bool(known), "no backup timestamp exported when healthy")
    caplog.clear()

    await rig.inject(fault)
    clock.advance(STEP)
    polling = asyncio.create_task(poller.poll_once())
    times: list[float] = []
    while not polling.done() or len(times) < 5:
        elapsed, _ = await scrape(client)
        times.append(elapsed)
        other_state = await other.poll_once()
        check(other_state.up, "the other source went down")
        await asyncio.sleep(0.02)
    await polling
    # The fakes and the proxy share this event loop (a real exporter has its own process),
    # so a scrape may queue behind them on a loaded machine: the median within 100 ms,
    # none stuck behind the faulty poll.
    times.sort()
    median = times[len(times) // 2]
    if os.environ.get("MATRIX_DEBUG"):
        print(rig.kind, fault, [round(t * 1000) for t in times])
    check(median < SCRAPE_LIMIT, f"scrapes took {median * 1000:.0f} ms (median) in the fault")
    check(times[-1] < 1.5, f"a scrape took {times[-1] * 1000:.0f} ms during the fault")
    _, text = await scrape(client)
    during = samples(text)
    reason = down_reason(during, name)
    check(reason == expected, f"reason {reason!r}, expected {expected!r}: {why(poller)}")
    check(backup_timestamps(during) == known, "last-known backup timestamps changed or vanished")
    check(
        during.get(("backup_test_value", frozenset({("source", "other")}))) == 1.0,
        "the other source's series are gone",
    )

    hits = rig.hits()
    if fault in RETRY_FAULTS and poller.state.error is not None:
        check(poller.deferred() > RETRY_AFTER - 10, f"Retry-After not honoured ({fault})")
        clock.advance(RETRY_AFTER - 5)
        await poller.poll_once()
        check(rig.hits() == hits, "a request was made before Retry-After ended")
        clock.advance(10)
    else:
        clock.advance(STEP)
        await poller.poll_once()
    _, text = await scrape(client)
    check(down_reason(samples(text), name) == expected, "up again with the fault still on")
    failed = poller_lines(caplog, name, " failed reason=")
    check(len(failed) == 1, f"{len(failed)} failure log lines for 2 failed polls")

    await rig.heal()
    clock.advance(STEP)
    state = await poller.poll_once()
    for _ in range(3):
        if state.up:
            break
        # A worker thread may still be finishing the call the timeout abandoned.
        await asyncio.sleep(0.5)
        clock.advance(STEP)
        state = await poller.poll_once()
    check(state.up, f"did not recover: {state.error}")
    _, text = await scrape(client)
    check(down_reason(samples(text), name) is None, "still reported down after recovery")
    recovered = poller_lines(caplog, name, "recovered")
    check(len(recovered) == 1, f"{len(recovered)} recovery log lines")
    check(not rig.leftovers(), f"processes left running: {rig.leftovers()}")
    return f"ok {expected}"


@pytest.mark.parametrize("kind", list(RIGS))
async def test_fault_matrix(
    kind: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    aiohttp_client: ClientFactory,
) -> None:
    caplog.set_level(logging.INFO)
    clock = FakeClock(start=1_780_000_000.0)
    resolver = StubResolver(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    rig: Rig
    if kind == "files":
        rig = FilesRig(tmp_path, clock, monkeypatch.setenv)
    else:
        rig = RIGS[kind](tmp_path, clock)
    if isinstance(rig, ProxiedRig):
        rig.resolver = resolver
    poller: Poller | None = None
    try:
        doc = await rig.start()
        cfg = parse_config(yaml.safe_dump({"sources": {"faulty": doc}}), base_dir=tmp_path)
        poller = Poller(rig.build(cfg.sources["faulty"]), clock=clock)
        other = Poller(memory_source("other"), clock=clock)
        client = await aiohttp_client(
            create_app(cfg, clock=clock, pollers=[poller, other], run_pollers=False)
        )
        failures = []
        for fault in ALL_FAULTS:
            if fault in rig.na:
                CELLS[(kind, fault)] = f"n/a: {rig.na[fault]}"
                continue
            try:
                CELLS[(kind, fault)] = await run_cell(
                    rig, fault, client=client, poller=poller, other=other, clock=clock,
                    caplog=caplog,
                )  # fmt: skip
            except Cell as exc:
                CELLS[(kind, fault)] = f"FAIL: {exc}"
                failures.append(f"{fault}: {exc}")
                await rig.heal()
                poller.not_before = None
        assert not failures, "\n".join(failures)
    finally:
        if poller is not None:
            await poller.source.close()  # the app closes sources only of pollers it runs
        await rig.stop()
