"""``make demo``: the exporter against the simulated homelab, with Prometheus and Alertmanager.

Everything listens on 127.0.0.1 only. Prometheus and Alertmanager are started when the
Debian packages are installed (``make debs``); the Alertmanager's receivers all point at a
webhook inside this process, which prints each notification.

``--speed N`` runs simulated time N times faster: the fakes' schedules (PVE's vzdump job,
TrueNAS's snapshots, cloud syncs and scrubs, the Healthchecks pings) and the exporter's
deadlines follow it, the pollers wait N times less, and a scenario breaks and repairs things on
a four-day cycle (the PVE backup fails on day 1 and recovers on day 2; the B2 cloud sync fails
on day 3 and recovers on day 4), so jobs run, fail and recover within minutes. Prometheus keeps
real time: the exporter's own judgments (overdue, failed, asset states) follow the simulated
clock, while rules that compare timestamps with Prometheus' ``time()`` see them in the future.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from exporter.core.app import create_app, status_document
from exporter.core.clock import Clock, SystemClock
from exporter.core.state import StateKeeper
from exporter.sim.homelab import Homelab, start_homelab
from exporter.sim.stack import (
    Daemon,
    StackError,
    fast_rules,
    local_alertmanager_config,
    prometheus_config,
    start_alertmanager,
    start_prometheus,
)

log = logging.getLogger("exporter.sim.demo")

DEMO_FOR_SECONDS = 30  # the demo's alerts wait this long, not their real ``for:``
EXPORTER_PORT = 9879
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
WEBHOOK_PORT = 9880


async def _notification(request: web.Request) -> web.Response:
    payload = await request.json()
    for alert in payload.get("alerts", []):
        labels = alert.get("labels", {})
        print(
            f"[alertmanager] {alert.get('status', '?').upper():8} {labels.get('alertname')} "
            f"{json.dumps({k: v for k, v in labels.items() if k != 'alertname'})}",
            flush=True,
        )
    return web.Response(text="ok")


class SpeedClock:
    """Wall-clock time running ``speed`` times faster from the instant it is made."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._t0 = time.time()
        self._m0 = time.monotonic()

    def time(self) -> float:
        """Return the simulated wall-clock time."""
        return self._t0 + (time.time() - self._t0) * self.speed

    def monotonic(self) -> float:
        """Return the real monotonic time (poll durations stay real)."""
        return time.monotonic()


def _scaled_sleep(speed: float) -> Any:
    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds / speed)

    return sleep


DAY = 86400.0
B2_TASK = "B2 daily"  # the TrueNAS cloud-sync task of the simulated homelab


def scenario_day(lab: Homelab, day: int, at: float) -> str:
    """Apply day ``day`` of the four-day cycle at simulated time ``at``; say what changed."""
    phase = day % 4
    said = ""
    if phase == 1:
        lab.pve_scenario.break_backups()
        said = "PVE backups start failing"
    elif phase == 2:
        lab.pve_scenario.repair()
        said = "PVE backups repaired"
    elif phase == 3:
        lab.truenas_scenario.fail_cloudsync(B2_TASK)
        said = "the B2 cloud sync starts failing"
    elif phase == 0 and day:
        lab.truenas_scenario.repair_cloudsync(B2_TASK)
        said = "the B2 cloud sync repaired"
    if day:
        lab.write_ha_backup(at)
    return said


