"""The command line, run as a real process: once, check-config, schedule, serve."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.sim.pve import FakePVE, PVEScenario, homelab, start_fake_pve

CANARY = "canary-7d1e5a90-secret"
PROMTOOL = "/usr/bin/promtool"


@pytest.fixture
def scenario() -> PVEScenario:
    return homelab(time.time)


@pytest.fixture
async def fake(scenario: PVEScenario) -> AsyncIterator[FakePVE]:
    fake = await start_fake_pve(scenario)
    yield fake
    await fake.stop()


def write_config(tmp_path: Path, fake: FakePVE, secret: str) -> Path:
    (tmp_path / "pve.secret").write_text(secret + "\n")
    cfg = {
        "timezone": "Europe/Berlin",
        "state_path": "state.db",
        "sources": {
            "pve1": {
                "kind": "proxmox",
                "url": fake.url,
                "token_id": fake.token_id,
                "token_secret_file": "pve.secret",
                "ca_file": fake.ca_file,
                "interval": "5m",
                "timeout": "10s",
            }
        },
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter", *args,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


async def test_once_prints_the_fakes_values_and_promtool_accepts_them(
    tmp_path: Path, fake: FakePVE, scenario: PVEScenario
) -> None:
    code, out, err = await run_cli(
        "once", "--config.file", str(write_config(tmp_path, fake, fake.token_secret))
    )
    assert code == 0, err
    got = samples(out)
    archives = scenario.archives_of("truenas-backups", 100)
    g = frozenset({("source", "pve1"), ("storage", "truenas-backups"), ("vmid", "100")})
    assert got[("backup_pve_archives", g)] == len(archives) == 14
    assert got[("backup_pve_archive_last_timestamp_seconds", g)] == archives[-1].ctime
    assert got[("backup_pve_archive_last_size_bytes", g)] == archives[-1].size
    assert got[("backup_pve_archive_size_bytes", g)] == sum(a.size for a in archives)
    assert got[("backup_pve_archives_protected", g)] == 0
    assert got[("backup_pve_retention_expected_archives", g)] == 14
    storage = frozenset({("source", "pve1"), ("storage", "truenas-backups")})
    assert got[("backup_pve_storage_size_bytes", storage)] == 150 * 2**30
    assert got[("backup_pve_retention_projected_bytes", storage)] == 14 * archives[-1].size
    assert (
        got[("backup_pve_guest_not_backed_up", frozenset({("source", "pve1"), ("vmid", "101")}))]
        == 1
    )
    info = {k for k in got if k[0] == "backup_pve_guest_info"}
    assert {dict(k[1])["name"] for k in info} == {"infra100", "dns101"}
    job = frozenset({("source", "pve1"), ("backup_job", "backup-infra-daily"), ("vmid", "100")})
    assert got[("backup_job_overdue", job)] == 0
    assert got[("backup_source_up", frozenset({("source", "pve1"), ("kind", "proxmox")}))] == 1
    for name in (
        "backup_pve_job_info", "backup_pve_job_retention", "backup_pve_storage_used_bytes",
        "backup_pve_vzdump_last_success_timestamp_seconds",
        "backup_pve_vzdump_last_failure_timestamp_seconds", "backup_exporter_build_info",
        "backup_source_poll_duration_seconds", "backup_source_api_requests_total",
        "backup_source_last_success_timestamp_seconds", "backup_job_info",
    ):  # fmt: skip
        assert any(k[0] == name for k in got), name
    check = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=out, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout + check.stderr == ""


async def test_once_exits_1_when_a_source_fails_and_never_shows_the_secret(
    tmp_path: Path, fake: FakePVE
) -> None:
    code, out, err = await run_cli(
        "once", "--config.file", str(write_config(tmp_path, fake, CANARY))
    )
    assert code == 1
    assert 'backup_source_up{kind="proxmox",source="pve1"} 0.0' in out
    assert 'backup_source_error_info{kind="proxmox",reason="auth",source="pve1"} 1.0' in out
    assert "reason=auth" in err
    assert CANARY not in out + err


def test_check_config_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "sources:\n"
        "  pve1: {kind: proxmox, url: 'http://x', interval: often}\n"
        "  nas: {kind: nosuch}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", str(bad)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    for expected in (
        "sources.pve1.url:",
        "sources.pve1.token_id: missing",
        "sources.pve1.token_secret: missing",
        "sources.pve1.interval: invalid duration 'often'",
        "sources.nas.kind: unknown kind 'nosuch'",
    ):
        assert expected in proc.stderr, proc.stderr
    good = tmp_path / "good.yml"
    good.write_text("timezone: Europe/Berlin\n")
    ok = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", str(good)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        # Examples from the Proxmox VE documentation (calendar-events.adoc).
        ("mon..fri", ["2026-02-02T00:00:00+01:00", "2026-02-03T00:00:00+01:00"]),
        ("sat,sun", ["2026-01-31T00:00:00+01:00", "2026-02-01T00:00:00+01:00"]),
        ("12:05", ["2026-01-30T12:05:00+01:00", "2026-01-31T12:05:00+01:00"]),
        ("*/5", ["2026-01-30T10:05:00+01:00", "2026-01-30T10:10:00+01:00"]),
        ("mon..wed 30/10", ["2026-02-02T00:30:00+01:00", "2026-02-02T00:40:00+01:00"]),
        ("fri 12..13:5/20", ["2026-01-30T12:05:00+01:00", "2026-01-30T12:25:00+01:00"]),
        ("12/2:5", ["2026-01-30T12:05:00+01:00", "2026-01-30T14:05:00+01:00"]),
        ("*-05", ["2026-02-05T00:00:00+01:00", "2026-03-05T00:00:00+01:00"]),
        ("Sat *-1..7 15:00", ["2026-02-07T15:00:00+01:00", "2026-03-07T15:00:00+01:00"]),
        ("2015-10-21", []),
    ],
)
def test_schedule_command_matches_the_pve_docs(expr: str, expected: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "schedule", expr, "--tz", "Europe/Berlin",
         "--after", "2026-01-30T10:00:00+01:00", "--count", "2"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == expected


def test_schedule_command_rejects_bad_expressions() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "schedule", "25:00"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "hour 25" in proc.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serve_hides_the_secret_and_stops_on_sigterm(tmp_path: Path, fake: FakePVE) -> None:
    port = free_port()
    config = write_config(tmp_path, fake, CANARY)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter", "--config.file", str(config),
        "--web.listen-address", f"127.0.0.1:{port}", "--log.format", "json",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                try:
                    async with http.get(f"{base}/-/ready") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                assert asyncio.get_running_loop().time() < deadline, "exporter never got ready"
                await asyncio.sleep(0.05)
            pages = []
            for path in ("/", "/metrics", "/-/healthy"):
                async with http.get(base + path) as resp:
                    pages.append(await resp.text())
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()
    assert "auth" in pages[0]  # the status page says why the source is down
    assert 'reason="auth"' in pages[1]
    logs = err.decode()
    assert '"msg": "shutting down"' in logs
    for text in (*pages, logs, out.decode()):
        assert CANARY not in text
    db = tmp_path / "state.db"
    assert db.is_file(), "serve keeps its state where state_path says"
    assert CANARY.encode() not in b"".join(p.read_bytes() for p in tmp_path.glob("state.db*"))
