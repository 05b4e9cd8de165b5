"""The whole path, live: simulated homelab → exporter → Prometheus → Alertmanager → webhook.

One stack per module (real Debian ``prometheus`` and ``prometheus-alertmanager`` on
127.0.0.1, stopped at the end), shared by:

* the alert flow: break one backup in the simulator, the right alert arrives with its labels
  and runbook URL, the repair resolves it, and nothing but the Watchdog fired otherwise;
* the cross-check that every metric named by a rule or a dashboard panel is exported;
* every dashboard panel query returning a valid, non-empty result.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from promql_names import metric_names_in, recorded_names, rule_queries
from test_dashboards import load_generator

from exporter.core.app import create_app
from exporter.core.clock import SystemClock
from exporter.core.poller import Poller
from exporter.core.state import StateKeeper
from exporter.sim.homelab import Homelab, start_homelab
from exporter.sim.stack import (
    Daemon,
    fast_rules,
    local_alertmanager_config,
    prometheus_config,
    start_alertmanager,
    start_prometheus,
    start_webhook,
)

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

RUNBOOK = "alerts/runbook.md#alert-name-"
WAIT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def speed_up_routes(route: dict[str, Any]) -> None:
    """Alertmanager timers of seconds, not minutes: the routing itself is unchanged."""
    for key, value in (("group_wait", "0s"), ("group_interval", "1s"), ("repeat_interval", "1h")):
        if key in route:
            route[key] = value
    for child in route.get("routes", []):
        speed_up_routes(child)


@dataclass
class Stack:
    lab: Homelab
    pollers: list[Poller]
    exporter_url: str
    prometheus: Daemon
    alertmanager: Daemon
    notifications: list[dict[str, Any]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def poller(self, name: str) -> Poller:
        return next(p for p in self.pollers if p.name == name)

    async def query(self, expr: str) -> list[dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{self.prometheus.url}/api/v1/query", params={"query": expr}) as resp,
        ):
            body = await resp.json()
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def wait_for_notification(self, alertname: str, status: str) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while True:
            for n in self.notifications:
                if n["labels"].get("alertname") == alertname and n["status"] == status:
                    return n
            self.arrived.clear()
            remaining = deadline - loop.time()
            assert remaining > 0, f"no {status} {alertname}; got {self.names()}"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)

    def names(self) -> set[str]:
        return {n["labels"].get("alertname", "") for n in self.notifications}


async def wait_until(check: Any, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not await check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    work = tmp_path_factory.mktemp("e2e")
    clock = SystemClock()
    lab = await start_homelab(work / "lab", clock=clock, healthy=True)
    runners: list[web.AppRunner] = []
    daemons: list[Daemon] = []
    try:
        keeper = StateKeeper(work / "state.db")
        pollers = lab.pollers(keeper)
        exporter_port = free_port()
        app = create_app(lab.config, clock=clock, pollers=pollers, keeper=keeper)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", exporter_port).start()
        runners.append(runner)

        received: list[dict[str, Any]] = []
        arrived = asyncio.Event()

        def hook(payload: dict[str, Any]) -> None:
            received.extend(payload["alerts"])
            arrived.set()

        hook_port = free_port()
        runners.append(await start_webhook(hook, port=hook_port))

        am_config = local_alertmanager_config(f"http://127.0.0.1:{hook_port}/hook")
        speed_up_routes(am_config["route"])
        alertmanager = await start_alertmanager(work / "am", port=free_port(), config=am_config)
        daemons.append(alertmanager)
        prometheus = await start_prometheus(
            work / "prom",
            port=free_port(),
            config=prometheus_config(
                exporter=f"127.0.0.1:{exporter_port}",
                alertmanager=alertmanager.url.removeprefix("http://"),
                rule_files=fast_rules(work / "rules"),
                interval="1s",
            ),
            # Alerts that fire before the Alertmanager is discovered are otherwise re-sent
            # only after the default one minute.
            extra_args=["--rules.alert.resend-delay=1s"],
        )
        daemons.append(prometheus)
        stack = Stack(
            lab=lab,
            pollers=pollers,
            exporter_url=f"http://127.0.0.1:{exporter_port}",
            prometheus=prometheus,
            alertmanager=alertmanager,
            notifications=received,
            arrived=arrived,
        )

        async def every_source_up_in_prometheus() -> bool:
            rows = await stack.query("min(backup_source_up) and count(backup_source_up) == 7")
            return bool(rows) and float(rows[0]["value"][1]) == 1

        await wait_until(every_source_up_in_prometheus, "all seven sources up in Prometheus")
        yield stack
    finally:
        for daemon in reversed(daemons):
            daemon.stop()
        for r in reversed(runners):
            await r.cleanup()
        await lab.stop()


async def test_broken_backup_pages_with_the_right_alert_and_resolves(stack: Stack) -> None:
    # Baseline: the healthy homelab fires the Watchdog and nothing else.
    await stack.wait_for_notification("BackupWatchdog", "firing")

    async def only_the_watchdog() -> bool:
        # Before the first scrape BackupExporterAbsent is (rightly) pending; wait it out.
        return not await stack.query('ALERTS{alertname!="BackupWatchdog"}')

    await wait_until(only_the_watchdog, "no alert but the Watchdog")
    started = time.time()  # Prometheus stamps samples with this same wall clock
    firing = await stack.query('ALERTS{alertstate="firing"}')
    assert {r["metric"]["alertname"] for r in firing} == {"BackupWatchdog"}, firing

    pve = stack.lab.pve_scenario
    pve.break_backups()
    pve.run_backup("backup-infra-daily")
    await stack.poller("pve1").poll_once()
    alert = await stack.wait_for_notification("BackupJobFailed", "firing")
    labels = alert["labels"]
    assert labels["source"] == "pve1"
    assert labels["backup_job"] == "backup-infra-daily"
    assert labels["vmid"] == "100"
    assert labels["severity"] == "warning"
    assert alert["annotations"]["runbook_url"].endswith(RUNBOOK + "backupjobfailed")
    assert "backup-infra-daily" in alert["annotations"]["description"]

    pve.repair()
    pve.run_backup("backup-infra-daily")
    await stack.poller("pve1").poll_once()
    await stack.wait_for_notification("BackupJobFailed", "resolved")

    assert stack.names() == {"BackupWatchdog", "BackupJobFailed"}, stack.notifications
    # Prometheus' own record over the whole run agrees: nothing else was ever pending.
    window_ms = int((time.time() - started) * 1000)
    seen = await stack.query(f"count by (alertname) (max_over_time(ALERTS[{window_ms}ms]))")
    assert {r["metric"]["alertname"] for r in seen} == {"BackupWatchdog", "BackupJobFailed"}


async def exported_names(stack: Stack) -> set[str]:
    async with aiohttp.ClientSession() as http, http.get(stack.exporter_url + "/metrics") as r:
        text = await r.text()
    # A family counts when it is declared (# HELP/# TYPE): backup_source_error_info, say, has
    # no sample while every source is up, yet it is exported.
    names = set()
    for fam in text_string_to_metric_families(text):
        names.add(fam.name + ("_total" if fam.type == "counter" else ""))
        names.update(s.name for s in fam.samples)
    return names


async def test_rules_and_dashboards_name_only_exported_metrics(stack: Stack) -> None:
    exported = await exported_names(stack) | {"up", "ALERTS"} | recorded_names()
    used: dict[str, set[str]] = {}
    for where, expr in rule_queries():
        for name in metric_names_in(expr):
            used.setdefault(name, set()).add(where)
    generator = load_generator()
    for uid, title, expr in generator.all_queries():
        for name in metric_names_in(expr):
            used.setdefault(name, set()).add(f"{uid}: {title}")
    missing = {name: sorted(places) for name, places in used.items() if name not in exported}
    assert not missing, missing


RATIO = re.compile(r"^(.*) / \((.*) > 0\)$", re.S)


async def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    generator = load_generator()
    empty = []
    for uid, title, expr in generator.all_queries():
        query = generator.resolve_variables(expr)
        rows = await stack.query(query)
        ratio = RATIO.match(query)
        if not rows and ratio:
            # A ratio kept to defined values (``a / (b > 0)``) is empty until a run is due in
            # its window (no SLA is not 100 %): both of its parts must return data.
            parts = [await stack.query(part) for part in ratio.groups()]
            rows = parts[0] if all(parts) else []
        if not rows:
            empty.append(f"{uid}: {title}: {expr}")
    assert not empty, "\n".join(empty)


async def test_readme_metric_list_matches_the_exposition(stack: Stack) -> None:
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    listed = set(re.findall(r"`(backup_[a-z0-9_]+)`", readme)) - {"backup_job"}  # a label
    exported = {n for n in await exported_names(stack) if n.startswith("backup_")}
    assert not exported - listed, f"exported but not in the README: {sorted(exported - listed)}"
    # Only PBS storages verify archives; the homelab's NFS storage does not.
    conditional = {"backup_pve_archive_last_verified"}
    stale = sorted(listed - exported - conditional)
    assert not stale, f"in the README but not exported: {stale}"