async def _scenario(lab: Homelab, clock: Clock, speed: float) -> None:
    """Break and repair things on a four-day simulated cycle; write the daily HA backup."""
    start = clock.time()
    done = -1
    while True:
        day = int((clock.time() - start) // DAY)
        if day != done:
            done = day
            said = scenario_day(lab, day, clock.time())
            if said:
                print(f"[scenario] day {day}: {said}", flush=True)
        await asyncio.sleep(max(0.2, 600.0 / speed))


async def _print_verdict(app: web.Application, pollers: list[Any]) -> None:
    """Wait (bounded) for every source's first poll, then print the verdict and first actions."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(60):
            await asyncio.gather(*(p.polled.wait() for p in pollers))
    doc = status_document(app)
    lines = [f"Verdict: {doc['verdict']['text']}"]
    lines += [f"  {p['priority']}. {p['text']}" for p in doc["problems"][:8]]
    print("\n".join(lines) + "\n", flush=True)


async def run(workdir: Path, *, with_stack: bool, speed: float = 1.0) -> None:
    """Run until SIGINT/SIGTERM."""
    clock: Clock = SystemClock() if speed == 1 else SpeedClock(speed)
    lab = await start_homelab(workdir, clock=clock)
    tasks: list[asyncio.Task[None]] = []
    runners: list[web.AppRunner] = []
    daemons: list[Daemon] = []
    try:
        # The demo remembers across restarts, like a real deployment (workdir/state.db).
        keeper = StateKeeper(lab.config.state_path or workdir / "state.db")
        sleep = None if speed == 1 else _scaled_sleep(speed)
        pollers = lab.pollers(keeper, sleep=sleep)
        app = create_app(lab.config, clock=clock, pollers=pollers, keeper=keeper)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", EXPORTER_PORT).start()
        runners.append(runner)
        urls = [
            f"exporter      http://127.0.0.1:{EXPORTER_PORT}/  (metrics: /metrics)",
            f"config        {lab.config_path}",
            f"fake PVE      {lab.pve.url}  token {lab.pve.token_id}",
            f"fake TrueNAS  {lab.truenas.url}",
            f"S3 (Storj)    http://127.0.0.1:{lab.moto_port}",
            f"Healthchecks  {lab.healthchecks.url}",
        ]
        if with_stack:
            try:
                hook = web.Application()
                hook.router.add_post("/hook", _notification)
                hook_runner = web.AppRunner(hook, access_log=None)
                await hook_runner.setup()
                await web.TCPSite(hook_runner, "127.0.0.1", WEBHOOK_PORT).start()
                runners.append(hook_runner)
                am_config = local_alertmanager_config(f"http://127.0.0.1:{WEBHOOK_PORT}/hook")
                daemons.append(
                    await start_alertmanager(
                        workdir / "alertmanager", port=ALERTMANAGER_PORT, config=am_config
                    )
                )
                prom = prometheus_config(
                    exporter=f"127.0.0.1:{EXPORTER_PORT}",
                    alertmanager=f"127.0.0.1:{ALERTMANAGER_PORT}",
                    # The shipped rules with every ``for:`` at 30 s, so the homelab's problems
                    # fire within a minute (promtool's tests cover the real durations).
                    rule_files=fast_rules(workdir / "rules", for_seconds=DEMO_FOR_SECONDS),
                    interval="10s",
                )
                daemons.append(
                    await start_prometheus(
                        workdir / "prometheus", port=PROMETHEUS_PORT, config=prom
                    )
                )
                urls += [
                    f"prometheus    http://127.0.0.1:{PROMETHEUS_PORT}/classic/alerts",
                    f"alertmanager  http://127.0.0.1:{ALERTMANAGER_PORT}/api/v2/alerts",
                ]
            except StackError as exc:
                log.warning("running without Prometheus/Alertmanager: %s", exc)
        if speed != 1:
            urls.append(f"speed         simulated time runs {speed:g}x faster")
            tasks.append(asyncio.create_task(_scenario(lab, clock, speed)))
        print("\nThe simulated homelab is up:\n  " + "\n  ".join(urls), flush=True)
        await _print_verdict(app, pollers)
        print("Press Ctrl-C to stop.\n", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        for daemon in reversed(daemons):
            daemon.stop()
        for runner in reversed(runners):
            await runner.cleanup()
        await lab.stop()


def main(workdir: Path, *, with_stack: bool, speed: float = 1.0) -> int:
    """Run until SIGINT/SIGTERM, state in ``workdir``: ``backup-exporter demo`` parses the flags."""
    asyncio.run(run(workdir.resolve(), with_stack=with_stack, speed=speed))
    return 0


if __name__ == "__main__":
    from exporter.core.cli import main as cli_main

    raise SystemExit(cli_main(["demo", *sys.argv[1:]]))
