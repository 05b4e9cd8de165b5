from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.core.clock import FakeClock
from exporter.core.collector import SnapshotCollector
from exporter.core.config import parse_config
from exporter.core.poller import Poller
from exporter.sources import build_source

BERLIN = ZoneInfo("Europe/Berlin")


def touch(path: Path, size: int, mtime: float) -> None:
    path.write_bytes(b"\0" * size)
    os.utime(path, (mtime, mtime))


def values(collector: SnapshotCollector) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    text = generate_latest(reg).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


async def test_files_aggregates_and_feeds_a_job(tmp_path: Path) -> None:
    share = tmp_path / "ha-backup"
    share.mkdir()
    day = 86400
    t0 = datetime(2026, 3, 1, 3, 5, tzinfo=BERLIN).timestamp()
    sizes = {f"ha_{i}.tar": 1000 + i for i in range(5)}
    for i, (name, size) in enumerate(sizes.items()):
        touch(share / name, size, t0 + i * day)
    touch(share / "notes.txt", 7, t0 + 10 * day)  # not matched by the glob
    (share / "sub.tar").mkdir()  # a directory is not a backup
    cfg_path = tmp_path / "config.yml"
    cfg_path.write_text(
        f"""
timezone: Europe/Berlin
sources:
  ha-backups: {{kind: files, path: {share}, glob: "*.tar"}}
jobs:
  ha-daily: {{schedule: "0 3 * * *", grace: 2h, evidence: {{source: ha-backups}}}}
"""
    )
    config = parse_config(cfg_path.read_text(), base_dir=tmp_path)
    newest = t0 + 4 * day
    clock = FakeClock(start=newest + 3600)
    poller = Poller(build_source(config.sources["ha-backups"]), clock=clock)
    assert (await poller.poll_once()).up
    collector = SnapshotCollector([poller], clock=clock, jobs=config.jobs)
    got = values(collector)
    src = frozenset({("source", "ha-backups")})
    assert got[("backup_files", src)] == 5
    assert got[("backup_files_size_bytes", src)] == sum(sizes.values())
    assert got[("backup_files_newest_timestamp_seconds", src)] == newest
    job = frozenset({("backup_job", "ha-daily"), ("source", "ha-backups"), ("vmid", "")})
    assert got[("backup_job_overdue", job)] == 0
    assert got[("backup_job_last_success_timestamp_seconds", job)] == newest
    # Next day's 03:00 run never happens: overdue once 05:00 has passed, not before.
    deadline = datetime(2026, 3, 6, 5, 0, tzinfo=BERLIN).timestamp()
    clock.advance(deadline - 60 - clock.time())
    assert values(collector)[("backup_job_overdue", job)] == 0
    clock.advance(120)
    assert values(collector)[("backup_job_overdue", job)] == 1


async def test_vzdump_names_become_per_guest_archives(tmp_path: Path) -> None:
    dumps = tmp_path / "dump"
    dumps.mkdir()
    names = [
        ("vzdump-qemu-100-2026_01_28-21_00_02.vma.zst", 10),
        ("vzdump-qemu-100-2026_01_29-21_00_03.vma.zst", 30),
        ("vzdump-lxc-101-2026_01_29-21_04_11.tar.zst", 5),
        ("vzdump-qemu-100-2026_01_29-21_00_03.log", 1),
    ]
    for name, size in names:
        touch(dumps / name, size, 1_700_000_000)
    config = parse_config(
        f"sources:\n  nfs: {{kind: files, path: {dumps}, glob: 'vzdump-*', vzdump: true,"
        " timezone: Europe/Berlin, storage: truenas-backups}\n"
    )
    poller = Poller(build_source(config.sources["nfs"]), clock=FakeClock())
    await poller.poll_once()
    got = values(SnapshotCollector([poller], clock=FakeClock()))
    g100 = frozenset({("source", "nfs"), ("storage", "truenas-backups"), ("vmid", "100")})
    assert got[("backup_pve_archives", g100)] == 2
    assert got[("backup_pve_archive_size_bytes", g100)] == 40
    assert got[("backup_pve_archive_last_size_bytes", g100)] == 30
    # 21:00:03 Berlin (CET, UTC+1) is 20:00:03 UTC.
    expected = datetime(2026, 1, 29, 20, 0, 3, tzinfo=ZoneInfo("UTC")).timestamp()
    assert got[("backup_pve_archive_last_timestamp_seconds", g100)] == expected
    g101 = frozenset({("source", "nfs"), ("storage", "truenas-backups"), ("vmid", "101")})
    assert got[("backup_pve_archives", g101)] == 1


async def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    config = parse_config(f"sources:\n  x: {{kind: files, path: {tmp_path / 'gone'}}}\n")
    poller = Poller(build_source(config.sources["x"]), clock=FakeClock())
    state = await poller.poll_once()
    assert state.reason == "config"
    assert state.error is not None
    assert "gone" in state.error.message


@pytest.mark.parametrize("pattern", ["/etc/*", "../*"])
def test_glob_may_not_escape_path(tmp_path: Path, pattern: str) -> None:
    from exporter.core.config import ConfigError

    with pytest.raises(ConfigError, match=r"sources\.x\.glob"):
        parse_config(f"sources:\n  x: {{kind: files, path: {tmp_path}, glob: '{pattern}'}}\n")
