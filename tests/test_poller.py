from __future__ import annotations

import asyncio
import logging
import random

import pytest
from conftest import memory_source

from exporter.core.clock import FakeClock
from exporter.core.poller import Poller
from exporter.sources.base import FetchError


async def test_success_records_snapshot_time_and_requests() -> None:
    clock = FakeClock(start=1_800_000_000)
    src = memory_source(value=7)
    poller = Poller(src, clock=clock)
    state = await poller.poll_once()
    assert state.up and state.polled
    assert state.snapshot.value == 7
    assert state.last_success == 1_800_000_000
    assert poller.requests[""] == 1


async def test_failure_keeps_last_good_snapshot(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="exporter.core.poller")
    clock = FakeClock()
    src = memory_source(value=1)
    poller = Poller(src, clock=clock)
    await poller.poll_once()
    first_success = poller.state.last_success
    clock.advance(300)
    src.value = 2
    src.error = FetchError("connection", "connection refused")
    for _ in range(3):
        state = await poller.poll_once()
    assert not state.up
    assert state.reason == "connection"
    assert state.snapshot.value == 1, "the last good snapshot must stay"
    assert state.last_success == first_success
    failures = [r for r in caplog.records if "poll failed" in r.getMessage()]
    assert len(failures) == 1, "a persisting failure is logged once, not on every poll"
    src.error = FetchError("auth", "401")
    await poller.poll_once()
    src.error = None
    clock.advance(300)
    state = await poller.poll_once()
    assert state.up and state.snapshot.value == 2
    messages = [r.getMessage() for r in caplog.records]
    assert sum("poll failed" in m for m in messages) == 2, "a new reason is a new failure"
    assert sum("recovered" in m for m in messages) == 1


async def test_timeout_becomes_reason_timeout() -> None:
    src = memory_source(timeout=0.05)
    src.hang.clear()
    poller = Poller(src, clock=FakeClock())
    state = await poller.poll_once()
    assert state.reason == "timeout"
    assert state.error is not None and "0.05s" in state.error.message


async def test_unexpected_exception_is_contained(caplog: pytest.LogCaptureFixture) -> None:
    src = memory_source()
    src.crash = KeyError("nodes?token=canary-in-args")
    poller = Poller(src, clock=FakeClock())
    state = await poller.poll_once()
    assert state.reason == "parse"
    await poller.poll_once()  # the same crash again: not logged again
    lines = [r.getMessage() for r in caplog.records if r.name == "exporter.core.poller"]
    assert len(lines) == 1, lines
    # The traceback (where it was raised) is logged, the exception's arguments are not.
    assert "in fetch" in lines[0] and "builtins.KeyError" in lines[0]
    assert "canary-in-args" not in caplog.text


async def test_never_overlaps_itself() -> None:
    src = memory_source()
    src.hang.clear()
    poller = Poller(src, clock=FakeClock())
    tasks = [asyncio.create_task(poller.poll_once()) for _ in range(3)]
    while src.calls == 0:
        await asyncio.sleep(0)
    src.hang.set()
    await asyncio.gather(*tasks)
    assert src.calls == 3
    assert src.max_active == 1


async def test_run_loop_sleeps_interval_plus_jitter() -> None:
    src = memory_source(jitter=10.0)
    delays: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 3:
            raise asyncio.CancelledError

    cfg = src.config
    poller = Poller(src, clock=FakeClock(), sleep=fake_sleep, rng=random.Random(4))
    with pytest.raises(asyncio.CancelledError):
        await poller.run()
    assert src.calls == 3
    assert all(cfg.interval <= d <= cfg.interval + 10 for d in delays)
    assert len(set(delays)) > 1, "jitter varies the delay"
