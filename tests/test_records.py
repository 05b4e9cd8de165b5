"""Verification records: validation, the append-only table, the CLI, POST /api/records, metrics."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from aiohttp.test_utils import TestClient
from conftest import memory_source
from prometheus_client.parser import text_string_to_metric_families

from exporter.assets.records import (
    DEFAULT_INTERVALS,
    RecordError,
    VerificationConfig,
    make_record,
    verification_statuses,
)
from exporter.core.app import KEEPER, create_app
from exporter.core.clock import FakeClock
from exporter.core.config import Config, ConfigError, parse_config
from exporter.core.poller import Poller
from exporter.core.state import StateKeeper
from exporter.core.store import MIGRATIONS, SCHEMA_VERSION, Run, StateStore

ClientFactory = Callable[[Any], Awaitable[TestClient[Any, Any]]]
UTC = ZoneInfo("UTC")
NOW = 1_790_000_000.0  # 2026-09-21, before the wall clock: the CLI refuses future records
TOKEN = "s3cr3t-token-for-restore-scripts"
DAY = 86400.0


def write_config(tmp_path: Path) -> Path:
    (tmp_path / "records.token").write_text(TOKEN + "\n")
    doc = {
        "state_path": "state.db",
        "records_api": {"token_file": "records.token"},
        "verification": {"intervals": {"restore-test": "30d"}},
        "sources": {"mem": {"kind": "files", "path": str(tmp_path)}},
        "assets": {
            name: {"rpo": rpo, "locations": [{"layer": "local", "evidence": {"source": "mem"}}]}
            for name, rpo in (("immich", "2d"), ("nextcloud", "1d"))
        },
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def one_asset(tmp_path: Path) -> dict[str, Any]:
    """A config with one asset, ``immich``, on one ``files`` source."""
    return {
        "sources": {"nas": {"kind": "files", "path": str(tmp_path)}},
        "assets": {
            "immich": {
                "rpo": "2d",
                "locations": [{"layer": "local", "evidence": {"source": "nas"}}],
            }
        },
    }


def load(path: Path) -> Config:
    return parse_config(path.read_text(), base_dir=path.parent)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def last(activity: str, asset: str, result: str) -> tuple[str, frozenset[tuple[str, str]]]:
    labels = {"activity": activity, "asset": asset, "result": result}
    return "backup_verification_last_timestamp_seconds", frozenset(labels.items())


# --------------------------------------------------------------------------- validation


def test_a_record_for_an_unknown_asset_lists_the_known_ones() -> None:
    with pytest.raises(RecordError, match=r"'immitch' is not a configured asset \(known: a, b\)"):
        make_record(
            {"activity": "restore-test", "asset": "immitch", "result": "pass"},
            assets=["b", "a"],
            origin="api",
            now=NOW,
            zone=UTC,
        )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"asset": "a", "result": "pass"}, "activity: missing"),
        ({"activity": "restore", "asset": "a", "result": "pass"}, "activity: must be one of"),
        ({"activity": "dr-drill", "asset": "a", "result": "ok"}, "result: must be one of"),
        ({"activity": "dr-drill", "asset": "a", "result": "pass", "depth": "x"}, "depth:"),
        ({"activity": "dr-drill", "asset": "a", "result": "pass", "at": "yesterday"}, "ISO 8601"),
        ({"activity": "dr-drill", "asset": "a", "result": "pass", "at": NOW + DAY}, "future"),
        ({"activity": "dr-drill", "asset": "a", "result": "pass", "at": True}, "at: must be"),
        ({"activity": "dr-drill", "asset": "a", "result": "pass", "id": 3}, "unknown keys: id"),
        ({"activity": "dr-drill", "asset": "a", "result": "pass", "note": 5}, "note: must be"),
    ],
)
def test_bad_records_get_one_clear_message(data: dict[str, Any], message: str) -> None:
    with pytest.raises(RecordError, match=message):
        make_record(data, assets=["a"], origin="cli", now=NOW, zone=UTC)


def test_a_time_without_offset_is_in_the_config_timezone() -> None:
    rec = make_record(
        {"activity": "docs-review", "asset": "a", "result": "pass", "at": "2026-09-01T12:00"},
        assets=["a"],
        origin="cli",
        now=NOW,
        zone=ZoneInfo("Europe/Berlin"),
    )
    assert rec.at == 1_788_256_800.0  # 10:00 UTC (CEST is UTC+2)


def test_records_api_config_reads_the_token_from_a_file_only(tmp_path: Path) -> None:
    (tmp_path / "short").write_text("abc\n")
    text = "records_api: {token: abcdefghijklmnopqrstuvwxyz}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, base_dir=tmp_path)
    assert "records_api.token: the token is read from token_file only" in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_config("records_api: {token_file: short}\n", base_dir=tmp_path)
    assert "at least 16 characters" in str(info.value)
    assert "abc" not in str(info.value).replace("characters", "")
    cfg = load(write_config(tmp_path))
    assert cfg.records_api is not None
    assert cfg.records_api.token.reveal() == TOKEN
    assert TOKEN not in repr(cfg)


def test_never_verified_is_due_one_interval_after_first_seen() -> None:
    cfg = VerificationConfig()
    seen = {"a": NOW - 100 * DAY}
    statuses = {
        (s.asset, s.activity): s
        for s in verification_statuses(
            ["a"], {("restore-test", "a", "fail"): NOW - DAY}, cfg, seen.__getitem__, NOW
        )
    }
    restore, drill = statuses["a", "restore-test"], statuses["a", "dr-drill"]
    # 100 days since first seen > 90: overdue; a failing record does not reset the clock.
    assert restore.overdue and restore.last_pass is None and restore.last_fail == NOW - DAY
    assert restore.due == NOW - 100 * DAY + DEFAULT_INTERVALS["restore-test"]
    assert not drill.overdue  # 100 days < 365
    fresh = verification_statuses(
        ["a"], {("restore-test", "a", "pass"): NOW - 89 * DAY}, cfg, seen.__getitem__, NOW
    )
    assert not fresh[0].overdue


# ------------------------------------------------------------------------------- store


def test_a_version_1_database_migrates_forward_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0])
    db.execute("PRAGMA user_version=1")
    db.execute(
        "INSERT INTO run (job, finished, result, recorded_at) VALUES ('pve1/j/100', 5, 'ok', 5)"
    )
    db.commit()
    db.close()
    store = StateStore(path)
    assert store.schema_version == SCHEMA_VERSION == 2
    assert store.runs() == [Run(job="pve1/j/100", result="ok", finished=5.0)]
    rid = store.add_record(
        activity="dr-drill",
        asset="a",
        result="pass",
        at=NOW,
        note="",
        depth=None,
        origin="cli",
        now=NOW,
    )
    assert [r.id for r in store.records()] == [rid]
    store.close()


def test_records_are_never_edited_or_dropped(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.add_record(
        activity="restore-test",
        asset="a",
        result="fail",
        at=NOW,
        note="n",
        depth="full",
        origin="api",
        now=NOW,
    )
    store.close()
    db = sqlite3.connect(tmp_path / "state.db")
    for sql in ("UPDATE record SET result='pass'", "DELETE FROM record"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute(sql)
    assert db.execute("SELECT result FROM record").fetchall() == [("fail",)]


# ---------------------------------------------------------------------- CLI, API, metrics


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args, "--config.file", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_the_cli_refuses_an_unknown_asset_with_exit_2(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    done = cli(config, "record", "dr-drill", "--asset", "immitch", "--result", "pass")
    assert done.returncode == 2
    assert "'immitch' is not a configured asset (known: immich, nextcloud)" in done.stderr
    assert not (tmp_path / "state.db").exists()  # nothing was opened, nothing stored


async def start(
    aiohttp_client: ClientFactory, config: Config, clock: FakeClock
) -> tuple[TestClient[Any, Any], Poller]:
    assert config.state_path is not None
    keeper = StateKeeper(config.state_path)
    keeper.load()
    poller = Poller(memory_source("mem"), clock=clock, memory=keeper.memories.setdefault("mem", {}))
    app = create_app(config, clock=clock, pollers=[poller], run_pollers=False, keeper=keeper)
    return await aiohttp_client(app), poller


async def scrape(
    client: TestClient[Any, Any],
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await client.get("/metrics")
    assert response.status == 200
    return samples(await response.text())


async def flushed(client: TestClient[Any, Any]) -> None:
    """Wait for the state thread to finish what the poll queued (re-reading the records)."""
    assert client.app is not None
    await client.app[KEEPER].flush()


def stored(config: Config) -> list[tuple[str, str, str, str]]:
    assert config.state_path is not None
    store = StateStore(config.state_path)
    try:
        return [(r.activity, r.asset, r.result, r.origin) for r in store.records()]
    finally:
        store.close()


async def test_cli_and_api_records_show_after_the_next_poll_and_survive_a_restart(
    tmp_path: Path, aiohttp_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_config(tmp_path)
    config = load(path)
    clock = FakeClock(NOW)
    client, poller = await start(aiohttp_client, config, clock)
    await poller.poll_once()
    got = await scrape(client)
    restore_due = frozenset({("activity", "restore-test"), ("asset", "immich")})
    # Never tested: due 30 days (the configured interval) after the asset was first seen.
    assert got["backup_verification_due_timestamp_seconds", restore_due] == NOW + 30 * DAY
    interval = frozenset({("activity", "dr-drill")})
    assert got["backup_verification_interval_seconds", interval] == 365 * DAY

    # The CLI writes while the exporter runs (the database is open in its state thread).
    done = cli(path, "record", "restore-test", "--asset", "immich", "--result", "pass",
               "--depth", "sample", "--at", "2026-09-20T10:00:00+00:00")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("recorded 1: restore-test immich pass")
    cli_at = 1_789_898_400.0
    assert last("restore-test", "immich", "pass") not in await scrape(client)
    clock.advance(60)
    await poller.poll_once()
    await flushed(client)
    got = await scrape(client)
    assert got[last("restore-test", "immich", "pass")] == cli_at
    assert got["backup_verification_due_timestamp_seconds", restore_due] == cli_at + 30 * DAY

    # A wrong or missing token: 401, nothing stored, the token never logged.
    record = {"activity": "dr-drill", "asset": "nextcloud", "result": "fail", "note": "no key"}
    for headers in ({"Authorization": "Bearer wrong"}, {}, {"Authorization": TOKEN}):
        response = await client.post("/api/records", json=record, headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert stored(config) == [("restore-test", "immich", "pass", "cli")]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    response = await client.post("/api/records", data=b"{not json", headers=auth)
    assert response.status == 400
    assert "not JSON" in (await response.json())["error"]
    response = await client.post("/api/records", json=[record], headers=auth)
    assert response.status == 400
    response = await client.post("/api/records", json={**record, "asset": "x"}, headers=auth)
    assert response.status == 400
    assert "known: immich, nextcloud" in (await response.json())["error"]
    assert stored(config) == [("restore-test", "immich", "pass", "cli")]

    response = await client.post("/api/records", json=record, headers=auth)
    assert response.status == 201, await response.text()
    body = await response.json()
    assert body["id"] == 2
    assert body["at"] == NOW + 60  # no "at": now, by the exporter's clock
    clock.advance(60)
    await poller.poll_once()
    await flushed(client)
    got = await scrape(client)
    assert got[last("dr-drill", "nextcloud", "fail")] == NOW + 60
    assert last("dr-drill", "nextcloud", "pass") not in got
    assert TOKEN not in caplog.text
    await client.close()

    # Restart: both records are served before the first poll.
    client, poller = await start(aiohttp_client, config, clock)
    got = await scrape(client)
    assert got[last("restore-test", "immich", "pass")] == cli_at
    assert got[last("dr-drill", "nextcloud", "fail")] == NOW + 60
    assert stored(config) == [
        ("restore-test", "immich", "pass", "cli"),
        ("dr-drill", "nextcloud", "fail", "api"),
    ]
    await client.close()

    listing = cli(path, "records", "--asset", "nextcloud")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split("\t")[:5] == ["id", "at", "activity", "asset", "result"]
    assert [line.split("\t")[2:5] for line in lines[1:]] == [["dr-drill", "nextcloud", "fail"]]
    assert lines[1].endswith("\tapi\tno key")


async def test_the_records_api_is_404_unless_configured(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    config = Config(state_path=tmp_path / "state.db")
    client, _ = await start(aiohttp_client, config, FakeClock(NOW))
    body = json.dumps({"activity": "dr-drill", "asset": "a", "result": "pass"})
    response = await client.post(
        "/api/records", data=body, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status == 404
    await client.close()


def test_record_refuses_to_guess_the_database(tmp_path: Path) -> None:
    (tmp_path / "config.yml").write_text(yaml.safe_dump(one_asset(tmp_path)))
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "record", "dr-drill", "--asset", "immich",
         "--result", "pass", "--config.file", str(tmp_path / "config.yml")],
        capture_output=True, text=True, check=False, timeout=60, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "STATE_DIRECTORY"},
    )  # fmt: skip
    assert done.returncode == 2
    assert "set state_path in the config" in done.stderr
    assert not (tmp_path / "state.db").exists()
