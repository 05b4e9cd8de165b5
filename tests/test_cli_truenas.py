"""``backup-exporter once`` against the fake TrueNAS of each API generation, as a process."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml
from test_cli import PROMTOOL, run_cli, samples

from exporter.sim.truenas import homelab, start_fake_truenas


@pytest.mark.parametrize("release", ["25.04", "25.10"])
async def test_once_prints_truenas_metrics(tmp_path: Path, release: str) -> None:
    scenario = homelab(time.time, release=release)
    fake = await start_fake_truenas(scenario)
    try:
        (tmp_path / "key").write_text(fake.api_key)
        config = {
            "sources": {
                "nas": {
                    "kind": "truenas",
                    "url": fake.url,
                    "username": fake.username,
                    "api_key_file": "key",
                    "ca_file": fake.ca_file,
                    "timezone": "Europe/Berlin",
                }
            }
        }
        path = tmp_path / "config.yml"
        path.write_text(yaml.safe_dump(config))
        code, out, err = await run_cli("once", "--config.file", str(path))
    finally:
        await fake.stop()
    assert code == 0, err
    got = samples(out)

    def one(name: str, **labels: str) -> float:
        return got[(name, frozenset({("source", "nas"), *labels.items()}))]

    proxmox = scenario.dataset("storage/backups/proxmox")
    assert one("backup_zfs_dataset_quota_bytes", dataset=proxmox.name) == proxmox.quota
    assert one("backup_zfs_dataset_used_bytes", dataset=proxmox.name) == scenario.used(proxmox.name)
    snaps = scenario.snapshots["storage/immich"]
    assert one("backup_zfs_snapshots", dataset="storage/immich") == len(snaps)
    assert one("backup_zfs_snapshot_newest_timestamp_seconds", dataset="storage/immich") == max(
        snaps
    )
    assert (
        one("backup_zfs_scrub_last_end_timestamp_seconds", pool="storage") == scenario.scan["end"]
    )
    for task in scenario.cloudsync:
        assert task.job is not None
        assert (
            one("backup_cloudsync_last_success_timestamp_seconds", task=task.description)
            == task.job["time_finished"]
        )
    versions = [dict(labels)["version"] for name, labels in got if name == "backup_truenas_info"]
    assert len(versions) == 1
    assert release in versions[0]
    has_smart = any(name == "backup_smart_selftest_last_passed" for name, _ in got)
    assert has_smart == (release == "25.04"), "25.10 removed SMART from the API"
    check = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=out, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0
    assert check.stdout + check.stderr == ""
