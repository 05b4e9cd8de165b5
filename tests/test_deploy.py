"""The shipped deployment files are valid as shipped."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.core.config import load_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
SECRETS = (
    "PVE_TOKEN_SECRET",
    "TRUENAS_API_KEY",
    "B2_KEY_ID",
    "B2_APPLICATION_KEY",
    "STORJ_ACCESS_KEY_ID",
    "STORJ_SECRET_ACCESS_KEY",
    "HC_API_KEY",
)


def test_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SECRETS:
        monkeypatch.setenv(name, f"example-{name.lower()}")
    monkeypatch.setenv("HC_API_KEY", "k" * 32)  # Healthchecks keys are 32 characters
    config = load_config(DEPLOY / "config.example.yml")
    assert set(config.sources) == {"pve1", "truenas", "smart", "hc", "ha-backups", "b2", "storj"}
    # Offsite run evidence is discovered (cloudsync-*, hc-*), never a bucket's newest object.
    assert set(config.jobs) == {"ha-daily", "smart-long"}


def test_example_config_names_every_missing_secret() -> None:
    env = {"PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", str(DEPLOY / "config.example.yml")],
        capture_output=True, text=True, check=False, env=env,
    )  # fmt: skip
    assert proc.returncode == 2
    for name in SECRETS:
        assert f"environment variable {name} is not set" in proc.stderr


def test_systemd_unit_is_hardened_and_checks_config_first() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(DEPLOY / "backup-exporter.service")
    service = unit["Service"]
    assert "check-config" in service["ExecStartPre"]
    assert "--config.file=/etc/backup-exporter/config.yml" in service["ExecStart"]
    for key, value in {
        "NoNewPrivileges": "true",
        "ProtectSystem": "strict",
        "PrivateTmp": "true",
        "CapabilityBoundingSet": "",
    }.items():
        assert service[key] == value, key
