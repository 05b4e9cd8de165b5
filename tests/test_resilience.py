"""A backend that goes away mid-run: /metrics keeps the last-known values and recovers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import yaml
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from exporter.core.app import create_app
from exporter.core.clock import FakeClock
from exporter.core.config import parse_config
from exporter.core.poller import Poller
from exporter.sim.pve import homelab, start_fake_pve
from exporter.sources import build_source

ClientFactory = Callable[[Any], Awaitable[TestClient[Any, Any]]]
SRC = frozenset({("source", "pve1"), ("kind", "proxmox")})
ARCHIVE = frozenset({("source", "pve1"), ("storage", "truenas-backups"), ("vmid", "100")})


async def scrape(
    client: TestClient[Any, Any],
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = await (await client.get("/metrics")).text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


async def test_fake_stopped_mid_run_then_back(aiohttp_client: ClientFactory) -> None:
    clock = FakeClock(start=1_780_000_000.0)
    scenario = homelab(clock.time)
    fake = await start_fake_pve(scenario)
    try:
        cfg = parse_config(
            yaml.safe_dump(
                {
                    "sources": {
                        "pve1": {
                            "kind": "proxmox",
                            "url": fake.url,
                            "token_id": fake.token_id,
                            "token_secret": fake.token_secret,
                            "ca_file": fake.ca_file,
                            "timeout": "5s",
                        }
                    }
                }
            )
        )
        poller = Poller(build_source(cfg.sources["pve1"]), clock=clock)
        client = await aiohttp_client(
            create_app(cfg, clock=clock, pollers=[poller], run_pollers=False)
        )
        await poller.poll_once()
        before = await scrape(client)
        newest = scenario.archives_of("truenas-backups", 100)[-1].ctime
        assert before[("backup_pve_archive_last_timestamp_seconds", ARCHIVE)] == newest
        assert before[("backup_source_up", SRC)] == 1

        await fake.stop()
        clock.advance(300)
        await poller.poll_once()
        during = await scrape(client)
        assert during[("backup_source_up", SRC)] == 0
        assert during[("backup_source_error_info", SRC | {("reason", "connection")})] == 1
        assert during[("backup_pve_archive_last_timestamp_seconds", ARCHIVE)] == newest
        assert during[("backup_source_last_success_timestamp_seconds", SRC)] == 1_780_000_000.0

        await fake.restart()
        clock.advance(300)
        await poller.poll_once()
        after = await scrape(client)
        assert after[("backup_source_up", SRC)] == 1
        assert not any(k[0] == "backup_source_error_info" for k in after)
        assert after[("backup_source_last_success_timestamp_seconds", SRC)] == clock.time()
    finally:
        await fake.stop()
