"""``demo --speed N``: simulated time runs N times faster, so jobs run, fail and recover."""

from __future__ import annotations

import asyncio
from pathlib import Path

from exporter.core.app import COLLECTOR, create_app
from exporter.core.clock import FakeClock
from exporter.sim.demo import DAY, SpeedClock, _scaled_sleep, scenario_day
from exporter.sim.homelab import start_homelab

NOW = 1_795_700_000.0  # 2026-11-26 13:33 UTC


def test_speed_clock_runs_n_times_faster() -> None:
    clock = SpeedClock(1000.0)
    t0, m0 = clock.time(), clock.monotonic()
    while clock.monotonic() - m0 < 0.01:
        pass
    elapsed = clock.monotonic() - m0
    assert clock.time() - t0 >= 1000.0 * elapsed * 0.99


async def test_scaled_sleep_waits_n_times_less() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await _scaled_sleep(1000.0)(2.0)  # 2 simulated seconds
    assert loop.time() - started < 1.0


async def test_the_scenario_makes_the_pve_job_fail_then_recover(tmp_path: Path) -> None:
    """Day by day as the demo's clock runs: the PVE job fails on day 1 and recovers on day 2."""
    clock = FakeClock(start=NOW)
    lab = await start_homelab(tmp_path / "lab", clock=clock)
    pollers = lab.pollers()
    app = create_app(lab.config, clock=clock, pollers=pollers, run_pollers=False)
    pve = next(p for p in pollers if p.name == "pve1")
    states = []
    try:
        for day in range(4):
            assert "PVE" in scenario_day(lab, day, clock.time()) or day in (0, 3)
            clock.advance(DAY)
            await pve.poll_once()
            status = next(
                s for s in app[COLLECTOR].job_statuses()
                if s.spec.source == "pve1" and s.spec.labels.get("vmid") == "100"
            )  # fmt: skip
            states.append(status.state)
    finally:
        for poller in pollers:
            await poller.source.close()
        await lab.stop()
    # Day 0 healthy; day 1's 21:00 run fails; day 2 repaired, its run succeeds.
    assert states[0] == "ok" and states[1] == "failed" and states[2] == "ok", states
