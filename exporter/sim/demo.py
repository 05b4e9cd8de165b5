"""``make demo``: the exporter against the simulated homelab, with Prometheus and Alertmanager.

Everything listens on 127.0.0.1 only. Prometheus and Alertmanager are started when the
Debian packages are installed (``make debs``); the Alertmanager's receivers all point at a
webhook inside this process, which prints each notification.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

from aiohttp import web

from exporter.core.app import create_app
from exporter.core.clock import SystemClock
from exporter.core.state import StateKeeper
from exporter.sim.homelab import start_homelab
from exporter.sim.stack import (
    ALERTS_DIR,
    Daemon,
    StackError,
    local_alertmanager_config,
    prometheus_config,
    start_alertmanager,
    start_prometheus,
)

log = logging.getLogger("exporter.sim.demo")

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


async def run(workdir: Path, *, with_stack: bool) -> None:
    """Run until SIGINT/SIGTERM."""
    clock = SystemClock()
    lab = await start_homelab(workdir, clock=clock)
    runners: list[web.AppRunner] = []
    daemons: list[Daemon] = []
    try:
        # The demo remembers across restarts, like a real deployment (workdir/state.db).
        keeper = StateKeeper(lab.config.state_path or workdir / "state.db")
        app = create_app(lab.config, clock=clock, pollers=lab.pollers(keeper), keeper=keeper)
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
                    rule_files=sorted(ALERTS_DIR.glob("*.rules.yml")),
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
        print("\nThe simulated homelab is up:\n  " + "\n  ".join(urls), flush=True)
        print("Press Ctrl-C to stop.\n", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        for daemon in reversed(daemons):
            daemon.stop()
        for runner in reversed(runners):
            await runner.cleanup()
        await lab.stop()


def main(workdir: Path, *, with_stack: bool) -> int:
    """Run until SIGINT/SIGTERM, state in ``workdir``: ``backup-exporter demo`` parses the flags."""
    asyncio.run(run(workdir.resolve(), with_stack=with_stack))
    return 0


if __name__ == "__main__":
    from exporter.core.cli import main as cli_main

    raise SystemExit(cli_main(["demo", *sys.argv[1:]]))
