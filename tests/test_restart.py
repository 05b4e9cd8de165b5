"""Restart semantics through the real wire protocol: the fake PVE over HTTPS, a state database."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from exporter.core.app import POLLERS, create_app
from exporter.core.clock import FakeClock
from exporter.core.config import Config, parse_config
from exporter.core.state import StateKeeper
from exporter.sim.pve import FakePVE, homelab, start_fake_pve

ClientFactory = Callable[[Any], Awaitable[TestClient[Any, Any]]]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
SRC = frozenset({("source", "pve1"), ("kind", "proxmox")})


async def scrape(client: TestClient[Any, Any]) -> Samples:
    response = await client.get("/metrics")
    assert response.status == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(await response.text())
        for s in fam.samples
    }


def config(fake: FakePVE) -> Config:
    return parse_config(
        yaml.safe_dump(
            {
                "timezone": "Europe/Berlin",
                "sources": {
                    "pve1": {
                        "kind": "proxmox",
                        "url": fake.url,
                        "token_id": fake.token_id,
                        "token_secret": fake.token_secret,
                        "ca_file": fake.ca_file,
                        "timeout": "5s",
                    }
                },
                "jobs": {
                    "infra100-files": {
                        "schedule": "21:00",
                        "grace": "6h",
                        "evidence": {"source": "pve1", "vmid": "100"},
                    }
                },
            }
        )
    )


async def test_restart_while_pve_is_stopped_serves_the_last_known_state(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    clock = FakeClock(start=1_780_000_000.0)
    scenario = homelab(clock.time)
    fake = await start_fake_pve(scenario)
    try:
        cfg = config(fake)
        app = create_app(cfg, clock=clock, run_pollers=False, keeper=StateKeeper(tmp_path / "s.db"))
        client = await aiohttp_client(app)
        pollers = app[POLLERS]
        await pollers[0].poll_once()
        before = await scrape(client)
        await client.close()  # the app's cleanup flushes and closes the database
        await fake.stop()

        clock.advance(120)
        started = time.monotonic()
        app2 = create_app(
            cfg, clock=clock, run_pollers=False, keeper=StateKeeper(tmp_path / "s.db")
        )
        client2 = await aiohttp_client(app2)
        after = await scrape(client2)
        assert time.monotonic() - started < 1.0, "the last-known state is served at once"
        skip = ("backup_source_", "backup_exporter_", "backup_state_")
        vanished = [k for k in before if not k[0].startswith(skip) and k not in after]
        assert not vanished, vanished
        archives = [k for k in before if k[0] == "backup_pve_archive_last_timestamp_seconds"]
        jobs = [k for k in before if k[0] == "backup_job_overdue"]
        assert archives and len(jobs) > 1  # PVE's own jobs and the config job
        for k in archives + jobs:
            assert after[k] == before[k], k
        assert after[("backup_source_up", SRC)] == 0
        assert after[("backup_source_error_info", SRC | {("reason", "starting")})] == 1
        assert after[("backup_source_last_success_timestamp_seconds", SRC)] == 1_780_000_000.0
        assert after[("backup_state_up", frozenset())] == 1

        # The first poll fails (PVE is still off): nothing changes state, no series vanishes.
        pollers2 = app2[POLLERS]
        await pollers2[0].poll_once()
        failed = await scrape(client2)
        assert failed[("backup_source_error_info", SRC | {("reason", "connection")})] == 1
        for k in jobs:
            assert failed[k] == before[k], k
        await client2.close()
    finally:
        await fake.stop()


async def test_a_corrupt_or_locked_database_is_reported_and_the_exporter_serves(
    aiohttp_client: ClientFactory, tmp_path: Path, caplog: Any
) -> None:
    import sqlite3

    clock = FakeClock(start=1_780_000_000.0)
    scenario = homelab(clock.time)
    fake = await start_fake_pve(scenario)
    try:
        cfg = config(fake)
        corrupt = tmp_path / "corrupt.db"
        corrupt.write_bytes(b"this is not a database" * 400)
        app = create_app(cfg, clock=clock, run_pollers=False, keeper=StateKeeper(corrupt))
        client = await aiohttp_client(app)
        pollers = app[POLLERS]
        await pollers[0].poll_once()
        values = await scrape(client)
        assert values[("backup_state_up", frozenset())] == 0
        assert values[("backup_state_error_info", frozenset({("reason", "corrupt")}))] == 1
        assert values[("backup_source_up", SRC)] == 1
        assert any("corrupt" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
        assert corrupt.read_bytes().startswith(b"this is not a database"), "left as it was"
        await client.close()

        locked = tmp_path / "locked.db"
        StateKeeper(locked).load()
        holder = sqlite3.connect(locked, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        keeper = StateKeeper(locked)
        app = create_app(cfg, clock=clock, run_pollers=False, keeper=keeper)
        client = await aiohttp_client(app)
        pollers = app[POLLERS]
        await pollers[0].poll_once()
        await keeper.flush()
        values = await scrape(client)
        assert values[("backup_state_error_info", frozenset({("reason", "locked")}))] == 1
        assert values[("backup_source_up", SRC)] == 1  # served from memory meanwhile
        holder.execute("ROLLBACK")
        await pollers[0].poll_once()
        await keeper.flush()
        assert (await scrape(client))[("backup_state_up", frozenset())] == 1
        await client.close()
    finally:
        await fake.stop()


async def test_kill_9_while_polling_and_writing_never_corrupts_or_loses_a_run(
    tmp_path: Path,
) -> None:
    import asyncio
    import os
    import random
    import signal
    import socket
    import sys

    import aiohttp

    from exporter.core.store import StateStore

    backups = tmp_path / "backups"
    backups.mkdir()
    db = tmp_path / "state.db"
    (tmp_path / "config.yml").write_text(
        yaml.safe_dump(
            {
                "state_path": str(db),
                "sources": {
                    "nas": {
                        "kind": "files",
                        "path": str(backups),
                        "interval": "1s",
                        "timeout": "900ms",
                        "jitter": "0s",
                    }
                },
                "jobs": {"dump": {"schedule": "*/5", "grace": "1h", "evidence": {"source": "nas"}}},
            }
        )
    )
    rng = random.Random(1201)
    committed: set[float] = set()
    loop = asyncio.get_running_loop()
    for round_ in range(20):
        # A new backup file each round: its mtime becomes a run in the history.
        newest = backups / f"dump-{round_}.sql"
        newest.write_text("x")
        os.utime(newest, (1_780_000_000 + round_ * 600, 1_780_000_000 + round_ * 600))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "exporter", "--config.file", str(tmp_path / "config.yml"),
            "--web.listen-address", f"127.0.0.1:{port}",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = loop.time() + 30
            want = 1_780_000_000.0 + round_ * 600
            async with aiohttp.ClientSession() as http:
                while True:  # until this round's run is committed
                    assert loop.time() < deadline, "the run was never recorded"
                    if db.exists():
                        store = StateStore(db)
                        finished = {r.finished for r in store.runs()}
                        store.close()
                        if want in finished:
                            break
                    await asyncio.sleep(0.05)
                # Then kill at a random moment of the next polls and writes.
                for _ in range(rng.randint(0, 15)):
                    async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                        assert resp.status == 200
        finally:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        store = StateStore(db)
        assert store.integrity_check() == "ok"
        finished = {r.finished for r in store.runs() if r.finished is not None}
        assert committed <= finished, "a committed run was lost"
        committed = finished
        store.close()
    assert len(committed) == 20


def _job_values(samples: Samples, name: str, vmid: str) -> dict[str, float]:
    return {
        dict(labels).get("state", name): value
        for (metric, labels), value in samples.items()
        if metric == name
        and dict(labels).get("vmid") == vmid
        and dict(labels).get("backup_job") == "backup-infra-daily"
    }


async def test_a_moved_schedule_and_a_guest_picked_up_by_all_raise_nothing(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    berlin = ZoneInfo("Europe/Berlin")
    clock = FakeClock(start=datetime(2026, 3, 10, 20, 0, tzinfo=berlin).timestamp())
    scenario = homelab(clock.time)
    fake = await start_fake_pve(scenario)
    try:
        cfg = config(fake)
        app = create_app(cfg, clock=clock, run_pollers=False, keeper=StateKeeper(tmp_path / "s.db"))
        client = await aiohttp_client(app)
        poller = app[POLLERS][0]
        await poller.poll_once()  # the first poll of a new database: yesterday's run is fine
        assert _job_values(await scrape(client), "backup_job_overdue", "100") == {
            "backup_job_overdue": 0
        }
        # 20:00: the operator moves the job to 23:00 and makes it back up every guest.
        job = scenario.job("backup-infra-daily")
        job.schedule, job.vmid, job.all = "23:00", "", True
        clock.advance(60)
        await poller.poll_once()
        first = await scrape(client)
        # Judged by today's config alone, yesterday 23:00 + 6 h would be missed already.
        assert _job_values(first, "backup_job_overdue", "100") == {"backup_job_overdue": 0}
        states_101 = _job_values(first, "backup_job_state", "101")
        assert states_101["unknown"] == 1, states_101  # newly covered: nothing due yet
        assert _job_values(first, "backup_job_overdue", "101") == {"backup_job_overdue": 0}
        # Through the night: both run at 23:00 and nothing is ever overdue.
        for _ in range(11 * 4):
            clock.advance(900)
            await poller.poll_once()
            now = await scrape(client)
            for vmid in ("100", "101"):
                assert _job_values(now, "backup_job_overdue", vmid) == {"backup_job_overdue": 0}
        assert _job_values(now, "backup_job_state", "101")["ok"] == 1
        await client.close()
    finally:
        await fake.stop()
