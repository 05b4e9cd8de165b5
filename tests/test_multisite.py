"""Many sites on Prometheus' own scaling, live on 127.0.0.1 (docs/scaling.md).

Two sites, ``home`` and ``office``: each runs the real exporter (``backup-exporter serve``, a
``kind: files`` source on a temp folder and an hourly job judged by its newest file) and its
own Prometheus, which scrapes it with ``external_labels: {site: …}`` and ``remote_write``-s
everything to a central Prometheus. The central one (``--web.enable-remote-write-receiver``)
scrapes no exporter; it evaluates the shipped rules (``for:`` shortened) and sends alerts to
two Alertmanagers clustered over ``--cluster.listen-address``/``--cluster.peer``, both with
the shipped routes pointed at one webhook.

The test makes the home site's newest backup two days old: ``BackupJobOverdue`` must reach
the webhook exactly once (both Alertmanagers hold it; the cluster's notification log lets
only one send), with ``site="home"``; the repaired file resolves it, again once. Real time,
as in tests/test_e2e.py: the daemons run on the wall clock.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from prometheus_client.parser import text_string_to_metric_families
from test_e2e import speed_up_routes

from exporter.sim.stack import (
    SCRAPE_JOB,
    Daemon,
    fast_rules,
    local_alertmanager_config,
    start_alertmanager,
    start_daemon,
    start_prometheus,
    start_webhook,
)

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

SITES = ("home", "office")
WAIT = 45.0
SOURCE = "nas-backups"
JOB = "nightly"
# The second Alertmanager waits peer_timeout x its position before it would send; by then the
# first one's notification-log entry has been gossiped (gossip every 50 ms).
PEER_TIMEOUT = "2s"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not await check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def get_json(url: str, **params: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url, params=params) as resp:
        assert resp.status == 200, (url, resp.status, await resp.text())
        return await resp.json()


@dataclass
class Site:
    name: str
    folder: Path
    exporter: Daemon
    prometheus: Daemon

    @property
    def backup(self) -> Path:
        return self.folder / "backup.tar"

    def set_backup_age(self, seconds: float) -> None:
        at = time.time() - seconds
        os.utime(self.backup, (at, at))


@dataclass
class Notification:
    sender: str  # the Alertmanager's external URL
    status: str
    labels: dict[str, str]


@dataclass
class World:
    sites: dict[str, Site]
    central: Daemon
    alertmanagers: list[Daemon]
    notifications: list[Notification] = field(default_factory=list)
    posts: list[str] = field(default_factory=list)  # the sender of each webhook request

    async def query(self, expr: str) -> list[dict[str, Any]]:
        body = await get_json(f"{self.central.url}/api/v1/query", query=expr)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def of(self, alertname: str, status: str) -> list[Notification]:
        return [
            n
            for n in self.notifications
            if n.labels.get("alertname") == alertname and n.status == status
        ]


def exporter_config(folder: Path, state: Path) -> dict[str, Any]:
    return {
        "state_path": str(state),
        "sources": {
            SOURCE: {
                "kind": "files",
                "path": str(folder),
                "glob": "*.tar",
                "interval": "3s",
                "timeout": "2s",
            }
        },
        # Hourly with 10 minutes of grace: a file from now is on time whatever the minute, a
        # file two days old is overdue at once (a new state database judges all history).
        "jobs": {JOB: {"schedule": "0 * * * *", "grace": "10m", "evidence": {"source": SOURCE}}},
    }


async def start_exporter(workdir: Path, folder: Path) -> Daemon:
    workdir.mkdir(parents=True)
    config = workdir / "config.yml"
    config.write_text(yaml.safe_dump(exporter_config(folder, workdir / "state.db")))
    port = free_port()
    argv = [
        sys.executable, "-m", "exporter", "serve",
        f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
    ]  # fmt: skip
    return await start_daemon("exporter", argv, port=port, log=workdir / "exporter.log")


def site_prometheus_config(site: str, exporter: Daemon, central: Daemon) -> dict[str, Any]:
    return {
        "global": {
            # 2 s, with a timeout as long: a scrape that times out on a busy machine would
            # write staleness markers and flap the alert, which is not what this test is about.
            "scrape_interval": "2s",
            "evaluation_interval": "2s",
            "external_labels": {"site": site},
        },
        "scrape_configs": [
            {
                "job_name": SCRAPE_JOB,
                "scrape_timeout": "2s",
                "static_configs": [{"targets": [exporter.url.removeprefix("http://")]}],
            }
        ],
        "remote_write": [
            {
                "url": f"{central.url}/api/v1/write",
                # Seconds, not the default 5 s batches: the test waits for every hop.
                "queue_config": {"batch_send_deadline": "500ms", "min_backoff": "100ms"},
            }
        ],
    }


def central_prometheus_config(rules: list[Path], alertmanagers: list[Daemon]) -> dict[str, Any]:
    return {
        "global": {"evaluation_interval": "1s"},
        "rule_files": [str(p) for p in rules],
        "alerting": {
            "alertmanagers": [
                {
                    "static_configs": [
                        {"targets": [a.url.removeprefix("http://") for a in alertmanagers]}
                    ]
                }
            ]
        },
        "scrape_configs": [],  # the sites' data only arrives by remote_write
    }


async def start_alertmanager_pair(work: Path, webhook: str) -> list[Daemon]:
    config = local_alertmanager_config(webhook)
    speed_up_routes(config["route"])
    ports = [free_port() for _ in range(2)]
    gossip = [free_port() for _ in range(2)]
    daemons: list[Daemon] = []
    try:
        for i in range(2):
            peer = gossip[1 - i]
            args = [
                f"--cluster.listen-address=127.0.0.1:{gossip[i]}",
                f"--cluster.advertise-address=127.0.0.1:{gossip[i]}",
                f"--cluster.peer=127.0.0.1:{peer}",
                f"--cluster.peer-timeout={PEER_TIMEOUT}",
                "--cluster.gossip-interval=50ms",
                "--cluster.pushpull-interval=1s",
                "--cluster.settle-timeout=5s",
                f"--web.external-url=http://127.0.0.1:{ports[i]}/",
            ]
            daemons.append(
                await start_alertmanager(
                    work / f"am{i}", port=ports[i], config=config, extra_args=args
                )
            )
    except BaseException:
        for d in daemons:
            d.stop()
        raise
    return daemons


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    work = tmp_path_factory.mktemp("multisite")
    daemons: list[Daemon] = []
    notifications: list[Notification] = []
    posts: list[str] = []

    def received(payload: dict[str, Any]) -> None:
        posts.append(payload["externalURL"])
        for alert in payload["alerts"]:
            notifications.append(
                Notification(payload["externalURL"], alert["status"], alert["labels"])
            )

    hook_port = free_port()
    hook_runner = await start_webhook(received, port=hook_port)
    try:
        alertmanagers = await start_alertmanager_pair(work, f"http://127.0.0.1:{hook_port}/hook")
        daemons.extend(alertmanagers)
        central = await start_prometheus(
            work / "central",
            port=free_port(),
            config=central_prometheus_config(fast_rules(work / "rules"), alertmanagers),
            extra_args=["--web.enable-remote-write-receiver", "--rules.alert.resend-delay=1s"],
        )
        daemons.append(central)
        sites: dict[str, Site] = {}
        for name in SITES:
            folder = work / name / "backups"
            folder.mkdir(parents=True)
            (folder / "backup.tar").write_bytes(b"tar" * 100)
            exporter = await start_exporter(work / name / "exporter", folder)
            daemons.append(exporter)
            prometheus = await start_prometheus(
                work / name / "prometheus",
                port=free_port(),
                config=site_prometheus_config(name, exporter, central),
            )
            daemons.append(prometheus)
            sites[name] = Site(name, folder, exporter, prometheus)
        yield World(sites, central, alertmanagers, notifications, posts)
    finally:
        for daemon in reversed(daemons):
            daemon.stop()
        await hook_runner.cleanup()


async def test_an_overdue_backup_at_one_site_notifies_once_with_its_site(world: World) -> None:
    # Both sites' jobs reach the central Prometheus through remote_write, labelled by site.
    async def both_sites_ok() -> bool:
        rows = await world.query(f'backup_job_state{{backup_job="{JOB}", state="ok"}} == 1')
        return sorted(r["metric"].get("site", "") for r in rows) == sorted(SITES)

    await wait_until(both_sites_ok, "both sites' jobs ok in the central Prometheus")

    # The two Alertmanagers are one cluster: each lists both members, ready.
    async def clustered() -> bool:
        for am in world.alertmanagers:
            status = await get_json(f"{am.url}/api/v2/status")
            if status["cluster"]["status"] != "ready" or len(status["cluster"]["peers"]) != 2:
                return False
        return True

    await wait_until(clustered, "a two-member Alertmanager cluster")
    # It sends to both Alertmanagers; the healthy world notifies the Watchdog only.
    body = await get_json(f"{world.central.url}/api/v1/alertmanagers")
    assert len(body["data"]["activeAlertmanagers"]) == 2

    async def watchdog_notified() -> bool:
        return bool(world.of("BackupWatchdog", "firing"))

    await wait_until(watchdog_notified, "the Watchdog notification")
    assert not world.of("BackupJobOverdue", "firing")

    world.sites["home"].set_backup_age(2 * 86400)

    async def overdue_notified() -> bool:
        return bool(world.of("BackupJobOverdue", "firing"))

    await wait_until(overdue_notified, "BackupJobOverdue at the webhook")
    (firing,) = world.of("BackupJobOverdue", "firing")
    assert firing.labels["site"] == "home"
    assert firing.labels["source"] == SOURCE
    assert firing.labels["backup_job"] == JOB

    # Both cluster members hold the alert: one of them sent it, the other must not.
    async def in_both_alertmanagers() -> bool:
        for am in world.alertmanagers:
            alerts = await get_json(
                f"{am.url}/api/v2/alerts", filter='alertname="BackupJobOverdue"'
            )
            if [a["labels"].get("site") for a in alerts] != ["home"]:
                return False
        return True

    await wait_until(in_both_alertmanagers, "the alert in both Alertmanagers")
    assert firing.sender.rstrip("/") in [am.url for am in world.alertmanagers], firing.sender
    (other,) = [am for am in world.alertmanagers if am.url != firing.sender.rstrip("/")]
    queries_then = await sample(other, "alertmanager_nflog_queries_total")

    world.sites["home"].set_backup_age(0)

    async def resolved_notified() -> bool:
        return bool(world.of("BackupJobOverdue", "resolved"))

    await wait_until(resolved_notified, "the resolved notification")
    (resolved,) = world.of("BackupJobOverdue", "resolved")
    assert resolved.labels["site"] == "home"

    # The other member runs its dedup stage (after waiting peer timeout x its position) at
    # each flush, every group_interval (1 s) for each of the two groups (Watchdog, overdue):
    # once it has done so a few times since the firing, a duplicate would have been sent.
    async def other_member_deduplicated() -> bool:
        return await sample(other, "alertmanager_nflog_queries_total") >= queries_then + 4

    await wait_until(other_member_deduplicated, "the other member's dedup stage")
    history = [(n.sender, n.status, n.labels.get("alertname")) for n in world.notifications]
    # Every scrape of both sites succeeded meanwhile: a repeated notification below is the
    # cluster's doing, not an alert that flapped.
    flaps = await world.query('min_over_time(up{job="backup-exporter"}[5m]) == 0')
    assert not flaps, flaps
    assert len(world.of("BackupJobOverdue", "firing")) == 1, history
    assert len(world.of("BackupJobOverdue", "resolved")) == 1, history
    assert len(world.of("BackupWatchdog", "firing")) == 1, history
    assert not [n for n in world.notifications if n.labels.get("site") == "office"]
    # Each member counts what it sent; together they sent exactly the requests that arrived.
    sent = [
        await sample(am, "alertmanager_notifications_total", integration="webhook")
        for am in world.alertmanagers
    ]
    assert sum(sent) == len(world.posts)


async def sample(daemon: Daemon, name: str, **labels: str) -> float:
    """The value of one series of ``daemon``'s /metrics (0 when absent)."""
    async with aiohttp.ClientSession() as http, http.get(f"{daemon.url}/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and labels.items() <= s.labels.items():
                total += s.value
    return total
