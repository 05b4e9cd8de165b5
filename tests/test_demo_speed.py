"""``demo --speed N``: simulated time runs N times faster, so jobs run, fail and recover."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from exporter.core.app import COLLECTOR, create_app
from exporter.sim.demo import SpeedClock, _scaled_sleep, _scenario
from exporter.sim.homelab import start_homelab

SPEED = 50_000.0  # a simulated day in 1.7 real seconds


def test_speed_clock_runs_n_times_faster() -> None:
    clock = SpeedClock(1000.0)
    t0, m0 = clock.time(), clock.monotonic()
    while clock.monotonic() - m0 < 0.01:
        pass
    elapsed = clock.monotonic() - m0
    assert clock.time() - t0 >= 1000.0 * elapsed * 0.99


async def test_pve_job_fails_then_recovers_within_seconds(tmp_path: Path) -> None:
    clock = SpeedClock(SPEED)
    lab = await start_homelab(tmp_path / "lab", clock=clock)
    pollers = lab.pollers(sleep=_scaled_sleep(SPEED))
    app = create_app(lab.config, clock=clock, pollers=pollers)
    scenario = asyncio.create_task(_scenario(lab, clock, SPEED))
    tasks = [asyncio.create_task(p.run()) for p in pollers]
    seen: list[str] = []
    try:
        async with asyncio.timeout(60):
            while "failed" not in seen or seen[-1] != "ok":
                statuses = [
                    s for s in app[COLLECTOR].job_statuses()
                    if s.spec.source == "pve1" and s.spec.labels.get("vmid") == "100"
                ]  # fmt: skip
                state = statuses[0].state if statuses else "unknown"
                if not seen or seen[-1] != state:
                    seen.append(state)
                await asyncio.sleep(0.1)  # polling a condition on a running system
    finally:
        for task in [scenario, *tasks]:
            task.cancel()
        for task in [scenario, *tasks]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for p in pollers:
            await p.source.close()
        await lab.stop()
    assert "failed" in seen and seen[-1] == "ok", seen
    assert seen.index("failed") < len(seen) - 1
